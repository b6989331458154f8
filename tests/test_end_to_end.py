"""End to end through the real command lines: the demo and `dagster asset materialize`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import query

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ALL_ASSETS = "raw_events,quarantined_events,file_ledger,events,event_id_conflicts"


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ANALYTICS_DATA_DIR": str(tmp_path / "data"),
        "ANALYTICS_PARTITIONS_START": "2025-01-01",
    }


@pytest.mark.slow
def test_demo_command_runs_the_pipeline_and_reconciles(tmp_path: Path) -> None:
    env = _env(tmp_path)
    done = subprocess.run(
        [str(BIN / "analytics-pipeline"), "demo", "--days", "2", "--events-per-day", "400"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Ingestion, by arrival day" in out and "Events, by event date" in out
    reconciliation = next(line for line in out.splitlines() if line.startswith("Reconciliation:"))
    assert reconciliation.endswith("OK"), reconciliation
    assert "dagster dev -w workspace.yaml" in out
    gates = next(line for line in out.splitlines() if line.startswith("Quality gates:"))
    assert ", 0 blocking failures" in gates and int(gates.split()[2]) > 100, gates
    warehouse = Warehouse(tmp_path / "data" / "warehouse")
    assert len(warehouse.published_days("events")) >= 2
    assert "From the models" in out and "Day-1 retention" in out and "DAU on" in out
    # the analysts' catalog has a view for every table, models included
    import duckdb

    from analytics_pipeline.models.loader import load_models
    from analytics_pipeline.settings import PROJECT_ROOT

    catalog = duckdb.connect(str(tmp_path / "data" / "warehouse" / "analytics.duckdb"), read_only=True)
    views = {
        r[0] for r in catalog.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    }
    catalog.close()
    models = {spec.name for spec in load_models(PROJECT_ROOT / "assets" / "models")}
    assert models | {"events", "raw_events", "quarantined_events"} <= views


@pytest.mark.slow
def test_dagster_cli_materializes_a_partition(tmp_path: Path) -> None:
    env = _env(tmp_path)
    generated = subprocess.run(
        [str(BIN / "analytics-pipeline"), "generate", "--days", "1", "--events-per-day", "300",
         "--start-date", "2025-01-10"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    done = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "analytics_pipeline.definitions",
         "--select", ALL_ASSETS, "--partition", "2025-01-10"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr + done.stdout
    events = Warehouse(tmp_path / "data" / "warehouse").partition_file("events", "2025-01-10")
    (count,) = query(events, "SELECT count(*) FROM t")[0]
    assert count > 250
    # the run is recorded in the DAGSTER_HOME instance, as the UI would show it
    runs = list((tmp_path / "dagster_home").rglob("*.db"))
    assert runs, "no SQLite run storage written"
