"""funnels.sql and retention.sql against plain-Python oracles written from their definitions.

The oracles below follow the model headers (and the task's definitions), not the SQL:
- funnel: per person, entry = first step-1 event dated D (by timestamp, message_id); then for
  each later step, the earliest matching event strictly after the previous step's matched
  event with timestamp - entry timestamp <= window days * 86400 s.
- retention: cohort D = persons whose first event over all written history is dated D; a row
  for period N only when the person_events partition D+N is published; on_or_after counts
  activity on any day in [D+N, D+30].

Models are built from a temporary models folder: the real person_events.sql, funnels.sql and
retention.sql, plus small stand-ins for identities (no self-dependency, so event days may be
sparse; these tests never link an anonymousId to a userId) and persons (person_id,
first_seen_date: the only columns retention reads). ``install_funnel_steps`` points the
``funnel_steps`` seed table at a test's own funnels file.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from analytics_pipeline.models import build as model_build
from analytics_pipeline.models import loader
from analytics_pipeline.models.funnels import (
    MAX_CONVERSION_WINDOW_DAYS,
    FunnelDefinitionError,
    funnel_steps_table,
    load_funnels,
)
from analytics_pipeline.settings import PipelineSettings
from tests.model_fixtures import MODELS_DIR, SUITES_DIR, event, read_table, write_events

UTC = UTC
D0 = datetime(2025, 3, 1, tzinfo=UTC)
FUNNELS_SQL = MODELS_DIR / "funnels.sql"
RETENTION_SQL = MODELS_DIR / "retention.sql"

STAND_IN_IDENTITIES = """/*
description: Test stand-in for identities (same-day links only; no self-dependency).
grain: one row per anonymous_id
partitioned: daily
window:
  events: [0, 0]
*/
SELECT anonymous_id, min(user_id) AS user_id
FROM events
WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL
GROUP BY anonymous_id
"""

STAND_IN_PERSONS = """/*
description: Test stand-in for the persons snapshot (person_id, first_seen_date only).
grain: one row per person_id (per snapshot date)
partitioned: daily
window:
  persons: [-1, -1]
  person_events: [0, 0]
columns:
  person_id: {type: VARCHAR, description: Person id.}
  first_seen_date: {type: DATE, description: UTC date of the first event.}
*/
SELECT
    coalesce(p.person_id, t.person_id) AS person_id,
    least(p.first_seen_date, t.first_seen_date) AS first_seen_date
FROM persons AS p
FULL OUTER JOIN (
    SELECT person_id, min(event_date) AS first_seen_date
    FROM person_events
    WHERE person_id IS NOT NULL
    GROUP BY person_id
) AS t ON t.person_id = p.person_id
"""

# The same snapshot without the self-dependency (from person_events of the 40 days up to D), for
# the property tests: only the days retention is built for need a persons partition, not the
# whole month. Equal to STAND_IN_PERSONS while all events lie within 40 days of each other.
STAND_IN_PERSONS_WINDOWED = """/*
description: Test stand-in for the persons snapshot, read from person_events of D-40 .. D.
grain: one row per person_id (per snapshot date)
partitioned: daily
window:
  person_events: [-40, 0]
*/
SELECT person_id, min(event_date) AS first_seen_date
FROM person_events
WHERE person_id IS NOT NULL
GROUP BY person_id
"""


# --- which funnels the funnel_steps seed table holds ------------------------------------------


DEFAULT_FUNNELS_FILE = PipelineSettings().funnels_path


def oracle_funnels(path: Path = DEFAULT_FUNNELS_FILE) -> list[dict[str, Any]]:
    """The validated funnels as plain data for the oracle: name, window, steps' filters."""
    return [
        {
            "name": f.name,
            "conversion_window_days": f.conversion_window_days,
            "steps": [{"step_type": s.type, "step_event": s.event, "step_path": s.path} for s in f.steps],
        }
        for f in load_funnels(path)
    ]


