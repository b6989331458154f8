"""What ``analytics-pipeline rollback`` does around ``Warehouse.rollback``: Dagster, catalog, rebuilds.

The files change in ``warehouse/storage.py`` (atomically, with their counts and record) and
the plan comes from ``models/plan.py``; this module adds the parts that need Dagster: the
rollback recorded in the instance (a runless ``AssetMaterialization`` of that partition, so
the UI shows it with its metadata) and the rebuild runs, materialized from the project's
definitions the way ``analytics-pipeline run`` builds the model plan.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from analytics_pipeline.models.plan import Blocked, PlannedRun, plan_rebuilds, skip_message
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.catalog import refresh_catalog
from analytics_pipeline.warehouse.storage import RollbackResult, VersionInfo, Warehouse
from analytics_pipeline.warehouse.tables import (
    EVENT_ID_CONFLICTS,
    EVENTS,
    FILE_LEDGER,
    QUARANTINED_EVENTS,
    RAW_EVENTS,
)

if TYPE_CHECKING:
    from dagster import DagsterInstance

UNPARTITIONED = "all"  # the partition name of an unpartitioned table (users)
# tables one step publishes together: a rollback restores one table; the others are named
PUBLISHED_TOGETHER = ((RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER), (EVENTS, EVENT_ID_CONFLICTS))
Echo = Callable[[str], None]


def list_versions(settings: PipelineSettings, table: str, day: str) -> str:
    """``rollback --list``: the published version and the kept ones, with their records."""
    warehouse = Warehouse(settings.warehouse_path)
    chain = warehouse.versions(table, day)
    previous = int(chain[-1].stem[1:]) if chain else None
    return format_history(table, day, warehouse.history(table, day), previous)


def roll_back(
    settings: PipelineSettings,
    instance: DagsterInstance,
    table: str,
    day: str,
    to: int | None,
    data_dir: str | None,
    echo: Echo,
) -> RollbackResult:
    """Restore a kept version (``Warehouse.rollback``), refresh the catalog, record it in Dagster."""
    warehouse = Warehouse(settings.warehouse_path)
    result = warehouse.rollback(table, day, to=to)
    restored, replaced = result.restored, result.replaced
    rows = "?" if restored.rows is None else restored.rows
    by = f" by run {restored.run_id}" if restored.run_id else ""
    echo(
        f"rolled back {table} {day}: {restored.name} ({rows} rows, published {restored.published_at}{by}) "
        f"is back in place of {replaced.name}"
    )
    echo(f"{replaced.name} is kept; to undo: {undo_command(table, day, replaced.number, data_dir)}")
    echo(f"analysts' catalog refreshed: {refresh_catalog(warehouse)}")
    report_rollback(instance, table, day, result)
    echo(
        f"recorded in Dagster ({instance.root_directory}): a materialization of {table} {day}, rollback=true"
    )
    for group in PUBLISHED_TOGETHER:
        if table in group:
            others = [t for t in group if t != table]
            echo(
                f"note: the step that publishes {table} publishes {', '.join(others)} with it; they were "
                f"not rolled back (compare: analytics-pipeline rollback {others[0]} {day} --list)"
            )
    return result


def rebuild_downstream(
    settings: PipelineSettings,
    instance: DagsterInstance,
    table: str,
    day: str,
    print_only: bool,
    data_dir: str | None,
    echo: Echo,
) -> tuple[bool, list[Any]]:
    """Rebuild every partition that reads ``table`` ``day`` (or, ``print_only``, say how)."""

    def report_skip(name: str, skipped_day: str | None, blocked: Blocked) -> None:
        print(skip_message(name, skipped_day, blocked), file=sys.stderr)

    runs = plan_downstream(settings, table, day, report_skip)
    if not runs:
        echo(f"nothing downstream reads {table} {day}")
        return True, []
    if print_only:
        echo(f"not rebuilt: {len(runs)} runs read {table} {day}:")
        for line in describe_runs(runs):
            echo(f"  {line}")
        echo(f"rebuild them with: {rebuild_command(table, day, data_dir)}")
        return True, []
    echo(f"rebuilding what reads {table} {day}: {len(runs)} runs")
    return run_planned(settings, runs, instance, echo, tags={"analytics/rollback": f"{table}/{day}"})


def report_rollback(instance: DagsterInstance, table: str, day: str, result: RollbackResult) -> None:
    """Record the rollback in Dagster: a materialization of the partition, saying what it restored."""
    from dagster import AssetKey, AssetMaterialization, MetadataValue

    restored, replaced = result.restored, result.replaced
    metadata: dict[str, Any] = {
        "rollback": True,
        "restored_version": restored.number,
        "replaced_version": replaced.number,
        "sha256": restored.sha256 or "",
        "bytes": restored.bytes,
        "restored_published_at": restored.published_at or "",
        "restored_run_id": restored.run_id or "none",
        "path": MetadataValue.path(str(result.path)),
        "replaced_kept_at": MetadataValue.path(str(replaced.path)),
        "undo": undo_command(table, day, replaced.number),
    }
    if restored.rows is not None:
        metadata["dagster/row_count"] = restored.rows
    instance.report_runless_asset_event(
        AssetMaterialization(
            asset_key=AssetKey(table),
            partition=None if day == UNPARTITIONED else day,
            description=f"Rollback: {restored.name} put back in place of {replaced.name} (kept).",
            metadata=metadata,
        )
    )


def plan_downstream(
    settings: PipelineSettings,
    table: str,
    day: str,
    on_skip: Callable[[str, str | None, Blocked], None] | None = None,
) -> list[PlannedRun]:
    """The runs that rebuild every partition reading ``table`` ``day``, in dependency order."""
    from analytics_pipeline.defs.models import planned_specs

    return plan_rebuilds(
        planned_specs,
        {table: {day}},
        Warehouse(settings.warehouse_path),
        on_skip,
        late_window_days=settings.late_window_days,
    )


def run_planned(
    settings: PipelineSettings,
    runs: list[PlannedRun],
    instance: DagsterInstance,
    echo: Callable[[str], None],
    tags: dict[str, str] | None = None,
) -> tuple[bool, list[Any]]:
    """Materialize each planned run in order, as ``analytics-pipeline run`` builds the model plan.

    Returns whether every run succeeded and the check evaluations of the runs.
    """
    from dagster import AssetsDefinition, materialize

    from analytics_pipeline.definitions import defs

    resources = {"settings": settings}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    all_assets = [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]
    ok = True
    evaluations: list[Any] = []
    for run in runs:
        result = materialize(
            all_assets, selection=run.models, partition_key=run.partition, instance=instance,
            resources=resources, raise_on_error=False, run_config=quiet,
            tags={"analytics/plan": run.job, **(tags or {})},
        )  # fmt: skip
        ok &= result.success
        evaluations += result.get_asset_check_evaluations()
        echo(f"{describe_runs([run])[0]}: {_status(result)}")
    return ok, evaluations


def _status(result: Any) -> str:
    if result.success:
        return "ok"
    failures = result.get_step_failure_events()
    reason = failures[0].step_failure_data.error.message.strip() if failures else "see the run"
    return f"FAILED: {reason} (run {result.run_id}; details in the UI)"


def _command(data_dir: str | None, *args: str) -> str:
    prefix = ["analytics-pipeline", *(["--data-dir", data_dir] if data_dir else [])]
    return shlex.join([*prefix, *args])


def rebuild_command(table: str, day: str, data_dir: str | None = None) -> str:
    """The command that rebuilds what reads ``table`` ``day`` (after ``rollback --no-rebuild``)."""
    return _command(data_dir, "rollback", table, day, "--rebuild-only")


def undo_command(table: str, day: str, version: int, data_dir: str | None = None) -> str:
    return _command(data_dir, "rollback", table, day, "--to", str(version))


def describe_runs(runs: list[PlannedRun]) -> list[str]:
    return [" ".join(filter(None, [run.job, run.partition, ", ".join(run.models)])) for run in runs]


def format_history(table: str, day: str, versions: list[VersionInfo], previous: int | None) -> str:
    """``rollback --list``: every version, newest first, with its record."""
    if not versions:
        return f"{table} {day}: nothing published"
    published = next((v for v in versions if v.published), None)
    head = f"{table} {day}: published {published.name if published else 'none'}"
    head += f"; `rollback` restores v{previous}" if previous else "; no previous version to roll back to"
    header = ("version", "state", "published at (UTC)", "run id", "rows", "sha256", "flags", "kept at (UTC)")
    rows = [header]
    for v in versions:
        state = "published" if v.published else ("kept, previous" if v.number == previous else "kept")
        if v.restored_at and v.published:
            state += f" (restored {_short_time(v.restored_at)})"
        rows.append(
            (
                v.name, state, _short_time(v.published_at), v.run_id or "-",
                "-" if v.rows is None else str(v.rows), (v.sha256 or "-")[:12],
                _flags(v.flags), _short_time(v.kept_at) if v.kept_at else "-",
            )
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [head] + [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines)


def _short_time(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return stamp.replace("T", " ").removesuffix("Z")[:19]


def _flags(flags: dict[str, Any]) -> str:
    return "{}" if not flags else ", ".join(f"{k}={v}" for k, v in sorted(flags.items()))
