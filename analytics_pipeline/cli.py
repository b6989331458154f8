"""``analytics-pipeline``: generate sample data, run the pipeline, summarise, roll back."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics_pipeline.drills.command import add_parser as add_drill_parser
from analytics_pipeline.settings import PROJECT_ROOT, PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

if TYPE_CHECKING:
    from dagster import DagsterInstance

# The project's Dagster instance settings (run queue, the models queue limit, the warehouse_io
# pool): one file at the project root, which `dagster dev` run there reads too. The CLI writes
# its content into a new DAGSTER_HOME.
DAGSTER_YAML_PATH = PROJECT_ROOT / "dagster.yaml"
DAGSTER_YAML = DAGSTER_YAML_PATH.read_text()

LATEST_ARRIVAL_DAYS = 8  # the generator's late arrivals land up to 7 days after the event
DEFAULT_DAGSTER_HOME = ".dagster_home"  # under the working directory, when DAGSTER_HOME is not set


def dagster_instance() -> DagsterInstance:
    """The instance every run of the CLI is recorded in: $DAGSTER_HOME, else ./.dagster_home.

    The directory is created with ``DAGSTER_YAML`` when it has no dagster.yaml yet, and
    DAGSTER_HOME is set (to its absolute path) for this process, so anything that asks
    Dagster for the current instance gets the same one and ``dagster dev`` can be pointed at it.
    DAGSTER_HOME is Dagster's own variable; the pipeline's settings stay in ``settings.py``.
    """
    from dagster import DagsterInstance

    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


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


EXECUTORS = ("in_process", "multiprocess")
# Step processes forked from a server that has imported the definitions once: a spawned step
# process spends about 5 s importing Dagster, GX and the pipeline before its first line of work.
STEP_PROCESS_PRELOAD = ["analytics_pipeline.definitions"]
STEP_PROCESSES = {
    "execution": {
        "config": {
            "multiprocess": {"start_method": {"forkserver": {"preload_modules": STEP_PROCESS_PRELOAD}}}
        }
    }
}


def run_days(
    settings: PipelineSettings,
    days: list[str],
    instance: DagsterInstance,
    echo: bool = True,
    executor: str = "in_process",
) -> bool:
    """What the nightly schedule and the late-window sensor do, for each arrival day in order.

    ``executor="in_process"`` runs every step in this process (quick to start: the demo, the
    tests). ``"multiprocess"`` runs each step in its own process, as the daemon runs the
    schedule's runs: a step's memory is its own and ends with it, and independent models run
    side by side within the ``warehouse_io`` pool. The step processes read their settings
    from the ``ANALYTICS_*`` environment, so ``settings`` must be what that environment gives.
    """
    from analytics_pipeline.events.late_window import event_days_to_rebuild
    from analytics_pipeline.models.plan import Blocked, plan_rebuilds, skip_message

    launch = _job_launcher(settings, instance, executor)
    warehouse = Warehouse(settings.warehouse_path)
    last_complete = (date.today() - timedelta(days=1)).isoformat()
    ok = True
    evaluations: list[Any] = []
    changed_event_days: set[str] = set()
    incomplete = [d for d in days if d > last_complete]
    if incomplete:
        print(f"not running {', '.join(incomplete)}: not complete yet (today is {date.today()})")
    for day in (d for d in days if d <= last_complete):
        result = launch("nightly_job", day, None)
        ok &= result.success
        evaluations += result.get_asset_check_evaluations()
        if not result.success:
            print(f"nightly_job {day} FAILED: {_failure(result)}", file=sys.stderr)
            continue
        rebuilt = event_days_to_rebuild(day, settings.late_window_days, warehouse)
        changed_event_days.update([day, *rebuilt])
        for event_day in rebuilt:
            late_result = launch("late_window_job", event_day, None)
            ok &= late_result.success
            evaluations += late_result.get_asset_check_evaluations()
        if echo:
            tail = f"; late events rebuilt {', '.join(rebuilt)}" if rebuilt else ""
            print(f"nightly_job {day}: ok{tail}", flush=True)

    def report_skip(name: str, day: str | None, blocked: Blocked) -> None:
        print(skip_message(name, day, blocked), file=sys.stderr)

    # what models_sensor does after each run, once for all the changed dates, as the same jobs
    # (models_job, dimensions_job), so the UI shows the runs under their names
    from analytics_pipeline.defs.models import planned_specs

    for run in plan_rebuilds(planned_specs, changed_event_days, warehouse, report_skip):
        model_result = launch(run.job, run.partition, run.models)
        ok &= model_result.success
        evaluations += model_result.get_asset_check_evaluations()
        if echo:
            status = "ok" if model_result.success else f"FAILED: {_failure(model_result)}"
            print(f"{run.job} {run.partition or ''} {', '.join(run.models)}: {status}", flush=True)
    if changed_event_days:  # what metrics_sensor does when a plan has finished
        metrics_result = launch("metrics_job", None, None)
        ok &= metrics_result.success
        if echo:
            status = "ok" if metrics_result.success else f"FAILED: {_failure(metrics_result)}"
            print(f"metrics_job: {status}", flush=True)
    if echo:
        print(_gates_line(evaluations), flush=True)
    return ok


_server_environment: dict[str, str] | None = None  # what the running step-process server started with


def _start_step_process_server() -> None:
    """Start the forkserver of ``STEP_PROCESSES`` now, so that its import of the definitions
    runs beside this process's own (about 4 s each); Dagster's executor then finds it running.

    Step processes are forked from the server, so they have its environment and the settings
    it imported, not this process's current ones: a server started under other ``ANALYTICS_*``
    or ``DAGSTER_*`` values (a second run in the same process, e.g. a test) is started again.
    """
    import multiprocessing
    import multiprocessing.forkserver

    global _server_environment
    environment = {k: v for k, v in os.environ.items() if k.startswith(("ANALYTICS_", "DAGSTER_"))}
    if _server_environment is not None and environment != _server_environment:
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]  # the stdlib tests' way to stop it
    multiprocessing.get_context("forkserver").set_forkserver_preload(STEP_PROCESS_PRELOAD)
    multiprocessing.forkserver.ensure_running()
    _server_environment = environment


def _job_launcher(settings: PipelineSettings, instance: DagsterInstance, executor: str) -> Any:
    """``launch(job, partition, models)``: one run of a job of ``defs`` (its model subset)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor == "multiprocess":
        if settings != PipelineSettings():
            raise ValueError(
                "the multiprocess executor's step processes read their settings from the ANALYTICS_* "
                "environment; set these settings there (e.g. ANALYTICS_DATA_DIR), not in code"
            )
        _start_step_process_server()
    from dagster import AssetKey, Definitions, execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from analytics_pipeline.definitions import defs
    from analytics_pipeline.models.plan import DAILY_MODELS_JOB, DIMENSIONS_JOB

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if executor == "multiprocess":
        repository = ReconstructableRepository.for_module(
            "analytics_pipeline.definitions", "defs", working_directory=str(PROJECT_ROOT)
        )

        def launch_step_processes(job: str, partition: str | None, models: list[str] | None) -> Any:
            tags = {"dagster/partition": partition} if partition else {}
            if job in (DAILY_MODELS_JOB, DIMENSIONS_JOB):
                tags["analytics/plan"] = job
            return execute_job(
                repository.get_reconstructable_job(job), instance, run_config=quiet | STEP_PROCESSES, tags=tags,
                asset_selection=[AssetKey(m) for m in models] if models else None,
            )  # fmt: skip

        return launch_step_processes

    resources = {"settings": settings}
    # model jobs resolved with these settings bound: a job resolved by `defs` has its own, and a
    # subset run refuses a second one
    model_jobs = Definitions(
        assets=defs.assets,
        jobs=[job for job in defs.jobs or [] if job.name in (DAILY_MODELS_JOB, DIMENSIONS_JOB)],
        resources=resources,
    )

    def launch_in_process(job: str, partition: str | None, models: list[str] | None) -> Any:
        if models:
            return model_jobs.resolve_job_def(job).execute_in_process(
                partition_key=partition, asset_selection=[AssetKey(m) for m in models], instance=instance,
                raise_on_error=False, run_config=quiet, tags={"analytics/plan": job},
            )  # fmt: skip
        return defs.resolve_job_def(job).execute_in_process(
            partition_key=partition, instance=instance, resources=resources, raise_on_error=False,
            run_config=quiet,
        )  # fmt: skip

    return launch_in_process


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
    if args.executor == "multiprocess" and args.data_dir:  # the step processes read it there
        os.environ["ANALYTICS_DATA_DIR"] = args.data_dir
    settings = _settings(args)
    days = landing_days(settings)
    if args.start:
        days = [d for d in days if d >= args.start]
    if args.end:
        days = [d for d in days if d <= args.end]
    if not days:
        print(f"no landing folders under {settings.landing_path}", file=sys.stderr)
        return 1
    instance = dagster_instance()
    ok = run_days(settings, days, instance, executor=args.executor)
    print(f"Runs recorded in {instance.root_directory}; open the UI: {_ui_command(instance, settings, args)}")
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


