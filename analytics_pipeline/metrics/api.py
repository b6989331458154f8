"""The one query API for metrics: Python, the CLI and notebooks all call :func:`query`.

A query names a metric, the dimensions to group by, a date range, a grain and equality
filters. Every name is checked against ``assets/metrics.yml`` before anything runs; filter
values and dates are passed to Ibis as typed values (Ibis renders them as escaped SQL
literals through sqlglot), never pasted into SQL text, so no argument can reach DuckDB as
SQL. Simple and ratio metrics are compiled by boring-semantic-layer; rolling metrics are a
BSL distinct count over a person-day fan-out (BSL cannot window a distinct count);
approximate metrics merge the daily sketches. Only the partitions in the range are read,
and the result is cached under the query and the versions of those partitions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import ibis
import pandas as pd
import pyarrow as pa
from boring_semantic_layer import Dimension, from_config, to_semantic_table

from analytics_pipeline.metrics.cache import ResultCache, partition_versions
from analytics_pipeline.metrics.definitions import GRAINS, Metric, Metrics, project_metrics
from analytics_pipeline.metrics.sketches import (
    SKETCHES_TABLE,
    merge_frequent_items,
    union_persons,
)
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

DEFAULT_DAYS = 30  # without --start, the 30 days up to --end (default: the latest published day)
DEFAULT_TOP = 20
PERIOD = "period"


class MetricQueryError(ValueError):
    """A query that names something the definitions do not allow; the message says what is allowed."""


@dataclass(frozen=True)
class MetricQuery:
    """A validated, normalised query: what the cache keys on."""

    metric: str
    by: tuple[str, ...]
    start: date
    end: date
    grain: str | None
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    limit: int | None = None

    def key(self) -> str:
        return json.dumps(
            {
                "metric": self.metric,
                "by": list(self.by),
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "grain": self.grain,
                "filters": [[d, list(v)] for d, v in self.filters],
                "limit": self.limit,
            },
            sort_keys=True,
        )


@dataclass
class QueryResult:
    """The rows, and what the query read: for staleness and reconciliation."""

    query: MetricQuery
    table: pa.Table
    partitions: dict[str, list[str]]
    cache_hit: bool
    duration_s: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_pandas(self) -> pd.DataFrame:
        return self.table.to_pandas()


def _day(value: str | date | None, what: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise MetricQueryError(f"{what} must be a date YYYY-MM-DD, got {value!r}") from None


def source_table(metrics: Metrics, metric: Metric) -> str:
    if metric.kind == "approximate":
        return SKETCHES_TABLE
    assert metric.model is not None
    return metrics.models[metric.model].table or metric.model


def normalise(
    metrics: Metrics,
    warehouse: Warehouse,
    metric: str,
    by: Sequence[str] = (),
    start: str | date | None = None,
    end: str | date | None = None,
    grain: str | None = None,
    filters: Mapping[str, str | Sequence[str]] | None = None,
    limit: int | None = None,
) -> MetricQuery:
    """Check every name against the definitions and fill in the defaults."""
    if metric not in metrics.metrics:
        raise MetricQueryError(
            f"unknown metric {metric!r}; known metrics: {', '.join(sorted(metrics.metrics))}"
        )
    definition = metrics.metrics[metric]
    allowed = set(definition.dimensions)
    for dimension in by:
        if dimension not in allowed:
            raise MetricQueryError(
                f"{metric} cannot be grouped by {dimension!r}; its dimensions: {sorted(allowed) or 'none'}"
            )
    normalised_filters: list[tuple[str, tuple[str, ...]]] = []
    for dimension, values in sorted((filters or {}).items()):
        if dimension not in allowed:
            raise MetricQueryError(
                f"{metric} cannot be filtered by {dimension!r}; its dimensions: {sorted(allowed) or 'none'}"
            )
        listed = (values,) if isinstance(values, str) else tuple(values)
        if not listed or not all(isinstance(v, str) for v in listed):
            raise MetricQueryError(f"filter {dimension}: give one or more values as text")
        normalised_filters.append((dimension, tuple(sorted(set(listed)))))
    if definition.kind == "rolling" and grain is None:
        grain = "day"
    if grain is not None:
        if grain not in GRAINS:
            raise MetricQueryError(f"unknown grain {grain!r}; grains: {', '.join(GRAINS)}")
        if grain not in definition.grains:
            raise MetricQueryError(
                f"{metric} cannot be given per {grain}; its grains: {', '.join(definition.grains) or 'none (one total)'}"
            )
    if definition.kind == "approximate" and definition.sketch == "hll_persons":
        used = set(by) | {d for d, _ in normalised_filters}
        if len(used) > 1:
            raise MetricQueryError(
                f"{metric}: the persons sketches are kept per one dimension; got {sorted(used)}"
            )
    if limit is not None and limit < 1:
        raise MetricQueryError(f"limit must be at least 1, got {limit}")
    end_day = _day(end, "end")
    if end_day is None:
        days = warehouse.published_days(source_table(metrics, definition))
        end_day = date.fromisoformat(days[-1]) if days else date.today()
    start_day = _day(start, "start") or end_day - timedelta(days=DEFAULT_DAYS - 1)
    if start_day > end_day:
        raise MetricQueryError(f"start {start_day} is after end {end_day}")
    return MetricQuery(metric, tuple(by), start_day, end_day, grain, tuple(normalised_filters), limit)


def _days(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def partitions_read(metrics: Metrics, warehouse: Warehouse, q: MetricQuery) -> dict[str, list[str]]:
    """The published partitions a query reads: the range, and a rolling window's lead-in."""
    definition = metrics.metrics[q.metric]
    table = source_table(metrics, definition)
    lead_in = (definition.window_days or 1) - 1
    wanted = set(_days(q.start - timedelta(days=lead_in), q.end))
    return {table: [d for d in warehouse.published_days(table) if d in wanted]}


