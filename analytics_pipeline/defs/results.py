"""Turning step results into Dagster metadata and check results, the same way everywhere."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Failure,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from analytics_pipeline.gates import GateFailed
from analytics_pipeline.quality import CheckOutcome
from analytics_pipeline.storage import PublishResult


def column_schema(path: Path, descriptions: Mapping[str, str]) -> TableSchema:
    """The published file's real column types, with descriptions from the code."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{path}', hive_partitioning = false)"
        ).fetchall()
    finally:
        con.close()
    return TableSchema(
        columns=[
            TableColumn(name=str(r[0]), type=str(r[1]), description=descriptions.get(str(r[0]))) for r in rows
        ]
    )


def declared_schema(descriptions: Mapping[str, str]) -> TableSchema:
    """Column names and meanings known before anything runs, for the asset's definition."""
    return TableSchema(
        columns=[
            TableColumn(name=n, type="see materialization", description=d) for n, d in descriptions.items()
        ]
    )


def publish_metadata(
    published: PublishResult, row_count: int, descriptions: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "dagster/row_count": row_count,
        "dagster/column_schema": column_schema(published.path, descriptions),
        "path": MetadataValue.path(str(published.path)),
        "bytes_written": published.bytes_written,
        "sha256": published.sha256,
        "changed": published.changed,
        "previous_version": str(published.previous_version) if published.previous_version else "none",
    }


def count_metadata(counts: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers stay numbers (so the UI can plot them); nested counts become JSON."""
    metadata: dict[str, Any] = {}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            metadata[key] = MetadataValue.json(value) if isinstance(value, dict | list) else str(value)
        else:
            metadata[key] = value
    return metadata


def _metadata_value(value: Any) -> Any:
    return MetadataValue.json(value) if isinstance(value, dict | list) else value


def check_results(
    outcomes: Iterable[CheckOutcome], specs: Iterable[AssetCheckSpec]
) -> list[AssetCheckResult]:
    """One result per outcome, with its severity: a failed WARN check does not block."""
    asset_of = {spec.name: spec.asset_key for spec in specs}
    return [
        AssetCheckResult(
            check_name=o.name,
            asset_key=asset_of[o.name],
            passed=o.passed,
            severity=AssetCheckSeverity.ERROR if o.severity == "ERROR" else AssetCheckSeverity.WARN,
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
    ) from None
