"""The pipeline's counts against what the generator planted (an independent tally)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.sample_data.generator import generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import query


def test_every_planted_fault_is_found_and_every_line_accounted(tmp_path: Path) -> None:
    # Late arrivals land up to 7 days on (5 late + 2 for a re-delivery): a window of 7 keeps them all.
    settings = PipelineSettings(data_dir=str(tmp_path / "data"), late_window_days=7)
    planted = generate(settings.landing_path, date(2025, 1, 10), 3, 1500, seed=11)
    arrivals = sorted(p.name for p in settings.landing_path.iterdir())
    reasons: Counter[str] = Counter()
    lines_read = boms = 0
    for day in arrivals:
        counts = ingest_arrival_day(settings, day).counts
        reasons.update(counts["quarantined_by_reason"])
        lines_read += counts["lines_read"]
        boms += counts["boms_stripped"]
    totals: Counter[str] = Counter()
    for day in ("2025-01-10", "2025-01-11", "2025-01-12"):
        counts = dedupe_events_day(settings, day).counts
        totals.update({k: counts[k] for k in ("events", "duplicates", "id_conflicts")})

    assert totals["events"] == planted.events_planted == 4500
    assert totals["duplicates"] == planted.duplicates_planted + planted.corrupt_gzip_readable_lines
    assert totals["id_conflicts"] == planted.id_conflicts_planted
    assert dict(reasons) == planted.malformed_planted  # duplicate_key included
    assert boms == planted.boms_planted == 1  # stripped and counted, not a bad line
    assert lines_read == planted.lines_written + planted.corrupt_gzip_readable_lines
    quarantined_lines = sum(planted.malformed_planted.values()) - 2  # minus the two file-level faults
    assert lines_read == totals["events"] + totals["duplicates"] + totals["id_conflicts"] + quarantined_lines
    # the events table itself: one row per messageId across all dates
    glob = Warehouse(settings.warehouse_path).table_glob("events")
    assert query(glob, "SELECT count(*), count(DISTINCT message_id) FROM t") == [(4500, 4500)]
