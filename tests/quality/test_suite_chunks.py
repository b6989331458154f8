"""Suites on a big staged file run in chunks (suite_chunks.py) and say what one frame says.

A 5,000-row staged file is audited in chunks of 1,000 rows and as one frame; the outcomes
must agree, with the faults planted where chunking could hide them: duplicates whose copies
are in different row chunks, nulls in several chunks, and a ``mostly`` expectation whose
unexpected rows all sit in one chunk (that chunk alone fails, the file passes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics_pipeline.quality import suite_chunks
from analytics_pipeline.quality.gates import audit, suite_parameters
from analytics_pipeline.quality.suites import AssetSuite, load_suite_file, validate_frame
from analytics_pipeline.warehouse.storage import Warehouse
from tests.model_fixtures import SUITES_DIR

ROWS = 5_000
CHUNK = 1_000
DAY = "2025-03-10"
START = datetime(2025, 3, 10, tzinfo=UTC)
DUPLICATES = {10: 4010, 1500: 2999, 3001: 4999}  # message_id of the key row is copied to the value row
NULL_TYPES = [5, 1234, 3456, 4998]
LOW_DELIVERIES = range(2000, 2300)  # 300 rows, all in the third chunk: 30% of it, 6% of the file

SUITE = """\
name: staged
expectations:
  - type: expect_column_values_to_be_unique
    kwargs: {column: message_id}
  - type: expect_compound_columns_to_be_unique
    kwargs: {column_list: [person, seq]}
  - type: expect_column_values_to_not_be_null
    kwargs: {column: type}
  - type: expect_column_values_to_be_in_set
    kwargs: {column: type, value_set: [track, page]}
  - type: expect_column_values_to_be_between
    kwargs:
      column: timestamp
      min_value: {$PARAMETER: partition_start}
      max_value: {$PARAMETER: partition_end}
      strict_max: true
  - type: expect_column_values_to_be_between
    kwargs: {column: deliveries, min_value: 1, mostly: 0.9}
    meta: {check_name: deliveries_mostly}
  - type: expect_column_pair_values_a_to_be_greater_than_b
    kwargs: {column_A: received_at, column_B: timestamp, or_equal: true}
  - type: expect_column_values_to_not_be_null
    kwargs: {column: schema_version}
    severity: warn
  - type: expect_table_row_count_to_be_between
    kwargs: {min_value: 1, max_value: 10000}
  - type: expect_column_max_to_be_between
    kwargs: {column: deliveries, max_value: 1}
  - type: expect_column_values_to_not_be_null
    kwargs: {column: no_such_column}
  - type: expect_column_values_to_be_unique
    kwargs: {column: no_such_key}
