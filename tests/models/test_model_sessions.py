"""The `sessions` model against an independent plain-Python oracle.

The oracle is written from the definition in the model's header, not from its SQL:
a person's events ordered by (timestamp, message_id); a new run after a gap > 1800 s;
a run cut every 86400 s from its first event; each piece a session dated by its
first event (UTC). Partition D sees only person_events D-1 .. D+1, so a run that
began before D-1 is anchored at the start of that window: ``expected_partition``
applies exactly that, ``sessionise`` is the unwindowed definition.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from analytics_pipeline.models import build as models
from analytics_pipeline.models.build import DEFAULT_CONVERSION_EVENTS, build_model
from analytics_pipeline.models.loader import SOURCE_TABLES, ModelSpec, load_model
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.model_fixtures import (
    MODELS_DIR,
    day_range,
    event,
    read_table,
    suites_without_volume_gates,
    write_events,
)

UTC = UTC
GAP = timedelta(seconds=1800)
PIECE = timedelta(days=1)
ORDER = "started_at, person_id"
COLUMNS = [
    "session_id", "person_id", "session_date", "started_at", "ended_at", "duration_s", "event_count",
    "page_views", "landing_path", "exit_path", "referrer", "is_bounce", "is_engaged",
]  # fmt: skip


# ---------------------------------------------------------------------------------------
# oracle


def simple_person(row: Mapping[str, Any]) -> str:
    return row["user_id"] if row.get("user_id") else "anonymous:" + row["anonymous_id"]


def _page_path(row: Mapping[str, Any]) -> str | None:
    return (row.get("properties") or {}).get("path") if row["type"] == "page" else None


def _referrer(row: Mapping[str, Any]) -> str | None:
    return (row.get("properties") or {}).get("referrer") or None  # '' counts as none


def _session(person: str, events: list[Mapping[str, Any]]) -> dict[str, Any]:
    started, ended = events[0]["timestamp"], events[-1]["timestamp"]
    pages = [e for e in events if e["type"] == "page"]
    referrers = [_referrer(e) for e in events if _referrer(e) is not None]
    duration = (ended - started).total_seconds()
    converted = any(e["type"] == "track" and e.get("event") in DEFAULT_CONVERSION_EVENTS for e in events)
    iso = started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "session_id": hashlib.md5(f"{person}|{iso}".encode()).hexdigest(),
        "person_id": person,
        "session_date": started.astimezone(UTC).date(),
        "started_at": started,
        "ended_at": ended,
        "duration_s": duration,
        "event_count": len(events),
        "page_views": len(pages),
        "landing_path": _page_path(pages[0]) if pages else None,
        "exit_path": _page_path(pages[-1]) if pages else None,
        "referrer": referrers[0] if referrers else None,
        "is_bounce": len(events) == 1 and len(pages) == 1,
        "is_engaged": duration > 10 or len(pages) >= 2 or converted,
    }


def sessionise(
    rows: Iterable[Mapping[str, Any]], person_of: Callable[[Mapping[str, Any]], str] = simple_person
) -> list[dict[str, Any]]:
    """Every session of the given events, by the definition (no read window)."""
    by_person: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_person[person_of(row)].append(row)
    sessions: list[dict[str, Any]] = []
    for person, events in by_person.items():
        events.sort(key=lambda e: (e["timestamp"], e["message_id"]))
        pieces: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
        run, run_start, previous = -1, None, None
        for e in events:
            if previous is None or e["timestamp"] - previous > GAP:
                run, run_start = run + 1, e["timestamp"]
            previous = e["timestamp"]
            pieces[(run, (e["timestamp"] - run_start) // PIECE)].append(e)
        sessions.extend(_session(person, piece) for piece in pieces.values())
    return sorted(sessions, key=lambda s: (s["started_at"], s["person_id"]))


def _utc_day(row: Mapping[str, Any]) -> date:
    return row["timestamp"].astimezone(UTC).date()


def expected_partition(
    rows: Iterable[Mapping[str, Any]], day: str, person_of: Callable[[Mapping[str, Any]], str] = simple_person
) -> list[dict[str, Any]]:
    """Partition ``day`` as built: sessionise the events dated D-1 .. D+1, keep those starting on D."""
    d = date.fromisoformat(day)
    seen = [r for r in rows if d - timedelta(days=1) <= _utc_day(r) <= d + timedelta(days=1)]
    return [s for s in sessionise(seen, person_of) if s["session_date"] == d]


# ---------------------------------------------------------------------------------------
# building


CHAIN = ("identities", "person_events", "sessions")


def specs() -> dict[str, ModelSpec]:
    """The models sessions depends on, loaded one by one so that another model file being
    edited in the same folder does not break these tests."""
    known = set(SOURCE_TABLES) | {p.stem for p in MODELS_DIR.glob("*.sql")}
    return {name: load_model(MODELS_DIR / f"{name}.sql", known) for name in CHAIN}


def build_sessions(settings: PipelineSettings, days: Iterable[str]) -> dict[str, Any]:
    """Build identities, person_events and sessions for ``days``: each model for every day
    (oldest first) before the next model, so sessions[D] sees person_events[D+1].

    (``model_fixtures.build_all`` loops day-major, so it builds sessions[D] before
    person_events[D+1] exists and misses sessions crossing midnight.)
    """
    all_specs = specs()
    results = {}
    for name in CHAIN:
        for day in sorted(days):
            results[f"{name}:{day}"] = build_model(settings, all_specs[name], day)
    return results


def load(settings: PipelineSettings, rows: list[dict[str, Any]], days: list[str]) -> None:
    write_events(settings, rows, days=days)
    build_sessions(settings, days)


def model_rows(settings: PipelineSettings, day: str | None = None) -> list[dict[str, Any]]:
    rows = read_table(settings, "sessions", day, order_by=ORDER)
    for row in rows:
        assert list(row) == COLUMNS
        assert isinstance(row["duration_s"], float) and isinstance(row["session_date"], date)
    return rows


def assert_matches(
    settings: PipelineSettings,
    rows: list[dict[str, Any]],
    days: list[str],
    person_of: Callable[[Mapping[str, Any]], str] = simple_person,
) -> None:
    for day in days:
        assert model_rows(settings, day) == expected_partition(rows, day, person_of), day


def at(day: str, hh: int, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    d = date.fromisoformat(day)
    return datetime(d.year, d.month, d.day, hh, mm, ss, us, tzinfo=UTC)


def new_settings(tmp_path: Path) -> PipelineSettings:
    return PipelineSettings(
        data_dir=str(tmp_path / "data"), duckdb_memory_limit="1GB", duckdb_threads=2,
        suites_dir=str(suites_without_volume_gates(tmp_path / "suites")),
    )  # fmt: skip


D0, D1, D2, D3 = "2025-01-10", "2025-01-11", "2025-01-12", "2025-01-13"


# ---------------------------------------------------------------------------------------
# hand-written edge cases


def test_gap_of_exactly_1800s_stays_1801s_splits(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    rows = [
        event("a1", at(D0, 10, 0, 0), user_id="alice"),
        event("a2", at(D0, 10, 30, 0), user_id="alice"),  # +1800 s: same session
        event("z1", at(D0, 10, 45, 0), user_id="zed"),  # another person's event inside alice's gap
        event("a3", at(D0, 11, 0, 1), user_id="alice"),  # +1801 s: new session
        event("b1", at(D0, 12, 0, 0, 500_000), user_id="bob"),
        event("b2", at(D0, 12, 30, 0, 500_000), user_id="bob"),  # +1800.000000 s
        event("b3", at(D0, 13, 0, 0, 500_001), user_id="bob"),  # +1800.000001 s: new
    ]
    load(settings, rows, [D0])
    got = model_rows(settings, D0)
    assert [(s["person_id"], s["event_count"]) for s in got] == [
        ("alice", 2), ("zed", 1), ("alice", 1), ("bob", 2), ("bob", 1),
    ]  # fmt: skip
    assert [s["duration_s"] for s in got] == [1800.0, 0.0, 0.0, 1800.0, 0.0]
    assert got[2]["started_at"] == at(D0, 11, 0, 1)
    assert_matches(settings, rows, [D0])


def test_session_crossing_midnight_belongs_to_its_start_date(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    rows = [
        event("c1", at(D0, 23, 50), type="page", user_id="carol", properties={"path": "/night"}),
        event("c2", at(D1, 0, 10), user_id="carol"),
        event("c3", at(D1, 0, 40), type="page", user_id="carol", properties={"path": "/morning"}),
        event("c4", at(D1, 9, 0), user_id="carol"),  # a new session on D1
    ]
    load(settings, rows, [D0, D1])
    [night] = model_rows(settings, D0)
    assert night["started_at"] == at(D0, 23, 50) and night["ended_at"] == at(D1, 0, 40)
    assert night["session_date"] == date.fromisoformat(D0)
    assert (night["event_count"], night["duration_s"], night["exit_path"]) == (3, 3000.0, "/morning")
    # D1 holds only the 09:00 session: its 00:10 and 00:40 events continue D0's session
    assert [s["started_at"] for s in model_rows(settings, D1)] == [at(D1, 9, 0)]
    assert_matches(settings, rows, [D0, D1])


def test_run_longer_than_24h_is_cut_every_24h_from_its_first_event(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    start = at(D0, 8, 0)
    # an event every 1800 s for 30 h: one run, cut at offset 86400 s (D1 08:00)
    rows = [event(f"r{i:03d}", start + i * GAP, user_id="dan") for i in range(61)]
    rows.append(event("early", at(D0, 7, 29, 59), user_id="dan"))  # an earlier session: 1801 s before
    load(settings, rows, [D0, D1, D2])
    [early, first] = model_rows(settings, D0)
    assert (early["started_at"], early["event_count"]) == (at(D0, 7, 29, 59), 1)
    [second] = model_rows(settings, D1)
    assert (first["started_at"], first["ended_at"], first["event_count"]) == (start, at(D1, 7, 30), 48)
    assert (second["started_at"], second["ended_at"], second["event_count"]) == (
        at(D1, 8, 0),
        at(D1, 14, 0),
        13,
    )
    assert first["duration_s"] == 86400 - 1800
    assert model_rows(settings, D2) == []
    assert sessionise(rows) == [early, first, second]
    assert_matches(settings, rows, [D0, D1, D2])


def test_run_begun_before_the_read_window_is_anchored_at_its_start(tmp_path: Path) -> None:
    """The documented approximation: D2 reads D1 .. D3, so a run begun on D0 is cut as if it began
    at its first event on D1."""
    settings = new_settings(tmp_path)
    start = at(D0, 6, 0)
    rows = [event(f"r{i:03d}", start + i * GAP, user_id="erin") for i in range(101)]  # to D2 08:00
    load(settings, rows, [D0, D1, D2])
    true_starts = [s["started_at"] for s in sessionise(rows)]
    assert true_starts == [at(D0, 6), at(D1, 6), at(D2, 6)]
    [anchored] = model_rows(settings, D2)
    assert (anchored["started_at"], anchored["ended_at"], anchored["event_count"]) == (
        at(D2, 0),
        at(D2, 8),
        17,
    )
    assert [s["started_at"] for s in model_rows(settings, D1)] == [at(D1, 6)]  # D1 still sees D0: exact
    assert_matches(settings, rows, [D0, D1, D2])


def test_out_of_order_input_and_timestamp_ties(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    t = at(D0, 15, 0)
    rows = [
        event("m-b", t, type="page", user_id="fay", properties={"path": "/second", "referrer": "ref-b"}),
        event("m-a", t, type="page", user_id="fay", properties={"path": "/first", "referrer": "ref-a"}),
        event("m-c", t + timedelta(minutes=20), user_id="fay"),
        event("m-e", t + timedelta(minutes=45), type="page", user_id="fay", properties={"path": "/last"}),
        event(
            "m-d", t + timedelta(minutes=45), type="page", user_id="fay", properties={"path": "/penultimate"}
        ),
        event("m-f", t + timedelta(minutes=76), user_id="fay"),  # 31 min later: a new session
    ]
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    load(settings, shuffled, [D0])
    got = model_rows(settings, D0)
    assert [(s["event_count"], s["landing_path"], s["exit_path"], s["referrer"]) for s in got] == [
        (5, "/first", "/last", "ref-a"),
        (1, None, None, None),
    ]
    assert_matches(settings, rows, [D0])


def test_bounce_and_engaged_flags(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    h = 10
    cases: dict[str, tuple[list[tuple[int, str, str | None]], bool, bool]] = {
        # person: (events as (seconds offset, type, event name), is_bounce, is_engaged)
        "p-bounce": ([(0, "page", None)], True, False),
        "p-one-track": ([(0, "track", "Product Viewed")], False, False),
        "p-order": ([(0, "track", "Order Completed")], False, True),
        "p-signup": ([(0, "track", "Signed Up")], False, True),
        "p-10s": ([(0, "track", "Product Viewed"), (10, "track", "Checkout Started")], False, False),
        "p-11s": ([(0, "track", "Product Viewed"), (11, "track", "Checkout Started")], False, True),
        "p-2pages": ([(0, "page", None), (1, "page", None)], False, True),
        "p-page+track": ([(0, "page", None), (2, "track", "Product Added")], False, False),
    }
    rows = []
    for person, (events, _, _) in cases.items():
        for i, (offset, kind, name) in enumerate(events):
            when = at(D0, h, 0) + timedelta(seconds=offset)
            rows.append(
                event(f"{person}-{i}", when, type=kind, event=name, user_id=person, properties={"path": "/"})
            )
        h += 1
    load(settings, rows, [D0])
    got = {s["person_id"]: (s["is_bounce"], s["is_engaged"]) for s in model_rows(settings, D0)}
    assert got == {person: (bounce, engaged) for person, (_, bounce, engaged) in cases.items()}
    assert_matches(settings, rows, [D0])


def test_landing_exit_path_and_referrer(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    rows = [
        event("g1", at(D0, 9, 0), user_id="gus", properties={"referrer": ""}),  # empty: no referrer
        event("g2", at(D0, 9, 1), type="page", user_id="gus", properties={"path": "/home"}),
        event("g3", at(D0, 9, 2), user_id="gus", properties={"referrer": "https://search.example/"}),
        event(
            "g4", at(D0, 9, 3), type="page", user_id="gus", properties={"path": "/pricing", "referrer": "x"}
        ),
        event("g5", at(D0, 9, 4), user_id="gus"),  # a track after the last page call
        event("h1", at(D0, 9, 0), user_id="hal"),  # no page calls, no referrer
    ]
    load(settings, rows, [D0])
    got = {s["person_id"]: s for s in model_rows(settings, D0)}
    gus, hal = got["gus"], got["hal"]
    assert (gus["landing_path"], gus["exit_path"], gus["referrer"]) == (
        "/home",
        "/pricing",
        "https://search.example/",
    )
    assert (gus["event_count"], gus["page_views"], gus["is_bounce"], gus["is_engaged"]) == (5, 2, False, True)
    assert (hal["landing_path"], hal["exit_path"], hal["referrer"], hal["page_views"]) == (
        None,
        None,
        None,
        0,
    )
    assert_matches(settings, rows, [D0])


def test_person_resolution_flows_through_person_events(tmp_path: Path) -> None:
    """An anonymous page view, then an identify linking it, then a logged-in event: one session."""
    settings = new_settings(tmp_path)
    rows = [
        event("i1", at(D0, 9, 0), type="page", anonymous_id="anon-9", properties={"path": "/"}),
        event(
            "i2", at(D0, 9, 5), type="identify", user_id="ivy", anonymous_id="anon-9", traits={"plan": "pro"}
        ),
        event("i3", at(D0, 9, 10), event="Order Completed", user_id="ivy"),
        event("j1", at(D0, 9, 0), type="page", anonymous_id="anon-7", properties={"path": "/x"}),
    ]
    load(settings, rows, [D0])
    linked = {"anon-9": "ivy"}

    def person_of(row: Mapping[str, Any]) -> str:
        return row.get("user_id") or linked.get(row["anonymous_id"]) or "anonymous:" + row["anonymous_id"]

    got = model_rows(settings, D0)
    assert [(s["person_id"], s["event_count"]) for s in got] == [("anonymous:anon-7", 1), ("ivy", 3)]
    assert got[0]["is_bounce"] and got[1]["is_engaged"] and got[1]["landing_path"] == "/"
    assert_matches(settings, rows, [D0], person_of)


def test_session_id_is_md5_of_person_and_start(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    rows = [event("k1", at(D0, 7, 8, 9, 123_456), user_id="kim")]
    load(settings, rows, [D0])
    [row] = model_rows(settings, D0)
    assert row["session_id"] == hashlib.md5(b"kim|2025-01-10T07:08:09.123456Z").hexdigest()
    build_model(settings, specs()["sessions"], D0)  # a rebuild gives the same id
    assert model_rows(settings, D0) == [row]


def test_partition_reads_only_person_events_d_minus_1_to_d_plus_1(tmp_path: Path) -> None:
    settings = new_settings(tmp_path)
    days = day_range("2025-01-08", "2025-01-14")
    rows = [event(f"e{i}", at(d, 12), user_id="lee") for i, d in enumerate(days)]
    write_events(settings, rows, days=days)
    results = build_sessions(settings, days)
    warehouse = Warehouse(settings.warehouse_path)
    for day in days:
        d = date.fromisoformat(day)
        window = [x for x in days if abs((date.fromisoformat(x) - d).days) <= 1]
        assert results[f"sessions:{day}"].inputs == {"person_events": window}, day
        manifest = warehouse.read_manifest("sessions", day)
        assert manifest is not None and manifest["inputs"] == {"person_events": window}, day
    assert results["sessions:2025-01-11"].inputs == {
        "person_events": ["2025-01-10", "2025-01-11", "2025-01-12"]
    }
    assert_matches(settings, rows, days)


# ---------------------------------------------------------------------------------------
# property test

DAYS = [D0, D1, D2]
ORIGIN = at(D0, 0)
SPAN = 3 * 86400
NEAR_MIDNIGHT = [
    86400 - 1801,
    86400 - 1800,
    86400 - 1,
    86400,
    86400 + 1,
    2 * 86400 - 1800,
    2 * 86400 - 1,
    2 * 86400,
]

gaps = st.one_of(st.sampled_from([0, 0, 1, 10, 11, 1799, 1800, 1801, 3600]), st.integers(0, 4000))
bursts = st.tuples(
    st.one_of(st.sampled_from([0, *NEAR_MIDNIGHT]), st.integers(0, SPAN - 1)),
    st.lists(gaps, max_size=6),
)
# at most one dense run per example, around the 24-hour cut (48 gaps of 1799-1800 s = 23:59:12 .. 24:00:00)
dense = st.tuples(st.integers(0, SPAN - 1), st.lists(st.sampled_from([1799, 1800]), min_size=47, max_size=52))
person_plan = st.lists(bursts, min_size=1, max_size=3)
event_kind = st.sampled_from(
    [
        ("page", None),
        ("page", None),
        ("track", "Product Viewed"),
        ("track", "Order Completed"),
        ("track", "Signed Up"),
    ]
)
props = st.fixed_dictionaries(
    {}, optional={"path": st.sampled_from(["/a", "/b"]), "referrer": st.sampled_from(["", "r1", "r2"])}
)


@st.composite
def event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    persons = draw(
        st.lists(
            st.sampled_from(["user:u1", "user:u2", "anon:a1", "anon:a2"]), min_size=1, max_size=3, unique=True
        )
    )
    plans = {person: draw(person_plan) for person in persons}
    if draw(st.booleans()):
        plans[draw(st.sampled_from(persons))].append(draw(dense))
    offsets: list[tuple[str, int]] = []
    for person, plan in plans.items():
        for start, steps in plan:
            t = start
            offsets.append((person, t))
            for step in steps:
                t += step
                offsets.append((person, t))
    offsets = [(p, t) for p, t in offsets if t < SPAN]
    ids = draw(st.permutations(range(len(offsets))))
    rows = []
    for (person, t), n in zip(offsets, ids, strict=True):
        kind, name = draw(event_kind)
        user = person[5:] if person.startswith("user:") else None
        anonymous = person[5:] if person.startswith("anon:") else None
        rows.append(
            event(
                f"m{n:04d}",
                ORIGIN + timedelta(seconds=t),
                type=kind,
                event=name,
                properties=draw(props),
                user_id=user,
                anonymous_id=anonymous,
            )
        )
    draw(st.randoms(use_true_random=False)).shuffle(rows)
    return rows


@contextlib.contextmanager
def without_lineage() -> Iterator[None]:
    """Skip build_model's sqlglot column lineage (~0.4 s per sessions build, metadata computed
    after the partition is published) to keep 25 examples x 9 builds inside the time budget.
    The published parquet and manifest, which this test checks, do not depend on it."""
    if not hasattr(models, "column_lineage"):
        yield
        return
    original = models.column_lineage
    models.column_lineage = lambda *args, **kwargs: {}
    try:
        yield
    finally:
        models.column_lineage = original


@hyp_settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=event_sets())
def test_property_model_equals_oracle(rows: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, without_lineage():
        settings = new_settings(Path(tmp))
        load(settings, rows, DAYS)
        expected = [s for day in DAYS for s in expected_partition(rows, day)]
        assert model_rows(settings) == expected
        # the read-window approximation can only touch D2 (the only day whose window misses D0);
        # for D0 and D1 the model must equal the unwindowed definition
        exact = [s for s in sessionise(rows) if s["session_date"] < date.fromisoformat(D2)]
        assert [s for s in expected if s["session_date"] < date.fromisoformat(D2)] == exact
