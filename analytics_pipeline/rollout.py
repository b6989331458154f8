"""What ``analytics-pipeline flags``, ``canary`` and ``promote`` do around the Dagster instance.

Flags: observe each flagged model's ``<model>_flags`` source asset (so the UI marks the
partitions a flag change affects as stale), list the published partitions built with other
flags than the flags file now makes active, and rebuild them, then what reads them, in the
late-data plan's order. Canaries: record a verdict as a ``canary_job`` run; promote through
``promote_job``, then rebuild (or print how to rebuild) what reads the promoted partitions.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from analytics_pipeline.canary import CanaryHeld, CanaryVerdict, load_verdict
from analytics_pipeline.models.flags import OutOfDate, out_of_date, project_flags
from analytics_pipeline.models.plan import (
    DAILY_MODELS_JOB,
    DIMENSIONS_JOB,
    Blocked,
    PlannedRun,
    plan_rebuilds,
    skip_message,
)
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

if TYPE_CHECKING:
    from dagster import DagsterInstance

Echo = Callable[[str], None]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def observe_flags(instance: DagsterInstance) -> list[str]:
    """Observe every ``<model>_flags`` source asset: the UI then shows what a flag change made stale."""
    from analytics_pipeline.definitions import defs
    from analytics_pipeline.defs.flags import OBSERVE_FLAGS_JOB, flags_assets

    if flags_assets:
        # the observation reads the flags file of the environment's settings, as the code location does
        defs.resolve_job_def(OBSERVE_FLAGS_JOB).execute_in_process(instance=instance, run_config=QUIET)
    return [source.key.to_user_string() for source in flags_assets]


def _report_skip(name: str, day: str | None, blocked: Blocked) -> None:
    print(skip_message(name, day, blocked), file=sys.stderr)


def flag_plan(
    settings: PipelineSettings, on_skip: Callable[[str, str | None, Blocked], None] = _report_skip
) -> tuple[list[OutOfDate], list[PlannedRun]]:
    """The partitions out of date with the flags file, and the runs that rebuild them and their readers."""
    from analytics_pipeline.defs.models import planned_specs

    warehouse = Warehouse(settings.warehouse_path)
    flags = project_flags(settings.flags_path, settings.models_path)
    stale = out_of_date(flags, planned_specs, warehouse)
    rank = {spec.name: i for i, spec in enumerate(planned_specs)}
    runs: list[PlannedRun] = []
    for item in sorted(stale, key=lambda s: (s.day == "all", s.day, rank[s.model])):
        job, partition = (DIMENSIONS_JOB, None) if item.day == "all" else (DAILY_MODELS_JOB, item.day)
        if runs and runs[-1].job == job and runs[-1].partition == partition:
            runs[-1].models.append(item.model)
        else:
            runs.append(PlannedRun(job, partition, [item.model]))
    changed: dict[str, set[str]] = {}
    for item in stale:
        changed.setdefault(item.model, set()).add(item.day)
    if changed:  # what reads them (the changed partitions themselves are the runs above)
        runs += plan_rebuilds(
            planned_specs, changed, warehouse, on_skip, late_window_days=settings.late_window_days
        )
    return stale, runs


def describe_flags(settings: PipelineSettings, stale: list[OutOfDate]) -> list[str]:
    flags = project_flags(settings.flags_path, settings.models_path)
    lines = [f"flags in {settings.flags_path}:"]
    for flag in flags.values():
        enabled = flag.enabled
        when = (
            ("every day" if enabled else "off")
            if isinstance(enabled, bool)
            else f"{enabled.from_ or '...'}..{enabled.to or '...'}"
        )
        lines.append(f"  {flag.name}: {flag.model}, {when} - {flag.description}")
    if not flags:
        lines.append("  (none)")
    if not stale:
        lines.append("every published partition was built with the flags active for it")
    for item in stale:
        lines.append(f"out of date: {item.model} {item.day}: built with {item.built_with or 'no flags'}, "
                     f"active now {item.active or 'no flags'}")  # fmt: skip
    return lines


def rebuild_flagged(
    settings: PipelineSettings, instance: DagsterInstance, runs: list[PlannedRun], echo: Echo
) -> tuple[bool, list[Any]]:
    from analytics_pipeline.rollback import run_planned

    return run_planned(settings, runs, instance, echo, tags={"analytics/flags": "rebuild"})


def record_canary(instance: DagsterInstance, verdict: CanaryVerdict) -> str:
    """Run ``canary_job`` on the instance: the verdict and its evidence as a run's metadata."""
    from analytics_pipeline.definitions import defs
    from analytics_pipeline.defs.canary import CANARY_JOB

    result = defs.resolve_job_def(CANARY_JOB).execute_in_process(
        run_config={
            "ops": {"canary_verdict": {"config": {"canary_dir": verdict.directory}}},
            **QUIET,
        },
        instance=instance,
        tags={
            "analytics/canary": verdict.id,
            "analytics/model": verdict.model,
            "analytics/partitions": f"{verdict.days[0]}..{verdict.days[-1]}",
            "analytics/verdict": verdict.verdict,
        },
    )
    return result.run_id


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def promote_canary(
    settings: PipelineSettings,
    instance: DagsterInstance,
    canary_id: str,
    force: bool,
    rebuild: bool,
    data_dir: str | None,
    echo: Echo,
) -> bool:
    """Publish a canary through ``promote_job``; then rebuild (or print how) what reads it."""
    from analytics_pipeline.definitions import defs
    from analytics_pipeline.defs.canary import PROMOTE_JOB
    from analytics_pipeline.defs.models import planned_specs
    from analytics_pipeline.rollback import describe_runs, rebuild_command, run_planned

    verdict = load_verdict(settings, canary_id)
    if verdict.held and not force:
        raise CanaryHeld(f"canary {canary_id} was held: {verdict.summary().splitlines()[1]}; "
                         "promote it anyway with --force (recorded)")  # fmt: skip
    forced = force and verdict.held
    result = defs.resolve_job_def(PROMOTE_JOB).execute_in_process(
        run_config={
            "ops": {
                "promote_canary": {"config": {"canary_id": canary_id, "force": force, "promoted_by": who()}}
            },
            **QUIET,
        },
        instance=instance,
        resources={"settings": settings},
        raise_on_error=False,
        tags={
            "analytics/canary": canary_id,
            "analytics/model": verdict.model,
            "analytics/partitions": f"{verdict.days[0]}..{verdict.days[-1]}",
            "analytics/verdict": verdict.verdict,
            "analytics/forced": str(forced).lower(),
            "analytics/promoted_by": who(),
        },
    )
    if not result.success:
        failures = result.get_step_failure_events()
        error = failures[0].step_failure_data.error if failures else None
        reason = error.message.strip() if error else "see the run"
        echo(f"promote {canary_id} FAILED, nothing published: {reason} (run {result.run_id})")
        return False
    echo(f"promoted canary {canary_id}: {verdict.model} {', '.join(verdict.days)} published "
         f"through its gates{' (FORCED past a hold verdict)' if forced else ''}; run {result.run_id}")  # fmt: skip
    if verdict.flag:
        echo(f"note: {verdict.flag} is still as {settings.flags_path} says; enable it there for these days, "
             "or `analytics-pipeline flags --rebuild` rebuilds them without it")  # fmt: skip
    runs = plan_rebuilds(
        planned_specs, {verdict.model: set(verdict.days)}, Warehouse(settings.warehouse_path),
        _report_skip, late_window_days=settings.late_window_days,
    )  # fmt: skip
    if not runs:
        echo(f"nothing downstream reads {verdict.model} {', '.join(verdict.days)}")
        return True
    if not rebuild:
        echo(f"not rebuilt: {len(runs)} runs read the promoted partitions:")
        for line in describe_runs(runs):
            echo(f"  {line}")
        for day in verdict.days:
            echo(f"rebuild them with: {rebuild_command(verdict.model, day, data_dir)}")
        return True
    echo(f"rebuilding what reads {verdict.model} {', '.join(verdict.days)}: {len(runs)} runs")
    ok, _ = run_planned(settings, runs, instance, echo, tags={"analytics/promote": canary_id})
    return ok
