"""The landing folder: find a day's files, keep a ledger of them, read their lines.

Reading is Python streaming in bounded batches (backpressure: memory does not grow
with the file or the day), because the hard cases, non-UTF-8 bytes, lines over 1 MiB
and truncated gzip streams, must become counted quarantine rows instead of crashes.
Files are read in blocks of many lines; a block of plain lines (each ends with a
newline, is at most 1 MiB and the block is valid UTF-8) becomes one Arrow batch with
vectorized (numpy) work and no Python object per line. A line that is not plain
(over-long, not UTF-8, last without a newline) is read on its own by the same rules.
:class:`DayLines` yields the day's lines as Arrow record batches, in file order, for
DuckDB to consume as a stream; parsing the JSON happens vectorized in DuckDB (see
``parsing.py``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MAX_LINE_BYTES = 1 << 20  # 1 MiB: longer lines are quarantined as line_too_long
KEPT_PREFIX_BYTES = 64 << 10  # how much of an over-long line the quarantine keeps
BATCH_LINES = 10_000  # lines read one by one (odd lines, Parquet rows) are handed on in batches of this many
READ_BLOCK_BYTES = 4 << 20  # a landing file is read this much at a time (many lines: one Arrow batch)
UTF8_BOM = b"\xef\xbb\xbf"
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIX = ".parquet"

# The fields of a Segment Spec message; a Parquet file with other columns, or
# without the required ones, does not follow the contract.
MESSAGE_FIELDS = {
    "messageId", "type", "event", "userId", "anonymousId", "timestamp",
    "originalTimestamp", "sentAt", "receivedAt", "properties", "traits", "context",
    "name", "category", "groupId", "previousId", "integrations", "version", "channel",
}  # fmt: skip
REQUIRED_PARQUET_FIELDS = {"messageId", "type", "receivedAt"}

LINES_SCHEMA = pa.schema(
    [
        ("row_id", pa.int64()),  # the line's position in the day's stream of lines, from 0
        ("file_path", pa.string()),
        ("line_number", pa.int64()),
        ("raw_text", pa.string()),
        ("pre_reason", pa.string()),  # set when the line is rejected before JSON parsing
        ("pre_message", pa.string()),
    ]
)


class UnsafePathError(ValueError):
    """A path that resolves outside the landing folder."""


@dataclass
class LedgerEntry:
    """One file seen in a landing day: what it was and what became of it."""

    path: str  # relative to the landing root
    size_bytes: int
    sha256: str
    format: str  # jsonl | jsonl.gz | parquet | unknown
    status: str  # loaded | duplicate_file | refused | empty | partial | unreadable | ignored
    line_count: int = 0  # lines (or Parquet rows) read from it
    duplicate_of: str | None = None
    problem: str | None = None
    bom_stripped: int = 0  # 1 when a UTF-8 byte-order mark opened the file (stripped, not a bad line)


@dataclass
class FileProblem:
    """A file-level rejection: becomes a quarantine row without a line number."""

    file_path: str
    reason: str
    message: str


@dataclass
class LandingRead:
    ledger: list[LedgerEntry] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    lines_read: int = 0

    def ledger_rows(self, arrival_day: str) -> list[dict[str, Any]]:
        return [{"arrival_date": arrival_day, **asdict(entry)} for entry in self.ledger]


def day_directories(landing_root: Path, day: str) -> list[Path]:
    """A day's files live in ``landing/YYYY-MM-DD/`` or ``landing/date=YYYY-MM-DD/``."""
    date.fromisoformat(day)  # a clear error for a malformed partition key
    return [d for d in (landing_root / day, landing_root / f"date={day}") if d.is_dir()]


