"""persons, users and daily_active_users against a plain-Python oracle.

The oracle below is written from the definitions, not from the SQL:

* person of an event: its userId; else the userId of the earliest event (by timestamp, then
  messageId) that carried both this anonymousId and a userId and is dated on or before the
  event's date; else 'anonymous:' + anonymousId. Ids are never merged retroactively, so an
  anonymous person who identifies keeps its own row and the userId is a new person.
* persons as of D: every person with an event dated <= D; first/last seen are the min/max
  event time; days_active counts distinct event dates; latest_traits are the traits of the
  latest identify call (by timestamp, then messageId) that carries traits.
* daily_active_users for D: dau/wau/mau count distinct persons with an event in
  [D], [D-6, D], [D-29, D]; new = persons first seen on D; returning = active on D and first
  seen before D; stickiness = dau / mau, 0.0 when mau is 0. Every built day has a row, also a
  day without any event (dau = 0, wau/mau from the trailing window).

Models are built from copies of the real SQL files (only the ones these tables need), so a
half-written model elsewhere in assets/models cannot break these tests.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from analytics_pipeline.models import build as models_module
from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.loader import load_models
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.model_fixtures import MODELS_DIR, build_all, day_range, event, read_table, write_events

UTC = UTC
NEEDED_MODELS = (
    "identities", "person_events", "persons", "users", "daily_active_users", "sessions", "person_sessions",
)  # fmt: skip
SESSION_COLUMNS = ("first_session_id", "last_session_id", "sessions")


def without_sessions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in SESSION_COLUMNS} for r in rows]


PERSON_COLUMNS = [
    "person_id", "first_seen", "last_seen", "first_seen_date", "last_seen_date",
    "days_active", "is_identified", "latest_traits", "as_of_date",
]  # fmt: skip
DAU_COLUMNS = ["activity_date", "dau", "wau", "mau", "new_persons", "returning_persons", "stickiness"]


def copy_models(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in NEEDED_MODELS:
        shutil.copy(MODELS_DIR / f"{name}.sql", target / f"{name}.sql")
    return target


@pytest.fixture(scope="module", autouse=True)
def _no_column_lineage() -> Iterator[None]:
    """build_model also traces column lineage with sqlglot (~0.3 s a build, most of the time).

    These tests are about the tables' contents and the partitions they read, not lineage,
    so it is switched off here to keep ~200 builds within the time budget.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models_module, "column_lineage", lambda *args, **kwargs: {}, raising=False)
        yield


# --------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------
def _date(row: dict[str, Any]) -> date:
    return row["timestamp"].astimezone(UTC).date()


def _key(row: dict[str, Any]) -> tuple[datetime, str]:
    return (row["timestamp"], row["message_id"])


