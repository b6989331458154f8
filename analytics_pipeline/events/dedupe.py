"""The dedupe step: ``events`` and ``event_id_conflicts`` for one event date.

Events dated D arrive on days D .. D+L (L = the late window), so the step reads
those ``raw_events`` partitions, keeps rows dated D and picks one row per messageId:
the copy with the earliest ``receivedAt`` (ties: earlier arrival day, then file path,
then line). Other copies with the same content are duplicates (counted); copies
with different content are id conflicts (written to ``event_id_conflicts``).

Nearly every message is delivered once, so only the copies of messages that occur more
than once are ranked: a first pass groups a 64-bit hash of the messageId (narrow, so a
10M-row day stays within the memory limit), and exactly the rows whose hash occurs more
than once (every copy of a repeated messageId, and the rare hash collision) are ranked by
messageId. A row is identified by its position (file, row) in the snapshot of the inputs.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

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
FILE_ROWS = 1 << 40  # row numbers of one snapshot file stay below this

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
        if snapshot:  # pos: the row's place in the snapshot, (file number, row number) in one integer
            scans = " UNION ALL BY NAME ".join(
                f"SELECT * EXCLUDE (file_row_number), {i} * {FILE_ROWS} + file_row_number AS pos "
                f"FROM read_parquet('{path}', file_row_number = true, hive_partitioning = false) "
                f"WHERE event_date = DATE '{day}'"
                for i, path in enumerate(snapshot)
            )
            con.execute(f"CREATE TEMP VIEW source AS {scans}")
        else:  # no arrival day published yet: an empty, correctly typed partition
            con.execute(
                f"CREATE TEMP VIEW source AS SELECT *, NULL::BIGINT AS pos FROM ({_empty_raw()}) WHERE false"
            )
        # Only the copies of messages that occur more than once are ranked (narrow columns); the
        # wide ones (properties, context, raw_line) are read from the files by the COPYs below.
        con.execute(
            """CREATE TEMP TABLE repeated AS
            SELECT hash(message_id) AS message_hash FROM source GROUP BY 1 HAVING count(*) > 1"""
        )
        con.execute(
            f"""CREATE TEMP TABLE ranked AS
            SELECT *, nullif(count(*) FILTER (WHERE content_hash = winner_hash) OVER (PARTITION BY message_id), 0)
                   AS deliveries
            FROM (
                SELECT pos, {RANK_ORDER}, message_id, content_hash,
                       row_number() OVER w AS copy_rank,
                       first_value(content_hash) OVER w AS winner_hash
                FROM source WHERE hash(message_id) IN (SELECT message_hash FROM repeated)
                WINDOW w AS (PARTITION BY message_id ORDER BY {RANK_ORDER}))"""
        )
        # every rank a row can have (a message delivered once ranks first)
        con.execute("CREATE TEMP TABLE copy_ranks AS SELECT DISTINCT copy_rank FROM ranked UNION SELECT 1")
        # Sorting the day's wide rows at once needs memory in proportion to the day: they are sorted
        # one time slice of bounded size at a time and written, in slice order, by one writer.
        # (DuckDB's ordered COPY of a UNION ALL of the sorted slices sorted several slices at once
        # on two threads, out of memory at 3M events under 1 GB and even 2 GB; on one thread it
        # wrote the last rows of a slice after later slices.)
        write_sorted_slices(
            con,
            """SELECT c.message_id, c.type, c.event, c.user_id, c.anonymous_id, c.timestamp, c.event_date,
                   c.received_at, c.sent_at, c.original_timestamp, c.properties, c.traits, c.context,
                   c.schema_version, coalesce(x.deliveries, CASE WHEN x.pos IS NULL AND c.content_hash IS NOT NULL
                   THEN 1 END) AS deliveries, c.arrival_date, c.file_path, c.line_number
            FROM source c
            LEFT JOIN ranked x USING (pos)
            JOIN copy_ranks r ON r.copy_rank = coalesce(x.copy_rank, 1)
            WHERE r.copy_rank = 1 AND (x.deliveries IS NOT NULL OR x.pos IS NULL AND c.content_hash IS NOT NULL)""",
            _time_slices(day, snapshot),
            "c.timestamp, c.message_id",
            events_staged,
        )
        con.execute("SET preserve_insertion_order = true")
        con.execute(
            f"""COPY (
            SELECT c.message_id, 'id_conflict' AS reason,
                   'messageId delivered with different content; the copy received first was kept' AS message,
                   r.winner_hash AS kept_content_hash, c.content_hash, c.type, c.event, c.user_id,
                   c.anonymous_id, c.timestamp, c.received_at, c.event_date, c.arrival_date,
                   c.file_path, c.line_number, c.raw_line
            FROM source c
            JOIN ranked r USING (pos)
            WHERE r.copy_rank > 1 AND r.content_hash <> r.winner_hash
            ORDER BY c.message_id, c.received_at, c.arrival_date, c.file_path, c.line_number
            ) TO '{conflicts_staged}' (FORMAT parquet, COMPRESSION zstd)"""
        )
        con.execute(f"CREATE TEMP VIEW staged_events AS SELECT * FROM read_parquet('{events_staged}')")
        con.execute(f"CREATE TEMP VIEW staged_conflicts AS SELECT * FROM read_parquet('{conflicts_staged}')")
        counts = {
            "arrival_days_read": [d for d, p in zip(wanted, sources, strict=True) if p.exists()],
            "arrival_days_missing": [d for d, p in zip(wanted, sources, strict=True) if not p.exists()],
            "input_rows": sql_checks.count(con, "SELECT count(*) FROM source"),
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


EVENT_COLUMNS_READ = (
    "message_id", "type", "event", "user_id", "anonymous_id", "timestamp", "event_date", "received_at",
    "sent_at", "original_timestamp", "properties", "traits", "context", "schema_version",
    "arrival_date", "file_path", "line_number",
)  # fmt: skip
WIDE_BATCH_ROWS = 16_384  # rows per batch and row group of the sorted write (~16-32 MB of wide rows)
SLICE_BYTES = 128 * 10**6  # the rows of one time slice of events are about this big, to be sorted in memory
MAX_SLICES = 1440  # one a minute


def write_sorted_slices(con: Any, select: str, slices: list[str], order: str, path: Path) -> None:
    """``select`` restricted to each slice condition in turn, sorted by ``order``, streamed as Arrow
    batches into one Parquet file: rows sorted within a slice, slices in the given order.

    Only one slice is sorted at a time, and the writer holds one batch (a row group) at a time.
    JSON columns stay JSON (``arrow_lossless_conversion``), so the file's schema is the one
    DuckDB's own writer gives."""
    con.execute("SET arrow_lossless_conversion = true")
    writer: pq.ParquetWriter | None = None
    try:
        for within in slices:
            reader = con.sql(f"{select} AND {within} ORDER BY {order}").to_arrow_reader(WIDE_BATCH_ROWS)
            writer = writer or pq.ParquetWriter(path, reader.schema, compression="zstd")
            for batch in reader:
                writer.write_batch(batch)
    finally:
        if writer is not None:
            writer.close()


