"""``models_sensor`` evaluated as the sensor daemon evaluates it, after real runs of the event jobs.

The jobs run in process against a throwaway instance; each tick is
``models_sensor.evaluate_tick`` on a sensor context with a cursor, so the sensor finds the
runs through the instance's run-status events (monitored jobs only, each run once) and its
requests are resolved against the definitions (job names, partition keys, tags), as the
daemon does before it launches them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    build_sensor_context,
    materialize,
)

from analytics_pipeline.cli import DAGSTER_YAML
from analytics_pipeline.defs import events, ingest, metrics, models, quality
from analytics_pipeline.defs.models import MODELS_QUEUE_TAG, model_asset, models_sensor, planned_specs
from analytics_pipeline.rollout import flag_plan
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import message, signup_day, write_lines

D1, D2 = "2025-01-10", "2025-01-11"
SPECS = {spec.name: spec for spec in planned_specs}

ALL_DAILY = ["identities", "person_events", "persons", "daily_active_users", "event_counts", "funnels",
             "sessions", "person_sessions", "retention", "daily_sketches"]  # fmt: skip


def _day(day: str, extra: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Six persons signing up (sign-ups without properties), plus ``extra``."""
    return signup_day(day, signed_up_properties={}) + list(extra)


class Daemon:
    """What the sensor daemon does for models_sensor: ticks with a cursor, and launches requests."""

    def __init__(self, settings: PipelineSettings, instance: DagsterInstance) -> None:
        self.settings, self.instance = settings, instance
        # the project's definitions, as definitions.py merges them, with this test's settings
        self.defs = Definitions.merge(
            ingest.defs,
            events.defs,
            models.defs,
            metrics.defs,
            quality.defs,
            Definitions(resources={"settings": settings}),
        )
        self.cursor: str | None = None
        first = self.tick_data()  # the first tick only sets the cursor (to "nothing seen yet")
        assert first.skip_message and first.skip_message.startswith("Initiating models_sensor")

    def tick_data(self) -> Any:
        # no repository name: the daemon matches a run to the sensor by code location, and
        # runs executed in process have none, like this context
        context = build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.defs,
            resources={"settings": self.settings},
        )  # fmt: skip
        data = models_sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data

    def tick(self) -> list[RunRequest]:
        return list(self.tick_data().run_requests or [])

    def run(self, job: str, partition: str | None = None, **kwargs: Any) -> Any:
        result = self.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition, instance=self.instance, raise_on_error=False, **kwargs
        )
        assert result.success, job
        return result

    def launch(self, request: RunRequest) -> Any:
        """Run a request as the daemon would: its job, partition, selection and tags."""
        assert request.job_name
        return self.run(
            request.job_name,
            request.partition_key,
            asset_selection=request.asset_selection,
            tags=request.tags,
        )

    def launched_tags(self, request: RunRequest) -> dict[str, str]:
        """The tags a launched run carries: the job's run tags, then the request's (the daemon's merge)."""
        assert request.job_name
        return {**self.defs.resolve_job_def(request.job_name).run_tags, **request.tags}


def _plan(requests: list[RunRequest]) -> list[tuple[str | None, str | None, list[str]]]:
    return [
        (r.job_name, r.partition_key, [k.to_user_string() for k in r.asset_selection or []]) for r in requests
    ]


def _assert_dependency_order(requests: list[RunRequest]) -> None:
    """Every requested model partition comes after every requested partition it reads."""
    position = {
        (key.to_user_string(), r.partition_key): (i, j)
        for i, r in enumerate(requests)
        for j, key in enumerate(r.asset_selection or [])
    }
    for (name, day), here in position.items():
        for upstream, window in SPECS[name].upstreams.items():
            for (other, other_day), there in position.items():
                if other != upstream or (other, other_day) == (name, day):
                    continue
                if day is None or other_day is None or window.latest or other_day in window.days(day):
                    assert there < here, (
                        f"{name} {day} is requested before {other} {other_day}, which it reads"
                    )


def _assert_requests_of(daemon: Daemon, requests: list[RunRequest], trigger: Any) -> None:
    _assert_dependency_order(requests)
    keys = [r.run_key for r in requests]
    assert keys == [f"models:{trigger.run_id}:{i}" for i in range(len(requests))]  # once per triggering run
    for request in requests:
        tags = daemon.launched_tags(request)
        assert tags[MODELS_QUEUE_TAG] == "serial"  # the instance queues these one at a time
        assert tags["dagster/sensor_name"] == "models_sensor"
        assert tags.get("dagster/partition") == request.partition_key


@pytest.fixture
def daemon(settings: PipelineSettings, dagster_instance: DagsterInstance) -> Daemon:
    write_lines(settings, D1, "a.jsonl", _day(D1))
    late = message(messageId="late-1", anonymousId="anon-9", timestamp=f"{D1}T23:00:00Z",
                   receivedAt=f"{D2}T00:10:00Z")  # fmt: skip
    write_lines(settings, D2, "a.jsonl", _day(D2, [late]))  # holds a late event of D1
    return Daemon(settings, dagster_instance)


