"""An analyst's DuckDB connection: the published modeled tables, read-only, with guardrails.

``connect()`` returns an :class:`AnalystConnection` that sees one view per published
modeled table (each SQL file in ``settings.models_path``) and ``daily_sketches``, and
nothing else: not ``raw_events``, ``quarantined_events``, ``file_ledger``, ``events``,
``event_id_conflicts``, nor ``_staging``/``_versions``/``_manifests``.

How the guardrails are enforced, and why (each point checked on DuckDB 2.0.1):

* **Files.** ``enable_external_access = false`` refuses every file, URL, ``ATTACH`` of a
  file, ``COPY``, ``EXPORT``, ``INSTALL``, ``LOAD`` of a non-built-in extension and Python
  replacement scans, wherever they appear (a CTE, a subquery, ``query('...')``), except
  under ``allowed_directories``. But DuckDB lets an allowed directory be *written* too
  (``COPY (SELECT 1) TO '<allowed dir>/x.csv'`` succeeds), so the table folders are not
  allowed directly: the Parquet files are reached through
  :class:`~analytics_pipeline.analyst.filesystem.ReadOnlyTablesFileSystem` (``analyst://``),
  which refuses every write and exposes only ``<table>/date=*/part-0.parquet`` of the
  allowed tables, and ``allowed_directories`` names only ``analyst://<table>/``. DuckDB
  normalises ``..`` before checking (``analyst://persons/../raw_events/...`` is refused
  by DuckDB before the file system is asked). ``allowed_directories`` cannot be given in
  the connect config ("Cannot change/set allowed_directories before the database is
  started") and cannot change once external access is off, so the order is: connect,
  register the file system, ``SET allowed_directories``, ``SET enable_external_access =
  false``, ``SET lock_configuration = true``. ``temp_directory`` is empty (no spilling;
  otherwise DuckDB adds ``<db>.tmp/`` to the allowed directories by itself), and the
  external file cache is off so a partition replaced by ``os.replace`` is never served
  from a cache of the replaced file.
* **Settings.** ``lock_configuration = true`` refuses ``SET``/``RESET``/``PRAGMA x = y``
  of any option (memory_limit, threads, enable_external_access, TimeZone...). ``SET
  VARIABLE`` (session variables, no configuration) stays allowed.
* **Writes.** The views live in a DuckDB file opened ``read_only=True``: DuckDB refuses
  CREATE, DROP, ALTER on it ("attached in read-only mode"), ``INSERT``/``UPDATE``/
  ``DELETE`` on a view (binder), and ``ATTACH ':memory:'`` ("Cannot launch in-memory
  database in read-only mode"). What read-only does *not* cover is the per-connection
  ``temp`` catalog: ``CREATE TEMP TABLE/VIEW/MACRO/SEQUENCE`` succeed on a read-only file,
  also inside ``BEGIN TRANSACTION READ ONLY``, and ``temp`` cannot be detached. No DuckDB
  setting closes that, so a statement that is not a SELECT is first *bound* by DuckDB (not
  run), and one whose bound properties say it modifies a database (DuckDB's own
  ``StatementProperties``, exposed by the 2.x client's ``_bind(..., with_writes=True)``)
  is refused. Because no temp object can ever be created, a SELECT cannot write either
  (there is nothing writable for a data-modifying CTE or ``nextval``), so SELECTs are not
  bound twice. On a client without ``_bind`` the parser's statement type stands in.
* **The catalog file** is private to the connection: written (views only) into a fresh
  folder under ``settings.spill_path``, opened read-only and unlinked at once (the open
  handle keeps it). No two connections share a file, so there is no DuckDB lock between
  analysts and the pipeline, no "different configuration" clash in one process, and the
  pipeline's ``os.replace`` of partitions and rename of ``analytics.duckdb`` never meet
  it. The views glob ``date=*/part-0.parquet`` at each query, so new partitions show up;
  a table published for the first time after ``connect()`` needs a new connection.
* **Consistent reads while the pipeline publishes.** DuckDB's fsspec bridge asks a file's
  size and opens it by path in separate calls, so a partition swapped in between paired
  the old size with the new bytes ("invalid TType", seen in testing). The file system
  therefore pins one descriptor per file for the length of a statement (size, time and
  every read come from that inode) and releases them after it: each statement reads, for
  every partition, one whole published version.
* **Timeout.** Each ``sql()`` call runs under a timer that calls ``interrupt()`` after
  ``timeout_s``; the query stops and :class:`QueryTimeout` is raised.
* **Row limit.** At most ``max_rows`` rows are fetched from DuckDB (streamed, the rest is
  never materialised). When there were more, the first ``max_rows`` are returned *and
  marked*: ``con.truncated`` is True, the Arrow schema metadata has
  ``analyst.truncated = true`` (a DataFrame's ``attrs["truncated"]`` is True) and a
  :class:`RowLimitWarning` is issued. Nothing is cut silently.

Nothing is decided by matching SQL text: a refusal comes from DuckDB's settings, its
read-only catalog, its binder's verdict on what a statement writes, or the read-only file
system DuckDB is confined to, wherever in the statement the forbidden thing sits. This
module only names the statement (DuckDB's parser, ``extract_statements``) and turns the
error into one line (:class:`QueryRefused`). These are guardrails for the SQL an analyst
types, not a sandbox against Python code running in the same process.
"""

