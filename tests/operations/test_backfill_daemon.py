"""A backfill through the real daemon, within the project's ``dagster.yaml`` limits, then a re-run of the failures.

Ten arrival days are backfilled as a user does it (README, "Backfills"): ``dagster job backfill
-j nightly_job --from D1 --to D10`` queues one run per day, and ``dagster-daemon run`` launches
them, on a temporary ``DAGSTER_HOME`` whose ``dagster.yaml`` is the project's own file (the run
queue, at most 3 runs, the models queue, the ``warehouse_io`` pool of 2). The landing folders of
two days have not arrived when the backfill runs: those days ingest nothing, and their
``events`` gate fails (``volume_not_zero``: 0 rows where the earlier days had 60), so their runs
fail. The folders then land and only those two days are re-run, the documented way: the days
``analytics-pipeline missing --start D1 --end D10`` prints as the backfill's ``--partitions``,
while the daemon keeps running. The code location is the project's, its steps in their run's
process (``LOCATION`` below); the CLI commands are the README's with this workspace file.

Checked from the instance's records and the files:

- every day's five tables are published, and only the two failed days were run twice;
- no DuckDB (or SQLite) lock error anywhere: event logs, step stdout/stderr, the daemon's log;
- the limits held: at no instant more runs in progress than ``max_concurrent_runs`` (from each
  run's launch to its end) and never more ``warehouse_io`` steps at once than the pool's limit
  (from each step's start, after it got its slot, to its end);
- and the pool binds, deterministically: the test holds its slots when the daemon starts; the
  queue launches the freshness sensor's run, queued after the backfill's, while every backfill run
  stays queued (its first step needs the full pool), until the test gives the slots back.

The daemon helpers here are shared with ``test_nightly_daemon.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter

from analytics_pipeline.cli import DAGSTER_YAML, DAGSTER_YAML_PATH
from analytics_pipeline.quality.gate_status import failed_checks
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import signup_day, write_lines

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAGSTER, DAEMON = BIN / "dagster", BIN / "dagster-daemon"
INSTANCE = yaml.safe_load(DAGSTER_YAML)
RUN_LIMIT: int = INSTANCE["concurrency"]["runs"]["max_concurrent_runs"]
POOL, POOL_LIMIT = "warehouse_io", int(INSTANCE["concurrency"]["pools"]["default_limit"])
MODELS_QUEUE_LIMIT = {
    t["key"]: t["limit"] for t in INSTANCE["concurrency"]["runs"]["tag_concurrency_limits"]
}["analytics/models_queue"]
POOL_STEPS = {"ingest_arrival_day", "dedupe_events_day"}  # nightly_job's steps, both pool="warehouse_io"
BLOCKED_BY_POOL = f"blocked by limit for pool {POOL}"  # Dagster's engine event while a step waits for a slot
SLOT_HOLDER = "slots-held-by-the-test"  # no run has this id: the run monitor never frees its slots
FRESHNESS_SENSOR = "final_models_freshness_sensor"  # on by default: its first tick queues a run
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
# DuckDB: "IO Error: Could not set lock on file ... Conflicting lock is held in ..."; SQLite: "database is locked"
LOCK_ERRORS = re.compile(
    r"could not set lock|conflicting lock|database is locked|lock is held", re.IGNORECASE
)
TABLES = ("raw_events", "quarantined_events", "file_ledger", "events", "event_id_conflicts")

START = date(2025, 5, 1)
DAYS = [(START + timedelta(days=i)).isoformat() for i in range(10)]
LATE_FOLDERS = [DAYS[3], DAYS[7]]  # their files land after the backfill ran
PERSONS = 20  # 3 events each: 60 events a day, above the volume gate's min_median of 50
BACKFILL_TIMEOUT_S = 900  # guards against a hung daemon only; the backfill takes 1-3 minutes on 2 cores
# The project's code location, steps in their run's process instead of one new process per step.
# Every process loads the code location (7 s of CPU, 20-30 s on a loaded 2-core machine): with
# the multiprocess executor a 2-step run costs 3 loads, in process 1. Pool slots are claimed the
# same way by both executors (from the instance, per step), so the warehouse_io limit is held
# across the runs' processes either way; nightly_job's two steps run one after the other anyway.
LOCATION = """from dagster import Definitions, in_process_executor

from analytics_pipeline import definitions as project

defs = Definitions.merge(project.defs, Definitions(executor=in_process_executor))
"""
WORKSPACE = """load_from:
  - python_file:
      relative_path: location.py
      attribute: defs
      location_name: analytics_pipeline
      working_directory: {root}