def test_models_sensor_requests_after_the_nightly_and_late_window_runs(daemon: Daemon) -> None:
    nightly = daemon.run("nightly_job", D1)
    requests = daemon.tick()
    assert _plan(requests) == [("models_job", D1, ALL_DAILY), ("dimensions_job", None, ["users"])]
    _assert_requests_of(daemon, requests, nightly.dagster_run)
    assert daemon.tick() == []  # a run is seen once

    nightly = daemon.run("nightly_job", D2)
    requests = daemon.tick()
    # windows reach forward too: sessions/funnels/retention of D1 read person_events of D2
    assert _plan(requests) == [
        ("models_job", D2, ["identities", "person_events"]),
        ("models_job", D1, ["funnels", "sessions", "person_sessions", "retention"]),
        ("models_job", D2, ["persons", "daily_active_users", "event_counts", "funnels", "sessions",
                            "person_sessions", "retention", "daily_sketches"]),
        ("dimensions_job", None, ["users"]),
    ]  # fmt: skip
    _assert_requests_of(daemon, requests, nightly.dagster_run)

    late = daemon.run("late_window_job", D1)  # the late event of D1 that arrived on D2
    requests = daemon.tick()
    # events of D1 changed: every partition of D1 and the snapshots chained after it
    assert _plan(requests) == [
        ("models_job", D1, ["identities", "person_events", "persons", "daily_active_users", "event_counts",
                            "daily_sketches"]),
        ("models_job", D2, ["identities", "person_events"]),
        ("models_job", D1, ["funnels", "sessions", "person_sessions", "retention"]),
        ("models_job", D2, ["persons", "daily_active_users", "event_counts", "funnels", "sessions",
                            "person_sessions", "retention", "daily_sketches"]),
        ("dimensions_job", None, ["users"]),
    ]  # fmt: skip
    _assert_requests_of(daemon, requests, late.dagster_run)


def test_launched_runs_queue_and_a_failed_gate_holds_back_the_partitions_reading_it(daemon: Daemon) -> None:
    daemon.run("nightly_job", D1)
    model_runs = set()
    for request in daemon.tick():
        launched = daemon.launch(request)
        assert launched.dagster_run.job_name == request.job_name
        assert launched.dagster_run.tags[MODELS_QUEUE_TAG] == "serial"
        model_runs.add(launched.run_id)
    published = Warehouse(daemon.settings.warehouse_path).published_version("sessions", D1)
    assert published is not None and published.run_id in model_runs  # the record names its run
    assert daemon.tick() == []  # model runs are not monitored: no loop
    # the queue the tag joins is the one the CLI's dagster.yaml limits to one run at a time
    limits = yaml.safe_load(DAGSTER_YAML)["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": MODELS_QUEUE_TAG, "limit": 1} in limits

    # plant a failed blocking gate on sessions[D1], as tests/quality/test_quality_gates.py does
    spec = SPECS["sessions"]
    duplicated = f"SELECT * FROM ({spec.sql}) UNION ALL SELECT * FROM (SELECT * FROM ({spec.sql}) LIMIT 1)"
    planted = materialize(
        [model_asset(dataclasses.replace(spec, sql=duplicated))], partition_key=D1,
        resources={"settings": daemon.settings}, instance=daemon.instance, raise_on_error=False,
    )  # fmt: skip
    assert not planted.success
    assert [e.check_name for e in planted.get_asset_check_evaluations() if not e.passed] == [
        "session_id__be_unique"
    ]
    assert Warehouse(daemon.settings.warehouse_path).published_days("sessions") == [D1]  # kept version
    kept = Warehouse(daemon.settings.warehouse_path).published_version("sessions", D1)
    assert kept is not None and kept.run_id == published.run_id != planted.run_id

    late = daemon.run("late_window_job", D1)
    requests = daemon.tick()
    # person_sessions[D1] reads sessions[D1]: left out; sessions[D1] itself is rebuilt (that may fix it)
    assert _plan(requests) == [
        ("models_job", D1, [m for m in ALL_DAILY if m != "person_sessions"]),
        ("dimensions_job", None, ["users"]),  # reads the latest person_sessions, whose gate passed
    ]
    _assert_requests_of(daemon, requests, late.dagster_run)


def test_a_flag_change_is_rebuilt_by_the_next_nights_model_runs(
    settings: PipelineSettings, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    flags_file = tmp_path / "flags.yml"
    flag = "flags:\n  gap_2m:\n    description: Two minutes.\n    model: sessions\n"
    flag += "    parameters: {session_gap_seconds: 120}\n    enabled: %s\n"
    flags_file.write_text(flag % "false")
    settings = settings.replace(flags_file=str(flags_file))
    write_lines(settings, D1, "a.jsonl", _day(D1))
    write_lines(settings, D2, "a.jsonl", _day(D2))
    daemon = Daemon(settings, dagster_instance)
    daemon.run("nightly_job", D1)
    for request in daemon.tick():
        daemon.launch(request)
    assert daemon.tick() == []

    flags_file.write_text(flag % f"{{from: {D1}, to: {D1}}}")  # sessions of D1 is now out of date
    nightly = daemon.run("nightly_job", D2)
    requests = daemon.tick()
    flagged = [r for r in requests if r.run_key and r.run_key.startswith("flags:")]
    # after the night's plan: sessions[D1] with the flag, then what reads it
    assert requests[-len(flagged) :] == flagged
    assert _plan(flagged)[0] == ("models_job", D1, ["sessions"])
    assert ("dimensions_job", None, ["users"]) in _plan(flagged)
    assert all(r.run_key == f"flags:{nightly.run_id}:{i}" for i, r in enumerate(flagged))
    for request in requests:
        daemon.launch(request)
    manifest = Warehouse(settings.warehouse_path).read_manifest("sessions", D1)
    assert manifest is not None and manifest["flags"] == {
        "gap_2m": {"parameters": {"session_gap_seconds": 120}}
    }
    assert flag_plan(settings) == ([], [])  # up to date now: the next night plans nothing for flags
