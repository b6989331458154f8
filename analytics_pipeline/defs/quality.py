"""Freshness in Dagster: the final models' partition deadlines, one check each, and the sensor that runs them.

``checks/freshness.yml`` says by when yesterday's partition must exist (06:00 UTC). Each
daily final model gets Dagster's time-partition ``freshness_check``: after the deadline it
fails until the previous day's partition has been materialized (the description names the
partition, metadata ``dagster/latest_cron_tick_timestamp`` the deadline).

Dagster 1.13 marks both factories "superseded" by asset ``FreshnessPolicy``s, but a policy
only watches the latest materialization of any partition, not a given partition by a given
time, so the deadlines keep these checks (the models carry the time-window policy as well).
"""

import warnings
from collections.abc import Sequence

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    DefaultSensorStatus,
    Definitions,
    SensorDefinition,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
)

from analytics_pipeline.defs.models import final_models_freshness, model_assets
from analytics_pipeline.defs.resources import settings
from analytics_pipeline.quality.freshness import FRESHNESS_TIMEZONE, FreshnessConfigError, ModelFreshness

FRESHNESS_SENSOR_NAME = "final_models_freshness_sensor"


def partition_deadline_checks(
    assets: Sequence[AssetsDefinition], config: dict[str, ModelFreshness], source: str
) -> list[AssetChecksDefinition]:
    """One ``freshness_check`` per daily final model, grouped by deadline."""
    by_name = {asset.key.to_user_string(): asset for asset in assets}
    by_cron: dict[str, list[AssetsDefinition]] = {}
    for name, model in config.items():
        asset = by_name[name]
        if model.deadline_cron is None:
            continue
        if asset.partitions_def is None:
            raise FreshnessConfigError(
                f"{source}: models.{name}.partition_deadline: {name} is not partitioned; "
                "set `partition_deadline: null`"
            )
        by_cron.setdefault(model.deadline_cron, []).append(asset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        return [
            checks_def
            for cron, group in sorted(by_cron.items())
            for checks_def in build_time_partition_freshness_checks(
                assets=group, deadline_cron=cron, timezone=FRESHNESS_TIMEZONE
            )
        ]


def freshness_sensor(checks: Sequence[AssetChecksDefinition]) -> SensorDefinition:
    """Runs each check when it has never run, or when a passing result's deadline has come round again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        return build_sensor_for_freshness_checks(
            freshness_checks=checks,
            name=FRESHNESS_SENSOR_NAME,
            minimum_interval_seconds=300,
            default_status=DefaultSensorStatus.RUNNING,
        )


freshness_checks = partition_deadline_checks(
    model_assets, final_models_freshness, str(settings.freshness_path)
)
freshness_checks_sensor = freshness_sensor(freshness_checks)

defs = Definitions(asset_checks=freshness_checks, sensors=[freshness_checks_sensor])