def cmd_missing(args: argparse.Namespace) -> int:
    """The days of a range nightly_job has not published (failed or never run), for a re-run.

    A day is done when both steps' tables are published: raw_events (ingest) and events (its
    gate passed). Printed comma-separated: ``dagster job backfill ... --partitions <that>``.
    """
    warehouse = Warehouse(_settings(args).warehouse_path)
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    done = set(warehouse.published_days("raw_events")) & set(warehouse.published_days("events"))
    days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    print(",".join(day for day in days if day not in done))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from analytics_pipeline.warehouse.catalog import catalog_path

    instance = dagster_instance()
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
    ok = run_days(settings, landing_days(settings), instance)
    print()
    cmd_summary(args)
    print()
    print(f"Analysts' catalog (open read-only): duckdb {catalog_path(Warehouse(settings.warehouse_path))}")
    print(f"Open the UI:  {_ui_command(instance, settings, args)}")
    return 0 if ok else 1


def _ui_command(instance: DagsterInstance, settings: PipelineSettings, args: argparse.Namespace) -> str:
    """``dagster dev`` on this instance and data, its partitions starting at the first day built.

    The daily partitions start at ``partitions_start`` (2024-01-01 by default): without it the
    UI's partition bars count every day since then and show the demo's days as 0%.
    """
    days = [*landing_days(settings), *Warehouse(settings.warehouse_path).published_days("events")[:1]]
    env = [f"ANALYTICS_PARTITIONS_START={min(days)}"] if days else []
    if getattr(args, "data_dir", None):  # the UI's sensors must build into the same data
        env.append(f"ANALYTICS_DATA_DIR={Path(args.data_dir).resolve()}")
    dagster = _relative(Path(sys.executable).parent / "dagster")  # the venv's, not one on PATH
    return " ".join([*env, f"DAGSTER_HOME={instance.root_directory} {dagster} dev -w workspace.yaml"])


