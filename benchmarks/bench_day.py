"""One day of N events through the whole pipeline, side by side with a bare-DuckDB reference.

Why: "millions of requests a day" must be cheap, and a spike must slow the pipeline down
rather than kill it. This benchmark generates a deterministic day of N events (default
10M) with the project's generator at realistic sizes (``sdk_payloads``: context and
top-level fields as real libraries send them, about 1.2 KB a line, gzipped NDJSON in
24 files), plus a next day of N/10 events; then, in one process tree and one run, it
times:

1. the pipeline as users run it: ``analytics_pipeline.cli.run_days`` over the two arrival
   days, i.e. ``nightly_job`` for each (ingest + events), ``late_window_job`` for the main
   day, the model and sketch rebuild plan (``models_job`` per date, ``dimensions_job``) and
   ``metrics_job`` (metric definitions, cache, golden queries), every asset and every
   check, through Dagster (SQLite instance); by default each step in its own process, as
   the daemon runs the schedule's runs (``--executor multiprocess``), or every step in one
   process as ``analytics-pipeline run`` does by default (``--executor in_process``); then
   a nightly run over an arrival day with no files, in a fresh process;
2. a bare-DuckDB reference: ``benchmarks/reference/*.sql``, one script per essential step
   (parse, dedupe, events Parquet, sessions, daily active users), no orchestration, no checks;
3. a pandas baseline of the same essential work (``benchmarks/pandas_baseline.py``) at 1M
   events (``--pandas-events``), reported in events per second.

Each runs in its own child process (started through a tiny launcher, so its peak RSS is
its own). The pipeline's per-step durations come from the Dagster event log. A step's peak
RSS and CPU are its own process's (sampled, ``ProcessTreeSampler``); in process, the peak is
the process's high-water mark reset at the step's start (``/proc/self/clear_refs``), so it
includes what earlier steps left allocated. Check durations: each asset's gates as its step
recorded them; in process, each SQL check and each suite evaluation timed on its own.
It prints a table and writes one JSON document (``--json``, default
``benchmarks/results/bench_day-<N>[-in_process].json``).

    .venv/bin/python benchmarks/bench_day.py                        # 10M events, the default memory limit
    .venv/bin/python benchmarks/bench_day.py --events 1000000 --memory-limit 1GB
    .venv/bin/python benchmarks/bench_day.py --scaling              # 1M, 3M, 10M and 10M at 1GB

``--scaling`` runs N = 1M, 3M and 10M at the default memory limit, then the spike case (10M
at ``ANALYTICS_DUCKDB_MEMORY_LIMIT=1GB``), and reports whether cost grows at most linearly
and whether every step's peak RSS stays bounded. ``tests/test_bench_day.py`` runs 100k
events as a smoke test of the outputs (not the timings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
REFERENCE_DIR = BENCH_DIR / "reference"
DAY = date(2025, 6, 2)
NEXT_DAY = DAY + timedelta(days=1)
IDLE_DAY = DAY + timedelta(days=20)  # an arrival day with no files: orchestration and checks only
FILES_PER_DAY = 24  # one file an hour, as an S3 destination delivers them
SEED, NEXT_SEED = 7, 8
# the day: about 2% duplicates, 0.5% malformed lines, 1% late arrivals
FAULTS = {"duplicate": 0.02, "id_conflict": 0.003, "late": 0.01, "malformed": 0.005}
SPIKE_LIMIT = "1GB"
STEP_RSS_BOUND_MIB = 1536  # the spike target: every step at most 1.5 GB
REFERENCE_FALLBACK_LIMIT = "2GB"  # the settings' default, for a reference that fails at the spike's limit
# Runs argv[1:] from a small process, so the child's ru_maxrss does not start at ours.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


# --- peak RSS ------------------------------------------------------------------------


def vm_hwm_mib() -> float:
    """This process's resident-set high-water mark (Linux VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds of this process so far, every thread (DuckDB's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_hwm() -> None:
    """Start a new high-water mark at the current RSS (Linux >= 4.0: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


class PeakTracker:
    """Per-step peaks through HWM resets, and the process's overall peak across them."""

    def __init__(self) -> None:
        self.overall = vm_hwm_mib()

    def start_step(self) -> None:
        self.overall = max(self.overall, vm_hwm_mib())
        reset_hwm()

    def end_step(self) -> float:
        peak = vm_hwm_mib()
        self.overall = max(self.overall, peak)
        return peak

    def peak(self) -> float:
        return max(self.overall, vm_hwm_mib())