from __future__ import annotations

import re
import shutil
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from analytics_pipeline.analyst.filesystem import PROTOCOL, READ_ONLY_MARKER, ReadOnlyTablesFileSystem
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import PUBLISHED_FILE, Warehouse

CATALOG_NAME = "analyst"  # the database name analysts see (``analyst.persons``)
TRUNCATED_KEY = b"analyst.truncated"
MAX_ROWS_KEY = b"analyst.max_rows"
# Statement types that change something, for a client that cannot say what a statement writes.
_WRITE_TYPES = {"INSERT", "UPDATE", "DELETE", "CREATE", "CREATE_FUNC", "DROP", "ALTER", "MERGE_INTO"}


class AnalystQueryError(Exception):
    """A query the analyst connection did not run or could not finish; the message is one line."""


class QueryRefused(AnalystQueryError):
    """DuckDB refused the statement under the analyst guardrails (write, file, attach, setting, extension)."""


class QueryTimeout(AnalystQueryError):
    """The query ran longer than ``timeout_s`` and was interrupted."""


class RowLimitWarning(UserWarning):
    """A result had more than ``max_rows`` rows; the first ``max_rows`` were returned."""


def allowed_tables(settings: PipelineSettings) -> list[str]:
    """Every table an analyst may read: the modeled tables and the daily sketches."""
    from analytics_pipeline.metrics.sketches import SKETCHES_TABLE
    from analytics_pipeline.models.loader import load_models

    return sorted({spec.name for spec in load_models(settings.models_path)} | {SKETCHES_TABLE})


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(table: str) -> str:
    """The view of one table: its published partitions, as the analysts' catalog reads them."""
    glob = f"{PROTOCOL}://{table}/date=*/{PUBLISHED_FILE}"
    return (
        f"CREATE VIEW {_ident(table)} AS SELECT * FROM "
        f"read_parquet({_literal(glob)}, hive_partitioning = true, union_by_name = true)"
    )


def _write_private_catalog(folder: Path, fs: ReadOnlyTablesFileSystem, tables: list[str]) -> Path:
    """A new DuckDB file in ``folder`` holding one view per table; returns the file."""
    folder.mkdir(parents=True)
    path = folder / f"{CATALOG_NAME}.duckdb"
    builder = duckdb.connect(
        str(path), config={"autoload_known_extensions": False, "autoinstall_known_extensions": False}
    )
    try:
        builder.register_filesystem(fs)
        for table in tables:
            builder.execute(view_sql(table))
        builder.execute("CHECKPOINT")
    finally:
        builder.close()
        fs.release()
    return path


