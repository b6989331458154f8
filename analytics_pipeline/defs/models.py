"""The models stage in Dagster: one asset per SQL file in ``assets/models/``, its jobs and its sensor.

Upstreams and partition windows come from the files themselves (see ``models/loader.py``),
so the asset graph in the UI is the SQL's own lineage. The final models carry the
``FreshnessPolicy`` of ``checks/freshness.yml``. When events of a date are (re)built,
``models_sensor`` launches the rebuilds ``models/plan.py`` orders.
"""

from collections.abc import Callable, Iterator
from typing import Any

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    DagsterRunStatus,
    DataVersion,
    Definitions,
    FreshnessPolicy,
    LastPartitionMapping,
    MaterializeResult,
    MetadataValue,
    PartitionMapping,
    RunRequest,
    RunStatusSensorContext,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
    asset,
    define_asset_job,
    run_status_sensor,
)

from analytics_pipeline.defs.checks import check_results, check_specs, failed_gate
from analytics_pipeline.defs.events import late_window_job, nightly_job
from analytics_pipeline.defs.flags import FLAGGED, flags_asset_name
from analytics_pipeline.defs.metadata import declared_schema, publish_metadata
from analytics_pipeline.defs.partitions import daily_partitions, window_mapping
from analytics_pipeline.defs.resources import settings as load_settings
from analytics_pipeline.defs.retries import STEP_RETRY_POLICY
from analytics_pipeline.metrics.sketches import SKETCHES_SPEC
from analytics_pipeline.models.build import ModelResult, build_model
from analytics_pipeline.models.funnels import SCHEMA as FUNNEL_STEPS_SCHEMA
from analytics_pipeline.models.loader import ModelSpec, Window, load_models
from analytics_pipeline.models.plan import (
    DAILY_MODELS_JOB,
    DIMENSIONS_JOB,
    Blocked,
    PlannedRun,
    plan_rebuilds,
    skip_message,
)
from analytics_pipeline.quality.freshness import load_freshness
from analytics_pipeline.quality.outcomes import GateFailed
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.catalog import refresh_catalog
from analytics_pipeline.warehouse.storage import Warehouse, recording_run

Builder = Callable[[PipelineSettings, ModelSpec, str | None], ModelResult]

# Model runs touch self-dependent snapshots (identities[D] reads identities[D-1]), so they
# run one at a time, oldest date first: dagster.yaml limits this tag to 1 concurrent run.
MODELS_QUEUE_TAG = "analytics/models_queue"

model_specs = load_models(load_settings.models_path)
# every table the rebuild plan orders: the SQL models, then the daily sketches read from them
planned_specs = [*model_specs, SKETCHES_SPEC]
final_models_freshness = load_freshness(
    load_settings.freshness_path, known_models=[spec.name for spec in model_specs]
)


def freshness_policy_for(model_name: str) -> FreshnessPolicy | None:
    """The final model's time-window policy from checks/freshness.yml; None for other models."""
    model = final_models_freshness.get(model_name)
    if model is None:
        return None
    return FreshnessPolicy.time_window(fail_window=model.fail_after, warn_window=model.warn_after)


def _mapping(window: Window) -> PartitionMapping | None:
    if window.latest:
        return LastPartitionMapping()
    if window.start == 0 and window.end == 0:
        return None  # the identity mapping, Dagster's default
    return window_mapping(window.start, window.end)


# Seed tables are files of assets/ that models read as tables (models/loader.py SEED_TABLE_NAMES):
# external assets, so the graph shows which models read them and the column lineage those models
# record (funnels.step from funnel_steps.step_event ...) points at an asset of the graph.
seed_assets = [
    AssetSpec(
        "funnel_steps",
        group_name="models",
        description="The funnels of assets/funnels.yml as a table, one row per step (validated when a "
        "model reads it; a wrong key fails the build naming the file, funnel and key).\n\n"
        "Grain: one row per (funnel, step_index).\n\nFile: assets/funnels.yml",
        kinds={"yaml"},
        metadata={
            "dagster/column_schema": TableSchema(
                columns=[TableColumn(name=f.name, type=str(f.type)) for f in FUNNEL_STEPS_SCHEMA]
            ),
            "source_file": "funnels.yml",
        },
    )
]