class ProcessTreeSampler:
    """Peak RSS and CPU of every process below this one, sampled every ``interval`` seconds.

    With the multiprocess executor each step runs in its own process, forked from a server
    that multiprocessing starts (so the step processes are grandchildren, reaped by that
    server: ``RUSAGE_CHILDREN`` never sees them). VmHWM is a high-water mark, so a sample
    misses a peak only if it comes in the last ``interval`` of a process's life; CPU is
    the last sample, so each process's last ``interval`` of CPU can be missed.
    """

    def __init__(self, interval: float = 0.1) -> None:
        import threading

        self.interval = interval
        self.peak_mib: dict[int, float] = {}
        self.cpu_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ProcessTreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        parents: dict[int, int] = {}
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid], stats[pid] = int(fields[1]), fields
        me = os.getpid()
        for pid, fields in stats.items():
            ancestor = parents.get(pid)
            while ancestor and ancestor != me:
                ancestor = parents.get(ancestor)
            if ancestor != me:
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            hwm = next(
                (int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")),
                0.0,
            )
            self.peak_mib[pid] = max(self.peak_mib.get(pid, 0.0), hwm)
            self.cpu_s[pid] = (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime


# --- children --------------------------------------------------------------------------


def run_child(
    mode: str, args: list[str], env: dict[str, str] | None = None, check: bool = True
) -> dict[str, Any]:
    """Run ``bench_day.py --_<mode> ...`` in a fresh process; its last stdout line is JSON.

    With ``check=False`` a failed child gives ``{"ok": False, "error": ...}`` instead of raising,
    so that one contender's failure does not lose the figures of the others."""
    command = [
        sys.executable,
        "-c",
        LAUNCHER,
        sys.executable,
        str(Path(__file__).resolve()),
        f"--_{mode}",
        *args,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    child_env.update(env or {})
    child_env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=child_env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        if not check:
            return {
                "ok": False,
                "error": done.stderr.strip().splitlines()[-12:],
                "child_wall_s": round(wall, 3),
            }
        raise RuntimeError(f"{mode} child failed ({done.returncode}):\n{done.stderr[-6000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["child_wall_s"] = round(wall, 3)
    return result


def generate_child(landing: str, events: str, next_fraction: str, spool: str) -> dict[str, Any]:
    """The main day (N events) and the next day (N * fraction) into one landing folder."""
    from dataclasses import asdict

    from analytics_pipeline.sample_data.generator import FaultRates, generate

    started = time.perf_counter()
    root, n = Path(landing), int(events)
    faults = FaultRates(**FAULTS)
    main = generate(root, DAY, 1, n, seed=SEED, faults=faults, files_per_day=FILES_PER_DAY,
                    sdk_payloads=True, spool_dir=Path(spool))  # fmt: skip
    next_n = int(n * float(next_fraction))
    summary: dict[str, Any] = {"main": asdict(main)}
    if next_n:
        other = root.parent / "landing-next"
        nxt = generate(other, NEXT_DAY, 1, next_n, seed=NEXT_SEED, faults=faults,
                       files_per_day=FILES_PER_DAY, sdk_payloads=True, spool_dir=Path(spool))  # fmt: skip
        for path in sorted(p for p in other.rglob("*") if p.is_file()):  # landing/<day>/next/...
            target = root / path.parent.name / "next" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
        shutil.rmtree(other)
        summary["next"] = asdict(nxt)
    files = [p for p in root.rglob("*") if p.is_file()]
    summary.update(
        seconds=round(time.perf_counter() - started, 3),
        landing_bytes=sum(p.stat().st_size for p in files),
        peak_rss_mib=round(vm_hwm_mib(), 1),
    )
    return summary


def _instrument_checks(durations: list[dict[str, Any]]) -> None:
    """Time every SQL check and every suite evaluation (GX, volume, schema drift) of this process."""
    from analytics_pipeline.events import dedupe
    from analytics_pipeline.ingest import arrival_day
    from analytics_pipeline.quality import gates

    def timed(label: Callable[..., str], func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                durations.append({"check": label(*args, **kwargs), "seconds": time.perf_counter() - started})

        return wrapper

    for checks in (
        arrival_day.RAW_EVENTS_CHECKS,
        arrival_day.QUARANTINED_EVENTS_CHECKS,
        dedupe.EVENTS_CHECKS,
    ):
        for check in checks:
            object.__setattr__(check, "evaluate", timed(lambda *a, _n=check.name, **k: _n, check.evaluate))
    gates.validate_file = timed(
        lambda suite, *a, **k: f"{suite.asset}: expectation suite", gates.validate_file
    )
    gates.volume_checks = timed(lambda *a, **k: "volume checks", gates.volume_checks)
    gates.previous_row_counts = timed(
        lambda w, table, *a, **k: f"{table}: volume history", gates.previous_row_counts
    )
    gates.schema_drift_checks = timed(lambda *a, **k: "schema drift checks", gates.schema_drift_checks)


def pipeline_child(days: str, executor: str = "in_process") -> dict[str, Any]:
    """run_days over the arrival days (settings from ANALYTICS_* variables), with step timings and peaks.

    In process, a step's peak is this process's high-water mark, reset when the step starts
    (so it includes what earlier steps left allocated) and every SQL check and suite is timed.
    With ``multiprocess`` a step's peak and CPU are its own process's (``ProcessTreeSampler``),
    the CPU total includes every step process, and the checks' time is each asset's gates
    (suite, volume, schema drift) as its step recorded it (``gate_duration_s``)."""
    if executor == "multiprocess":
        return pipeline_child_multiprocess(days)
    tracker = PeakTracker()
    from dagster import DagsterEventType

    from analytics_pipeline.cli import dagster_instance, run_days
    from analytics_pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    instance = dagster_instance()
    after_imports = vm_hwm_mib()
    step_peaks: dict[tuple[str, str], float] = {}
    step_cpu: dict[tuple[str, str], float] = {}
    check_durations: list[dict[str, Any]] = []
    _instrument_checks(check_durations)
    handle = instance.handle_new_event

    def observe(event: Any, *args: Any, **kwargs: Any) -> Any:
        dagster_event = event.dagster_event if event.is_dagster_event else None
        if dagster_event is not None and dagster_event.step_key:
            kind = dagster_event.event_type
            key = (event.run_id, dagster_event.step_key)
            if kind == DagsterEventType.STEP_START:
                tracker.start_step()
                step_cpu[key] = cpu_s()
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                step_peaks[key] = tracker.end_step()
                step_cpu[key] = cpu_s() - step_cpu.get(key, cpu_s())
        return handle(event, *args, **kwargs)

    instance.handle_new_event = observe  # type: ignore[method-assign]
    started, cpu_started, since = time.perf_counter(), cpu_s(), time.time()
    ok = run_days(settings, days.split(","), instance, echo=False)
    wall, cpu = time.perf_counter() - started, cpu_s() - cpu_started
    steps = []
    records = [r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= since - 1]
    for record in sorted(records, key=lambda r: r.create_timestamp):  # this child's runs only
        run = record.dagster_run
        for stat in sorted(instance.get_run_step_stats(run.run_id), key=lambda s: s.start_time or 0):
            peak = step_peaks.get((run.run_id, stat.step_key))
            steps.append({
                "job": run.job_name if not run.job_name.startswith("__") else run.tags.get("analytics/plan", "materialize"),
                "partition": run.tags.get("dagster/partition"),
                "step": stat.step_key,
                "assets": sorted(k.to_user_string() for k in run.asset_selection or []) if run.job_name.startswith("__") else None,
                "status": stat.status.value if stat.status else None,
                "seconds": round((stat.end_time or 0) - (stat.start_time or 0), 3),
                "cpu_s": round(step_cpu.get((run.run_id, stat.step_key), 0.0), 3),
                "peak_rss_mib": round(peak, 1) if peak is not None else None,
            })  # fmt: skip
        if record.start_time and record.end_time:
            steps.append({"job": run.job_name, "partition": run.tags.get("dagster/partition"), "step": "(run)",
                          "seconds": round(record.end_time - record.start_time, 3),
                          "status": run.status.value})  # fmt: skip
    checks: dict[str, dict[str, float]] = {}
    for item in check_durations:
        entry = checks.setdefault(item["check"], {"calls": 0, "seconds": 0.0})
        entry["calls"] += 1
        entry["seconds"] = round(entry["seconds"] + item["seconds"], 3)
    return pipeline_document(
        ok, "in_process", wall, cpu, tracker.peak(), after_imports, settings, steps, checks
    )


def pipeline_document(ok: bool, executor: str, wall: float, cpu: float, peak: float, after_imports: float,
                      settings: Any, steps: list[dict[str, Any]], checks: dict[str, Any],
                      **more: Any) -> dict[str, Any]:  # fmt: skip
    """The pipeline child's figures, the same keys in both executors' modes."""
    return {
        "ok": ok,
        "executor": executor,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mib": round(peak, 1),
        **more,
        "rss_after_imports_mib": round(after_imports, 1),
        "memory_limit": settings.duckdb_memory_limit,
        "threads": settings.duckdb_threads,
        "steps": steps,
        "checks": checks,
        "outputs": pipeline_outputs(settings.warehouse_path),
    }


def pipeline_child_multiprocess(days: str) -> dict[str, Any]:
    from dagster import DagsterEventType

    from analytics_pipeline.cli import dagster_instance, run_days
    from analytics_pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    instance = dagster_instance()
    after_imports = vm_hwm_mib()
    started, cpu_started, since = time.perf_counter(), cpu_s(), time.time()
    with ProcessTreeSampler() as sampler:
        ok = run_days(settings, days.split(","), instance, echo=False, executor="multiprocess")
    wall = time.perf_counter() - started
    cpu = cpu_s() - cpu_started + sum(sampler.cpu_s.values())
    steps = []
    records = [r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= since - 1]
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        pids = {
            e.dagster_event.step_key: e.dagster_event.pid
            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
            if e.dagster_event is not None
        }
        for stat in sorted(instance.get_run_step_stats(run.run_id), key=lambda s: s.start_time or 0):
            pid = pids.get(stat.step_key)
            steps.append({
                "job": run.job_name, "partition": run.tags.get("dagster/partition"), "step": stat.step_key,
                "status": stat.status.value if stat.status else None,
                "seconds": round((stat.end_time or 0) - (stat.start_time or 0), 3),
                "cpu_s": round(sampler.cpu_s.get(pid, 0.0), 3) if pid else None,
                "peak_rss_mib": round(sampler.peak_mib[pid], 1) if pid in sampler.peak_mib else None,
                "pid": pid,
            })  # fmt: skip
        if record.start_time and record.end_time:
            steps.append({"job": run.job_name, "partition": run.tags.get("dagster/partition"), "step": "(run)",
                          "seconds": round(record.end_time - record.start_time, 3),
                          "status": run.status.value})  # fmt: skip
    step_pids = {s["pid"] for s in steps if s.get("pid")}
    checks: dict[str, dict[str, float]] = {}  # the gates' time per asset, as each step recorded it
    for record in records:
        for entry in instance.all_logs(
            record.dagster_run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
        ):
            materialization = entry.asset_materialization
            gate = materialization.metadata.get("gate_duration_s") if materialization else None
            if materialization is None or gate is None:
                continue
            item = checks.setdefault(
                f"{materialization.asset_key.to_user_string()}: gates", {"calls": 0, "seconds": 0.0}
            )
            item["calls"] += 1
            item["seconds"] = round(item["seconds"] + float(gate.value), 3)
    others = max([0.0, *(v for k, v in sampler.peak_mib.items() if k not in step_pids)])
    return pipeline_document(
        ok, "multiprocess", wall, cpu, max([vm_hwm_mib(), *sampler.peak_mib.values()]), after_imports,
        settings, steps, checks, orchestrator_peak_rss_mib=round(vm_hwm_mib(), 1),
        other_processes_peak_rss_mib=round(others, 1),
    )  # fmt: skip


def pipeline_outputs(warehouse: Path) -> dict[str, Any]:
    """Row counts of what the pipeline published for the benchmark's days (the correctness figures)."""
    import duckdb

    con = duckdb.connect()
    out: dict[str, Any] = {}
    try:
        for table in ("raw_events", "quarantined_events", "events", "event_id_conflicts", "sessions",
                      "daily_active_users", "person_events"):  # fmt: skip
            files = sorted((warehouse / table).glob("date=*/part-0.parquet"))
            for path in files:
                day = path.parent.name.removeprefix("date=")
                count = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
                out.setdefault(table, {})[day] = int(count[0]) if count else 0
        for path in sorted((warehouse / "events").glob("date=*/part-0.parquet")):
            # persons as the reference and pandas count them (the models stitch identities)
            row = con.execute(
                f"SELECT count(DISTINCT coalesce(user_id, 'anonymous:' || anonymous_id)) FROM read_parquet('{path}')"
            ).fetchone()
            out.setdefault("persons_unstitched", {})[path.parent.name.removeprefix("date=")] = (
                int(row[0]) if row else 0
            )
        for path in sorted((warehouse / "daily_active_users").glob("date=*/part-0.parquet")):
            row = con.execute(f"SELECT dau FROM read_parquet('{path}')").fetchone()
            out.setdefault("dau", {})[path.parent.name.removeprefix("date=")] = int(row[0]) if row else None
        for path in sorted((warehouse / "quarantined_events").glob("date=*/part-0.parquet")):
            rows = con.execute(
                f"SELECT reason, count(*) FROM read_parquet('{path}') GROUP BY 1 ORDER BY 1"
            ).fetchall()
            out.setdefault("quarantined_by_reason", {})[path.parent.name.removeprefix("date=")] = dict(rows)
    finally:
        con.close()
    return out


def reference_child(landing: str, work: str, days: str, memory_limit: str, threads: str) -> dict[str, Any]:
    """The reference scripts in one DuckDB connection, each timed."""
    import duckdb

    files = sorted(str(p) for day in days.split(",") for p in (Path(landing) / day).rglob("part-*.jsonl.gz"))
    Path(work).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": memory_limit, "threads": int(threads),
                                 "temp_directory": str(Path(work) / "spill"),
                                 "preserve_insertion_order": False})  # fmt: skip
    con.execute("SET TimeZone = 'UTC'")
    listed = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    steps = []
    started, cpu_started = time.perf_counter(), cpu_s()
    for script in sorted(REFERENCE_DIR.glob("*.sql")):
        sql = script.read_text().replace("{files}", listed).replace("{work}", work)
        t0, c0 = time.perf_counter(), cpu_s()
        con.execute(sql)
        steps.append({"step": script.stem, "seconds": round(time.perf_counter() - t0, 3),
                      "cpu_s": round(cpu_s() - c0, 3)})  # fmt: skip
    wall, cpu = time.perf_counter() - started, cpu_s() - cpu_started
    outputs: dict[str, Any] = {
        "events": {
            str(d): int(n)
            for d, n in con.execute(
                f"SELECT event_date, count(*) FROM read_parquet('{work}/events.parquet') GROUP BY 1 ORDER BY 1"
            ).fetchall()
        }
    }
    outputs["sessions"] = {
        str(d): int(n) for d, n in con.execute(
            f"SELECT session_date, count(*) FROM read_parquet('{work}/sessions.parquet') GROUP BY 1 ORDER BY 1"
        ).fetchall()
    }  # fmt: skip
    outputs["dau"] = {
        str(d): int(n)
        for d, n in con.execute(f"SELECT * FROM read_parquet('{work}/daily_active_users.parquet')").fetchall()
    }
    con.close()
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_mib": round(vm_hwm_mib(), 1),
            "steps": steps, "memory_limit": memory_limit, "threads": int(threads), "outputs": outputs}  # fmt: skip


def pandas_child(landing: str, work: str, days: str) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH_DIR))
    from pandas_baseline import run  # type: ignore[import-not-found]

    files = sorted(p for day in days.split(",") for p in (Path(landing) / day).rglob("part-*.jsonl.gz"))
    started, cpu_started = time.perf_counter(), cpu_s()
    steps, outputs = run(files, Path(work))
    return {"wall_s": round(time.perf_counter() - started, 3), "cpu_s": round(cpu_s() - cpu_started, 3),
            "peak_rss_mib": round(vm_hwm_mib(), 1),
            "steps": steps, "outputs": outputs}  # fmt: skip


