"""Freshness of the final models: checks/freshness.yml, the policies, the partition deadlines and their sensor."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    Definitions,
    RunRequest,
    SkipReason,
    asset,
    build_sensor_context,
    materialize,
)
from dagster._core.definitions.freshness import FreshnessState, TimeWindowFreshnessPolicy
from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time

from analytics_pipeline.definitions import defs
from analytics_pipeline.defs.models import freshness_policy_for, model_assets, model_specs
from analytics_pipeline.defs.quality import (
    FRESHNESS_SENSOR_NAME,
    freshness_checks,
    freshness_checks_sensor,
    partition_deadline_checks,
)
from analytics_pipeline.quality.freshness import (
    FreshnessConfigError,
    load_freshness,
    parse_freshness,
)
from analytics_pipeline.settings import PipelineSettings

FRESHNESS_FILE = PipelineSettings().freshness_path

FINAL_MODELS = {"sessions", "users", "daily_active_users", "event_counts", "funnels", "retention"}
DAILY_FINAL_MODELS = FINAL_MODELS - {"users"}
# day D = 2025-01-10: partition D-1 (2025-01-09) is due at 06:00 UTC on D
DEADLINE = datetime(2025, 1, 10, 6, 0, tzinfo=UTC)
AFTER_DEADLINE = DEADLINE + timedelta(hours=1)


def _materialize_partitions(instance: DagsterInstance, models: Iterable[str], *days: str) -> None:
    for model in models:
        for day in days:
            instance.report_runless_asset_event(AssetMaterialization(model, partition=day))


def _run_freshness_checks(
    instance: DagsterInstance, settings: PipelineSettings, at: datetime
) -> dict[str, AssetCheckEvaluation]:
    """Run the deadline checks at ``at`` (UTC), as the sensor's run would: asset name -> evaluation."""
    with freeze_time(at):
        result = materialize(
            [*model_assets, *freshness_checks],
            selection=AssetSelection.checks(*freshness_checks),
            instance=instance,
            resources={"settings": settings},
        )
    assert result.success
    assert not result.get_asset_materialization_events(), "checking freshness must not build a model"
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


# --- checks/freshness.yml -------------------------------------------------------------------


def test_every_final_model_has_the_24h_warn_26h_fail_policy() -> None:
    config = load_freshness(FRESHNESS_FILE, known_models=[spec.name for spec in model_specs])
    assert set(config) == FINAL_MODELS
    for name, model in config.items():
        assert (model.warn_after, model.fail_after) == (timedelta(hours=24), timedelta(hours=26)), name
        policy = freshness_policy_for(name)
        assert isinstance(
            policy, TimeWindowFreshnessPolicy
        )  # the new-style policy, not LegacyFreshnessPolicy
        assert policy.warn_window is not None
        assert policy.warn_window.to_timedelta() == timedelta(hours=24)
        assert policy.fail_window.to_timedelta() == timedelta(hours=26)
    assert {name for name, m in config.items() if m.deadline_cron == "0 6 * * *"} == DAILY_FINAL_MODELS
    assert config["users"].deadline_cron is None
    # every listed model is a SQL file in assets/models
    sql_files = {path.stem for path in (FRESHNESS_FILE.parent.parent / "assets" / "models").glob("*.sql")}
    assert set(config) <= sql_files


GOOD = {
    "defaults": {"warn_after_hours": 24, "fail_after_hours": 26, "partition_deadline": "06:00"},
    "models": {"sessions": None, "users": {"partition_deadline": None}},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": {"sesions": None}}, "f.yml: models.sesions: unknown model"),
        (
            {"models": {"sessions": {"warn_after_hours": 26}}},
            "models.sessions: warn_after_hours (26) must be less than",
        ),
        ({"models": {"sessions": {"warn_after_hours": 30}}}, "must be less than fail_after_hours (26)"),
        ({"models": {"sessions": {"partition_deadline": "6am"}}}, "models.sessions.partition_deadline"),
        ({"models": {"sessions": {"partition_deadline": "24:00"}}}, 'expected a "HH:MM" time'),
        ({"models": {"sessions": {"partition_deadline": 360}}}, "unquoted time such as 6:00"),
        ({"models": {"sessions": {"fail_after_hours": "26h"}}}, "models.sessions.fail_after_hours"),
        ({"models": {"sessions": {"max_lag": 3}}}, "f.yml: models.sessions.max_lag: unknown key"),
        ({"defaults": {"warn_after_hours": 24}}, "f.yml: defaults.fail_after_hours: required key missing"),
        ({"models": {}}, "f.yml: models: Dictionary should have at least 1 item"),
    ],
)
def test_bad_freshness_yaml_names_the_file_and_key(change: dict, message: str) -> None:
    document = {**GOOD, **change}
    with pytest.raises(FreshnessConfigError) as error:
        parse_freshness(document, "f.yml", known_models=["sessions", "users"])
    assert message in str(error.value)
    assert str(error.value).startswith("f.yml")


