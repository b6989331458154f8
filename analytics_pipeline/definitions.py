"""The one ``Definitions`` object: what ``dagster dev -w workspace.yaml`` loads."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.events_assets import conform_events_day
from analytics_pipeline.defs.freshness import freshness_checks, freshness_checks_sensor
from analytics_pipeline.defs.ingestion_assets import ingest_landing_day
from analytics_pipeline.defs.jobs import (
    dimensions_job,
    late_window_job,
    late_window_sensor,
    models_job,
    models_sensor,
    nightly_job,
    nightly_schedule,
)
from analytics_pipeline.defs.model_assets import model_assets
from analytics_pipeline.settings import PipelineSettings

defs = Definitions(
    assets=[ingest_landing_day, conform_events_day, *model_assets],
    asset_checks=freshness_checks,
    jobs=[nightly_job, late_window_job, models_job, dimensions_job],
    schedules=[nightly_schedule],
    sensors=[late_window_sensor, models_sensor, freshness_checks_sensor],
    resources={"settings": PipelineSettings.from_env()},
)
