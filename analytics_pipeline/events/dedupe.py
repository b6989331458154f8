"""The dedupe step: ``events`` and ``event_id_conflicts`` for one event date.

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
from pathlib import Path
from typing import Any

from analytics_pipeline.events.late_window import arrival_days
from analytics_pipeline.quality import gate_status, sql_checks
from analytics_pipeline.quality.gates import audit
from analytics_pipeline.quality.outcomes import CheckOutcome, GateFailed
from analytics_pipeline.quality.sql_checks import SqlCheck
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import PublishResult, Warehouse
from analytics_pipeline.warehouse.tables import EVENT_ID_CONFLICTS, EVENTS, RAW_EVENTS

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

# The invariants the suite (checks/suites/events.yml) cannot express; both block publishing.
EVENTS_CHECKS = [
    SqlCheck(
        "events_person_id_present",
        "Every event has a userId or an anonymousId.",
        evaluate=sql_checks.identity_present("staged_events"),
    ),
    SqlCheck(
        "events_reconciliation",
        "Raw rows dated D = events + duplicates + id conflicts, exactly.",
        evaluate=sql_checks.reconciliation("input_rows", ["events", "duplicates", "id_conflicts"]),
    ),
]


@dataclass
class EventsResult:
    day: str
    counts: dict[str, Any]
    checks: list[CheckOutcome]
    published: dict[str, PublishResult] = field(default_factory=dict)
    duration_s: float = 0.0
    gate_duration_s: float = 0.0  # of which spent in the suite, volume and schema gates


def dedupe_events_day(settings: PipelineSettings, day: str, publish: bool = True) -> EventsResult:
    started = time.perf_counter()
    warehouse = Warehouse(settings.warehouse_path)
    token = uuid.uuid4().hex
    for table in (EVENTS, EVENT_ID_CONFLICTS):
        warehouse.clear_staging(table, day)
    wanted = arrival_days(day, settings.late_window_days)
    sources = [warehouse.partition_file(RAW_EVENTS, d) for d in wanted]
    present = [str(p) for p in sources if p.exists()]
    events_staged = warehouse.staging_file(EVENTS, day, token)
    conflicts_staged = warehouse.staging_file(EVENT_ID_CONFLICTS, day, token)

    # A snapshot of the inputs: hard links keep the bytes read now even if a parallel run
    # publishes a new raw_events partition while this step scans them more than once.
    snapshot = []
    for path in present:
        arrival = Path(path).parent.name.removeprefix("date=")
        link = warehouse.staging_file(EVENTS, day, f"{token}.raw-{arrival}")
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
            "input_rows": sql_checks.count(con, "SELECT count(*) FROM candidates"),
            "events": sql_checks.count(con, "SELECT count(*) FROM staged_events"),
            "duplicates": sql_checks.count(
                con, "SELECT count(*) FROM ranked WHERE copy_rank > 1 AND content_hash = winner_hash"
            ),
            "id_conflicts": sql_checks.count(con, "SELECT count(*) FROM staged_conflicts"),
            "late_events": sql_checks.count(
                con, f"SELECT count(*) FROM staged_events WHERE arrival_date > DATE '{day}'"
            ),
            "unregistered_events": sql_checks.count(
                con, "SELECT count(*) FROM staged_events WHERE schema_version IS NULL"
            ),
            "persons": sql_checks.count(
                con,
                "SELECT count(DISTINCT coalesce(user_id, 'anonymous:' || anonymous_id)) FROM staged_events",
            ),
        }
        checks = sql_checks.run_all(EVENTS_CHECKS, con, counts)
    finally:
        con.close()
        for link in snapshot:
            link.unlink(missing_ok=True)

    gate = audit(warehouse, EVENTS, day, events_staged, settings.suites_path)  # suites/events.yml
    checks += gate.outcomes
    result = EventsResult(day, counts, checks, gate_duration_s=gate.duration_s)
    if publish:
        gate_status.record(warehouse, [EVENTS, EVENT_ID_CONFLICTS], day, checks)
    if any(c.blocks for c in checks):
        result.duration_s = time.perf_counter() - started
        raise GateFailed(EVENTS, day, checks)
    if publish:
        result.published[EVENTS] = warehouse.publish(events_staged, EVENTS, day, settings.versions_kept)
        result.published[EVENT_ID_CONFLICTS] = warehouse.publish(
            conflicts_staged, EVENT_ID_CONFLICTS, day, settings.versions_kept
        )
        warehouse.write_manifest(EVENTS, day, counts)
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