def connect(
    settings: PipelineSettings | None = None,
    *,
    timeout_s: float = 30,
    max_rows: int = 10_000,
    memory_limit: str = "1GB",
    threads: int = 2,
) -> AnalystConnection:
    """A read-only connection to the published modeled tables, with the guardrails above.

    ``settings`` defaults to ``PipelineSettings()`` (``ANALYTICS_DATA_DIR`` etc., ``./data``).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    settings = settings or PipelineSettings()
    warehouse = Warehouse(settings.warehouse_path)
    tables = [t for t in allowed_tables(settings) if warehouse.published_days(t)]
    fs = ReadOnlyTablesFileSystem(warehouse.root, tables)
    folder = settings.spill_path / f"analyst-{uuid.uuid4().hex}"
    try:
        con = duckdb.connect(
            str(_write_private_catalog(folder, fs, tables)),
            read_only=True,
            config={
                "memory_limit": memory_limit,
                "threads": threads,
                "temp_directory": "",
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "allow_community_extensions": False,
                "allow_unsigned_extensions": False,
                "enable_external_file_cache": False,
            },
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the open connection keeps the file
    try:
        con.register_filesystem(fs)
        con.execute("SET TimeZone = 'UTC'")
        if tables:
            allowed = ", ".join(_literal(f"{PROTOCOL}://{t}/") for t in tables)
            con.execute(f"SET allowed_directories = [{allowed}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return AnalystConnection(
        con,
        fs,
        settings,
        tables,
        timeout_s=timeout_s,
        max_rows=max_rows,
        memory_limit=memory_limit,
        threads=threads,
    )


@dataclass
class _Deadline:
    fired: bool = False
    running: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


# Verbs DuckDB parses as another statement type (INSTALL is a LOAD, RESET and PRAGMA x = y a SET).
_OWN_VERBS = {"INSTALL", "RESET", "PRAGMA", "USE", "FORCE"}


def _label(statement: Any) -> str:
    """What to call a statement in a message: DuckDB's statement type, or the verb it was written with."""
    kind: str = statement.type.name
    words = str(statement.query).split(None, 1)
    verb = words[0].upper() if words else ""
    return verb if verb in _OWN_VERBS else kind


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _quoted(text: str) -> str | None:
    match = re.search(r'"([^"]+)"', text)
    return match.group(1) if match else None