def install_funnel_steps(monkeypatch: pytest.MonkeyPatch, funnels_file: Path = DEFAULT_FUNNELS_FILE) -> None:
    """Point the ``funnel_steps`` seed table (model_build.SEED_TABLES) at ``funnels_file``."""
    monkeypatch.setitem(
        model_build.SEED_TABLES, "funnel_steps", lambda settings: funnel_steps_table(funnels_file)
    )


@pytest.fixture(autouse=True)
def _no_lineage(monkeypatch: pytest.MonkeyPatch) -> None:
    # column lineage (sqlglot) costs ~0.5 s per build and is not under test here
    monkeypatch.setattr(model_build, "column_lineage", lambda spec, outputs, schema: {})


def make_models_dir(root: Path, *, windowed_persons: bool = False, suites: bool = True) -> Path:
    """The models folder (real person_events, funnels and retention; stand-ins for identities
    and persons) and, next to it, the suites folder ``build`` points the settings at.

    ``suites=False`` leaves the suites folder empty: the property tests compare contents
    with the oracles, and a Great Expectations suite costs ~0.15 s of a ~0.2 s build; the
    gates still run on the hand cases and are tested in tests/quality.
    """
    directory = root / "models"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELS_DIR / "person_events.sql", directory / "person_events.sql")
    shutil.copy(FUNNELS_SQL, directory / "funnels.sql")
    shutil.copy(RETENTION_SQL, directory / "retention.sql")
    (directory / "identities.sql").write_text(STAND_IN_IDENTITIES)
    (directory / "persons.sql").write_text(
        STAND_IN_PERSONS_WINDOWED if windowed_persons else STAND_IN_PERSONS
    )
    # the project's suites, but not those of the two stand-ins (their columns differ)
    suites_dir = root / "suites"
    suites_dir.mkdir(exist_ok=True)
    for suite in SUITES_DIR.glob("*.yml") if suites else ():
        if suite.stem not in ("identities", "persons"):
            shutil.copy(suite, suites_dir / suite.name)
    return directory


def day_span(days: list[str]) -> list[str]:
    """Every day from the first to the last of ``days`` (the days ``build`` builds)."""
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def day_str(offset: int) -> str:
    return (D0.date() + timedelta(days=offset)).isoformat()


def build(
    settings: PipelineSettings,
    models_dir: Path,
    days: list[str],
    targets: tuple[str, ...] = ("funnels", "retention"),
    target_days: list[str] | None = None,
) -> None:
    """person_events for the published event days; persons for every day of the range (it
    reads its previous partition; the windowed stand-in only for the target days); then the
    targets for every day of the range (or ``target_days``), after all data landed."""
    specs = {s.name: s for s in loader.load_models(models_dir)}
    settings = settings.replace(suites_dir=str(models_dir.parent / "suites"))
    every = day_span(days)
    built = every if target_days is None else sorted(target_days)
    persons_days = every if specs["persons"].self_dependent else built
    for day in every:
        if day in days:
            model_build.build_model(settings, specs["identities"], day)
            model_build.build_model(settings, specs["person_events"], day)
        if "retention" in targets and day in persons_days:
            model_build.build_model(settings, specs["persons"], day)
    for day in built:
        for target in targets:
            model_build.build_model(settings, specs[target], day)


# --- events --------------------------------------------------------------------------------


def ev(msg: str, person: str, at: datetime, kind: str) -> dict[str, Any]:
    """kind: a track event name, or 'page:/path'."""
    ids = (
        {"anonymous_id": person.removeprefix("anonymous:")}
        if person.startswith("anonymous:")
        else {"user_id": person}
    )
    if kind.startswith("page:"):
        return event(msg, at, type="page", properties={"path": kind.removeprefix("page:")}, **ids)
    return event(msg, at, type="track", event=kind, **ids)


def person_of(row: dict[str, Any]) -> str:
    return row["user_id"] or "anonymous:" + row["anonymous_id"]


def path_of(row: dict[str, Any]) -> str | None:
    return row["properties"].get("path") if row["type"] == "page" else None