"""


# --- helpers shared with test_nightly_daemon.py ---------------------------------------------------


def cli_env(dagster_home: Path, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a user's shell: DAGSTER_HOME and the deployment's ANALYTICS_* settings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_") and k != "DAGSTER_HOME"}
    env.update(DAGSTER_HOME=str(dagster_home), ANALYTICS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
               DAGSTER_DISABLE_TELEMETRY="1", **settings)  # fmt: skip
    return env


def in_process_workspace(folder: Path) -> Path:
    """A workspace.yaml with the project's code location, steps in process (see ``LOCATION``)."""
    (folder / "location.py").write_text(LOCATION)
    workspace = folder / "workspace.yaml"
    workspace.write_text(WORKSPACE.format(root=PROJECT_ROOT))
    return workspace


def new_dagster_home(path: Path) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml, its SQLite storage created once.

    Several processes creating a brand-new runs.db at the same moment race in Dagster's own
    schema stamping, so the storage is created here, before any CLI or daemon starts.
    """
    assert DAGSTER_YAML_PATH.read_text() == DAGSTER_YAML  # the CLI's dagster.yaml is the shipped file
    path.mkdir(parents=True)
    (path / "dagster.yaml").write_text(DAGSTER_YAML)
    with DagsterInstance.from_config(str(path)) as instance:
        assert instance.get_runs_count() == 0
    return path


def dagster(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """Run the ``dagster`` CLI from the project root (as the README does); fail with its output."""
    done = subprocess.run(
        [str(DAGSTER), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"dagster {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def launch_backfill(args: list[str], env: dict[str, str], workspace: Path) -> str:
    """``dagster job backfill -w <workspace> ... --noprompt`` (the README's command); the backfill's id."""
    out = dagster(["job", "backfill", "-w", str(workspace), *args, "--noprompt"], env)
    match = re.search(r"Launched backfill job `(\w+)`", out)
    assert match, out[-3000:]
    return match.group(1)


@contextmanager
def daemon(
    env: dict[str, str], log: Path, workspace: Path = PROJECT_ROOT / "workspace.yaml"
) -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run -w workspace.yaml`` for the duration of the block, then stopped.

    It runs in its own process group (its code server and run workers with it), so whatever the
    test's outcome, that group and nothing else is stopped: SIGINT first (a clean shutdown),
    SIGKILL if it is still there 30 s later.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(DAEMON), "run", "-w", str(workspace)], cwd=PROJECT_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftover run workers of an interrupted run, if any
    proc.wait(timeout=30)


def wait_for(
    what: str,
    done: Callable[[], bool],
    timeout_s: float,
    proc: subprocess.Popen[bytes],
    log: Path,
    state: Callable[[], Any],
) -> float:
    """Poll ``done`` every 2 s; fail naming ``what``, the state and the daemon log's tail on timeout."""
    started = time.monotonic()
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"dagster-daemon exited {proc.returncode} while waiting for {what}:\n{_tail(log)}")
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what}: not done after {timeout_s:.0f}s; state {state()}\n{_tail(log)}")
        time.sleep(2)
    return time.monotonic() - started


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def runs_of(instance: DagsterInstance, **filters: Any) -> list[RunRecord]:
    """Run records, oldest first."""
    return list(reversed(instance.get_run_records(RunsFilter(**filters))))


def launched_at(instance: DagsterInstance, run_id: str) -> float:
    """When the daemon launched the run (RUN_STARTING): from then on the queue counts it in progress."""
    (starting,) = instance.all_logs(run_id, of_type=DagsterEventType.RUN_STARTING)
    return starting.timestamp


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (one ending when another starts do not overlap)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


def run_intervals(
    instance: DagsterInstance, records: list[RunRecord]
) -> dict[str, list[tuple[float, float]]]:
    """Each run's (start, end) as the run records have them, and from its launch by the daemon."""
    ended = [r for r in records if r.end_time is not None and r.start_time is not None]
    return {
        "started": [(r.start_time, r.end_time) for r in ended],  # type: ignore[misc]
        "launched": [(launched_at(instance, r.dagster_run.run_id), r.end_time) for r in ended],  # type: ignore[misc]
    }


def pool_step_intervals(
    instance: DagsterInstance, records: list[RunRecord], pool_steps: set[str]
) -> list[tuple[float, float]]:
    """(start, end) of every attempt of a pool step: from its worker's start (after the step got its
    pool slot) or, in process, its STEP_START, to its STEP_SUCCESS, STEP_FAILURE or STEP_UP_FOR_RETRY."""
    begin = {DagsterEventType.STEP_WORKER_STARTING, DagsterEventType.STEP_START}
    end = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_UP_FOR_RETRY}
    intervals = []
    for record in records:
        opened: dict[str, float] = {}
        for entry in instance.all_logs(record.dagster_run.run_id, of_type=begin | end):
            step, kind = entry.step_key, entry.dagster_event.event_type if entry.dagster_event else None
            if step not in pool_steps:
                continue
            if kind in begin:
                opened.setdefault(step, entry.timestamp)  # the worker starts before the step does
            elif step in opened:
                intervals.append((opened.pop(step), entry.timestamp))
        assert not opened, f"run {record.dagster_run.run_id}: steps started and never ended: {opened}"
    return intervals


