"""Feature flags: a wrong flags file stops loading naming file and key; a flag change marks exactly
the partitions it affects stale in Dagster, and `flags --rebuild` rebuilds those (and only those)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, AssetsDefinition, SourceAsset, materialize
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from analytics_pipeline import cli, rollout
from analytics_pipeline.models.flags import FlagsError, load_flags
from analytics_pipeline.models.loader import load_models
from analytics_pipeline.settings import PROJECT_ROOT, PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse, file_sha256

MODELS = load_models(PROJECT_ROOT / "assets" / "models")
GOOD = """
flags:
  gap_2m:
    description: Two minutes.
    model: sessions
    parameters: {session_gap_seconds: 120}
    enabled: false
"""


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (("model: sessions", "model: sesions"), "flags.gap_2m.model: unknown model 'sesions'"),
        (
            ("session_gap_seconds: 120", "session_gap_minutes: 2"),
            "flags.gap_2m.parameters: sessions declares no",
        ),
        (
            ("session_gap_seconds: 120", "session_gap_seconds: '2m'"),
            "flags.gap_2m.parameters.session_gap_seconds",
        ),
        (("enabled: false", "enabled: yes please"), "flags.gap_2m.enabled"),
        (("enabled: false", "enabled: {from: 2025-02-01, to: 2025-01-01}"), "flags.gap_2m.enabled"),
        (("    enabled: false", "    enabled: false\n    owner: me"), "flags.gap_2m.owner: unknown key"),
        (
            ("    enabled: false", "    enabled: false\n    sql: assets/models/nope.sql"),
            "flags.gap_2m.sql: no such",
        ),
    ],
)
def test_a_wrong_flag_stops_loading_naming_the_file_and_key(
    tmp_path: Path, edit: tuple[str, str], named: str
) -> None:
    path = tmp_path / "flags.yml"
    path.write_text(GOOD)
    assert set(load_flags(path, MODELS)) == {"gap_2m"}
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(FlagsError) as error:
        load_flags(path, MODELS)
    assert str(path) in str(error.value) and named in str(error.value)


def test_a_flag_change_marks_exactly_its_partitions_stale_and_flags_rebuild_rebuilds_them(
    pipeline: PipelineSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    shutil.copytree(pipeline.data_dir, data, symlinks=True)
    flags_file = tmp_path / "flags.yml"
    flags_file.write_text(GOOD)
    settings = pipeline.replace(data_dir=str(data), flags_file=str(flags_file))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ANALYTICS_FLAGS_FILE", str(flags_file))
    monkeypatch.setenv("ANALYTICS_DUCKDB_MEMORY_LIMIT", "1GB")
    instance = cli.dagster_instance()
    from analytics_pipeline.definitions import defs

    warehouse = Warehouse(settings.warehouse_path)
    days = warehouse.published_days("sessions")
    assert len(days) == 4
    rollout.observe_flags(instance)
    all_assets = [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]
    for day in days:
        result = materialize(
            all_assets, selection=["sessions"], partition_key=day, instance=instance,
            resources={"settings": settings}, run_config=rollout.QUIET,
        )  # fmt: skip
        assert result.success
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["active_flags"].value == {}
    graph = [a for a in defs.assets or [] if isinstance(a, AssetsDefinition | SourceAsset)]

    def statuses() -> list[StaleStatus]:
        resolver = get_stale_status_resolver(instance, graph)
        return [resolver.get_status(AssetKey("sessions"), day) for day in days]

    assert statuses() == [StaleStatus.FRESH] * 4
    before = {day: file_sha256(warehouse.partition_file("sessions", day)) for day in days}
    rows_before = {day: warehouse.read_manifest("sessions", day)["rows"] for day in days}  # type: ignore[index]

    flagged = days[1:3]
    flags_file.write_text(
        GOOD.replace("enabled: false", f"enabled: {{from: {flagged[0]}, to: {flagged[1]}}}")
    )
    assert cli.main(["--data-dir", str(data), "flags"]) == 0  # lists, observes, changes nothing
    out = capsys.readouterr().out
    assert (
        all(f"out of date: sessions {d}" in out for d in flagged) and days[0] not in out.split("flags in")[0]
    )
    assert "rebuild them with: analytics-pipeline flags --rebuild" in out
    assert statuses() == [StaleStatus.FRESH, StaleStatus.STALE, StaleStatus.STALE, StaleStatus.FRESH]
    assert {day: file_sha256(warehouse.partition_file("sessions", day)) for day in days} == before

    assert cli.main(["--data-dir", str(data), "flags", "--rebuild"]) == 0
    after = {day: file_sha256(warehouse.partition_file("sessions", day)) for day in days}
    assert [after[d] == before[d] for d in days] == [True, False, False, True]
    for day in flagged:  # a 2-minute gap splits sessions the 30-minute gap kept whole
        manifest = warehouse.read_manifest("sessions", day)
        assert manifest is not None and manifest["rows"] > rows_before[day]
        assert manifest["flags"] == {"gap_2m": {"parameters": {"session_gap_seconds": 120}}}
        assert warehouse.published_version("sessions", day).flags == manifest["flags"]  # type: ignore[union-attr]
    assert statuses() == [StaleStatus.FRESH] * 4
    assert rollout.flag_plan(settings) == ([], [])
