"""A throwaway copy of a data directory with its own Dagster instance, for drills to break.

A drill must never touch the data it is about: the sandbox copies ``landing/`` and
``warehouse/`` of a given data directory (or generates a small one), runs the real
Dagster jobs on it (``nightly_job``, ``late_window_job``, the model plan) against a
temporary ``DAGSTER_HOME``, and gives the drills small readers of what is published.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from analytics_pipeline.events.late_window import event_days_to_rebuild
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import (
    PUBLISHED_DIR,
    PUBLISHED_FILE,
    STAGING_DIR,
    Warehouse,
    file_sha256,
)
from analytics_pipeline.warehouse.tables import EVENTS, RAW_EVENTS

if TYPE_CHECKING:
    from dagster import DagsterInstance

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DRILL_DAYS = 2  # generated sandbox: two days of traffic, so a day has a previous one for its gates
DRILL_EVENTS_PER_DAY = 200  # above the volume gate's min_median (50), small enough to be quick
# copied by name (hard links would share an inode that a tool could change in place; these never are)
_IMMUTABLE = (".parquet", ".gz", ".jsonl", ".ndjson", ".json")
_SKIPPED = {"cache", "tmp"}  # the metric cache and DuckDB's spill directory are not data


@dataclass
class JobOutcome:
    """What one or more job runs did: success, why they failed, and their check evaluations."""

    success: bool
    failures: list[str] = field(default_factory=list)
    evaluations: list[Any] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def failed_checks(self) -> list[str]:
        return sorted(
            f"{e.asset_key.to_user_string()}.{e.check_name}"
            for e in self.evaluations
            if not e.passed and e.severity.value == "ERROR"
        )


def _causes(error: Any) -> str:
    """A step's error with its causes ("Exceeded max_retries" says little on its own)."""
    messages = []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause
    return " <- ".join(messages)