def _time_slices(day: str, snapshot: list[Path]) -> list[str]:
    """Conditions splitting the day's UTC hours into equal time slices, each small enough to sort
    within a 1 GB memory limit: as many as the rows' size (Parquet footers, an upper bound: every
    input row) over ``SLICE_BYTES``. Depends on the inputs only, so the output's row groups do too."""
    size = 0
    for path in snapshot:
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        wanted = [i for i, name in enumerate(names) if name in EVENT_COLUMNS_READ]
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            size += sum(group.column(i).total_uncompressed_size for i in wanted) + 64 * group.num_rows
    slices = max(1, min(MAX_SLICES, math.ceil(size / SLICE_BYTES)))
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    bounds = [f"TIMESTAMPTZ '{start + timedelta(days=1) * k / slices}'" for k in range(slices + 1)]
    conditions = []
    for k in range(slices):  # the first and last slices are open: every row is in one slice
        parts = [f"c.timestamp >= {bounds[k]}"] if k else []
        parts += [f"c.timestamp < {bounds[k + 1]}"] if k < slices - 1 else []
        conditions.append(" AND ".join(parts) if k < slices - 1 else f"({parts[0]} OR c.timestamp IS NULL)"
                          if parts else "TRUE")  # fmt: skip
    return conditions


def _empty_raw() -> str:
    return """SELECT NULL::VARCHAR AS message_id, NULL::VARCHAR AS type, NULL::VARCHAR AS event,
        NULL::VARCHAR AS user_id, NULL::VARCHAR AS anonymous_id, NULL::TIMESTAMPTZ AS timestamp,
        NULL::TIMESTAMPTZ AS original_timestamp, NULL::TIMESTAMPTZ AS sent_at,
        NULL::TIMESTAMPTZ AS received_at, NULL::DATE AS event_date, NULL::JSON AS properties,
        NULL::JSON AS traits, NULL::JSON AS context, NULL::VARCHAR AS schema_version,
        NULL::VARCHAR AS content_hash, NULL::DATE AS arrival_date, NULL::VARCHAR AS file_path,
        NULL::BIGINT AS line_number, NULL::VARCHAR AS raw_line"""
