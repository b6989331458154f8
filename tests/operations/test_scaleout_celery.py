"""The scale-out profile (deploy/scaleout/) end to end, against the machine's PostgreSQL, RabbitMQ, Redis.

The processes of a multi-machine deployment, started here on one machine with the profile's
files as they are shipped: a code server for ``deploy/scaleout/definitions.py``, the daemon
(queued run coordinator, pools) and two Celery workers, all sharing one ``DAGSTER_HOME``
with ``deploy/scaleout/dagster.yaml`` (run, event log and schedule storage in a fresh
PostgreSQL database) and one data directory (the "shared mount"). A multi-partition
backfill of the whole pipeline goes through it, the way an analyst backfills a range:
``dagster job backfill`` of ``nightly_job`` for several arrival days, then of
``late_window_job`` for the same event dates once every arrival day is in (what
``late_window_sensor`` does in production), then of ``models_job`` (every daily model and
the sketches) for those dates, and ``dagster job launch`` of ``dimensions_job``. Each run is
queued, launched by the daemon, and its steps execute in the Celery workers.

Every file the runs published in the warehouse's tables (ingest, events, every model, the
sketches, the users dimension) must be byte-identical to the embedded default's build of
the same landing files: the same jobs in the same order, in process, on a SQLite instance.
Both durations are printed. The test skips, naming the service, only when PostgreSQL,
RabbitMQ or Redis does not answer; it drops its database and queue and kills its processes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROFILE = PROJECT_ROOT / "deploy" / "scaleout"
BIN = Path(sys.executable).parent
START = date(2025, 5, 1)
PARTITIONS = [(START + timedelta(days=i)).isoformat() for i in range(2)]
EVENTS_PER_DAY = 500
WORKERS = 2
BACKFILLS = ("nightly_job", "late_window_job", "models_job")  # one backfill each, in this order
DIMENSIONS = "dimensions_job"  # unpartitioned: launched once, after the backfills
FRESHNESS_SENSOR = "final_models_freshness_sensor"
RUNS_TIMEOUT_S = 600  # per job; guards against a hung run only
# Dagster processes treat SIGTERM like SIGINT; under a shell that started pytest in the
# background SIGINT is ignored (and stays ignored across exec), so reset it before exec.
DEFAULT_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
]
PROFILE_VARIABLES = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_CELERY_BROKER_URL",
    "DAGSTER_CELERY_BACKEND_URL",
)


def profile_defaults() -> dict[str, str]:
    """The documented loopback values (scaleout.env), overridden by the environment."""
    values: dict[str, str] = {}
    for line in (PROFILE / "scaleout.env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return {name: os.environ.get(name, values[name]) for name in PROFILE_VARIABLES}


def unanswered_service(env: dict[str, str]) -> str | None:
    """The first service of the profile that does not answer, named; None when all do."""
    import psycopg2
    import redis
    from kombu import Connection

    pg = f"{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}"
    try:
        psycopg2.connect(**pg_params(env, "postgres"), connect_timeout=3).close()
    except psycopg2.Error as error:
        return f"PostgreSQL does not answer at {pg}: {str(error).strip()}"
    broker = env["DAGSTER_CELERY_BROKER_URL"]
    try:
        with Connection(broker, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as error:  # kombu raises the transport's own errors
        return f"RabbitMQ does not answer at {broker}: {error}"
    backend = env["DAGSTER_CELERY_BACKEND_URL"]
    if backend.startswith("redis"):
        try:
            redis.Redis.from_url(backend, socket_connect_timeout=3).ping()
        except redis.RedisError as error:
            return f"Redis does not answer at {backend}: {error}"
    return None


def pg_params(env: dict[str, str], dbname: str) -> dict[str, Any]:
    return {
        "host": env["DAGSTER_PG_HOST"],
        "port": int(env["DAGSTER_PG_PORT"]),
        "user": env["DAGSTER_PG_USERNAME"],
        "password": env["DAGSTER_PG_PASSWORD"],
        "dbname": dbname,
    }


@contextmanager
def fresh_database(env: dict[str, str], name: str) -> Iterator[None]:
    import psycopg2

    def admin(sql: str) -> None:
        conn = psycopg2.connect(**pg_params(env, "postgres"), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    admin(f'CREATE DATABASE "{name}"')
    try:
        yield
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def private_queue(broker: str, queue: str) -> Iterator[None]:
    """A queue of this test's own, so no other worker on the broker takes its steps; deleted after."""
    from kombu import Connection

    try:
        yield
    finally:
        with suppress(Exception), Connection(broker, connect_timeout=3) as conn:
            channel = conn.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


