"""Crash safety: a process SIGKILLed while publishing never leaves a reader a broken table.

``tests/scripts/publish_loop.py`` stages a ~200k-row Parquet file with DuckDB ``COPY``
and publishes it with ``Warehouse.publish``, over and over, alternating two contents
(A and B). The tests kill it with SIGKILL at different moments and then check:

* a reader globbing the table (``read_parquet(warehouse.table_glob(table))``) succeeds
  and sees exactly one complete version, A or B (row count and content checksum);
* the table's folder holds nothing but ``date=D/part-0.parquet`` (no temporary or
  partial file is visible to the glob), and every kept version is a readable file;
* a normal ``ingest_arrival_day`` and a normal publish afterwards succeed, and clear
  what the killed process left in ``_staging``.

No assertion depends on timing: the delays only spread the kills over the phases.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import PUBLISHED_FILE, STAGING_DIR, Warehouse
from analytics_pipeline.warehouse.tables import RAW_EVENTS

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from publish_loop import checksum_sql, version_sql  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "scripts" / "publish_loop.py"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY = "2025-04-02"
ROWS = 200_000
TABLE = RAW_EVENTS  # the killed process writes the partition a normal ingest run writes next
KILL_DELAYS_S = (0.05, 0.3, 0.6, 1.0, 1.5)
WAIT_S = 60.0  # only guards against a hung child; never an assertion about speed


# --- helpers ------------------------------------------------------------------------------


class LoopProcess:
    """publish_loop.py as a child process whose stdout lines are collected by a thread."""

    def __init__(self, warehouse: Warehouse, start: str = "B") -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                str(warehouse.root),
                TABLE,
                DAY,
                "--rows",
                str(ROWS),
                "--start",
                start,
            ],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"publish_loop.py printed no {prefix!r} line within {WAIT_S}s: {self.seen}")
            if line is None:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                pytest.fail(f"publish_loop.py ended before {prefix!r}: {self.seen}\n{stderr}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def kill(self) -> int:
        """SIGKILL, reap, and drain what it printed before dying."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=WAIT_S)
        self._reader.join(timeout=WAIT_S)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        if self.proc.stderr is not None:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    @property
    def publishes_done(self) -> int:
        return sum(1 for line in self.seen if line.startswith("DONE"))


def expected_checksums() -> dict[tuple[Any, ...], str]:
    con = duckdb.connect()
    try:
        out = {}
        for version in ("A", "B"):
            row = con.execute(checksum_sql(f"({version_sql(version, ROWS)})")).fetchone()
            assert row is not None
            out[tuple(row)] = version
        return out
    finally:
        con.close()


def read_table(warehouse: Warehouse) -> tuple[Any, ...]:
    """What an analyst's query over the table glob returns right now."""
    con = duckdb.connect()
    try:
        row = con.execute(checksum_sql(f"read_parquet('{warehouse.table_glob(TABLE)}')")).fetchone()
    finally:
        con.close()
    assert row is not None
    return tuple(row)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def staging_files(warehouse: Warehouse) -> list[Path]:
    return files_under(warehouse.root / STAGING_DIR / TABLE / f"date={DAY}")


def publish_version(warehouse: Warehouse, version: str) -> None:
    """A normal, uninterrupted stage + publish in this process."""
    staged = warehouse.staging_file(TABLE, DAY, uuid.uuid4().hex)
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({version_sql(version, ROWS)}) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()
    warehouse.publish(staged, TABLE, DAY, versions_kept=3)


def assert_table_consistent(warehouse: Warehouse, expected: dict[tuple[Any, ...], str]) -> str:
    """Only the published file is visible, it is complete, and so is every kept version."""
    assert files_under(warehouse.root / TABLE) == [warehouse.partition_file(TABLE, DAY)], (
        "something other than the published part-0.parquet is inside the table folder"
    )
    seen = read_table(warehouse)
    assert seen in expected, f"reader saw neither complete version A nor B: {seen}"
    con = duckdb.connect()
    try:
        for kept in warehouse.versions(TABLE, DAY):
            row = con.execute(f"SELECT count(*) FROM read_parquet('{kept}')").fetchone()
            assert row is not None and row[0] > 0
    finally:
        con.close()
    return expected[seen]


