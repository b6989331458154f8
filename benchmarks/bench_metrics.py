"""Metrics layer figures: sketch error against exact answers, query latency cold and warm, cache hit rate.

    # the sketches' observed error on a 1M-event sample (synthetic person_events, 30 days)
    .venv/bin/python benchmarks/bench_metrics.py sketches --events 1000000 --days 30

    # every metric's latency (cold: empty cache, computed; warm: served from the cache) and the
    # hit rate of a repeated workload, over a data directory the pipeline built (e.g. 90 demo days)
    .venv/bin/python benchmarks/bench_metrics.py latency --data-dir /tmp/bench90/data --runs 20

Prints a table and one JSON document (``--json PATH`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analytics_pipeline.metrics.api import query
from analytics_pipeline.metrics.cache import ResultCache
from analytics_pipeline.metrics.definitions import project_metrics
from analytics_pipeline.metrics.sketches import (
    SKETCHES_SPEC,
    SKETCHES_TABLE,
    build_sketches,
    merge_frequent_items,
    union_persons,
)
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def sketch_figures(events: int, days: int, seed: int) -> dict[str, Any]:
    """Write ``events`` person_events rows over ``days`` days, sketch each day, compare with exact."""
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="bench_sketches_"))
    settings = PipelineSettings(data_dir=str(root), duckdb_threads=2, duckdb_memory_limit="2GB")
    warehouse = Warehouse(settings.warehouse_path)
    start = date(2025, 1, 1)
    per_day = events // days
    pool = max(1000, events // 4)  # a skewed pool: regulars come back every day, most persons rarely
    paths = [f"/page/{i}" for i in range(5000)]  # more paths than the frequent-items sketch tracks
    weights = [1 / (i + 1) for i in range(len(paths))]  # Zipf-like page popularity
    day_list = [(start + timedelta(days=i)).isoformat() for i in range(days)]
    build_s = 0.0
    for day in day_list:
        persons = [f"user-{int(pool * rng.random() ** 3)}" for _ in range(per_day)]
        is_page = [rng.random() < 0.6 for _ in range(per_day)]
        table = pa.table({
            "message_id": [f"{day}-{i}" for i in range(per_day)],
            "person_id": persons,
            "event_date": [date.fromisoformat(day)] * per_day,
            "type": ["page" if p else "track" for p in is_page],
            "event": [None if p else rng.choice(("Product Viewed", "Product Added", "Order Completed")) for p in is_page],
            "page_path": [rng.choices(paths, weights)[0] if p else None for p in is_page],
            "library": [rng.choice(("analytics.js", "analytics-ios")) for _ in range(per_day)],
        })  # fmt: skip
        path = warehouse.partition_file("person_events", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        started = time.perf_counter()
        build_sketches(settings, SKETCHES_SPEC, day)
        build_s += time.perf_counter() - started
    con = duckdb.connect()
    con.execute(f"CREATE VIEW pe AS SELECT * FROM read_parquet('{warehouse.table_glob('person_events')}')")
    con.execute(f"CREATE VIEW sk AS SELECT * FROM read_parquet('{warehouse.table_glob(SKETCHES_TABLE)}')")
    exact_day = dict(
        con.execute("SELECT event_date, count(DISTINCT person_id) FROM pe GROUP BY 1").fetchall()
    )
    per_day_rows = con.execute(
        "SELECT sketch_date, estimate, lower_bound, upper_bound FROM sk WHERE kind = 'hll_persons' "
        "AND dimension = 'all' ORDER BY 1"
    ).fetchall()
    errors = [abs(est - exact_day[d]) / exact_day[d] for d, est, _, _ in per_day_rows]
    within = sum(lb <= exact_day[d] <= ub for d, _, lb, ub in per_day_rows)
    blobs = [bytes(r[0]) for r in con.execute(
        "SELECT sketch FROM sk WHERE kind = 'hll_persons' AND dimension = 'all' ORDER BY sketch_date").fetchall()]  # fmt: skip
    union = union_persons(blobs)
    (exact_union,) = con.execute("SELECT count(DISTINCT person_id) FROM pe").fetchone() or (0,)
    exact_top = con.execute(
        "SELECT page_path, count(*) FROM pe WHERE type = 'page' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20"
    ).fetchall()
    frequent = [bytes(r[0]) for r in con.execute(
        "SELECT sketch FROM sk WHERE kind = 'frequent_items' AND dimension = 'page_path'").fetchall()]  # fmt: skip
    top = merge_frequent_items(frequent, limit=20)
    exact_counts = dict(
        con.execute("SELECT page_path, count(*) FROM pe WHERE type = 'page' GROUP BY 1").fetchall()
    )
    top_errors = [abs(i.estimate - exact_counts[i.item]) / exact_counts[i.item] for i in top]
    sketch_bytes = con.execute("SELECT sum(octet_length(sketch)) FROM sk").fetchone()
    con.close()
    shutil.rmtree(root, ignore_errors=True)
    return {
        "events": per_day * days,
        "days": days,
        "sketch_build_s_total": round(build_s, 2),
        "sketch_bytes_total": int(sketch_bytes[0]) if sketch_bytes else 0,
        "distinct_per_day": {
            "mean_relative_error": statistics.mean(errors),
            "max_relative_error": max(errors),
            "days_within_2sigma": f"{within}/{len(per_day_rows)}",
        },
        "union_30_day": {
            "exact": exact_union,
            "estimate": union.estimate,
            "bounds_2sigma": [union.lower_bound, union.upper_bound],
            "relative_error": abs(union.estimate - exact_union) / exact_union,
        },
        "top_20_pages": {
            "same_items_as_exact": sorted(i.item for i in top) == sorted(p for p, _ in exact_top),
            "same_order_as_exact": [i.item for i in top] == [p for p, _ in exact_top],
            "max_relative_count_error": max(top_errors),
            "exact_20th_count": exact_top[-1][1],
        },
    }


LATENCY_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("events", {"by": ["type"], "grain": "day"}),
    ("persons", {"grain": "week"}),
    ("orders", {"grain": "day"}),
    ("revenue", {"grain": "month"}),
    ("average_order_value", {"by": ["library"]}),
    ("sessions", {"grain": "day"}),
    ("bounced_sessions", {}),
    ("bounce_rate", {"grain": "week"}),
    ("mean_session_duration_s", {"grain": "day"}),
    ("daily_active_persons", {"grain": "day"}),
    ("monthly_active_persons", {"grain": "day"}),
    ("stickiness", {"grain": "week"}),
    ("active_persons_7d", {}),
    ("active_persons_28d", {}),
    ("funnel_step_persons", {"by": ["funnel", "step_index"]}),
    ("event_counts_total", {"grain": "day"}),
    ("funnel_entries", {"by": ["funnel"]}),
    ("funnel_completions", {"by": ["funnel"]}),
    ("funnel_conversion", {"by": ["funnel"], "grain": "week"}),
    ("day_1_retained_persons", {}),
    ("day_1_cohort_persons", {}),
    ("day_1_retention", {"grain": "week"}),
    ("approx_persons", {"grain": "month"}),
    ("top_pages", {"limit": 20}),
    ("top_events", {}),
]


def latency_figures(data_dir: str, runs: int, workload_size: int, seed: int) -> dict[str, Any]:
    cache_dir = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    settings = PipelineSettings(data_dir=data_dir, cache_dir=str(cache_dir))
    metrics = project_metrics(settings)
    warehouse = Warehouse(settings.warehouse_path)
    days = warehouse.published_days("person_events")
    start, end = days[0], days[-1]
    assert {name for name, _ in LATENCY_QUERIES} == set(metrics.metrics), "every metric is measured"
    per_metric: dict[str, Any] = {}
    for name, extra in LATENCY_QUERIES:
        cold, warm = [], []
        for _ in range(runs):
            ResultCache(settings.cache_path).clear()
            result = query(name, start=start, end=end, settings=settings, metrics=metrics, **extra)
            assert not result.cache_hit
            cold.append(result.duration_s * 1000)
            result = query(name, start=start, end=end, settings=settings, metrics=metrics, **extra)
            assert result.cache_hit
            warm.append(result.duration_s * 1000)
        per_metric[name] = {
            "rows": result.table.num_rows,
            "cold_ms": {"p50": percentile(cold, 50), "p95": percentile(cold, 95), "max": max(cold)},
            "warm_ms": {"p50": percentile(warm, 50), "p95": percentile(warm, 95), "max": max(warm)},
        }
    # a repeated workload: analysts asking the same 23 questions over a few ranges, in random order
    ResultCache(settings.cache_path).clear()
    rng = random.Random(seed)
    ranges = [(start, end), (days[-7], end), (days[-30], end)]
    distinct = [(n, e, r) for n, e in LATENCY_QUERIES for r in ranges]
    for _ in range(workload_size):
        name, extra, (first, last) = rng.choice(distinct)
        query(name, start=first, end=last, settings=settings, metrics=metrics, **extra)
    cache = ResultCache(settings.cache_path)
    total = cache.stats(warehouse)["_total"]
    cache.close()
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "data_dir": data_dir,
        "days": len(days),
        "range": [start, end],
        "runs_per_metric": runs,
        "per_metric": per_metric,
        "workload": {
            "queries": workload_size,
            "distinct_queries": len(distinct),
            "hits": total.hits,
            "misses": total.misses,
            "hit_rate": total.hit_rate,
            "entries": total.entries,
            "bytes": total.bytes,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    sk = sub.add_parser("sketches")
    sk.add_argument("--events", type=int, default=1_000_000)
    sk.add_argument("--days", type=int, default=30)
    sk.add_argument("--seed", type=int, default=7)
    lat = sub.add_parser("latency")
    lat.add_argument("--data-dir", required=True)
    lat.add_argument("--runs", type=int, default=20)
    lat.add_argument("--workload", type=int, default=500)
    lat.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the JSON document here")
    args = parser.parse_args()
    if args.mode == "sketches":
        figures = sketch_figures(args.events, args.days, args.seed)
    else:
        figures = latency_figures(args.data_dir, args.runs, args.workload, args.seed)
        print(
            f"{'metric':<26} {'rows':>5} {'cold p50':>9} {'cold p95':>9} {'warm p50':>9} {'warm p95':>9}  (ms)"
        )
        for name, f in figures["per_metric"].items():
            print(f"{name:<26} {f['rows']:>5} {f['cold_ms']['p50']:>9.1f} {f['cold_ms']['p95']:>9.1f} "
                  f"{f['warm_ms']['p50']:>9.1f} {f['warm_ms']['p95']:>9.1f}")  # fmt: skip
    document = json.dumps(figures, indent=2, default=str)
    print(document)
    if args.json:
        Path(args.json).write_text(document)


if __name__ == "__main__":
    main()
