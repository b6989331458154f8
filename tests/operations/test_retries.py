"""Steps retry transient errors (``defs/retries.py``), and a failed gate is never retried.

The project's own jobs and asset factories run in process against a throwaway instance; what
happened is read back from the run's event log, as the UI shows it: a transient ``OSError`` is
followed by ``STEP_UP_FOR_RETRY`` and ``STEP_RESTARTED`` and the step succeeds on its second
attempt; a failed blocking gate (``Failure(allow_retries=False)`` in ``defs/checks.py``) gives one
``STEP_START`` and one ``STEP_FAILURE``, although the same step carries the retry policy.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from dagster import (
    AssetsDefinition,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    EventLogEntry,
    materialize,
)

from analytics_pipeline.definitions import defs as project_defs
from analytics_pipeline.defs import events as events_defs
from analytics_pipeline.defs import ingest as ingest_defs
from analytics_pipeline.defs.models import model_asset, planned_specs
from analytics_pipeline.defs.retries import STEP_RETRY_POLICY
from analytics_pipeline.events import dedupe
from analytics_pipeline.ingest import arrival_day
from analytics_pipeline.models.build import build_model
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import signup_day, write_lines

D1 = "2025-01-10"
SPECS = {spec.name: spec for spec in planned_specs}
# the longest a first retry may wait: delay * (2**1 - 1), plus the jitter of +- delay
FIRST_RETRY_MAX_WAIT_S = 2 * (STEP_RETRY_POLICY.delay or 0)


def fails_once(real: Callable[..., Any], error: Exception) -> Callable[..., Any]:
    """``real``, except that its first call raises ``error`` (a transient fault), then it works."""
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return real(*args, **kwargs)

    return flaky


def step_events(instance: DagsterInstance, run_id: str, step: str) -> list[EventLogEntry]:
    return [e for e in instance.all_logs(run_id) if e.step_key == step and e.dagster_event is not None]


def kinds(entries: list[EventLogEntry]) -> Counter[DagsterEventType]:
    return Counter(e.dagster_event.event_type for e in entries if e.dagster_event is not None)


def run_defs(settings: PipelineSettings) -> Definitions:
    """The project's definitions with this test's settings resource."""
    return Definitions.merge(
        ingest_defs.defs, events_defs.defs, Definitions(resources={"settings": settings})
    )


def test_every_step_has_the_one_retry_policy() -> None:
    steps = {
        a.node_def.name: a.node_def.retry_policy
        for a in project_defs.assets or []
        if isinstance(a, AssetsDefinition)
    }
    assert {"ingest_arrival_day", "dedupe_events_day", "sessions", "daily_sketches", "metric_definitions",
            "metrics_cache", "golden_queries"} <= set(steps)  # fmt: skip
    assert {name for name, policy in steps.items() if policy is not STEP_RETRY_POLICY} == set()
    assert STEP_RETRY_POLICY.max_retries == 2 and STEP_RETRY_POLICY.backoff is not None


def test_a_transient_error_is_retried_and_the_step_succeeds(
    settings: PipelineSettings, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lines(settings, D1, "a.jsonl", signup_day(D1))
    # both steps of nightly_job meet a flaky file system once: an I/O error, then it works
    monkeypatch.setattr(
        arrival_day, "ingest_arrival_day",
        fails_once(arrival_day.ingest_arrival_day, OSError(5, "Input/output error (simulated NFS hiccup)")),
    )  # fmt: skip
    monkeypatch.setattr(
        dedupe, "dedupe_events_day",
        fails_once(dedupe.dedupe_events_day, OSError(116, "Stale file handle (simulated)")),
    )  # fmt: skip
    result = (
        run_defs(settings)
        .resolve_job_def("nightly_job")
        .execute_in_process(partition_key=D1, instance=dagster_instance, raise_on_error=False)
    )
    assert result.success
    run_id = result.run_id
    for step, error in (
        ("ingest_arrival_day", "Input/output error"),
        ("dedupe_events_day", "Stale file handle"),
    ):
        entries = step_events(dagster_instance, run_id, step)
        seen = kinds(entries)
        assert seen[DagsterEventType.STEP_UP_FOR_RETRY] == 1, seen
        assert seen[DagsterEventType.STEP_RESTARTED] == 1, seen
        assert seen[DagsterEventType.STEP_SUCCESS] == 1, seen
        assert seen[DagsterEventType.STEP_FAILURE] == 0, seen
        retry = next(e for e in entries if e.dagster_event.event_type == DagsterEventType.STEP_UP_FOR_RETRY)
        data = retry.dagster_event.event_specific_data
        assert "OSError" in str(data.error.cause or data.error) and error in str(data.error.cause), data.error
        assert 0 <= data.seconds_to_wait <= FIRST_RETRY_MAX_WAIT_S  # the policy's first backoff
        restarted = next(e for e in entries if e.dagster_event.event_type == DagsterEventType.STEP_RESTARTED)
        assert restarted.timestamp >= retry.timestamp + data.seconds_to_wait - 0.5  # it waited
    warehouse = Warehouse(settings.warehouse_path)
    for table in ("raw_events", "quarantined_events", "file_ledger", "events", "event_id_conflicts"):
        assert warehouse.published_days(table) == [D1], table


def test_a_model_step_retries_a_transient_error(
    settings: PipelineSettings, dagster_instance: DagsterInstance
) -> None:
    write_lines(settings, D1, "a.jsonl", signup_day(D1))
    assert (
        run_defs(settings)
        .resolve_job_def("nightly_job")
        .execute_in_process(partition_key=D1, instance=dagster_instance)
        .success
    )
    # the project's model asset factory, with a builder whose first call hits an I/O error
    flaky = model_asset(
        SPECS["identities"], build=fails_once(build_model, OSError(28, "No space left on device"))
    )
    result = materialize(
        [flaky], partition_key=D1, instance=dagster_instance, resources={"settings": settings},
        raise_on_error=False,
    )  # fmt: skip
    assert result.success
    seen = kinds(step_events(dagster_instance, result.run_id, "identities"))
    assert (seen[DagsterEventType.STEP_UP_FOR_RETRY], seen[DagsterEventType.STEP_SUCCESS]) == (1, 1), seen
    assert Warehouse(settings.warehouse_path).published_days("identities") == [D1]


def test_a_failed_gate_is_not_retried(settings: PipelineSettings, dagster_instance: DagsterInstance) -> None:
    write_lines(settings, D1, "a.jsonl", signup_day(D1))
    assert (
        run_defs(settings)
        .resolve_job_def("nightly_job")
        .execute_in_process(partition_key=D1, instance=dagster_instance)
        .success
    )
    upstream = [model_asset(SPECS[name]) for name in ("identities", "person_events")]
    assert materialize(
        upstream, partition_key=D1, instance=dagster_instance, resources={"settings": settings}
    ).success
    # plant a fault a real gate catches: sessions with one session_id twice (tests/quality's way)
    spec = SPECS["sessions"]
    duplicated = f"SELECT * FROM ({spec.sql}) UNION ALL SELECT * FROM (SELECT * FROM ({spec.sql}) LIMIT 1)"
    faulty = model_asset(dataclasses.replace(spec, sql=duplicated))
    assert faulty.node_def.retry_policy is STEP_RETRY_POLICY  # the step would retry any other error
    result = materialize(
        [faulty], partition_key=D1, instance=dagster_instance, resources={"settings": settings},
        raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == [
        "session_id__be_unique"
    ]
    entries = step_events(dagster_instance, result.run_id, "sessions")
    seen = kinds(entries)
    # one attempt: no retry requested, no restart, one failure
    assert seen[DagsterEventType.STEP_START] == 1, seen
    assert seen[DagsterEventType.STEP_UP_FOR_RETRY] == 0, seen
    assert seen[DagsterEventType.STEP_RESTARTED] == 0, seen
    assert seen[DagsterEventType.STEP_FAILURE] == 1, seen
    failure = next(e for e in entries if e.dagster_event.event_type == DagsterEventType.STEP_FAILURE)
    error = failure.dagster_event.event_specific_data.error
    assert error.cls_name == "Failure"
    assert f"blocking checks failed for sessions partition {D1}" in error.message, error.message
    assert Warehouse(settings.warehouse_path).published_days("sessions") == []  # nothing published
