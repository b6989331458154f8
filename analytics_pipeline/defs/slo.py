"""SLOs in Dagster: the ``golden_queries`` asset, its latency and invariant checks, after every nightly plan.

``golden_queries`` runs in ``metrics_job`` (after the models are rebuilt). Each golden query's
p50/p95/p99, cold and warm, are numeric metadata of the materialization, so the UI plots
latency over time and creep shows as a rising line; each query's latency SLO and each
invariant is an asset check at its declared severity (``error`` is blocking: the run
fails). The data-latency SLOs of ``checks/slos.yml`` are checks of the events and ingest
steps (defs/events.py, defs/ingest.py).
"""

import warnings
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Definitions,
    MaterializeResult,
    PreviewWarning,
    asset,
)

from analytics_pipeline.defs.checks import DAGSTER_SEVERITY
from analytics_pipeline.defs.metrics import metrics, metrics_cache, tables_read
from analytics_pipeline.defs.resources import settings as load_settings
from analytics_pipeline.defs.retries import STEP_RETRY_POLICY
from analytics_pipeline.metrics.definitions import project_metrics
from analytics_pipeline.quality.outcomes import CheckOutcome
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.slo.golden import (
    evaluate_invariant,
    golden_check_names,
    latency_outcome,
    load_golden,
    measure,
)

# Loading validates checks/golden_queries.yml against the metrics: a wrong name stops the code location.
golden = load_golden(load_settings.golden_queries_path, metrics)
# what the golden queries and invariants read: their metrics' tables and the tables counted
GOLDEN_METRICS = {q.metric for q in golden.queries.values()} | {
    name
    for inv in golden.invariants.values()
    for name in (*inv.metrics, inv.metric, inv.approximate, inv.exact)
    if name is not None
}
GOLDEN_TABLES = sorted(
    {*tables_read(metrics, GOLDEN_METRICS), *(i.table for i in golden.invariants.values() if i.table)}
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", PreviewWarning)
    GOLDEN_CHECKS = [
        AssetCheckSpec(name, asset="golden_queries", blocking=severity.blocking,
                       description=f"[{severity.value}] {description}")
        for name, (description, severity) in golden_check_names(golden).items()
    ]  # fmt: skip


def _result(outcome: CheckOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=outcome.name,
        asset_key="golden_queries",
        passed=outcome.passed,
        severity=DAGSTER_SEVERITY[outcome.severity],
        description=outcome.description,
        metadata={k: v for k, v in outcome.metadata.items() if v is not None},
    )


@asset(
    group_name="metrics",
    deps=[metrics_cache, *GOLDEN_TABLES],
    check_specs=GOLDEN_CHECKS,
    description="The golden queries of checks/golden_queries.yml: latency (p50/p95/p99, cold and warm) "
    "and invariants on the answers, measured after every nightly plan.",
    kinds={"duckdb"},
    retry_policy=STEP_RETRY_POLICY,
)
def golden_queries(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
    current = project_metrics(settings)
    spec = load_golden(settings.golden_queries_path, current)
    metadata: dict[str, Any] = {}
    outcomes = []
    for name, q in spec.queries.items():
        timing = measure(name, q, settings, current, spec.runs)
        metadata.update(timing.metadata(f"{name}/"))
        outcomes.append(latency_outcome(name, q, timing))
        context.log.info(outcomes[-1].description)
    for name, invariant in spec.invariants.items():
        outcomes.append(evaluate_invariant(name, invariant, settings, current))
        if not outcomes[-1].passed:
            context.log.warning(f"{name}: {outcomes[-1].description}")
    yield MaterializeResult(metadata=metadata)
    for outcome in outcomes:
        yield _result(outcome)


defs = Definitions(assets=[golden_queries])
