"""Modeled tables from ``assets/models/*.sql``: load, resolve upstreams, build a partition.

A model is one SQL file: a ``/* ... */`` YAML header (description, grain, partitioning,
the partition window it reads of each upstream, column descriptions) and one SELECT.
Upstreams are the tables the SELECT names (found with sqlglot), so adding a table is
adding a file. While a partition is built each upstream is a view over exactly the
partitions its window names. The SQL reads the partition date with
``getvariable('partition_date')`` and the published days of an upstream's window with
``getvariable('<upstream>_partitions')`` (a DATE list).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlglot
import yaml
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage

from analytics_pipeline.funnel_definitions import funnel_steps_table
from analytics_pipeline.gates import GateFailed, audit
from analytics_pipeline.quality import CheckOutcome
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.storage import PublishResult, Warehouse

# Tables built by Python steps rather than SQL files; models may read them.
SOURCE_TABLES = {"events": "daily", "raw_events": "daily", "quarantined_events": "daily"}
# Small unpartitioned tables built in Python from files in assets/ (e.g. funnels.yml); a
# model that names one gets it as a view while it is built. Not upstream partitions.
SEED_TABLES: dict[str, Callable[[], pa.Table]] = {"funnel_steps": funnel_steps_table}
HEADER = re.compile(r"\A\s*/\*(?P<yaml>.*?)\*/(?P<sql>.*)\Z", re.DOTALL)
DEFAULT_CONVERSION_EVENTS = ("Order Completed", "Signed Up")


class ModelError(ValueError):
    """A model file that cannot be loaded; the message names the file."""


@dataclass(frozen=True)
class Window:
    """Partitions of an upstream read for partition D: D+start .. D+end, or the latest one."""

    start: int = 0
    end: int = 0
    latest: bool = False

    def days(self, day: str) -> list[str]:
        base = date.fromisoformat(day)
        return [(base + timedelta(days=i)).isoformat() for i in range(self.start, self.end + 1)]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    sql: str
    description: str
    grain: str
    partitioned: bool
    upstreams: dict[str, Window]
    columns: dict[str, str] = field(default_factory=dict)
    column_types: dict[str, str] = field(default_factory=dict)
    seeds: tuple[str, ...] = ()

    @property
    def self_dependent(self) -> bool:
        return self.name in self.upstreams


def _window(model: str, upstream: str, raw: Any) -> Window:
    if raw == "latest":
        return Window(latest=True)
    if isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) for v in raw) and raw[0] <= raw[1]:
        return Window(raw[0], raw[1])
    raise ModelError(
        f"{model}: window for {upstream} must be [start, end] day offsets or 'latest', got {raw!r}"
    )


def referenced_tables(sql: str) -> set[str]:
    """Tables a SELECT reads, without its own CTE names."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return {table.name for table in tree.find_all(exp.Table) if table.name} - ctes


def load_model(path: Path, known_tables: set[str]) -> ModelSpec:
    text = path.read_text()
    match = HEADER.match(text)
    if not match:
        raise ModelError(f"{path}: a model starts with a /* YAML header */ block")
    try:
        header = yaml.safe_load(match["yaml"]) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: header is not YAML: {exc}") from exc
    name = str(header.get("name", path.stem))
    sql = match["sql"].strip().rstrip(";")
    try:
        tables = referenced_tables(sql)
    except sqlglot.errors.ParseError as exc:
        raise ModelError(f"{path}: SQL does not parse: {exc}") from exc
    unknown = tables - known_tables
    if unknown:
        raise ModelError(f"{path}: reads unknown tables {sorted(unknown)}; known: {sorted(known_tables)}")
    partitioned = str(header.get("partitioned", "daily")) == "daily"
    windows = header.get("window") or {}
    stray = set(windows) - (tables - set(SEED_TABLES))
    if stray:
        raise ModelError(f"{path}: window names tables the SQL does not read: {sorted(stray)}")
    upstreams = {t: _window(name, t, windows.get(t, [0, 0])) for t in sorted(tables) if t not in SEED_TABLES}
    for required in ("description", "grain"):
        if not header.get(required):
            raise ModelError(f"{path}: header needs '{required}'")
    columns: dict[str, str] = {}
    column_types: dict[str, str] = {}
    for column, about in (header.get("columns") or {}).items():
        if isinstance(about, dict):
            columns[str(column)] = str(about.get("description", ""))
            if about.get("type"):
                column_types[str(column)] = str(about["type"])
        else:
            columns[str(column)] = str(about)
    if name in upstreams and (upstreams[name].start, upstreams[name].end, upstreams[name].latest) != (
        -1,
        -1,
        False,
    ):
        raise ModelError(f"{path}: a model reads its own previous partition only: window {name}: [-1, -1]")
    if name in tables and set(column_types) != set(columns):
        raise ModelError(
            f"{path}: a model that reads its own previous partition declares every column's type"
        )
    return ModelSpec(
        name=name,
        path=path,
        sql=sql,
        description=str(header["description"]).strip(),
        grain=str(header["grain"]).strip(),
        partitioned=partitioned,
        upstreams=upstreams,
        columns=columns,
        column_types=column_types,
        seeds=tuple(sorted(tables & set(SEED_TABLES))),
    )