def test_unreadable_yaml_and_unquoted_deadline_are_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "freshness.yml"
    broken.write_text("defaults: [unclosed\n")
    with pytest.raises(FreshnessConfigError, match=r"freshness\.yml: cannot read"):
        load_freshness(broken)
    unquoted = tmp_path / "unquoted.yml"
    unquoted.write_text(yaml.safe_dump(GOOD).replace("06:00", "12:30"))  # YAML 1.1 reads 12:30 as 750
    assert "partition_deadline: 12:30" in unquoted.read_text()
    with pytest.raises(FreshnessConfigError, match=r"unquoted\.yml: defaults\.partition_deadline: .*750"):
        load_freshness(unquoted)


def test_a_deadline_on_an_unpartitioned_model_is_an_error() -> None:
    config = parse_freshness({**GOOD, "models": {"users": None}}, "f.yml")
    with pytest.raises(
        FreshnessConfigError, match=r"f\.yml: models\.users\.partition_deadline: users is not"
    ):
        partition_deadline_checks(model_assets, config, "f.yml")


# --- the policy on the assets ---------------------------------------------------------------


def test_policy_attaches_to_an_asset_and_warns_after_24h_fails_after_26h() -> None:

    assert freshness_policy_for("identities") is None  # intermediate models have no policy

    @asset(name="sessions", freshness_policy=freshness_policy_for("sessions"))
    def sessions() -> None: ...

    node = Definitions(assets=[sessions]).resolve_asset_graph().get(AssetKey("sessions"))
    assert node.freshness_policy == freshness_policy_for("sessions")
    instance = DagsterInstance.ephemeral()
    context = LoadingContextForTest(instance)

    def state(hours_later: float) -> FreshnessState:
        latest = instance.get_latest_materialization_event(AssetKey("sessions"))
        assert latest is not None
        with freeze_time(latest.timestamp + hours_later * 3600):
            return asyncio.run(TimeWindowFreshnessPolicyEvaluator().evaluate_freshness(context, node))

    instance.report_runless_asset_event(AssetMaterialization("sessions", partition="2025-01-09"))
    assert [state(h) for h in (23.9, 24.1, 25.9, 26.1)] == [
        FreshnessState.PASS,
        FreshnessState.WARN,
        FreshnessState.WARN,
        FreshnessState.FAIL,
    ]


def test_model_assets_carry_the_policies() -> None:
    """The models get ``freshness_policy=freshness_policy_for(spec.name)`` in model_assets.py."""

    graph = defs.resolve_asset_graph()
    attached = {name: graph.get(AssetKey(name)).freshness_policy for name in FINAL_MODELS}
    assert attached == {name: freshness_policy_for(name) for name in FINAL_MODELS}
    assert graph.get(AssetKey("identities")).freshness_policy is None


# --- partition deadlines --------------------------------------------------------------------


