"""Golden queries (``checks/golden_queries.yml``): named metric queries whose latency and answers are watched.

Each query runs through the metrics layer many times, cold (computed, no result cache) and
warm (served from the result cache), and its p50/p95/p99 are compared with the declared
SLO. Each invariant (DAU <= WAU <= MAU, funnel steps non-increasing, event_counts equal to
the events rows, a sketch estimate within its bounds of the exact value) is evaluated on
the answers. Every result is a :class:`CheckOutcome` with the declared severity; the
Dagster layer turns them into asset checks and the timings into numeric metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from pydantic import Field

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse, read_yaml
from analytics_pipeline.metrics.api import QueryResult, query, source_table
from analytics_pipeline.metrics.definitions import Metrics
from analytics_pipeline.quality.outcomes import CheckOutcome, Severity
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.slo.percentiles import summary
from analytics_pipeline.warehouse.storage import Warehouse

GOLDEN_CACHE = "golden"  # the golden queries' own result cache: they must not skew the analysts' hit rate


class GoldenQueriesError(ConfigFileError):
    """``checks/golden_queries.yml`` is invalid; the message names the file, the entry and the key."""


class Percentiles(StrictModel):
    p95: float = Field(gt=0)
    p99: float = Field(gt=0)


class LatencySlo(StrictModel):
    """Milliseconds a query may take, cold (computed) and warm (served from the result cache)."""

    cold: Percentiles
    warm: Percentiles


class Runs(StrictModel):
    cold: int = Field(default=20, ge=1)
    warm: int = Field(default=100, ge=1)


class GoldenQuery(StrictModel):
    description: str = Field(min_length=1)
    metric: str
    days: int = Field(default=1, ge=1, description="the last N days published for the metric")
    by: list[str] = Field(default_factory=list)
    grain: Literal["day", "week", "month"] | None = None
    filters: dict[str, str | list[str]] = Field(default_factory=dict)
    limit: int | None = Field(default=None, ge=1)
    latency_ms: LatencySlo
    severity: Severity = Severity.WARN


class Invariant(StrictModel):
    description: str = Field(min_length=1)
    kind: Literal["ordered", "non_increasing", "equals_table_rows", "within_bounds"]
    metrics: list[str] = Field(default_factory=list)  # ordered: each <= the next, on each day
    metric: str | None = None  # non_increasing, equals_table_rows
    by: list[str] = Field(default_factory=list)  # non_increasing: groups, the last one ordered
    table: str | None = None  # equals_table_rows
    approximate: str | None = None  # within_bounds
    exact: str | None = None  # within_bounds
    days: int = Field(default=1, ge=1)
    severity: Severity = Severity.ERROR


class GoldenFile(StrictModel):
    runs: Runs = Runs()
    queries: dict[str, GoldenQuery] = Field(min_length=1)
    invariants: dict[str, Invariant] = Field(default_factory=dict)


def _metrics_of(invariant: Invariant) -> list[str]:
    return [*invariant.metrics, *[m for m in (invariant.metric, invariant.approximate, invariant.exact) if m]]


def load_golden(path: Path, metrics: Metrics) -> GoldenFile:
    """Read and validate the file; every metric, dimension and grain must exist in the metrics layer."""
    golden = parse(
        read_yaml(path, GoldenQueriesError, "golden queries"), GoldenFile, path, GoldenQueriesError
    )
    for name, q in golden.queries.items():
        where = f"{path}: queries.{name}"
        definition = metrics.metrics.get(q.metric)
        if definition is None:
            raise GoldenQueriesError(f"{where}.metric: unknown metric {q.metric!r}")
        unknown = sorted((set(q.by) | set(q.filters)) - set(definition.dimensions))
        if unknown:
            raise GoldenQueriesError(f"{where}: {q.metric} has no dimensions {unknown}")
        if q.grain is not None and q.grain not in definition.grains:
            raise GoldenQueriesError(f"{where}.grain: {q.metric} cannot be given per {q.grain}")
    required = {"ordered": ("metrics",), "non_increasing": ("metric", "by"), "equals_table_rows": ("metric", "table"),
                "within_bounds": ("approximate", "exact")}  # fmt: skip
    for name, inv in golden.invariants.items():
        where = f"{path}: invariants.{name}"
        for key in required[inv.kind]:
            if not getattr(inv, key):
                raise GoldenQueriesError(f"{where}.{key}: required for kind {inv.kind}")
        for metric in _metrics_of(inv):
            if metric not in metrics.metrics:
                raise GoldenQueriesError(f"{where}: unknown metric {metric!r}")
    return golden


# --- running ----------------------------------------------------------------------------------


def last_days(metrics: Metrics, warehouse: Warehouse, names: list[str], days: int) -> tuple[str, str]:
    """The last ``days`` days every named metric's table has published (the latest common day back)."""
    latest = []
    for name in names:
        published = warehouse.published_days(source_table(metrics, metrics.metrics[name]))
        if not published:
            raise GoldenQueriesError(f"{name}: its table has no published partition yet")
        latest.append(published[-1])
    end = date.fromisoformat(min(latest))
    return (end - timedelta(days=days - 1)).isoformat(), end.isoformat()


