"""The metrics stage in Dagster: the daily sketches, the metric definitions and the result cache's health.

``daily_sketches`` is built like a model (it joins the rebuild plan, see defs/models.py).
After each rebuild plan finishes (``dimensions_job`` succeeds), ``metrics_sensor`` runs
``metrics_job``: ``metric_definitions`` publishes the definitions as metadata (the table of
docs/metrics.md), and ``metrics_cache`` sweeps the entries whose partitions were
republished and records hits, misses, hit rate, entries, bytes, staleness and age as
numeric metadata, so the UI plots them over time.
"""

from collections.abc import Iterable, Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DagsterRunStatus,
    Definitions,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunStatusSensorContext,
    asset,
    define_asset_job,
    run_status_sensor,
)

from analytics_pipeline.defs.models import MODELS_QUEUE_TAG, dimensions_job, model_asset
from analytics_pipeline.defs.resources import settings as load_settings
from analytics_pipeline.defs.retries import STEP_RETRY_POLICY
from analytics_pipeline.metrics.cache import ResultCache
from analytics_pipeline.metrics.definitions import Metrics, project_metrics
from analytics_pipeline.metrics.docs import metrics_table
from analytics_pipeline.metrics.sketches import SKETCHES_SPEC, build_sketches
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

# Loading the definitions validates assets/metrics.yml: a wrong name stops the code location.
metrics = project_metrics(load_settings)

daily_sketches = model_asset(SKETCHES_SPEC, build=build_sketches, group_name="metrics")


def tables_read(current: Metrics, names: Iterable[str] | None = None) -> list[str]:
    """The tables behind the metrics (all when ``names`` is None): each semantic model's table,
    and the daily sketches for an approximate metric. Declared as deps, so lineage shows them."""
    if names is None:
        tables = {model.table or name for name, model in current.models.items()}
        chosen = list(current.metrics.values())
    else:
        tables, chosen = set(), [current.get(name) for name in names]
    for metric in chosen:
        model = current.models[metric.model] if metric.model else None
        tables.add(SKETCHES_SPEC.name if model is None else model.table or str(metric.model))
    return sorted(tables)


@asset(
    group_name="metrics",
    # the semantic models are over these tables (unpartitioned: every partition of them)
    deps=tables_read(metrics),
    description="The governed metric definitions (assets/metrics.yml): name, kind, description, formula, "
    "owner, dimensions and grains; the same table as docs/metrics.md.",
    kinds={"yaml"},
    retry_policy=STEP_RETRY_POLICY,
)
def metric_definitions(context: AssetExecutionContext, settings: PipelineSettings) -> MaterializeResult:
    current = project_metrics(settings)
    return MaterializeResult(
        metadata={
            "metrics": MetadataValue.md(metrics_table(current)),
            "metric_count": len(current.metrics),
            "definitions_file": MetadataValue.path(str(current.path)),
        }
    )


@asset(
    group_name="metrics",
    # its entries are answers read from those tables; a republished partition makes them stale
    deps=[metric_definitions, *tables_read(metrics)],
    description="The metric result cache: entries whose partitions were republished are swept; hits, misses, "
    "hit rate, entries, bytes, staleness and entry age are recorded per metric and in total.",
    kinds={"diskcache"},
    retry_policy=STEP_RETRY_POLICY,
)
def metrics_cache(context: AssetExecutionContext, settings: PipelineSettings) -> MaterializeResult:
    cache = ResultCache(settings.cache_path)
    warehouse = Warehouse(settings.warehouse_path)
    try:
        swept = cache.sweep(warehouse)
        stats = cache.stats(warehouse)
    finally:
        cache.close()
    metadata: dict[str, Any] = {"swept_entries": swept}
    for metric, figures in stats.items():
        prefix = "" if metric == "_total" else f"{metric}/"
        for key, value in figures.as_dict().items():
            if key != "metric" and value is not None:
                metadata[f"{prefix}{key}"] = float(value) if isinstance(value, float) else value
    context.log.info(f"swept {swept} entries; totals {stats['_total'].as_dict()}")
    return MaterializeResult(metadata=metadata)


# every unpartitioned asset of the group: the definitions, the cache, the golden queries (defs/slo.py)
metrics_job = define_asset_job(
    "metrics_job",
    selection=AssetSelection.groups("metrics") - AssetSelection.assets(daily_sketches),
    description="After the models are rebuilt: publish the metric definitions, measure the result cache, "
    "run the golden queries.",
    # in the models queue: it reads the models, so it waits for the model runs already queued (another
    # plan's, requested before this one finished) instead of checking invariants half-way through them
    tags={MODELS_QUEUE_TAG: "serial"},
)


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[dimensions_job],
    request_job=metrics_job,
    description="When a rebuild plan has finished (its last run rebuilds the dimensions), refresh the metrics.",
)
def metrics_sensor(context: RunStatusSensorContext) -> Iterator[RunRequest]:
    yield RunRequest(run_key=f"metrics:{context.dagster_run.run_id}")


defs = Definitions(
    assets=[daily_sketches, metric_definitions, metrics_cache],
    jobs=[metrics_job],
    sensors=[metrics_sensor],
)