def lock_errors(instance: DagsterInstance, dagster_home: Path, daemon_log: Path) -> list[str]:
    """Every line mentioning a lock error: run event logs (messages and errors), step stdout/stderr
    (the compute logs under DAGSTER_HOME/storage) and the daemon's own log."""
    found = []
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            text = entry.user_message or ""
            if entry.dagster_event and entry.dagster_event.event_specific_data is not None:
                text += " " + str(entry.dagster_event.event_specific_data)
            if LOCK_ERRORS.search(text):
                found.append(f"run {run.run_id}: {text[:500]}")
    files = [daemon_log, *(p for p in (dagster_home / "storage").rglob("*") if p.is_file())]
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            if LOCK_ERRORS.search(line):
                found.append(f"{path.name}: {line[:500]}")
    return found


# --- the backfill ---------------------------------------------------------------------------------


def write_day(settings: PipelineSettings, day: str) -> None:
    """One arrival day: 20 persons with a page view, a product view and a sign-up, a re-delivered
    line and a malformed one (so dedupe and quarantine have work), all dated that day."""
    rows: list[Any] = signup_day(day, range(PERSONS), hour=lambda person: f"{person % 24:02d}")
    rows += [rows[0], "{not json"]
    write_lines(settings, day, "part-000.jsonl", rows)