def resolve_inside(landing_root: Path, candidate: Path) -> Path:
    """The real path of ``candidate``, refusing anything that escapes the landing root."""
    root = landing_root.resolve()
    if ".." in candidate.parts:
        raise UnsafePathError(f"{candidate}: '..' is not allowed in landing paths")
    real = (landing_root / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
    if real != root and root not in real.parents:
        raise UnsafePathError(f"{candidate} resolves to {real}, outside the landing folder {root}")
    return real


def discover_files(landing_root: Path, day: str) -> list[Path]:
    """Every file under the day's folders, sorted, symlinked folders not followed."""
    found: list[Path] = []
    for directory in day_directories(landing_root, day):
        for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
            dirnames.sort()
            base = Path(dirpath)
            for name in filenames:
                found.append(base / name)
            # a symlinked folder is a file-like entry we must vet, not silently skip
            for name in list(dirnames):
                if (base / name).is_symlink():
                    found.append(base / name)
    return sorted(found)


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIX):
        return "parquet"
    for suffix in JSON_SUFFIXES:
        if name.endswith(suffix + ".gz"):
            return "jsonl.gz"
        if name.endswith(suffix):
            return "jsonl"
    return "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class LineBatches:
    """Collects a day's lines, in order, into Arrow record batches of ``LINES_SCHEMA``.

    Lines read one at a time (``add``) are buffered and handed on every ``BATCH_LINES``;
    a block of plain lines (``add_block``) becomes one batch at once. Finished batches
    wait in ``ready`` until the reader takes them, so memory holds about one block.
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[Any]] = {name: [] for name in LINES_SCHEMA.names[1:]}
        self.ready: list[pa.RecordBatch] = []
        self.count = 0  # lines handed on so far (the next row_id)

    def add(
        self, file_path: str, line_number: int, raw_text: str,
        pre_reason: str | None = None, pre_message: str | None = None,
    ) -> None:  # fmt: skip
        rows = self._rows
        rows["file_path"].append(file_path)
        rows["line_number"].append(line_number)
        rows["raw_text"].append(raw_text)
        rows["pre_reason"].append(pre_reason)
        rows["pre_message"].append(pre_message)
        if len(rows["line_number"]) >= BATCH_LINES:
            self.flush()

    def add_block(self, file_path: str, first_line_number: int, data: bytes) -> int:
        """Plain lines, each ending with a newline (valid UTF-8, none over the limit), as one batch.

        The same rules as ``_add_one``, vectorized: one ``\r`` before the newline is
        dropped, and a line that is empty or all ``str.isspace`` is a blank line.
        Returns the number of lines.
        """
        self.flush()
        arr = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)  # one newline per line, the last byte is one
        count = len(ends)
        starts = np.empty(count, dtype=np.int64)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        if b"\r" in data:
            cr = (ends > starts) & (arr[ends - 1] == 13)
            text_ends = ends - cr
            keep = np.ones(len(arr), dtype=bool)
            keep[ends] = False
            keep[text_ends[cr]] = False
            text = pa.py_buffer(arr[keep])
        else:
            text_ends = ends
            text = pa.py_buffer(data.replace(b"\n", b""))
        lengths = text_ends - starts
        offsets = np.zeros(count + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        # blank as in ``_add_one``: ``not text.strip()``, i.e. empty or all str.isspace
        candidates = np.flatnonzero(_MAYBE_SPACE_TABLE[arr[starts]])
        blank = [
            int(i) for i in candidates
            if lengths[i] == 0 or data[starts[i] : text_ends[i]].decode("utf-8").isspace()
        ]  # fmt: skip
        if blank:
            reasons: list[str | None] = [None] * count
            messages: list[str | None] = [None] * count
            for i in blank:
                reasons[i], messages[i] = "blank_line", "blank line"
            pre_reason, pre_message = pa.array(reasons, pa.string()), pa.array(messages, pa.string())
        else:
            pre_reason = pre_message = pa.nulls(count, pa.string())
        numbers = np.arange(first_line_number, first_line_number + count, dtype=np.int64)
        self._emit([
            pa.repeat(pa.scalar(file_path, pa.string()), count), pa.array(numbers),
            pa.StringArray.from_buffers(count, pa.py_buffer(offsets), text), pre_reason, pre_message,
        ])  # fmt: skip
        return count

    def _emit(self, columns: list[pa.Array]) -> None:
        count = len(columns[0])
        row_ids = pa.array(np.arange(self.count, self.count + count, dtype=np.int64))
        self.ready.append(pa.record_batch([row_ids, *columns], schema=LINES_SCHEMA))
        self.count += count

    def flush(self) -> None:
        """Hand on the lines added one at a time."""
        if self._rows["line_number"]:
            batch = pa.RecordBatch.from_pydict(self._rows, schema=pa.schema(list(LINES_SCHEMA)[1:]))
            self._emit(batch.columns)
            self._rows = {name: [] for name in LINES_SCHEMA.names[1:]}

    def take(self) -> list[pa.RecordBatch]:
        ready, self.ready = self.ready, []
        return ready


# A line that ``str.isspace`` finds blank starts with one of these bytes: an ASCII
# whitespace character or the lead byte of any non-ASCII one.
_MAYBE_SPACE_TABLE = np.array([b >= 0x80 or chr(b).isspace() for b in range(256)], dtype=bool)


def _read_bounded_line(handle: Any) -> tuple[bytes, int] | None:
    """The next (line without newline, full length), None at the end; an over-long line keeps a prefix."""
    line = handle.readline(MAX_LINE_BYTES + 2)  # room for a full-size line and its \r\n
    if not line:
        return None
    if len(line) == MAX_LINE_BYTES + 2 and not line.endswith(b"\n"):
        prefix, length, tail = line[:KEPT_PREFIX_BYTES], len(line), line[-2:]
        while True:  # drain the rest of the over-long line without holding it
            more = handle.readline(MAX_LINE_BYTES)
            length += len(more)
            tail = (tail + more)[-2:]
            if not more or more.endswith(b"\n"):
                break
        # the stated length is the line's, without its line ending
        length -= 2 if tail == b"\r\n" else 1 if tail.endswith(b"\n") else 0
        return prefix, length
    stripped = line[:-1] if line.endswith(b"\n") else line
    if stripped.endswith(b"\r"):
        stripped = stripped[:-1]
    if len(stripped) > MAX_LINE_BYTES:  # at most 2 bytes over: same rule, same prefix
        return stripped[:KEPT_PREFIX_BYTES], len(stripped)
    return stripped, len(stripped)


def _read_bounded_lines(handle: Any) -> Iterator[tuple[bytes, int]]:
    """Yield (line without newline, full length); lines over the limit keep a prefix."""
    while (item := _read_bounded_line(handle)) is not None:
        yield item


class _BlockReader:
    """A buffered binary handle read in blocks, with unconsumed bytes put back in front.

    A block is whole fills of the handle's buffer, the same fills ``readline`` makes,
    and an error of the stream (a damaged gzip) is raised only after every byte that
    came before it was handed out: the lines before the damage are exactly the ones
    reading line by line would keep.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._head = b""
        self._error: Exception | None = None

    def unread(self, data: bytes) -> None:
        self._head = data + self._head

    def read_block(self, size: int) -> bytes:
        """At least ``size`` bytes unless the stream ends or fails; b"" at the end."""
        head, self._head = self._head, b""
        if b"\n" in head:  # hand out the complete lines before reading further
            return head
        self._raise_error()
        parts, total = [head], len(head)
        try:
            while total < size:
                chunk = self._handle.peek(1)  # the buffered bytes, after one fill if it was empty
                if not chunk:
                    break
                self._handle.read(len(chunk))
                parts.append(chunk)
                total += len(chunk)
        except Exception as exc:  # raised on the next read, once these bytes are used
            self._error = exc
        block = b"".join(parts)
        if not block:
            self._raise_error()
        return block

    def readline(self, limit: int) -> bytes:
        head = self._head
        end = head.find(b"\n", 0, limit)
        if end != -1 or len(head) >= limit:
            cut = end + 1 if end != -1 else limit
            self._head = head[cut:]
            return head[:cut]
        self._head = b""
        self._raise_error()
        return head + self._handle.readline(limit - len(head))

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