@dataclass
class Sandbox:
    """One drill's data directory (``root/data``) and Dagster instance (``root/dagster_home``)."""

    root: Path
    settings: PipelineSettings
    days: list[str]  # the two consecutive published days drills act on, oldest first
    _instance: DagsterInstance | None = None

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.settings.warehouse_path)

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def instance(self) -> DagsterInstance:
        if self._instance is None:
            from dagster import DagsterInstance

            home = self.dagster_home
            home.mkdir(parents=True, exist_ok=True)
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            self._instance = DagsterInstance.from_config(str(home))
        return self._instance

    def close(self) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None

    # --- running the pipeline ----------------------------------------------------------
    def nightly(self, day: str) -> JobOutcome:
        """What ``nightly_schedule`` and ``late_window_sensor`` run for one arrival day."""
        from analytics_pipeline.definitions import defs

        outcome = self._execute(defs.resolve_job_def("nightly_job"), day)
        if outcome.success:
            for event_day in event_days_to_rebuild(day, self.settings.late_window_days, self.warehouse):
                late = self._execute(defs.resolve_job_def("late_window_job"), event_day)
                outcome.success &= late.success
                outcome.failures += late.failures
                outcome.evaluations += late.evaluations
                outcome.run_ids += late.run_ids
        return outcome

    def _execute(self, job: Any, day: str) -> JobOutcome:
        result = job.execute_in_process(
            partition_key=day, instance=self.instance, resources={"settings": self.settings},
            raise_on_error=False, run_config=QUIET,
        )  # fmt: skip
        failures = [
            f"{job.name} {day}: {_causes(e.step_failure_data.error)}"
            for e in result.get_step_failure_events()
        ]
        return JobOutcome(
            result.success, failures, list(result.get_asset_check_evaluations()), [result.run_id]
        )

    # --- reading what is published -------------------------------------------------------
    def sha(self, table: str, day: str) -> str | None:
        path = self.warehouse.partition_file(table, day)
        return file_sha256(path) if path.exists() else None

    def manifest(self, table: str, day: str) -> dict[str, Any]:
        return self.warehouse.read_manifest(table, day) or {}

    def sql(self, sql: str, **tables: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` with each keyword a view over that table's published partitions (``t="events"``)."""
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            for view, table in tables.items():
                glob = self.warehouse.table_glob(table)
                con.execute(
                    f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{glob}', hive_partitioning=true)"
                )
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def scalar(self, sql: str, **tables: str) -> Any:
        rows = self.sql(sql, **tables)
        return rows[0][0] if rows else None

    def rows(self, table: str, day: str) -> int:
        path = self.warehouse.partition_file(table, day)
        con = duckdb.connect()
        try:
            row = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
            return int(row[0]) if row else 0
        finally:
            con.close()

    def content(self, table: str, day: str) -> tuple[int, int]:
        """Row count and an order-independent checksum of the partition's rows (bytes may differ)."""
        path = self.warehouse.partition_file(table, day)
        con = duckdb.connect()
        try:
            row = con.execute(
                f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM read_parquet('{path}') t"
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])
        finally:
            con.close()

    def stray_files(self, table: str) -> list[str]:
        """Anything in the table's folder but published partition files (what a glob could pick up)."""
        table_dir = self.warehouse.root / table
        if not table_dir.exists():
            return []
        return sorted(
            str(p.relative_to(table_dir))
            for p in table_dir.rglob("*")
            if p.is_file() and not (p.name == PUBLISHED_FILE and p.parent.name.startswith("date="))
        )

    def journals(self) -> list[str]:
        published = self.warehouse.root / PUBLISHED_DIR
        return sorted(str(p.relative_to(published)) for p in published.rglob("*.journal"))

    def staged_files(self) -> list[Path]:
        return sorted((self.warehouse.root / STAGING_DIR).rglob("*.parquet"))

    def reconciliation(self, day: str) -> list[str]:
        """What does not add up for arrival day ``day`` and event date ``day`` (empty: all of it does)."""
        problems = []
        raw = self.manifest(RAW_EVENTS, day)
        accounted = (
            raw.get("raw_events", 0) + raw.get("quarantined_lines", 0) + raw.get("duplicate_file_lines", 0)
        )
        if raw.get("lines_read") != accounted:
            problems.append(f"raw_events {day}: lines_read {raw.get('lines_read')} != {accounted} accounted")
        if self.rows(RAW_EVENTS, day) != raw.get("raw_events"):
            problems.append(
                f"raw_events {day}: {self.rows(RAW_EVENTS, day)} rows, manifest {raw.get('raw_events')}"
            )
        events = self.manifest(EVENTS, day)
        kept = events.get("events", 0) + events.get("duplicates", 0) + events.get("id_conflicts", 0)
        if events.get("input_rows") != kept:
            problems.append(f"events {day}: input_rows {events.get('input_rows')} != {kept} accounted")
        if self.rows(EVENTS, day) != events.get("events"):
            problems.append(f"events {day}: {self.rows(EVENTS, day)} rows, manifest {events.get('events')}")
        return problems

    # --- landing ---------------------------------------------------------------------------
    def landing_lines(self, day: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` accepted messages of arrival day ``day``, as delivered (for drills to alter)."""
        rows = self.sql(
            f"SELECT raw_line FROM r WHERE arrival_date = DATE '{day}' ORDER BY file_path, line_number "
            f"LIMIT {limit}",
            r=RAW_EVENTS,
        )
        return [json.loads(line) for (line,) in rows]

    def write_landing(self, day: str, name: str, data: bytes) -> Path:
        path = self.settings.landing_path / day / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def copy(self, root: Path) -> Sandbox:
        """Another sandbox holding this one's data (its own Dagster instance)."""
        _copy_data(Path(self.settings.data_dir), root / "data")
        settings = self.settings.replace(data_dir=str(root / "data"), duckdb_temp_dir=str(root / "spill"))
        return Sandbox(root, settings, list(self.days))


def _copy_data(source: Path, target: Path) -> None:
    """``landing/`` and ``warehouse/`` of ``source``; immutable files by hard link where possible."""

    def copy_file(src: str, dst: str) -> None:
        if src.endswith(_IMMUTABLE) and not src.endswith(".json"):
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    target.mkdir(parents=True, exist_ok=True)
    for part in ("landing", "warehouse"):
        if (source / part).exists():
            shutil.copytree(
                source / part, target / part, copy_function=copy_file, ignore=shutil.ignore_patterns(*_SKIPPED),
                dirs_exist_ok=True,
            )  # fmt: skip


def make_sandbox(
    root: Path | None = None,
    data_dir: Path | None = None,
    events_per_day: int = DRILL_EVENTS_PER_DAY,
    seed: int = 5,
    echo: Any = None,
) -> Sandbox:
    """A sandbox whose last two days are published: copied from ``data_dir``, or generated.

    Generated: ``DRILL_DAYS`` days of traffic ending ten days ago (so every late window has
    closed), with duplicates and id conflicts but no planted malformed or late lines (the
    drills plant their own), and only the traffic's own landing folders. Days of the copy
    that are not yet ingested are run first (not part of any drill's timing).
    """
    root = Path(root or tempfile.mkdtemp(prefix="analytics-drill-"))
    target = root / "data"
    settings = PipelineSettings(data_dir=str(target), duckdb_temp_dir=str(root / "spill"))
    if data_dir is not None:
        _copy_data(Path(data_dir), target)
    else:
        start = date.today() - timedelta(days=10)
        generate(
            settings.landing_path, start, DRILL_DAYS, events_per_day, seed=seed,
            faults=FaultRates(late=0.0, malformed=0.0),
        )  # fmt: skip
        traffic = {(start + timedelta(days=i)).isoformat() for i in range(DRILL_DAYS)}
        for folder in settings.landing_path.iterdir():
            if folder.name not in traffic:
                shutil.rmtree(folder)
    sandbox = Sandbox(root, settings, [])
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    warehouse = sandbox.warehouse
    for day in _landing_days(settings):
        if day <= yesterday and not warehouse.partition_file(RAW_EVENTS, day).exists():
            outcome = sandbox.nightly(day)
            if echo is not None:
                echo(f"sandbox: nightly_job {day}: {'ok' if outcome.success else 'FAILED'}")
    sandbox.days = _last_two_days(sandbox)
    return sandbox


def _landing_days(settings: PipelineSettings) -> Iterator[str]:
    days = set()
    for entry in settings.landing_path.iterdir() if settings.landing_path.exists() else []:
        try:
            days.add(date.fromisoformat(entry.name.removeprefix("date=")).isoformat())
        except ValueError:
            continue
    yield from sorted(days)


def _last_two_days(sandbox: Sandbox) -> list[str]:
    """The newest two consecutive days with published raw_events and events and a landing folder."""
    warehouse = sandbox.warehouse
    ready = [
        day
        for day in _landing_days(sandbox.settings)
        if warehouse.partition_file(RAW_EVENTS, day).exists()
        and warehouse.partition_file(EVENTS, day).exists()
    ]
    for later, earlier in zip(reversed(ready), reversed(ready[:-1]), strict=False):
        if date.fromisoformat(later) - date.fromisoformat(earlier) == timedelta(days=1):
            return [earlier, later]
    raise RuntimeError(
        f"no two consecutive days with published raw_events and events under {sandbox.settings.data_dir}"
    )
