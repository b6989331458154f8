"""The ingest stage in Dagster: ``raw_events``, ``quarantined_events`` and ``file_ledger``, one step per arrival day."""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Definitions,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from analytics_pipeline.defs.checks import check_results, check_specs, failed_gate
from analytics_pipeline.defs.metadata import count_metadata, declared_schema, publish_metadata
from analytics_pipeline.defs.partitions import daily_partitions
from analytics_pipeline.ingest import arrival_day
from analytics_pipeline.ingest.arrival_day import QUARANTINED_EVENTS_CHECKS, RAW_EVENTS_CHECKS
from analytics_pipeline.ingest.parsing import QUARANTINE_COLUMNS, RAW_EVENT_COLUMNS
from analytics_pipeline.quality.outcomes import GateFailed
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.catalog import refresh_catalog
from analytics_pipeline.warehouse.storage import Warehouse
from analytics_pipeline.warehouse.tables import FILE_LEDGER, QUARANTINED_EVENTS, RAW_EVENTS

LEDGER_COLUMNS = {
    "path": "File path relative to the landing folder.",
    "sha256": "Content hash: the same bytes under another name are not read twice.",
    "status": "loaded, duplicate_file, refused, empty, partial, unreadable or ignored.",
    "line_count": "Lines (or Parquet rows) in the file.",
}

INGEST_CHECKS = check_specs(RAW_EVENTS, RAW_EVENTS_CHECKS) + check_specs(
    QUARANTINED_EVENTS, QUARANTINED_EVENTS_CHECKS
)


@multi_asset(
    specs=[
        AssetSpec(
            RAW_EVENTS,
            description="Parsed, typed events as they arrived, by arrival (landing folder) date. "
            "Keeps the original line for replay.",
            group_name="ingest",
            metadata={"dagster/column_schema": declared_schema(RAW_EVENT_COLUMNS)},
            kinds={"duckdb", "parquet"},
        ),
        AssetSpec(
            QUARANTINED_EVENTS,
            description="Every rejected line or file with a reason code, a message and the raw text.",
            group_name="ingest",
            metadata={"dagster/column_schema": declared_schema(QUARANTINE_COLUMNS)},
            kinds={"duckdb", "parquet"},
        ),
        AssetSpec(
            FILE_LEDGER,
            description="Every landing file seen: size, content hash, line count and what became of it.",
            group_name="ingest",
            metadata={"dagster/column_schema": declared_schema(LEDGER_COLUMNS)},
            kinds={"parquet"},
        ),
    ],
    partitions_def=daily_partitions,
    check_specs=INGEST_CHECKS,
    pool="warehouse_io",
)
def ingest_arrival_day(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
    """Read one arrival day of landing files; publish only if the blocking checks pass."""
    day = context.partition_key
    context.log.info(f"reading {settings.landing_path}/{day} (late window {settings.late_window_days} days)")
    try:
        result = arrival_day.ingest_arrival_day(settings, day)
    except GateFailed as failed:
        yield from failed_gate(failed, INGEST_CHECKS)
        return
    counts = result.counts
    context.log.info(
        f"{day}: {counts['lines_read']} lines, {counts['raw_events']} events, "
        f"{counts['quarantined_lines']} lines quarantined {counts['quarantined_by_reason']}"
    )
    refresh_catalog(Warehouse(settings.warehouse_path))
    shared = {**count_metadata(counts), "duration_s": round(result.duration_s, 3)}
    yield MaterializeResult(
        asset_key=RAW_EVENTS,
        metadata={
            **shared,
            **publish_metadata(result.published[RAW_EVENTS], counts["raw_events"], RAW_EVENT_COLUMNS),
        },
    )
    quarantined = counts["quarantined_lines"] + counts["quarantined_files"]
    yield MaterializeResult(
        asset_key=QUARANTINED_EVENTS,
        metadata={
            "quarantined_by_reason": MetadataValue.json(counts["quarantined_by_reason"]),
            **publish_metadata(result.published[QUARANTINED_EVENTS], quarantined, QUARANTINE_COLUMNS),
        },
    )
    yield MaterializeResult(
        asset_key=FILE_LEDGER,
        metadata={
            "files_by_status": MetadataValue.json(counts["files_by_status"]),
            **publish_metadata(result.published[FILE_LEDGER], counts["files"], LEDGER_COLUMNS),
        },
    )
    yield from check_results(result.raw_checks + result.quarantine_checks, INGEST_CHECKS)


defs = Definitions(assets=[ingest_arrival_day])
