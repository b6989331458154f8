"""The ``raw_events`` step: one arrival day from the landing folder into the warehouse.

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

from analytics_pipeline import quality
from analytics_pipeline.event_schemas import load_event_schemas
from analytics_pipeline.gates import GateFailed
from analytics_pipeline.landing import LandingRead, LinesWriter, read_landing_day
from analytics_pipeline.parsing import (
    RAW_EVENTS_ORDER,
    ParseRules,
    parse_sql,
    quarantine_select,
    raw_events_select,
)
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.storage import PublishResult, Warehouse

RAW_TABLE = "raw_events"
QUARANTINE_TABLE = "quarantined_events"
LEDGER_TABLE = "file_ledger"

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
    raw_checks: list[quality.CheckOutcome]
    quarantine_checks: list[quality.CheckOutcome]
    published: dict[str, PublishResult] = field(default_factory=dict)
    duration_s: float = 0.0


def ingest_arrival_day(settings: PipelineSettings, day: str, publish: bool = True) -> IngestResult:
    """Read ``landing/<day>/`` and publish ``raw_events``, ``quarantined_events`` and the ledger."""
    started = time.perf_counter()
    warehouse = Warehouse(settings.warehouse_path)
    token = uuid.uuid4().hex
    for table in (RAW_TABLE, QUARANTINE_TABLE, LEDGER_TABLE, "_lines"):
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
    raw_staged = warehouse.staging_file(RAW_TABLE, day, token)
    quarantine_staged = warehouse.staging_file(QUARANTINE_TABLE, day, token)
    ledger_staged = warehouse.staging_file(LEDGER_TABLE, day, token)
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
        raw_checks = _raw_checks(con, counts)
        quarantine_checks = _quarantine_checks(con)
    finally:
        con.close()
    lines_path.unlink(missing_ok=True)

    result = IngestResult(day, counts, raw_checks, quarantine_checks)
    failed = [c for c in raw_checks + quarantine_checks if c.blocks]
    if failed:
        result.duration_s = time.perf_counter() - started
        raise GateFailed(RAW_TABLE, day, raw_checks + quarantine_checks)
    if publish:
        for table, staged in (
            (RAW_TABLE, raw_staged),
            (QUARANTINE_TABLE, quarantine_staged),
            (LEDGER_TABLE, ledger_staged),
        ):
            result.published[table] = warehouse.publish(staged, table, day, settings.versions_kept)
        warehouse.write_manifest(RAW_TABLE, day, counts)
    result.duration_s = time.perf_counter() - started
    return result


def _out_of_order(con: Any, path: Path) -> int:
    """Rows of a Parquet file that do not come after the row before them in ``RAW_EVENTS_ORDER``."""
    path_column, line_column = RAW_EVENTS_ORDER
    return quality.count(
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
    quarantined_lines = quality.count(
        con, "SELECT count(*) FROM staged_quarantine WHERE line_number IS NOT NULL"
    )
    file_status = Counter(entry.status for entry in landing.ledger)
    return {
        "files": len(landing.ledger),
        "files_by_status": dict(sorted(file_status.items())),
        "lines_read": landing.lines_read,
        "lines_staged": quality.count(con, "SELECT count(*) FROM lines"),
        "raw_events": quality.count(con, "SELECT count(*) FROM staged_raw"),
        "quarantined_lines": quarantined_lines,
        "quarantined_files": quality.count(
            con, "SELECT count(*) FROM staged_quarantine WHERE line_number IS NULL"
        ),
        "quarantined_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "too_late": int(by_reason.get("too_late", 0)),
        "duplicate_file_lines": sum(e.line_count for e in landing.ledger if e.status == "duplicate_file"),
        "unregistered_events": quality.count(
            con, "SELECT count(*) FROM staged_raw WHERE schema_version IS NULL"
        ),
        "late_events": quality.count(con, "SELECT count(*) FROM staged_raw WHERE event_date < arrival_date"),
        "event_dates": {
            str(d): int(n)
            for d, n in con.execute(
                "SELECT event_date, count(*) FROM staged_raw GROUP BY 1 ORDER BY 1"
            ).fetchall()
        },
    }


def _raw_checks(con: Any, counts: dict[str, Any]) -> list[quality.CheckOutcome]:
    required = ("message_id", "type", "timestamp", "received_at", "event_date", "arrival_date",
                "file_path", "line_number", "content_hash")  # fmt: skip
    return [
        quality.reconciliation(
            "raw_reconciliation",
            counts["lines_read"],
            {
                "raw_events": counts["raw_events"],
                "quarantined_lines": counts["quarantined_lines"],
                "duplicate_file_lines": counts["duplicate_file_lines"],
            },
        ),
        quality.not_null(con, "staged_raw", required, "message_id", "raw_required_columns_not_null"),
        quality.identity_present(con, "staged_raw", "raw_person_id_present"),
        quality.accepted_types(con, "staged_raw", "raw_type_accepted"),
    ]


def _quarantine_checks(con: Any) -> list[quality.CheckOutcome]:
    return [
        quality.not_null(
            con,
            "staged_quarantine",
            ("reason", "message", "file_path"),
            "file_path",
            "quarantine_reason_recorded",
        )  # fmt: skip
    ]
