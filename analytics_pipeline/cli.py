"""``analytics-pipeline``: generate sample data, run the pipeline, summarise, roll back."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

# The instance settings the demo writes into a new DAGSTER_HOME: model runs launched by
# models_sensor touch running snapshots, so they queue one at a time, in order.
DAGSTER_YAML = """telemetry:
  enabled: false
run_queue:
  tag_concurrency_limits:
    - key: "analytics/models_queue"
      limit: 1
"""

LATEST_ARRIVAL_DAYS = 8  # the generator's late arrivals land up to 7 days after the event


def _settings(args: argparse.Namespace) -> PipelineSettings:
    overrides: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return PipelineSettings(**overrides)  # type: ignore[arg-type]


def cmd_generate(args: argparse.Namespace) -> int:
    from analytics_pipeline.sample_data.generator import generate

    settings = _settings(args)
    # by default the last arrival folder (late data lands up to ~7 days on) is yesterday
    default_start = date.today() - timedelta(days=args.days + LATEST_ARRIVAL_DAYS)
    start = date.fromisoformat(args.start_date) if args.start_date else default_start
    summary = generate(
        settings.landing_path,
        start,
        args.days,
        args.events_per_day,
        seed=args.seed,
        gzip_files=not args.plain,
    )
    print(
        f"wrote {summary.lines_written} lines in {summary.files_written} files for {summary.days[0]}"
        f"..{summary.days[-1]} into {settings.landing_path}"
    )
    print(
        f"planted: {summary.duplicates_planted} duplicates, {summary.id_conflicts_planted} id conflicts, "
        f"{summary.late_planted} late, malformed {summary.malformed_planted}"
    )
    return 0


def landing_days(settings: PipelineSettings) -> list[str]:
    root = settings.landing_path
    if not root.exists():
        return []
    days = set()
    for entry in root.iterdir():
        name = entry.name.removeprefix("date=")
        try:
            days.add(date.fromisoformat(name).isoformat())
        except ValueError:
            continue
    return sorted(days)


def run_days(settings: PipelineSettings, days: list[str], echo: bool = True) -> bool:
    """What the nightly schedule and the late-window sensor do, for each arrival day in order."""
    from dagster import AssetsDefinition, DagsterInstance, materialize

    from analytics_pipeline.definitions import defs
    from analytics_pipeline.defs.models import model_specs
    from analytics_pipeline.events.late_window import event_days_to_rebuild
    from analytics_pipeline.models.plan import Blocked, plan_rebuilds, skip_message

    instance = DagsterInstance.get()
    resources = {"settings": settings}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    nightly = defs.resolve_job_def("nightly_job")
    late = defs.resolve_job_def("late_window_job")
    warehouse = Warehouse(settings.warehouse_path)
    last_complete = (date.today() - timedelta(days=1)).isoformat()
    ok = True
    evaluations: list[Any] = []
    changed_event_days: set[str] = set()
    incomplete = [d for d in days if d > last_complete]
    if incomplete:
        print(f"not running {', '.join(incomplete)}: not complete yet (today is {date.today()})")
    for day in (d for d in days if d <= last_complete):
        result = nightly.execute_in_process(
            partition_key=day, instance=instance, resources=resources, raise_on_error=False, run_config=quiet
        )
        ok &= result.success
        evaluations += result.get_asset_check_evaluations()
        if not result.success:
            print(f"nightly_job {day} FAILED: {_failure(result)}", file=sys.stderr)
            continue
        rebuilt = event_days_to_rebuild(day, settings.late_window_days, warehouse)
        changed_event_days.update([day, *rebuilt])
        for event_day in rebuilt:
            late_result = late.execute_in_process(
                partition_key=event_day, instance=instance, resources=resources,
                raise_on_error=False, run_config=quiet,
            )  # fmt: skip
            ok &= late_result.success
            evaluations += late_result.get_asset_check_evaluations()
        if echo:
            tail = f"; late events rebuilt {', '.join(rebuilt)}" if rebuilt else ""
            print(f"nightly_job {day}: ok{tail}", flush=True)
    # what models_sensor does after each run, once for all the changed dates
    all_assets = [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]

    def report_skip(name: str, day: str | None, blocked: Blocked) -> None:
        print(skip_message(name, day, blocked), file=sys.stderr)

    for run in plan_rebuilds(model_specs, changed_event_days, warehouse, report_skip):
        model_result = materialize(
            all_assets, selection=run.models, partition_key=run.partition, instance=instance,
            resources=resources, raise_on_error=False, run_config=quiet, tags={"analytics/plan": run.job},
        )  # fmt: skip
        ok &= model_result.success
        evaluations += model_result.get_asset_check_evaluations()
        if echo:
            status = "ok" if model_result.success else f"FAILED: {_failure(model_result)}"
            print(f"{run.job} {run.partition or ''} {', '.join(run.models)}: {status}", flush=True)
    if echo:
        print(_gates_line(evaluations), flush=True)
    return ok


def _gates_line(evaluations: list[Any]) -> str:
    """One line on the quality gates of these runs: how many ran, what failed and how badly."""
    failed = [e for e in evaluations if not e.passed]
    blocking = [e for e in failed if e.severity.value == "ERROR"]
    warned = sorted({f"{e.asset_key.to_user_string()}.{e.check_name}" for e in failed if e not in blocking})
    line = f"Quality gates: {len(evaluations)} check results, {len(blocking)} blocking failures"
    line += f", warnings on {', '.join(warned)}" if warned else ", no warnings"
    return line + " (per partition in the UI: asset > Checks)"


def _failure(result: Any) -> str:
    """Why a run failed, as its failed step said (a failed gate names check, partition, counts)."""
    failures = result.get_step_failure_events()
    reason = failures[0].step_failure_data.error.message.strip() if failures else "see the run"
    return f"{reason} (run {result.run_id}; details in the UI)"


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    days = landing_days(settings)
    if args.start:
        days = [d for d in days if d >= args.start]
    if args.end:
        days = [d for d in days if d <= args.end]
    if not days:
        print(f"no landing folders under {settings.landing_path}", file=sys.stderr)
        return 1
    ok = run_days(settings, days)
    return 0 if ok else 1


def cmd_summary(args: argparse.Namespace) -> int:
    from analytics_pipeline.warehouse.summary import collect, headlines, render

    settings = _settings(args)
    warehouse = Warehouse(settings.warehouse_path)
    print(render(collect(warehouse)))
    numbers = headlines(warehouse)
    if numbers:
        print()
        print("From the models")
        for line in numbers:
            print(f"  {line}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from analytics_pipeline.warehouse.catalog import catalog_path

    os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve()))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
    settings = _settings(args)
    if not landing_days(settings):
        # traffic up to yesterday, as in production; later folders (late data still to come)
        # are tomorrow's nightly runs. Traffic that stopped days ago would trip the
        # volume gate (zero events where the previous days had some), as it should.
        args.start_date = (date.today() - timedelta(days=args.days)).isoformat()
        args.plain = False
        cmd_generate(args)
    else:
        print(f"using the landing files already in {settings.landing_path}")
    ok = run_days(settings, landing_days(settings))
    print()
    cmd_summary(args)
    print()
    print(f"Analysts' catalog (open read-only): duckdb {catalog_path(Warehouse(settings.warehouse_path))}")
    print(f"Open the UI:  DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev -w workspace.yaml")
    return 0 if ok else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    restored = Warehouse(settings.warehouse_path).rollback(args.table, args.day)
    print(f"restored the previous version of {args.table} {args.day} at {restored}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analytics-pipeline", description=__doc__)
    parser.add_argument("--data-dir", help="overrides ANALYTICS_DATA_DIR (default ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write deterministic sample event files into landing/")
    gen.add_argument("--days", type=int, default=3)
    gen.add_argument("--events-per-day", type=int, default=5000)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument(
        "--start-date", help="first event day, YYYY-MM-DD (default: so the last folder is yesterday)"
    )
    gen.add_argument("--plain", action="store_true", help="write .jsonl instead of .jsonl.gz")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="sample data, the nightly pipeline for every day, a summary")
    demo.add_argument("--days", type=int, default=3)
    demo.add_argument("--events-per-day", type=int, default=5000)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run the nightly pipeline for the landing days (in order)")
    run.add_argument("--start", help="first arrival day")
    run.add_argument("--end", help="last arrival day")
    run.set_defaults(func=cmd_run)

    summary = sub.add_parser("summary", help="print the per-day counts of what is published")
    summary.set_defaults(func=cmd_summary)

    rollback = sub.add_parser("rollback", help="restore the previous version of a table partition")
    rollback.add_argument("table")
    rollback.add_argument("day")
    rollback.set_defaults(func=cmd_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