@pytest.mark.slow
def test_backfill_through_the_daemon_holds_the_limits_and_reruns_only_the_failed_days(tmp_path: Path) -> None:
    assert DAEMON.exists(), f"dagster-daemon not found next to {sys.executable}"
    assert (RUN_LIMIT, POOL_LIMIT, MODELS_QUEUE_LIMIT) == (3, 2, 1)  # what the README documents
    settings = PipelineSettings(data_dir=str(tmp_path / "data"))
    for day in DAYS:
        if day not in LATE_FOLDERS:
            write_day(settings, day)
    home = new_dagster_home(tmp_path / "dagster_home")
    env = cli_env(home, tmp_path / "data")
    workspace = in_process_workspace(tmp_path)
    log = tmp_path / "daemon.log"
    started = time.monotonic()

    with DagsterInstance.from_config(str(home)) as instance:
        first = launch_backfill(["-j", "nightly_job", "--from", DAYS[0], "--to", DAYS[-1]], env, workspace)
        queued = runs_of(instance, tags={"dagster/backfill": first})
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in queued) == DAYS
        # nothing runs without the daemon
        assert {r.dagster_run.status for r in queued} == {DagsterRunStatus.QUEUED}

        def finished(backfill: str, count: int) -> Callable[[], bool]:
            def check() -> bool:
                records = runs_of(instance, tags={"dagster/backfill": backfill})
                return len(records) == count and all(r.dagster_run.status in TERMINAL for r in records)

            return check

        def state() -> dict[str, str]:
            return {r.dagster_run.tags.get("dagster/partition", r.dagster_run.job_name): r.dagster_run.status.value
                    for r in runs_of(instance)}  # fmt: skip

        # The pool binds, deterministically: its slots are held (as by steps of other runs) when the
        # daemon starts. The run queue then holds back every run whose first step needs that pool
        # (Dagster's block_op_concurrency_limited_runs, on by default) and launches the freshness
        # sensor's run, queued after them, past them.
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(POOL)
        for slot in range(POOL_LIMIT):
            assert storage.claim_concurrency_slot(POOL, SLOT_HOLDER, f"held-{slot}").is_claimed

        def queue_went_past() -> bool:
            return any(
                r.dagster_run.tags.get("dagster/sensor_name") == FRESHNESS_SENSOR
                and r.dagster_run.status in TERMINAL
                for r in runs_of(instance)
            )

        with daemon(env, log, workspace) as proc:
            wait_for(
                "the queue to launch past the held runs",
                queue_went_past,
                BACKFILL_TIMEOUT_S,
                proc,
                log,
                state,
            )
            held = runs_of(instance, tags={"dagster/backfill": first})
            assert {r.dagster_run.status for r in held} == {DagsterRunStatus.QUEUED}, state()
            storage.free_concurrency_slots_for_run(SLOT_HOLDER)  # the slots are given back: the backfill runs
            first_s = wait_for(
                f"backfill {first}", finished(first, len(DAYS)), BACKFILL_TIMEOUT_S, proc, log, state
            )
            status = {r.dagster_run.tags["dagster/partition"]: r.dagster_run.status
                      for r in runs_of(instance, tags={"dagster/backfill": first})}  # fmt: skip
            failed = sorted(day for day, s in status.items() if s != DagsterRunStatus.SUCCESS)
            assert failed == LATE_FOLDERS, status
            warehouse = Warehouse(settings.warehouse_path)
            for day in failed:  # they ingested an empty folder; the events gate held the 0-row partition back
                assert failed_checks(warehouse, "events", day) == ["volume_not_zero"], day
                assert day not in warehouse.published_days("events")

            # the files land; re-run only the failed days as the README says: the days the range has
            # not published, from `analytics-pipeline missing`, as the backfill's --partitions
            for day in LATE_FOLDERS:
                write_day(settings, day)
            listed = subprocess.run(
                [str(BIN / "analytics-pipeline"), "missing", "--start", DAYS[0], "--end", DAYS[-1]],
                env=env, capture_output=True, text=True, timeout=120, check=True,
            ).stdout.strip()  # fmt: skip
            assert listed == ",".join(LATE_FOLDERS)
            rerun = launch_backfill(["-j", "nightly_job", "--partitions", listed], env, workspace)
            rerun_s = wait_for(
                f"backfill {rerun}", finished(rerun, len(failed)), BACKFILL_TIMEOUT_S, proc, log, state
            )

        records = runs_of(instance)
        nightly = [r for r in records if r.dagster_run.job_name == "nightly_job"]
        reruns = [r for r in nightly if r.dagster_run.tags.get("dagster/backfill") == rerun]
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in reruns) == LATE_FOLDERS
        assert all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in reruns)
        runs_per_day = {d: sum(r.dagster_run.tags["dagster/partition"] == d for r in nightly) for d in DAYS}
        assert runs_per_day == {d: 2 if d in LATE_FOLDERS else 1 for d in DAYS}  # nothing else re-ran

        # 1. every day's outputs are published
        for table in TABLES:
            assert warehouse.published_days(table) == DAYS, table
        for day in DAYS:
            manifest = warehouse.read_manifest("events", day)
            assert manifest is not None and manifest["events"] == 3 * PERSONS, (day, manifest)

        # 2. no lock error anywhere
        assert lock_errors(instance, home, log) == []

        # 3. the limits held, over every run of the instance (the freshness sensor's too)
        intervals = run_intervals(instance, records)
        runs_started, runs_launched = (max_overlap(intervals[k]) for k in ("started", "launched"))
        steps = pool_step_intervals(instance, nightly, POOL_STEPS)
        assert len(steps) == 2 * len(nightly)  # every ingest and events step, each once
        peak_steps = max_overlap(steps)
        pool = instance.event_log_storage.get_concurrency_info(POOL)
        slots = pool.slot_count
        assert pool.claimed_slots == [], pool  # every slot was given back
        blocked = sum(
            BLOCKED_BY_POOL in (e.user_message or "")
            for r in nightly
            for e in instance.all_logs(r.dagster_run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        )
    elapsed = time.monotonic() - started
    print(
        f"\nbackfill of {len(DAYS)} days: {first_s:.0f}s, re-run of {len(failed)}: {rerun_s:.0f}s, test {elapsed:.0f}s; "
        f"runs in progress at once: {runs_launched} from launch ({runs_started} from start), limit {RUN_LIMIT}; "
        f"{POOL} steps at once: {peak_steps}, limit {POOL_LIMIT} (pool slots {slots}); "
        f"steps that waited for a slot: {blocked}"
    )
    assert slots == POOL_LIMIT  # the pool took its limit from dagster.yaml
    assert 2 <= runs_launched <= RUN_LIMIT  # runs did run side by side, never more than the limit
    assert runs_started <= runs_launched
    assert 1 <= peak_steps <= POOL_LIMIT


def test_the_shipped_dagster_yaml_is_a_valid_instance_config(tmp_path: Path) -> None:
    """The limits the backfill relies on, as the installed Dagster reads them from the file."""
    home = new_dagster_home(tmp_path / "home")
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        assert config.run_queue_config is not None
        assert config.run_queue_config.max_concurrent_runs == RUN_LIMIT
        assert {"key": "analytics/models_queue", "limit": 1} in config.run_queue_config.tag_concurrency_limits
        assert config.pool_config.default_pool_limit == POOL_LIMIT
        assert config.pool_config.pool_granularity is not None
        assert config.pool_config.pool_granularity.value == "op"
        # a step process that died without reporting would keep its pool slot for ever
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
    assert INSTANCE["telemetry"] == {"enabled": False}
