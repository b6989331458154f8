"""Ingest arrival days and build event days in this process, then report peak RSS as JSON.

Used by ``tests/test_memory_bound.py`` so the measured peak RSS belongs to the pipeline
work alone (plus this interpreter and its imports), not to pytest. Settings come from
``ANALYTICS_*`` environment variables, exactly as the Dagster definitions read them.

    python tests/scripts/ingest_and_build.py --arrival-days D [D ...] --event-days D [D ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def maxrss_kib() -> int:
    """ru_maxrss (KiB on Linux). After fork+exec it starts from the parent's peak at the
    fork, so it can only over-state this process's own peak."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def vm_hwm_kib() -> int:
    """This process's own resident-set high-water mark since exec (Linux ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return maxrss_kib()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arrival-days", nargs="+", required=True)
    parser.add_argument("--event-days", nargs="+", required=True)
    args = parser.parse_args(argv)

    from analytics_pipeline.events.dedupe import dedupe_events_day
    from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
    from analytics_pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    after_imports = vm_hwm_kib()
    started = time.perf_counter()
    ingest = {day: ingest_arrival_day(settings, day).counts for day in args.arrival_days}
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    events = {day: dedupe_events_day(settings, day).counts for day in args.event_days}
    events_s = time.perf_counter() - started
    report = {
        "memory_limit": settings.duckdb_memory_limit,
        "threads": settings.duckdb_threads,
        "vm_hwm_after_imports_kib": after_imports,
        "vm_hwm_kib": vm_hwm_kib(),
        "maxrss_kib": maxrss_kib(),
        "ingest_s": round(ingest_s, 3),
        "events_s": round(events_s, 3),
        "lines_read": sum(c["lines_read"] for c in ingest.values()),
        "raw_events": sum(c["raw_events"] for c in ingest.values()),
        "events": {day: c["events"] for day, c in events.items()},
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
