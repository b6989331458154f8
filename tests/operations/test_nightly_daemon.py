"""One night through the real daemon: the schedule fires, the run-status sensors do the rest.

A temporary ``DAGSTER_HOME`` with the project's ``dagster.yaml`` (run queue, at most 3 runs, the
models queue of 1, the ``warehouse_io`` pool of 2) holds the three previous days, built by
``analytics-pipeline run`` as the demo builds them (days P3, P2, P1). Then the night:

- arrival day Y (the partition of the schedule's latest 02:00 UTC tick) lands with Y's events,
  late events dated P1, and a message dated P2 delivered 6 times (a client stuck in a retry
  loop), which a gate added to this deployment's events suite refuses
  (``events_no_redelivery_storm``: ``deliveries`` at most 5). P3 gets nothing new.
- every sensor is started with ``dagster sensor start --start-all`` and the schedule with
  ``dagster schedule start nightly_schedule``, then ``dagster-daemon run``.

How the schedule fires deterministically: Dagster's scheduler catches up, when it first sees a
running schedule, the cron ticks it missed since the schedule was started (up to
``max_catchup_runs``). The test moves the recorded start of the schedule to one minute before its
latest 02:00 UTC tick: "the schedule was on, the daemon was down at 02:00 and has just started".
The schedule is held (stopped) until the three run-status sensors have had their first tick,
which only sets each one's cursor (runs that ended before it are never seen), then set running:
the daemon evaluates ``nightly_schedule`` itself, at that tick, so the partition (yesterday of
the tick), the run's tags and its launch through the queue are the schedule's own; the
run-status sensors then find the runs through the instance's events, as every night. Nothing of
the pipeline is called by the test; it only reads the instance's records.

The code location is the project's ``Definitions`` with one change: steps run in their run's
process (``in_process_executor``, see ``LOCATION`` in ``test_backfill_daemon.py``) instead of one
new process per step: every process loads the code location (7 s of CPU, 20-40 s on a loaded
2-core machine), and the night is ~20 runs of up to 10 steps. The schedule, sensors, jobs,
assets, checks, pools and queue are the project's.

What the records must show:

- ``nightly_job`` for Y, launched by the schedule, succeeded;
- ``late_window_sensor`` launched ``late_window_job`` for P1 (succeeded) and P2 (failed at the
  planted gate), and nothing for P3 (no new events);
- ``models_sensor`` launched the rebuild plans of the two successful runs and none for the failed
  one; the model runs ran one at a time (the models queue), each plan's runs in the order
  requested, every partition after the planned partitions it reads; nothing that reads events
  of P2 (or of P3) was rebuilt;
- ``metrics_sensor`` launched ``metrics_job`` once per finished plan;
- ``final_models_freshness_sensor`` ran the freshness checks of the five daily final models, each
  passing exactly when the partition due by its deadline had been materialized;
- the concurrency limits held and no lock error was logged.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunRecord,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
)

from analytics_pipeline.defs.models import planned_specs
from analytics_pipeline.quality.gate_status import failed_checks
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import message, signup_day, write_lines
from tests.operations.test_backfill_daemon import (
    BIN,
    DAGSTER,
    POOL_LIMIT,
    PROJECT_ROOT,
    RUN_LIMIT,
    TERMINAL,
    cli_env,
    daemon,
    in_process_workspace,
    lock_errors,
    max_overlap,
    new_dagster_home,
    pool_step_intervals,
    run_intervals,
    runs_of,
    wait_for,
)

NIGHT_TIMEOUT_S = 900  # guards against a hung daemon only; the night takes 3-8 minutes on 2 cores
SCHEDULE_HOUR_UTC = 2  # nightly_schedule: 02:00 UTC, yesterday's partition
STORM_CHECK = "events_no_redelivery_storm"
STORM_DELIVERIES = 6
SPECS = {spec.name: spec for spec in planned_specs}
POOL_STEPS = {spec.name for spec in planned_specs} | {"ingest_arrival_day", "dedupe_events_day"}
FINAL_DAILY_MODELS = ["daily_active_users", "event_counts", "funnels", "retention", "sessions"]
MODEL_JOBS = {"models_job", "dimensions_job"}


def latest_nightly_tick(now: datetime) -> datetime:
    tick = now.replace(hour=SCHEDULE_HOUR_UTC, minute=0, second=0, microsecond=0)
    return tick if tick <= now else tick - timedelta(days=1)


def plant_storm_gate(suites: Path) -> Path:
    """This deployment's suites: the project's, plus one expectation on events (README, "Adding an expectation")."""
    shutil.copytree(PipelineSettings().suites_path, suites)
    events = yaml.safe_load((suites / "events.yml").read_text())
    events["expectations"].append(
        {
            # not expect_column_values_to_be_between: events.yml has one on deliveries already, and
            # GX keeps one expectation per type and column (the suite runner then fails on it)
            "type": "expect_column_max_to_be_between",
            "kwargs": {"column": "deliveries", "max_value": 5},
            "meta": {"check_name": STORM_CHECK},
            "description": "A messageId delivered more than 5 times is a client stuck in a retry loop.",
        }
    )
    (suites / "events.yml").write_text(yaml.safe_dump(events, sort_keys=False))
    return suites


def instigator(instance: DagsterInstance, kind: InstigatorType, name: str) -> InstigatorState:
    (state,) = [s for s in instance.all_instigator_state(instigator_type=kind) if s.instigator_name == name]
    return state


def ticked_after(instance: DagsterInstance, sensor: str, timestamp: float) -> bool:
    """Whether a tick of the sensor that started after ``timestamp`` has finished (its runs are created)."""
    state = instigator(instance, InstigatorType.SENSOR, sensor)
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=3)
    return any(t.timestamp > timestamp and t.status.value != "STARTED" for t in ticks)


def job_runs(records: list[RunRecord], *jobs: str) -> list[RunRecord]:
    return [r for r in records if r.dagster_run.job_name in jobs]


def partition(record: RunRecord) -> str | None:
    return record.dagster_run.tags.get("dagster/partition")


def built(record: RunRecord) -> list[tuple[str, str | None]]:
    """The (model, partition) pairs a model run was asked to build."""
    keys = sorted(k.to_user_string() for k in record.dagster_run.asset_selection or [])
    return [(name, partition(record)) for name in keys]


@pytest.mark.slow
def test_a_night_through_the_daemon(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    tick = latest_nightly_tick(now)
    if timedelta(0) < tick + timedelta(days=1) - now < timedelta(minutes=15):
        pytest.skip("02:00 UTC is less than 15 minutes away: a second schedule tick would join the night")
    y = tick.date() - timedelta(days=1)
    p1, p2, p3 = ((y - timedelta(days=i)).isoformat() for i in (1, 2, 3))
    night = y.isoformat()

    data_dir = tmp_path / "data"
    settings = PipelineSettings(data_dir=str(data_dir))
    suites = plant_storm_gate(tmp_path / "suites")
    home = new_dagster_home(tmp_path / "dagster_home")
    env = cli_env(home, data_dir, ANALYTICS_SUITES_DIR=str(suites))
    workspace = in_process_workspace(tmp_path)
    started = time.monotonic()

    # the three previous days, built as `analytics-pipeline run` builds them (runs in process)
    for day in (p3, p2, p1):
        write_lines(settings, day, "part-000.jsonl", signup_day(day))
    done = subprocess.run(
        [str(BIN / "analytics-pipeline"), "run", "--start", p3, "--end", p1],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    warehouse = Warehouse(settings.warehouse_path)
    assert warehouse.published_days("events") == [p3, p2, p1]
    events_before = {d: warehouse.partition_file("events", d).read_bytes() for d in (p3, p2, p1)}
    prior_s = time.monotonic() - started

    # the night's arrival day: Y's events, late events of P1, a retry storm dated P2, nothing for P3
    late = [
        message(messageId=f"late-{i}", anonymousId="anon-7", timestamp=f"{p1}T23:0{i}:00Z",
                receivedAt=f"{night}T00:1{i}:00Z")
        for i in range(3)
    ]  # fmt: skip
    storm = message(messageId="storm-1", anonymousId="anon-8", timestamp=f"{p2}T22:00:00Z",
                    receivedAt=f"{night}T00:20:00Z")  # fmt: skip
    write_lines(settings, night, "part-000.jsonl", signup_day(night) + late)
    write_lines(settings, night, "retries.jsonl", [storm] * STORM_DELIVERIES)

    # turn automation on as a user does (README, "Schedule"), while no daemon runs
    starts = [
        subprocess.Popen([str(DAGSTER), *args, "-w", str(workspace)], cwd=PROJECT_ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for args in (["sensor", "start", "--start-all"], ["schedule", "start", "nightly_schedule"])
    ]  # fmt: skip
    for proc in starts:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]

    with DagsterInstance.from_config(str(home)) as instance:
        sensors = {
            s.instigator_name: s.status.value
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        }
        assert {
            n: sensors.get(n) for n in ("late_window_sensor", "models_sensor", "metrics_sensor")
        } == dict.fromkeys(("late_window_sensor", "models_sensor", "metrics_sensor"), "RUNNING")
        # the schedule was on before its latest tick: the daemon owes that tick and fires it when it
        # sees the schedule. Held (stopped) until the run-status sensors have had their first tick:
        # a run-status sensor's first tick only sets its cursor, so a run that ended before it is
        # never seen (the previous days' runs must not be, the night's must).
        schedule = instigator(instance, InstigatorType.SCHEDULE, "nightly_schedule")
        data = schedule.instigator_data
        assert (
            isinstance(data, ScheduleInstigatorData) and data.cron_schedule == f"0 {SCHEDULE_HOUR_UTC} * * *"
        )
        owed = schedule.with_data(
            ScheduleInstigatorData(cron_schedule=data.cron_schedule, start_timestamp=tick.timestamp() - 60)
        )
        instance.update_instigator_state(owed.with_status(InstigatorStatus.STOPPED))
        runs_before = {r.run_id for r in instance.get_runs()}  # the previous days' in-process runs

        def night_runs() -> list[RunRecord]:
            return [r for r in runs_of(instance) if r.dagster_run.run_id not in runs_before]

        def night_done() -> bool:
            records = night_runs()
            if not job_runs(records, "nightly_job") or any(
                r.dagster_run.status not in TERMINAL for r in records
            ):
                return False
            if not [
                r
                for r in records
                if r.dagster_run.tags.get("dagster/sensor_name") == "final_models_freshness_sensor"
            ]:
                return False

            def settled(sensor: str, *jobs: str) -> bool:  # the sensor has seen every run of those jobs end
                ends = [r.end_time for r in job_runs(records, *jobs) if r.end_time]
                return not ends or ticked_after(instance, sensor, max(ends))

            return (
                settled("late_window_sensor", "nightly_job")
                and settled("models_sensor", "nightly_job", "late_window_job")
                and settled("metrics_sensor", "dimensions_job")
            )

        def state() -> list[str]:
            return [
                f"{r.dagster_run.job_name} {partition(r) or ''} {r.dagster_run.status.value}"
                for r in night_runs()
            ]

        log = tmp_path / "daemon.log"
        daemon_started = time.time()
        run_status_sensors = ("late_window_sensor", "models_sensor", "metrics_sensor")
        with daemon(env, log, workspace) as proc:
            wait_for(
                "the run-status sensors' first ticks",
                lambda: all(ticked_after(instance, s, daemon_started) for s in run_status_sensors),
                NIGHT_TIMEOUT_S, proc, log, state,
            )  # fmt: skip
            instance.update_instigator_state(owed.with_status(InstigatorStatus.RUNNING))
            night_s = wait_for("the night", night_done, NIGHT_TIMEOUT_S, proc, log, state)
        records = night_runs()
        print(f"\nprevious days {prior_s:.0f}s, night {night_s:.0f}s, test {time.monotonic() - started:.0f}s")
        t0 = min(r.create_timestamp.timestamp() for r in records)
        for r in records:
            print(f"  {(r.start_time or t0) - t0:>6.1f}s..{(r.end_time or t0) - t0:>6.1f}s "
                  f"{r.dagster_run.job_name:<16} {partition(r) or '':<10} {r.dagster_run.status.value:<8} "
                  f"{r.dagster_run.run_id[:8]} {r.dagster_run.tags.get('dagster/run_key', '')}")  # fmt: skip

        # --- the schedule: one nightly_job run, for Y ---------------------------------------------
        (nightly,) = job_runs(records, "nightly_job")
        assert nightly.dagster_run.tags.get("dagster/schedule_name") == "nightly_schedule"
        assert partition(nightly) == night
        assert nightly.dagster_run.status == DagsterRunStatus.SUCCESS

        # --- the late window: P1 and P2 rebuilt (P2 refused by its gate), nothing for P3 ---------
        late_runs = {partition(r): r for r in job_runs(records, "late_window_job")}
        assert sorted(late_runs) == [p2, p1]
        assert {r.dagster_run.tags.get("dagster/sensor_name") for r in late_runs.values()} == {
            "late_window_sensor"
        }
        assert late_runs[p1].dagster_run.status == DagsterRunStatus.SUCCESS
        assert late_runs[p2].dagster_run.status == DagsterRunStatus.FAILURE
        assert failed_checks(warehouse, "events", p2) == [STORM_CHECK]
        failed_evaluations = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(
                late_runs[p2].dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            )
            if e.dagster_event and not e.dagster_event.event_specific_data.passed
        ]
        assert [(e.asset_key.to_user_string(), e.check_name) for e in failed_evaluations] == [
            ("events", STORM_CHECK)
        ]
        assert (
            warehouse.partition_file("events", p2).read_bytes() == events_before[p2]
        )  # the previous version stays
        assert warehouse.partition_file("events", p3).read_bytes() == events_before[p3]  # untouched
        assert (
            warehouse.partition_file("events", p1).read_bytes() != events_before[p1]
        )  # the late events are in

        # --- the models: the plans of the two successful runs, one run at a time, in order ------
        model_runs = job_runs(records, *MODEL_JOBS)
        assert model_runs and all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in model_runs), (
            state()
        )
        assert {r.dagster_run.tags.get("dagster/sensor_name") for r in model_runs} == {"models_sensor"}
        plans: dict[str, list[tuple[int, RunRecord]]] = {}
        for r in model_runs:
            _, trigger, position = r.dagster_run.tags["dagster/run_key"].split(":")
            plans.setdefault(trigger, []).append((int(position), r))
        # a plan for the nightly run and one for the late P1 run; none for the failed P2 run
        assert set(plans) == {nightly.dagster_run.run_id, late_runs[p1].dagster_run.run_id}
        intervals = run_intervals(instance, model_runs)["launched"]
        assert max_overlap(intervals) == 1  # the models queue: one model run at a time
        for trigger, runs in plans.items():
            by_start = [r for _, r in sorted(runs, key=lambda pr: pr[1].start_time or 0)]
            assert [p for p, _ in sorted(runs, key=lambda pr: pr[1].start_time or 0)] == list(
                range(len(runs))
            )
            assert by_start[-1].dagster_run.job_name == "dimensions_job"  # a plan ends with the dimensions
            position = {pair: i for i, r in enumerate(by_start) for pair in built(r)}
            for (name, day), here in position.items():
                for upstream, window in SPECS[name].upstreams.items():
                    for (other, other_day), there in position.items():
                        if other != upstream or (other, other_day) == (name, day):
                            continue
                        if day is None or other_day is None or window.latest or other_day in window.days(day):
                            assert there <= here, (
                                f"plan of {trigger}: {name} {day} ran before {other} {other_day}"
                            )
        rebuilt = {pair for r in model_runs for pair in built(r)}
        # what reads the new events was rebuilt: Y and P1's first models
        assert {
            ("identities", night),
            ("person_events", night),
            ("identities", p1),
            ("person_events", p1),
        } <= rebuilt
        assert {(m, night) for m in FINAL_DAILY_MODELS} <= rebuilt
        # nothing that reads events of P2 (failed gate) or P3 (no new data), nor what reads only those
        untouched = {(m, d) for d in (p2, p3) for m in
                     ("identities", "person_events", "persons", "daily_active_users", "event_counts", "daily_sketches")}  # fmt: skip
        assert rebuilt & untouched == set()

        # --- the metrics: once per finished plan ------------------------------------------------
        metrics_runs = job_runs(records, "metrics_job")
        dimensions = [r for r in model_runs if r.dagster_run.job_name == "dimensions_job"]
        assert len(metrics_runs) == len(dimensions) == 2
        assert {r.dagster_run.tags.get("dagster/sensor_name") for r in metrics_runs} == {"metrics_sensor"}
        # in the models queue, so never half-way through the other plan: the golden queries' blocking
        # invariants (DAU <= WAU <= MAU, event_counts = events rows ...) held both times
        assert all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in metrics_runs), state()
        assert max_overlap(run_intervals(instance, model_runs + metrics_runs)["launched"]) == 1

        # --- freshness: the checks ran, each passing exactly when its due partition existed -----
        (freshness_run,) = [
            r
            for r in records
            if r.dagster_run.tags.get("dagster/sensor_name") == "final_models_freshness_sensor"
        ]
        assert freshness_run.dagster_run.status == DagsterRunStatus.SUCCESS
        evaluations = [
            (e.timestamp, e.dagster_event.event_specific_data)
            for e in instance.all_logs(
                freshness_run.dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            )
            if e.dagster_event
        ]
        assert sorted((ev.asset_key.to_user_string(), ev.check_name) for _, ev in evaluations) == [
            (m, "freshness_check") for m in FINAL_DAILY_MODELS
        ]
        for at, ev in evaluations:
            deadline = ev.metadata["dagster/latest_cron_tick_timestamp"].value
            due = (datetime.fromtimestamp(deadline, UTC).date() - timedelta(days=1)).isoformat()
            existed = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=ev.asset_key, asset_partitions=[due], before_timestamp=at),
                limit=1,
            ).records
            assert ev.passed == bool(existed), (ev.asset_key, due, ev.description)
            print(
                f"  freshness_check {ev.asset_key.to_user_string()}: due {due}, passed {ev.passed}: {ev.description}"
            )

        # --- the limits held, nothing logged a lock error ----------------------------------------
        all_intervals = run_intervals(instance, records)
        assert max_overlap(all_intervals["launched"]) <= RUN_LIMIT
        assert max_overlap(pool_step_intervals(instance, records, POOL_STEPS)) <= POOL_LIMIT
        assert lock_errors(instance, home, log) == []
