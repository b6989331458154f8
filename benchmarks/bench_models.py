"""Build every model for one day of N synthetic events and print per-model durations.

Events are synthesised directly in DuckDB (fast, so 10M is practical) for the day and
its neighbours that the models' windows read, then each model is built for the days
it needs. Run by hand, not by pytest:

    .venv/bin/python benchmarks/bench_models.py --events-per-day 1000000
    .venv/bin/python benchmarks/bench_models.py --events-per-day 10000000 --memory-limit 4GB
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import date, timedelta

import duckdb

from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.loader import ModelSpec, load_models
from analytics_pipeline.settings import PROJECT_ROOT, PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

SYNTH = """
COPY (
  WITH base AS (
    SELECT i, CAST(hash(i, {seed}) // 2 AS BIGINT) AS h, CAST(hash(i, {seed}) % {persons} AS BIGINT) AS person
    FROM range({n}) t(i)
  )
  SELECT
    'm-{day}-' || i AS message_id,
    CASE WHEN h % 100 < 40 THEN 'page' WHEN h % 100 < 42 THEN 'identify' ELSE 'track' END AS type,
    CASE WHEN h % 100 < 42 THEN NULL
         ELSE ['Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed', 'Signed Up'][CAST(1 + (h // 7) % 5 AS BIGINT)]
    END AS event,
    CASE WHEN person % 3 = 0 OR h % 100 BETWEEN 40 AND 41 THEN 'u' || person END AS user_id,
    'a' || person AS anonymous_id,
    TIMESTAMPTZ '{day} 00:00:00+00' + to_microseconds(CAST((h // 1000) % 86400000000 AS BIGINT)) AS timestamp,
    DATE '{day}' AS event_date,
    TIMESTAMPTZ '{day} 00:00:00+00' + to_microseconds(CAST((h // 1000) % 86400000000 AS BIGINT)) AS received_at,
    NULL::TIMESTAMPTZ AS sent_at, NULL::TIMESTAMPTZ AS original_timestamp,
    CASE WHEN h % 100 < 40 THEN json_object('path', '/p' || (h % 50), 'referrer', '')
         ELSE json_object('price', (h % 1000) / 10.0) END AS properties,
    CASE WHEN h % 100 BETWEEN 40 AND 41 THEN json_object('plan', 'pro') END AS traits,
    '{{}}'::JSON AS context, '1-0-0' AS schema_version, 1::BIGINT AS deliveries,
    DATE '{day}' AS arrival_date, 'synthetic' AS file_path, i AS line_number
  FROM base ORDER BY timestamp, message_id
) TO '{path}' (FORMAT parquet, COMPRESSION zstd)
"""


def add_arguments(parser: argparse.ArgumentParser, memory_limit: str) -> None:
    parser.add_argument("--events-per-day", type=int, default=1_000_000)
    parser.add_argument("--memory-limit", default=memory_limit)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)


def bench_settings(args: argparse.Namespace, prefix: str) -> PipelineSettings:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix=prefix)
    return PipelineSettings(
        data_dir=data_dir, duckdb_memory_limit=args.memory_limit, duckdb_threads=args.threads
    )


def window_days(specs: list[ModelSpec], target: date) -> list[str]:
    """Every day some model's window reads around ``target``."""
    reach = max([abs(w.start) for s in specs for w in s.upstreams.values() if not w.latest] + [1])
    ahead = max([w.end for s in specs for w in s.upstreams.values() if not w.latest] + [1])
    return [(target + timedelta(days=k)).isoformat() for k in range(-reach, ahead + 1)]


def publish_events(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, day: str, n: int, seed: int) -> None:
    staged = warehouse.staging_file("events", day, "bench")
    con.execute(SYNTH.format(n=n, seed=seed, day=day, persons=max(n // 25, 10), path=staged))
    warehouse.publish(staged, "events", day, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, memory_limit="2GB")
    args = parser.parse_args()
    settings = bench_settings(args, "bench-models-")
    data_dir = settings.data_dir
    warehouse = Warehouse(settings.warehouse_path)
    target = date(2025, 3, 10)
    specs = load_models(PROJECT_ROOT / "assets" / "models")
    days = window_days(specs, target)
    neighbour_n = max(args.events_per_day // 100, 1000)  # neighbours are light, the target day is full
    started = time.perf_counter()
    con = duckdb.connect(config={"memory_limit": args.memory_limit, "threads": args.threads})
    con.execute("SET TimeZone = 'UTC'")
    for seed, day in enumerate(days):
        n = args.events_per_day if day == target.isoformat() else neighbour_n
        publish_events(con, warehouse, day, n, seed)
    con.close()
    print(f"synthesised events for {days[0]}..{days[-1]} ({args.events_per_day:,} on {target}) "
          f"in {time.perf_counter() - started:.1f}s")  # fmt: skip
    print(f"memory_limit={args.memory_limit} threads={args.threads} data={data_dir}")
    timings: dict[str, float] = {}
    for day in days:
        for spec in specs:
            if not spec.partitioned:
                continue
            result = build_model(settings, spec, day)
            if day == target.isoformat():
                timings[spec.name] = result.duration_s
                print(f"  {spec.name:<22} {result.duration_s:8.2f}s  {result.rows:>12,} rows")
    for spec in specs:
        if not spec.partitioned:
            result = build_model(settings, spec, None)
            timings[spec.name] = result.duration_s
            print(f"  {spec.name:<22} {result.duration_s:8.2f}s  {result.rows:>12,} rows (unpartitioned)")
    print(f"all models for {target}: {sum(timings.values()):.2f}s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
