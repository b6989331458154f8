"""Stage and publish one partition over and over, alternating two contents, until killed.

Used by ``tests/test_crash_safety.py``, which SIGKILLs this process at various moments
and then checks what a reader sees. Each step is announced on stdout (flushed) so the
test can aim a kill at a phase, e.g. ``COPY <staged path>`` right before DuckDB starts
writing the staged file.

    python tests/scripts/publish_loop.py WAREHOUSE TABLE DAY [--rows N] [--start B] [--iterations N]

Content "A" is ``rows`` rows and content "B" is ``rows + rows // 20`` rows with other
payloads; ``version_sql`` is imported by the test to compute the expected checksums.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import duckdb

from analytics_pipeline.warehouse.storage import Warehouse


def version_sql(version: str, rows: int) -> str:
    """The rows of one content version; A and B differ in row count and in every payload."""
    n = rows if version == "A" else rows + rows // 20
    return (
        f"SELECT i AS id, '{version}' AS version, md5(i::VARCHAR || '{version}') AS payload, "
        f"repeat(chr(65 + (i % 26)::INTEGER), 40) AS filler FROM range({n}) t(i)"
    )


def checksum_sql(relation: str) -> str:
    """What the test compares: row count, versions present and a content checksum."""
    return (
        "SELECT count(*), string_agg(DISTINCT version, ',' ORDER BY version), "
        f"sum(hash(id, payload, filler)) FROM {relation}"
    )


def stage(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, table: str, day: str, version: str,
          rows: int) -> Path:  # fmt: skip
    staged = warehouse.staging_file(table, day, uuid.uuid4().hex)
    print(f"COPY {version} {staged}", flush=True)
    con.execute(
        f"COPY ({version_sql(version, rows)}) TO '{staged}' "
        "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 20000)"
    )
    return staged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("table")
    parser.add_argument("day")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--start", choices=("A", "B"), default="B", help="content published first")
    parser.add_argument("--iterations", type=int, default=0, help="0: until killed")
    parser.add_argument("--versions-kept", type=int, default=3)
    args = parser.parse_args(argv)

    warehouse = Warehouse(args.warehouse)
    con = duckdb.connect(config={"threads": 2, "memory_limit": "512MB"})
    versions = ("A", "B") if args.start == "A" else ("B", "A")
    print("READY", flush=True)
    i = 0
    while args.iterations == 0 or i < args.iterations:
        version = versions[i % 2]
        staged = stage(con, warehouse, args.table, args.day, version, args.rows)
        print(f"PUBLISH {version}", flush=True)
        result = warehouse.publish(staged, args.table, args.day, args.versions_kept)
        print(f"DONE {version} changed={result.changed}", flush=True)
        i += 1
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
