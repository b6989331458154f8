"""identities, person_events and event_counts against plain-Python oracles."""

from __future__ import annotations

import shutil
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from analytics_pipeline.models import build as models
from analytics_pipeline.settings import PipelineSettings
from tests.model_fixtures import MODELS_DIR, build_all, event, read_table, write_events

START = datetime(2025, 1, 10, tzinfo=UTC)
DAYS = [(START + timedelta(days=i)).date().isoformat() for i in range(3)]


def _models_dir(root: Path) -> Path:
    target = root / "models"
    target.mkdir()
    for name in ("identities", "person_events", "event_counts"):
        shutil.copy(MODELS_DIR / f"{name}.sql", target)
    return target


def identity_oracle(rows: list[dict[str, Any]], as_of: str) -> dict[str, tuple[str, datetime, str]]:
    """anonymousId -> (userId, time, messageId) of the earliest event carrying both, dated <= as_of."""
    links: dict[str, tuple[datetime, str, str]] = {}
    for r in rows:
        if r.get("user_id") and r.get("anonymous_id") and r["timestamp"].date().isoformat() <= as_of:
            candidate = (r["timestamp"], r["message_id"], r["user_id"])
            if r["anonymous_id"] not in links or candidate < links[r["anonymous_id"]]:
                links[r["anonymous_id"]] = candidate
    return {anon: (user, at, mid) for anon, (at, mid, user) in links.items()}


def person_of(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if row.get("user_id"):
        return str(row["user_id"])
    links = identity_oracle(rows, row["timestamp"].date().isoformat())
    if row["anonymous_id"] in links:
        return links[row["anonymous_id"]][0]
    return f"anonymous:{row['anonymous_id']}"


def counts_oracle(rows: list[dict[str, Any]], day: str) -> list[tuple[str, str, int, int]]:
    events: dict[tuple[str, str], int] = defaultdict(int)
    persons: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        if r["timestamp"].date().isoformat() == day:
            key = (r["type"], r.get("event") or r["type"])
            events[key] += 1
            persons[key].add(person_of(r, rows))
    return sorted((t, name, n, len(persons[(t, name)])) for (t, name), n in events.items())


def _check(settings: PipelineSettings, rows: list[dict[str, Any]]) -> None:
    for day in DAYS:
        got = {
            r["anonymous_id"]: (r["user_id"], r["first_linked_at"], r["linked_by_message_id"])
            for r in read_table(settings, "identities", day)
        }
        assert got == identity_oracle(rows, day), day
        persons = {r["message_id"]: r["person_id"] for r in read_table(settings, "person_events", day)}
        assert persons == {
            r["message_id"]: person_of(r, rows) for r in rows if r["timestamp"].date().isoformat() == day
        }
        counts = [
            (r["type"], r["event_name"], r["events"], r["persons"])
            for r in read_table(settings, "event_counts", day)
        ]
        assert sorted(counts) == counts_oracle(rows, day)


@pytest.fixture(autouse=True)
def _no_lineage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "column_lineage", lambda spec, outputs, schema: {})


def test_earliest_link_wins_and_later_links_do_not_rewrite_it(tmp_path: Path) -> None:
    rows = [
        event("a1", START + timedelta(hours=1), anonymous_id="x"),
        event("i1", START + timedelta(hours=2), type="identify", anonymous_id="x", user_id="u1"),
        event("i2", START + timedelta(days=1), type="identify", anonymous_id="x", user_id="u2"),
        event("i3", START + timedelta(days=1, hours=1), type="identify", anonymous_id="y", user_id="u2"),
        event("t1", START + timedelta(days=2), anonymous_id="x"),
        event("t2", START + timedelta(days=2), anonymous_id="y", event="Order Completed"),
    ]
    settings = PipelineSettings(data_dir=str(tmp_path / "data"))
    write_events(settings, rows)
    build_all(settings, DAYS, _models_dir(tmp_path))
    _check(settings, rows)
    # an anonymous event before the link, on the link's own day, is resolved as of that day
    assert {r["message_id"]: r["person_id"] for r in read_table(settings, "person_events", DAYS[0])}[
        "a1"
    ] == "u1"
    assert read_table(settings, "identities", DAYS[2])[0]["user_id"] == "u1"  # x stays u1


@st.composite
def linked_events(draw: Any) -> list[dict[str, Any]]:
    rows = []
    for i in range(draw(st.integers(1, 14))):
        at = START + timedelta(
            days=draw(st.integers(0, 2)), seconds=draw(st.sampled_from([0, 1, 3600, 86399]))
        )
        anon = draw(st.sampled_from(["x", "y", None]))
        user = draw(st.sampled_from(["u1", "u2", None])) if anon else draw(st.sampled_from(["u1", "u2"]))
        kind = draw(st.sampled_from(["track", "identify", "page"]))
        rows.append(event(f"m{i:02d}", at, type=kind, anonymous_id=anon, user_id=user))
    return rows


@hsettings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=linked_events())
def test_identities_person_events_and_counts_match_the_oracle(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]
) -> None:
    root = tmp_path_factory.mktemp("identity")
    settings = PipelineSettings(data_dir=str(root / "data"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "column_lineage", lambda spec, outputs, schema: {})
        write_events(settings, rows, days=DAYS)
        build_all(settings, DAYS, _models_dir(root))
        _check(settings, rows)