def _typed(value: str, dtype: Any, dimension: str) -> Any:
    """A filter value as the column's type; a value that cannot be one is an error, not SQL."""
    try:
        if dtype.is_boolean():
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"
        if dtype.is_integer():
            return int(value)
        if dtype.is_floating() or dtype.is_decimal():
            return float(value)
        if dtype.is_date():
            return date.fromisoformat(value)
    except ValueError:
        raise MetricQueryError(f"filter {dimension}: {value!r} is not a {dtype}") from None
    return value


def _empty(columns: Sequence[str]) -> pa.Table:
    return pa.table({c: pa.array([], type=pa.null()) for c in columns})


def _semantic_config(metrics: Metrics, metric: Metric) -> tuple[str, dict[str, Any], list[str]]:
    """BSL's config for the metric's model: its dimensions, the measures the metric needs."""
    assert metric.model is not None
    model = metrics.models[metric.model]
    dimensions: dict[str, Any] = {
        model.time_dimension: {
            "expr": f"_.{model.time_dimension}",
            "is_time_dimension": True,
            "smallest_time_grain": "day",
        }
    }
    dimensions.update(
        {name: {"expr": d.expr, "description": d.description} for name, d in model.dimensions.items()}
    )
    measures: dict[str, Any] = {}
    calculated: dict[str, Any] = {}
    if metric.kind == "simple":
        measures[metric.name] = metric.expr
    else:
        parts = [metrics.metrics[metric.numerator or ""], metrics.metrics[metric.denominator or ""]]
        for part in parts:
            measures[part.name] = part.expr
        calculated[metric.name] = f"_.{parts[0].name} / _.{parts[1].name}"
    config = {"table": metric.model, "dimensions": dimensions, "measures": measures}
    if calculated:
        config["calculated_measures"] = calculated
    return metric.model, config, [model.time_dimension]


def _filters(q: MetricQuery, schema: Any) -> list[Any]:
    predicates = []
    for dimension, values in q.filters:
        typed = [_typed(v, schema[dimension], dimension) for v in values]
        predicates.append(lambda t, d=dimension, v=typed: t[d].isin(v))
    return predicates


