"""One Dagster asset per SQL file in ``assets/models/``, built by a factory.

Upstreams and partition windows come from the files themselves (see ``models.py``),
so the asset graph in the UI is the SQL's own lineage.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    LastPartitionMapping,
    MaterializeResult,
    MetadataValue,
    PartitionMapping,
    TableColumnDep,
    TableColumnLineage,
    asset,
)

from analytics_pipeline.catalog import refresh_catalog
from analytics_pipeline.defs.checks import check_specs
from analytics_pipeline.defs.partitions import daily_partitions, window_mapping
from analytics_pipeline.defs.results import check_results, declared_schema, failed_gate, publish_metadata
from analytics_pipeline.freshness import freshness_policy_for
from analytics_pipeline.gates import GateFailed
from analytics_pipeline.models import ModelSpec, Window, build_model, load_models
from analytics_pipeline.settings import PROJECT_ROOT, PipelineSettings
from analytics_pipeline.storage import Warehouse

MODELS_DIR = PROJECT_ROOT / "assets" / "models"


def _mapping(window: Window) -> PartitionMapping | None:
    if window.latest:
        return LastPartitionMapping()
    if window.start == 0 and window.end == 0:
        return None  # the identity mapping, Dagster's default
    return window_mapping(window.start, window.end)


def model_asset(spec: ModelSpec) -> AssetsDefinition:
    checks = check_specs(spec.name, partitioned=spec.partitioned)
    deps = [
        AssetDep(upstream, partition_mapping=_mapping(window)) for upstream, window in spec.upstreams.items()
    ]

    @asset(
        name=spec.name,
        description=f"{spec.description}\n\nGrain: {spec.grain}.\n\nSQL: assets/models/{spec.path.name}",
        deps=deps,
        partitions_def=daily_partitions if spec.partitioned else None,
        group_name="models",
        kinds={"duckdb", "sql", "parquet"},
        metadata={"dagster/column_schema": declared_schema(spec.columns), "sql_file": str(spec.path.name)},
        pool="warehouse_io",
        check_specs=checks,
        freshness_policy=freshness_policy_for(spec.name),  # checks/freshness.yml
    )
    def _build(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
        day = context.partition_key if spec.partitioned else None
        try:
            result = build_model(settings, spec, day)
        except GateFailed as failed:
            yield from failed_gate(failed, checks)
            return
        refresh_catalog(Warehouse(settings.warehouse_path))
        context.log.info(
            f"{spec.name} {day or ''}: {result.rows} rows in {result.duration_s:.2f}s "
            f"(gates {result.gate_duration_s:.2f}s)"
        )
        yield MaterializeResult(
            metadata={
                **publish_metadata(result.published, result.rows, spec.columns),
                "inputs": MetadataValue.json(result.inputs),
                "dagster/column_lineage": TableColumnLineage(
                    deps_by_column={
                        column: [TableColumnDep(asset_key=AssetKey(t), column_name=c) for t, c in sources]
                        for column, sources in result.lineage.items()
                    }
                ),
                "duration_s": round(result.duration_s, 3),
                "gate_duration_s": round(result.gate_duration_s, 3),
            }
        )
        yield from check_results(result.checks, checks)  # they audited what was just published

    return _build


model_specs = load_models(MODELS_DIR)
model_assets = [model_asset(spec) for spec in model_specs]
