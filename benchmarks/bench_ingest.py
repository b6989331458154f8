"""Benchmark: one big day through ``ingest_arrival_day`` and ``dedupe_events_day``.

Why: the nightly run must keep up with the daily volume inside a fixed DuckDB memory
limit. This generates one event day (plus the later arrival folders its late events
land in) with the project's generator, ingests every arrival folder, builds the
events of the day, and prints throughput, bytes written and peak RSS. It is a script
run by hand, not a test, so nothing depends on machine speed.

    .venv/bin/python benchmarks/bench_ingest.py [--events-per-day 1000000] \
        [--memory-limit 1GB] [--threads 2] [--data-dir DIR] [--gzip] [--keep] [--phases]

``--phases`` also prints where the first day's ingest spends its time: reading the
landing files, the parse, writing each output and the rest.

Landing files are plain ``*.jsonl`` by default (``--gzip`` writes ``*.jsonl.gz`` like
a Segment S3 destination; reading them then includes decompression). The generator
runs in a child process so that its memory (it holds a day's lines before writing
them) does not count in the pipeline's peak RSS; the pipeline itself runs in this
process, without subprocesses, so ``ru_maxrss`` of this process is its peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

DAY = date(2025, 6, 2)


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate_child(landing: Path, events_per_day: int, gzip_files: bool) -> None:
    """Entry point of the generator child: print counts and timing as JSON."""
    from analytics_pipeline.sample_data.generator import generate

    started = time.perf_counter()
    summary = generate(landing, DAY, 1, events_per_day, gzip_files=gzip_files)
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "days": summary.days,
                "lines_written": summary.lines_written,
                "files_written": summary.files_written,
                "maxrss_mib": maxrss_mib(),
            }
        )
    )


def _phase(sql: str) -> str:
    text = " ".join(sql.split())
    if text.startswith("CREATE TEMP TABLE parsed"):
        return "parse (CREATE TABLE parsed)"
    if text.startswith("COPY") and "raw_line" in text:
        return "write raw_events (COPY)"
    if text.startswith("COPY"):
        return "write quarantine (COPY)"
    return "other statements (checks)"


class _TimedConnection:
    """A DuckDB connection that adds each statement's time to its phase."""

    def __init__(self, con: Any, phases: dict[str, float]) -> None:
        self._con, self._phases = con, phases

    def execute(self, sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._con.execute(sql, *args)
        finally:
            phase = _phase(sql)
            self._phases[phase] = self._phases.get(phase, 0.0) + time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


@contextmanager
def _timed_phases(phases: dict[str, float] | None) -> Iterator[None]:
    """While active, time reading the landing files and each DuckDB statement of the ingest."""
    if phases is None:
        yield
        return
    from analytics_pipeline import ingestion
    from analytics_pipeline.settings import PipelineSettings

    read, connect = ingestion.read_landing_day, PipelineSettings.connect

    def timed_read(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return read(*args, **kwargs)
        finally:
            phases["read landing files"] = time.perf_counter() - started

    ingestion.read_landing_day = timed_read  # type: ignore[assignment]
    PipelineSettings.connect = lambda self: _TimedConnection(connect(self), phases)  # type: ignore[method-assign,assignment,return-value]
    try:
        yield
    finally:
        ingestion.read_landing_day = read  # type: ignore[assignment]
        PipelineSettings.connect = connect  # type: ignore[method-assign]


def _bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events-per-day", type=int, default=1_000_000)
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit (default 1GB)")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--gzip", action="store_true", help="write *.jsonl.gz landing files")
    parser.add_argument("--keep", action="store_true", help="keep a temporary data dir")
    parser.add_argument("--phases", action="store_true", help=f"time the phases of ingesting {DAY}")
    parser.add_argument("--_generate", nargs=3, metavar=("LANDING", "EVENTS", "GZIP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._generate:  # the generator child
        landing, events, gz = args._generate
        generate_child(Path(landing), int(events), gz == "1")
        return 0

    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="bench_ingest_")) if temporary else args.data_dir.resolve()
    landing = data_dir / "landing"
    if landing.exists() or (data_dir / "warehouse").exists():
        parser.error(f"{data_dir} already holds landing/ or warehouse/; pass an empty or new directory")
    data_dir.mkdir(parents=True, exist_ok=True)

    try:
        child = subprocess.run(
            [sys.executable, __file__, "--_generate", str(landing), str(args.events_per_day),
             "1" if args.gzip else "0"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        gen = json.loads(child.stdout.strip().splitlines()[-1])

        from analytics_pipeline.events.dedupe import dedupe_events_day
        from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
        from analytics_pipeline.settings import PipelineSettings
        from analytics_pipeline.warehouse.storage import PublishResult

        settings = PipelineSettings(
            data_dir=str(data_dir), duckdb_memory_limit=args.memory_limit, duckdb_threads=args.threads
        )
        rss_after_imports = maxrss_mib()
        landing_bytes = _bytes(list(landing.rglob("*")))

        published: list[PublishResult] = []
        started = time.perf_counter()
        ingest_by_day = {}
        phases: dict[str, float] = {}
        for day in gen["days"]:
            t0 = time.perf_counter()
            with _timed_phases(phases if args.phases and day == DAY.isoformat() else None):
                result = ingest_arrival_day(settings, day)
            ingest_by_day[day] = (time.perf_counter() - t0, result.counts)
            published.extend(result.published.values())
        ingest_s = time.perf_counter() - started
        rss_after_ingest = maxrss_mib()

        started = time.perf_counter()
        events = dedupe_events_day(settings, DAY.isoformat())
        events_s = time.perf_counter() - started
        published.extend(events.published.values())

        lines_read = sum(c["lines_read"] for _, c in ingest_by_day.values())
        raw_rows = sum(c["raw_events"] for _, c in ingest_by_day.values())
        first_s, first_counts = ingest_by_day[DAY.isoformat()]
        spill = data_dir / "tmp" / "duckdb"
        print(f"events/day          {args.events_per_day:,}")
        print(f"landing             {gen['files_written']} files in {len(gen['days'])} arrival folders "
              f"({'jsonl.gz' if args.gzip else 'jsonl'}), {gen['lines_written']:,} lines, "
              f"{landing_bytes / 2**20:,.1f} MiB")  # fmt: skip
        print(f"generation          {gen['seconds']:.1f} s "
              f"(child process, peak RSS {gen['maxrss_mib']:,.0f} MiB)")  # fmt: skip
        print(f"ingest              {ingest_s:.1f} s for {len(gen['days'])} arrival days "
              f"({first_s:.1f} s for {DAY} itself: {first_counts['lines_read']:,} lines)")  # fmt: skip
        print(f"ingest rate         {lines_read / ingest_s:,.0f} lines/s ({raw_rows:,} raw_events rows)")
        for phase, seconds in phases.items():
            print(f"  {phase:<30} {seconds:6.1f} s")
        if phases:
            print(f"  {'everything else':<30} {first_s - sum(phases.values()):6.1f} s")
        print(f"events              {events_s:.1f} s: {events.counts['input_rows']:,} rows -> "
              f"{events.counts['events']:,} events, {events.counts['duplicates']:,} duplicates, "
              f"{events.counts['id_conflicts']:,} id conflicts")  # fmt: skip
        print(f"events rate         {events.counts['input_rows'] / events_s:,.0f} rows/s")
        print(f"end to end          {(lines_read) / (ingest_s + events_s):,.0f} lines/s "
              f"({ingest_s + events_s:.1f} s)")  # fmt: skip
        print(f"bytes written       {sum(p.bytes_written for p in published) / 2**20:,.1f} MiB "
              f"in {len(published)} published files")  # fmt: skip
        print(f"peak RSS            {maxrss_mib():,.0f} MiB (after imports {rss_after_imports:,.0f} MiB, "
              f"after ingest {rss_after_ingest:,.0f} MiB)")  # fmt: skip
        print(f"memory limit        {args.memory_limit} (DuckDB), threads {args.threads}")
        print(f"spill dir left      {_bytes(list(spill.rglob('*'))) / 2**20:,.1f} MiB in {spill}")
        print(f"data dir            {data_dir}{' (removed)' if temporary and not args.keep else ''}")
        print(f"python              {sys.version.split()[0]}; days {', '.join(gen['days'])}")
    finally:
        if temporary and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
