"""Stage and publish one partition a few times, alternating two contents, and stop at an aimed point.

Used by ``tests/test_crash_safety.py``. The process freezes itself (``SIGSTOP``) the
``--occurrence``-th time it passes ``--stop-at`` (passes of that point, not publishes: a
publish onto an empty partition keeps no version), right after printing the flushed line
``STOPPED <point> <occurrence>``; the test waits for that line, sees the process stopped
and SIGKILLs it there. Nothing runs between the line and the stop, so the kill lands
exactly at the point whatever the machine's speed. The points are:

* ``copy``: inside DuckDB's ``COPY`` of a staged file. The query's ``id`` column goes
  through a Python function that stops the process when DuckDB asks it for the last
  row, so every row group before it is in the staged file but the Parquet footer is not;
* every name of ``analytics_pipeline.warehouse.storage.PUBLISH_STEPS``, reached through
  the seam ``storage.PUBLISH_STEP_HOOK`` inside ``Warehouse.publish``, ``rollback`` and the
  recovery of a change a killed process left (which the next operation runs first).

    python tests/scripts/publish_loop.py WAREHOUSE TABLE DAY --stop-at POINT [--occurrence K]
        [--publishes N] [--rollback] [--rows N] [--start B] [--recover]

It publishes ``--publishes`` times (default: ``--occurrence``), each followed by the
manifest a step writes (``{"content": <version>, "rows": <rows>}``), then rolls back once
with ``--rollback``; with ``--recover`` it only reads the partition's history, which
finishes or undoes what a killed process left. Each step is announced on stdout
(``COPY <version> <staged path>``, ``PUBLISH <version>``, ``DONE <version> changed=<bool>``,
``ROLLBACK``, ``RECOVER``). When the point is never reached it prints ``NOT REACHED`` and
exits 3: a test never passes by luck.

Content "A" is ``rows`` rows and content "B" is ``rows + rows // 20`` rows with other
payloads; ``version_sql`` is imported by the test to compute the expected checksums.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from analytics_pipeline.warehouse import storage
from analytics_pipeline.warehouse.storage import Warehouse

COPY_POINT = "copy"
POINTS = (COPY_POINT, *storage.PUBLISH_STEPS)


def version_rows(version: str, rows: int) -> int:
    return rows if version == "A" else rows + rows // 20


def version_sql(version: str, rows: int, id_expr: str = "i") -> str:
    """The rows of one content version; A and B differ in row count and in every payload."""
    return (
        f"SELECT {id_expr} AS id, '{version}' AS version, md5(i::VARCHAR || '{version}') AS payload, "
        f"repeat(chr(65 + (i % 26)::INTEGER), 40) AS filler FROM range({version_rows(version, rows)}) t(i)"
    )


def manifest_of(version: str, rows: int) -> dict[str, object]:
    """The counts a step would write for a content version."""
    return {"content": version, "rows": version_rows(version, rows)}


def checksum_sql(relation: str) -> str:
    """What the test compares: row count, versions present and a content checksum."""
    return (
        "SELECT count(*), string_agg(DISTINCT version, ',' ORDER BY version), "
        f"sum(hash(id, payload, filler)) FROM {relation}"
    )


def stop_here(point: str, occurrence: int) -> None:
    """Announce the point, then freeze until the test's SIGKILL arrives."""
    print(f"STOPPED {point} {occurrence}", flush=True)
    # Sent to this very thread, the stop lands before pthread_kill returns (os.kill would let
    # another thread take it and this one run on for a moment); DuckDB's threads stop with it.
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    while True:  # should it ever be continued, it still never runs past the aimed point
        time.sleep(3600)


def aim(point: str, occurrence: int) -> Callable[[str], None]:
    """A PUBLISH_STEP_HOOK that stops the process at the occurrence-th pass of ``point``."""
    passes: Counter[str] = Counter()

    def hook(step: str) -> None:
        passes[step] += 1
        if step == point and passes[step] == occurrence:
            stop_here(point, occurrence)

    return hook


def stage(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, table: str, day: str, version: str,
          rows: int, stop_in_copy: bool) -> Path:  # fmt: skip
    staged = warehouse.staging_file(table, day, uuid.uuid4().hex)
    print(f"COPY {version} {staged}", flush=True)
    id_expr = "copy_gate(i)" if stop_in_copy else "i"
    con.execute(
        f"COPY ({version_sql(version, rows, id_expr)}) TO '{staged}' "
        "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 20000)"
    )
    return staged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("table")
    parser.add_argument("day")
    parser.add_argument("--stop-at", choices=POINTS, required=True)
    parser.add_argument("--occurrence", type=int, default=1, help="stop at the K-th pass of the point")
    parser.add_argument("--publishes", type=int, default=0, help="default: --occurrence")
    parser.add_argument("--rollback", action="store_true", help="roll back once after the publishes")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--start", choices=("A", "B"), default="B", help="content published first")
    parser.add_argument("--versions-kept", type=int, default=3)
    parser.add_argument("--recover", action="store_true", help="only trigger the recovery (no publish)")
    args = parser.parse_args(argv)

    warehouse = Warehouse(args.warehouse)
    con = duckdb.connect(config={"threads": 2, "memory_limit": "512MB"})
    versions = ("A", "B") if args.start == "A" else ("B", "A")
    storage.PUBLISH_STEP_HOOK = aim(args.stop_at, args.occurrence)

    def copy_gate(ids: pa.Array) -> pa.Array:
        if pc.max(ids).as_py() == version_rows(current, args.rows) - 1:  # the chunk with the last row
            stop_here(COPY_POINT, args.occurrence)
        return ids

    con.create_function("copy_gate", copy_gate, ["BIGINT"], "BIGINT", type="arrow", side_effects=True)
    print("READY", flush=True)
    if args.recover:
        print("RECOVER", flush=True)
        warehouse.history(args.table, args.day)
    for i in range(0 if args.recover else args.publishes or args.occurrence):
        current = versions[i % 2]
        stop_in_copy = args.stop_at == COPY_POINT and i + 1 == args.occurrence
        staged = stage(con, warehouse, args.table, args.day, current, args.rows, stop_in_copy)
        print(f"PUBLISH {current}", flush=True)
        result = warehouse.publish(staged, args.table, args.day, args.versions_kept)
        warehouse.write_manifest(args.table, args.day, manifest_of(current, args.rows))
        print(f"DONE {current} changed={result.changed}", flush=True)
    if args.rollback:
        print("ROLLBACK", flush=True)
        warehouse.rollback(args.table, args.day)
    con.close()
    print("NOT REACHED", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main())