def _semantic(metrics: Metrics, metric: Metric, q: MetricQuery, con: Any, files: list[str]) -> pa.Table:
    name, config, (time_column,) = _semantic_config(metrics, metric)
    columns = ([PERIOD] if q.grain else []) + list(q.by) + [metric.name]
    if not files:
        return _empty(columns)
    table = con.read_parquet(files, table_name=f"{name}_read")
    model = from_config({name: config}, tables={name: table})[name]
    start, end = ibis.date(q.start.isoformat()), ibis.date(q.end.isoformat())
    filters = [lambda t: t[time_column].between(start, end), *_filters(q, table.schema())]
    dims = ([time_column] if q.grain else []) + list(q.by)
    expr = model.query(
        dimensions=dims, measures=[metric.name], filters=filters, time_grain=q.grain,
        order_by=[(d, "asc") for d in dims] or None, limit=q.limit,
    )  # fmt: skip
    result: pa.Table = expr.to_pyarrow()
    if q.grain:
        result = result.rename_columns([PERIOD if c == time_column else c for c in result.column_names])
        result = result.set_column(0, PERIOD, result.column(PERIOD).cast(pa.date32()))
    return result.select(columns)


def _rolling(metrics: Metrics, metric: Metric, q: MetricQuery, con: Any, files: list[str]) -> pa.Table:
    """Distinct ``entity`` over the trailing window, per day: each active person-day fanned out
    to the days whose window it falls in, then a plain BSL distinct count (exact)."""
    assert metric.model is not None and metric.entity is not None and metric.window_days is not None
    model = metrics.models[metric.model]
    columns = [PERIOD, *q.by, metric.name]
    if not files:
        return _empty(columns)
    table = con.read_parquet(files, table_name=f"{metric.model}_read")
    for predicate in _filters(q, table.schema()):
        table = table.filter(predicate(table))
    active = table.select(
        metric.entity, **{d: table[d] for d in q.by}, active_day=table[model.time_dimension]
    ).distinct()
    offsets = ibis.memtable({"offset_days": list(range(metric.window_days))})
    fanned = active.cross_join(offsets).mutate(
        as_of=lambda t: (t.active_day + t.offset_days.as_interval("D")).cast("date")
    )
    fanned = fanned.filter(fanned.as_of.between(ibis.date(q.start.isoformat()), ibis.date(q.end.isoformat())))
    semantic = (
        to_semantic_table(fanned, name=f"{metric.name}_fanout")
        .with_dimensions(
            as_of=Dimension(expr=lambda t: t.as_of, is_time_dimension=True, smallest_time_grain="day"),
            **{d: (lambda t, d=d: t[d]) for d in q.by},
        )
        .with_measures(**{metric.name: lambda t, e=metric.entity: t[e].nunique()})
    )
    expr = semantic.query(
        dimensions=["as_of", *q.by], measures=[metric.name], time_grain="day",
        order_by=[(d, "asc") for d in ["as_of", *q.by]], limit=q.limit,
    )  # fmt: skip
    result: pa.Table = expr.to_pyarrow()
    result = result.rename_columns([PERIOD if c == "as_of" else c for c in result.column_names])
    result = result.set_column(0, PERIOD, result.column(PERIOD).cast(pa.date32()))
    return result.select(columns)


def _bucket(day: date, grain: str | None) -> date | None:
    if grain is None:
        return None
    if grain == "week":
        return day - timedelta(days=day.weekday())  # weeks start on Monday, as DuckDB's date_trunc
    if grain == "month":
        return day.replace(day=1)
    return day