def assert_normal_run_succeeds(settings: PipelineSettings, warehouse: Warehouse) -> None:
    """After the crash a normal ingest of the same partition works and clears staging."""
    result = ingest_arrival_day(settings, DAY)
    assert result.published[TABLE].changed is True
    assert staging_files(warehouse) == []
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT count(*) FROM read_parquet('{warehouse.table_glob(TABLE)}')").fetchone()
    finally:
        con.close()
    assert row is not None and row[0] == result.counts["raw_events"] > 0
    assert files_under(warehouse.root / TABLE) == [warehouse.partition_file(TABLE, DAY)]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[PipelineSettings, Warehouse, dict[tuple[Any, ...], str]]:
    generate(tmp_path / "landing", date.fromisoformat(DAY), 1, 300, faults=FaultRates(malformed=0.0))
    settings = PipelineSettings(data_dir=str(tmp_path), duckdb_threads=1)
    warehouse = Warehouse(settings.warehouse_path)
    publish_version(warehouse, "A")  # a reader always has a complete version to see
    expected = expected_checksums()
    assert len(expected) == 2 and read_table(warehouse) in expected
    return settings, warehouse, expected


# --- tests --------------------------------------------------------------------------------


def test_sigkill_during_publish_loop_leaves_one_complete_version(
    setup: tuple[PipelineSettings, Warehouse, dict[tuple[Any, ...], str]],
) -> None:
    settings, warehouse, expected = setup
    total_publishes = 0
    outcomes = []
    for delay in KILL_DELAYS_S:
        child = LoopProcess(warehouse, start="B")
        child.wait_for("READY")
        time.sleep(delay)
        code = child.kill()
        assert code == -signal.SIGKILL, f"the loop died on its own (exit {code}): {child.stderr}"
        total_publishes += child.publishes_done
        last_phase = child.seen[-1] if child.seen else ""

        visible = assert_table_consistent(warehouse, expected)
        outcomes.append((delay, child.publishes_done, last_phase.split(" ")[0], visible))

        assert_normal_run_succeeds(settings, warehouse)
        publish_version(warehouse, "A")  # and a normal publish: back to A for the next round
        assert expected[read_table(warehouse)] == "A"
        assert files_under(warehouse.root / TABLE) == [warehouse.partition_file(TABLE, DAY)]
    print(f"\nkills (delay s, publishes completed, last phase announced, version seen): {outcomes}")
    # the kills did land inside the loop, not only before its first publish
    assert total_publishes >= 1


def test_sigkill_mid_copy_leaves_only_a_stray_staging_file(
    setup: tuple[PipelineSettings, Warehouse, dict[tuple[Any, ...], str]],
) -> None:
    settings, warehouse, expected = setup
    strays_seen = 0
    for attempt in range(10):
        child = LoopProcess(warehouse, start="B")
        child.wait_for("COPY")  # DuckDB starts writing the staged file right after this line
        time.sleep(0.05 + 0.02 * attempt)
        code = child.kill()
        assert code == -signal.SIGKILL, f"the loop died on its own (exit {code}): {child.stderr}"

        strays = staging_files(warehouse)
        print(f"\nkilled {0.05 + 0.02 * attempt:.2f}s into COPY: staging holds {[p.name for p in strays]}")
        assert all(PUBLISHED_FILE not in p.name for p in strays)
        # whatever the COPY wrote stayed in staging: the table shows a complete version
        assert assert_table_consistent(warehouse, expected) in ("A", "B")
        if strays:
            strays_seen += 1
            if strays_seen == 1:  # clear_staging alone removes it
                warehouse.clear_staging(TABLE, DAY)
                assert staging_files(warehouse) == []
                continue
        # the next run removes it as part of its normal work
        assert_normal_run_succeeds(settings, warehouse)
        publish_version(warehouse, "A")
        if strays_seen >= 2:
            break
    assert strays_seen >= 1, "no kill landed while DuckDB was writing the staged file"
    assert staging_files(warehouse) == []


def test_sigkill_inside_publish_leaves_one_complete_version(
    setup: tuple[PipelineSettings, Warehouse, dict[tuple[Any, ...], str]],
) -> None:
    """Kills aimed at ``Warehouse.publish`` itself (fsync, hash, keep version, replace)."""
    settings, warehouse, expected = setup
    seen_versions = []
    for attempt in range(5):
        child = LoopProcess(warehouse, start="B")
        for _ in range(attempt % 3):  # vary which publication is interrupted
            child.wait_for("DONE")
        child.wait_for("PUBLISH")
        time.sleep(0.005 * attempt)
        code = child.kill()
        assert code == -signal.SIGKILL, f"the loop died on its own (exit {code}): {child.stderr}"
        seen_versions.append(assert_table_consistent(warehouse, expected))
        assert_normal_run_succeeds(settings, warehouse)
        publish_version(warehouse, "A")
    print(f"\nversions seen after kills inside publish: {seen_versions}")
