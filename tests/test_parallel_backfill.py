"""A parallel backfill through the real Dagster CLI: partitions run side by side.

Six daily partitions are backfilled with ``dagster asset materialize`` (one run per
stage and partition, three runs at a time, each run using the multiprocess executor),
all against one data directory and one ``DAGSTER_HOME``. The runs are started in the
order a Dagster asset backfill follows the declared dependency: the ingest of arrival
days D (``raw_events``, ``quarantined_events``, ``file_ledger``) first, and the events
of date D (``events``, ``event_id_conflicts``) as soon as every arrival day it reads,
D .. D+L among the six, is ingested, so ingest and events runs may overlap. Every step
opens its own in-memory DuckDB and the catalog is swapped in by rename, so no run may
fail or even mention a lock. Every Parquet file the concurrent runs published must be
byte-identical to a serial, in-process build of the same landing data with the same
settings (every arrival day ingested, then every event date deduplicated).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.events.late_window import arrival_days
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.sample_data.generator import generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.catalog import catalog_path
from analytics_pipeline.warehouse.storage import STAGING_DIR, Warehouse, file_sha256
from analytics_pipeline.warehouse.tables import (
    EVENT_ID_CONFLICTS,
    EVENTS,
    FILE_LEDGER,
    QUARANTINED_EVENTS,
    RAW_EVENTS,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
START = date(2025, 5, 1)
PARTITIONS = [(START + timedelta(days=i)).isoformat() for i in range(6)]
EVENTS_PER_DAY = 1000
CONCURRENT_RUNS = 3
INGEST, BUILD = "ingest", "events"
SELECTIONS = {INGEST: (RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER), BUILD: (EVENTS, EVENT_ID_CONFLICTS)}
TABLES = SELECTIONS[INGEST] + SELECTIONS[BUILD]
# The default executor of an asset job is multi_or_in_process; select multiprocess explicitly.
RUN_CONFIG = {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}
LOCK_WORDS = re.compile(r"\block|could not set lock|database is locked", re.IGNORECASE)
RUN_TIMEOUT_S = 600  # guards against a hung run only

Job = tuple[str, str]  # (stage, partition)


def cli_env(dagster_home: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_") and k != "DAGSTER_HOME"}
    env.update(DAGSTER_HOME=str(dagster_home), ANALYTICS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


def materialize(job: Job, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    stage, partition = job
    command = [
        str(DAGSTER), "asset", "materialize",
        "-m", "analytics_pipeline.definitions",
        "--select", ",".join(SELECTIONS[stage]),
        "--partition", partition,
        "--config-json", json.dumps(RUN_CONFIG),
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def read_days(partition: str, late_window_days: int) -> list[str]:
    """The arrival days among the backfilled ones that events[partition] reads."""
    return [d for d in arrival_days(partition, late_window_days) if d in PARTITIONS]


def needs(job: Job, late_window_days: int) -> list[Job]:
    stage, partition = job
    return [(INGEST, d) for d in read_days(partition, late_window_days)] if stage == BUILD else []


def published_files(warehouse: Warehouse, table: str) -> dict[str, str]:
    """Every file inside a table's folder (relative path) and its sha256."""
    root = warehouse.root / table
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_parallel_backfill_of_six_partitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert DAGSTER.exists(), f"dagster CLI not found next to {sys.executable}"
    for name in [k for k in os.environ if k.startswith("ANALYTICS_")]:
        monkeypatch.delenv(name)  # the serial build runs with the settings the CLI runs get
    data_dir = tmp_path / "data"
    summary = generate(data_dir / "landing", START, len(PARTITIONS), EVENTS_PER_DAY)
    assert set(PARTITIONS) <= set(summary.days)
    assert summary.late_planted > 0  # so events[D] depends on later arrival days
    late_window_days = PipelineSettings(data_dir=str(data_dir)).late_window_days
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("")
    # Create the instance's SQLite storage once, before the runs: several processes creating
    # a brand-new runs.db at the same moment race in Dagster's own schema stamping
    # ("table alembic_version already exists"), which has nothing to do with this pipeline.
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_runs_count() == 0
    assert (dagster_home / "history" / "runs.db").exists()
    env = cli_env(dagster_home, data_dir)
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()

    started = time.monotonic()
    pending: list[Job] = [(INGEST, p) for p in PARTITIONS] + [(BUILD, p) for p in PARTITIONS]
    running: dict[Job, subprocess.Popen[bytes]] = {}
    codes: dict[Job, int] = {}
    max_parallel = 0
    overlapped = False  # an ingest and an events run at the same time (not asserted: timing)
    while pending or running:
        for job, proc in list(running.items()):
            if proc.poll() is not None:
                codes[job] = proc.returncode
                del running[job]
        while len(running) < CONCURRENT_RUNS:
            ready = [j for j in pending if all(codes.get(n) == 0 for n in needs(j, late_window_days))]
            if not ready:
                break
            pending.remove(ready[0])
            running[ready[0]] = materialize(ready[0], env, logs_dir / "{}-{}.log".format(*ready[0]))
        if pending and not running:
            pytest.fail(f"runs {pending} wait for ingest runs that failed: {codes}")
        max_parallel = max(max_parallel, len(running))
        overlapped |= len({stage for stage, _ in running}) == 2
        if time.monotonic() - started > RUN_TIMEOUT_S:
            for proc in running.values():
                proc.kill()
            pytest.fail(f"backfill runs still going after {RUN_TIMEOUT_S}s: {sorted(running)}")
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    print(
        f"\n{len(codes)} runs for {len(PARTITIONS)} partitions, {CONCURRENT_RUNS} at a time: "
        f"{elapsed:.1f}s (ingest and events runs overlapped: {overlapped})"
    )
    assert max_parallel == CONCURRENT_RUNS

    for job in codes:
        out = (logs_dir / "{}-{}.log".format(*job)).read_text(errors="replace")
        assert codes[job] == 0, f"run {job} exited {codes[job]}:\n{out[-4000:]}"
        assert "Executing steps using multiprocess executor" in out, f"{job} did not use multiprocess"
        assert "RUN_SUCCESS" in out
        lock_lines = [line for line in out.splitlines() if LOCK_WORDS.search(line)]
        assert lock_lines == [], f"run {job} mentions a lock:\n" + "\n".join(lock_lines)
    assert sorted(codes) == sorted((stage, p) for stage in (INGEST, BUILD) for p in PARTITIONS)

    warehouse = Warehouse(data_dir / "warehouse")
    con = duckdb.connect()
    try:
        for table in TABLES:
            assert warehouse.published_days(table) == PARTITIONS, table
        for partition in PARTITIONS:
            manifest = warehouse.read_manifest(EVENTS, partition)
            assert manifest is not None
            # built after every arrival day it reads was ingested: what a serial build reads
            assert manifest["arrival_days_read"] == read_days(partition, late_window_days)
            rows = con.execute(
                f"SELECT count(*) FROM read_parquet('{warehouse.partition_file(EVENTS, partition)}')"
            ).fetchone()
            assert rows is not None and rows[0] == manifest["events"] > 0
        events_glob = warehouse.table_glob(EVENTS)
        total, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT message_id) FROM read_parquet('{events_glob}')"
        ).fetchone() or (0, -1)
        assert total == distinct
    finally:
        con.close()
    assert [p for p in (warehouse.root / STAGING_DIR).rglob("*") if p.is_file()] == []

    # the analysts' catalog, refreshed by every step of every run, opens and sees all events
    catalog = duckdb.connect(str(catalog_path(warehouse)), read_only=True)
    try:
        row = catalog.execute("SELECT count(DISTINCT event_date) FROM events").fetchone()
        assert row is not None and row[0] == len(PARTITIONS)
    finally:
        catalog.close()

    # what the concurrent runs published equals a serial, in-process build, byte for byte
    serial_dir = tmp_path / "serial"
    shutil.copytree(data_dir / "landing", serial_dir / "landing")
    serial = PipelineSettings(data_dir=str(serial_dir))
    serial_wh = Warehouse(serial.warehouse_path)
    for partition in PARTITIONS:
        ingest_arrival_day(serial, partition)
    for partition in PARTITIONS:
        dedupe_events_day(serial, partition)
    for table in TABLES:
        parallel_files, serial_files = published_files(warehouse, table), published_files(serial_wh, table)
        assert len(serial_files) == len(PARTITIONS), table
        differ = sorted(
            f
            for f in parallel_files.keys() | serial_files.keys()
            if parallel_files.get(f) != serial_files.get(f)
        )
        assert differ == [], f"{table}: these files differ from a serial build: {differ}"
    for partition in PARTITIONS:
        for table in (RAW_EVENTS, EVENTS):
            assert warehouse.read_manifest(table, partition) == serial_wh.read_manifest(table, partition)
