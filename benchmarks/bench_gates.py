"""Gating cost: time spent in the quality gates of one N-event day, against that day's pipeline.

Synthesises ``raw_events`` for one arrival day (N events, all dated that day) in DuckDB,
then runs the real steps for that date: ``dedupe_events_day`` (dedupe, then its SQL checks
and the events suite) and every model (each audited before it is published), and prints
per asset the step time and the part of it spent in gates (GX suite on pandas, volume,
schema drift). The models' windows read neighbouring days, published directly with 1%
of the volume (as in bench_models.py).

Ingest (landing files -> raw_events) is not run here; bench_ingest.py measures it
(about 25 s per 1M lines). The share printed is of events + models only, so with ingest
counted the gates' share of the day's pipeline is lower still. Run by hand:

    .venv/bin/python benchmarks/bench_gates.py --events-per-day 1000000 --memory-limit 4GB
    .venv/bin/python benchmarks/bench_gates.py --events-per-day 10000000 --memory-limit 12GB
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import date

import duckdb
from bench_models import (  # type: ignore[import-not-found]
    SYNTH,
    add_arguments,
    bench_settings,
    publish_events,
    window_days,
)

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.ingest.parsing import RAW_EVENT_COLUMNS
from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.loader import load_models
from analytics_pipeline.settings import PROJECT_ROOT
from analytics_pipeline.warehouse.storage import Warehouse
from analytics_pipeline.warehouse.tables import RAW_EVENTS


def synthesise_raw(con: duckdb.DuckDBPyConnection, n: int, day: str, path: str) -> None:
    """raw_events for one arrival day: the synthetic events plus the raw-only columns."""
    events = SYNTH.format(n=n, seed=0, day=day, persons=max(n // 25, 10), path=path)
    select = events[events.index("WITH base") : events.index(") TO '")]
    columns = ", ".join(RAW_EVENT_COLUMNS)
    con.execute(
        f"""COPY (
        SELECT {columns} FROM (
            SELECT *, md5(message_id) AS content_hash,
                   '{{"messageId":"' || message_id || '","type":"' || type || '"}}' AS raw_line
            FROM ({select}))
        ) TO '{path}' (FORMAT parquet, COMPRESSION zstd)"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, memory_limit="4GB")
    args = parser.parse_args()
    settings = bench_settings(args, "bench-gates-")
    data_dir = settings.data_dir
    warehouse = Warehouse(settings.warehouse_path)
    target = date(2025, 3, 10)
    day = target.isoformat()
    specs = load_models(PROJECT_ROOT / "assets" / "models")
    days = window_days(specs, target)
    neighbour_n = max(args.events_per_day // 100, 1000)

    started = time.perf_counter()
    con = duckdb.connect(config={"memory_limit": args.memory_limit, "threads": args.threads})
    con.execute("SET TimeZone = 'UTC'")
    for seed, other in enumerate(days):
        if other == day:
            continue
        publish_events(con, warehouse, other, neighbour_n, seed)
    raw_staged = warehouse.staging_file(RAW_EVENTS, day, "bench")
    synthesise_raw(con, args.events_per_day, day, str(raw_staged))
    warehouse.publish(raw_staged, RAW_EVENTS, day, 1)
    con.close()
    print(f"synthesised raw_events {day} ({args.events_per_day:,} events) and neighbour events "
          f"{days[0]}..{days[-1]} in {time.perf_counter() - started:.1f}s")  # fmt: skip
    print(f"memory_limit={args.memory_limit} threads={args.threads} data={data_dir}")

    rows: list[tuple[str, float, float, int]] = []
    events = dedupe_events_day(settings, day)
    rows.append(("events", events.duration_s, events.gate_duration_s, events.counts["events"]))
    for other in days:
        for spec in specs:
            if not spec.partitioned:
                continue
            result = build_model(settings, spec, other)
            if other == day:
                rows.append((spec.name, result.duration_s, result.gate_duration_s, result.rows))
    for spec in specs:
        if not spec.partitioned:
            result = build_model(settings, spec, None)
            rows.append((spec.name + " (all)", result.duration_s, result.gate_duration_s, result.rows))

    print(f"\n{'asset':<24}{'step s':>10}{'gates s':>10}{'share':>8}{'rows':>14}")
    for name, step, gate, count in rows:
        print(f"{name:<24}{step:>10.2f}{gate:>10.2f}{gate / step:>8.1%}{count:>14,}")
    total, gates = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'events + models':<24}{total:>10.2f}{gates:>10.2f}{gates / total:>8.1%}")
    print(f"gates took {gates:.1f}s of {total:.1f}s ({gates / total:.1%}) for {args.events_per_day:,} events "
          f"on {day}, ingest excluded; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