def test_missed_partition_deadline_fails_naming_the_asset_partition_and_deadline(
    settings: PipelineSettings,
) -> None:
    instance = DagsterInstance.ephemeral()
    # every daily model has D-2; all but sessions also have D-1, before the deadline
    _materialize_partitions(instance, DAILY_FINAL_MODELS, "2025-01-08")
    with freeze_time(DEADLINE - timedelta(hours=1)):
        _materialize_partitions(instance, DAILY_FINAL_MODELS - {"sessions"}, "2025-01-09")

    evaluations = _run_freshness_checks(instance, settings, AFTER_DEADLINE)

    assert set(evaluations) == DAILY_FINAL_MODELS
    missed = evaluations["sessions"]
    assert missed.passed is False
    assert missed.asset_check_key.to_user_string() == "sessions:freshness_check"
    assert missed.description == (
        "Asset is overdue. We expected partition 2025-01-09 to have arrived, and it has not."
    )
    metadata = {key: value.value for key, value in missed.metadata.items()}
    assert metadata["dagster/latest_cron_tick_timestamp"] == DEADLINE.timestamp()  # the deadline missed
    assert metadata["dagster/freshness_params"] == {"deadline_cron": "0 6 * * *", "timezone": "UTC"}
    assert "dagster/last_updated_timestamp" in metadata  # D-2 did arrive: overdue, not never built
    for name in DAILY_FINAL_MODELS - {"sessions"}:
        on_time = evaluations[name]
        assert on_time.passed, (name, on_time.description)
        assert (
            on_time.description
            and "partition 2025-01-09 has been observed/materialized" in on_time.description
        )
        fresh_until = on_time.metadata["dagster/fresh_until_timestamp"].value
        assert fresh_until == (DEADLINE + timedelta(days=1)).timestamp()


def test_before_the_deadline_yesterday_is_not_due_yet(settings: PipelineSettings) -> None:
    instance = DagsterInstance.ephemeral()
    _materialize_partitions(instance, DAILY_FINAL_MODELS, "2025-01-08")
    evaluations = _run_freshness_checks(instance, settings, DEADLINE - timedelta(minutes=1))
    assert all(e.passed for e in evaluations.values()), {n: e.description for n, e in evaluations.items()}
    assert "partition 2025-01-08" in str(evaluations["sessions"].description)


def test_a_never_built_model_fails_its_deadline(settings: PipelineSettings) -> None:
    evaluations = _run_freshness_checks(DagsterInstance.ephemeral(), settings, AFTER_DEADLINE)
    assert not any(e.passed for e in evaluations.values())
    assert "never been observed/materialized" in str(evaluations["funnels"].description)
    assert "partition 2025-01-09" in str(evaluations["funnels"].description)


# --- the sensor -----------------------------------------------------------------------------


def test_sensor_is_in_defs_and_targets_the_deadline_checks() -> None:
    sensor = defs.resolve_sensor_def(FRESHNESS_SENSOR_NAME)
    assert sensor is freshness_checks_sensor
    graph = defs.resolve_asset_graph()
    expected = {f"{name}:freshness_check" for name in DAILY_FINAL_MODELS}
    assert sensor.asset_selection is not None
    targeted = sensor.asset_selection.resolve_checks(graph)
    assert {key.to_user_string() for key in targeted} == expected
    assert expected <= {key.to_user_string() for key in graph.asset_check_keys}


def test_sensor_runs_the_checks_then_waits_for_the_missing_partition(settings: PipelineSettings) -> None:
    instance = DagsterInstance.ephemeral()
    _materialize_partitions(instance, DAILY_FINAL_MODELS - {"sessions"}, "2025-01-09")
    expected = {f"{name}:freshness_check" for name in DAILY_FINAL_MODELS}

    def tick() -> RunRequest | SkipReason | None:
        with freeze_time(AFTER_DEADLINE):
            context = build_sensor_context(instance=instance, definitions=defs)
            result = freshness_checks_sensor(context)
        assert result is None or isinstance(result, RunRequest | SkipReason)
        return result

    first = tick()  # never evaluated: every check is requested
    assert isinstance(first, RunRequest)
    assert {key.to_user_string() for key in first.asset_check_keys or []} == expected
    evaluations = _run_freshness_checks(instance, settings, AFTER_DEADLINE)
    assert [n for n, e in evaluations.items() if not e.passed] == ["sessions"]
    # sessions failed and has not been rebuilt; the others pass until tomorrow's deadline
    assert isinstance(tick(), SkipReason)
    _materialize_partitions(instance, ["sessions"], "2025-01-09")  # the late partition lands
    again = tick()
    assert isinstance(again, RunRequest)
    assert [key.to_user_string() for key in again.asset_check_keys or []] == ["sessions:freshness_check"]