def load_models(directory: Path) -> list[ModelSpec]:
    """Every model in the folder, in an order where upstreams come first."""
    paths = sorted(directory.glob("*.sql"))
    names = {p.stem for p in paths}
    known = set(SOURCE_TABLES) | set(SEED_TABLES) | names
    specs = {spec.name: spec for spec in (load_model(p, known) for p in paths)}
    ordered: list[ModelSpec] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in SOURCE_TABLES or any(s.name == name for s in ordered):
            return
        if name in visiting:
            raise ModelError(f"models form a cycle through {name}")
        visiting.add(name)
        for upstream in specs[name].upstreams:
            if upstream != name:
                visit(upstream)
        visiting.discard(name)
        ordered.append(specs[name])

    for name in sorted(specs):
        visit(name)
    return ordered


@dataclass
class ModelResult:
    name: str
    day: str | None
    rows: int
    published: PublishResult
    inputs: dict[str, list[str]]
    duration_s: float
    lineage: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    gate_duration_s: float = 0.0  # of duration_s, spent in the audit before publishing


_LINEAGE_CACHE: dict[str, dict[str, list[tuple[str, str]]]] = {}


def column_lineage(
    spec: ModelSpec, output_columns: list[str], schema: dict[str, dict[str, str]]
) -> dict[str, list[tuple[str, str]]]:
    """Lineage per model, SQL and input schema (cached: tracing costs ~0.3 s a build)."""
    key = repr(
        (spec.name, spec.sql, output_columns, sorted((t, sorted(c.items())) for t, c in schema.items()))
    )
    if key not in _LINEAGE_CACHE:
        _LINEAGE_CACHE[key] = _trace_lineage(spec, output_columns, schema)
    return _LINEAGE_CACHE[key]


def _trace_lineage(
    spec: ModelSpec, output_columns: list[str], schema: dict[str, dict[str, str]]
) -> dict[str, list[tuple[str, str]]]:
    """For each output column, the upstream (table, column) pairs it is computed from.

    Columns sqlglot cannot trace (e.g. from ``getvariable``) map to an empty list.
    """
    result: dict[str, list[tuple[str, str]]] = {}
    for column in output_columns:
        try:
            node = lineage(column, spec.sql, schema=schema, dialect="duckdb")
        except (SqlglotError, KeyError, ValueError):
            result[column] = []
            continue
        sources = {
            (n.expression.name, n.name.split(".")[-1])
            for n in node.walk()
            if isinstance(n.expression, exp.Table)
        }
        result[column] = sorted(sources)
    return result


def _view_sql(
    warehouse: Warehouse, table: str, window: Window, day: str | None, spec: ModelSpec
) -> tuple[str, list[str]]:
    """A view over exactly the partitions the window names (an empty typed view if none exist)."""
    published = warehouse.published_days(table)
    if window.latest:
        chosen = [d for d in published if day is None or d <= day][-1:]
    elif day is None:
        chosen = published
    else:
        wanted = set(window.days(day))
        chosen = [d for d in published if d in wanted]
    files = [str(warehouse.partition_file(table, d)) for d in chosen]
    if files:
        listed = ", ".join(f"'{f}'" for f in files)
        return (
            f"SELECT * FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false)",
            chosen,
        )
    schema_file = _any_partition(warehouse, table)
    if schema_file is None:
        raise ModelError(f"{spec.name}: upstream {table} has no published partition yet")
    return f"SELECT * FROM read_parquet('{schema_file}', hive_partitioning = false) WHERE false", []


def _any_partition(warehouse: Warehouse, table: str) -> Path | None:
    days = warehouse.published_days(table)
    return warehouse.partition_file(table, days[-1]) if days else None