@dataclass
class Timing:
    """Milliseconds per run, cold and warm, and the answer."""

    cold_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    rows: int = 0

    def metadata(self, prefix: str) -> dict[str, float]:
        figures: dict[str, float] = {}
        for mode, values in (("cold", self.cold_ms), ("warm", self.warm_ms)):
            for key, value in summary(values).items():
                figures[f"{prefix}{mode}_{key}_ms"] = round(value, 3)
            figures[f"{prefix}{mode}_runs"] = len(values)
        return figures


QueryFn = Callable[..., QueryResult]


def measure(
    name: str,
    q: GoldenQuery,
    settings: PipelineSettings,
    metrics: Metrics,
    runs: Runs,
    run_query: QueryFn = query,
) -> Timing:
    """Run the query ``runs.cold`` times computed and ``runs.warm`` times from the result cache."""
    warehouse = Warehouse(settings.warehouse_path)
    start, end = last_days(metrics, warehouse, [q.metric], q.days)
    golden_settings = settings.replace(cache_dir=str(settings.cache_path.parent / GOLDEN_CACHE))
    arguments: dict[str, Any] = dict(by=q.by, start=start, end=end, grain=q.grain, filters=q.filters, limit=q.limit,
                                     settings=golden_settings, metrics=metrics)  # fmt: skip
    timing = Timing()
    for _ in range(runs.cold):
        started = time.perf_counter()
        result = run_query(q.metric, use_cache=False, **arguments)
        timing.cold_ms.append((time.perf_counter() - started) * 1000)
    run_query(q.metric, use_cache=True, **arguments)  # fill the cache: the warm runs read it
    for _ in range(runs.warm):
        started = time.perf_counter()
        result = run_query(q.metric, use_cache=True, **arguments)
        timing.warm_ms.append((time.perf_counter() - started) * 1000)
        if not result.cache_hit:
            raise RuntimeError(f"golden query {name}: a warm run missed the cache")
    timing.rows = result.table.num_rows
    return timing


def latency_outcome(name: str, q: GoldenQuery, timing: Timing) -> CheckOutcome:
    """Pass when cold and warm p95 and p99 are within the SLO."""
    breaches = []
    for mode, values, slo in (
        ("cold", timing.cold_ms, q.latency_ms.cold),
        ("warm", timing.warm_ms, q.latency_ms.warm),
    ):
        figures = summary(values)
        for p in ("p95", "p99"):
            if figures[p] > getattr(slo, p):
                breaches.append(f"{mode} {p} {figures[p]:.1f} ms > SLO {getattr(slo, p):g} ms")
    cold, warm = summary(timing.cold_ms), summary(timing.warm_ms)
    text = (f"cold p95 {cold['p95']:.1f} / p99 {cold['p99']:.1f} ms over {len(timing.cold_ms)} runs, "
            f"warm p95 {warm['p95']:.1f} / p99 {warm['p99']:.1f} ms over {len(timing.warm_ms)} runs")  # fmt: skip
    return CheckOutcome(
        f"{name}_latency",
        not breaches,
        ("SLO breached: " + "; ".join(breaches) + f" ({text})") if breaches else f"within SLO: {text}",
        {**timing.metadata(""), "slo_ms": q.latency_ms.model_dump()},
        q.severity,
    )


