"""Jobs, the nightly schedule and the late-window follow-up.

Nightly at 02:00 UTC the schedule ingests yesterday's landing folder and builds
yesterday's events. Yesterday's files can also hold late events for the L days
before it, so when that run succeeds a sensor rebuilds those L event dates. Two
steps rather than one run because a run has one partition key, and the rebuild
must wait for the ingest to finish.
"""

from collections.abc import Iterator
from datetime import date, timedelta

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterRunStatus,
    RunRequest,
    RunStatusSensorContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    run_status_sensor,
)

from analytics_pipeline.conform import CONFLICTS_TABLE, EVENTS_TABLE
from analytics_pipeline.defs.model_assets import model_specs
from analytics_pipeline.defs.partitions import LATE_WINDOW_DAYS, daily_partitions
from analytics_pipeline.ingestion import LEDGER_TABLE, QUARANTINE_TABLE, RAW_TABLE
from analytics_pipeline.models import affected_partitions
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.storage import Warehouse

# Model runs touch self-dependent snapshots (identities[D] reads identities[D-1]), so they
# run one at a time, oldest date first: dagster.yaml limits this tag to 1 concurrent run.
MODELS_QUEUE_TAG = "analytics/models_queue"

nightly_job = define_asset_job(
    "nightly_job",
    selection=AssetSelection.assets(RAW_TABLE, QUARANTINE_TABLE, LEDGER_TABLE, EVENTS_TABLE, CONFLICTS_TABLE),
    partitions_def=daily_partitions,
    description="Ingest one arrival day and build the events of that date.",
)

late_window_job = define_asset_job(
    "late_window_job",
    selection=AssetSelection.assets(EVENTS_TABLE, CONFLICTS_TABLE),
    partitions_def=daily_partitions,
    description="Rebuild the events of one date after late data for it arrived.",
)

models_job = define_asset_job(
    "models_job",
    selection=AssetSelection.assets(*[spec.name for spec in model_specs if spec.partitioned]),
    partitions_def=daily_partitions,
    description="Build every daily model (assets/models/*.sql) for one date.",
    tags={MODELS_QUEUE_TAG: "serial"},
)

dimensions_job = define_asset_job(
    "dimensions_job",
    selection=AssetSelection.assets(*[spec.name for spec in model_specs if not spec.partitioned]),
    description="Rebuild the unpartitioned models (dimensions such as users).",
    tags={MODELS_QUEUE_TAG: "serial"},
)

nightly_schedule = build_schedule_from_partitioned_job(
    nightly_job,
    name="nightly_schedule",
    hour_of_day=2,
    minute_of_hour=0,
    description="02:00 UTC: yesterday's partition (the last complete day).",
)


def late_window_days_for(
    arrival_day: str, late_window_days: int = LATE_WINDOW_DAYS, warehouse: Warehouse | None = None
) -> list[str]:
    """Earlier event dates that ``arrival_day``'s files hold events for.

    The ingest's manifest lists the event dates it saw, so only those are rebuilt;
    without a manifest every date in the late window is.
    """
    day = date.fromisoformat(arrival_day)
    window = [(day - timedelta(days=i)).isoformat() for i in range(late_window_days, 0, -1)]
    manifest = warehouse.read_manifest(RAW_TABLE, arrival_day) if warehouse else None
    if manifest is None:
        return window
    seen = set(manifest.get("event_dates", {}))
    return [d for d in window if d in seen]


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[nightly_job],
    request_job=late_window_job,
    description="After an arrival day is ingested, rebuild the event dates its late events belong to.",
)
def late_window_sensor(context: RunStatusSensorContext, settings: PipelineSettings) -> Iterator[RunRequest]:
    arrival_day = context.dagster_run.tags.get("dagster/partition")
    if not arrival_day:
        return
    warehouse = Warehouse(settings.warehouse_path)
    for event_day in late_window_days_for(arrival_day, settings.late_window_days, warehouse):
        if event_day < daily_partitions.start.date().isoformat():
            continue
        yield RunRequest(run_key=f"late-window:{arrival_day}:{event_day}", partition_key=event_day)


def model_rebuilds(
    changed_event_days: set[str], warehouse: Warehouse
) -> list[tuple[str, str | None, list[str]]]:
    """(job, partition, models) runs that bring every model up to date after events changed.

    Runs follow the dependency order of model partitions (windows reach backwards and
    forwards), grouping consecutive partitions of the same date into one run.
    """
    data_days = warehouse.published_days(EVENTS_TABLE)
    plan = affected_partitions(model_specs, {EVENTS_TABLE: changed_event_days}, data_days)
    runs: list[tuple[str, str | None, list[str]]] = []
    for spec, day in plan:
        job = "models_job" if day else "dimensions_job"
        if runs and runs[-1][0] == job and runs[-1][1] == day:
            runs[-1][2].append(spec.name)
        else:
            runs.append((job, day, [spec.name]))
    return runs


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[nightly_job, late_window_job],
    request_jobs=[models_job, dimensions_job],
    description="After events of a date are (re)built, rebuild every model partition that reads it.",
)
def models_sensor(context: RunStatusSensorContext, settings: PipelineSettings) -> Iterator[RunRequest]:
    event_day = context.dagster_run.tags.get("dagster/partition")
    if not event_day:
        return
    run_id = context.dagster_run.run_id
    runs = model_rebuilds({event_day}, Warehouse(settings.warehouse_path))
    for position, (job_name, day, names) in enumerate(runs):
        yield RunRequest(
            run_key=f"models:{run_id}:{position}",
            job_name=job_name,
            partition_key=day,
            asset_selection=[AssetKey(name) for name in names],
        )