def _relative(path: Path) -> str:
    """``path`` from the working directory when it lies below it (``.venv/bin/dagster``)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_rollback(args: argparse.Namespace) -> int:
    """List versions; restore one (recorded in Dagster, catalog refreshed); rebuild what reads it."""
    from analytics_pipeline import rollback

    settings = _settings(args)
    if args.list:
        print(rollback.list_versions(settings, args.table, args.day))
        return 0
    instance = dagster_instance()
    if not args.rebuild_only:
        try:
            rollback.roll_back(settings, instance, args.table, args.day, args.to, args.data_dir, print)
        except FileNotFoundError as missing:
            print(missing, file=sys.stderr)
            return 1
    ok, evaluations = rollback.rebuild_downstream(
        settings, instance, args.table, args.day, args.no_rebuild, args.data_dir, print
    )
    if evaluations:
        print(_gates_line(evaluations))
    return 0 if ok else 1


def cmd_metrics(args: argparse.Namespace) -> int:
    from analytics_pipeline.metrics.definitions import project_metrics
    from analytics_pipeline.metrics.docs import metrics_markdown

    metrics = project_metrics(_settings(args))
    if args.markdown:
        print(metrics_markdown(metrics), end="")
        return 0
    width = max(len(name) for name in metrics.metrics)
    for metric in sorted(metrics.metrics.values(), key=lambda m: m.name):
        grains = ", ".join(metric.grains) or "total"
        dims = ", ".join(metric.dimensions) or "-"
        print(f"{metric.name:<{width}}  {metric.kind:<11} {metric.description}")
        print(f"{'':<{width}}  {'':<11} by: {dims}; grains: {grains}; owner: {metric.owner}")
    return 0


def _where(items: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in items:
        dimension, sep, value = item.partition("=")
        if not sep or not dimension:
            raise SystemExit(f"--where takes DIMENSION=VALUE, got {item!r}")
        filters.setdefault(dimension.strip(), []).append(value)
    return filters


def cmd_query(args: argparse.Namespace) -> int:
    import json

    from analytics_pipeline.metrics.api import MetricQueryError, query

    try:
        result = query(
            args.metric, by=args.by or [], start=args.start, end=args.end, grain=args.grain,
            filters=_where(args.where or []), limit=args.limit, settings=_settings(args),
            use_cache=not args.no_cache,
        )  # fmt: skip
    except (MetricQueryError, KeyError) as error:
        print(f"analytics-pipeline query: {error}", file=sys.stderr)
        return 2
    frame = result.to_pandas()
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
    elif args.format == "json":
        print(json.dumps(json.loads(frame.to_json(orient="records", date_format="iso")), indent=2))
    else:
        print(frame.to_string(index=False) if len(frame) else "(no rows)")
        read = ", ".join(f"{t} {len(d)} partitions" for t, d in result.partitions.items())
        source = "cache" if result.cache_hit else "computed"
        print(f"\n{result.query.metric} {result.query.start}..{result.query.end}: {len(frame)} rows, "
              f"{source} in {result.duration_s * 1000:.0f} ms, read {read}")  # fmt: skip
    return 0


def cmd_flags(args: argparse.Namespace) -> int:
    """List flags and the partitions built with other flags; observe them in Dagster; --rebuild them."""
    from analytics_pipeline import rollout
    from analytics_pipeline.rollback import describe_runs

    settings = _settings(args)
    instance = dagster_instance()
    observed = rollout.observe_flags(instance)
    stale, runs = rollout.flag_plan(settings)
    for line in rollout.describe_flags(settings, stale):
        print(line)
    if observed:
        print(
            f"observed {', '.join(observed)} in {instance.root_directory}: the UI marks these partitions stale"
        )
    if not runs:
        return 0
    if not args.rebuild:
        print(f"{len(runs)} runs rebuild them and what reads them:")
        for line in describe_runs(runs):
            print(f"  {line}")
        print("rebuild them with: analytics-pipeline flags --rebuild")
        return 0
    ok, evaluations = rollout.rebuild_flagged(settings, instance, runs, print)
    if evaluations:
        print(_gates_line(evaluations))
    return 0 if ok else 1


def cmd_canary(args: argparse.Namespace) -> int:
    """Build a candidate beside production, compare, print and record the verdict."""
    from analytics_pipeline import rollout
    from analytics_pipeline.canary import CanaryError, parse_partitions, run_canary

    settings = _settings(args)
    try:
        verdict = run_canary(
            settings, args.model, parse_partitions(args.partitions), flag=args.flag, sql=args.sql
        )
    except CanaryError as error:
        print(f"analytics-pipeline canary: {error}", file=sys.stderr)
        return 2
    print(verdict.summary())
    run_id = rollout.record_canary(dagster_instance(), verdict)
    print(f"recorded as run {run_id} of canary_job (tags analytics/verdict={verdict.verdict})")
    data_dir = f"--data-dir {args.data_dir} " if args.data_dir else ""
    force = " --force" if verdict.held else ""
    print(f"promote: analytics-pipeline {data_dir}promote {verdict.id}{force}")
    return 0 if not verdict.held else 3


def cmd_promote(args: argparse.Namespace) -> int:
    """Publish a canary through the model's gates; a held one only with --force (recorded)."""
    from analytics_pipeline import rollout
    from analytics_pipeline.canary import CanaryError

    settings = _settings(args)
    try:
        ok = rollout.promote_canary(
            settings,
            dagster_instance(),
            args.canary_id,
            args.force,
            not args.no_rebuild,
            args.data_dir,
            print,
        )
    except CanaryError as error:
        print(f"analytics-pipeline promote: {error}", file=sys.stderr)
        return 2
    return 0 if ok else 1


