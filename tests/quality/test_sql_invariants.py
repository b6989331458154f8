"""The blocking SQL invariants of ingest and dedupe: plant each fault in the transform, prove the gate holds.

A clean partition passes every invariant, so a check that could never fail would pass
every other test too. Here each of six invariants gets a partition that was first
published clean, then rebuilt by the real step through Dagster with one fault planted in
the SQL that produces the staged rows (never in the check): the check must fail, as
blocking and alone; nothing may be published (no materialization, no new version); readers
must still see the bytes published before, with nothing stray beside them; and no
downstream step may start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)

import analytics_pipeline.ingest.arrival_day as ingestion
from analytics_pipeline.definitions import defs
from analytics_pipeline.defs.events import dedupe_events_day
from analytics_pipeline.defs.ingest import ingest_arrival_day
from analytics_pipeline.defs.models import model_assets
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import STAGING_DIR, Warehouse
from tests.conftest import message, write_lines

DAY = "2025-01-10"
VICTIM = "m-07"  # the row a fault lands on: it has both a userId and an anonymousId
UNIQUE_EVENTS = 24

INGEST_TABLES = ("raw_events", "quarantined_events", "file_ledger")
EVENTS_TABLES = ("events", "event_id_conflicts")
MODEL_TABLES = ("identities", "person_events")  # read events[DAY]; person_events reads identities too
TABLES = INGEST_TABLES + EVENTS_TABLES + MODEL_TABLES
MODELS = [a for a in model_assets if a.key.to_user_string() in MODEL_TABLES]

SIX = (
    "events_reconciliation",
    "raw_required_columns_not_null",
    "raw_person_id_present",
    "raw_type_accepted",
    "quarantine_reason_recorded",
    "events_person_id_present",
)


def _landing_lines() -> list[Any]:
    """24 distinct events (every third, and the victim, with a userId), a re-delivery, an id conflict, 3 bad lines."""
    lines: list[Any] = [
        message(
            messageId=f"m-{i:02d}",
            userId=f"user-{i % 5}" if i % 3 == 0 or f"m-{i:02d}" == VICTIM else None,
            anonymousId=f"anon-{i}",
            timestamp=f"{DAY}T10:{i:02d}:00.000Z",
            receivedAt=f"{DAY}T10:{i:02d}:01.000Z",
        )
        for i in range(1, UNIQUE_EVENTS + 1)
    ]
    lines.append(lines[0])  # m-01 delivered twice: a duplicate
    conflict = message(**{**lines[1], "receivedAt": f"{DAY}T11:00:00.000Z"})
    conflict["properties"] = {"product_id": "p2", "price": 12.0, "currency": "EUR"}
    lines.append(conflict)  # m-02 again with other content: an id conflict
    lines += [
        "this is not json",  # invalid_json
        message(messageId="m-90", anonymousId=None),  # missing_identity
        message(messageId="m-91", type="bogus"),  # unknown_type
    ]
    return lines


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _materializations(instance: DagsterInstance, table: str) -> list[int]:
    """Storage ids of the instance's materializations of ``table`` for DAY."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(table), asset_partitions=[DAY]), limit=100
    ).records
    return [r.storage_id for r in records]


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def published(settings: PipelineSettings, dagster_instance: DagsterInstance) -> PipelineSettings:
    """DAY ingested, deduplicated and modeled, clean: every table published once, every check passed."""
    write_lines(settings, DAY, "a.jsonl", _landing_lines())
    result = materialize(
        [ingest_arrival_day, dedupe_events_day, *MODELS], partition_key=DAY,
        resources={"settings": settings}, instance=dagster_instance,
    )  # fmt: skip
    assert result.success
    passed = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert {name: passed[name] for name in SIX} == dict.fromkeys(SIX, True)
    assert not [e for e in result.get_asset_check_evaluations() if not e.passed and e.blocking]
    for table in TABLES:
        assert len(_materializations(dagster_instance, table)) == 1, table
    return settings


# --- the faults: each one a change to the SQL that produces the staged rows ------------------


def _raw_events_replacing(replacement: str) -> Callable[[pytest.MonkeyPatch], None]:
    """The ingest's raw_events SELECT, with ``SELECT * REPLACE (replacement)`` around it."""

    def plant(monkeypatch: pytest.MonkeyPatch) -> None:
        real = ingestion.raw_events_select
        monkeypatch.setattr(
            ingestion,
            "raw_events_select",
            lambda parsed, day: f"SELECT * REPLACE ({replacement}) FROM ({real(parsed, day)})",
        )

    return plant


