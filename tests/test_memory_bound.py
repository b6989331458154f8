"""Memory bound: a day ten times the demo day stays within the DuckDB limit plus a fixed overhead.

The demo day is 5,000 events; this test generates one event day of 50,000 events (and
the later arrival folders its late events land in), then ingests every arrival folder
and builds the day's events in a child process configured only through ``ANALYTICS_*``
variables (``ANALYTICS_DUCKDB_MEMORY_LIMIT=1GB``, two threads), as Dagster would run it.
The child reports its own peak RSS (``ru_maxrss``, cross-checked with ``VmHWM``), so
pytest's memory is not counted. (On Linux a process's ``ru_maxrss`` starts from its
parent's resident size at the fork, so the child is started through a tiny Python
launcher: otherwise the figure would include pytest's own few hundred MiB.)

Bound: peak RSS <= 1 GiB (the DuckDB limit) + 600 MiB fixed overhead for the Python
interpreter, pyarrow, dagster and the landing reader's bounded batches. Run with
``-s`` to see the figures.

A second test checks, in process and quickly, that the events step deduplicates rows
far wider than its DuckDB memory limit (it reads the wide columns from the files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.sample_data.generator import generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import WIDE_PARQUET, Warehouse
from analytics_pipeline.warehouse.tables import EVENT_ID_CONFLICTS, EVENTS, RAW_EVENTS

SCRIPT = Path(__file__).resolve().parent / "scripts" / "ingest_and_build.py"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY = date(2025, 6, 2)
EVENTS_PER_DAY = 50_000  # ten times the 5,000-event demo day
MEMORY_LIMIT = "1GB"
THREADS = 2
LIMIT_MIB = 1024  # DuckDB's "1GB" is 1000^3 bytes; 1 GiB is the more generous reading
OVERHEAD_MIB = 600  # Python + pyarrow + dagster imports and the reader's batches
CHILD_TIMEOUT_S = 600  # guards against a hang only
# Runs argv[1:] as a grandchild of pytest, from a small process, and passes its exit code on.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def test_ten_times_the_demo_day_stays_within_the_memory_limit(tmp_path: Path) -> None:
    summary = generate(tmp_path / "landing", DAY, 1, EVENTS_PER_DAY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env.update(
        ANALYTICS_DATA_DIR=str(tmp_path),
        ANALYTICS_DUCKDB_MEMORY_LIMIT=MEMORY_LIMIT,
        ANALYTICS_DUCKDB_THREADS=str(THREADS),
    )
    command = [sys.executable, str(SCRIPT), "--arrival-days", *summary.days, "--event-days", DAY.isoformat()]
    child = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert child.returncode == 0, f"the pipeline failed:\n{child.stderr[-4000:]}"
    report = json.loads(child.stdout.strip().splitlines()[-1])

    assert report["memory_limit"] == MEMORY_LIMIT and report["threads"] == THREADS
    assert report["lines_read"] >= EVENTS_PER_DAY
    assert report["events"][DAY.isoformat()] > 0.95 * EVENTS_PER_DAY

    peak_mib = report["maxrss_kib"] / 1024
    hwm_mib = report["vm_hwm_kib"] / 1024
    bound_mib = LIMIT_MIB + OVERHEAD_MIB
    after_imports_mib = report["vm_hwm_after_imports_kib"] / 1024
    print(
        f"\n{EVENTS_PER_DAY:,} events/day ({report['lines_read']:,} lines, {len(summary.days)} arrival days) "
        f"peak RSS {peak_mib:,.0f} MiB (ru_maxrss; VmHWM {hwm_mib:,.0f} MiB, after imports "
        f"{after_imports_mib:,.0f} MiB); bound {bound_mib:,} MiB = DuckDB memory_limit {MEMORY_LIMIT} "
        f"({LIMIT_MIB} MiB) + {OVERHEAD_MIB} MiB overhead; ingest {report['ingest_s']} s, "
        f"events {report['events_s']} s"
    )
    # the launcher kept pytest's size out of the child's ru_maxrss: both measures agree
    assert abs(peak_mib - hwm_mib) <= 32
    assert peak_mib <= bound_mib


WIDE_ROWS = 200_000
WIDE_LINE_BYTES = 2048  # 400 MB of raw_line text, ~10 MB of zstd Parquet on disk
SMALL_LIMIT = "256MB"


def _write_raw(warehouse: Warehouse, arrival: str, sql: str) -> None:
    staged = warehouse.staging_file(RAW_EVENTS, arrival, "wide")
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({sql}) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()
    warehouse.publish(staged, RAW_EVENTS, arrival, versions_kept=1)


def _raw_rows(day: str, arrival: str, first: int, count: int, conflict: bool, delay_ms: int) -> str:
    """raw_events rows for message ids first..first+count, with 2 KiB raw lines (one file per call)."""
    properties = """'{"product_id":"p2"}'""" if conflict else """'{"product_id":"p1"}'"""
    return f"""
