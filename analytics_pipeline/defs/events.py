"""The events stage in Dagster: ``events`` and ``event_id_conflicts``, the nightly job and the late window.

Nightly at 02:00 UTC ``nightly_schedule`` ingests yesterday's landing folder and builds
yesterday's events (``nightly_job``). Yesterday's files can also hold late events for the
L days before it, so when that run succeeds ``late_window_sensor`` rebuilds those event
dates (``late_window_job``). Two steps rather than one run because a run has one
partition key, and the rebuild must wait for the ingest to finish.

``events`` and ``event_id_conflicts`` are built and published together by one gated step;
either can be selected alone, and the step then warns that it published the other too
(see ``selected_only`` in ``defs/ingest.py``).
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetSelection,
    AssetSpec,
    DagsterRunStatus,
    Definitions,
    MaterializeResult,
    RunRequest,
    RunStatusSensorContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    multi_asset,
    run_status_sensor,
)

from analytics_pipeline.defs.checks import (
    check_results,
    check_specs,
    events_latency_results,
    failed_gate,
    latency_check_specs,
)
from analytics_pipeline.defs.ingest import selected_only, unselected_metadata, warn_unselected
from analytics_pipeline.defs.metadata import count_metadata, declared_schema, publish_metadata
from analytics_pipeline.defs.partitions import daily_partitions, late_window_mapping
from analytics_pipeline.defs.retries import STEP_RETRY_POLICY
from analytics_pipeline.events import dedupe
from analytics_pipeline.events.dedupe import EVENT_COLUMNS, EVENTS_CHECKS
from analytics_pipeline.events.late_window import arrival_days, event_days_to_rebuild
from analytics_pipeline.quality.gate_status import blocked_partitions
from analytics_pipeline.quality.outcomes import GateFailed
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.slo.data_latency import RECEIVED_P95, RECEIVED_P99
from analytics_pipeline.warehouse.catalog import refresh_catalog
from analytics_pipeline.warehouse.storage import Warehouse, recording_run
from analytics_pipeline.warehouse.tables import (
    EVENT_ID_CONFLICTS,
    EVENTS,
    FILE_LEDGER,
    QUARANTINED_EVENTS,
    RAW_EVENTS,
)

CONFLICT_COLUMNS = {
    "message_id": "The messageId delivered with different contents.",
    "kept_content_hash": "Content hash of the copy kept in events.",
    "content_hash": "Content hash of this losing copy.",
    "raw_line": "The losing copy's original line.",
}

DEDUPE_CHECKS = check_specs(EVENTS, EVENTS_CHECKS)  # event_id_conflicts has none of its own
DEDUPE_LATENCY_CHECKS = latency_check_specs(EVENTS, [RECEIVED_P95, RECEIVED_P99])


@multi_asset(
    name="dedupe_events_day",
    specs=[
        AssetSpec(
            EVENTS,
            description="Deduplicated events, one row per messageId, by event date (UTC). "
            "Built from raw_events of the event date and the late window after it.",
            group_name="events",
            deps=[AssetDep(RAW_EVENTS, partition_mapping=late_window_mapping)],
            metadata={"dagster/column_schema": declared_schema(EVENT_COLUMNS)},
            kinds={"duckdb", "parquet"},
        ),
        AssetSpec(
            EVENT_ID_CONFLICTS,
            description="Copies that reused a messageId with different content (id_conflict quarantine).",
            group_name="events",
            deps=[AssetDep(RAW_EVENTS, partition_mapping=late_window_mapping)],
            metadata={"dagster/column_schema": declared_schema(CONFLICT_COLUMNS)},
            kinds={"duckdb", "parquet"},
        ),
    ],
    partitions_def=daily_partitions,
    check_specs=DEDUPE_CHECKS + DEDUPE_LATENCY_CHECKS,
    can_subset=True,  # selectable alone; it always builds and publishes both (see selected_only)
    pool="warehouse_io",
    retry_policy=STEP_RETRY_POLICY,
)
def dedupe_events_day(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
    """Deduplicate one event date; publish only if the blocking checks pass."""
    yield from selected_only(context, _dedupe_results(context, settings))


def _dedupe_results(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
    day = context.partition_key
    try:
        with recording_run(context.run_id):  # the publish records say which run wrote them
            result = dedupe.dedupe_events_day(settings, day)
    except GateFailed as failed:
        yield from failed_gate(failed, DEDUPE_CHECKS)
        return
    counts = result.counts
    if counts["arrival_days_missing"]:
        context.log.info(f"arrival days not ingested yet: {counts['arrival_days_missing']}")
    context.log.info(
        f"{day}: {counts['input_rows']} rows -> {counts['events']} events, "
        f"{counts['duplicates']} duplicates, {counts['id_conflicts']} id conflicts"
    )
    refresh_catalog(Warehouse(settings.warehouse_path))
    unselected = unselected_metadata(warn_unselected(context, day, result.published))
    yield MaterializeResult(
        asset_key=EVENTS,
        metadata={
            **count_metadata(counts),
            **unselected,
            "duration_s": round(result.duration_s, 3),
            "gate_duration_s": round(result.gate_duration_s, 3),
            **publish_metadata(result.published[EVENTS], counts["events"], EVENT_COLUMNS),
        },
    )
    yield MaterializeResult(
        asset_key=EVENT_ID_CONFLICTS,
        metadata={
            **unselected,
            **publish_metadata(
                result.published[EVENT_ID_CONFLICTS], counts["id_conflicts"], CONFLICT_COLUMNS
            ),
        },
    )
    yield from check_results(result.checks, DEDUPE_CHECKS)  # they audited what was just published
    yield from events_latency_results(result.published[EVENTS].path, day)  # checks/slos.yml


nightly_job = define_asset_job(
    "nightly_job",
    selection=AssetSelection.assets(RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER, EVENTS, EVENT_ID_CONFLICTS),
    partitions_def=daily_partitions,
    description="Ingest one arrival day and build the events of that date.",
)

late_window_job = define_asset_job(
    "late_window_job",
    selection=AssetSelection.assets(EVENTS, EVENT_ID_CONFLICTS),
    partitions_def=daily_partitions,
    description="Rebuild the events of one date after late data for it arrived.",
)

nightly_schedule = build_schedule_from_partitioned_job(
    nightly_job,
    name="nightly_schedule",
    hour_of_day=2,
    minute_of_hour=0,
    description="02:00 UTC: yesterday's partition (the last complete day).",
)


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
    for event_day in event_days_to_rebuild(arrival_day, settings.late_window_days, warehouse):
        if event_day < settings.partitions_start:
            continue
        blocked = blocked_partitions(
            warehouse, {RAW_EVENTS: arrival_days(event_day, settings.late_window_days)}
        )
        if blocked:  # all_deps_blocking_checks_passed: wait until those days pass their gates
            context.log.warning(f"not rebuilding events {event_day}: raw_events gates failed {blocked}")
            continue
        yield RunRequest(run_key=f"late-window:{arrival_day}:{event_day}", partition_key=event_day)


defs = Definitions(
    assets=[dedupe_events_day],
    jobs=[nightly_job, late_window_job],
    schedules=[nightly_schedule],
    sensors=[late_window_sensor],
)