volume: false
schema_drift: false
"""


def _staged_rows() -> pa.Table:
    message_id: list[str | None] = [f"m-{i}" for i in range(ROWS)]
    for original, copy in DUPLICATES.items():
        message_id[copy] = message_id[original]
    message_id[20] = message_id[3020] = None  # uniqueness ignores nulls
    seq = [i // 100 for i in range(ROWS)]
    seq[4500] = 0  # (p0, 0) again: the first row's key
    kinds: list[str | None] = ["track" if i % 2 else "page" for i in range(ROWS)]
    for i in NULL_TYPES:
        kinds[i] = None
    kinds[7] = kinds[2222] = "screen"
    timestamp = [START + timedelta(seconds=i) for i in range(ROWS)]
    timestamp[100] = START - timedelta(hours=1)
    timestamp[4100] = START + timedelta(days=1)  # the end is excluded (strict_max)
    received_at = [t + timedelta(seconds=5) for t in timestamp]
    received_at[3333] = timestamp[3333] - timedelta(seconds=1)
    deliveries = [0 if i in LOW_DELIVERIES else 2 if i == 50 else 1 for i in range(ROWS)]
    return pa.table({
        "message_id": message_id, "person": [f"p{i % 100}" for i in range(ROWS)], "seq": seq,
        "type": kinds, "timestamp": pa.array(timestamp, pa.timestamp("us", tz="UTC")),
        "received_at": pa.array(received_at, pa.timestamp("us", tz="UTC")), "deliveries": deliveries,
        "schema_version": [None if i % 97 == 0 else "v1" for i in range(ROWS)],
    })  # fmt: skip


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    path = tmp_path / "staged.parquet"
    pq.write_table(_staged_rows(), path, row_group_size=700)  # row groups cut across chunks
    return path


@pytest.fixture
def suite(tmp_path: Path) -> AssetSuite:
    path = tmp_path / "suites" / "staged.yml"
    path.parent.mkdir()
    path.write_text(SUITE)
    return load_suite_file(path)


def _compared(outcome: Any) -> dict[str, Any]:
    keep = ("unexpected_count", "element_count", "success", "severity", "evaluated_kwargs", "observed_value")
    metadata = outcome.metadata
    percent = metadata["unexpected_percent"]
    return {
        "name": outcome.name,
        "passed": outcome.passed,
        "severity": outcome.severity,
        "unexpected_percent": None if percent is None else round(percent, 9),
        "error": "error" in metadata,
        **{k: metadata[k] for k in keep},
    }


def test_chunked_suite_gives_the_whole_frame_outcomes(
    staged: Path, suite: AssetSuite, monkeypatch: pytest.MonkeyPatch
) -> None:
    parameters = suite_parameters(DAY)
    frames: dict[str, int] = {"rows": 0, "keys": 0}

    def counted(name: str, read: Any) -> Any:
        def wrapper(*args: Any) -> Iterator[pd.DataFrame]:
            for frame in read(*args):
                assert len(frame) <= CHUNK * 1.5  # a hash bucket is about CHUNK rows, a row chunk at most
                frames[name] += 1
                yield frame

        return wrapper

    monkeypatch.setattr(suite_chunks, "row_chunks", counted("rows", suite_chunks.row_chunks))
    monkeypatch.setattr(suite_chunks, "key_buckets", counted("keys", suite_chunks.key_buckets))
    whole = suite_chunks.validate_file(suite, staged, parameters, chunk_rows=ROWS)
    assert frames == {"rows": 0, "keys": 0}
    chunked = suite_chunks.validate_file(suite, staged, parameters, chunk_rows=CHUNK)
    assert frames == {"rows": 5, "keys": 10}  # 5 row chunks; 5 buckets for each of the two present keys

    assert [_compared(o) for o in chunked] == [_compared(o) for o in whole]
    by_name = {o.name: o for o in chunked}
    failed = {o.name: o.metadata["unexpected_count"] for o in chunked if not o.passed}
    assert failed == {
        "message_id__be_unique": 6,  # every copy of the three duplicates, across row chunks
        "person__seq__compound_columns_to_be_unique": 2,
        "type__not_be_null": len(NULL_TYPES),
        "type__be_in_set": 2,
        "timestamp__be_between": 2,
        "received_at__timestamp__a_to_be_greater_than_b": 1,
        "schema_version__not_be_null": 52,
        "deliveries__max_to_be_between": None,
        "no_such_column__not_be_null": None,
        "no_such_key__be_unique": None,
    }
    assert (
        by_name["deliveries_mostly"].passed
        and by_name["deliveries_mostly"].metadata["unexpected_count"] == 300
    )
    assert by_name["row_count_to_be_between"].passed
    assert by_name["row_count_to_be_between"].metadata["observed_value"] == ROWS
    assert "does not exist" in by_name["no_such_key__be_unique"].metadata["error"]
    # row chunks keep the file's order, so they list the whole frame's first unexpected values;
    # hash buckets do not (another choice of the duplicates is listed first)
    for expectation, one, other in zip(suite.expectations, chunked, whole, strict=True):
        if suite_chunks.kind(expectation, staged) == "rows":
            assert one.metadata["partial_unexpected_list"] == other.metadata["partial_unexpected_list"]
    duplicates = by_name["message_id__be_unique"].metadata["partial_unexpected_list"]
    assert len(duplicates) == 5 and set(duplicates) <= {f"m-{i}" for i in DUPLICATES}


def test_the_mostly_case_fails_in_its_chunk_alone(staged: Path, suite: AssetSuite) -> None:
    # what makes the check above meaningful: an AND over the chunks would fail the file
    mostly = [e for e in suite.expectations if e.name == "deliveries_mostly"]
    chunk = pq.read_table(staged).slice(2000, CHUNK).to_pandas()
    assert not validate_frame(mostly, chunk)["deliveries_mostly"].success


def test_audit_chunks_above_suite_chunk_rows(
    staged: Path, suite: AssetSuite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suite_chunks, "SUITE_CHUNK_ROWS", CHUNK)
    gate = audit(Warehouse(tmp_path / "warehouse"), "staged", DAY, staged, suite.path.parent)
    expected = suite_chunks.validate_file(suite, staged, suite_parameters(DAY), chunk_rows=CHUNK)
    assert [_compared(o) for o in gate.outcomes] == [_compared(o) for o in expected]
    assert {o.name for o in gate.failed} >= {"message_id__be_unique", "type__not_be_null"}


def test_events_suite_runs_uniqueness_by_key_and_the_rest_by_row(tmp_path: Path) -> None:
    staged = tmp_path / "events.parquet"
    pq.write_table(pa.table({"message_id": ["a"]}), staged)
    events = load_suite_file(SUITES_DIR / "events.yml")
    kinds = {e.name: suite_chunks.kind(e, staged) for e in events.expectations}
    assert kinds.pop("events_message_id_unique") == "keys" and set(kinds.values()) == {"rows"}
    retention = load_suite_file(SUITES_DIR / "retention.yml")
    decreasing = [e for e in retention.expectations if e.type.endswith("to_be_decreasing")]
    assert decreasing and {suite_chunks.kind(e, staged) for e in decreasing} == {"whole"}  # row order


# --- memory: the same audit of 1.5M events-like rows, in chunks and as one frame --------------

MEMORY_ROWS = 1_500_000
MEMORY_CHUNK = 100_000
# Measured: a rise of 650 to 800 MiB as one frame, 200 to 230 MiB in chunks (of which about
# 130 MiB do not depend on the file's size: DuckDB, Arrow's reader, its 122,880-row row groups).
MEMORY_RATIO = 0.5
# Run in a fresh interpreter: GX is warmed on a few rows, the high-water mark is reset
# (clear_refs 5), then the suite runs; prints how far VmHWM rose above the RSS before it.
CHILD = """
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
from analytics_pipeline.quality import suite_chunks
from analytics_pipeline.quality.gates import suite_parameters
from analytics_pipeline.quality.suites import load_suite_file, validate_frame

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) // 1024

