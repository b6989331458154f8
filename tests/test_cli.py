"""The commands a new user types: ``analytics-pipeline run/summary/rollback`` and ``dagster asset materialize``.

``run`` and the ``dagster`` CLI run as subprocesses, as a user starts them; ``summary`` and
``rollback`` are called in process (``cli.main``) on a warehouse built by the stage functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from analytics_pipeline.cli import DAGSTER_YAML, dagster_instance, main
from analytics_pipeline.defs.models import model_specs
from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import message, query, write_lines

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAGSTER = BIN / "dagster"
D1, D2 = "2025-01-10", "2025-01-11"


def _env(**extra: str) -> dict[str, str]:
    """The user's environment: no DAGSTER_HOME, no ANALYTICS_* settings, unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_") and k != "DAGSTER_HOME"}
    return {**env, "DAGSTER_DISABLE_TELEMETRY": "1", **extra}


@pytest.mark.slow
def test_run_without_dagster_home_runs_the_landing_days_in_order_and_publishes(tmp_path: Path) -> None:
    landing = tmp_path / "data" / "landing"
    generated = generate(landing, date(2025, 1, 10), 2, 150, seed=11, faults=FaultRates(late=0.0))
    assert generated.days[:2] == [D1, D2] and len(generated.days) > 2  # later folders: --end leaves them
    done = subprocess.run(
        [str(BIN / "analytics-pipeline"), "--data-dir", "data", "run", "--end", D2],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DagsterHomeNotSetError" not in done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("nightly_job")] == [
        f"nightly_job {D1}: ok",
        f"nightly_job {D2}: ok; late events rebuilt {D1}",  # D2's folder holds events dated D1
    ]
    models = [line for line in lines if line.startswith(("models_job", "dimensions_job"))]
    assert models and all(line.endswith(": ok") for line in models), models
    assert models[-1] == "dimensions_job  users: ok"
    gates = next(line for line in lines if line.startswith("Quality gates:"))
    assert ", 0 blocking failures" in gates, gates
    home = tmp_path / ".dagster_home"  # the default, as the demo uses
    # the UI on this instance and data, its partitions starting at the first day (bars not 0% filled)
    assert lines[-1] == (
        f"Runs recorded in {home}; open the UI: ANALYTICS_PARTITIONS_START={D1} "
        f"ANALYTICS_DATA_DIR={tmp_path / 'data'} DAGSTER_HOME={home} {DAGSTER} dev -w workspace.yaml"
    )
    assert DAGSTER.exists()  # the venv's own dagster: a new user has no dagster on PATH

    # the instance it created: the demo's dagster.yaml, and the runs recorded in it
    assert (home / "dagster.yaml").read_text() == DAGSTER_YAML
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        nightly = sorted(r.tags["dagster/partition"] for r in runs if r.job_name == "nightly_job")
        assert nightly == [D1, D2]
        assert all(r.is_success for r in runs)
        assert instance.get_materialized_partitions(AssetKey("events")) == {D1, D2}

    # the published tables: every arrival day asked for, every model partition of those dates
    warehouse = Warehouse(tmp_path / "data" / "warehouse")
    for table in ("raw_events", "quarantined_events", "file_ledger", "events"):
        assert warehouse.published_days(table) == [D1, D2], table
    for spec in model_specs:
        assert warehouse.published_days(spec.name) == ([D1, D2] if spec.partitioned else ["all"]), spec.name
    (events,) = query(warehouse.table_glob("events"), "SELECT count(*) FROM t")[0]
    assert (
        events
        == generated.events_planted
        == sum(warehouse.read_manifest("events", d)["events"] for d in (D1, D2))
    )


