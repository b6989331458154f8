"""Asset checks derived from the quality layer's declarations and outcomes.

A stage declares its SQL invariants once (``SqlCheck`` lists beside its SQL); the suite of
an asset declares the rest (``checks/suites/<asset>.yml``). :func:`check_specs` turns both
into Dagster ``AssetCheckSpec``s, :func:`check_results` turns a step's outcomes into
``AssetCheckResult``s. An ``error`` check is ``blocking=True``: when it fails nothing is
published, the step fails and downstream assets do not run; a ``warn`` check only reports.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Failure,
    MetadataValue,
    PreviewWarning,
)

from analytics_pipeline.defs.partitions import daily_partitions
from analytics_pipeline.defs.resources import settings
from analytics_pipeline.quality.gates import planned_checks
from analytics_pipeline.quality.outcomes import CheckDeclaration, CheckOutcome, GateFailed, Severity
from analytics_pipeline.slo.data_latency import (
    arrival_day_outcome,
    events_latency_outcomes,
    load_slos,
    publish_time,
    received_to_publish,
)
from analytics_pipeline.warehouse.tables import EVENTS, RAW_EVENTS

DAGSTER_SEVERITY = {Severity.ERROR: AssetCheckSeverity.ERROR, Severity.WARN: AssetCheckSeverity.WARN}


def check_specs(
    asset: str, sql_checks: Sequence[CheckDeclaration] = (), partitioned: bool = True
) -> list[AssetCheckSpec]:
    """The asset's SQL invariants and its suite's checks, as Dagster declares them.

    Checks of a partitioned asset are partitioned too, so each partition has its own
    result in the UI and automation can tell which partition's gate failed.
    """
    declarations = [*sql_checks, *planned_checks(asset, settings.suites_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [
            AssetCheckSpec(
                check.name,
                asset=asset,
                blocking=check.blocking,
                description=f"[{check.severity.value}] {check.description}",
                partitions_def=daily_partitions if partitioned else None,
            )
            for check in declarations
        ]


def _metadata_value(value: Any) -> Any:
    return MetadataValue.json(value) if isinstance(value, dict | list) else value


def check_results(
    outcomes: Iterable[CheckOutcome], specs: Iterable[AssetCheckSpec]
) -> list[AssetCheckResult]:
    """One result per outcome, with its severity: a failed ``warn`` check does not block."""
    asset_of = {spec.name: spec.asset_key for spec in specs}
    return [
        AssetCheckResult(
            check_name=o.name,
            asset_key=asset_of[o.name],
            passed=o.passed,
            severity=DAGSTER_SEVERITY[o.severity],
            description=o.description,
            metadata={k: _metadata_value(v) for k, v in o.metadata.items() if v is not None},
        )
        for o in outcomes
    ]


def failed_gate(failed: GateFailed, specs: Iterable[AssetCheckSpec]) -> Iterator[AssetCheckResult]:
    """Report every check of a step whose gate failed, then fail the step (nothing was published).

    The step's failure names the checks, the partition and the counts; downstream steps of
    the run are skipped, and the models sensor does not build on the partition later.
    """
    yield from check_results(failed.outcomes, specs)
    raise Failure(
        description=str(failed),
        metadata={"failed_checks": MetadataValue.json([c.name for c in failed.failed])},
        allow_retries=False,
    ) from None


# --- data-latency SLOs (checks/slos.yml): reported after publishing, never blocking ----------------

DATA_LATENCY = load_slos(settings.slos_path)


def latency_check_specs(asset: str, names: Sequence[str]) -> list[AssetCheckSpec]:
    """The data-latency checks of an asset: measured on the published partition, so never blocking."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [
            AssetCheckSpec(
                name,
                asset=asset,
                blocking=False,
                description=f"[{DATA_LATENCY.events.severity.value}] data-latency SLO (checks/slos.yml)",
                partitions_def=daily_partitions,
            )
            for name in names
        ]


def events_latency_results(published: Path, day: str) -> list[AssetCheckResult]:
    """p95/p99 of publish time - receivedAt of an events partition, against the SLO."""
    figures = received_to_publish(published, publish_time(published))
    outcomes = events_latency_outcomes(DATA_LATENCY.events, figures)
    return [_result(EVENTS, o) for o in outcomes]


def arrival_latency_results(published: Path, day: str) -> list[AssetCheckResult]:
    """Hours from the end of the arrival day to the publication of its partitions, against the SLO."""
    return [_result(RAW_EVENTS, arrival_day_outcome(DATA_LATENCY.arrival_days, day, publish_time(published)))]


def _result(asset: str, outcome: CheckOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=outcome.name,
        asset_key=asset,
        passed=outcome.passed,
        severity=DAGSTER_SEVERITY[outcome.severity],
        description=outcome.description,
        metadata={k: _metadata_value(v) for k, v in outcome.metadata.items() if v is not None},
    )