def _values(
    metrics: Metrics, settings: PipelineSettings, metric: str, start: str, end: str, **kw: Any
) -> list[dict[str, Any]]:
    return query(
        metric, start=start, end=end, settings=settings, metrics=metrics, use_cache=False, **kw
    ).table.to_pylist()


def evaluate_invariant(
    name: str, inv: Invariant, settings: PipelineSettings, metrics: Metrics
) -> CheckOutcome:
    """Evaluate one invariant on the latest ``days`` days its metrics have in common."""
    warehouse = Warehouse(settings.warehouse_path)
    start, end = last_days(metrics, warehouse, _metrics_of(inv), inv.days)
    problems: list[str] = []
    details: dict[str, Any] = {"start": start, "end": end}
    if inv.kind == "ordered":
        series = {
            m: {r["period"]: r[m] for r in _values(metrics, settings, m, start, end, grain="day")}
            for m in inv.metrics
        }
        for day in sorted(set().union(*[set(s) for s in series.values()])):
            values: list[Any] = [series[m].get(day) for m in inv.metrics]
            for i in range(len(values) - 1):
                if values[i] is None or values[i + 1] is None or values[i] > values[i + 1]:
                    problems.append(
                        f"{day}: {inv.metrics[i]} {values[i]} > {inv.metrics[i + 1]} {values[i + 1]}"
                    )
        details["values"] = {m: {str(d): v for d, v in s.items()} for m, s in series.items()}
    elif inv.kind == "non_increasing":
        assert inv.metric is not None
        rows = _values(metrics, settings, inv.metric, start, end, by=inv.by)
        *groups, order = inv.by
        by_group: dict[tuple[Any, ...], list[tuple[Any, Any]]] = {}
        for row in rows:
            by_group.setdefault(tuple(row[g] for g in groups), []).append((row[order], row[inv.metric]))
        for group, steps in by_group.items():
            steps.sort()
            for (i, a), (j, b) in zip(steps, steps[1:], strict=False):
                if b > a:
                    problems.append(
                        f"{dict(zip(groups, group, strict=True))}: {order} {j} has {b} > {order} {i} with {a}"
                    )
        details["groups"] = len(by_group)
    elif inv.kind == "equals_table_rows":
        assert inv.metric is not None and inv.table is not None
        per_day = {
            r["period"].isoformat(): r[inv.metric]
            for r in _values(metrics, settings, inv.metric, start, end, grain="day")
        }
        for day in sorted(per_day):
            path = warehouse.partition_file(inv.table, day)
            table_rows = pq.read_metadata(path).num_rows if path.exists() else None
            if table_rows != per_day[day]:
                problems.append(f"{day}: {inv.metric} {per_day[day]} != {inv.table} rows {table_rows}")
        details["days"] = sorted(per_day)
    else:
        assert inv.approximate is not None and inv.exact is not None
        (approx,) = _values(metrics, settings, inv.approximate, start, end)
        (exact,) = _values(metrics, settings, inv.exact, start, end)
        low, high, truth = (
            approx[f"{inv.approximate}_lower"],
            approx[f"{inv.approximate}_upper"],
            exact[inv.exact],
        )
        if not low <= truth <= high:
            problems.append(
                f"{inv.exact} {truth} outside the {inv.approximate} bounds [{low:.1f}, {high:.1f}]"
            )
        details.update(estimate=approx[inv.approximate], lower=low, upper=high, exact=truth)
    return CheckOutcome(
        name,
        not problems,
        (
            "violated: "
            + "; ".join(problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        )
        if problems
        else f"holds over {start}..{end}: {inv.description}",
        details,
        inv.severity,
    )


def golden_check_names(golden: GoldenFile) -> Mapping[str, tuple[str, Severity]]:
    """Every check the golden queries asset declares: name -> (description, severity)."""
    names = {f"{n}_latency": (f"{q.description} Latency SLO (ms): {q.latency_ms.model_dump()}", q.severity)
             for n, q in golden.queries.items()}  # fmt: skip
    names.update({n: (inv.description, inv.severity) for n, inv in golden.invariants.items()})
    return names
