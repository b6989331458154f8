"""The ingest step: one arrival day from the landing folder into ``raw_events``,
``quarantined_events`` and ``file_ledger``.

Write-audit-publish: the day's lines are parsed in DuckDB into a staged ``raw_events``
file and a staged ``quarantined_events`` file, the blocking checks run on those staged
files, and only when every one passes are both published.

The lines are parsed once, streamed in bounded batches (memory does not grow with the
day): DuckDB pulls them from the landing reader as it parses and writes the accepted
ones straight into the staged ``raw_events`` file, while the lines are also kept in a
staged Arrow file. Reading ``raw_events``' (file, line) keys back gives the lines it does
not hold (a few); only those are read again from the Arrow file and parsed once more
for their reasons, into the staged ``quarantined_events`` file.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics_pipeline.ingest.event_schemas import load_event_schemas
from analytics_pipeline.ingest.landing import LINES_SCHEMA, DayLines, LandingRead
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
from analytics_pipeline.warehouse.storage import WIDE_PARQUET, PublishResult, Warehouse
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
        ("bom_stripped", pa.int64()),  # 1 when the file opened with a UTF-8 byte-order mark
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
    lines_path = warehouse.staging_file("_lines", day, token).with_suffix(".arrow")
    rules = ParseRules(
        arrival_day=day,
        late_window_days=settings.late_window_days,
        quarantine_unregistered=settings.unregistered_events == "quarantine",
        schemas=load_event_schemas(settings.event_schemas_path),
    )
    raw_staged = warehouse.staging_file(RAW_EVENTS, day, token)
    quarantine_staged = warehouse.staging_file(QUARANTINED_EVENTS, day, token)
    ledger_staged = warehouse.staging_file(FILE_LEDGER, day, token)
    reading = DayLines(settings.landing_path, day)
    staged_lines = StagedLines(lines_path)

    con = settings.connect()
    try:
        # The lines arrive in raw_events order: keeping it spares sorting every row.
        con.execute("SET preserve_insertion_order = true")
        raw_select = raw_events_select(f"({parse_sql('day_lines', rules)})", day)
        with staged_lines:  # every line judged as it is read; the accepted ones written
            con.register("day_lines", _stream(staged_lines.tee(reading.batches())))
            con.execute(f"COPY ({raw_select}) TO '{raw_staged}' ({WIDE_PARQUET})").fetchall()
            con.unregister("day_lines")
        landing = reading.result
        _write_ledger(landing, day, str(ledger_staged))
        rejected, disorder = staged_lines.not_in(raw_staged)
        if disorder:  # not expected; sorting gives the same rows
            con.register("day_lines", _stream(staged_lines.read()))
            con.execute(
                f"COPY (SELECT * FROM ({raw_select}) ORDER BY {', '.join(RAW_EVENTS_ORDER)}) "
                f"TO '{raw_staged}' ({WIDE_PARQUET})"
            ).fetchall()
            con.unregister("day_lines")
            rejected, _ = staged_lines.not_in(raw_staged)
        # The lines raw_events does not hold, parsed again for their reasons. A line the first
        # parse kept out that passed now would be in neither table: raw_reconciliation fails.
        con.register("rejected_lines", _stream(staged_lines.read(rejected)))
        con.execute("SET preserve_insertion_order = false")  # quarantine_select sorts them
        con.execute(
            f"CREATE TEMP TABLE parsed AS SELECT * FROM ({parse_sql('rejected_lines', rules)}) "
            "WHERE reason IS NOT NULL"
        ).fetchall()
        con.unregister("rejected_lines")
        con.register("file_problems_arrow", _problems_table(landing))
        con.execute("CREATE TEMP TABLE file_problems AS SELECT * FROM file_problems_arrow")
        con.execute(
            f"COPY ({quarantine_select('parsed', 'file_problems', day)}) "
            f"TO '{quarantine_staged}' (FORMAT parquet, COMPRESSION zstd)"
        )
        con.execute(f"CREATE TEMP VIEW staged_raw AS SELECT * FROM read_parquet('{raw_staged}')")
        con.execute(
            f"CREATE TEMP VIEW staged_quarantine AS SELECT * FROM read_parquet('{quarantine_staged}')"
        )
        counts = _counts(con, landing, reading.lines.count)
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


def _stream(batches: Iterable[pa.RecordBatch]) -> pa.RecordBatchReader:
    """Batches as a stream DuckDB pulls from while it works (one batch at a time in memory each)."""
    return pa.RecordBatchReader.from_batches(LINES_SCHEMA, iter(batches))


SELECTED_BATCH_ROWS = 10_000


class StagedLines:
    """The day's lines kept in an Arrow file while DuckDB consumes them, and where each file's
    lines are in it: every line of a file is there, numbered 1..n, with consecutive row ids.

    Uncompressed: it is written once and read back once for the few rejected lines, from the
    page cache; compressing it cost more than the rest of the tee (lz4 or zstd)."""

    OPTIONS = pa.ipc.IpcWriteOptions(compression=None)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, list[int]] = {}  # file path -> [first row id, lines], in stream order
        self.batches: list[tuple[int, int]] = []  # (first row id, rows) of each batch in the file
        self._writer: Any = None

    def __enter__(self) -> StagedLines:
        self._writer = pa.ipc.new_file(str(self.path), LINES_SCHEMA, options=self.OPTIONS)
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def tee(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Each batch (one file's consecutive lines) on to DuckDB, and into the file."""
        for batch in batches:
            self._writer.write_batch(batch)
            first = batch.column(0)[0].as_py()
            self.batches.append((first, batch.num_rows))
            span = self.files.setdefault(batch.column(1)[0].as_py(), [first, 0])
            span[1] += batch.num_rows
            yield batch

    def read(self, row_ids: np.ndarray | None = None) -> Iterator[pa.RecordBatch]:
        """The staged lines again, or only those with these (sorted) row ids.

        Read, not memory-mapped: each batch is freed after use (mapped pages that were touched
        count in the process's memory; measured: +0.7 GB at 1M lines). A selection comes in
        batches of up to ``SELECTED_BATCH_ROWS``, not a few rows from each stored batch: DuckDB
        keeps per-batch state, and thousands of tiny batches ran it out of memory at 1 GB."""
        pending: list[pa.RecordBatch] = []
        with pa.OSFile(str(self.path)) as source:
            reader = pa.ipc.open_file(source)
            for i, (first, rows) in enumerate(self.batches):
                if row_ids is None:
                    yield reader.get_batch(i)
                    continue
                low, high = np.searchsorted(row_ids, [first, first + rows])
                if low < high:
                    pending.append(reader.get_batch(i).take(pa.array(row_ids[low:high] - first)))
                if pending and (
                    sum(b.num_rows for b in pending) >= SELECTED_BATCH_ROWS or i == len(self.batches) - 1
                ):
                    yield pa.concat_batches(pending)
                    pending = []
            if pending:
                yield pa.concat_batches(pending)

    def not_in(self, parquet: Path) -> tuple[np.ndarray, int]:
        """Row ids of the lines whose (file, line) is not in the Parquet file's ``RAW_EVENTS_ORDER``
        columns, and how many of its rows do not come after the row before them (0 when in order).

        The file is read back batch by batch (two narrow columns); the lines it lacks are the
        gaps between consecutive line numbers of each file, found vectorized.
        """
        names = list(self.files)
        last = np.zeros(len(names), dtype=np.int64)  # the last line number seen per file
        missing: list[np.ndarray] = []
        disorder, previous = 0, (-1, 0)
        columns = list(RAW_EVENTS_ORDER)
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1 << 16, columns=columns):
            files = pc.index_in(batch.column(0), value_set=pa.array(names, pa.string()))
            lines = batch.column(1).to_numpy(zero_copy_only=False)
            if files.null_count:  # a row of a file that was not read
                disorder += files.null_count
                valid = np.asarray(files.is_valid())
                files, lines = files.filter(files.is_valid()), lines[valid]
            file_ids = np.asarray(files.to_numpy(zero_copy_only=False), dtype=np.int64)
            if not len(file_ids):
                continue
            # the row before each row: within the batch, else the last row of the previous batch
            before_file = np.concatenate(([previous[0]], file_ids[:-1]))
            before_line = np.concatenate(([previous[1]], lines[:-1]))
            disorder += int(np.count_nonzero(
                (before_file > file_ids) | ((before_file == file_ids) & (before_line >= lines))
            ))  # fmt: skip
            starts = np.flatnonzero(before_file != file_ids)  # first row of each file's run
            before_line[starts] = last[file_ids[starts]]
            gaps = np.flatnonzero(lines - before_line > 1)
            for i in gaps.tolist():
                f = file_ids[i]
                missing.append(self._row_ids(names[f], before_line[i] + 1, lines[i]))
            ends = np.append(starts[1:], len(file_ids)) - 1
            last[file_ids[ends]] = np.maximum(last[file_ids[ends]], lines[ends])
            previous = (int(file_ids[-1]), int(lines[-1]))
        for f, name in enumerate(names):  # the lines after the last one held, per file
            missing.append(self._row_ids(name, int(last[f]) + 1, self.files[name][1] + 1))
        rejected = np.unique(np.concatenate(missing)) if missing else np.zeros(0, dtype=np.int64)
        return rejected, disorder

    def _row_ids(self, name: str, first_line: int, end_line: int) -> np.ndarray:
        """Row ids of lines first_line .. end_line - 1 of a file."""
        first_row = self.files[name][0]
        return np.arange(
            first_row + first_line - 1, first_row + max(first_line, end_line) - 1, dtype=np.int64
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


def _counts(con: Any, landing: LandingRead, lines_staged: int) -> dict[str, Any]:
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
        "lines_staged": lines_staged,
        "raw_events": sql_checks.count(con, "SELECT count(*) FROM staged_raw"),
        "quarantined_lines": quarantined_lines,
        "quarantined_files": sql_checks.count(
            con, "SELECT count(*) FROM staged_quarantine WHERE line_number IS NULL"
        ),
        "quarantined_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "too_late": int(by_reason.get("too_late", 0)),
        "boms_stripped": sum(e.bom_stripped for e in landing.ledger),
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
