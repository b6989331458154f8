"""A late event changes every model partition that reads its date, and only through the plan."""

from __future__ import annotations

from pathlib import Path

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.events.late_window import event_days_to_rebuild
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.loader import load_models
from analytics_pipeline.models.plan import PlannedRun, affected_partitions, plan_rebuilds
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import message, write_lines
from tests.model_fixtures import read_table

DAYS = ["2025-01-10", "2025-01-11", "2025-01-12"]


def _page(message_id: str, person: str, at: str, received: str | None = None) -> dict:
    return message(
        messageId=message_id, type="page", event=None, anonymousId=person, timestamp=at,
        receivedAt=received or at, properties={"path": "/", "url": "https://example.com/", "title": "Home"},
    )  # fmt: skip


def _build(settings: PipelineSettings, changed: set[str]) -> list[tuple[str, str | None]]:
    specs = load_models(settings.models_path)
    days = Warehouse(settings.warehouse_path).published_days("events")
    plan = affected_partitions(specs, {"events": changed}, days)
    for spec, day in plan:
        build_model(settings, spec, day)
    return [(spec.name, day) for spec, day in plan]


def test_late_event_reaches_sessions_active_users_and_an_old_cohort(tmp_path: Path) -> None:
    settings = PipelineSettings(data_dir=str(tmp_path / "data"))
    write_lines(settings, DAYS[0], "a.jsonl", [
        _page("a1", "anon-a", "2025-01-10T10:00:00Z"), _page("a2", "anon-a", "2025-01-10T10:05:00Z"),
        _page("b1", "anon-b", "2025-01-10T12:00:00Z"),
    ])  # fmt: skip
    write_lines(settings, DAYS[1], "a.jsonl", [_page("a3", "anon-a", "2025-01-11T09:00:00Z")])
    write_lines(settings, DAYS[2], "a.jsonl", [_page("a4", "anon-a", "2025-01-12T09:00:00Z")])
    for day in DAYS:
        ingest_arrival_day(settings, day)
        dedupe_events_day(settings, day)
    _build(settings, set(DAYS))

    sessions_before = read_table(settings, "sessions", DAYS[0])
    dau_before = {r["activity_date"].isoformat(): r for r in read_table(settings, "daily_active_users")}
    retention_before = {r["period"]: r for r in read_table(settings, "retention", DAYS[0])}
    assert len(sessions_before) == 2 and dau_before[DAYS[0]]["dau"] == 2
    assert retention_before[0]["cohort_size"] == 2

    # Two days late, on arrival day 12: anon-a again 35 minutes after its last event
    # (a new session on the 10th) and a person never seen before (anon-c) on the 10th.
    write_lines(settings, DAYS[2], "late.jsonl", [
        _page("a-late", "anon-a", "2025-01-10T10:40:00Z", "2025-01-12T08:00:00Z"),
        _page("c-late", "anon-c", "2025-01-10T15:00:00Z", "2025-01-12T08:00:01Z"),
    ])  # fmt: skip
    ingest_arrival_day(settings, DAYS[2])
    warehouse = Warehouse(settings.warehouse_path)
    rebuilt = event_days_to_rebuild(DAYS[2], settings.late_window_days, warehouse)
    assert rebuilt == [DAYS[0]]
    for day in [*rebuilt, DAYS[2]]:
        dedupe_events_day(settings, day)
    plan = _build(settings, {DAYS[0], DAYS[2]})

    # every model reading the 10th is in the plan: the session crossing days, the rolling
    # windows of the following days, the old cohort's retention
    for model in ("sessions", "daily_active_users", "retention", "person_events", "event_counts", "funnels"):
        assert (model, DAYS[0]) in plan, model
    assert ("daily_active_users", DAYS[2]) in plan and ("users", None) in plan

    sessions_after = read_table(settings, "sessions", DAYS[0])
    assert len(sessions_after) == 4  # anon-a: 10:00-10:05 and 10:40; anon-b; anon-c
    dau_after = {r["activity_date"].isoformat(): r for r in read_table(settings, "daily_active_users")}
    assert dau_after[DAYS[0]]["dau"] == 3 and dau_after[DAYS[0]]["new_persons"] == 3
    assert [dau_after[d]["wau"] for d in DAYS] == [dau_before[d]["wau"] + 1 for d in DAYS]
    assert [dau_after[d]["mau"] for d in DAYS] == [dau_before[d]["mau"] + 1 for d in DAYS]
    retention_after = {r["period"]: r for r in read_table(settings, "retention", DAYS[0])}
    assert retention_after[0]["cohort_size"] == 3 and retention_after[0]["persons_on"] == 3
    assert retention_after[2]["persons_on"] == retention_before[2]["persons_on"] == 1
    users = {r["person_id"] for r in read_table(settings, "users")}
    assert "anonymous:anon-c" in users
    # and the sensor's view of the same change: one models run per affected date, then users
    runs = plan_rebuilds(load_models(settings.models_path), {DAYS[0]}, warehouse)
    assert (runs[0].job, runs[0].partition) == ("models_job", DAYS[0])
    assert runs[-1] == PlannedRun("dimensions_job", None, ["users"])
    planned = [(name, run.partition) for run in runs for name in run.models]
    assert planned == [(name, day) for name, day in _plan_names(settings, {DAYS[0]})]


def _plan_names(settings: PipelineSettings, changed: set[str]) -> list[tuple[str, str | None]]:
    specs = load_models(settings.models_path)
    days = Warehouse(settings.warehouse_path).published_days("events")
    return [(spec.name, day) for spec, day in affected_partitions(specs, {"events": changed}, days)]
