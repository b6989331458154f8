"""The assets through Dagster: partitions, metadata, checks, and gates that block."""

from __future__ import annotations

from datetime import UTC, date, datetime

import duckdb
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    build_run_status_sensor_context,
    build_schedule_context,
    materialize,
)

from analytics_pipeline.definitions import defs
from analytics_pipeline.defs.events import dedupe_events_day, late_window_sensor, nightly_schedule
from analytics_pipeline.defs.ingest import ingest_arrival_day
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.slo.data_latency import ARRIVAL_DAY, RECEIVED_P95, RECEIVED_P99
from analytics_pipeline.warehouse.catalog import catalog_path
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import message, query, write_lines

ASSETS = [ingest_arrival_day, dedupe_events_day]
DAY = "2025-01-10"
LATENCY_CHECKS = {RECEIVED_P95, RECEIVED_P99, ARRIVAL_DAY}


def _materialize(
    settings: PipelineSettings, instance: DagsterInstance, day: str = DAY, raise_on_error: bool = True
):
    return materialize(
        ASSETS, partition_key=day, resources={"settings": settings}, instance=instance,
        raise_on_error=raise_on_error,
    )  # fmt: skip


def _metadata(result, key: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key == AssetKey(key):
            return {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}
    raise AssertionError(f"no materialization of {key}")


def test_definitions_graph_partitions_and_checks() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_events", "quarantined_events", "file_ledger", "events", "event_id_conflicts"} <= keys
    assert AssetKey("raw_events") in graph.get(AssetKey("events")).parent_keys
    for key in ("raw_events", "events"):
        assert graph.get(AssetKey(key)).partitions_def.get_partition_keys()[0] == "2024-01-01"
    checks = {c.name for c in graph.asset_check_keys}
    assert {"raw_reconciliation", "events_message_id_unique", "events_reconciliation",
            "events_timestamp_in_partition", "quarantine_reason_recorded"} <= checks  # fmt: skip
    gates = [s for s in ingest_arrival_day.check_specs if s.name not in LATENCY_CHECKS]
    assert gates and all(spec.blocking for spec in gates)
    # data-latency SLOs report, never block: a backfill of old days breaches them honestly
    latency = [s for s in [*ingest_arrival_day.check_specs, *dedupe_events_day.check_specs]
               if s.name in LATENCY_CHECKS]  # fmt: skip
    assert {s.name for s in latency} == LATENCY_CHECKS and not any(s.blocking for s in latency)
    assert defs.resolve_job_def("nightly_job") and defs.resolve_job_def("late_window_job")


def test_materialize_generated_day_records_metadata_and_checks(
    settings: PipelineSettings, dagster_instance: DagsterInstance
) -> None:
    generate(settings.landing_path, date(2025, 1, 10), 1, 800, seed=3, faults=FaultRates(late=0.0))
    result = _materialize(settings, dagster_instance)
    assert result.success
    raw = _metadata(result, "raw_events")
    events = _metadata(result, "events")
    for key in (
        "lines_read",
        "raw_events",
        "quarantined_by_reason",
        "late_events",
        "duration_s",
        "bytes_written",
    ):
        assert key in raw
    for key in ("events", "duplicates", "id_conflicts", "late_events", "bytes_written", "dagster/row_count"):
        assert key in events
    assert events["dagster/row_count"] == events["events"] > 0
    columns = {c.name: c.type for c in events["dagster/column_schema"].columns}
    assert columns["message_id"] == "VARCHAR" and columns["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    evaluations = result.get_asset_check_evaluations()
    declared = {
        (s.asset_key, s.name) for s in [*ingest_arrival_day.check_specs, *dedupe_events_day.check_specs]
    }
    assert {(e.asset_key, e.check_name) for e in evaluations} == declared
    assert all(e.passed for e in evaluations if e.check_name not in LATENCY_CHECKS)
    # 2025-01-10 published today is ~2 years late: the latency SLOs breach, as warnings
    breached = {e.check_name: e for e in evaluations if e.check_name in LATENCY_CHECKS}
    assert set(breached) == LATENCY_CHECKS
    assert all(not e.passed and e.severity == AssetCheckSeverity.WARN for e in breached.values())
    assert all(e.partition == DAY for e in evaluations)  # one result per partition in the UI
    # the instance knows the partition is materialized, as the UI shows it
    assert dagster_instance.get_materialized_partitions(AssetKey("events")) == {DAY}
    published = query(
        Warehouse(settings.warehouse_path).partition_file("events", DAY), "SELECT count(*) FROM t"
    )
    assert published == [(events["events"],)]
    # each publish record names the Dagster run that wrote it (what `rollback --list` shows)
    for table in ("raw_events", "quarantined_events", "file_ledger", "events"):
        version = Warehouse(settings.warehouse_path).published_version(table, DAY)
        assert version is not None and version.run_id == result.run_id, table


def test_catalog_has_a_view_per_table_and_opens_read_only(
    settings: PipelineSettings, dagster_instance: DagsterInstance
) -> None:
    write_lines(settings, DAY, "a.jsonl", [message(), message(messageId="m-2")])
    _materialize(settings, dagster_instance)
    path = catalog_path(Warehouse(settings.warehouse_path))
    reader = duckdb.connect(str(path), read_only=True)
    try:
        views = {
            r[0] for r in reader.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        assert {"raw_events", "quarantined_events", "events", "file_ledger", "event_id_conflicts"} <= views
        # while the reader holds it open, the pipeline publishes again without a lock error
        write_lines(settings, DAY, "b.jsonl", [message(messageId="m-3")])
        assert _materialize(settings, dagster_instance).success
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (3,)
    finally:
        reader.close()


def test_failed_gate_blocks_downstream_and_keeps_previous_version(
    settings: PipelineSettings, dagster_instance: DagsterInstance
) -> None:
    write_lines(settings, DAY, "a.jsonl", [message(), message(messageId="m-2")])
    assert _materialize(settings, dagster_instance).success
    warehouse = Warehouse(settings.warehouse_path)
    events_file = warehouse.partition_file("events", DAY)
    before = events_file.read_bytes()
    # Tamper with the storage of record: one raw row now claims the wrong event date.
    raw_file = warehouse.partition_file("raw_events", DAY)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tampered = raw_file.with_name("tampered.parquet")
    con.execute(
        f"COPY (SELECT * REPLACE (CASE WHEN message_id = 'm-2' THEN timestamp + INTERVAL 2 DAY "
        f"ELSE timestamp END AS timestamp) FROM read_parquet('{raw_file}')) TO '{tampered}' (FORMAT parquet)"
    )
    con.close()
    tampered.replace(raw_file)
    result = materialize(
        [dedupe_events_day], partition_key=DAY, resources={"settings": settings},
        instance=dagster_instance, raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["events_timestamp_in_partition"]
    assert failed[0].metadata["unexpected_count"].value == 1
    assert failed[0].metadata["expectation"].value == "expect_column_values_to_be_between"
    assert failed[0].metadata["partial_unexpected_list"].value[0].startswith("2025-01-12")
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "events_timestamp_in_partition" in failure.message and DAY in failure.message
    assert "1 unexpected of 2 rows" in failure.message
    assert events_file.read_bytes() == before  # readers still see the last good version
    assert not list((settings.warehouse_path / "events").rglob("*.parquet"))[1:]


def test_failed_raw_gate_stops_events_in_the_same_run(
    settings: PipelineSettings, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lines(settings, DAY, "a.jsonl", [message(), message(messageId="m-2")])
    import analytics_pipeline.ingest.arrival_day as ingestion

    real_select = ingestion.raw_events_select
    # A transform bug that drops a row: the reconciliation gate must catch it.
    monkeypatch.setattr(
        ingestion, "raw_events_select", lambda parsed, day: real_select(parsed, day) + " LIMIT 1"
    )
    result = _materialize(settings, dagster_instance, raise_on_error=False)
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"raw_reconciliation"}
    assert not result.get_asset_materialization_events()  # nothing published, events never ran
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert steps == {"ingest_arrival_day"}
    assert not Warehouse(settings.warehouse_path).partition_file("raw_events", DAY).exists()


def test_nightly_schedule_requests_yesterday_at_two() -> None:
    context = build_schedule_context(scheduled_execution_time=datetime(2025, 1, 11, 2, 0, tzinfo=UTC))
    requests = list(nightly_schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2025-01-10"]
    assert nightly_schedule.cron_schedule == "0 2 * * *"
    assert nightly_schedule.execution_timezone in (None, "UTC")


def test_late_window_sensor_rebuilds_the_dates_the_arrival_held(
    settings: PipelineSettings, dagster_instance: DagsterInstance
) -> None:
    arrival = "2025-01-12"
    write_lines(settings, arrival, "a.jsonl", [
        message(messageId="a", timestamp="2025-01-10T10:00:00Z", receivedAt="2025-01-12T00:10:00Z"),
        message(messageId="b", timestamp="2025-01-12T10:00:00Z", receivedAt="2025-01-12T10:00:01Z"),
    ])  # fmt: skip
    result = defs.resolve_job_def("nightly_job").execute_in_process(
        partition_key=arrival, instance=dagster_instance, resources={"settings": settings}
    )
    context = build_run_status_sensor_context(
        sensor_name="late_window_sensor", dagster_instance=dagster_instance,
        dagster_run=result.dagster_run, dagster_event=result.get_run_success_event(),
        resources={"settings": settings},
    )  # fmt: skip
    requests = list(late_window_sensor(context))
    assert [r.partition_key for r in requests] == ["2025-01-10"]  # 2025-01-11 had no events in it
    assert late_window_sensor.job_name == "late_window_job"