# --- one measurement -------------------------------------------------------------------


def events_planted(gen: dict[str, Any]) -> int:
    return int(gen["main"]["events_planted"] + gen.get("next", {}).get("events_planted", 0))


def generated_day(n: int, base: Path, next_fraction: float) -> tuple[Path, dict[str, Any]]:
    """The landing folder of an N-event day under ``base``, generated once and reused."""
    day_dir = base / f"day-{n}-next{next_fraction}"
    summary = day_dir / "generated.json"
    if summary.exists():
        return day_dir / "landing", json.loads(summary.read_text())
    shutil.rmtree(day_dir, ignore_errors=True)
    day_dir.mkdir(parents=True)
    print(f"generating {n:,} events (+{int(n * next_fraction):,} next day) ...", flush=True)
    gen = run_child("generate", [str(day_dir / "landing"), str(n), str(next_fraction), str(base / "spool")])
    summary.write_text(json.dumps(gen))
    return day_dir / "landing", gen


def measure(n: int, memory_limit: str | None, threads: int, base: Path, next_fraction: float,
            pandas_events: int, keep: bool, executor: str = "multiprocess") -> dict[str, Any]:  # fmt: skip
    """Generate (or reuse) the day, then pipeline, reference and pandas back to back."""
    source, gen = generated_day(n, base, next_fraction)
    data = base / f"n{n}-{(memory_limit or 'default').lower()}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    landing = data / "landing"
    shutil.copytree(source, landing, copy_function=os.link)  # hard links: no copy, same files
    days = [DAY.isoformat(), NEXT_DAY.isoformat()]
    env = {"ANALYTICS_DATA_DIR": str(data), "ANALYTICS_DUCKDB_THREADS": str(threads),
           "DAGSTER_HOME": str(data / "dagster_home")}  # fmt: skip
    if memory_limit:
        env["ANALYTICS_DUCKDB_MEMORY_LIMIT"] = memory_limit
    print(f"pipeline {n:,} events, memory limit {memory_limit or 'default'}, {executor} ...", flush=True)
    pipeline = run_child("pipeline", [",".join(days), executor], env)
    print(f"  {pipeline['wall_s']:.1f} s; nightly run over an arrival day with no files ...", flush=True)
    idle = run_child("pipeline", [IDLE_DAY.isoformat(), executor], env)
    limit = memory_limit or pipeline["memory_limit"]
    print(f"reference {n:,} events ...", flush=True)
    reference = run_child(
        "reference", [str(landing), str(data / "reference"), ",".join(days), limit, str(threads)], check=False
    )
    if reference.get("ok") is False:  # the bare script has no backpressure: at 10M it fails at 1 GB
        print(f"  the reference failed at {limit}: {error_line(reference['error'])}; again at "
              f"{REFERENCE_FALLBACK_LIMIT} ...", flush=True)  # fmt: skip
        failed = reference
        shutil.rmtree(data / "reference", ignore_errors=True)
        reference = run_child("reference", [str(landing), str(data / "reference"), ",".join(days),
                                            REFERENCE_FALLBACK_LIMIT, str(threads)])  # fmt: skip
        reference["failed_at"] = {
            "memory_limit": limit,
            "error": failed["error"],
            "wall_s": failed["child_wall_s"],
        }
    result: dict[str, Any] = {
        "events": n,
        "events_processed": events_planted(gen),
        "memory_limit": limit,
        "threads": threads,
        "executor": executor,
        "generated": gen,
        "pipeline": pipeline,
        "idle_nightly": {k: idle[k] for k in ("ok", "wall_s", "child_wall_s", "peak_rss_mib", "steps")},
        "reference": reference,
        "ratio": round(pipeline["wall_s"] / reference["wall_s"], 2),
    }
    for name in ("pipeline", "reference"):
        result[name]["events_per_s"] = round(events_planted(gen) / result[name]["wall_s"])
    if pandas_events:
        result["pandas"] = measure_pandas(pandas_events, base, next_fraction)
    if not keep:
        shutil.rmtree(data, ignore_errors=True)
    return result