def _quarantine_replacing(replacement: str) -> Callable[[pytest.MonkeyPatch], None]:
    """The ingest's quarantined_events SELECT, with ``SELECT * REPLACE (replacement)`` around it."""

    def plant(monkeypatch: pytest.MonkeyPatch) -> None:
        real = ingestion.quarantine_select
        monkeypatch.setattr(
            ingestion,
            "quarantine_select",
            lambda parsed, problems, day: (
                f"SELECT * REPLACE ({replacement}) FROM ({real(parsed, problems, day)})"
            ),
        )

    return plant


# The dedupe step's SQL is inline in dedupe_events_day; its events SELECT is the only statement
# that picks the winning copies (``WHERE r.copy_rank = 1``).
EVENTS_SELECT_MARKER = "WHERE r.copy_rank = 1"


class _EventsSelectRewritten:
    """A step's DuckDB connection whose events SELECT gets one planted change (``old`` -> ``new``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, old: str, new: str) -> None:
        self._con, self._old, self._new = con, old, new

    def _planted(self, sql: str) -> str:
        if EVENTS_SELECT_MARKER in sql:
            if self._old not in sql:  # the step's SQL changed: say so rather than plant nothing
                raise AssertionError(f"the planted fault no longer applies: {self._old!r} not in {sql}")
            sql = sql.replace(self._old, self._new)
        return sql

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._con.execute(self._planted(sql), *args, **kwargs)

    def sql(self, sql: str, *args: Any, **kwargs: Any) -> Any:  # the events rows are streamed from a relation
        return self._con.sql(self._planted(sql), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _events_select_rewritten(old: str, new: str) -> Callable[[pytest.MonkeyPatch], None]:
    def plant(monkeypatch: pytest.MonkeyPatch) -> None:
        real_connect = PipelineSettings.connect
        monkeypatch.setattr(
            PipelineSettings, "connect", lambda self: _EventsSelectRewritten(real_connect(self), old, new)
        )

    return plant


def _nightly_job(settings: PipelineSettings, instance: DagsterInstance) -> ExecuteInProcessResult:
    """Ingest DAY and build its events, as the 02:00 schedule does."""
    return defs.resolve_job_def("nightly_job").execute_in_process(
        partition_key=DAY, instance=instance, resources={"settings": settings}, raise_on_error=False
    )


def _events_and_models(settings: PipelineSettings, instance: DagsterInstance) -> ExecuteInProcessResult:
    """Rebuild events[DAY] and, in the same run, the models that read it."""
    return materialize(
        [dedupe_events_day, *MODELS], partition_key=DAY, resources={"settings": settings},
        instance=instance, raise_on_error=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Run:
    """How the faulty step is run, and which steps of that run are downstream of it."""

    execute: Callable[[PipelineSettings, DagsterInstance], ExecuteInProcessResult]
    step: str  # the step that must fail
    downstream: frozenset[str]  # steps of the same run that must not start


INGEST_RUN = Run(_nightly_job, "ingest_arrival_day", frozenset({"dedupe_events_day"}))
EVENTS_RUN = Run(_events_and_models, "dedupe_events_day", frozenset({"identities", "person_events"}))


@dataclass(frozen=True)
class Fault:
    plant: Callable[[pytest.MonkeyPatch], None]
    table: str  # the table whose staged file the fault lands in; the check is on its asset
    found: dict[str, Any]  # what the failed check's metadata must report
    run: Run


FAULTS = {
    # check name: the fault planted in the transform that must make it fail
    "raw_required_columns_not_null": Fault(  # a receivedAt parse that silently yields NULL
        _raw_events_replacing(f"CASE WHEN message_id = '{VICTIM}' THEN NULL ELSE received_at END AS received_at"),
        "raw_events", {"null_counts": {"received_at": 1}, "sample_ids": [VICTIM]}, INGEST_RUN,
    ),
    "raw_person_id_present": Fault(  # both person ids lost on one row
        _raw_events_replacing(
            f"CASE WHEN message_id = '{VICTIM}' THEN NULL ELSE user_id END AS user_id, "
            f"CASE WHEN message_id = '{VICTIM}' THEN NULL ELSE anonymous_id END AS anonymous_id"
        ),
        "raw_events", {"rows_without_person": 1, "sample_ids": [VICTIM]}, INGEST_RUN,
    ),
    "raw_type_accepted": Fault(  # a type written outside the Segment set ('TRACK')
        _raw_events_replacing(f"CASE WHEN message_id = '{VICTIM}' THEN upper(type) ELSE type END AS type"),
        "raw_events", {"unexpected_type_rows": 1, "sample_ids": [VICTIM]}, INGEST_RUN,
    ),
    "quarantine_reason_recorded": Fault(  # a reason code lost on the way to the quarantine
        _quarantine_replacing("CASE WHEN reason = 'unknown_type' THEN NULL ELSE reason END AS reason"),
        "quarantined_events", {"null_counts": {"reason": 1}, "sample_ids": [f"{DAY}/a.jsonl:29"]}, INGEST_RUN,
    ),
    "events_person_id_present": Fault(  # the winning copy written without its person ids
        _events_select_rewritten(
            "c.user_id, c.anonymous_id,",
            f"CASE WHEN c.message_id = '{VICTIM}' THEN NULL ELSE c.user_id END AS user_id, "
            f"CASE WHEN c.message_id = '{VICTIM}' THEN NULL ELSE c.anonymous_id END AS anonymous_id,",
        ),
        "events", {"rows_without_person": 1, "sample_ids": [VICTIM]}, EVENTS_RUN,
    ),
    "events_reconciliation": Fault(  # one winning copy dropped: 26 read, 23 + 1 + 1 accounted for
        _events_select_rewritten(EVENTS_SELECT_MARKER, f"{EVENTS_SELECT_MARKER} AND c.message_id <> '{VICTIM}'"),
        "events",
        {"read": UNIQUE_EVENTS + 2, "events": UNIQUE_EVENTS - 1, "duplicates": 1, "id_conflicts": 1,
         "difference": -1},
        EVENTS_RUN,
    ),
}  # fmt: skip


def test_every_blocking_sql_invariant_has_a_planted_fault() -> None:
    assert set(FAULTS) == set(SIX)
    specs = {s.name: s for s in [*ingest_arrival_day.check_specs, *dedupe_events_day.check_specs]}
    for name, fault in FAULTS.items():
        assert specs[name].blocking, name
        assert specs[name].asset_key == AssetKey(fault.table), name


@pytest.mark.parametrize("check", SIX)
def test_planted_fault_fails_its_invariant_publishes_nothing_and_stops_downstream(
    published: PipelineSettings,
    dagster_instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    check: str,
) -> None:
    fault = FAULTS[check]
    warehouse = Warehouse(published.warehouse_path)
    files = {table: warehouse.partition_file(table, DAY) for table in TABLES}
    bytes_before = {table: _sha256(path) for table, path in files.items()}
    versions_before = {table: warehouse.versions(table, DAY) for table in TABLES}
    materializations_before = {table: _materializations(dagster_instance, table) for table in TABLES}

    fault.plant(monkeypatch)
    result = fault.run.execute(published, dagster_instance)

    # 1. the named check failed, as blocking, and it is the only blocking failure
    assert not result.success
    blocking_failures = [
        e
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == AssetCheckSeverity.ERROR
    ]
    assert [e.check_name for e in blocking_failures] == [check]
    (failed,) = blocking_failures
    assert failed.blocking and failed.partition == DAY and failed.asset_key == AssetKey(fault.table)
    found = {k: v.value for k, v in failed.metadata.items()}
    assert {k: found.get(k) for k in fault.found} == fault.found  # it found the planted row, no other
    failures = result.get_step_failure_events()
    assert [e.step_key for e in failures] == [fault.run.step]
    error = failures[0].step_failure_data.error
    assert error is not None and check in error.message and f"{fault.table} partition {DAY}" in error.message

    # 2. nothing published: no materialization, no new version in the warehouse ...
    assert not result.get_asset_materialization_events()
    assert {t: _materializations(dagster_instance, t) for t in TABLES} == materializations_before
    assert {t: warehouse.versions(t, DAY) for t in TABLES} == versions_before
    # ... though the staged file (kept for inspection) differs: a publish would have replaced the partition
    (staged,) = _files_under(warehouse.root / STAGING_DIR / fault.table / f"date={DAY}")
    assert _sha256(staged) != bytes_before[fault.table]

    # 3. readers still see the previously published bytes, and nothing else sits in a table's folder
    assert {table: _sha256(path) for table, path in files.items()} == bytes_before
    for table, path in files.items():
        assert _files_under(warehouse.root / table) == [path], table

    # 4. nothing downstream started: the run planned the downstream steps, Dagster did not execute them
    assert set(result.dagster_run.step_keys_to_execute or ()) == {fault.run.step, *fault.run.downstream}
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {fault.run.step}
    not_executed = {
        entry.step_key
        for entry in dagster_instance.all_logs(result.run_id)
        if entry.user_message.startswith(f"Dependencies for step {entry.step_key} failed")
    }
    assert not_executed == fault.run.downstream
