"""The metrics layer on generated data run through the real pipeline.

Every metric of ``assets/metrics.yml`` is queried through the one API and compared with the
same number computed independently in plain DuckDB SQL over the published tables. Then:
names are checked against the definitions, SQL injection through every argument never
reaches DuckDB as SQL, the result cache returns the same rows on a hit, a republished
partition invalidates exactly the entries that read it, and the stats are exact over a
scripted workload. The CLI's ``metrics``, ``query`` and ``cache stats`` run on the same data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from analytics_pipeline import cli
from analytics_pipeline.metrics.api import MetricQueryError, query
from analytics_pipeline.metrics.cache import ResultCache
from analytics_pipeline.metrics.definitions import project_metrics
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse


def sql(settings: PipelineSettings, text: str) -> list[tuple[Any, ...]]:
    """Run ``text`` with one view per published table: the independent oracle."""
    warehouse = Warehouse(settings.warehouse_path)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for table in (
            "person_events",
            "sessions",
            "daily_active_users",
            "funnels",
            "retention",
            "daily_sketches",
        ):
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{warehouse.table_glob(table)}', "
                "hive_partitioning = false)"
            )
        return con.execute(text).fetchall()
    finally:
        con.close()


def days_of(settings: PipelineSettings, table: str) -> tuple[str, str]:
    days = Warehouse(settings.warehouse_path).published_days(table)
    return days[0], days[-1]


def value(result: Any, column: str) -> Any:
    frame = result.to_pandas()
    assert len(frame) == 1, frame
    return frame[column].iloc[0]


# --- every metric against plain SQL ----------------------------------------------------------


ORACLES = {
    "events": "SELECT count(*) FROM person_events WHERE event_date BETWEEN ? AND ?",
    "persons": "SELECT count(DISTINCT person_id) FROM person_events WHERE event_date BETWEEN ? AND ?",
    "orders": "SELECT count(*) FROM person_events WHERE event = 'Order Completed' AND event_date BETWEEN ? AND ?",
    "revenue": "SELECT sum(revenue) FROM person_events WHERE event = 'Order Completed' AND event_date BETWEEN ? AND ?",
    "average_order_value": "SELECT sum(revenue) / count(*) FROM person_events WHERE event = 'Order Completed' "
    "AND event_date BETWEEN ? AND ?",
    "sessions": "SELECT count(*) FROM sessions WHERE session_date BETWEEN ? AND ?",
    "bounced_sessions": "SELECT count(*) FILTER (WHERE is_bounce) FROM sessions WHERE session_date BETWEEN ? AND ?",
    "bounce_rate": "SELECT count(*) FILTER (WHERE is_bounce) / count(*) FROM sessions WHERE session_date BETWEEN ? AND ?",
    "mean_session_duration_s": "SELECT avg(duration_s) FROM sessions WHERE session_date BETWEEN ? AND ?",
    "stickiness": "SELECT sum(dau) / sum(mau) FROM daily_active_users WHERE activity_date BETWEEN ? AND ?",
    "funnel_entries": "SELECT sum(persons) FROM funnels WHERE step_index = 1 AND cohort_date BETWEEN ? AND ?",
    "funnel_completions": "SELECT sum(persons) FROM funnels WHERE step_index = steps AND cohort_date BETWEEN ? AND ?",
    "funnel_conversion": "SELECT sum(persons) FILTER (WHERE step_index = steps) / sum(persons) FILTER "
    "(WHERE step_index = 1) FROM funnels WHERE cohort_date BETWEEN ? AND ?",
    "day_1_retained_persons": "SELECT sum(persons_on) FROM retention WHERE period = 1 AND cohort_date BETWEEN ? AND ?",
    "day_1_cohort_persons": "SELECT sum(cohort_size) FROM retention WHERE period = 1 AND cohort_date BETWEEN ? AND ?",
    "day_1_retention": "SELECT sum(persons_on) / sum(cohort_size) FROM retention WHERE period = 1 "
    "AND cohort_date BETWEEN ? AND ?",
}
TABLE_OF = {"sessions": "sessions", "bounced_sessions": "sessions", "bounce_rate": "sessions",
            "mean_session_duration_s": "sessions", "stickiness": "daily_active_users"}  # fmt: skip


@pytest.mark.parametrize("metric", sorted(ORACLES))
def test_simple_and_ratio_metrics_equal_plain_sql(pipeline: PipelineSettings, metric: str) -> None:
    table = TABLE_OF.get(
        metric, "funnels" if "funnel" in metric else "retention" if "day_1" in metric else "person_events"
    )
    start, end = days_of(pipeline, table)
    got = value(query(metric, start=start, end=end, settings=pipeline, use_cache=False), metric)
    ((expected,),) = sql(
        pipeline, ORACLES[metric].replace("BETWEEN ? AND ?", f"BETWEEN DATE '{start}' AND DATE '{end}'")
    )
    assert expected is not None
    assert got == pytest.approx(float(expected), rel=1e-12)


def test_grouped_and_per_grain_rows_equal_plain_sql(pipeline: PipelineSettings) -> None:
    start, end = days_of(pipeline, "person_events")
    got = query("events", by=["type"], start=start, end=end, grain="day", settings=pipeline, use_cache=False)
    expected = sql(pipeline, f"SELECT event_date, type, count(*) FROM person_events WHERE event_date BETWEEN "
                             f"DATE '{start}' AND DATE '{end}' GROUP BY ALL ORDER BY 1, 2")  # fmt: skip
    rows = [(r["period"], r["type"], r["events"]) for r in got.table.to_pylist()]
    assert rows == [(d, t, n) for d, t, n in expected]
    weekly = query("events", start=start, end=end, grain="week", settings=pipeline, use_cache=False)
    assert sum(weekly.table.column("events").to_pylist()) == sum(n for _, _, n in expected)
    assert all(p.weekday() == 0 for p in weekly.table.column("period").to_pylist())  # weeks start Monday


@pytest.mark.parametrize(("metric", "window"), [("active_persons_7d", 7), ("active_persons_28d", 28)])
def test_rolling_active_persons_equal_plain_sql(pipeline: PipelineSettings, metric: str, window: int) -> None:
    start, end = days_of(pipeline, "person_events")
    got = query(metric, start=start, end=end, settings=pipeline, use_cache=False)
    expected = sql(
        pipeline,
        f"""
        SELECT d.day, count(DISTINCT p.person_id) FROM
          (SELECT DISTINCT event_date AS day FROM person_events) d
          JOIN person_events p ON p.event_date BETWEEN d.day - INTERVAL {window - 1} DAY AND d.day
        WHERE d.day BETWEEN DATE '{start}' AND DATE '{end}' GROUP BY 1 ORDER BY 1""",
    )
    assert [(r["period"], r[metric]) for r in got.table.to_pylist()] == expected
    if window == 7:  # the same number the daily_active_users model publishes as wau
        wau = sql(pipeline, f"SELECT activity_date, wau FROM daily_active_users WHERE activity_date "
                            f"BETWEEN DATE '{start}' AND DATE '{end}' ORDER BY 1")  # fmt: skip
        assert [(r["period"], r[metric]) for r in got.table.to_pylist()] == wau


def test_approximate_persons_within_bounds_of_the_exact_count(pipeline: PipelineSettings) -> None:
    start, end = days_of(pipeline, "person_events")
    got = query("approx_persons", start=start, end=end, settings=pipeline, use_cache=False)
    ((exact,),) = sql(pipeline, "SELECT count(DISTINCT person_id) FROM person_events")
    row = got.table.to_pylist()[0]
    assert row["approx_persons_lower"] <= exact <= row["approx_persons_upper"]
    by_event = query("approx_persons", by=["event"], start=start, end=end, settings=pipeline, use_cache=False)
    exact_by = dict(sql(pipeline, "SELECT event, count(DISTINCT person_id) FROM person_events "
                                  "WHERE event IS NOT NULL GROUP BY 1"))  # fmt: skip
    for r in by_event.table.to_pylist():
        assert r["approx_persons_lower"] <= exact_by[r["event"]] <= r["approx_persons_upper"], r


def test_top_pages_equal_the_exact_counts(pipeline: PipelineSettings) -> None:
    start, end = days_of(pipeline, "person_events")
    got = query("top_pages", start=start, end=end, limit=5, settings=pipeline, use_cache=False)
    exact = dict(
        sql(pipeline, "SELECT page_path, count(*) FROM person_events WHERE type = 'page' GROUP BY 1")
    )
    rows = got.table.to_pylist()
    assert len(rows) == 5
    for r in rows:  # few distinct paths: the sketch is exact, and its bounds say so
        assert r["top_pages_lower"] <= exact[r["item"]] <= r["top_pages_upper"]
    assert [r["top_pages"] for r in rows] == sorted(exact.values(), reverse=True)[:5]


# --- names are checked, values are data ------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"metric": "revenu"}, "unknown metric 'revenu'"),
        ({"metric": "events", "by": ["country"]}, "cannot be grouped by 'country'"),
        ({"metric": "events", "grain": "hour"}, "unknown grain 'hour'"),
        ({"metric": "daily_active_persons", "grain": "week"}, "cannot be given per week"),
        ({"metric": "events", "filters": {"referrer": "x"}}, "cannot be filtered by 'referrer'"),
        ({"metric": "events", "start": "2025-13-01"}, "start must be a date"),
        ({"metric": "events", "start": "2025-02-01", "end": "2025-01-01"}, "is after end"),
        ({"metric": "approx_persons", "by": ["event"], "filters": {"library": "x"}}, "per one dimension"),
    ],
)
def test_names_are_checked_against_the_definitions(pipeline: PipelineSettings, kwargs: dict[str, Any],
                                                   words: str) -> None:  # fmt: skip
    with pytest.raises(MetricQueryError, match=words):
        query(**kwargs, settings=pipeline, use_cache=False)


INJECTION = "x' OR 1=1; DROP TABLE person_events; --"


@pytest.fixture
def compiled_sql(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement Ibis sends to DuckDB during the test."""
    import ibis.backends.duckdb as backend

    seen: list[str] = []
    original = backend.Backend._to_duckdb_relation

    def spy(self: Any, expr: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(self.compile(expr, params=kwargs.get("params"))))
        return original(self, expr, *args, **kwargs)

    monkeypatch.setattr(backend.Backend, "_to_duckdb_relation", spy)
    return seen


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metric": INJECTION},
        {"metric": "events", "by": [INJECTION]},
        {"metric": "events", "grain": INJECTION},
        {"metric": "events", "start": INJECTION},
        {"metric": "events", "end": INJECTION},
        {"metric": "events", "filters": {INJECTION: "x"}},
    ],
)
def test_injection_through_a_name_is_refused(pipeline: PipelineSettings, compiled_sql: list[str],
                                             kwargs: dict[str, Any]) -> None:  # fmt: skip
    with pytest.raises(MetricQueryError):
        query(**kwargs, settings=pipeline, use_cache=False)
    assert compiled_sql == []  # refused before anything was compiled


