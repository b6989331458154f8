"""``events`` and ``event_id_conflicts``: one step per event date, over the late window."""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    multi_asset,
)

from analytics_pipeline.catalog import refresh_catalog
from analytics_pipeline.conform import CONFLICTS_TABLE, EVENT_COLUMNS, EVENTS_TABLE, build_events_day
from analytics_pipeline.defs.checks import check_specs
from analytics_pipeline.defs.partitions import daily_partitions, late_window_mapping
from analytics_pipeline.defs.results import (
    check_results,
    count_metadata,
    declared_schema,
    failed_gate,
    publish_metadata,
)
from analytics_pipeline.gates import GateFailed
from analytics_pipeline.ingestion import RAW_TABLE
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.storage import Warehouse

CONFLICT_COLUMNS = {
    "message_id": "The messageId delivered with different contents.",
    "kept_content_hash": "Content hash of the copy kept in events.",
    "content_hash": "Content hash of this losing copy.",
    "raw_line": "The losing copy's original line.",
}

EVENTS_CHECKS = check_specs(EVENTS_TABLE)  # event_id_conflicts has none of its own


@multi_asset(
    specs=[
        AssetSpec(
            EVENTS_TABLE,
            description="Conformed events, one row per messageId, by event date (UTC). "
            "Built from raw_events of the event date and the late window after it.",
            group_name="events",
            deps=[AssetDep(RAW_TABLE, partition_mapping=late_window_mapping)],
            metadata={"dagster/column_schema": declared_schema(EVENT_COLUMNS)},
            kinds={"duckdb", "parquet"},
        ),
        AssetSpec(
            CONFLICTS_TABLE,
            description="Copies that reused a messageId with different content (id_conflict quarantine).",
            group_name="events",
            deps=[AssetDep(RAW_TABLE, partition_mapping=late_window_mapping)],
            metadata={"dagster/column_schema": declared_schema(CONFLICT_COLUMNS)},
            kinds={"duckdb", "parquet"},
        ),
    ],
    partitions_def=daily_partitions,
    check_specs=EVENTS_CHECKS,
    pool="warehouse_io",
)
def conform_events_day(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
    """Deduplicate one event date; publish only if the blocking checks pass."""
    day = context.partition_key
    try:
        result = build_events_day(settings, day)
    except GateFailed as failed:
        yield from failed_gate(failed, EVENTS_CHECKS)
        return
    counts = result.counts
    if counts["arrival_days_missing"]:
        context.log.info(f"arrival days not ingested yet: {counts['arrival_days_missing']}")
    context.log.info(
        f"{day}: {counts['input_rows']} rows -> {counts['events']} events, "
        f"{counts['duplicates']} duplicates, {counts['id_conflicts']} id conflicts"
    )
    refresh_catalog(Warehouse(settings.warehouse_path))
    yield MaterializeResult(
        asset_key=EVENTS_TABLE,
        metadata={
            **count_metadata(counts),
            "duration_s": round(result.duration_s, 3),
            "gate_duration_s": round(result.gate_duration_s, 3),
            **publish_metadata(result.published[EVENTS_TABLE], counts["events"], EVENT_COLUMNS),
        },
    )
    yield MaterializeResult(
        asset_key=CONFLICTS_TABLE,
        metadata=publish_metadata(
            result.published[CONFLICTS_TABLE], counts["id_conflicts"], CONFLICT_COLUMNS
        ),
    )
    yield from check_results(result.checks, EVENTS_CHECKS)  # they audited what was just published
