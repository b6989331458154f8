"""A parallel backfill through the real Dagster CLI: partitions run side by side.

Six daily partitions are materialized with ``dagster asset materialize`` (one run per
partition, three runs at a time, each run using the multiprocess executor), all
against one data directory and one ``DAGSTER_HOME``. Every step opens its own
in-memory DuckDB and the catalog is swapped in by rename, so no run may fail or even
mention a lock, and every partition must be published. The raw partitions written by
the concurrent runs must be byte-identical to a serial, in-process ingestion.
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
SELECTION = ",".join((RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER, EVENTS, EVENT_ID_CONFLICTS))
# The default executor of an asset job is multi_or_in_process; select multiprocess explicitly.
RUN_CONFIG = {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}
LOCK_WORDS = re.compile(r"\block|could not set lock|database is locked", re.IGNORECASE)
RUN_TIMEOUT_S = 300  # guards against a hung run only


def cli_env(dagster_home: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_") and k != "DAGSTER_HOME"}
    env.update(DAGSTER_HOME=str(dagster_home), ANALYTICS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


def materialize(partition: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(DAGSTER), "asset", "materialize",
        "-m", "analytics_pipeline.definitions",
        "--select", SELECTION,
        "--partition", partition,
        "--config-json", json.dumps(RUN_CONFIG),
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_parallel_backfill_of_six_partitions(tmp_path: Path) -> None:
    assert DAGSTER.exists(), f"dagster CLI not found next to {sys.executable}"
    data_dir = tmp_path / "data"
    summary = generate(data_dir / "landing", START, len(PARTITIONS), EVENTS_PER_DAY)
    assert set(PARTITIONS) <= set(summary.days)
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
    pending = list(PARTITIONS)
    running: dict[str, subprocess.Popen[bytes]] = {}
    codes: dict[str, int] = {}
    max_parallel = 0
    while pending or running:
        while pending and len(running) < CONCURRENT_RUNS:
            partition = pending.pop(0)
            running[partition] = materialize(partition, env, logs_dir / f"{partition}.log")
        max_parallel = max(max_parallel, len(running))
        for partition, proc in list(running.items()):
            if proc.poll() is not None:
                codes[partition] = proc.returncode
                del running[partition]
        if time.monotonic() - started > RUN_TIMEOUT_S:
            for proc in running.values():
                proc.kill()
            pytest.fail(f"backfill runs still going after {RUN_TIMEOUT_S}s: {sorted(running)}")
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    print(f"\n{len(PARTITIONS)} partitions, {CONCURRENT_RUNS} runs at a time: {elapsed:.1f}s")
    assert max_parallel == CONCURRENT_RUNS

    outputs = {p: (logs_dir / f"{p}.log").read_text(errors="replace") for p in PARTITIONS}
    for partition in PARTITIONS:
        out = outputs[partition]
        assert codes[partition] == 0, f"run for {partition} exited {codes[partition]}:\n{out[-4000:]}"
        assert "Executing steps using multiprocess executor" in out, f"{partition} did not use multiprocess"
        assert "RUN_SUCCESS" in out
        lock_lines = [line for line in out.splitlines() if LOCK_WORDS.search(line)]
        assert lock_lines == [], f"run for {partition} mentions a lock:\n" + "\n".join(lock_lines)

    warehouse = Warehouse(data_dir / "warehouse")
    con = duckdb.connect()
    try:
        for table in (RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER, EVENTS, EVENT_ID_CONFLICTS):
            assert set(PARTITIONS) <= set(warehouse.published_days(table)), table
        for partition in PARTITIONS:
            manifest = warehouse.read_manifest(EVENTS, partition)
            assert manifest is not None
            rows = con.execute(
                f"SELECT count(*) FROM read_parquet('{warehouse.partition_file(EVENTS, partition)}')"
            ).fetchone()
            assert rows is not None and rows[0] == manifest["events"] > 0.9 * EVENTS_PER_DAY
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

    # what the concurrent runs ingested equals a serial, in-process ingestion, byte for byte
    serial_dir = tmp_path / "serial"
    shutil.copytree(data_dir / "landing", serial_dir / "landing")
    serial = PipelineSettings(data_dir=str(serial_dir))
    serial_wh = Warehouse(serial.warehouse_path)
    for partition in PARTITIONS:
        ingest_arrival_day(serial, partition)
        for table in (RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER):
            assert file_sha256(warehouse.partition_file(table, partition)) == file_sha256(
                serial_wh.partition_file(table, partition)
            ), f"{table} {partition} differs from a serial run"
            if table == RAW_EVENTS:
                assert warehouse.read_manifest(table, partition) == serial_wh.read_manifest(table, partition)
