"""Every drill passes at small size on the real pipeline; a drill fails when its promise is broken.

The drills share one generated sandbox per worker (two days of 200 events, run through
``nightly_job``); each test copies it, so the drills cannot see each other's faults.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import DefaultScheduleStatus, build_schedule_context

from analytics_pipeline.drills import DRILLS, Drill, Sandbox, make_sandbox, run_drill
from analytics_pipeline.drills.runner import Probe
from analytics_pipeline.drills.scenarios import disk_full
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.tables import RAW_EVENTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    sandbox = make_sandbox(tmp_path_factory.mktemp("drills") / "base")
    sandbox.close()
    return sandbox


def run(base: Sandbox, tmp_path: Path, drill: Drill, **kwargs: object) -> tuple[bool, float | None, str]:
    sandbox = base.copy(tmp_path / drill.name)
    lines: list[str] = []
    try:
        result = run_drill(drill, sandbox, lines.append, **kwargs)  # type: ignore[arg-type]
    finally:
        sandbox.close()
    return result.passed, result.recovery_s, "\n".join(lines)


# redelivery runs through drills_job below; the others here
@pytest.mark.parametrize("name", [name for name in DRILLS if name != "redelivery"])
def test_drill_passes(base: Sandbox, tmp_path: Path, name: str) -> None:
    passed, recovery_s, output = run(base, tmp_path, DRILLS[name])
    assert passed, output
    assert recovery_s is not None and recovery_s > 0, output


def test_disk_full_drill_with_enospc_injected(base: Sandbox, tmp_path: Path) -> None:
    """The fallback where no small file system can be mounted: ENOSPC raised by the warehouse's writes."""
    drill = Drill("disk-full", DRILLS["disk-full"].promise, functools.partial(disk_full, mode="inject"))
    passed, _, output = run(base, tmp_path, drill)
    assert passed, output
    assert "OSError(ENOSPC) injected" in output


def test_redelivery_drill_fails_when_dedupe_is_bypassed(base: Sandbox, tmp_path: Path) -> None:
    """raw_events published as if the re-delivered files had been parsed again: the drill must fail."""
    day = base.days[-1]

    def parse_again(sandbox: Sandbox) -> None:
        target = sandbox.warehouse.partition_file(RAW_EVENTS, day)
        doubled = target.with_name("doubled.parquet.tmp")
        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{target}') UNION ALL SELECT * FROM read_parquet('{target}')) "
            f"TO '{doubled}' (FORMAT parquet)"
        )
        con.close()
        os.replace(doubled, target)

    passed, _, output = run(base, tmp_path, DRILLS["redelivery"], after_recovery=parse_again)
    assert not passed
    assert f"FAIL raw_events {day}: same rows as before" in output
    assert "FAIL counts reconcile" in output
    assert f"ok   events {day}: same rows as before" in output  # only what was broken is reported


def test_a_drill_that_checks_nothing_or_stops_early_fails(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path, PipelineSettings(data_dir=str(tmp_path)), ["2025-01-01", "2025-01-02"])

    def silent(sb: Sandbox, probe: Probe) -> None:
        probe.fault("nothing")
        probe.recovered("nothing")

    def stops(sb: Sandbox, probe: Probe) -> None:
        probe.fault("something")
        probe.check(True, "a check before the recovery")

    def raises(sb: Sandbox, probe: Probe) -> None:
        raise RuntimeError("boom")

    verdicts = {
        f.__name__: run_drill(Drill(f.__name__, "-", f), sandbox, lambda line: None)
        for f in (silent, stops, raises)
    }
    assert not any(result.passed for result in verdicts.values())
    assert "made no check" not in verdicts["stops"].evidence
    assert verdicts["stops"].recovery_s is None
    assert any("RuntimeError: boom" in line for line in verdicts["raises"].evidence)


def test_redelivery_drill_through_drills_job(tmp_path: Path) -> None:
    """What the weekly schedule launches: the op runs the drill on its own sandbox and reports it."""
    from dagster import DagsterInstance

    from analytics_pipeline.definitions import defs

    job = defs.resolve_job_def("drills_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"run_drill": {"config": {"drill": "redelivery"}}}},
            instance=instance,
            resources={"settings": PipelineSettings(data_dir=str(tmp_path / "unused"))},
            raise_on_error=False,
        )
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata
    assert metadata["redelivery_passed"].value is True
    assert float(metadata["redelivery_recovery_s"].value) > 0  # type: ignore[arg-type]
    assert "duplicate_file" in str(metadata["redelivery_evidence"].value)
    assert not (tmp_path / "unused").exists()  # the deployment's data directory is never touched


def test_unknown_drill_fails_the_run() -> None:
    from dagster import DagsterInstance

    from analytics_pipeline.definitions import defs

    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("drills_job").execute_in_process(
            run_config={"ops": {"run_drill": {"config": {"drill": "no-such-drill"}}}},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and "no drill named 'no-such-drill'" in error.message


def test_weekly_drill_schedule_is_off_by_default_and_names_its_drill() -> None:
    from analytics_pipeline.definitions import defs
    from analytics_pipeline.defs.resources import settings

    schedule = defs.resolve_schedule_def("weekly_drill_schedule")
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "drills_job"
    requests = schedule.evaluate_tick(build_schedule_context()).run_requests or []
    assert len(requests) == 1
    assert requests[0].run_config["ops"]["run_drill"]["config"]["drill"] == settings.weekly_drill
    assert requests[0].tags["analytics/drill"] == settings.weekly_drill


def test_weekly_drill_is_chosen_by_the_setting() -> None:
    code = (
        "from dagster import build_schedule_context; "
        "from analytics_pipeline.defs.drills import weekly_drill_schedule as s; "
        "(request,) = s.evaluate_tick(build_schedule_context()).run_requests; "
        "print(request.run_config['ops']['run_drill']['config']['drill'])"
    )
    env = {**os.environ, "ANALYTICS_WEEKLY_DRILL": "late-data"}
    chosen = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert chosen.stdout.strip().endswith("late-data")
    env["ANALYTICS_WEEKLY_DRILL"] = "late-dat"
    wrong = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert wrong.returncode != 0
    assert "ANALYTICS_WEEKLY_DRILL: no drill named 'late-dat'" in wrong.stderr
