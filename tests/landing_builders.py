"""Helpers to build tiny landing folders by hand and read back what ingestion published.

Used by ``tests/ingest/test_bad_input.py``. Every landing file is written byte by byte by the
test itself (no generator), so each test states exactly which bad input it plants.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analytics_pipeline.ingest.arrival_day import IngestResult, ingest_arrival_day
from analytics_pipeline.settings import PipelineSettings

DAY = "2024-03-10"  # the arrival day every test lands its files in
DROP = object()  # pass as an override value to remove a key from the message

Line = bytes | str | dict[str, Any] | list[Any]


def message(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid Segment track "Product Viewed" message timed inside the arrival day.

    ``overrides`` replace keys; an override of ``DROP`` removes the key.
    """
    msg: dict[str, Any] = {
        "messageId": f"m-{n:04d}",
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": f"anon-{n}",
        "timestamp": f"{DAY}T10:{n % 60:02d}:00Z",
        "receivedAt": f"{DAY}T10:{n % 60:02d}:01Z",
        "properties": {"product_id": "p1", "price": 9.5, "currency": "USD"},
    }
    for key, value in overrides.items():
        if value is DROP:
            msg.pop(key, None)
        else:
            msg[key] = value
    return msg


def encode(line: Line) -> bytes:
    """One landing line (without its newline) as bytes."""
    if isinstance(line, bytes):
        return line
    if isinstance(line, str):
        return line.encode("utf-8")
    return json.dumps(line, separators=(",", ":")).encode("utf-8")


def jsonl_bytes(lines: list[Line]) -> bytes:
    return b"".join(encode(line) + b"\n" for line in lines)


@dataclass
class Ingested:
    """What one ``ingest_arrival_day`` published, read back from the warehouse Parquet."""

    result: IngestResult
    raw: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    ledger: list[dict[str, Any]]

    @property
    def counts(self) -> dict[str, Any]:
        return self.result.counts

    def reconciles(self) -> bool:
        c = self.counts
        return bool(c["lines_read"] == c["raw_events"] + c["quarantined_lines"] + c["duplicate_file_lines"])

    def raw_ids(self) -> list[str]:
        return [row["message_id"] for row in self.raw]

    def ledger_entry(self, rel_path: str) -> dict[str, Any]:
        matches = [row for row in self.ledger if row["path"] == rel_path]
        assert len(matches) == 1, f"expected one ledger row for {rel_path}, got {self.ledger}"
        return matches[0]

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.quarantine:
            out[row["reason"]] = out.get(row["reason"], 0) + 1
        return out


def read_parquet_rows(con: duckdb.DuckDBPyConnection, path: Path, order_by: str) -> list[dict[str, Any]]:
    """All rows of a published Parquet file as dicts (the partition key is not a column)."""
    cur = con.execute(f"SELECT * FROM read_parquet('{path}', hive_partitioning = false) ORDER BY {order_by}")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@dataclass
class LandingDay:
    """A data dir with ``landing/<folder>/`` for one arrival day."""

    data_dir: Path
    day: str = DAY
    folder_name: str = ""  # "" means the plain YYYY-MM-DD folder name
    written: list[Path] = field(default_factory=list)

    @property
    def landing_root(self) -> Path:
        return self.data_dir / "landing"

    @property
    def folder(self) -> Path:
        path = self.landing_root / (self.folder_name or self.day)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rel(self, name: str) -> str:
        """The ``file_path`` ingestion records for a file written with ``name``."""
        return f"{self.folder_name or self.day}/{name}"

    def path(self, name: str) -> Path:
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        self.written.append(target)
        return target

    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.path(name)
        target.write_bytes(data)
        return target

    def write_lines(self, name: str, lines: list[Line]) -> Path:
        return self.write_bytes(name, jsonl_bytes(lines))

    def write_gz(self, name: str, lines: list[Line], keep_fraction: float = 1.0) -> Path:
        data = gzip.compress(jsonl_bytes(lines), compresslevel=6, mtime=0)
        return self.write_bytes(name, data[: int(len(data) * keep_fraction)])

    def write_parquet(self, name: str, table: pa.Table) -> Path:
        target = self.path(name)
        pq.write_table(table, target)
        return target

    def settings(self, **overrides: Any) -> PipelineSettings:
        values: dict[str, Any] = {"data_dir": str(self.data_dir), "duckdb_threads": 1,
                                  "duckdb_memory_limit": "512MB"}  # fmt: skip
        values.update(overrides)
        return PipelineSettings(**values)

    def ingest(self, **overrides: Any) -> Ingested:
        settings = self.settings(**overrides)
        result = ingest_arrival_day(settings, self.day)
        wh = settings.warehouse_path
        part = f"date={self.day}/part-0.parquet"
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ values come back as UTC datetimes
            return Ingested(
                result=result,
                raw=read_parquet_rows(con, wh / "raw_events" / part, "file_path, line_number"),
                quarantine=read_parquet_rows(
                    con, wh / "quarantined_events" / part, "file_path, line_number NULLS FIRST, reason"
                ),
                ledger=read_parquet_rows(con, wh / "file_ledger" / part, "path"),
            )
        finally:
            con.close()