def measure_pandas(n: int, base: Path, next_fraction: float) -> dict[str, Any]:
    landing, gen = generated_day(n, base, next_fraction)
    print(f"pandas baseline {n:,} events ...", flush=True)
    days = f"{DAY.isoformat()},{NEXT_DAY.isoformat()}"
    work = base / f"pandas-{n}"
    result = run_child("pandas", [str(landing), str(work), days])
    result["events"] = n
    result["events_processed"] = events_planted(gen)
    result["events_per_s"] = round(events_planted(gen) / result["wall_s"])
    shutil.rmtree(work, ignore_errors=True)
    return result


# --- reporting -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import duckdb

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))  # fmt: skip
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "duckdb": duckdb.__version__, "load_average_at_start": os.getloadavg()}  # fmt: skip


def step_table(result: dict[str, Any]) -> list[str]:
    lines = [f"  {'job':<16}{'partition':<12}{'step':<34}{'s':>8}{'cpu s':>8}{'peak MiB':>10}"]
    for step in result["pipeline"]["steps"]:
        if step["step"] == "(run)":
            continue
        name = step["step"] if not step.get("assets") else step["step"]
        peak = f"{step['peak_rss_mib']:,.0f}" if step.get("peak_rss_mib") else "-"
        lines.append(
            f"  {step['job']:<16}{step['partition'] or '':<12}{name:<34}{step['seconds']:>8.2f}"
            f"{step.get('cpu_s', 0):>8.2f}{peak:>10}"
        )
    return lines


