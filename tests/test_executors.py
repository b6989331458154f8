"""``run_days`` with each step in its own process (the daemon's way) publishes what the in-process run does."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterEventType, DagsterInstance

from analytics_pipeline import cli
from analytics_pipeline.sample_data.generator import generate
from analytics_pipeline.settings import PipelineSettings

DAYS, EVENTS_PER_DAY = 2, 300  # up to yesterday, as the pipeline fixture (an empty day fails its gate)
TABLES = ("events", "person_events", "sessions", "daily_active_users", "funnels", "users")


def _run(root: Path, landing: Path, executor: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, str]:
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("ANALYTICS_DUCKDB_MEMORY_LIMIT", "1GB")
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    settings = PipelineSettings()
    settings.landing_path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(landing, settings.landing_path)
    instance = cli.dagster_instance()
    ok = cli.run_days(settings, cli.landing_days(settings), instance, echo=False, executor=executor)
    return ok, str(instance.root_directory)


def _rows(warehouse: Path, table: str) -> list[tuple[object, ...]]:
    files = sorted(str(p) for p in (warehouse / table).rglob("part-0.parquet"))
    assert files, f"{table}: nothing published"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({files})").fetchall()]
        keep = ", ".join(f'"{c}"' for c in columns if c not in ("published_at", "built_at"))
        return con.execute(f"SELECT {keep} FROM read_parquet({files}) ORDER BY ALL").fetchall()


def test_step_processes_publish_what_one_process_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = tmp_path / "landing"
    generate(landing, date.today() - timedelta(days=DAYS), DAYS, EVENTS_PER_DAY, seed=5)
    with monkeypatch.context() as patch:
        ok_in, _ = _run(tmp_path / "in_process", landing, "in_process", patch)
    with monkeypatch.context() as patch:
        ok_mp, home = _run(tmp_path / "multiprocess", landing, "multiprocess", patch)
    assert ok_in and ok_mp
    for table in TABLES:
        assert _rows(tmp_path / "multiprocess" / "data" / "warehouse", table) == _rows(
            tmp_path / "in_process" / "data" / "warehouse", table
        ), table
    # each step ran in a process of its own, none of them this one
    with DagsterInstance.from_config(home) as instance:
        runs = instance.get_run_records()
        pids = [
            e.dagster_event.pid
            for r in runs
            for e in instance.all_logs(r.dagster_run.run_id, of_type=DagsterEventType.STEP_START)
            if e.dagster_event is not None
        ]
    assert {r.dagster_run.job_name for r in runs} >= {"nightly_job", "models_job", "metrics_job"}
    assert len(pids) >= 20 and len(set(pids)) == len(pids) and os.getpid() not in pids


def test_step_processes_refuse_settings_the_environment_does_not_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANALYTICS_DATA_DIR", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    settings = PipelineSettings(data_dir=str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="ANALYTICS_DATA_DIR"):
        cli.run_days(settings, [], cli.dagster_instance(), echo=False, executor="multiprocess")
    with pytest.raises(ValueError, match="executor must be one of"):
        cli.run_days(PipelineSettings(), [], cli.dagster_instance(), echo=False, executor="threads")


def _data_dir_seen_by_a_step_process() -> str | None:
    return os.environ.get("ANALYTICS_DATA_DIR")


def test_step_processes_get_the_environment_of_the_latest_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step processes are forked from a long-lived server: a second run under other settings
    in the same process must not fork from the first run's environment."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    seen = []
    for name in ("first", "second"):
        monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / name))
        cli._start_step_process_server()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
            seen.append(pool.submit(_data_dir_seen_by_a_step_process).result())
    assert seen == [str(tmp_path / "first"), str(tmp_path / "second")]
