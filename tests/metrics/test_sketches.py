"""The daily sketches against the exact answers on generated person-level events.

Synthetic ``person_events`` partitions (20,000 persons a day drawn from a pool of 60,000, so
days overlap as real traffic does) are sketched by the real step; every answer is
compared with the exact one computed by DuckDB from the same rows:

* distinct persons per day and over a 30-day union lie within the 2-sigma bounds, and
  per dimension value too;
* the frequent-items sketch's heavy hitters equal the exact top-k where the frequencies are
  well separated;
* Count-Min never estimates below the true count, for every person;
* the same day gives the same bytes on a rebuild (items are fed in sorted order).
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketches import hll_sketch

from analytics_pipeline.metrics.sketches import (
    SKETCHES_SPEC,
    SKETCHES_TABLE,
    build_sketches,
    merge_count_min,
    merge_frequent_items,
    union_persons,
)
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

START = date(2025, 6, 1)
DAYS = [(START + timedelta(days=i)).isoformat() for i in range(30)]
PERSONS_PER_DAY = 20_000
POOL = 60_000
LIBRARIES = ("analytics.js", "analytics-ios", "analytics-android")
# well separated page weights: page k is viewed about 2x as often as page k+1
PAGES = [f"/p{k}" for k in range(12)]
PAGE_WEIGHTS = [2.0**-k for k in range(12)]
EVENTS = ("Product Viewed", "Product Added", "Order Completed")


def _day_rows(day: str, rng: random.Random) -> pa.Table:
    persons = rng.sample(range(POOL), PERSONS_PER_DAY)
    rows: dict[str, list[object]] = {k: [] for k in ("message_id", "person_id", "event_date", "type", "event",
                                                        "page_path", "library")}  # fmt: skip
    n = 0
    for person in persons:
        for _ in range(rng.choice((1, 1, 2, 3))):
            is_page = rng.random() < 0.6
            rows["message_id"].append(f"{day}-{n}")
            rows["person_id"].append(f"user-{person}")
            rows["event_date"].append(date.fromisoformat(day))
            rows["type"].append("page" if is_page else "track")
            rows["event"].append(None if is_page else rng.choice(EVENTS))
            rows["page_path"].append(rng.choices(PAGES, PAGE_WEIGHTS)[0] if is_page else None)
            rows["library"].append(LIBRARIES[person % 3])
            n += 1
    return pa.table(rows)


@pytest.fixture(scope="module")
def sketched(tmp_path_factory: pytest.TempPathFactory) -> PipelineSettings:
    root = tmp_path_factory.mktemp("sketches")
    settings = PipelineSettings(data_dir=str(root / "data"), duckdb_threads=2, duckdb_memory_limit="1GB")
    warehouse = Warehouse(settings.warehouse_path)
    rng = random.Random(20250601)
    for day in DAYS:
        path = warehouse.partition_file("person_events", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_day_rows(day, rng), path)
        build_sketches(settings, SKETCHES_SPEC, day)
    return settings


def _exact(settings: PipelineSettings, sql: str) -> list[tuple[object, ...]]:
    glob = Warehouse(settings.warehouse_path).table_glob("person_events")
    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW pe AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)")
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _sketches(settings: PipelineSettings, kind: str, dimension: str, value: str | None = None) -> list[bytes]:
    glob = Warehouse(settings.warehouse_path).table_glob(SKETCHES_TABLE)
    con = duckdb.connect()
    try:
        where = "value IS NULL" if value is None else "value = ?"
        params = [kind, dimension] + ([] if value is None else [value])
        return [
            bytes(r[0])
            for r in con.execute(
                f"SELECT sketch FROM read_parquet('{glob}', hive_partitioning = false) "
                f"WHERE kind = ? AND dimension = ? AND {where} ORDER BY sketch_date",
                params,
            ).fetchall()
        ]
    finally:
        con.close()


def test_distinct_persons_per_day_within_bounds(sketched: PipelineSettings) -> None:
    """2-sigma bounds hold about 95% of the time by construction; none may miss by 3 sigma."""
    exact = dict(_exact(sketched, "SELECT event_date, count(DISTINCT person_id) FROM pe GROUP BY 1"))
    blobs = _sketches(sketched, "hll_persons", "all")
    assert len(blobs) == len(DAYS)
    within, errors = 0, []
    for day, blob in zip(DAYS, blobs, strict=True):
        sketch = hll_sketch.deserialize(blob)
        truth = exact[date.fromisoformat(day)]
        assert sketch.get_lower_bound(3) <= truth <= sketch.get_upper_bound(3), (
            day,
            sketch.get_estimate(),
            truth,
        )
        within += sketch.get_lower_bound(2) <= truth <= sketch.get_upper_bound(2)
        errors.append(abs(sketch.get_estimate() - truth) / truth)
    assert within >= 0.9 * len(DAYS), within
    assert max(errors) < 0.05  # 2 sigma at lg_k 12 is about 3.3%


def test_thirty_day_union_within_bounds(sketched: PipelineSettings) -> None:
    (truth,) = _exact(sketched, "SELECT count(DISTINCT person_id) FROM pe")[0]
    estimate = union_persons(_sketches(sketched, "hll_persons", "all"))
    assert estimate.lower_bound <= truth <= estimate.upper_bound, (estimate, truth)
    # a union is not a sum: 30 days of 20,000 persons from a pool of 60,000
    assert truth < 0.2 * PERSONS_PER_DAY * len(DAYS)


@pytest.mark.parametrize(("dimension", "value"), [("library", "analytics-ios"), ("page_path", "/p0"),
                                                  ("event", "Order Completed")])  # fmt: skip
def test_persons_per_dimension_value_within_bounds(
    sketched: PipelineSettings, dimension: str, value: str
) -> None:
    (truth,) = _exact(sketched, f"SELECT count(DISTINCT person_id) FROM pe WHERE {dimension} = '{value}'")[0]
    estimate = union_persons(_sketches(sketched, "hll_persons", dimension, value))
    assert estimate.lower_bound <= truth <= estimate.upper_bound, (estimate, truth)


def test_heavy_hitters_equal_the_exact_top_k(sketched: PipelineSettings) -> None:
    exact = _exact(
        sketched, "SELECT page_path, count(*) FROM pe WHERE type = 'page' GROUP BY 1 ORDER BY 2 DESC"
    )
    top = merge_frequent_items(_sketches(sketched, "frequent_items", "page_path"), limit=5)
    assert [i.item for i in top] == [str(r[0]) for r in exact[:5]]
    for item, (path, count) in zip(top, exact[:5], strict=True):
        assert item.lower_bound <= count <= item.upper_bound, (path, item, count)


def test_count_min_never_below_the_true_count(sketched: PipelineSettings) -> None:
    merged = merge_count_min(_sketches(sketched, "count_min", "person_id"))
    exact = _exact(sketched, "SELECT person_id, count(*) FROM pe GROUP BY 1")
    assert all(merged.get_estimate(str(person)) >= count for person, count in exact)
    assert merged.get_estimate("never-seen") >= 0
    (total,) = _exact(sketched, "SELECT count(*) FROM pe")[0]
    assert merged.total_weight == total


def test_a_rebuild_gives_the_same_bytes(sketched: PipelineSettings, tmp_path: Path) -> None:
    warehouse = Warehouse(sketched.warehouse_path)
    before = warehouse.partition_file(SKETCHES_TABLE, DAYS[3]).read_bytes()
    result = build_sketches(sketched, SKETCHES_SPEC, DAYS[3])
    assert not result.published.changed
    assert warehouse.partition_file(SKETCHES_TABLE, DAYS[3]).read_bytes() == before
    assert all(check.passed for check in result.checks)  # checks/suites/daily_sketches.yml


def test_rows_fetched_in_batches_give_the_same_sketches(
    sketched: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows reach Python in bounded batches; where the batches split a group changes nothing."""
    from analytics_pipeline.metrics import sketches

    source = Warehouse(sketched.warehouse_path).partition_file("person_events", DAYS[0])
    con = duckdb.connect()
    con.execute(f"CREATE VIEW day_events AS SELECT * FROM read_parquet('{source}')")
    whole = sketches.sketch_rows(con, "day_events", START)
    monkeypatch.setattr(sketches, "FETCH_ROWS", 7)  # groups span many batches
    assert sketches.sketch_rows(con, "day_events", START) == whole
    con.execute("CREATE VIEW no_events AS SELECT * FROM day_events WHERE false")
    empty = sketches.sketch_rows(con, "no_events", START)
    everyone = [r for r in empty if r["dimension"] == "all"]
    assert [(r["estimate"], r["exact_count"]) for r in everyone] == [(0.0, 0)]