def test_dagster_instance_defaults_to_dot_dagster_home_and_keeps_an_existing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", "")  # unset, as far as the CLI is concerned; restored afterwards
    instance = dagster_instance()
    instance.dispose()
    assert Path(instance.root_directory) == tmp_path / ".dagster_home"
    assert (tmp_path / ".dagster_home" / "dagster.yaml").read_text() == DAGSTER_YAML

    mine = tmp_path / "my_home"
    mine.mkdir()
    (mine / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(mine))
    instance = dagster_instance()
    instance.dispose()
    assert Path(instance.root_directory) == mine
    assert (mine / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"  # not replaced


@pytest.fixture
def published(settings: PipelineSettings) -> PipelineSettings:
    """One arrival day ingested and its events built, by the stage functions (no Dagster)."""
    generate(settings.landing_path, date(2025, 1, 10), 1, 200, seed=5, faults=FaultRates(late=0.0))
    ingest_arrival_day(settings, D1)
    dedupe_events_day(settings, D1)
    return settings


def _reconciliation(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("Reconciliation:"))


def test_summary_says_ok_and_mismatch_when_a_manifest_count_is_tampered_with(
    published: PipelineSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", published.data_dir]
    assert main([*data, "summary"]) == 0
    assert _reconciliation(capsys.readouterr().out).endswith("-> OK")

    warehouse = Warehouse(published.warehouse_path)
    manifest = warehouse.read_manifest("events", D1)
    assert manifest
    warehouse.write_manifest("events", D1, {**manifest, "events": manifest["events"] + 3})
    assert main([*data, "summary"]) == 0
    assert _reconciliation(capsys.readouterr().out).endswith("-> MISMATCH (+3)")


def test_rollback_restores_the_previous_bytes_and_counts(
    published: PipelineSettings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))  # where the rollback is recorded
    warehouse = Warehouse(published.warehouse_path)
    events_file = warehouse.partition_file("events", D1)
    before, counts_before = events_file.read_bytes(), warehouse.read_manifest("events", D1)
    # a new file for the day lands: the rebuilt events replace the published ones
    write_lines(published, D1, "extra.jsonl", [message(messageId="extra-1", timestamp=f"{D1}T12:00:00Z",
                                                       receivedAt=f"{D1}T12:00:01Z")])  # fmt: skip
    ingest_arrival_day(published, D1)
    dedupe_events_day(published, D1)
    after, counts_after = events_file.read_bytes(), warehouse.read_manifest("events", D1)
    assert after != before
    assert counts_after is not None and counts_before is not None
    assert counts_after["events"] == counts_before["events"] + 1

    data = ["--data-dir", published.data_dir]
    assert main([*data, "rollback", "events", D1, "--no-rebuild"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"rolled back events {D1}: v1 ({counts_before['events']} rows, published 20")
    assert out[0].endswith(" is back in place of v2")
    assert (
        out[1]
        == f"v2 is kept; to undo: analytics-pipeline --data-dir {published.data_dir} rollback events {D1} --to 2"
    )
    assert (
        out[-1]
        == f"rebuild them with: analytics-pipeline --data-dir {published.data_dir} rollback events {D1} --rebuild-only"
    )
    assert events_file.read_bytes() == before
    assert warehouse.read_manifest("events", D1) == counts_before
    # nothing older is kept: one line saying so, no traceback
    assert main([*data, "rollback", "events", D1, "--no-rebuild"]) == 1
    error = capsys.readouterr().err.strip()
    assert "no previous version" in error and D1 in error and "\n" not in error, error
    # the replaced version was kept: the rollback is undone with --to
    assert main([*data, "rollback", "events", D1, "--to", "2", "--no-rebuild"]) == 0
    assert events_file.read_bytes() == after and warehouse.read_manifest("events", D1) == counts_after
    capsys.readouterr()
    assert main([*data, "rollback", "events", D1, "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"events {D1}: published v2; `rollback` restores v1"
    assert [line.split()[:2] for line in listing[2:]] == [["v2", "published"], ["v1", "kept,"]]


@pytest.mark.slow
def test_dagster_cli_materializes_one_table_of_a_step(tmp_path: Path) -> None:
    """``--select events`` (or raw_events) works: the step publishes its tables together and says so."""
    env = _env(
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        ANALYTICS_DATA_DIR=str(tmp_path / "data"),
        ANALYTICS_PARTITIONS_START="2025-01-01",
    )
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    settings = PipelineSettings(data_dir=str(tmp_path / "data"))
    write_lines(settings, D1, "a.jsonl", [message(messageId=f"m-{i}", timestamp=f"{D1}T1{i}:00:00Z",
                                                  receivedAt=f"{D1}T1{i}:00:01Z") for i in range(5)])  # fmt: skip

    def materialize(selection: str) -> str:
        done = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "analytics_pipeline.definitions",
             "--select", selection, "--partition", D1],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-3000:]
        assert "RUN_SUCCESS" in output and "DagsterInvalidSubsetError" not in output
        return output

    raw = materialize("raw_events")
    assert "also published quarantined_events (first version), file_ledger (first version)" in raw
    assert "Select them too: --select raw_events,quarantined_events,file_ledger" in raw
    events = materialize("events")
    assert "also published event_id_conflicts (first version)" in events
    warehouse = Warehouse(tmp_path / "data" / "warehouse")
    for table in ("raw_events", "quarantined_events", "file_ledger", "events", "event_id_conflicts"):
        assert warehouse.published_days(table) == [D1], table  # built and published as one unit
    assert query(warehouse.partition_file("events", D1), "SELECT count(*) FROM t") == [(5,)]
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        # Dagster records what was selected (and its checks), and only that
        for key, materialized in [("raw_events", {D1}), ("events", {D1}), ("file_ledger", set()),
                                  ("event_id_conflicts", set())]:  # fmt: skip
            assert instance.get_materialized_partitions(AssetKey(key)) == materialized, key
