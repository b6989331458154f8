"""Drills in Dagster: ``drills_job`` runs a chosen drill on a sandbox, ``weekly_drill_schedule`` weekly.

The schedule is off by default (turn it on in the UI's Automation page or with
``dagster schedule start weekly_drill_schedule``); it runs the drill named by
``ANALYTICS_WEEKLY_DRILL`` (``all`` for every one). A launched run can name another drill in
its run config. The op never touches the deployment's data: it generates a small sandbox, or
with ``copy_data_dir`` copies the data directory first. Each drill's verdict, recovery time
and evidence are the op's output metadata; a failed drill fails the run.
"""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import (
    Config,
    DefaultScheduleStatus,
    Definitions,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    job,
    op,
)
from pydantic import Field

from analytics_pipeline.defs.resources import settings as loaded_settings
from analytics_pipeline.drills.command import run_drills
from analytics_pipeline.drills.runner import format_table
from analytics_pipeline.drills.sandbox import DRILL_EVENTS_PER_DAY
from analytics_pipeline.drills.scenarios import DRILLS
from analytics_pipeline.settings import PipelineSettings

ALL = "all"
WEEKLY_DRILL_CRON = "0 4 * * 0"  # Sundays 04:00 UTC, after the nightly runs
DRILL_TAG = "analytics/drill"

if loaded_settings.weekly_drill != ALL and loaded_settings.weekly_drill not in DRILLS:
    raise ValueError(
        f"ANALYTICS_WEEKLY_DRILL: no drill named {loaded_settings.weekly_drill!r} "
        f"(known: {ALL}, {', '.join(DRILLS)})"
    )


class DrillConfig(Config):
    drill: str = Field(description=f"A drill name (analytics-pipeline drill --list) or {ALL!r}.")
    events_per_day: int = Field(
        default=DRILL_EVENTS_PER_DAY, description="Size of a generated sandbox's days."
    )
    copy_data_dir: bool = Field(
        default=False,
        description="Copy the deployment's data directory into the sandbox instead of generating.",
    )


@op(name="run_drill")
def run_drill_op(
    context: OpExecutionContext, config: DrillConfig, settings: PipelineSettings
) -> Iterator[Any]:
    """Run the drill(s) on a temporary sandbox; fail the run when a promise did not hold."""
    names = list(DRILLS) if config.drill == ALL else [config.drill]
    if any(name not in DRILLS for name in names):
        raise Failure(
            f"no drill named {config.drill!r} (known: {ALL}, {', '.join(DRILLS)})", allow_retries=False
        )
    root = Path(tempfile.mkdtemp(prefix="analytics-drills-"))
    try:
        data_dir = Path(settings.data_dir) if config.copy_data_dir else None
        results = run_drills(names, data_dir, config.events_per_day, root, echo=context.log.info)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    metadata: dict[str, Any] = {"verdicts": MetadataValue.md(f"```\n{format_table(results)}\n```")}
    for result in results:
        metadata[f"{result.name}_passed"] = result.passed
        if result.recovery_s is not None:
            metadata[f"{result.name}_recovery_s"] = round(result.recovery_s, 1)
        metadata[f"{result.name}_evidence"] = MetadataValue.md("\n".join(f"- {e}" for e in result.evidence))
    failed = [r.name for r in results if not r.passed]
    if failed:
        raise Failure(f"drills failed: {', '.join(failed)}", metadata=metadata, allow_retries=False)
    yield Output(None, metadata=metadata)


@job(tags={"analytics/kind": "drill"})
def drills_job() -> None:
    run_drill_op()


weekly_drill_schedule = ScheduleDefinition(
    name="weekly_drill_schedule",
    job=drills_job,
    cron_schedule=WEEKLY_DRILL_CRON,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    run_config={"ops": {"run_drill": {"config": {"drill": loaded_settings.weekly_drill}}}},
    tags={DRILL_TAG: loaded_settings.weekly_drill},
    description="Runs a failure drill (ANALYTICS_WEEKLY_DRILL) on a sandbox every week; off by default.",
)

defs = Definitions(jobs=[drills_job], schedules=[weekly_drill_schedule])
