"""The ``events`` step: conformed, deduplicated events for one event date.

Events dated D arrive on days D .. D+L (L = the late window), so the step reads
those ``raw_events`` partitions, keeps rows dated D and picks one row per messageId:
the copy with the earliest ``receivedAt`` (ties: earlier arrival day, then file path,
then line). Other copies with the same content are duplicates (counted); copies
with different content are id conflicts (written to ``event_id_conflicts``).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from analytics_pipeline import quality
from analytics_pipeline.gates import GateFailed, audit
from analytics_pipeline.ingestion import RAW_TABLE
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.storage import PublishResult, Warehouse

EVENTS_TABLE = "events"
CONFLICTS_TABLE = "event_id_conflicts"

EVENT_COLUMNS = {
    "message_id": "Segment messageId, unique in the table.",
    "type": "track, page, screen, identify, group or alias.",
    "event": "Track event name; NULL for other types.",
    "user_id": "userId as sent.",
    "anonymous_id": "anonymousId as sent.",
    "timestamp": "Event time (UTC) after clock-skew correction.",
    "event_date": "UTC date of timestamp: the partition.",
    "received_at": "Server receive time of the winning copy.",
    "sent_at": "Client send time of the winning copy.",
    "original_timestamp": "Client clock time of the winning copy.",
    "properties": "Track/page properties (JSON).",
    "traits": "Identify traits (JSON).",
    "context": "Segment context (JSON).",
    "schema_version": "Event schema version it conforms to; NULL when unregistered.",
    "deliveries": "How many copies with this messageId and content were delivered.",
    "arrival_date": "Landing day of the winning copy.",
    "file_path": "Landing file of the winning copy.",
    "line_number": "Line of the winning copy in that file.",
}

RANK_ORDER = "received_at, arrival_date, file_path, line_number"


@dataclass
class EventsResult:
    day: str
    counts: dict[str, Any]
    checks: list[quality.CheckOutcome]
    published: dict[str, PublishResult] = field(default_factory=dict)
    duration_s: float = 0.0
    gate_duration_s: float = 0.0  # of which spent in the suite, volume and schema gates


def arrival_days(day: str, late_window_days: int) -> list[str]:
    start = date.fromisoformat(day)
    return [(start + timedelta(days=i)).isoformat() for i in range(late_window_days + 1)]


def build_events_day(settings: PipelineSettings, day: str, publish: bool = True) -> EventsResult:
    started = time.perf_counter()
    warehouse = Warehouse(settings.warehouse_path)
    token = uuid.uuid4().hex
    for table in (EVENTS_TABLE, CONFLICTS_TABLE):
        warehouse.clear_staging(table, day)
    wanted = arrival_days(day, settings.late_window_days)
    sources = [warehouse.partition_file(RAW_TABLE, d) for d in wanted]
    present = [str(p) for p in sources if p.exists()]
    events_staged = warehouse.staging_file(EVENTS_TABLE, day, token)
    conflicts_staged = warehouse.staging_file(CONFLICTS_TABLE, day, token)

    # A snapshot of the inputs: hard links keep the bytes read now even if a parallel run
    # publishes a new raw_events partition while this step scans them more than once.
    snapshot = []
    for path in present:
        arrival = Path(path).parent.name.removeprefix("date=")
        link = warehouse.staging_file(EVENTS_TABLE, day, f"{token}.raw-{arrival}")
        os.link(path, link)
        snapshot.append(link)

    con = settings.connect()
    try:
        if snapshot:
            files = ", ".join(f"'{p}'" for p in snapshot)
            con.execute(
                f"CREATE TEMP VIEW source AS SELECT * FROM read_parquet([{files}]) "
                f"WHERE event_date = DATE '{day}'"
            )
        else:  # no arrival day published yet: an empty, correctly typed partition
            con.execute(f"CREATE TEMP VIEW source AS SELECT * FROM ({_empty_raw()}) WHERE false")
        # Only the narrow columns the ranking needs are held in memory; the wide ones
        # (properties, context, raw_line) are read from the files by the COPYs below.
        con.execute(
            f"""CREATE TEMP TABLE candidates AS
            SELECT {RANK_ORDER}, message_id, content_hash FROM source"""
        )
        con.execute(
            f"""CREATE TEMP TABLE ranked AS
            SELECT arrival_date, file_path, line_number, message_id, content_hash,
                   row_number() OVER w AS copy_rank,
                   first_value(content_hash) OVER w AS winner_hash
            FROM candidates WINDOW w AS (PARTITION BY message_id ORDER BY {RANK_ORDER})"""
        )
        con.execute(
            """CREATE TEMP TABLE deliveries AS
            SELECT message_id, count(*) AS deliveries FROM ranked
            WHERE content_hash = winner_hash GROUP BY message_id"""
        )
        con.execute(
            f"""COPY (
            SELECT c.message_id, c.type, c.event, c.user_id, c.anonymous_id, c.timestamp, c.event_date,
                   c.received_at, c.sent_at, c.original_timestamp, c.properties, c.traits, c.context,
                   c.schema_version, d.deliveries, c.arrival_date, c.file_path, c.line_number
            FROM source c
            JOIN ranked r USING (arrival_date, file_path, line_number)
            JOIN deliveries d ON d.message_id = c.message_id
            WHERE r.copy_rank = 1
            ORDER BY c.timestamp, c.message_id
            ) TO '{events_staged}' (FORMAT parquet, COMPRESSION zstd)"""
        )
        con.execute(
            f"""COPY (
            SELECT c.message_id, 'id_conflict' AS reason,
                   'messageId delivered with different content; the copy received first was kept' AS message,
                   r.winner_hash AS kept_content_hash, c.content_hash, c.type, c.event, c.user_id,
                   c.anonymous_id, c.timestamp, c.received_at, c.event_date, c.arrival_date,
                   c.file_path, c.line_number, c.raw_line
            FROM source c
            JOIN ranked r USING (arrival_date, file_path, line_number)
            WHERE r.copy_rank > 1 AND r.content_hash <> r.winner_hash
            ORDER BY c.message_id, c.received_at, c.arrival_date, c.file_path, c.line_number
            ) TO '{conflicts_staged}' (FORMAT parquet, COMPRESSION zstd)"""
        )
        con.execute(f"CREATE TEMP VIEW staged_events AS SELECT * FROM read_parquet('{events_staged}')")
        con.execute(f"CREATE TEMP VIEW staged_conflicts AS SELECT * FROM read_parquet('{conflicts_staged}')")
        counts = {
            "arrival_days_read": [d for d, p in zip(wanted, sources, strict=True) if p.exists()],
            "arrival_days_missing": [d for d, p in zip(wanted, sources, strict=True) if not p.exists()],
            "input_rows": quality.count(con, "SELECT count(*) FROM candidates"),
            "events": quality.count(con, "SELECT count(*) FROM staged_events"),
            "duplicates": quality.count(
                con, "SELECT count(*) FROM ranked WHERE copy_rank > 1 AND content_hash = winner_hash"
            ),
            "id_conflicts": quality.count(con, "SELECT count(*) FROM staged_conflicts"),
            "late_events": quality.count(
                con, f"SELECT count(*) FROM staged_events WHERE arrival_date > DATE '{day}'"
            ),
            "unregistered_events": quality.count(
                con, "SELECT count(*) FROM staged_events WHERE schema_version IS NULL"
            ),
            "persons": quality.count(
                con,
                "SELECT count(DISTINCT coalesce(user_id, 'anonymous:' || anonymous_id)) FROM staged_events",
            ),
        }
        checks = _checks(con, day, counts)
    finally:
        con.close()
        for link in snapshot:
            link.unlink(missing_ok=True)

    gate = audit(warehouse, EVENTS_TABLE, day, events_staged, settings.suites_path)  # suites/events.yml
    checks += gate.outcomes
    result = EventsResult(day, counts, checks, gate_duration_s=gate.duration_s)
    if any(c.blocks for c in checks):
        result.duration_s = time.perf_counter() - started
        raise GateFailed(EVENTS_TABLE, day, checks)
    if publish:
        result.published[EVENTS_TABLE] = warehouse.publish(
            events_staged, EVENTS_TABLE, day, settings.versions_kept
        )
        result.published[CONFLICTS_TABLE] = warehouse.publish(
            conflicts_staged, CONFLICTS_TABLE, day, settings.versions_kept
        )
        warehouse.write_manifest(EVENTS_TABLE, day, counts)
    result.duration_s = time.perf_counter() - started
    return result


def _empty_raw() -> str:
    return """SELECT NULL::VARCHAR AS message_id, NULL::VARCHAR AS type, NULL::VARCHAR AS event,
        NULL::VARCHAR AS user_id, NULL::VARCHAR AS anonymous_id, NULL::TIMESTAMPTZ AS timestamp,
        NULL::TIMESTAMPTZ AS original_timestamp, NULL::TIMESTAMPTZ AS sent_at,
        NULL::TIMESTAMPTZ AS received_at, NULL::DATE AS event_date, NULL::JSON AS properties,
        NULL::JSON AS traits, NULL::JSON AS context, NULL::VARCHAR AS schema_version,
        NULL::VARCHAR AS content_hash, NULL::DATE AS arrival_date, NULL::VARCHAR AS file_path,
        NULL::BIGINT AS line_number, NULL::VARCHAR AS raw_line"""


def _checks(con: Any, day: str, counts: dict[str, Any]) -> list[quality.CheckOutcome]:
    """The invariants the suite cannot express; the rest is in checks/suites/events.yml."""
    return [
        quality.identity_present(con, "staged_events", "events_person_id_present"),
        quality.reconciliation(
            "events_reconciliation",
            counts["input_rows"],
            {
                "events": counts["events"],
                "duplicates": counts["duplicates"],
                "id_conflicts": counts["id_conflicts"],
            },
        ),
    ]