class _LineCount:
    """How far a reader got, readable after an exception interrupts it."""

    value: int = 0
    bom_stripped: int = 0


def _add_lines(handle: Any, rel: str, writer: LineBatches, progress: _LineCount) -> Iterator[pa.RecordBatch]:
    """Read a file of lines in blocks; a line that is not plain takes ``_read_bounded_line``.

    Plain: ends with a newline and is at most ``MAX_LINE_BYTES`` long, which is nearly
    every line. An over-long line and a last line without a newline are read exactly
    as before, line by line. Yields the batches finished so far after every block.
    """
    reader = _BlockReader(handle)
    first = True
    while block := reader.read_block(READ_BLOCK_BYTES):
        if first:  # editors and Windows exports open a file with a BOM; JSON readers skip it
            first = False
            if block.startswith(UTF8_BOM):
                block, progress.bom_stripped = block[len(UTF8_BOM) :], 1
                if not block:
                    continue
        end = block.rfind(b"\n") + 1  # the complete lines
        used = end if _none_too_long(block, end) else _plain_prefix(block, end)
        if used:
            _add_plain(block[:used], rel, writer, progress)
        reader.unread(block[used:])
        if used < end or not end:  # the next line is over-long, or not complete in this block
            item = _read_bounded_line(reader)
            if item is not None:
                progress.value += 1
                _add_one(item[0], item[1], rel, progress.value, writer)
        yield from writer.take()


