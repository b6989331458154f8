"""Jobs, the nightly schedule and the late-window follow-up.

Nightly at 02:00 UTC the schedule ingests yesterday's landing folder and builds
yesterday's events. Yesterday's files can also hold late events for the L days
before it, so when that run succeeds a sensor rebuilds those L event dates. Two
steps rather than one run because a run has one partition key, and the rebuild
must wait for the ingest to finish.
"""

from collections.abc import Callable, Iterator, Mapping
from datetime import date, timedelta

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    RunStatusSensorContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    run_status_sensor,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from analytics_pipeline.conform import CONFLICTS_TABLE, EVENTS_TABLE, arrival_days
from analytics_pipeline.defs.checks import check_specs
from analytics_pipeline.defs.model_assets import model_specs
from analytics_pipeline.defs.partitions import LATE_WINDOW_DAYS, daily_partitions
from analytics_pipeline.ingestion import LEDGER_TABLE, QUARANTINE_TABLE, RAW_TABLE
from analytics_pipeline.models import ModelSpec, affected_partitions
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
        raw_days = set(arrival_days(event_day, settings.late_window_days))
        failed = failed_blocking_checks(context.instance, {RAW_TABLE: raw_days})
        if failed:  # all_deps_blocking_checks_passed: wait until those days pass their gates
            context.log.warning(f"not rebuilding events {event_day}: raw_events gates failed {failed}")
            continue
        yield RunRequest(run_key=f"late-window:{arrival_day}:{event_day}", partition_key=event_day)


def failed_blocking_checks(
    instance: DagsterInstance, partitions: Mapping[str, set[str]]
) -> dict[tuple[str, str], list[str]]:
    """(asset, partition) -> blocking checks whose latest evaluation failed.

    The state ``AutomationCondition.all_deps_blocking_checks_passed()`` reads: a partition
    whose gate failed was not published, so nothing is built on top of it until a later
    run passes its gate.
    """
    failed: dict[tuple[str, str], list[str]] = {}
    for asset, days in partitions.items():
        keys = [AssetCheckKey(AssetKey(asset), spec.name) for spec in check_specs(asset) if spec.blocking]
        if not keys or not days:
            continue
        infos = instance.event_log_storage.get_asset_check_partition_info(keys, partition_keys=sorted(days))
        for info in infos:
            if info.partition_key and info.latest_execution_status == AssetCheckExecutionRecordStatus.FAILED:
                failed.setdefault((asset, info.partition_key), []).append(info.check_key.name)
    return failed


def _upstream_partitions(spec: ModelSpec, day: str | None, warehouse: Warehouse) -> dict[str, set[str]]:
    upstream: dict[str, set[str]] = {}
    for table, window in spec.upstreams.items():
        if window.latest or day is None:
            published = warehouse.published_days(table)
            upstream[table] = set([d for d in published if day is None or d <= day][-1:])
        else:  # every day of the window: a day whose first build failed its gate is not published
            upstream[table] = set(window.days(day))
    return upstream


def skip_message(name: str, day: str | None, failed: dict[tuple[str, str], list[str]]) -> str:
    return f"not rebuilding {name} {day or ''}: upstream blocking checks failed {failed}"


def model_rebuilds(
    changed_event_days: set[str],
    warehouse: Warehouse,
    instance: DagsterInstance | None = None,
    on_skip: Callable[[str, str | None, dict[tuple[str, str], list[str]]], None] | None = None,
) -> list[tuple[str, str | None, list[str]]]:
    """(job, partition, models) runs that bring every model up to date after events changed.

    Runs follow the dependency order of model partitions (windows reach backwards and
    forwards), grouping consecutive partitions of the same date into one run. With an
    instance, a model partition that reads a partition whose blocking check failed is
    left out and passed to ``on_skip``: all_deps_blocking_checks_passed.
    """
    data_days = warehouse.published_days(EVENTS_TABLE)
    plan = affected_partitions(model_specs, {EVENTS_TABLE: changed_event_days}, data_days)
    runs: list[tuple[str, str | None, list[str]]] = []
    for spec, day in plan:
        failed = blocked_by(instance, spec, day, warehouse) if instance is not None else {}
        if failed:
            if on_skip:
                on_skip(spec.name, day, failed)
            continue
        job = "models_job" if day else "dimensions_job"
        if runs and runs[-1][0] == job and runs[-1][1] == day:
            runs[-1][2].append(spec.name)
        else:
            runs.append((job, day, [spec.name]))
    return runs


def blocked_by(
    instance: DagsterInstance, spec: ModelSpec, day: str | None, warehouse: Warehouse
) -> dict[tuple[str, str], list[str]]:
    """The upstream partitions of a model partition whose latest gate failed."""
    return failed_blocking_checks(instance, _upstream_partitions(spec, day, warehouse))


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
    warehouse = Warehouse(settings.warehouse_path)

    def log_skip(name: str, day: str | None, failed: dict[tuple[str, str], list[str]]) -> None:
        context.log.warning(skip_message(name, day, failed))

    runs = model_rebuilds({event_day}, warehouse, context.instance, on_skip=log_skip)
    for position, (job_name, day, names) in enumerate(runs):
        yield RunRequest(
            run_key=f"models:{run_id}:{position}",
            job_name=job_name,
            partition_key=day,
            asset_selection=[AssetKey(name) for name in names],
        )