# --- oracles --------------------------------------------------------------------------------


def _matches(row: dict[str, Any], step: dict[str, Any]) -> bool:
    return (
        row["type"] == step["step_type"]
        and (step["step_event"] is None or row["event"] == step["step_event"])
        and (step["step_path"] is None or path_of(row) == step["step_path"])
    )


def funnel_oracle(
    rows: list[dict[str, Any]], funnels: list[dict[str, Any]], days: list[str]
) -> list[dict[str, Any]]:
    by_person: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_person[person_of(row)].append(row)
    out = []
    for day in days:
        for f in funnels:
            steps = f["steps"]
            limit = timedelta(seconds=f["conversion_window_days"] * 86400)
            counts = [0] * len(steps)
            for person_rows in by_person.values():
                key = lambda r: (r["timestamp"], r["message_id"])  # noqa: E731
                entries = [
                    r
                    for r in person_rows
                    if r["timestamp"].date().isoformat() == day and _matches(r, steps[0])
                ]
                if not entries:
                    continue
                entry = min(entries, key=key)
                previous, reached = entry, 1
                for step in steps[1:]:
                    candidates = [
                        r for r in person_rows
                        if key(r) > key(previous) and r["timestamp"] - entry["timestamp"] <= limit and _matches(r, step)
                    ]  # fmt: skip
                    if not candidates:
                        break
                    previous = min(candidates, key=key)
                    reached += 1
                for i in range(reached):
                    counts[i] += 1
            for i, step in enumerate(steps):
                label = step["step_event"] or step["step_type"] + (
                    " " + step["step_path"] if step["step_path"] else ""
                )
                before = counts[i - 1] if i else counts[0]
                out.append({
                    "funnel": f["name"], "cohort_date": date.fromisoformat(day), "step_index": i + 1, "step": label,
                    "persons": counts[i], "steps": len(steps),
                    "conversion_from_first": counts[i] / counts[0] if counts[0] else None,
                    "conversion_from_previous": counts[i] / before if before else None,
                })  # fmt: skip
    return out


def retention_oracle(
    rows: list[dict[str, Any]], published: list[str], days: list[str]
) -> list[dict[str, Any]]:
    active: dict[str, set[date]] = defaultdict(set)
    for row in rows:
        active[person_of(row)].add(row["timestamp"].date())
    first_day = {p: min(ds) for p, ds in active.items()}
    published_days = {date.fromisoformat(d) for d in published}
    out = []
    for day in days:
        cohort_day = date.fromisoformat(day)
        cohort = [p for p, first in first_day.items() if first == cohort_day]
        last = cohort_day + timedelta(days=30)
        for n in range(31):
            on_day = cohort_day + timedelta(days=n)
            if on_day not in published_days:
                continue
            on = sum(1 for p in cohort if on_day in active[p])
            after = sum(1 for p in cohort if any(on_day <= d <= last for d in active[p]))
            out.append({
                "cohort_date": cohort_day, "period": n, "activity_date": on_day, "cohort_size": len(cohort),
                "persons_on": on, "persons_on_or_after": after,
                "retention_on": on / len(cohort) if cohort else None,
                "retention_on_or_after": after / len(cohort) if cohort else None,
            })  # fmt: skip
    return out