@contextmanager
def process_group(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running process in its own process group: SIGTERM to the group, SIGKILL if it lingers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*DEFAULT_SIGINT, *command],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and group_alive(proc.pid):
                with suppress(ChildProcessError):
                    proc.poll()
                time.sleep(0.2)
            if not group_alive(proc.pid):
                break


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    pytest.fail(f"{log.name}: no {text!r} after {timeout_s:.0f}s:\n{tail(log)}")


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def submit(job: str, env: dict[str, str], logs: Path) -> None:
    """``dagster job backfill`` of a partitioned job over PARTITIONS, ``dagster job launch`` otherwise."""
    workspace = ["-w", str(PROFILE / "workspace.yaml"), "-j", job]
    if job in BACKFILLS:
        command = [
            str(BIN / "dagster"),
            "job",
            "backfill",
            *workspace,
            "--partitions",
            ",".join(PARTITIONS),
            "--noprompt",
        ]
    else:
        command = [str(BIN / "dagster"), "job", "launch", *workspace]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    (logs / f"submit-{job}.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert job not in BACKFILLS or "Launched backfill job" in done.stdout, done.stdout


def wait_for_runs(instance: Any, job: str, count: int, logs: Path) -> list[Any]:
    """Every run of ``job`` finished (``count`` of them): all must succeed."""
    from dagster import DagsterRunStatus, RunsFilter

    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    while True:
        runs = instance.get_runs(RunsFilter(job_name=job))
        if len(runs) == count and all(run.status in finished for run in runs):
            break
        if time.monotonic() > deadline:
            statuses = sorted((run.tags.get("dagster/partition", ""), run.status.value) for run in runs)
            pytest.fail(f"{job} runs not finished after {RUNS_TIMEOUT_S}s: {statuses}\n{process_logs(logs)}")
        time.sleep(1)
    for run in runs:
        if run.status != DagsterRunStatus.SUCCESS:
            errors = [
                str(e.dagster_event.event_specific_data)[:2000]
                for e in instance.all_logs(run.run_id)
                if e.dagster_event and e.dagster_event.is_failure
            ]
            pytest.fail(f"{job} {run.tags.get('dagster/partition', '')} {run.status.value}: {errors}")
    return list(reversed(runs))  # oldest first


def run_phases(instance: Any, runs: list[Any]) -> tuple[float, float]:
    """Mean seconds per run from STARTING to START (a run worker process loads the code) and
    from START to SUCCESS (the steps, in the Celery workers)."""
    starting, running = [], []
    for run in runs:
        at = {
            r.dagster_event.event_type_value: r.timestamp
            for r in instance.all_logs(run.run_id)
            if r.dagster_event and r.dagster_event.event_type_value.startswith("PIPELINE_")
        }
        starting.append(at["PIPELINE_START"] - at["PIPELINE_STARTING"])
        running.append(at["PIPELINE_SUCCESS"] - at["PIPELINE_START"])
    return sum(starting) / len(runs), sum(running) / len(runs)


def run_record(instance: Any, run_id: str) -> Any:
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.start_time and record.end_time, run_id
    return record


def process_logs(logs: Path) -> str:
    return "\n".join(f"--- {log.name}\n{tail(log, 1500)}" for log in sorted(logs.glob("*.log")))


def published(data_dir: Path) -> dict[str, str]:
    """sha256 of every file inside the warehouse's table folders, by path under the warehouse.

    Table folders hold only published partitions; staging, kept versions and the publish
    records (times, run ids) live in ``_``-prefixed folders, the catalog beside them.
    """
    from analytics_pipeline.warehouse.storage import file_sha256

    root = data_dir / "warehouse"
    tables = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith("_")]
    return {
        str(f.relative_to(root)): file_sha256(f) for t in tables for f in sorted(t.rglob("*")) if f.is_file()
    }


def embedded_default_build(data_dir: Path, home: Path) -> float:
    """The same runs, in the same order, the embedded default's way: in process, SQLite instance."""
    from dagster import DagsterInstance

    from analytics_pipeline.cli import DAGSTER_YAML
    from analytics_pipeline.definitions import defs
    from analytics_pipeline.settings import PipelineSettings

    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    resources = {"settings": PipelineSettings(data_dir=str(data_dir))}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    runs: list[tuple[str, str | None]] = [(job, day) for job in BACKFILLS for day in PARTITIONS]
    with DagsterInstance.from_config(str(home)) as instance:
        started = time.monotonic()
        for job, day in [*runs, (DIMENSIONS, None)]:
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=day, instance=instance, resources=resources, run_config=quiet
            )
            assert result.success, f"embedded {job} {day}"
        return time.monotonic() - started