SELECT 'm-' || i AS message_id, 'track' AS type, 'Product Viewed' AS event, NULL::VARCHAR AS user_id,
       'anon-' || (i % 1000) AS anonymous_id,
       TIMESTAMPTZ '{day} 00:00:00+00' + to_milliseconds(i * 400) AS timestamp,
       NULL::TIMESTAMPTZ AS original_timestamp, NULL::TIMESTAMPTZ AS sent_at,
       TIMESTAMPTZ '{day} 00:00:00+00' + to_milliseconds(i * 400 + {delay_ms}) AS received_at,
       DATE '{day}' AS event_date, {properties}::JSON AS properties, NULL::JSON AS traits,
       '{{"ip":"10.0.0.1"}}'::JSON AS context, '1-0-0' AS schema_version,
       md5(i::VARCHAR || {properties}) AS content_hash, DATE '{arrival}' AS arrival_date,
       '{arrival}/part-{first:06d}.jsonl' AS file_path, i - {first} + 1 AS line_number,
       repeat(md5(i::VARCHAR), {WIDE_LINE_BYTES // 32}) AS raw_line
FROM range({first}, {first + count}) t(i) ORDER BY i"""


def test_events_step_keeps_only_narrow_columns_in_memory(tmp_path: Path) -> None:
    """Regression: the events step once copied every raw column (raw_line included) into
    an in-memory table and ran out of memory at 500,000 events/day under a 1GB limit.
    Here 400 MB of raw lines must be deduplicated under a 256MB limit."""
    day, next_day = "2025-06-02", "2025-06-03"
    settings = PipelineSettings(data_dir=str(tmp_path), duckdb_memory_limit=SMALL_LIMIT, duckdb_threads=2)
    warehouse = Warehouse(settings.warehouse_path)
    _write_raw(warehouse, day, _raw_rows(day, day, 0, WIDE_ROWS, conflict=False, delay_ms=10))
    # the next arrival day re-delivers 2,000 of them (duplicates) and 300 with other content (conflicts)
    _write_raw(
        warehouse,
        next_day,
        f"SELECT * FROM ({_raw_rows(day, next_day, 0, 2000, conflict=False, delay_ms=20)}) UNION ALL "
        f"SELECT * FROM ({_raw_rows(day, next_day, 5000, 300, conflict=True, delay_ms=20)})",
    )

    result = dedupe_events_day(settings, day)

    assert result.counts["input_rows"] == WIDE_ROWS + 2300
    assert result.counts["events"] == WIDE_ROWS
    assert result.counts["duplicates"] == 2000
    assert result.counts["id_conflicts"] == 300
    con = duckdb.connect()
    try:
        conflicts_file = warehouse.partition_file(EVENT_ID_CONFLICTS, day)
        conflicts = con.execute(
            f"SELECT count(*), min(length(raw_line)) FROM read_parquet('{conflicts_file}')"
        ).fetchone()
        kept = con.execute(
            f"SELECT count(*) FILTER (WHERE arrival_date = DATE '{day}'), max(deliveries) "
            f"FROM read_parquet('{warehouse.partition_file(EVENTS, day)}')"
        ).fetchone()
    finally:
        con.close()
    assert conflicts == (300, WIDE_LINE_BYTES)  # the losers' original lines are kept
    assert kept == (WIDE_ROWS, 2)  # the first delivery wins; re-deliveries are counted
    # the snapshot links the step reads through are gone afterwards
    assert [p for p in (warehouse.root / "_staging").rglob("*") if p.is_file()] == []


WIDE_PROPERTIES_BYTES = 1024  # 1 KiB of properties and 1 KiB of context per event: wide sorted rows


def test_events_sorted_write_of_wide_rows_within_a_small_limit(tmp_path: Path) -> None:
    """Regression: the sorted write of the day's events sorted several time slices at once with
    two threads, and read row groups of ~250 MB, and ran out of memory (a 3M-event day at 1 GB
    and even at 2 GB). Here about 400 MB of wide properties and context, landed out of time
    order and stored as ingest stores raw_events, are written in time order under 512MB."""
    day = "2025-06-02"
    settings = PipelineSettings(data_dir=str(tmp_path), duckdb_memory_limit="512MB", duckdb_threads=2)
    warehouse = Warehouse(settings.warehouse_path)
    wide = f"json_object('product_id', 'p1', 'blob', repeat(md5(message_id), {WIDE_PROPERTIES_BYTES // 32}))"
    rows = _raw_rows(day, day, 0, WIDE_ROWS, conflict=False, delay_ms=10)
    staged = warehouse.staging_file(RAW_EVENTS, day, "wide")
    con = duckdb.connect()
    try:  # landing order is not time order: every time slice reads every row group
        con.execute(
            f"COPY (SELECT * REPLACE ({wide} AS properties, {wide} AS context, 'x' AS raw_line) "
            f"FROM ({rows}) ORDER BY hash(message_id)) TO '{staged}' ({WIDE_PARQUET})"
        )
    finally:
        con.close()
    warehouse.publish(staged, RAW_EVENTS, day, versions_kept=1)

    result = dedupe_events_day(settings, day)

    assert result.counts["events"] == WIDE_ROWS
    con = duckdb.connect()
    try:
        in_order = con.execute(
            "SELECT bool_and(timestamp >= previous) FROM (SELECT timestamp, lag(timestamp) OVER () AS previous "
            f"FROM read_parquet('{warehouse.partition_file(EVENTS, day)}'))"
        ).fetchone()
    finally:
        con.close()
    assert in_order == (True,)