@pytest.mark.parametrize(
    ("metric", "dimension"),
    [("events", "event"), ("events", "library"), ("sessions", "landing_path"), ("approx_persons", "event"),
     ("active_persons_7d", "library"), ("funnel_conversion", "funnel")],
)  # fmt: skip
def test_injection_through_a_filter_value_stays_a_value(
    pipeline: PipelineSettings, compiled_sql: list[str], metric: str, dimension: str
) -> None:
    start, end = days_of(pipeline, "person_events")
    result = query(metric, filters={dimension: [INJECTION]}, start=start, end=end, settings=pipeline,
                   use_cache=False)  # fmt: skip
    frame = result.to_pandas()
    assert frame.empty or frame[metric].fillna(0).eq(0).all()  # nothing matches that value
    assert compiled_sql, "the spy saw no SQL: it no longer watches what Ibis sends"
    for text in compiled_sql:
        statements = sqlglot.parse(text, read="duckdb")
        assert len(statements) == 1 and isinstance(statements[0], exp.Query)  # one SELECT, no DROP
        literals = {lit.this for lit in statements[0].find_all(exp.Literal) if lit.is_string}
        assert INJECTION in literals  # the whole text is one string literal
    ((tables,),) = sql(pipeline, "SELECT count(*) FROM person_events")
    assert tables > 0  # and the data is still there