def _none_too_long(block: bytes, end: int) -> bool:
    """No line in ``block[:end]`` is over the limit (may say False when none is).

    When every window of half the limit holds a newline, no two newlines are further
    apart than the limit: a handful of ``find`` calls instead of one per line.
    """
    step = max(1, MAX_LINE_BYTES // 2)
    return all(block.find(b"\n", i, i + step) != -1 for i in range(0, end, step))


def _plain_prefix(block: bytes, end: int) -> int:
    """The length of the leading lines of ``block[:end]`` that are within the limit."""
    start = 0
    while start < end:
        newline = block.index(b"\n", start)
        if newline - start > MAX_LINE_BYTES:
            break
        start = newline + 1
    return start


def _is_utf8(data: bytes) -> bool:
    """Arrow's UTF-8 validation: the standard's rules (as Python's decoder), without building a str."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _add_plain(data: bytes, rel: str, writer: LineBatches, progress: _LineCount) -> None:
    """Plain lines, each with its newline: the ``_add_one`` rules, many lines at once."""
    while data:
        if not data.isascii() and not _is_utf8(data):
            try:
                data.decode("utf-8")  # Python's UTF-8 rules decide what is invalid, and where
            except UnicodeDecodeError as exc:  # the lines before the bad one, then it alone
                bad_start = data.rfind(b"\n", 0, exc.start) + 1
                bad_end = data.index(b"\n", exc.start)
                if bad_start:
                    _add_plain(data[:bad_start], rel, writer, progress)
                raw = data[bad_start:bad_end]
                raw = raw[:-1] if raw.endswith(b"\r") else raw
                progress.value += 1
                _add_one(raw, len(raw), rel, progress.value, writer)
                data = data[bad_end + 1 :]
                continue
        progress.value += writer.add_block(rel, progress.value + 1, data)
        return


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _parquet_mismatch(schema: pa.Schema) -> str | None:
    names = set(schema.names)
    missing = REQUIRED_PARQUET_FIELDS - names
    unknown = names - MESSAGE_FIELDS
    problems = []
    if missing:
        problems.append(f"missing columns {sorted(missing)}")
    if unknown:
        problems.append(f"unknown columns {sorted(unknown)}")
    for name in ("messageId", "type", "event", "userId", "anonymousId"):
        if name in names and not (pa.types.is_string(schema.field(name).type)
                                  or pa.types.is_large_string(schema.field(name).type)):  # fmt: skip
            problems.append(f"{name} is {schema.field(name).type}, expected string")
    return "; ".join(problems) or None


def _add_parquet_rows(
    path: Path, rel: str, writer: LineBatches, progress: _LineCount, entry: LedgerEntry
) -> Iterator[pa.RecordBatch]:
    """Parquet rows become JSON lines so one parser and one set of rules serves both.

    The contract mismatch (or None) is the ledger entry's problem."""
    parquet = pq.ParquetFile(path)
    mismatch = _parquet_mismatch(parquet.schema_arrow)
    entry.problem = mismatch
    json_columns = {"properties", "traits", "context", "integrations"}
    for batch in parquet.iter_batches(batch_size=BATCH_LINES):
        for row in batch.to_pylist():
            progress.value += 1
            count = progress.value
            for key in json_columns & row.keys():
                value = row[key]
                if isinstance(value, str):  # a JSON-typed string column
                    with contextlib.suppress(ValueError):
                        row[key] = json.loads(value)
                elif isinstance(value, list) and all(isinstance(i, tuple) for i in value):
                    row[key] = dict(value)  # a Parquet MAP arrives as key/value pairs
            text = json.dumps(row, default=_json_default, separators=(",", ":"))
            if mismatch:
                writer.add(rel, count, text, "parquet_schema_mismatch",
                           f"Parquet file does not follow the message contract: {mismatch}")  # fmt: skip
            else:
                writer.add(rel, count, text)
        yield from writer.take()


class DayLines:
    """One arrival day's landing files: the ledger of what was seen, and the lines as batches.

    ``batches()`` first lists the day's files (path checks, content hashes, re-delivered
    and empty files) into ``result``, then yields the lines of the files to read as Arrow
    record batches of ``LINES_SCHEMA``, ordered by (file path, line number), the order of
    the published rows, so the parsed lines need no sort (``arrival_day`` checks the order
    it gets). ``result`` is complete once the batches are exhausted.
    """

    def __init__(self, landing_root: Path, day: str) -> None:
        self.landing_root, self.day = landing_root, day
        self.result = LandingRead()
        self.lines = LineBatches()

    def batches(self) -> Iterator[pa.RecordBatch]:
        result, writer = self.result, self.lines
        for rel, real, entry in self._files_to_read():
            fmt = entry.format
            progress = _LineCount()
            try:
                if fmt == "parquet":
                    yield from _add_parquet_rows(real, rel, writer, progress, entry)
                elif fmt == "jsonl.gz":
                    yield from _add_gzip_lines(real, rel, writer, entry, result, progress)
                else:
                    with real.open("rb", buffering=READ_BLOCK_BYTES) as handle:
                        yield from _add_lines(handle, rel, writer, progress)
            except (OSError, pa.ArrowException, ValueError) as exc:
                entry.status = "unreadable"
                entry.problem = f"{type(exc).__name__}: {exc} (after {progress.value} lines)"
                result.problems.append(FileProblem(rel, "unreadable_file", entry.problem))
            writer.flush()
            yield from writer.take()
            entry.line_count, entry.bom_stripped = progress.value, progress.bom_stripped
            result.lines_read += entry.line_count

    def _files_to_read(self) -> list[tuple[str, Path, LedgerEntry]]:
        """Ledger every file of the day; the ones whose lines are read, in path order."""
        landing_root, result = self.landing_root, self.result
        seen_hashes: dict[str, str] = {}
        to_read: list[tuple[str, Path, LedgerEntry]] = []
        root = landing_root.resolve()
        for path in discover_files(landing_root, self.day):
            rel = os.path.relpath(path, landing_root)
            try:
                real = resolve_inside(landing_root, path)
            except UnsafePathError as exc:
                result.ledger.append(LedgerEntry(rel, 0, "", file_format(path), "refused", problem=str(exc)))
                result.problems.append(FileProblem(rel, "path_outside_landing", str(exc)))
                continue
            if real.is_dir():  # a symlinked folder inside landing: its files are listed, not read
                for inner in sorted(p for p in real.rglob("*") if p.is_file()):
                    result.problems.append(FileProblem(
                        os.path.relpath(inner, root), "unsupported_file",
                        "file inside a symlinked folder; place files in the day folder itself"))  # fmt: skip
                continue
            fmt = file_format(path)
            size = real.stat().st_size
            digest = _sha256(real)
            entry = LedgerEntry(rel, size, digest, fmt, "loaded")
            result.ledger.append(entry)
            if fmt == "unknown":
                entry.status = "ignored"
                entry.problem = "not a *.jsonl, *.ndjson, *.json, *.gz of those, or *.parquet file"
                result.problems.append(FileProblem(rel, "unsupported_file", entry.problem))
                continue
            if digest in seen_hashes:
                entry.status, entry.duplicate_of = "duplicate_file", seen_hashes[digest]
                entry.line_count = _count_lines(real, fmt)
                result.lines_read += entry.line_count
                continue
            seen_hashes[digest] = rel
            if size == 0:
                entry.status, entry.problem = "empty", "the file is empty"
                result.problems.append(FileProblem(rel, "empty_file", "the file is empty (0 bytes)"))
                continue
            to_read.append((rel, real, entry))
        return sorted(to_read, key=lambda item: item[0])  # str order is byte order


def _add_gzip_lines(
    real: Path,
    rel: str,
    writer: LineBatches,
    entry: LedgerEntry,
    result: LandingRead,
    progress: _LineCount,
) -> Iterator[pa.RecordBatch]:
    """Keep every line before a corrupt point; the rest is counted as one file problem."""
    try:
        with gzip.open(real, "rb") as handle:
            yield from _add_lines(handle, rel, writer, progress)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        entry.status = "partial"
        entry.problem = (
            f"gzip stream is corrupt or truncated after line {progress.value} "
            f"({type(exc).__name__}: {exc}); the lines before it were kept"
        )
        result.problems.append(FileProblem(rel, "corrupt_gzip", entry.problem))


def _add_one(raw: bytes, length: int, rel: str, number: int, writer: LineBatches) -> None:
    if length > MAX_LINE_BYTES:
        writer.add(rel, number, raw.decode("utf-8", errors="backslashreplace"), "line_too_long",
                   f"line is {length} bytes, over the 1 MiB limit; first 64 KiB kept")  # fmt: skip
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        writer.add(rel, number, raw.decode("utf-8", errors="backslashreplace"), "invalid_utf8",
                   f"not UTF-8: {exc.reason} at byte {exc.start}")  # fmt: skip
        return
    if not text.strip():
        writer.add(rel, number, text, "blank_line", "blank line")
        return
    writer.add(rel, number, text)


def _count_lines(real: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(pq.ParquetFile(real).metadata.num_rows)
    opener = gzip.open if fmt == "jsonl.gz" else open
    count = 0
    try:
        with opener(real, "rb") as handle:
            for _ in _read_bounded_lines(handle):
                count += 1
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
        pass
    return count