class AnalystConnection:
    """What :func:`connect` returns. Not for use from several threads at once."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        fs: ReadOnlyTablesFileSystem,
        settings: PipelineSettings,
        tables: list[str],
        *,
        timeout_s: float,
        max_rows: int,
        memory_limit: str,
        threads: int,
    ) -> None:
        self._con = con
        self._fs = fs
        self.settings = settings
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.memory_limit = memory_limit
        self.threads = threads
        self.truncated = False  # whether the last result was cut at max_rows
        self._tables = tables
        self._closed = False

    # --- the API ------------------------------------------------------------------
    def sql(self, text: str) -> pa.Table:
        """Run ``text`` (one or more statements); the last statement's rows, at most ``max_rows``."""
        self._check_open()
        try:
            statements = self._con.extract_statements(text)
        except duckdb.Error as exc:
            raise AnalystQueryError(f"the SQL does not parse: {_first_line(exc)}") from None
        if not statements:
            raise AnalystQueryError("no SQL statement given")
        table = pa.table({})
        with self._deadline() as deadline:
            for statement in statements:
                kind = _label(statement)
                try:
                    self._refuse_writes(statement, kind)
                    table = self._run(statement)
                except (duckdb.Error, pa.ArrowException) as exc:
                    raise self._error(exc, kind, deadline) from None
                finally:
                    self._fs.release()  # each statement reads the versions published when it started
        return self._cut(table)

    def df(self, text: str) -> pd.DataFrame:
        """:meth:`sql` as a pandas DataFrame (``attrs["truncated"]`` says whether rows were cut)."""
        frame = self.sql(text).to_pandas()
        frame.attrs["truncated"] = self.truncated
        return frame

    def tables(self) -> list[str]:
        """The tables this connection can read (the published ones when it was opened)."""
        self._check_open()
        rows = self._con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() "
            "AND NOT internal AND NOT temporary ORDER BY view_name"
        ).fetchall()
        return [name for (name,) in rows]

    def metric(self, name: str, **kwargs: Any) -> pd.DataFrame:
        """A governed metric through the metrics layer (``analytics_pipeline.metrics.query``).

        ``kwargs`` are those of ``query`` (by, start, end, grain, filters, limit); names are
        checked against ``assets/metrics.yml`` and filter values are typed values, never
        SQL. The same settings as this connection; at most ``max_rows`` rows, as ``sql``.
        """
        self._check_open()
        from analytics_pipeline.metrics import query

        result = query(name, settings=self.settings, **kwargs)
        frame = self._cut(result.table).to_pandas()
        frame.attrs["truncated"] = self.truncated
        return frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._con.close()
            self._fs.release()

    def __enter__(self) -> AnalystConnection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._tables)} tables"
        return f"<AnalystConnection {self.settings.warehouse_path} ({state})>"

    # --- running ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise AnalystQueryError("the analyst connection is closed")

    @contextmanager
    def _deadline(self) -> Iterator[_Deadline]:
        deadline = _Deadline()

        def fire() -> None:
            with deadline.lock:
                if deadline.running:  # only while this call is in DuckDB
                    deadline.fired = True
                    self._con.interrupt()

        timer = threading.Timer(self.timeout_s, fire)
        timer.daemon = True
        timer.start()
        try:
            yield deadline
        finally:
            with deadline.lock:
                deadline.running = False
            timer.cancel()

    def _refuse_writes(self, statement: Any, kind: str) -> None:
        """Refuse what DuckDB says writes to a database (only the temp catalog is writable here)."""
        if kind == "SELECT":
            return
        bind = getattr(self._con, "_bind", None)
        writes = bind(statement, with_writes=True)[-1] if bind is not None else kind in _WRITE_TYPES
        if writes:
            raise QueryRefused(
                f"{kind} refused: the analyst connection is read-only (DuckDB binds this statement as a "
                "write; temporary tables, views and macros are not allowed either)"
            )

    def _run(self, statement: Any) -> pa.Table:
        relation = self._con.sql(statement)
        if relation is None:  # a statement without rows
            return pa.table({})
        reader = relation.to_arrow_reader(min(self.max_rows + 1, 131_072))
        try:
            batches, rows = [], 0
            while rows <= self.max_rows:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                batches.append(batch)
                rows += batch.num_rows
            return pa.Table.from_batches(batches, schema=reader.schema)
        finally:
            reader.close()

    def _cut(self, table: pa.Table) -> pa.Table:
        self.truncated = table.num_rows > self.max_rows
        if not self.truncated:
            return table
        warnings.warn(
            f"the result had more than max_rows={self.max_rows} rows; the first {self.max_rows} are returned "
            "(aggregate, add a LIMIT, or connect(max_rows=...))",
            RowLimitWarning,
            stacklevel=3,
        )
        metadata = {
            **(table.schema.metadata or {}),
            TRUNCATED_KEY: b"true",
            MAX_ROWS_KEY: str(self.max_rows).encode(),
        }
        return table.slice(0, self.max_rows).replace_schema_metadata(metadata)

    # --- errors -------------------------------------------------------------------
    def _error(self, exc: BaseException, kind: str, deadline: _Deadline) -> AnalystQueryError:
        """DuckDB's refusal or failure as one line that says what was refused and why."""
        if isinstance(exc, AnalystQueryError):
            return exc
        line = _first_line(exc)
        text = str(exc)
        if deadline.fired and (isinstance(exc, duckdb.InterruptException) or "INTERRUPT" in text):
            return QueryTimeout(
                f"query cancelled after {self.timeout_s:g} s (timeout_s); narrow the date range, "
                "aggregate, or connect(timeout_s=...)"
            )
        if READ_ONLY_MARKER in text:
            target = re.search(r"cannot (?:write|change) (\S+)", text)
            where = target.group(1) if target else "the warehouse"
            return QueryRefused(f"{kind} refused: {READ_ONLY_MARKER}; nothing can be written to {where}")
        if "configuration has been locked" in text:
            option = _quoted(line) or "settings"
            return QueryRefused(
                f"{kind} refused: settings are locked on the analyst connection; {option} cannot be changed "
                f"(memory_limit={self.memory_limit}, threads={self.threads}; use connect(...) to choose them)"
            )
        if "extensions is disabled" in text or (
            kind in ("INSTALL", "LOAD", "FORCE") and "Permission" in line
        ):
            return QueryRefused(
                f"{kind} refused: installing and loading extensions is disabled on the analyst connection"
            )
        if kind in ("ATTACH", "DETACH"):
            return QueryRefused(
                f"{kind} refused: attaching databases is disabled on the analyst connection ({line})"
            )
        if isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in text:
            path = _quoted(line)
            what = f" ({path})" if path else ""
            return QueryRefused(
                f"{kind} refused: files cannot be read or written on the analyst connection{what}; "
                "only its tables are readable: " + ", ".join(self._tables)
            )
        if "read-only mode" in text or kind in _WRITE_TYPES:
            return QueryRefused(f"{kind} refused: the analyst connection is read-only ({line})")
        if isinstance(exc, duckdb.OutOfMemoryException):
            return AnalystQueryError(
                f"query needs more than memory_limit={self.memory_limit} ({line}); aggregate first or "
                "connect(memory_limit=...)"
            )
        if isinstance(exc, duckdb.CatalogException) and "does not exist" in line:
            return AnalystQueryError(f"{kind} failed: {line}; the analyst tables: {', '.join(self._tables)}")
        return AnalystQueryError(f"{kind} failed: {line}")