staged, suites, chunk = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
suite = load_suite_file(suites / "events.yml")
parameters = suite_parameters("2025-03-10")
validate_frame(suite.expectations, next(pq.ParquetFile(staged).iter_batches(batch_size=10)).to_pandas(), parameters)
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
outcomes = suite_chunks.validate_file(suite, staged, parameters, chunk_rows=chunk)
print(json.dumps({"rise_mib": status("VmHWM") - before, "failed": [o.name for o in outcomes if not o.passed]}))
"""


def _events_like(path: Path, rows: int) -> None:
    """The events suite's columns; every 50th schema_version is null (its WARN check fails)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""COPY (SELECT uuid()::VARCHAR AS message_id,
        (['track', 'page', 'screen', 'identify', 'group', 'alias'])[1 + i % 6] AS type,
        TIMESTAMPTZ '2025-03-10 00:00:00+00' + to_microseconds(i * 86400000000 // {rows}) AS timestamp,
        TIMESTAMPTZ '2025-03-10 00:00:05+00' + to_microseconds(i * 86400000000 // {rows}) AS received_at,
        DATE '2025-03-10' + (i % 2)::INT AS arrival_date, 1 + (i % 3 = 0)::BIGINT AS deliveries,
        CASE WHEN i % 50 = 0 THEN NULL ELSE 'v1' END AS schema_version
        FROM range({rows}) t(i)) TO '{path}' (FORMAT parquet)""")  # fmt: skip
    con.close()


def _audit_memory(staged: Path, chunk: int) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(staged), str(SUITES_DIR), str(chunk)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    report: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_chunked_audit_peaks_well_below_the_whole_frame(tmp_path: Path) -> None:
    staged = tmp_path / "events.parquet"
    _events_like(staged, MEMORY_ROWS)
    whole = _audit_memory(staged, MEMORY_ROWS)
    chunked = _audit_memory(staged, MEMORY_CHUNK)
    print(f"\naudit of {MEMORY_ROWS:,} rows: peak rise {whole['rise_mib']} MiB as one frame, "
          f"{chunked['rise_mib']} MiB in chunks of {MEMORY_CHUNK:,}")  # fmt: skip
    assert whole["failed"] == chunked["failed"] == ["schema_version__not_be_null"]
    assert chunked["rise_mib"] < whole["rise_mib"] * MEMORY_RATIO
