"""Feature flags in Dagster: per flagged model, an observable source asset ``<model>_flags``.

Its observation gives each daily partition a data version: the hash of the flags active for
that model on that day (``models/flags.py``), or Dagster's default version ``INITIAL`` when
none is, which is also what a model partition records for a source never observed. The model
asset depends on it partition by partition, so after a flag change an observation marks
exactly the partitions the change affects as stale in the UI (each build records the
version it saw). ``analytics-pipeline flags`` observes and lists them; ``flags --rebuild``
rebuilds them and what reads them. Loading validates ``assets/flags.yml`` against the models:
a wrong flag name, model, parameter or value stops the code location, naming file and key.
"""

from __future__ import annotations

import warnings

from dagster import (
    AssetsDefinition,
    AssetSelection,
    BetaWarning,
    DataVersion,
    DataVersionsByPartition,
    Definitions,
    ObserveResult,
    SourceAsset,
    define_asset_job,
    observable_source_asset,
)

from analytics_pipeline.defs.partitions import daily_partitions
from analytics_pipeline.defs.resources import settings as load_settings
from analytics_pipeline.models.flags import (
    FLAGS_SUFFIX,
    active_flags,
    flag_record,
    flagged_models,
    flags_version,
    project_flags,
)
from analytics_pipeline.models.loader import ModelSpec, load_models
from analytics_pipeline.settings import PipelineSettings

# Dagster's version of a source asset never observed (its DEFAULT_DATA_VERSION, not exported): what a
# model partition built before any observation recorded, so a partition without flags stays fresh.
UNFLAGGED = "INITIAL"

model_specs = load_models(load_settings.models_path)
project = project_flags(load_settings.flags_path, load_settings.models_path)
FLAGGED = flagged_models(project, model_specs)


def flags_asset_name(model: str) -> str:
    return f"{model}{FLAGS_SUFFIX}"


def partition_versions(settings: PipelineSettings, model: str) -> dict[str, str]:
    """Each partition's flags version: a hash of its active flags, or ``INITIAL`` without any."""
    flags = project_flags(settings.flags_path, settings.models_path)
    versions = {}
    for day in daily_partitions.get_partition_keys():
        active = active_flags(flags, model, day)
        versions[day] = flags_version(active) if active else UNFLAGGED
    return versions


def flags_source_asset(spec: ModelSpec) -> SourceAsset | AssetsDefinition:
    def observe() -> DataVersionsByPartition | ObserveResult:
        # the settings of the environment, which the code location loads the flags from too: a
        # resource here would be bound to the source asset and conflict with the resources a
        # run of the models passes (Dagster compares them by reference)
        settings = PipelineSettings()
        if not spec.partitioned:
            flags = project_flags(settings.flags_path, settings.models_path)
            active = active_flags(flags, spec.name, None)
            return ObserveResult(
                data_version=DataVersion(flags_version(active) if active else UNFLAGGED),
                metadata={"active_flags": flag_record(active)},
            )
        return DataVersionsByPartition(partition_versions(settings, spec.name))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return observable_source_asset(
            name=flags_asset_name(spec.name),
            description=(
                f"The feature flags (assets/flags.yml) active for {spec.name}, per partition: its data "
                "version is their hash (INITIAL without any). A flag change marks the partitions of "
                f"{spec.name} it affects as stale once observed (`analytics-pipeline flags`)."
            ),
            partitions_def=daily_partitions if spec.partitioned else None,
            group_name="flags",
        )(observe)


flags_assets = [flags_source_asset(spec) for spec in model_specs if spec.name in FLAGGED]

OBSERVE_FLAGS_JOB = "observe_flags_job"
observe_flags_job = define_asset_job(
    OBSERVE_FLAGS_JOB,
    selection=AssetSelection.assets(*[source.key for source in flags_assets]),
    description="Observe the flags of every flagged model (run by `analytics-pipeline flags`).",
)

defs = Definitions(assets=flags_assets, jobs=[observe_flags_job])
