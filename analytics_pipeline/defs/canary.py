"""Canaries in Dagster: ``canary_job`` records a verdict as a run, ``promote_job`` publishes one.

``analytics-pipeline canary`` judges the candidate first (``analytics_pipeline/canary.py``),
then runs ``canary_job`` tagged with the model, partitions and verdict: its one op reads the
canary's ``verdict.json`` and yields the verdict with its evidence as output metadata, so
the UI's Runs page lists every canary and what it found. ``analytics-pipeline promote``
runs ``promote_job``: its op publishes the canary through the model's gates and reports a
materialization of each promoted partition (who, when, forced), tagged on the run.
"""

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    Definitions,
    MetadataValue,
    OpExecutionContext,
    Output,
    job,
    op,
)

from analytics_pipeline.canary import CanaryVerdict, load_verdict, promote
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import recording_run

CANARY_JOB = "canary_job"
PROMOTE_JOB = "promote_job"


class CanaryRecordConfig(Config):
    canary_dir: str


class PromoteConfig(Config):
    canary_id: str
    force: bool = False
    promoted_by: str


def _finite(finding: Any) -> dict[str, Any]:
    """A finding as JSON metadata: an unbounded change (from 0) as the text 'new'."""
    return {k: "new" if isinstance(v, float) and math.isinf(v) else v for k, v in finding.__dict__.items()}


def verdict_metadata(verdict: CanaryVerdict) -> dict[str, Any]:
    over = verdict.over_limit
    return {
        "verdict": verdict.verdict,
        "model": verdict.model,
        "partitions": ", ".join(verdict.days),
        "candidate": verdict.flag and f"flag {verdict.flag}" or verdict.sql or "as defined",
        "comparisons": len(verdict.findings),
        "over_limit": len(over),
        "over_limit_findings": MetadataValue.json([_finite(f) for f in over]),
        "findings": MetadataValue.json([_finite(f) for f in verdict.findings]),
        "rows_by_key": MetadataValue.json(verdict.rows_by_key),
        "gate_failures": MetadataValue.json(verdict.gate_failures),
        "thresholds": MetadataValue.json(
            {k: "none" if math.isinf(v) else v for k, v in verdict.thresholds.items()}
        ),
        "summary": MetadataValue.md(f"```\n{verdict.summary()}\n```"),
        "directory": MetadataValue.path(verdict.directory),
    }


@op(description="Record a canary's verdict and evidence (computed by `analytics-pipeline canary`).")
def canary_verdict(context: OpExecutionContext, config: CanaryRecordConfig) -> Iterator[Output[str]]:
    verdict = CanaryVerdict.read(Path(config.canary_dir))
    context.log.info(verdict.summary())
    yield Output(verdict.verdict, metadata=verdict_metadata(verdict))


@op(description="Publish a canary's partitions into production through the model's gates.")
def promote_canary(
    context: OpExecutionContext, config: PromoteConfig, settings: PipelineSettings
) -> Iterator[Any]:
    verdict = load_verdict(settings, config.canary_id)
    with recording_run(context.run_id):
        promoted = promote(settings, verdict, config.force, config.promoted_by, run_id=context.run_id)
    forced = config.force and verdict.held
    for item in promoted:
        yield AssetMaterialization(
            asset_key=AssetKey(verdict.model),
            partition=item.day,
            description=f"Promoted from canary {verdict.id} ({verdict.verdict}{', forced' if forced else ''}).",
            metadata={
                "promoted_from": verdict.id,
                "canary_verdict": verdict.verdict,
                "forced": forced,
                "promoted_by": config.promoted_by,
                "dagster/row_count": item.rows,
                "sha256": item.published.sha256,
                "changed": item.published.changed,
                "path": MetadataValue.path(str(item.published.path)),
                "active_flags": MetadataValue.json(verdict.flags.get(item.day, {})),
            },
        )
    yield Output([p.day for p in promoted])


@job(name=CANARY_JOB, description="A canary's verdict, recorded (run by `analytics-pipeline canary`).")
def canary_job() -> None:
    canary_verdict()


@job(name=PROMOTE_JOB, description="Promote a canary (run by `analytics-pipeline promote`).")
def promote_job() -> None:
    promote_canary()


defs = Definitions(jobs=[canary_job, promote_job])