def resolve(rows: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(person_id, row) for every event, resolved as of the event's date."""
    resolved = []
    for row in rows:
        if row["user_id"] is not None:
            person = row["user_id"]
        else:
            links = [
                other for other in rows
                if other["anonymous_id"] == row["anonymous_id"] and other["user_id"] is not None
                and _date(other) <= _date(row)
            ]  # fmt: skip
            person = min(links, key=_key)["user_id"] if links else "anonymous:" + row["anonymous_id"]
        resolved.append((person, row))
    return resolved


def oracle_persons(rows: Sequence[dict[str, Any]], day: date) -> list[dict[str, Any]]:
    by_person: dict[str, list[dict[str, Any]]] = {}
    for person, row in resolve(rows):
        if _date(row) <= day:
            by_person.setdefault(person, []).append(row)
    out = []
    for person, events in sorted(by_person.items()):
        identifies = [r for r in events if r["type"] == "identify" and r["traits"] is not None]
        out.append({
            "person_id": person,
            "first_seen": min(r["timestamp"] for r in events),
            "last_seen": max(r["timestamp"] for r in events),
            "first_seen_date": min(_date(r) for r in events),
            "last_seen_date": max(_date(r) for r in events),
            "days_active": len({_date(r) for r in events}),
            "is_identified": not person.startswith("anonymous:"),
            "latest_traits": max(identifies, key=_key)["traits"] if identifies else None,
            "as_of_date": day,
        })  # fmt: skip
    return out


def oracle_dau(rows: Sequence[dict[str, Any]], day: date) -> dict[str, Any]:
    resolved = resolve(rows)

    def active(first: date, last: date) -> set[str]:
        return {p for p, r in resolved if first <= _date(r) <= last}

    first_date: dict[str, date] = {}
    for person, row in resolved:
        first_date[person] = min(first_date.get(person, _date(row)), _date(row))
    dau = active(day, day)
    wau = active(day - timedelta(days=6), day)
    mau = active(day - timedelta(days=29), day)
    return {
        "activity_date": day,
        "dau": len(dau),
        "wau": len(wau),
        "mau": len(mau),
        "new_persons": sum(1 for d in first_date.values() if d == day),
        "returning_persons": sum(1 for p in dau if first_date[p] < day),
        "stickiness": len(dau) / len(mau) if mau else 0.0,
    }


def normalized(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Model rows with JSON parsed, so they compare with the oracle's dicts."""
    out = []
    for row in rows:
        row = dict(row)
        if isinstance(row.get("latest_traits"), str):
            row["latest_traits"] = json.loads(row["latest_traits"])
        out.append(row)
    return out


def check_against_oracle(
    settings: PipelineSettings, rows: Sequence[dict[str, Any]], days: Sequence[str]
) -> None:
    # one read per table (all partitions); each row carries its partition date
    all_persons = normalized(read_table(settings, "persons", order_by="as_of_date, person_id"))
    all_dau = read_table(settings, "daily_active_users", order_by="activity_date")
    if all_persons:
        assert list(all_persons[0]) == PERSON_COLUMNS
    assert {r["as_of_date"] for r in all_persons} <= {date.fromisoformat(day) for day in days}
    for day in days:
        d = date.fromisoformat(day)
        persons = [r for r in all_persons if r["as_of_date"] == d]
        assert persons == oracle_persons(rows, d), f"persons {day}"
        dau = [r for r in all_dau if r["activity_date"] == d]
        assert len(dau) == 1, f"daily_active_users {day} has {len(dau)} rows"
        assert list(dau[0]) == DAU_COLUMNS
        assert isinstance(dau[0]["stickiness"], float)
        assert dau[0] == pytest.approx(oracle_dau(rows, d)), f"daily_active_users {day}"
    users = normalized(without_sessions(read_table(settings, "users", "all", order_by="person_id")))
    assert users == oracle_persons(rows, date.fromisoformat(max(days)))


# --------------------------------------------------------------------------------------
# Hand-written scenario: 40 days, built once for the module
# --------------------------------------------------------------------------------------
START = date(2024, 3, 1)


def d(n: int) -> str:
    """Day n of the scenario (day 1 is START)."""
    return (START + timedelta(days=n - 1)).isoformat()


def at(n: int, hour: int, minute: int = 0) -> datetime:
    midnight = datetime.combine(START + timedelta(days=n - 1), datetime.min.time(), UTC)
    return midnight.replace(hour=hour, minute=minute)


SCENARIO = [
    # alice: a known user active on days 1, 3, 10 and 40
    event("a01", at(1, 10), user_id="alice"),
    event("a03", at(3, 10), user_id="alice"),
    event("a10", at(10, 10), user_id="alice"),
    event("a40", at(40, 10), user_id="alice"),
    # bob: anonymous on day 2, identifies on day 4 (the earlier anonymous event of day 4 is
    # already resolved to bob), changes traits on day 6 (two identifies at the same instant:
    # the larger messageId wins), an identify without traits on day 8 keeps them.
    event("b02", at(2, 9), type="page", anonymous_id="ab"),
    event("b04a", at(4, 9), anonymous_id="ab"),
    event("b04b", at(4, 12), type="identify", user_id="bob", anonymous_id="ab", traits={"plan": "free"}),
    event("b04c", at(4, 15), anonymous_id="ab"),
    event("b06b", at(6, 8), type="identify", user_id="bob", traits={"plan": "enterprise"}),
    event("b06a", at(6, 8), type="identify", user_id="bob", traits={"plan": "pro"}),
    event("b08", at(8, 8), type="identify", user_id="bob", traits=None),
    event("b09", at(9, 23, 59), anonymous_id="ab"),
    # carol identifies at once on day 10, active again on day 12
    event("c10", at(10, 0), type="identify", user_id="carol", anonymous_id="ac", traits={"name": "C"}),
    event("c12", at(12, 1), anonymous_id="ac"),
    # dan stays anonymous
    event("d35", at(35, 7), type="page", anonymous_id="ad"),
]
# day 0 and every other day without events get empty events partitions
SCENARIO_DAYS = day_range(d(0), d(40))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> PipelineSettings:
    root = tmp_path_factory.mktemp("persons_dau")
    models = copy_models(root / "models")
    settings = PipelineSettings(data_dir=str(root / "data"))
    write_events(settings, SCENARIO, SCENARIO_DAYS)
    build_all(settings, SCENARIO_DAYS, models)
    return settings


def test_scenario_matches_oracle(scenario: PipelineSettings) -> None:
    check_against_oracle(scenario, SCENARIO, SCENARIO_DAYS)


def dau_row(settings: PipelineSettings, n: int) -> dict[str, Any]:
    (row,) = read_table(settings, "daily_active_users", d(n))
    return row


def test_scenario_hand_computed_counts(scenario: PipelineSettings) -> None:
    """Numbers worked out by hand, so the oracle itself is checked too."""

    def counts(n: int) -> tuple[int, ...]:
        row = dau_row(scenario, n)
        return (row["dau"], row["wau"], row["mau"], row["new_persons"], row["returning_persons"])

    assert counts(0) == (0, 0, 0, 0, 0)  # nothing yet: a row of zeros
    assert counts(1) == (1, 1, 1, 1, 0)
    assert counts(3) == (1, 2, 2, 0, 1)  # alice returns; anonymous:ab in the week
    assert counts(4) == (1, 3, 3, 1, 0)  # bob is a new person (not a returning anonymous:ab)
    assert counts(10) == (2, 3, 4, 1, 1)  # carol new, alice returning; anonymous:ab out of the week
    assert counts(16) == (0, 2, 4, 0, 0)  # week 10..16: alice, carol
    assert counts(17) == (0, 1, 4, 0, 0)  # week 11..17: carol only
    assert counts(20) == (0, 0, 4, 0, 0)  # a day without any event still has its row
    assert counts(31) == (0, 0, 4, 0, 0)  # month 2..31: anonymous:ab (day 2) still in
    assert counts(32) == (0, 0, 3, 0, 0)  # month 3..32: anonymous:ab out
    assert counts(38) == (0, 1, 4, 0, 0)  # month 9..38: bob (day 9), alice, carol, dan
    assert counts(39) == (0, 1, 3, 0, 0)  # month 10..39: bob dropped
    assert counts(40) == (1, 2, 3, 0, 1)  # month 11..40: carol, dan, alice
    assert dau_row(scenario, 0)["stickiness"] == 0.0  # mau = 0
    assert dau_row(scenario, 10)["stickiness"] == 0.5
    assert dau_row(scenario, 20)["stickiness"] == 0.0
    assert dau_row(scenario, 40)["stickiness"] == pytest.approx(1 / 3)


def test_scenario_persons_snapshot(scenario: PipelineSettings) -> None:
    persons = {r["person_id"]: r for r in read_table(scenario, "persons", d(40))}
    assert sorted(persons) == ["alice", "anonymous:ab", "anonymous:ad", "bob", "carol"]
    alice, bob, anon = persons["alice"], persons["bob"], persons["anonymous:ab"]
    assert alice["days_active"] == 4 and alice["first_seen"] == at(1, 10) and alice["last_seen"] == at(40, 10)
    assert (bob["first_seen"], bob["last_seen"], bob["days_active"]) == (at(4, 9), at(9, 23, 59), 4)
    assert json.loads(bob["latest_traits"]) == {"plan": "enterprise"}
    assert (anon["last_seen_date"], anon["days_active"]) == (date(2024, 3, 2), 1)
    assert not anon["is_identified"]
    assert bob["is_identified"] and persons["anonymous:ad"]["latest_traits"] is None
    # traits over time: free on day 4 and 5, enterprise from day 6, kept through day 8's bare identify
    for n, plan in [(4, "free"), (5, "free"), (6, "enterprise"), (8, "enterprise"), (9, "enterprise")]:
        snapshot = {r["person_id"]: r for r in read_table(scenario, "persons", d(n))}
        assert json.loads(snapshot["bob"]["latest_traits"]) == {"plan": plan}, d(n)
    assert [r["person_id"] for r in read_table(scenario, "persons", d(3))] == ["alice", "anonymous:ab"]
    assert read_table(scenario, "persons", d(0)) == []  # the first snapshot, before any event


def test_users_is_the_latest_persons_snapshot(scenario: PipelineSettings) -> None:
    users = read_table(scenario, "users", "all", order_by="person_id")
    assert without_sessions(users) == read_table(scenario, "persons", d(40), order_by="person_id")
    # first/last session: the earliest and latest of the person's sessions over all days
    sessions = read_table(scenario, "sessions", order_by="started_at, session_id")
    for user in users:
        own = [s["session_id"] for s in sessions if s["person_id"] == user["person_id"]]
        assert (user["first_session_id"], user["last_session_id"], user["sessions"]) == (
            own[0] if own else None,
            own[-1] if own else None,
            len(own),
        ), user["person_id"]
    manifest = Warehouse(scenario.warehouse_path).read_manifest("users", "all")
    assert manifest is not None and manifest["inputs"] == {"persons": [d(40)], "person_sessions": [d(40)]}


def test_daily_active_users_reads_only_the_trailing_30_days(scenario: PipelineSettings) -> None:
    warehouse = Warehouse(scenario.warehouse_path)
    for n in range(0, 41):
        manifest = warehouse.read_manifest("daily_active_users", d(n))
        assert manifest is not None
        expected = [d(k) for k in range(max(0, n - 29), n + 1)]
        assert manifest["inputs"] == {"person_events": expected, "persons": [d(n)]}, d(n)


def test_persons_reads_only_previous_snapshot_and_the_day(scenario: PipelineSettings) -> None:
    warehouse = Warehouse(scenario.warehouse_path)
    for n in range(0, 41):
        manifest = warehouse.read_manifest("persons", d(n))
        assert manifest is not None
        previous = [d(n - 1)] if n > 0 else []
        assert manifest["inputs"] == {"persons": previous, "person_events": [d(n)]}, d(n)


# --------------------------------------------------------------------------------------
# Random events over 35 days
# --------------------------------------------------------------------------------------
H_START = date(2024, 5, 1)
H_DAYS = 35  # days 0..34: longer than the 30-day month, so every edge of wau and mau is reached
H_LAST = H_DAYS - 1
# Days the strategy favours: 0, 1, 6, 7, 8, 29, 30, 31 and 34 days before the last day, i.e.
# the last day's week edge (D-6 in, D-7 out), month edge (D-29 in, D-30 out) and the days just
# past them. Every day's daily_active_users row is checked, so an event on day k also lands
# on the edges of D = k+6, k+7, k+29, k+30 when those are in range.
EDGE_DAYS = sorted({H_LAST - k for k in (0, 1, 6, 7, 8, 29, 30, 31, 34)})
H_HOURS = (0, 12, 23)  # few distinct times, so ties on timestamp happen
WIDE_MODELS = ("identities", "person_events", "persons", "daily_active_users")


@st.composite
def random_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 16))
    order = draw(st.permutations(range(n)))
    rows = []
    for i in range(n):
        day = draw(st.one_of(st.sampled_from(EDGE_DAYS), st.integers(0, H_DAYS - 1)))
        hour = draw(st.sampled_from(H_HOURS))
        ids = draw(st.sampled_from(["user", "anon", "both"]))
        user = draw(st.sampled_from(["u1", "u2"])) if ids != "anon" else None
        anon = draw(st.sampled_from(["a1", "a2", "a3"])) if ids != "user" else None
        kind = draw(st.sampled_from(["track", "page", "identify"]))
        traits = None
        if kind == "identify":
            traits = draw(st.none() | st.fixed_dictionaries({"plan": st.sampled_from(["free", "pro"])}))
        when = datetime.combine(H_START + timedelta(days=day), datetime.min.time(), UTC).replace(hour=hour)
        message_id = f"m{order[i]:02d}"
        rows.append(event(message_id, when, type=kind, user_id=user, anonymous_id=anon, traits=traits))
    return rows