def error_line(lines: list[str]) -> str:
    """The exception's own line of a child's stderr (DuckDB follows it with advice lines)."""
    return next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")


def report(result: dict[str, Any]) -> str:
    p, r = result["pipeline"], result["reference"]
    lines = [
        f"{result['events']:,} events/day ({result['events_processed']:,} over both days), memory limit "
        f"{result['memory_limit']}, {result['threads']} threads, executor {result.get('executor', 'in_process')}",
        f"  pipeline   {p['wall_s']:>8.1f} s {p['events_per_s']:>10,} events/s  peak RSS {p['peak_rss_mib']:>7,.0f} MiB"
        f"  cpu {p['cpu_s']:.1f} s  (ok={p['ok']})",
        f"  reference  {r['wall_s']:>8.1f} s {r['events_per_s']:>10,} events/s  peak RSS {r['peak_rss_mib']:>7,.0f} MiB"
        f"  cpu {r['cpu_s']:.1f} s  (memory limit {r['memory_limit']}"
        + (
            f"; failed at {r['failed_at']['memory_limit']}: {error_line(r['failed_at']['error'])}"
            if "failed_at" in r
            else ""
        )
        + ")",
        f"  ratio      {result['ratio']:.2f}x",
        f"  idle nightly run {result['idle_nightly']['wall_s']:.1f} s (fresh process "
        f"{result['idle_nightly']['child_wall_s']:.1f} s)",
    ]
    if "pandas" in result:
        pd_ = result["pandas"]
        lines.append(f"  pandas     {pd_['wall_s']:>8.1f} s {pd_['events_per_s']:>10,} events/s  peak RSS "
                     f"{pd_['peak_rss_mib']:>7,.0f} MiB ({pd_['events']:,} events)")  # fmt: skip
    lines.append("  reference steps: " + ", ".join(f"{s['step']} {s['seconds']:.1f}s" for s in r["steps"]))
    lines += step_table(result)
    slow = sorted(p["checks"].items(), key=lambda kv: -kv[1]["seconds"])[:8]
    lines.append("  slowest checks: " + ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in slow))
    return "\n".join(lines)


