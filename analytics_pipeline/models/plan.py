"""Which partitions to rebuild, and in what order, when upstream partitions change.

Late data changes an ``events`` date; a rollback changes a partition of any table. Every
model partition that reads a changed one (windows reach backwards and forwards, snapshots
chain forward) is rebuilt in dependency order; a changed ``raw_events`` arrival day first
rebuilds the event dates that read it (``events[E]`` reads ``raw_events[E..E+L]``). A
partition that reads a partition whose latest blocking gate failed is left out until a
rerun passes (``AutomationCondition.all_deps_blocking_checks_passed``'s rule, read from the
warehouse's gate records).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from analytics_pipeline.events.late_window import arrival_days
from analytics_pipeline.models.loader import ModelError, ModelSpec
from analytics_pipeline.quality.gate_status import blocked_partitions
from analytics_pipeline.warehouse.storage import Warehouse
from analytics_pipeline.warehouse.tables import EVENT_ID_CONFLICTS, EVENTS, RAW_EVENTS

# the jobs that run a planned group of partitions (defined in defs/models.py and defs/events.py)
DAILY_MODELS_JOB = "models_job"
DIMENSIONS_JOB = "dimensions_job"
EVENTS_JOB = "late_window_job"  # rebuilds the events (and event_id_conflicts) of one date
EVENTS_STEP_TABLES = [EVENTS, EVENT_ID_CONFLICTS]  # what the events step builds and publishes together

Blocked = dict[tuple[str, str], list[str]]  # (table, partition) -> failed blocking checks


@dataclass(frozen=True)
class PlannedRun:
    """Consecutive planned partitions of one date (or the dimensions), built in one run."""

    job: str
    partition: str | None
    models: list[str] = field(default_factory=list)


def affected_partitions(
    specs: list[ModelSpec], changed: dict[str, set[str]], data_days: list[str]
) -> list[tuple[ModelSpec, str | None]]:
    """Every model partition that reads a changed partition, in an order that can be built.

    ``changed`` maps a table to its changed days (e.g. ``{"events": {"2025-01-03"}}`` or
    ``{"sessions": {"2025-01-03"}}``); ``data_days`` bounds the days a partitioned model is
    built for. A partition D of a model with window [s, e] on a changed upstream day c is
    affected when c - e <= D <= c - s; a model that reads its own previous partition passes
    the change on to every later day. A changed partition is not itself rebuilt (late data
    rebuilt it, or a rollback restored it on purpose); its readers are, its own later
    snapshots included.
    """
    given = {table: set(days) for table, days in changed.items()}
    dirty = {table: set(days) for table, days in changed.items()}
    plan: list[tuple[ModelSpec, str | None]] = []
    allowed = set(data_days)
    for spec in specs:  # load_models orders upstreams first
        hit: set[str] = set()
        unpartitioned_hit = False
        for upstream, window in spec.upstreams.items():
            if upstream == spec.name:
                continue
            for day in dirty.get(upstream, set()):
                if not spec.partitioned or window.latest:
                    unpartitioned_hit = True
                    if spec.partitioned:  # the latest snapshot feeds every later partition
                        hit.update(d for d in allowed if d >= day)
                    continue
                base = date.fromisoformat(day)
                for offset in range(window.start, window.end + 1):
                    candidate = (base - timedelta(days=offset)).isoformat()
                    if candidate in allowed:
                        hit.add(candidate)
        own = given.get(spec.name, set())
        if spec.self_dependent and own:  # its later partitions read the changed one
            hit.update(d for d in allowed if d > min(own))
        if spec.self_dependent and hit:
            first = min(hit)
            hit.update(d for d in allowed if d >= first)
        hit -= own
        if spec.partitioned:
            plan.extend((spec, d) for d in sorted(hit))
            dirty[spec.name] = hit | own
        elif unpartitioned_hit:
            plan.append((spec, None))
            dirty[spec.name] = {"all"}
    return _topological(plan, specs)


def _topological(
    plan: list[tuple[ModelSpec, str | None]], specs: list[ModelSpec]
) -> list[tuple[ModelSpec, str | None]]:
    """Order the plan so every partition comes after the planned partitions it reads.

    Windows reach forward too (sessions[D] reads person_events[D+1], retention[D] reads
    up to D+30), so "oldest day first" is not enough. Among ready partitions the oldest
    day and the most upstream model go first, which keeps the order deterministic.
    """
    rank = {spec.name: i for i, spec in enumerate(specs)}
    nodes = {(spec.name, day): spec for spec, day in plan}
    waiting_on: dict[tuple[str, str | None], set[tuple[str, str | None]]] = {}
    for (name, day), spec in nodes.items():
        needs: set[tuple[str, str | None]] = set()
        for upstream, window in spec.upstreams.items():
            for other_name, other_day in nodes:
                if other_name != upstream or (other_name, other_day) == (name, day):
                    continue
                if day is None or other_day is None or window.latest or other_day in window.days(day):
                    needs.add((other_name, other_day))
        waiting_on[(name, day)] = needs
    ready = [key for key, needs in waiting_on.items() if not needs]
    ordered: list[tuple[ModelSpec, str | None]] = []
    done: set[tuple[str, str | None]] = set()
    while ready:
        ready.sort(key=lambda k: (k[1] is None, k[1] or "", rank[k[0]]))
        key = ready.pop(0)
        done.add(key)
        ordered.append((nodes[key], key[1]))
        for other, needs in waiting_on.items():
            if other not in done and other not in ready and key in needs and needs <= done:
                ready.append(other)
    if len(ordered) != len(nodes):
        raise ModelError(f"model partitions depend on each other in a cycle: {sorted(set(nodes) - done)}")
    return ordered


def upstream_partitions(spec: ModelSpec, day: str | None, warehouse: Warehouse) -> dict[str, set[str]]:
    """The upstream partitions a model partition reads."""
    upstream: dict[str, set[str]] = {}
    for table, window in spec.upstreams.items():
        if window.latest or day is None:
            published = warehouse.published_days(table)
            upstream[table] = set([d for d in published if day is None or d <= day][-1:])
        else:  # every day of the window: a day whose first build failed its gate is not published
            upstream[table] = set(window.days(day))
    return upstream


def skip_message(name: str, day: str | None, blocked: Blocked) -> str:
    return f"not rebuilding {name} {day or ''}: upstream blocking checks failed {blocked}"


def event_days_reading(arrival_day: str, late_window_days: int) -> list[str]:
    """The event dates whose ``events`` partition reads ``raw_events`` of this arrival day, oldest first."""
    day = date.fromisoformat(arrival_day)
    return [(day - timedelta(days=i)).isoformat() for i in range(late_window_days, -1, -1)]


def plan_rebuilds(
    specs: list[ModelSpec],
    changed: Mapping[str, Iterable[str]] | Iterable[str],
    warehouse: Warehouse,
    on_skip: Callable[[str, str | None, Blocked], None] | None = None,
    late_window_days: int | None = None,
) -> list[PlannedRun]:
    """The runs that bring everything downstream up to date after these partitions changed.

    ``changed`` maps a table to its changed days, ``{"sessions": {"2025-01-03"}}``; a plain
    set of days means ``events`` dates (late data). A changed ``raw_events`` arrival day D
    first rebuilds the published event dates D-L .. D that read it (``late_window_days`` is
    L, required then), one ``late_window_job`` run each, and those dates count as changed
    ``events``. Then the model runs follow the dependency order of model partitions,
    grouping consecutive partitions of the same date into one run. A partition that reads a
    partition whose latest blocking check failed is left out and passed to ``on_skip``.
    """
    if isinstance(changed, Mapping):
        changes = {table: set(days) for table, days in changed.items()}
    else:
        changes = {EVENTS: set(changed)}
    runs: list[PlannedRun] = []
    data_days = warehouse.published_days(EVENTS)
    if changes.get(RAW_EVENTS):
        if late_window_days is None:
            raise ValueError("plan_rebuilds: a changed raw_events day needs late_window_days")
        published = set(data_days)
        readers = {e for d in changes[RAW_EVENTS] for e in event_days_reading(d, late_window_days)}
        for event_day in sorted(readers & published):
            blocked = blocked_partitions(warehouse, {RAW_EVENTS: arrival_days(event_day, late_window_days)})
            if blocked:
                if on_skip:
                    on_skip(EVENTS, event_day, blocked)
                continue
            runs.append(PlannedRun(EVENTS_JOB, event_day, list(EVENTS_STEP_TABLES)))
            changes.setdefault(EVENTS, set()).add(event_day)
    plan = affected_partitions(specs, changes, data_days)
    for spec, day in plan:
        blocked = blocked_partitions(warehouse, upstream_partitions(spec, day, warehouse))
        if blocked:
            if on_skip:
                on_skip(spec.name, day, blocked)
            continue
        job = DAILY_MODELS_JOB if day else DIMENSIONS_JOB
        if runs and runs[-1].job == job and runs[-1].partition == day:
            runs[-1].models.append(spec.name)
        else:
            runs.append(PlannedRun(job, day, [spec.name]))
    return runs
