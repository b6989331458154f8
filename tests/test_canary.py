"""Canary builds: the verdict follows checks/canary.yml, production and the catalog stay untouched,
a held canary is promoted only with --force (recorded), and a promoted partition is the canary's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterRunStatus, RunsFilter

from analytics_pipeline import cli, rollout
from analytics_pipeline.canary import (
    CanaryError,
    Thresholds,
    load_thresholds,
    load_verdict,
    run_canary,
)
from analytics_pipeline.quality import gate_status
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse, file_sha256

FLAGS = """
flags:
  gap_2m:
    description: Two minutes.
    model: sessions
    parameters: {session_gap_seconds: 120}
    enabled: false
"""
ANY = float("inf")  # a metric that was 0 in production (bounces) changes without bound
LOOSE = Thresholds(
    row_count_change=ANY, metric_change=ANY, null_rate_change=1, mean_change=ANY, distinct_change=ANY,
    changed_rows=ANY,
)  # fmt: skip


@pytest.fixture
def production(
    pipeline: PipelineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PipelineSettings:
    """A copy of the shared pipeline's data with a flag that changes sessions (off)."""
    data = tmp_path / "data"
    shutil.copytree(pipeline.data_dir, data, symlinks=True)
    flags = tmp_path / "flags.yml"
    flags.write_text(FLAGS)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ANALYTICS_FLAGS_FILE", str(flags))
    monkeypatch.setenv("ANALYTICS_DUCKDB_MEMORY_LIMIT", "1GB")
    return pipeline.replace(data_dir=str(data), flags_file=str(flags))


def fingerprint(warehouse: Path) -> dict[str, str]:
    """Every file of the warehouse (published data, records, manifests, gates, the catalog)."""
    return {
        str(p.relative_to(warehouse)): file_sha256(p) for p in sorted(warehouse.rglob("*")) if p.is_file()
    }


def test_the_verdict_follows_the_thresholds_and_production_is_untouched(production: PipelineSettings) -> None:
    warehouse = Warehouse(production.warehouse_path)
    days = warehouse.published_days("sessions")[1:3]
    before = fingerprint(warehouse.root)
    assert "analytics.duckdb" in before

    held = run_canary(production, "sessions", days, flag="gap_2m")  # checks/canary.yml: 1 % on rows
    assert held.verdict == "hold"
    over = {f.check for f in held.over_limit}
    assert {"row_count", "metric", "changed_rows"} <= over
    rows = {f.subject: f for f in held.findings if f.check == "row_count"}
    assert all(rows[d].candidate > rows[d].production for d in days)  # type: ignore[operator]
    assert held.rows_by_key["key"] == ["session_id"] and held.rows_by_key["only_in_candidate"] > 0
    assert held.columns["duration_s"]["candidate"]["mean"] < held.columns["duration_s"]["production"]["mean"]
    assert "verdict: HOLD" in held.summary() and "OVER" in held.summary()
    assert held.flags[days[0]] == {"gap_2m": {"parameters": {"session_gap_seconds": 120}}}

    promoted = run_canary(production, "sessions", days, flag="gap_2m", thresholds=LOOSE)
    assert promoted.verdict == "promote" and not promoted.over_limit
    same = run_canary(production, "sessions", days)  # production's own definition: nothing moves
    assert same.verdict == "promote" and same.rows_by_key["changed"] == 0
    assert fingerprint(warehouse.root) == before

    instance = cli.dagster_instance()
    run_id = rollout.record_canary(instance, held)
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == DagsterRunStatus.SUCCESS
    assert run.tags["analytics/verdict"] == "hold" and run.tags["analytics/model"] == "sessions"
    outputs = [
        e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_successful_output
    ]
    metadata = outputs[0].dagster_event.step_output_data.metadata  # type: ignore[union-attr]
    assert metadata["verdict"].value == "hold" and metadata["over_limit"].value == len(held.over_limit)


def test_a_held_canary_is_promoted_only_with_force_and_the_force_is_recorded(
    production: PipelineSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = Warehouse(production.warehouse_path)
    day = warehouse.published_days("sessions")[2]
    data = ["--data-dir", production.data_dir]
    assert cli.main([*data, "canary", "sessions", "--partitions", f"{day}..{day}", "--flag", "gap_2m"]) == 3
    out = capsys.readouterr().out
    assert "verdict: HOLD" in out and "recorded as run" in out
    canary_id = out.split("promote ")[-1].split()[0]
    verdict = load_verdict(production, canary_id)
    before = fingerprint(warehouse.root)

    assert cli.main([*data, "promote", canary_id]) == 2
    assert "was held" in capsys.readouterr().err
    assert fingerprint(warehouse.root) == before

    assert cli.main([*data, "promote", canary_id, "--force", "--no-rebuild"]) == 0
    out = capsys.readouterr().out
    assert "FORCED" in out and f"rollback sessions {day} --rebuild-only" in out
    published = warehouse.partition_file("sessions", day)
    candidate = Path(verdict.directory) / "warehouse" / "sessions" / f"date={day}" / "part-0.parquet"
    assert file_sha256(published) == file_sha256(candidate) == verdict.files[day]
    assert gate_status.failed_checks(warehouse, "sessions", day) == []  # it passed the model's gates
    record = json.loads(warehouse.record_path("sessions", day).read_text())
    assert record["promotion"]["forced"] is True and record["promotion"]["canary"] == canary_id
    assert record["flags"] == {"gap_2m": {"parameters": {"session_gap_seconds": 120}}}
    instance = cli.dagster_instance()
    (run,) = instance.get_runs(RunsFilter(job_name="promote_job"))
    assert run.tags["analytics/forced"] == "true" and run.tags["analytics/canary"] == canary_id
    materialization = instance.get_latest_materialization_event(AssetKey("sessions"))
    assert materialization is not None and materialization.run_id == run.run_id
    assert materialization.asset_materialization.metadata["forced"].value is True  # type: ignore[union-attr]


def test_a_wrong_canary_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "canary.yml"
    path.write_text("defaults: {row_count_change: 0.1, rows: 2}\n")
    with pytest.raises(CanaryError, match=r"canary\.yml: defaults\.rows: unknown key"):
        load_thresholds(path, "sessions", ["sessions"])
    path.write_text("models: {sesions: {row_count_change: 0.1}}\n")
    with pytest.raises(CanaryError, match=r"models\.sesions: unknown model"):
        load_thresholds(path, "sessions", ["sessions"])
    path.write_text("defaults: {row_count_change: 0.1}\nmodels: {sessions: {changed_rows: 0.5}}\n")
    limits = load_thresholds(path, "sessions", ["sessions"])
    assert (limits.row_count_change, limits.changed_rows, limits.mean_change) == (0.1, 0.5, 0.02)
