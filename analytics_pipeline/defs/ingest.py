"""The ingest stage in Dagster: ``raw_events``, ``quarantined_events`` and ``file_ledger``, one step per arrival day.

The step builds its tables together and publishes them together, only when every gate
passed: they are one unit. It can still be selected alone (``--select raw_events``): it
then builds and publishes all of them as always, reports what was selected and warns
that the others were published without Dagster recording it (see :func:`selected_only`).
"""

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Definitions,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from analytics_pipeline.defs.checks import (
    arrival_latency_results,
    check_results,
    check_specs,
    failed_gate,
    latency_check_specs,
)
from analytics_pipeline.defs.metadata import count_metadata, declared_schema, publish_metadata
from analytics_pipeline.defs.partitions import daily_partitions
from analytics_pipeline.defs.retries import STEP_RETRY_POLICY
from analytics_pipeline.ingest import arrival_day
from analytics_pipeline.ingest.arrival_day import QUARANTINED_EVENTS_CHECKS, RAW_EVENTS_CHECKS
from analytics_pipeline.ingest.parsing import QUARANTINE_COLUMNS, RAW_EVENT_COLUMNS
from analytics_pipeline.quality.outcomes import GateFailed
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.slo.data_latency import ARRIVAL_DAY
from analytics_pipeline.warehouse.catalog import refresh_catalog
from analytics_pipeline.warehouse.storage import PublishResult, Warehouse, recording_run
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
INGEST_LATENCY_CHECKS = latency_check_specs(RAW_EVENTS, [ARRIVAL_DAY])


def selected_only(context: AssetExecutionContext, results: Iterable[Any]) -> Iterator[Any]:
    """The results of a multi-asset step that this run selected; the rest are dropped.

    A subsettable multi-asset may only yield the assets and checks Dagster selected. The
    tables are still built and published together; :func:`warn_unselected` says so.
    """
    assets = context.selected_asset_keys
    checks = {(key.asset_key, key.name) for key in context.selected_asset_check_keys}
    for result in results:
        if isinstance(result, MaterializeResult) and result.asset_key not in assets:
            continue
        if isinstance(result, AssetCheckResult) and (result.asset_key, result.check_name) not in checks:
            continue
        yield result


def warn_unselected(
    context: AssetExecutionContext, day: str, published: Mapping[str, PublishResult]
) -> list[str]:
    """Warn about the tables this step published that the run did not select; return them."""
    unselected = [t for t in published if AssetKey(t) not in context.selected_asset_keys]
    if unselected:
        states = ", ".join(f"{t} ({_publish_state(published[t])})" for t in unselected)
        context.log.warning(
            f"{context.op_def.name} {day} builds and publishes {', '.join(published)} together "
            f"(one gated unit, every blocking check passed), so it also published {states}, which "
            "this run did not select: Dagster records no materialization or check results for them. "
            f"Select them too: --select {','.join(published)}"
        )
    return unselected


def _publish_state(published: PublishResult) -> str:
    if not published.changed:
        return "bytes unchanged"
    return "new version" if published.previous_version else "first version"


def unselected_metadata(unselected: list[str]) -> dict[str, Any]:
    """Materialization metadata naming the tables published alongside but not selected."""
    return {"also_published_unselected": MetadataValue.json(unselected)} if unselected else {}


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
    check_specs=INGEST_CHECKS + INGEST_LATENCY_CHECKS,
    can_subset=True,  # selectable alone; it always builds and publishes all three (see selected_only)
    pool="warehouse_io",
    retry_policy=STEP_RETRY_POLICY,
)
def ingest_arrival_day(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
    """Read one arrival day of landing files; publish only if the blocking checks pass."""
    yield from selected_only(context, _ingest_results(context, settings))


def _ingest_results(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
    day = context.partition_key
    context.log.info(f"reading {settings.landing_path}/{day} (late window {settings.late_window_days} days)")
    try:
        with recording_run(context.run_id):  # the publish records say which run wrote them
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
    unselected = unselected_metadata(warn_unselected(context, day, result.published))
    shared = {**count_metadata(counts), "duration_s": round(result.duration_s, 3)}
    yield MaterializeResult(
        asset_key=RAW_EVENTS,
        metadata={
            **shared,
            **unselected,
            **publish_metadata(result.published[RAW_EVENTS], counts["raw_events"], RAW_EVENT_COLUMNS),
        },
    )
    quarantined = counts["quarantined_lines"] + counts["quarantined_files"]
    yield MaterializeResult(
        asset_key=QUARANTINED_EVENTS,
        metadata={
            "quarantined_by_reason": MetadataValue.json(counts["quarantined_by_reason"]),
            **unselected,
            **publish_metadata(result.published[QUARANTINED_EVENTS], quarantined, QUARANTINE_COLUMNS),
        },
    )
    yield MaterializeResult(
        asset_key=FILE_LEDGER,
        metadata={
            "files_by_status": MetadataValue.json(counts["files_by_status"]),
            **unselected,
            **publish_metadata(result.published[FILE_LEDGER], counts["files"], LEDGER_COLUMNS),
        },
    )
    yield from check_results(result.raw_checks + result.quarantine_checks, INGEST_CHECKS)
    yield from arrival_latency_results(result.published[RAW_EVENTS].path, day)  # checks/slos.yml


defs = Definitions(assets=[ingest_arrival_day])