def scaling_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Does cost grow at most linearly from the smallest N, and does every step stay bounded?"""
    default = [r for r in results if r.get("case") == "scaling"]
    summary: dict[str, Any] = {}
    if len(default) >= 2:
        base = default[0]
        summary["cost_ratio_vs_smallest"] = {
            str(r["events"]): {
                "events_ratio": round(r["events_processed"] / base["events_processed"], 2),
                "pipeline_time_ratio": round(r["pipeline"]["wall_s"] / base["pipeline"]["wall_s"], 2),
                "reference_time_ratio": round(r["reference"]["wall_s"] / base["reference"]["wall_s"], 2),
            }
            for r in default
        }
        summary["at_most_linear"] = all(
            v["pipeline_time_ratio"] <= v["events_ratio"] for v in summary["cost_ratio_vs_smallest"].values()
        )
    for r in results:
        if r.get("case") == "spike":
            peaks = [s["peak_rss_mib"] for s in r["pipeline"]["steps"] if s.get("peak_rss_mib")]
            summary["spike"] = {
                "events": r["events"], "memory_limit": r["memory_limit"], "completed": r["pipeline"]["ok"],
                "max_step_peak_rss_mib": max(peaks) if peaks else None,
                "bound_mib": STEP_RSS_BOUND_MIB,
                "bounded": bool(peaks) and max(peaks) <= STEP_RSS_BOUND_MIB,
            }  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="events on the main day (default 10M)")
    parser.add_argument("--memory-limit", help="ANALYTICS_DUCKDB_MEMORY_LIMIT for the pipeline and the reference "
                        "(default: the settings' default)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--executor", choices=["in_process", "multiprocess"], default="multiprocess",
        help="run_days' executor: every step in one process (analytics-pipeline run), or each step in "
        "its own process (as the daemon runs the schedule's runs)",
    )  # fmt: skip
    parser.add_argument(
        "--next-fraction", type=float, default=0.1, help="events of the next day, as a fraction"
    )
    parser.add_argument("--pandas-events", type=int, default=1_000_000, help="0 skips the pandas baseline")
    parser.add_argument("--scaling", action="store_true", help="1M, 3M, 10M, and 10M at a 1GB memory limit")
    parser.add_argument(
        "--data-dir", type=Path, help="where to work (default: a temporary directory, removed)"
    )
    parser.add_argument("--json", type=Path, help="where to write the JSON (default benchmarks/results/...)")
    parser.add_argument("--keep", action="store_true", help="keep the warehouses and landing files")
    for mode in ("generate", "pipeline", "reference", "pandas"):
        parser.add_argument(f"--_{mode}", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    children: dict[str, Callable[..., dict[str, Any]]] = {
        "generate": generate_child, "pipeline": pipeline_child, "reference": reference_child,
        "pandas": pandas_child,
    }  # fmt: skip
    for mode, func in children.items():
        child_args = getattr(args, f"_{mode}")
        if child_args is not None:
            print(json.dumps(func(*child_args)), flush=True)
            return 0

    temporary = args.data_dir is None
    base = Path(tempfile.mkdtemp(prefix="bench_day_")) if temporary else args.data_dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    cases = ([(n, args.memory_limit, "scaling") for n in (1_000_000, 3_000_000, 10_000_000)]
             + [(10_000_000, SPIKE_LIMIT, "spike")]) if args.scaling else [(args.events, args.memory_limit, "single")]  # fmt: skip
    document: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [],
    }
    try:
        for n, limit, case in cases:
            pandas_n = args.pandas_events if case != "spike" and not document["results"] else 0
            result = measure(n, limit, args.threads, base, args.next_fraction, pandas_n, args.keep,
                             args.executor)  # fmt: skip
            result["case"] = case
            document["results"].append(result)
            print(report(result), flush=True)
        if args.scaling:
            document["scaling"] = scaling_summary(document["results"])
            print(json.dumps(document["scaling"], indent=2))
    finally:
        if temporary and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    document["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    mode = "" if args.executor == "multiprocess" else f"-{args.executor}"
    out = (
        args.json
        or BENCH_DIR / "results" / f"bench_day-{'scaling' if args.scaling else args.events}{mode}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