def cmd_cache(args: argparse.Namespace) -> int:
    from analytics_pipeline.metrics.cache import ResultCache

    settings = _settings(args)
    cache = ResultCache(settings.cache_path)
    try:
        if args.action == "clear":
            cache.clear()
            print(f"cleared {settings.cache_path}")
            return 0
        warehouse = Warehouse(settings.warehouse_path)
        if args.action == "sweep":
            print(f"swept {cache.sweep(warehouse)} entries whose partitions were republished")
            return 0
        stats = cache.stats(warehouse)
    finally:
        cache.close()
    print(f"{'metric':<28} {'hits':>6} {'misses':>6} {'hit rate':>8} {'entries':>7} {'bytes':>9} "
          f"{'stale':>5} {'staleness s':>11} {'max age s':>9}")  # fmt: skip
    for name, s in stats.items():
        rate = f"{s.hit_rate:.1%}" if s.hit_rate is not None else "-"
        staleness = f"{s.mean_staleness_s:.0f}" if s.mean_staleness_s is not None else "-"
        age = f"{s.max_entry_age_s:.0f}" if s.max_entry_age_s is not None else "-"
        label = "total" if name == "_total" else name
        print(f"{label:<28} {s.hits:>6} {s.misses:>6} {rate:>8} {s.entries:>7} {s.bytes:>9} "
              f"{s.stale_entries:>5} {staleness:>11} {age:>9}")  # fmt: skip
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
    run.add_argument(
        "--executor", choices=EXECUTORS, default="in_process",
        help="in_process: every step in this process (quick to start); multiprocess: each step in its "
        "own process, as the daemon runs them (a step's memory ends with it; for big days)",
    )  # fmt: skip
    run.set_defaults(func=cmd_run)

    summary = sub.add_parser("summary", help="print the per-day counts of what is published")
    summary.set_defaults(func=cmd_summary)

    missing = sub.add_parser(
        "missing",
        help="print the days from --start to --end that nightly_job has not published (failed or missing), "
        "comma-separated for `dagster job backfill --partitions`",
    )
    missing.add_argument("--start", required=True, help="first arrival day, YYYY-MM-DD")
    missing.add_argument("--end", required=True, help="last arrival day, YYYY-MM-DD")
    missing.set_defaults(func=cmd_missing)

    rollback = sub.add_parser(
        "rollback",
        help="restore a kept version of a table partition, then rebuild what reads it",
        description="Put the previous (or --to) version of TABLE DAY back in place with its counts, "
        "keep the replaced one, record it in Dagster, refresh the catalog and rebuild every "
        "partition that reads it (the late-data plan).",
    )
    rollback.add_argument("table")
    rollback.add_argument("day", help="YYYY-MM-DD (all for an unpartitioned table)")
    rollback.add_argument(
        "--to", type=int, metavar="VERSION", help="the kept version to restore (see --list)"
    )
    rollback.add_argument("--list", action="store_true", help="list the versions; change nothing")
    rollback.add_argument(
        "--no-rebuild", action="store_true", help="roll back only; print the command that rebuilds downstream"
    )
    rollback.add_argument(
        "--rebuild-only", action="store_true", help="rebuild what reads TABLE DAY (after --no-rebuild)"
    )
    rollback.set_defaults(func=cmd_rollback)

    metrics = sub.add_parser("metrics", help="list the governed metrics (assets/metrics.yml)")
    metrics.add_argument("--markdown", action="store_true", help="print docs/metrics.md")
    metrics.set_defaults(func=cmd_metrics)

    q = sub.add_parser("query", help="query a metric: by dimensions, over a date range, per grain")
    q.add_argument("metric")
    q.add_argument("--by", nargs="+", metavar="DIMENSION", help="dimensions to group by")
    q.add_argument("--start", help="first day, YYYY-MM-DD (default: 30 days before --end)")
    q.add_argument("--end", help="last day, YYYY-MM-DD (default: the latest published day)")
    q.add_argument(
        "--grain", choices=["day", "week", "month"], help="one row per period (default: one total)"
    )
    q.add_argument("--where", action="append", metavar="DIMENSION=VALUE", help="filter; repeat for OR")
    q.add_argument("--limit", type=int, help="at most this many rows")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--no-cache", action="store_true", help="compute, do not read or write the result cache")
    q.set_defaults(func=cmd_query)

    flags = sub.add_parser(
        "flags", help="list feature flags and the partitions built with other flags; --rebuild them"
    )
    flags.add_argument(
        "--rebuild", action="store_true", help="rebuild the out-of-date partitions and what reads them"
    )
    flags.set_defaults(func=cmd_flags)

    canary = sub.add_parser(
        "canary",
        help="build a model's candidate beside production, compare, print a promote/hold verdict",
        description="Build MODEL for --partitions into data/canary/<id>/ (production untouched), compare "
        "it with production (row counts, metrics, column stats, rows by key) against checks/canary.yml, "
        "print the verdict and record it as a canary_job run. Exit 0: promote; 3: hold.",
    )
    canary.add_argument("model")
    canary.add_argument("--partitions", required=True, metavar="D1..D2", help="days, inclusive")
    variant = canary.add_mutually_exclusive_group()
    variant.add_argument("--flag", help="a flag of assets/flags.yml, switched on for these days")
    variant.add_argument("--sql", metavar="PATH", help="another SQL file for the model")
    canary.set_defaults(func=cmd_canary)

    promote = sub.add_parser(
        "promote", help="publish a canary through the model's gates, then rebuild what reads it"
    )
    promote.add_argument("canary_id")
    promote.add_argument("--force", action="store_true", help="promote a held canary (recorded)")
    promote.add_argument(
        "--no-rebuild", action="store_true", help="print the commands that rebuild downstream instead"
    )
    promote.set_defaults(func=cmd_promote)

    cache = sub.add_parser("cache", help="the metric result cache: stats, sweep, clear")
    cache.add_argument("action", choices=["stats", "sweep", "clear"])
    cache.set_defaults(func=cmd_cache)

    add_drill_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