def model_asset(
    spec: ModelSpec, build: Builder = build_model, group_name: str = "models"
) -> AssetsDefinition:
    """The Dagster asset of one planned table: a SQL model, or a table built in Python (``build``)."""
    checks = check_specs(spec.name, partitioned=spec.partitioned)
    source = f"SQL: assets/models/{spec.path.name}" if spec.sql else f"Built by {spec.path.name}"
    deps = [
        AssetDep(upstream, partition_mapping=_mapping(window)) for upstream, window in spec.upstreams.items()
    ] + [AssetDep(seed) for seed in spec.seeds]
    if spec.name in FLAGGED:  # partition by partition: a flag change marks exactly its days stale
        deps.append(AssetDep(flags_asset_name(spec.name)))

    @asset(
        name=spec.name,
        description=f"{spec.description}\n\nGrain: {spec.grain}.\n\n{source}",
        deps=deps,
        partitions_def=daily_partitions if spec.partitioned else None,
        group_name=group_name,
        kinds={"duckdb", "sql", "parquet"} if spec.sql else {"duckdb", "python", "parquet"},
        metadata={"dagster/column_schema": declared_schema(spec.columns), "source_file": str(spec.path.name)},
        pool="warehouse_io",
        retry_policy=STEP_RETRY_POLICY,
        check_specs=checks,
        freshness_policy=freshness_policy_for(spec.name),  # checks/freshness.yml
    )
    def _build(context: AssetExecutionContext, settings: PipelineSettings) -> Iterator[Any]:
        day = context.partition_key if spec.partitioned else None
        try:
            with recording_run(context.run_id):  # the publish records say which run wrote them
                result = build(settings, spec, day)
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
                "active_flags": MetadataValue.json(result.flags),
            },
            # the bytes published: a rebuild that changes nothing leaves what reads it fresh
            data_version=DataVersion(result.published.sha256),
        )
        yield from check_results(result.checks, checks)  # they audited what was just published

    return _build


model_assets = [model_asset(spec) for spec in model_specs]

models_job = define_asset_job(
    DAILY_MODELS_JOB,
    selection=AssetSelection.assets(*[spec.name for spec in planned_specs if spec.partitioned]),
    partitions_def=daily_partitions,
    description="Build every daily model (assets/models/*.sql) and the daily sketches for one date.",
    tags={MODELS_QUEUE_TAG: "serial"},
)

dimensions_job = define_asset_job(
    DIMENSIONS_JOB,
    selection=AssetSelection.assets(*[spec.name for spec in model_specs if not spec.partitioned]),
    description="Rebuild the unpartitioned models (dimensions such as users).",
    tags={MODELS_QUEUE_TAG: "serial"},
)


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

    def log_skip(name: str, day: str | None, blocked: Blocked) -> None:
        context.log.warning(skip_message(name, day, blocked))

    runs = plan_rebuilds(planned_specs, {event_day}, Warehouse(settings.warehouse_path), on_skip=log_skip)
    yield from _run_requests(f"models:{run_id}", runs)
    # A flag change (assets/flags.yml) made partitions stale: the night's run rebuilds them too,
    # then what reads them, after the plan above (the models queue keeps the order).
    from analytics_pipeline.rollout import flag_plan  # rollout imports this module

    stale, flag_runs = flag_plan(settings, on_skip=log_skip)
    if stale:
        context.log.info(f"{len(stale)} partitions were built with other flags than the flags file enables")
    yield from _run_requests(f"flags:{run_id}", flag_runs)


def _run_requests(key_prefix: str, runs: list[PlannedRun]) -> Iterator[RunRequest]:
    for position, run in enumerate(runs):
        yield RunRequest(
            run_key=f"{key_prefix}:{position}",
            job_name=run.job,
            partition_key=run.partition,
            asset_selection=[AssetKey(name) for name in run.models],
        )


defs = Definitions(
    assets=[*seed_assets, *model_assets],
    jobs=[models_job, dimensions_job],
    sensors=[models_sensor],
)