def _normalized(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    def fix(v: Any) -> Any:
        return round(v, 12) if isinstance(v, float) else v

    return sorted(({k: fix(v) for k, v in r.items()} for r in rows), key=lambda r: tuple(r[k] for k in keys))


def assert_funnels(
    settings: PipelineSettings, rows: list[dict[str, Any]], funnels: list[dict[str, Any]], days: list[str]
) -> list[dict[str, Any]]:
    got = read_table(settings, "funnels")
    keys = ("funnel", "cohort_date", "step_index")
    assert _normalized(got, keys) == _normalized(funnel_oracle(rows, funnels, days), keys)
    return got


def assert_retention(
    settings: PipelineSettings, rows: list[dict[str, Any]], published: list[str], days: list[str]
) -> list[dict[str, Any]]:
    got = read_table(settings, "retention")
    keys = ("cohort_date", "period")
    assert _normalized(got, keys) == _normalized(retention_oracle(rows, published, days), keys)
    return got


def counts(got: list[dict[str, Any]], funnel: str, day: str) -> list[int]:
    return [
        r["persons"]
        for r in sorted(got, key=lambda r: r["step_index"])
        if r["funnel"] == funnel and r["cohort_date"].isoformat() == day
    ]


# --- funnel definitions -----------------------------------------------------------------------


def test_shipped_funnels_table() -> None:
    table = funnel_steps_table(DEFAULT_FUNNELS_FILE)
    assert table.column_names == [
        "funnel",
        "step_index",
        "step_type",
        "step_event",
        "step_path",
        "conversion_window_days",
    ]
    rows = [
        (r["funnel"], r["step_index"], r["step_type"], r["step_event"], r["conversion_window_days"])
        for r in table.to_pylist()
    ]
    assert rows == [
        ("signup", 1, "page", None, 14), ("signup", 2, "track", "Signed Up", 14),
        ("purchase", 1, "track", "Product Viewed", 14), ("purchase", 2, "track", "Product Added", 14),
        ("purchase", 3, "track", "Checkout Started", 14), ("purchase", 4, "track", "Order Completed", 14),
    ]  # fmt: skip


def test_funnels_sql_reads_the_largest_conversion_window() -> None:
    spec = loader.load_model(FUNNELS_SQL, set(loader.SOURCE_TABLES) | {"person_events", "funnel_steps"})
    window = spec.upstreams["person_events"]
    assert (window.start, window.end) == (0, MAX_CONVERSION_WINDOW_DAYS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{}", "non-empty list"),
        ("- name: a\n  steps: [{type: page}]\n", "[0].steps: List should have at least 2 items"),
        (
            "- name: a\n  steps: [{type: page}, {type: tracks, event: X}]\n",
            "[0].steps[1].type: Input should be 'track', 'page'",
        ),
        ("- name: a\n  steps: [{type: page}, {event: X}]\n", "[0].steps[1].type: required key missing"),
        ("- name: a\n  steps: [{type: page, event: X}, {type: track}]\n", "only applies to type track"),
        ("- name: a\n  steps: [{type: track, path: /x}, {type: page}]\n", "only applies to type page"),
        (
            "- name: a\n  steps: [{type: page}, {type: page, colour: red}]\n",
            "[0].steps[1].colour: unknown key",
        ),
        ("- name: a\n  conversion_window_days: 15\n  steps: [{type: page}, {type: page}]\n", "1..14"),
        ("- name: a\n  conversion_window_days: 0\n  steps: [{type: page}, {type: page}]\n", "1..14"),
        (
            "- {name: a, steps: [{type: page}, {type: page}]}\n- {name: a, steps: [{type: page}, {type: page}]}\n",
            "defined twice",
        ),
        ("- name: [x\n", "not valid YAML"),
    ],
)
def test_invalid_funnels_file_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad_funnels.yml"
    path.write_text(text)
    with pytest.raises(FunnelDefinitionError) as raised:
        funnel_steps_table(path)
    assert str(path) in str(raised.value) and message in str(raised.value)


# --- funnels: hand cases -------------------------------------------------------------------------