def test_limit_must_be_positive(pipeline: PipelineSettings) -> None:
    with pytest.raises(MetricQueryError, match="limit"):
        query("events", limit=0, settings=pipeline, use_cache=False)


# --- the result cache ------------------------------------------------------------------------


def test_cache_hits_return_the_same_rows_and_republish_invalidates_exactly_its_readers(
    pipeline: PipelineSettings, tmp_path: Path
) -> None:
    settings = pipeline.replace(cache_dir=str(tmp_path / "cache"))
    warehouse = Warehouse(settings.warehouse_path)
    days = warehouse.published_days("person_events")
    first, last = days[0], days[-1]
    miss = query("events", start=first, end=first, by=["type"], settings=settings)
    hit = query("events", start=first, end=first, by=["type"], settings=settings)
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert hit.table.equals(miss.table)
    other = query("sessions", start=last, end=last, settings=settings)
    assert not other.cache_hit
    # republish person_events[first] with new bytes (a late event arrived): same rows, new file
    path = warehouse.partition_file("person_events", first)
    staged = warehouse.staging_file("person_events", first, "test")
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{path}')) TO '{staged}' (FORMAT parquet, COMPRESSION snappy)"
    )
    con.close()
    assert warehouse.publish(staged, "person_events", first, 3).changed
    cache = ResultCache(settings.cache_path)
    try:
        before = cache.stats(warehouse)
        assert before["events"].stale_entries == 1 and before["sessions"].stale_entries == 0
        assert cache.sweep(warehouse) == 1  # exactly the entry that read person_events[first]
        after = cache.stats(warehouse)
        assert after["events"].entries == 0 and after["sessions"].entries == 1
    finally:
        cache.close()
    assert query("sessions", start=last, end=last, settings=settings).cache_hit
    again = query("events", start=first, end=first, by=["type"], settings=settings)
    assert not again.cache_hit and again.table.equals(miss.table)
    warehouse.rollback("person_events", first)