def build_model(settings: PipelineSettings, spec: ModelSpec, day: str | None) -> ModelResult:
    """Build one partition (or the whole unpartitioned table), audit it, publish it atomically.

    Raises GateFailed (and publishes nothing) when an ERROR check of its suite fails.
    """
    started = time.perf_counter()
    warehouse = Warehouse(settings.warehouse_path)
    partition = day if spec.partitioned and day else "all"
    token = uuid.uuid4().hex
    warehouse.clear_staging(spec.name, partition)
    staged = warehouse.staging_file(spec.name, partition, token)
    inputs: dict[str, list[str]] = {}
    con = settings.connect()
    try:
        for seed in spec.seeds:
            con.register(seed, SEED_TABLES[seed]())
        for table, window in spec.upstreams.items():
            if table == spec.name and day and not [d for d in warehouse.published_days(table) if d < day]:
                # the first partition of a self-dependent model starts from an empty state
                typed = ", ".join(f'"{c}" {t}' for c, t in spec.column_types.items())
                con.execute(f'CREATE TEMP TABLE "{table}" ({typed})')
                con.execute(f"SET VARIABLE {table}_partitions = CAST([] AS DATE[])")
                inputs[table] = []
                continue
            if table == spec.name and day:
                previous = set(window.days(day))
                if not previous & set(warehouse.published_days(table)):
                    raise ModelError(
                        f"{spec.name} {day}: reads its own partitions {sorted(previous)}, which are not "
                        "built yet; build the earlier partitions first"
                    )
            view, inputs[table] = _view_sql(warehouse, table, window, day, spec)
            con.execute(f'CREATE TEMP VIEW "{table}" AS {view}')
            # which of the window's days are published: "has this period elapsed?"
            listed = ", ".join(f"DATE '{d}'" for d in inputs[table])
            con.execute(f"SET VARIABLE {table}_partitions = CAST([{listed}] AS DATE[])")
        if day:
            con.execute(f"SET VARIABLE partition_date = DATE '{day}'")
        con.execute(f"SET VARIABLE late_window_days = {int(settings.late_window_days)}")
        conversions = ", ".join("'" + e.replace("'", "''") + "'" for e in DEFAULT_CONVERSION_EVENTS)
        con.execute(f"SET VARIABLE conversion_events = [{conversions}]")
        con.execute(f"COPY ({spec.sql}) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)")
        row = con.execute(
            f"SELECT count(*) FROM read_parquet('{staged}', hive_partitioning = false)"
        ).fetchone()
        rows = int(row[0]) if row else 0
        schema = {
            table: {str(r[0]): str(r[1]) for r in con.execute(f'DESCRIBE SELECT * FROM "{table}"').fetchall()}
            for table in spec.upstreams
        }
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{staged}', hive_partitioning = false)")
        outputs = [str(r[0]) for r in described.fetchall()]
    finally:
        con.close()
    gate = audit(warehouse, spec.name, day if spec.partitioned else None, staged, settings.suites_path)
    if gate.failed:  # the staged file stays for inspection until the next build clears it
        raise GateFailed(spec.name, partition, gate.outcomes)
    published = warehouse.publish(staged, spec.name, partition, settings.versions_kept)
    warehouse.write_manifest(spec.name, partition, {"rows": rows, "inputs": inputs})
    return ModelResult(
        spec.name, day, rows, published, inputs, time.perf_counter() - started,
        lineage=column_lineage(spec, outputs, schema), checks=gate.outcomes, gate_duration_s=gate.duration_s,
    )  # fmt: skip


def affected_partitions(
    specs: list[ModelSpec], changed: dict[str, set[str]], data_days: list[str]
) -> list[tuple[ModelSpec, str | None]]:
    """Every model partition that reads a changed partition, in an order that can be built.

    ``changed`` maps a table to its changed days (e.g. ``{"events": {"2025-01-03"}}``);
    ``data_days`` bounds the days a partitioned model is built for. A partition D of a
    model with window [s, e] on a changed upstream day c is affected when
    c - e <= D <= c - s; a model that reads its own previous partition passes the
    change on to every later day.
    """
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
        if spec.self_dependent and hit:
            first = min(hit)
            hit.update(d for d in allowed if d >= first)
        if spec.partitioned:
            plan.extend((spec, d) for d in sorted(hit))
            dirty[spec.name] = hit
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