def test_funnels_hand_cases(
    settings: PipelineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_funnel_steps(monkeypatch)
    t = D0 + timedelta(hours=10)
    day14 = timedelta(days=14)
    s = timedelta(seconds=1)
    rows = [
        # window boundary: Order Completed exactly 14 days after entry counts; 14 d + 1 s does not
        ev("a1", "u-exact", t, "Product Viewed"),
        ev("a2", "u-exact", t + 1 * s, "Product Added"),
        ev("a3", "u-exact", t + 2 * s, "Checkout Started"),
        ev("a4", "u-exact", t + day14, "Order Completed"),
        ev("b1", "u-late", t, "Product Viewed"),
        ev("b2", "u-late", t + 1 * s, "Product Added"),
        ev("b3", "u-late", t + 2 * s, "Checkout Started"),
        ev("b4", "u-late", t + day14 + s, "Order Completed"),
        # a later step-1 event does not reset the window: Product Added is within 14 d of the
        # second view but not of the first (entry) one
        ev("c1", "u-reset", D0, "Product Viewed"),
        ev("c2", "u-reset", D0 + timedelta(hours=20), "Product Viewed"),
        ev("c3", "u-reset", D0 + day14 + timedelta(hours=1), "Product Added"),
        # out of order: Product Added before the view and Checkout before Added do not count
        ev("d1", "u-order", t - s, "Product Added"),
        ev("d2", "u-order", t, "Product Viewed"),
        ev("d3", "u-order", t + s, "Checkout Started"),
        ev("d4", "u-order", t + 2 * s, "Product Added"),
        # a step counts once; repeated steps and other events in between are fine
        ev("e1", "u-repeat", t, "Product Viewed"),
        ev("e2", "u-repeat", t + s, "Product Added"),
        ev("e3", "u-repeat", t + 2 * s, "Product Added"),
        ev("e4", "u-repeat", t + 3 * s, "page:/pricing"),
        ev("e5", "u-repeat", t + 4 * s, "Product Added"),
        # same timestamp: order by message_id ("f-b" view then "f-a" added is not in order)
        ev("f-b", "u-tie-bad", t, "Product Viewed"),
        ev("f-a", "u-tie-bad", t, "Product Added"),
        ev("g-a", "u-tie-ok", t, "Product Viewed"),
        ev("g-b", "u-tie-ok", t, "Product Added"),
        # an entry on D and another on D+1: each day is its own cohort
        ev("h1", "u-two-days", t, "Product Viewed"),
        ev("h2", "u-two-days", t + timedelta(days=1), "Product Viewed"),
        ev("h3", "u-two-days", t + timedelta(days=1, seconds=5), "Product Added"),
        # signup funnel: any page view, then Signed Up; an anonymous person too
        ev("i1", "anonymous:x1", t, "page:/"),
        ev("i2", "anonymous:x1", t + s, "Signed Up"),
        ev("j1", "u-signup-wrong-order", t, "Signed Up"),
        ev("j2", "u-signup-wrong-order", t + s, "page:/"),
    ]
    published = write_events(settings, rows)
    models_dir = make_models_dir(tmp_path)
    build(settings, models_dir, published, targets=("funnels",))
    got = assert_funnels(settings, rows, oracle_funnels(), day_span(published))
    d0, d1, d14 = day_str(0), day_str(1), day_str(14)
    # u-exact 4; u-late 3; u-reset 1; u-order 2 (view, added); u-repeat 2; u-tie-bad 1; u-tie-ok 2; u-two-days 2
    assert counts(got, "purchase", d0) == [8, 6, 2, 1]
    assert counts(got, "purchase", d1) == [1, 1, 0, 0]
    assert counts(got, "signup", d0) == [
        3,
        1,
    ]  # anonymous:x1, u-signup-wrong-order, u-repeat (its /pricing view)
    assert counts(got, "purchase", d14) == [0, 0, 0, 0]  # a day without entries still has rows
    day14_rows = [r for r in got if r["cohort_date"].isoformat() == d14]
    assert all(
        r["conversion_from_first"] is None and r["conversion_from_previous"] is None for r in day14_rows
    )
    first = {
        r["step_index"]: r for r in got if r["funnel"] == "purchase" and r["cohort_date"].isoformat() == d0
    }
    assert first[1]["conversion_from_previous"] == 1.0 and first[3]["conversion_from_previous"] == 2 / 6
    assert first[4]["conversion_from_first"] == 1 / 8 and first[2]["step"] == "Product Added"


def test_funnels_partition_grows_as_later_days_land(
    settings: PipelineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_funnel_steps(monkeypatch)
    rows = [ev("a1", "u1", D0, "Product Viewed"), ev("a2", "u1", D0 + timedelta(days=2), "Product Added")]
    write_events(settings, rows[:1], days=[day_str(1)])
    models_dir = make_models_dir(tmp_path)
    build(settings, models_dir, [day_str(0), day_str(1)], targets=("funnels",))
    assert counts(read_table(settings, "funnels", day_str(0)), "purchase", day_str(0)) == [1, 0, 0, 0]
    write_events(settings, rows[1:])
    build(settings, models_dir, [day_str(0), day_str(1), day_str(2)], targets=("funnels",))
    assert counts(read_table(settings, "funnels", day_str(0)), "purchase", day_str(0)) == [1, 1, 0, 0]


# --- retention: hand cases -----------------------------------------------------------------------


def test_retention_hand_cases(
    settings: PipelineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_funnel_steps(monkeypatch)
    at = lambda n, h=12: D0 + timedelta(days=n, hours=h)  # noqa: E731
    rows = [
        # cohort D0: u1 active D0, D1, D3; u2 active D0 (twice), D5, D31 (outside D0's window)
        ev("a1", "u1", at(0), "Product Viewed"),
        ev("a2", "u1", at(1), "Product Viewed"),
        ev("a3", "u1", at(3), "Product Viewed"),
        ev("b1", "u2", at(0, 0), "page:/"),
        ev("b2", "u2", at(0, 23), "page:/"),
        ev("b3", "u2", at(5), "page:/"),
        ev("b4", "u2", at(31), "page:/"),
        # cohort D1: u3 (u1 is active on D1 but is not new)
        ev("c1", "u3", at(1), "Product Viewed"),
        ev("c2", "u3", at(30), "Product Viewed"),
    ]
    # D2 published but empty; D4 never published (no events): no period 4 rows
    published = write_events(settings, rows, days=[day_str(2)])
    assert day_str(4) not in published
    models_dir = make_models_dir(tmp_path)
    build(settings, models_dir, published, targets=("retention",))
    got = assert_retention(settings, rows, published, day_span(published))
    d0 = {r["period"]: r for r in got if r["cohort_date"] == D0.date()}
    assert sorted(d0) == [0, 1, 2, 3, 5, 30]
    assert [(d0[n]["persons_on"], d0[n]["persons_on_or_after"]) for n in sorted(d0)] == [
        (2, 2),
        (1, 2),
        (0, 2),
        (1, 2),
        (1, 1),
        (0, 0),
    ]
    assert (
        d0[0]["cohort_size"] == 2 and d0[1]["retention_on"] == 0.5 and d0[3]["retention_on_or_after"] == 1.0
    )
    d1 = {r["period"]: r for r in got if r["cohort_date"] == D0.date() + timedelta(days=1)}
    assert d1[0]["cohort_size"] == 1 and d1[29]["persons_on"] == 1 and d1[30]["persons_on"] == 0
    assert d1[30]["persons_on_or_after"] == 0  # u2's D31 activity is not u3's, and D31 is D1+30
    empty = [r for r in got if r["cohort_date"] == D0.date() + timedelta(days=2)]
    assert empty and all(r["cohort_size"] == 0 and r["retention_on"] is None for r in empty)


def test_retention_reports_only_elapsed_periods(
    settings: PipelineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_funnel_steps(monkeypatch)
    rows = [ev("a1", "u1", D0, "Product Viewed"), ev("a2", "u1", D0 + timedelta(days=1), "Product Viewed"),
            ev("a3", "u1", D0 + timedelta(days=3), "Product Viewed")]  # fmt: skip
    models_dir = make_models_dir(tmp_path)
    write_events(settings, rows[:2])
    build(settings, models_dir, [day_str(0), day_str(1)], targets=("retention",))
    first = read_table(settings, "retention", day_str(0))
    assert [(r["period"], r["persons_on"], r["persons_on_or_after"]) for r in first] == [(0, 1, 1), (1, 1, 1)]
    write_events(settings, rows[2:], days=[day_str(2)])
    build(settings, models_dir, [day_str(0), day_str(1), day_str(2), day_str(3)], targets=("retention",))
    later = read_table(settings, "retention", day_str(0))
    assert [(r["period"], r["persons_on"], r["persons_on_or_after"]) for r in later] == [
        (0, 1, 1),
        (1, 1, 1),
        (2, 0, 1),
        (3, 1, 1),
    ]


# --- hypothesis -------------------------------------------------------------------------------------

HYPOTHESIS_FUNNELS = [
    {"name": "abc", "conversion_window_days": 1,
     "steps": [{"type": "track", "event": "A"}, {"type": "track", "event": "B"}, {"type": "track", "event": "C"}]},
    {"name": "loop", "conversion_window_days": 2,
     "steps": [{"type": "page", "path": "/p"}, {"type": "track", "event": "A"}, {"type": "page", "path": "/p"}]},
    {"name": "any_page", "conversion_window_days": 14, "steps": [{"type": "page"}, {"type": "track", "event": "B"}]},
]  # fmt: skip
KINDS = ["A", "B", "C", "page:/p", "page:/q"]
SECONDS = [0, 1, 3600, 86399]
# Event days: the first days (entries), and days 13-15, so that the 14-day window of
# any_page (inclusive, exact seconds) and the end of the D .. D+14 read are reached from
# entries on days 0 and 1.
FUNNEL_DAYS = [0, 1, 2, 13, 14, 15]


@st.composite
def funnel_events(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 18))
    ids = draw(st.permutations(range(n)))
    rows = []
    for i in range(n):
        day = draw(st.sampled_from(FUNNEL_DAYS))
        at = D0 + timedelta(days=day, seconds=draw(st.sampled_from(SECONDS)))
        person = draw(st.sampled_from(["u1", "u2", "anonymous:x"]))
        rows.append(ev(f"m{ids[i]:02d}", person, at, draw(st.sampled_from(KINDS))))
    return rows


# always run: entries on day 0; steps exactly at the 1-, 2- and 14-day bounds and 1 s past them
FUNNEL_EDGE_EXAMPLE = [
    ev("m00", "u1", D0, "page:/p"),
    ev("m01", "u1", D0 + timedelta(seconds=1), "A"),
    ev("m02", "u1", D0 + timedelta(days=1), "B"),
    ev("m03", "u1", D0 + timedelta(days=2), "page:/p"),
    ev("m04", "u1", D0 + timedelta(days=14), "B"),
    ev("m05", "u2", D0 + timedelta(seconds=1), "A"),
    ev("m06", "u2", D0 + timedelta(days=1, seconds=2), "B"),
    ev("m07", "u2", D0 + timedelta(seconds=3), "page:/q"),
    ev("m08", "u2", D0 + timedelta(days=14, seconds=4), "B"),
    ev("m09", "anonymous:x", D0 + timedelta(days=15), "page:/q"),
]


@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=funnel_events())
@example(rows=FUNNEL_EDGE_EXAMPLE)
def test_funnels_match_oracle(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> None:
    root = tmp_path_factory.mktemp("funnels")
    funnels_file = root / "funnels.yml"
    funnels_file.write_text(yaml.safe_dump(HYPOTHESIS_FUNNELS))
    settings = PipelineSettings(data_dir=str(root / "data"), duckdb_memory_limit="1GB", duckdb_threads=2)
    with pytest.MonkeyPatch.context() as mp:
        install_funnel_steps(mp, funnels_file)
        mp.setattr(model_build, "column_lineage", lambda spec, outputs, schema: {})
        published = write_events(settings, rows)
        # every day with an event is built (a day without one has no entries: all counts 0)
        build(settings, make_models_dir(root, suites=False), published, ("funnels",), target_days=published)
        assert_funnels(settings, rows, oracle_funnels(funnels_file), published)


RETENTION_SPAN = 33  # days 0..32: cohorts of days 0, 1 and 2 reach D+30 and D+31
RETENTION_PERSONS = ["u1", "u2", "u3", "anonymous:x"]
# a person's first day: mostly one whose D+30 and D+31 lie in the span
FIRST_DAYS = st.one_of(st.sampled_from([0, 1, 2]), st.integers(0, RETENTION_SPAN - 1))
# days after the first one the person is active again: favour the last periods and just past them
LATER = st.one_of(st.sampled_from([1, 2, 29, 30, 31]), st.integers(1, RETENTION_SPAN - 1))
# days that may be published empty (then elapsed periods without activity) or not at all
MAYBE_EMPTY_DAYS = [2, 29, 30, 31, 32]


@st.composite
def retention_events(draw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Per person a first day and later days of activity (cohort D active on D+29, D+30,
    D+31 ... is common, not left to chance); a later day past the span is dropped."""
    persons = draw(st.lists(st.sampled_from(RETENTION_PERSONS), min_size=1, max_size=4, unique=True))
    days: list[tuple[str, int]] = []
    for person in persons:
        first = draw(FIRST_DAYS)
        later = [first + k for k in draw(st.lists(LATER, max_size=4)) if first + k < RETENTION_SPAN]
        days += [(person, day) for day in [first, *later]]
    ids = draw(st.permutations(range(len(days))))
    rows = [
        ev(f"m{n:02d}", person, D0 + timedelta(days=day, hours=draw(st.sampled_from([0, 23]))), "page:/")
        for (person, day), n in zip(days, ids, strict=True)
    ]
    empty = draw(st.lists(st.sampled_from(MAYBE_EMPTY_DAYS), unique=True, max_size=3))
    return rows, [day_str(d) for d in empty]


def _r(msg: str, person: str, day: int, hour: int = 12) -> dict[str, Any]:
    return ev(msg, person, D0 + timedelta(days=day, hours=hour), "page:/")


# always run: cohort 0 (u1, u3) and cohort 1 (u2) active exactly on D+29, D+30 and D+31
RETENTION_EDGE_EXAMPLE = (
    [
        _r("m00", "u1", 0), _r("m01", "u1", 30, 23), _r("m02", "u1", 31, 0),
        _r("m03", "u3", 0, 23), _r("m04", "u3", 31, 0),
        _r("m05", "u2", 1, 0), _r("m06", "u2", 30), _r("m07", "u2", 32, 23),
        _r("m08", "anonymous:x", 2), _r("m09", "anonymous:x", 29), _r("m10", "anonymous:x", 32, 0),
    ],
    [day_str(2)],
)  # fmt: skip
# always run: D+30 of cohort 0 is never published, D+31 is: no period-30 row, D+31 not counted
RETENTION_UNPUBLISHED_EXAMPLE = ([_r("m00", "u1", 0), _r("m01", "u1", 31), _r("m02", "u2", 29)], [])


@hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=retention_events())
@example(case=RETENTION_EDGE_EXAMPLE)
@example(case=RETENTION_UNPUBLISHED_EXAMPLE)
def test_retention_matches_oracle(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[list[dict[str, Any]], list[str]]
) -> None:
    rows, empty_days = case
    root = tmp_path_factory.mktemp("retention")
    settings = PipelineSettings(data_dir=str(root / "data"), duckdb_memory_limit="1GB", duckdb_threads=2)
    with pytest.MonkeyPatch.context() as mp:
        install_funnel_steps(mp)
        mp.setattr(model_build, "column_lineage", lambda spec, outputs, schema: {})
        published = write_events(settings, rows, days=empty_days)
        models_dir = make_models_dir(root, windowed_persons=True, suites=False)
        # every published day is built: each cohort day has events, so it is published
        build(settings, models_dir, published, ("retention",), target_days=published)
        got = assert_retention(settings, rows, published, published)
        for cohort in {r["cohort_date"] for r in got}:
            by_period = sorted((r for r in got if r["cohort_date"] == cohort), key=lambda r: r["period"])
            after = [r["persons_on_or_after"] for r in by_period]
            assert after == sorted(after, reverse=True)
            assert all(0 <= r["period"] <= 30 for r in by_period)