def test_scaleout_profile_keeps_the_embedded_limits() -> None:
    """Run queue, models queue and the warehouse_io pool: the same in both instance profiles."""
    import yaml

    embedded = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    scaleout = yaml.safe_load((PROFILE / "dagster.yaml").read_text())
    assert scaleout["concurrency"] == embedded["concurrency"]
    assert scaleout["run_monitoring"] == embedded["run_monitoring"]  # stuck runs and lost slots alike
    assert (
        scaleout["run_coordinator"]["class"] == embedded["run_coordinator"]["class"] == "QueuedRunCoordinator"
    )
    assert set(scaleout["storage"]) == {"postgres"}


@pytest.mark.slow
def test_scaleout_backfill_on_celery_matches_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = profile_defaults()
    missing = unanswered_service(services)
    if missing:
        pytest.skip(missing)
    for name in [k for k in os.environ if k.startswith(("ANALYTICS_", "DAGSTER_"))]:
        monkeypatch.delenv(name)  # the embedded build runs with the settings the workers get

    from dagster import DagsterInstance

    from analytics_pipeline.defs.models import MODELS_QUEUE_TAG
    from analytics_pipeline.sample_data.generator import generate

    token = uuid.uuid4().hex[:10]
    database, queue = f"dagster_test_{token}", f"analytics_test_{token}"
    shared = tmp_path / "shared"  # stands for the shared POSIX mount
    data_dir = shared / "data"
    summary = generate(data_dir / "landing", START, len(PARTITIONS), EVENTS_PER_DAY)
    assert set(PARTITIONS) <= set(summary.days) and summary.late_planted > 0
    for extra in set(summary.days) - set(PARTITIONS):  # the backfill covers PARTITIONS only
        shutil.rmtree(data_dir / "landing" / extra)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROFILE / "dagster.yaml", home / "dagster.yaml")  # the profile, as shipped
    logs = tmp_path / "logs"
    logs.mkdir()
    profile_env = {
        **services,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_DB": database,
        "DAGSTER_CELERY_QUEUE": queue,
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(free_port()),
        "ANALYTICS_DATA_DIR": str(data_dir),
        "DAGSTER_COMPUTE_LOGS_DIR": str(shared / "dagster" / "compute_logs"),
        "DAGSTER_ARTIFACTS_DIR": str(shared / "dagster" / "artifacts"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANALYTICS_", "DAGSTER_"))}
    env.update(profile_env, PYTHONUNBUFFERED="1", DAGSTER_DISABLE_TELEMETRY="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # dagster-celery starts `celery`

    with ExitStack() as stack:
        stack.enter_context(fresh_database(services, database))
        stack.enter_context(private_queue(services["DAGSTER_CELERY_BROKER_URL"], queue))
        for name, value in profile_env.items():
            monkeypatch.setenv(name, value)  # this process reads the same instance
        # create the schema once, before several processes open the new database at once
        instance = stack.enter_context(DagsterInstance.get())
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

        started = time.monotonic()  # every process at once, as on separate machines
        port = profile_env["DAGSTER_CODE_SERVER_PORT"]
        code_server_command = [
            str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", port,
            "-f", str(PROFILE / "definitions.py"), "-d", str(PROJECT_ROOT), "--location-name", "analytics_pipeline",
        ]  # fmt: skip
        code_log = logs / "code-server.log"
        code_server = stack.enter_context(process_group(code_server_command, env, code_log))
        workers = []
        for i in range(WORKERS):
            worker_command = [
                str(BIN / "dagster-celery"), "worker", "start",
                "-A", "dagster_celery.app", "-y", str(PROFILE / "celery.yaml"),
                "-q", queue, "-n", f"scaleout-{i}-{token}",
                "-i", "analytics_pipeline.definitions",  # imported once, before the pool forks
                "--", "--concurrency=1",
            ]  # fmt: skip
            log = logs / f"worker-{i}.log"
            workers.append((stack.enter_context(process_group(worker_command, env, log)), log))
        wait_for_line(code_log, "Started Dagster code proxy server", code_server, 120)
        # The freshness sensor (on by default) would launch a run of its checks at the first tick:
        # not part of the comparison, and it would take a run slot from the backfill.
        stop = [
            str(BIN / "dagster"),
            "sensor",
            "stop",
            FRESHNESS_SENSOR,
            "-w",
            str(PROFILE / "workspace.yaml"),
        ]
        stopped = subprocess.run(stop, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr[-3000:]
        daemon_command = [str(BIN / "dagster-daemon"), "run", "-w", str(PROFILE / "workspace.yaml")]
        stack.enter_context(process_group(daemon_command, env, logs / "daemon.log"))
        for proc, log in workers:
            wait_for_line(log, " ready.", proc, 120)
        ready_s = time.monotonic() - started

        started = time.monotonic()
        runs = []
        for job in BACKFILLS:  # each after the previous one's runs succeeded
            submit(job, env, logs)
            if job == "models_job":  # queued behind the model runs: the models queue keeps the order
                submit(DIMENSIONS, env, logs)
            runs += wait_for_runs(instance, job, len(PARTITIONS), logs)
        runs += wait_for_runs(instance, DIMENSIONS, 1, logs)
        scaleout_s = time.monotonic() - started
        load = os.getloadavg()[0]
        assert instance.get_runs_count() == len(runs) == len(BACKFILLS) * len(PARTITIONS) + 1
        # the models queue (limit 1) ran the model runs one at a time, in the order they were queued
        queue_runs = sorted(
            (run_record(instance, r.run_id) for r in runs if MODELS_QUEUE_TAG in r.tags),
            key=lambda record: record.start_time,
        )
        assert [
            (r.dagster_run.job_name, r.dagster_run.tags.get("dagster/partition")) for r in queue_runs
        ] == [
            *[("models_job", day) for day in PARTITIONS],
            (DIMENSIONS, None),
        ]
        assert all(b.start_time >= a.end_time for a, b in itertools.pairwise(queue_runs)), queue_runs

        # every step ran in one of this test's Celery workers, sent through this test's queue
        hosts: dict[str, int] = {}
        steps = 0
        for run in runs:
            records = instance.all_logs(run.run_id)
            events = [r.dagster_event for r in records if r.dagster_event]
            steps += sum(1 for e in events if e.event_type_value == "STEP_START")
            sent = [e for e in events if e.is_engine_event and f'to queue "{queue}"' in (e.message or "")]
            assert sent, f"{run.job_name} {run.run_id}: no step sent to {queue}"
            for event in events:
                if event.is_engine_event and "in celery worker" in (event.message or ""):
                    host = str(event.engine_event_data.metadata["Celery worker"].value)
                    hosts[host] = hosts.get(host, 0) + 1
        assert steps > len(runs) and sum(hosts.values()) == steps, (steps, hosts)
        assert all(h.startswith("scaleout-") and h.split("@")[0].endswith(token) for h in hosts), hosts
        start_s, steps_s = run_phases(instance, runs)
        # the pool's slots live in PostgreSQL, with the profile's limit, and all were given back
        pool = instance.event_log_storage.get_concurrency_info("warehouse_io")
        assert pool.limit == 2 and pool.active_slot_count == 0 and pool.pending_steps == [], pool

    print(
        f"\nscale-out profile: {len(runs)} runs ({', '.join(BACKFILLS)} x {len(PARTITIONS)} partitions, "
        f"{DIMENSIONS}), {steps} steps, in {scaleout_s:.1f}s on {WORKERS} Celery workers "
        f"{dict(sorted(hosts.items()))} "
        f"(processes ready in {ready_s:.1f}s; per run: {start_s:.1f}s from launch to run worker started, "
        f"{steps_s:.1f}s from there to success; load average {load:.1f} on {os.cpu_count()} cores)"
    )

    for name in profile_env:
        monkeypatch.delenv(name)
    embedded_dir = tmp_path / "embedded"
    shutil.copytree(data_dir / "landing", embedded_dir / "landing")
    embedded_s = embedded_default_build(embedded_dir, tmp_path / "embedded_home")
    print(
        f"embedded default: the same {len(runs)} runs in process in {embedded_s:.1f}s "
        f"(load average {os.getloadavg()[0]:.1f})"
    )

    scaleout_files, embedded_files = published(data_dir), published(embedded_dir)
    assert sorted(scaleout_files) == sorted(embedded_files)
    tables = {f.split("/")[0] for f in scaleout_files}
    assert {"raw_events", "events", "sessions", "retention", "daily_sketches", "users"} <= tables, tables
    for table in tables - {"users"}:  # every daily table has every partition
        assert {f.split("/")[1] for f in scaleout_files if f.startswith(f"{table}/")} >= {
            f"date={day}" for day in PARTITIONS
        }, table
    differ = sorted(f for f in scaleout_files if scaleout_files[f] != embedded_files[f])
    assert differ == [], f"published files differ from the embedded default's: {differ}"