def test_stats_are_exact_over_a_scripted_workload(pipeline: PipelineSettings, tmp_path: Path) -> None:
    settings = pipeline.replace(cache_dir=str(tmp_path / "cache"))
    start, end = days_of(pipeline, "person_events")
    workload = [("events", {}), ("events", {}), ("persons", {}), ("events", {"by": ["type"]}),
                ("persons", {}), ("events", {}), ("top_pages", {}), ("top_pages", {})]  # fmt: skip
    for metric, extra in workload:
        query(metric, start=start, end=end, settings=settings, **extra)
    cache = ResultCache(settings.cache_path)
    try:
        stats = cache.stats(Warehouse(settings.warehouse_path))
    finally:
        cache.close()
    assert (stats["events"].hits, stats["events"].misses, stats["events"].entries) == (2, 2, 2)
    assert (stats["persons"].hits, stats["persons"].misses, stats["persons"].entries) == (1, 1, 1)
    assert (stats["top_pages"].hits, stats["top_pages"].misses) == (1, 1)
    total = stats["_total"]
    assert (total.hits, total.misses, total.entries) == (4, 4, 4)
    assert total.hit_rate == 0.5
    assert total.bytes > 0 and total.stale_entries == 0
    assert total.max_staleness_s is not None and total.max_staleness_s >= 0
    assert total.max_entry_age_s is not None and total.max_entry_age_s >= 0


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_lists_queries_and_shows_cache_stats(pipeline: PipelineSettings, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    data = ["--data-dir", pipeline.data_dir]
    assert cli.main([*data, "metrics"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in project_metrics(pipeline).metrics)
    start, end = days_of(pipeline, "person_events")
    assert cli.main([*data, "query", "events", "--by", "type", "--start", start, "--end", end,
                     "--format", "json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    expected = dict(sql(pipeline, f"SELECT type, count(*) FROM person_events WHERE event_date BETWEEN "
                                  f"DATE '{start}' AND DATE '{end}' GROUP BY 1"))  # fmt: skip
    assert {r["type"]: r["events"] for r in rows} == expected
    assert cli.main([*data, "query", "events", "--where", "type=page", "--format", "csv", "--start", start,
                     "--end", end]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines() == ["events", str(expected["page"])]
    assert cli.main([*data, "query", "events", "--by", "colour"]) == 2
    assert "cannot be grouped by 'colour'" in capsys.readouterr().err
    assert cli.main([*data, "cache", "stats"]) == 0
    assert "total" in capsys.readouterr().out


def test_docs_metrics_md_is_generated_from_the_definitions(pipeline: PipelineSettings,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert cli.main(["metrics", "--markdown"]) == 0
    generated = capsys.readouterr().out
    committed = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    assert committed == generated, "regenerate: analytics-pipeline metrics --markdown > docs/metrics.md"
