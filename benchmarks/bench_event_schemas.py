"""Benchmark: validate N synthetic events with the compiled schema SQL and print rows/s.

Why: schema validation runs over every raw event, so its cost must stay linear and
vectorized; run this after changing the compiler to catch a slowdown.  It is a
script, not a test, so CI never depends on machine speed.

    .venv/bin/python benchmarks/bench_event_schemas.py [--rows 1000000] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import duckdb

from analytics_pipeline.ingest.event_schemas import (
    compile_version_sql,
    compile_violation_sql,
    load_event_schemas,
)

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "assets" / "events"

# Roughly 5% of rows violate something and 5% are unregistered events.
SYNTHETIC_EVENTS_SQL = """
CREATE OR REPLACE TABLE events AS
SELECT
    CASE WHEN i % 10 = 0 THEN 'page' WHEN i % 10 = 1 THEN 'identify' ELSE 'track' END AS type,
    CASE WHEN i % 10 IN (0, 1) THEN NULL
         ELSE ['Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed',
               'Signed Up', 'Product Viewed', 'Product Added', 'Unknown Event'][i % 8 + 1]
    END AS event,
    CASE WHEN i % 10 = 1 THEN NULL
         ELSE json_object(
             'product_id', 'p' || (i % 5000),
             'order_id', 'o' || i,
             'price', round((i % 10000) / 100.0, 2) - CASE WHEN i % 97 = 0 THEN 1000 ELSE 0 END,
             'revenue', (i % 50000) / 100.0,
             'value', (i % 777) / 10.0,
             'quantity', CASE WHEN i % 101 = 0 THEN to_json('2') ELSE to_json(1 + i % 4) END,
             'currency', ['USD', 'EUR', 'GBP', 'USD', 'XYZ'][1 + (i % 89 = 0)::INT * 4],
             'method', ['email', 'google', 'github'][1 + i % 3],
             'path', CASE WHEN i % 113 = 0 THEN 'no-slash' ELSE '/p/' || (i % 300) END,
             'url', 'https://example.com/p/' || (i % 300),
             'title', 'Page ' || (i % 300))
    END AS properties,
    CASE WHEN i % 10 = 1 THEN json_object(
             'email', CASE WHEN i % 59 = 0 THEN 'broken' ELSE 'user' || i || '@example.com' END,
             'plan', ['free', 'pro', 'enterprise'][1 + i % 3],
             'name', 'User ' || i)
    END AS traits
FROM range(?) AS t(i)
"""


def main() -> None:
    """Generate rows, run the violation + version expressions, report throughput."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    schemas = load_event_schemas(SCHEMA_DIR)
    violation_sql = compile_violation_sql(schemas)
    version_sql = compile_version_sql(schemas)
    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {int(args.threads)}")
    con.execute(SYNTHETIC_EVENTS_SQL, [args.rows])
    query = f"""
        SELECT count(*) AS n,
               count(*) FILTER (WHERE version IS NULL) AS unregistered,
               count(violation) AS violations
        FROM (SELECT {violation_sql} AS violation, {version_sql} AS version FROM events)
    """
    print(f"{len(schemas)} schemas, {len(violation_sql):,} chars of SQL, {args.rows:,} rows")
    best = float("inf")
    for run in range(1, args.repeat + 1):
        start = time.perf_counter()
        n, unregistered, violations = con.execute(query).fetchone() or (0, 0, 0)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        print(
            f"run {run}: {elapsed:.3f}s  {n / elapsed:,.0f} rows/s  "
            f"(violations={violations:,}, unregistered={unregistered:,})"
        )
    top = con.execute(
        f"SELECT {violation_sql} AS v, count(*) FROM events "
        "GROUP BY v HAVING v IS NOT NULL ORDER BY 2 DESC LIMIT 5"
    ).fetchall()
    for message, count in top:
        print(f"  {count:>9,}  {message}")
    print(f"best: {args.rows / best:,.0f} rows/s")


if __name__ == "__main__":
    main()
