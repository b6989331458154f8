"""The ingest step: one arrival day from the landing folder into ``raw_events``,
``quarantined_events`` and ``file_ledger``.

Write-audit-publish: the day's lines are staged, parsed in DuckDB into a staged
``raw_events`` file and a staged ``quarantined_events`` file, the blocking checks run
on those staged files, and only when every one passes are both published.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analytics_pipeline.ingest.event_schemas import load_event_schemas
from analytics_pipeline.ingest.landing import LandingRead, LinesWriter, read_landing_day
from analytics_pipeline.ingest.parsing import (
    RAW_EVENTS_ORDER,
    SEGMENT_TYPES,
    ParseRules,
    parse_sql,
    quarantine_select,
    raw_events_select,
)
from analytics_pipeline.quality import gate_status, sql_checks
from analytics_pipeline.quality.outcomes import CheckOutcome, GateFailed
from analytics_pipeline.quality.sql_checks import SqlCheck
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import PublishResult, Warehouse
from analytics_pipeline.warehouse.tables import FILE_LEDGER, QUARANTINED_EVENTS, RAW_EVENTS

RAW_REQUIRED_COLUMNS = (
    "message_id", "type", "timestamp", "received_at", "event_date", "arrival_date",
    "file_path", "line_number", "content_hash",
)  # fmt: skip

# The invariants of the staged raw_events and quarantined_events files; all block publishing.
RAW_EVENTS_CHECKS = [
    SqlCheck(
        "raw_reconciliation",
        "Lines read = raw events + quarantined lines + lines of re-delivered files, exactly.",
        evaluate=sql_checks.reconciliation(
            "lines_read", ["raw_events", "quarantined_lines", "duplicate_file_lines"]
        ),
    ),
    SqlCheck(
        "raw_required_columns_not_null",
        "messageId, type, timestamps, partition and provenance columns are never null.",
        evaluate=sql_checks.not_null("staged_raw", RAW_REQUIRED_COLUMNS, "message_id"),
    ),
    SqlCheck(
        "raw_person_id_present",
        "Every row has a userId or an anonymousId.",
        evaluate=sql_checks.identity_present("staged_raw"),
    ),
    SqlCheck(
        "raw_type_accepted",
        "type is one of track, page, screen, identify, group, alias.",
        evaluate=sql_checks.accepted_values("staged_raw", "type", SEGMENT_TYPES),
    ),
]
QUARANTINED_EVENTS_CHECKS = [
    SqlCheck(
        "quarantine_reason_recorded",
        "Every quarantined row names its file, reason code and message.",
        evaluate=sql_checks.not_null(
            "staged_quarantine",
            ("reason", "message", "file_path"),
            "coalesce(file_path, '?') || ':' || coalesce(CAST(line_number AS VARCHAR), 'file')",
        ),
    ),
]

LEDGER_SCHEMA = pa.schema(
    [
        ("arrival_date", pa.string()),
        ("path", pa.string()),
        ("size_bytes", pa.int64()),
        ("sha256", pa.string()),
        ("format", pa.string()),
        ("status", pa.string()),
        ("line_count", pa.int64()),
        ("duplicate_of", pa.string()),
        ("problem", pa.string()),
    ]
)


@dataclass
class IngestResult:
    day: str
    counts: dict[str, Any]
    raw_checks: list[CheckOutcome]
    quarantine_checks: list[CheckOutcome]
    published: dict[str, PublishResult] = field(default_factory=dict)
    duration_s: float = 0.0


def ingest_arrival_day(settings: PipelineSettings, day: str, publish: bool = True) -> IngestResult:
    """Read ``landing/<day>/`` and publish ``raw_events``, ``quarantined_events`` and the ledger."""
    started = time.perf_counter()
    warehouse = Warehouse(settings.warehouse_path)
    token = uuid.uuid4().hex
    for table in (RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER, "_lines"):
        warehouse.clear_staging(table, day)
    lines_path = warehouse.staging_file("_lines", day, token)
    writer = LinesWriter(lines_path)
    try:
        landing = read_landing_day(settings.landing_path, day, writer)
    finally:
        writer.close()

    rules = ParseRules(
        arrival_day=day,
        late_window_days=settings.late_window_days,
        quarantine_unregistered=settings.unregistered_events == "quarantine",
        schemas=load_event_schemas(settings.event_schemas_path),
    )
    raw_staged = warehouse.staging_file(RAW_EVENTS, day, token)
    quarantine_staged = warehouse.staging_file(QUARANTINED_EVENTS, day, token)
    ledger_staged = warehouse.staging_file(FILE_LEDGER, day, token)
    _write_ledger(landing, day, str(ledger_staged))

    con = settings.connect()
    try:
        # The lines are staged in raw_events order: keeping it spares sorting every row.
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"CREATE TEMP VIEW lines AS SELECT * FROM read_parquet('{lines_path}')")
        con.execute(f"CREATE TEMP TABLE parsed AS {parse_sql('lines', rules)}")
        con.register("file_problems_arrow", _problems_table(landing))
        con.execute("CREATE TEMP TABLE file_problems AS SELECT * FROM file_problems_arrow")
        raw_select = raw_events_select("parsed", day)
        con.execute(f"COPY ({raw_select}) TO '{raw_staged}' (FORMAT parquet, COMPRESSION zstd)")
        if _out_of_order(con, raw_staged):  # not expected; sorting gives the same rows
            con.execute(
                f"COPY (SELECT * FROM ({raw_select}) ORDER BY {', '.join(RAW_EVENTS_ORDER)}) "
                f"TO '{raw_staged}' (FORMAT parquet, COMPRESSION zstd)"
            )
        con.execute(
            f"COPY ({quarantine_select('parsed', 'file_problems', day)}) "
            f"TO '{quarantine_staged}' (FORMAT parquet, COMPRESSION zstd)"
        )
        con.execute(f"CREATE TEMP VIEW staged_raw AS SELECT * FROM read_parquet('{raw_staged}')")
        con.execute(
            f"CREATE TEMP VIEW staged_quarantine AS SELECT * FROM read_parquet('{quarantine_staged}')"
        )
        counts = _counts(con, landing)
        raw_checks = sql_checks.run_all(RAW_EVENTS_CHECKS, con, counts)
        quarantine_checks = sql_checks.run_all(QUARANTINED_EVENTS_CHECKS, con, counts)
    finally:
        con.close()
    lines_path.unlink(missing_ok=True)

    result = IngestResult(day, counts, raw_checks, quarantine_checks)
    outcomes = raw_checks + quarantine_checks
    if publish:
        gate_status.record(warehouse, [RAW_EVENTS, QUARANTINED_EVENTS], day, outcomes)
    if any(c.blocks for c in outcomes):
        result.duration_s = time.perf_counter() - started
        # name the table whose checks failed (both stay unpublished: they are one unit)
        table = RAW_EVENTS if any(c.blocks for c in raw_checks) else QUARANTINED_EVENTS
        raise GateFailed(table, day, outcomes)
    if publish:
        for table, staged in (
            (RAW_EVENTS, raw_staged),
            (QUARANTINED_EVENTS, quarantine_staged),
            (FILE_LEDGER, ledger_staged),
        ):
            result.published[table] = warehouse.publish(staged, table, day, settings.versions_kept)
        warehouse.write_manifest(RAW_EVENTS, day, counts)
    result.duration_s = time.perf_counter() - started
    return result


def _out_of_order(con: Any, path: Path) -> int:
    """Rows of a Parquet file that do not come after the row before them in ``RAW_EVENTS_ORDER``."""
    path_column, line_column = RAW_EVENTS_ORDER
    return sql_checks.count(
        con,
        f"""SELECT count(*) FROM (
            SELECT {path_column}, {line_column},
                   lag({path_column}) OVER (ORDER BY file_row_number) AS previous_path,
                   lag({line_column}) OVER (ORDER BY file_row_number) AS previous_line
            FROM read_parquet('{path}', file_row_number = true))
        WHERE previous_path > {path_column}
           OR (previous_path = {path_column} AND previous_line >= {line_column})""",
    )


def _write_ledger(landing: LandingRead, day: str, path: str) -> None:
    rows = landing.ledger_rows(day)
    table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA) if rows else LEDGER_SCHEMA.empty_table()
    pq.write_table(table, path, compression="zstd")


def _problems_table(landing: LandingRead) -> pa.Table:
    return pa.table(
        {
            "file_path": [p.file_path for p in landing.problems],
            "reason": [p.reason for p in landing.problems],
            "message": [p.message for p in landing.problems],
        },
        schema=pa.schema([("file_path", pa.string()), ("reason", pa.string()), ("message", pa.string())]),
    )


def _counts(con: Any, landing: LandingRead) -> dict[str, Any]:
    by_reason = dict(
        con.execute(
            "SELECT reason, count(*) FROM staged_quarantine GROUP BY reason ORDER BY reason"
        ).fetchall()
    )
    quarantined_lines = sql_checks.count(
        con, "SELECT count(*) FROM staged_quarantine WHERE line_number IS NOT NULL"
    )
    file_status = Counter(entry.status for entry in landing.ledger)
    return {
        "files": len(landing.ledger),
        "files_by_status": dict(sorted(file_status.items())),
        "lines_read": landing.lines_read,
        "lines_staged": sql_checks.count(con, "SELECT count(*) FROM lines"),
        "raw_events": sql_checks.count(con, "SELECT count(*) FROM staged_raw"),
        "quarantined_lines": quarantined_lines,
        "quarantined_files": sql_checks.count(
            con, "SELECT count(*) FROM staged_quarantine WHERE line_number IS NULL"
        ),
        "quarantined_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "too_late": int(by_reason.get("too_late", 0)),
        "duplicate_file_lines": sum(e.line_count for e in landing.ledger if e.status == "duplicate_file"),
        "unregistered_events": sql_checks.count(
            con, "SELECT count(*) FROM staged_raw WHERE schema_version IS NULL"
        ),
        "late_events": sql_checks.count(
            con, "SELECT count(*) FROM staged_raw WHERE event_date < arrival_date"
        ),
        "event_dates": {
            str(d): int(n)
            for d, n in con.execute(
                "SELECT event_date, count(*) FROM staged_raw GROUP BY 1 ORDER BY 1"
            ).fetchall()
        },
    }