def _approximate(
    metric: Metric, q: MetricQuery, con: Any, files: list[str]
) -> tuple[pa.Table, dict[str, Any]]:
    name = metric.name
    if metric.sketch == "frequent_items":
        columns = ["item", name, f"{name}_lower", f"{name}_upper"]
        if not files:
            return _empty(columns), {}
        rows = con.read_parquet(files, table_name="sketches_read")
        rows = rows.filter((rows.kind == "frequent_items") & (rows.dimension == metric.sketch_dimension))
        blobs = rows.select("sketch").to_pyarrow().column("sketch").to_pylist()
        items = merge_frequent_items(blobs, q.limit or DEFAULT_TOP)
        table = pa.table(
            {
                "item": [i.item for i in items],
                name: [i.estimate for i in items],
                f"{name}_lower": [i.lower_bound for i in items],
                f"{name}_upper": [i.upper_bound for i in items],
            }
        )
        return table, {"days_merged": len(blobs)}
    dimension = (list(q.by) + [d for d, _ in q.filters] + ["all"])[0]
    columns = ([PERIOD] if q.grain else []) + list(q.by) + [name, f"{name}_lower", f"{name}_upper"]
    if not files:
        return _empty(columns), {}
    rows = con.read_parquet(files, table_name="sketches_read")
    rows = rows.filter((rows.kind == "hll_persons") & (rows.dimension == dimension))
    for _, values in q.filters:
        rows = rows.filter(rows.value.isin(list(values)))
    fetched = rows.select("sketch_date", "value", "sketch").to_pyarrow().to_pylist()
    groups: dict[tuple[Any, ...], list[bytes]] = {}
    for row in fetched:
        key = (_bucket(row["sketch_date"], q.grain), row["value"] if q.by else None)
        groups.setdefault(key, []).append(row["sketch"])
    if not groups and not q.by and not q.grain:
        groups[(None, None)] = []
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for (bucket, value), blobs in sorted(
        groups.items(), key=lambda kv: (kv[0][0] or date.min, kv[0][1] or "")
    ):
        estimate = union_persons(blobs)
        if q.grain:
            out[PERIOD].append(bucket)
        if q.by:
            out[q.by[0]].append(value)
        out[name].append(estimate.estimate)
        out[f"{name}_lower"].append(estimate.lower_bound)
        out[f"{name}_upper"].append(estimate.upper_bound)
    table = pa.table(out)
    if q.limit:
        table = table.slice(0, q.limit)
    return table, {"sketches_merged": len(fetched)}


def run(
    metrics: Metrics, settings: PipelineSettings, q: MetricQuery
) -> tuple[pa.Table, dict[str, list[str]], dict[str, Any]]:
    """Compute a query from the published partitions (no cache)."""
    warehouse = Warehouse(settings.warehouse_path)
    definition = metrics.metrics[q.metric]
    read = partitions_read(metrics, warehouse, q)
    ((table_name, days),) = read.items()
    files = [str(warehouse.partition_file(table_name, d)) for d in days]
    con = ibis.duckdb.connect(threads=settings.duckdb_threads, memory_limit=settings.duckdb_memory_limit)
    try:
        con.raw_sql("SET TimeZone = 'UTC'")
        details: dict[str, Any] = {}
        if definition.kind == "approximate":
            table, details = _approximate(definition, q, con, files)
        elif definition.kind == "rolling":
            table = _rolling(metrics, definition, q, con, files)
        else:
            table = _semantic(metrics, definition, q, con, files)
    finally:
        con.disconnect()
    return table, read, details


def query(
    metric: str,
    by: Sequence[str] = (),
    start: str | date | None = None,
    end: str | date | None = None,
    grain: str | None = None,
    filters: Mapping[str, str | Sequence[str]] | None = None,
    limit: int | None = None,
    *,
    settings: PipelineSettings | None = None,
    metrics: Metrics | None = None,
    use_cache: bool = True,
) -> QueryResult:
    """One metric, grouped ``by`` dimensions, over ``start``..``end`` (inclusive), per ``grain``.

    ``filters`` maps a dimension to a value or a list of values (equality / IN). Returns the
    rows as Arrow (``.to_pandas()`` for a DataFrame) with the partitions read.
    """
    settings = settings or PipelineSettings()
    metrics = metrics or project_metrics(settings)
    warehouse = Warehouse(settings.warehouse_path)
    started = time.perf_counter()
    q = normalise(metrics, warehouse, metric, by, start, end, grain, filters, limit)
    cache = ResultCache(settings.cache_path) if use_cache else None
    read = partitions_read(metrics, warehouse, q)
    versions = partition_versions(warehouse, read)
    if cache is not None:
        cached = cache.get(q.metric, q.key(), versions)
        if cached is not None:
            return QueryResult(q, cached, read, True, time.perf_counter() - started)
    table, read, details = run(metrics, settings, q)
    if cache is not None:
        cache.put(q.metric, q.key(), versions, table)
    return QueryResult(q, table, read, False, time.perf_counter() - started, details)