@pytest.fixture(scope="module")
def random_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_models(tmp_path_factory.mktemp("persons_dau_models"))


@pytest.fixture(scope="module")
def no_suites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty suites folder: the property test checks contents against the oracle, and the
    Great Expectations suites cost ~0.15 s of every ~0.2 s build (35 days x 4 models a case).
    The gates run on the 40-day scenario above and are tested in tests/quality."""
    return tmp_path_factory.mktemp("no_suites")


def build_wide(settings: PipelineSettings, days: Sequence[str], models_dir: Path) -> None:
    """identities, person_events, persons and daily_active_users for every day (oldest first),
    then sessions and person_sessions for the last day only (person_sessions starts from an
    empty state), so that users, which reads both latest snapshots, can be built."""
    by_name = {spec.name: spec for spec in load_models(models_dir)}
    for day in days:
        for name in WIDE_MODELS:
            build_model(settings, by_name[name], day)
    for name in ("sessions", "person_sessions"):
        build_model(settings, by_name[name], days[-1])
    build_model(settings, by_name["users"], None)


def _at_day(day: int, hour: int = 12) -> datetime:
    return datetime.combine(H_START + timedelta(days=day), datetime.min.time(), UTC).replace(hour=hour)


_NOON = datetime(2024, 5, 2, 12, tzinfo=UTC)
TIE_EXAMPLE = [  # always run: an identify tie on timestamp, broken by messageId
    event("m01", _NOON, type="identify", user_id="u1", anonymous_id="a1", traits={"plan": "pro"}),
    event("m00", _NOON, type="identify", user_id="u1", traits={"plan": "free"}),
    event("m02", _NOON - timedelta(days=1), anonymous_id="a1"),
    event("m03", _NOON + timedelta(days=1), anonymous_id="a1"),
]
# always run: one person active exactly k days before the last day D for each week and month
# edge (wau counts D-6..D, mau D-29..D), one at midnight of D-30 and one at 23:00 of D-7
EDGE_EXAMPLE = [
    event("e00", _at_day(H_LAST), user_id="u-today"),
    *(event(f"e{k:02d}", _at_day(H_LAST - k), user_id=f"u-{k}") for k in (6, 7, 8, 29, 30, 31)),
    event("e90", _at_day(H_LAST - 30, 0), anonymous_id="a-midnight"),
    event("e91", _at_day(H_LAST - 7, 23), anonymous_id="a-late"),
    event("e92", _at_day(H_LAST - 7, 23), type="identify", user_id="u-6", anonymous_id="a-late"),
]


@hsettings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=random_events())
@example(rows=TIE_EXAMPLE)
@example(rows=EDGE_EXAMPLE)
def test_random_events_match_oracle(
    rows: list[dict[str, Any]],
    random_models: Path,
    no_suites: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("random")
    settings = PipelineSettings(data_dir=str(root / "data"), suites_dir=str(no_suites))
    days = day_range(H_START.isoformat(), (H_START + timedelta(days=H_LAST)).isoformat())
    write_events(settings, rows, days)
    build_wide(settings, days, random_models)
    check_against_oracle(settings, rows, days)
