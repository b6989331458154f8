"""Crash safety: a process SIGKILLed while publishing never leaves a reader a broken table.

``tests/scripts/publish_loop.py`` stages a ~200k-row Parquet file with DuckDB ``COPY``
and publishes it with ``Warehouse.publish``, alternating two contents (A and B), and
freezes itself (``SIGSTOP``) at one aimed point after printing ``STOPPED <point> <k>``:
inside the ``COPY`` (a partially written staged file, no footer yet), or at a step of
``storage.PUBLISH_STEPS``, where ``Warehouse.publish``/``rollback`` call the test seam
``storage.PUBLISH_STEP_HOOK``. Each test waits for that line, checks the process is
stopped, SIGKILLs it and checks it died by SIGKILL with that line as its last word, and
that the files show the state of that very point. Then it checks:

* a reader globbing the table (``read_parquet(warehouse.table_glob(table))``) succeeds
  and sees exactly one complete version: the one published before the point, or the
  new one once ``os.replace`` is done (row count and content checksum);
* the table's folder holds nothing but ``date=D/part-0.parquet`` (no temporary or
  partial file is visible to the glob), and every kept version is a readable file;
* a normal ``ingest_arrival_day`` and a normal publish afterwards succeed, and clear
  what the killed process left in ``_staging``.

No assertion depends on timing, and no test passes without its kill landing at its point.
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
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import PUBLISH_STEPS, PUBLISHED_FILE, STAGING_DIR, Warehouse
from analytics_pipeline.warehouse.tables import RAW_EVENTS

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from publish_loop import COPY_POINT, checksum_sql, version_sql  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "scripts" / "publish_loop.py"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY = "2025-04-02"
ROWS = 200_000
TABLE = RAW_EVENTS  # the killed process writes the partition a normal ingest run writes next
VERSIONS_KEPT = 3
WAIT_S = 60.0  # only guards against a hung child; never an assertion about speed

Expected = dict[tuple[Any, ...], str]


# --- helpers ------------------------------------------------------------------------------


def published_by(k: int) -> str:
    """The content of the k-th publish of a child started with B (0: what the fixture published)."""
    return "A" if k % 2 == 0 else "B"


class AimedProcess:
    """publish_loop.py stopping itself at one point; its stdout lines are collected by a thread."""

    def __init__(
        self,
        warehouse: Warehouse,
        point: str,
        occurrence: int = 1,
        publishes: int = 0,
        rollback: bool = False,
    ) -> None:
        self.marker = f"STOPPED {point} {occurrence}"
        command = [
            sys.executable, str(SCRIPT), str(warehouse.root), TABLE, DAY,
            "--stop-at", point, "--occurrence", str(occurrence), "--publishes", str(publishes),
            "--rows", str(ROWS), "--start", "B", "--versions-kept", str(VERSIONS_KEPT),
        ] + (["--rollback"] if rollback else [])  # fmt: skip
        self.proc = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_marker(self) -> None:
        """Until the child announces its point; fails if it ends or hangs before."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"publish_loop.py printed no {self.marker!r} within {WAIT_S}s: {self.seen}")
            if line is None:
                code = self.kill()
                pytest.fail(
                    f"publish_loop.py ended (exit {code}) before {self.marker!r}: {self.seen}\n{self.stderr}"
                )
            self.seen.append(line)
            if line == self.marker:
                return

    def wait_until_stopped(self) -> None:
        """The child froze itself with SIGSTOP right after the marker: see it stopped (not reaped)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.proc.pid, os.WUNTRACED | os.WNOHANG)
            if pid:
                assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP, (
                    f"publish_loop.py changed state without stopping at {self.marker!r} (status {status})"
                )
                return
            time.sleep(0.005)
        self.kill()
        pytest.fail(f"publish_loop.py printed {self.marker!r} but did not stop within {WAIT_S}s")

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

    def kill_at_marker(self) -> None:
        """Wait for the point, SIGKILL the stopped child there, and prove that is where it died."""
        self.wait_for_marker()
        self.wait_until_stopped()
        code = self.kill()
        assert code == -signal.SIGKILL, f"publish_loop.py did not die by SIGKILL (exit {code}): {self.stderr}"
        assert self.seen[-1] == self.marker, f"it went on past {self.marker!r}: {self.seen}"

    def staged_path(self, index: int = -1) -> Path:
        """The staged file a ``COPY <version> <path>`` line named (the last one by default)."""
        copies = [line for line in self.seen if line.startswith("COPY ")]
        return Path(copies[index].split(" ", 2)[2])


def expected_checksums() -> Expected:
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


def checksum(relation: str) -> tuple[Any, ...]:
    con = duckdb.connect()
    try:
        row = con.execute(checksum_sql(relation)).fetchone()
    finally:
        con.close()
    assert row is not None
    return tuple(row)


def read_table(warehouse: Warehouse) -> tuple[Any, ...]:
    """What an analyst's query over the table glob returns right now."""
    return checksum(f"read_parquet('{warehouse.table_glob(TABLE)}')")


def version_of(path: Path, expected: Expected) -> str:
    """Which complete content a single Parquet file holds (fails for anything else)."""
    seen = checksum(f"read_parquet('{path}')")
    assert seen in expected, f"{path} holds neither complete version A nor B: {seen}"
    return expected[seen]


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
    warehouse.publish(staged, TABLE, DAY, versions_kept=VERSIONS_KEPT)


def assert_table_consistent(warehouse: Warehouse, expected: Expected) -> str:
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
    assert len(warehouse.versions(TABLE, DAY)) <= VERSIONS_KEPT


def assert_recovers(settings: PipelineSettings, warehouse: Warehouse, expected: Expected) -> None:
    assert_normal_run_succeeds(settings, warehouse)
    publish_version(warehouse, "A")  # and a normal publish
    assert expected[read_table(warehouse)] == "A"
    assert files_under(warehouse.root / TABLE) == [warehouse.partition_file(TABLE, DAY)]
    assert staging_files(warehouse) == []


@pytest.fixture
def setup(tmp_path: Path) -> tuple[PipelineSettings, Warehouse, Expected]:
    generate(tmp_path / "landing", date.fromisoformat(DAY), 1, 300, faults=FaultRates(malformed=0.0))
    settings = PipelineSettings(data_dir=str(tmp_path), duckdb_threads=1, versions_kept=VERSIONS_KEPT)
    warehouse = Warehouse(settings.warehouse_path)
    publish_version(warehouse, "A")  # a reader always has a complete version to see
    expected = expected_checksums()
    assert len(expected) == 2 and read_table(warehouse) in expected
    return settings, warehouse, expected


# --- tests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Kill at the ``occurrence``-th pass of ``step`` in a child that publishes that many times."""

    step: str
    occurrence: int
    replaced: bool  # whether the new file is in place at that point

    @property
    def visible(self) -> str:
        return published_by(self.occurrence if self.replaced else self.occurrence - 1)


PUBLISH_WINDOWS = [
    Window("publish:staged_synced", 1, replaced=False),
    Window("keep_version:linked", 4, replaced=False),  # 3 versions kept already: a 4th, not pruned
    Window("publish:version_kept", 1, replaced=False),
    Window("publish:replaced", 2, replaced=True),
    Window("publish:done", 1, replaced=True),
]


def test_every_publish_step_has_an_aimed_kill() -> None:
    assert {w.step for w in PUBLISH_WINDOWS} | {"rollback:replaced"} == set(PUBLISH_STEPS)


@pytest.mark.parametrize("window", PUBLISH_WINDOWS, ids=lambda w: f"{w.step}@{w.occurrence}")
def test_sigkill_at_a_publish_step_leaves_one_complete_version(
    setup: tuple[PipelineSettings, Warehouse, Expected], window: Window
) -> None:
    settings, warehouse, expected = setup
    child = AimedProcess(warehouse, window.step, window.occurrence)
    child.kill_at_marker()
    assert sum(line.startswith("DONE") for line in child.seen) == window.occurrence - 1
    staged = child.staged_path()
    new_version = published_by(window.occurrence)

    # the files are in the state of that very point
    kept = warehouse.versions(TABLE, DAY)
    published = warehouse.partition_file(TABLE, DAY)
    if window.replaced:
        assert not staged.exists() and staging_files(warehouse) == []
        assert kept and version_of(kept[-1], expected) == published_by(window.occurrence - 1)
    else:  # the complete, fsynced new file still waits in staging
        assert staging_files(warehouse) == [staged]
        assert version_of(staged, expected) == new_version
    if window.step in ("keep_version:linked", "publish:version_kept"):
        assert os.path.samefile(kept[-1], published)  # the old version got its second name
        assert len(kept) == (window.occurrence if window.step == "keep_version:linked" else 1)
    if window.step == "keep_version:linked":
        assert len(kept) == VERSIONS_KEPT + 1  # killed before pruning

    assert assert_table_consistent(warehouse, expected) == window.visible
    assert_recovers(settings, warehouse, expected)


def test_sigkill_mid_copy_leaves_only_a_stray_staging_file(
    setup: tuple[PipelineSettings, Warehouse, Expected],
) -> None:
    """Killed while DuckDB writes the staged file: first before any publish, then after one."""
    settings, warehouse, expected = setup
    for occurrence, recovery in ((1, "clear_staging"), (2, "next run")):
        child = AimedProcess(warehouse, COPY_POINT, occurrence)
        child.kill_at_marker()
        assert child.seen[-2].startswith(f"COPY {published_by(occurrence)} ")  # stopped inside this COPY
        staged = child.staged_path()

        # a partially written staged file: rows are in it, the Parquet footer is not
        assert staging_files(warehouse) == [staged] and staged.stat().st_size > 0
        assert not staged.read_bytes().endswith(b"PAR1")
        with pytest.raises(duckdb.Error):
            checksum(f"read_parquet('{staged}')")
        assert PUBLISHED_FILE not in staged.name
        # whatever the COPY wrote stayed in staging: the table shows the last complete version
        assert assert_table_consistent(warehouse, expected) == published_by(occurrence - 1)

        if recovery == "clear_staging":  # clear_staging alone removes it
            warehouse.clear_staging(TABLE, DAY)
            assert staging_files(warehouse) == []
            assert assert_table_consistent(warehouse, expected) == "A"
        else:  # the next run removes it as part of its normal work
            assert_recovers(settings, warehouse, expected)


def test_sigkill_inside_rollback_leaves_one_complete_version(
    setup: tuple[PipelineSettings, Warehouse, Expected],
) -> None:
    """Killed after the kept version is moved back in place, before the directory fsync."""
    settings, warehouse, expected = setup
    child = AimedProcess(warehouse, "rollback:replaced", publishes=2, rollback=True)
    child.kill_at_marker()
    assert child.seen[-2] == "ROLLBACK"
    # published: A (fixture), B, A; the newest kept version (B) is back and no longer kept
    assert [version_of(p, expected) for p in warehouse.versions(TABLE, DAY)] == ["A"]
    assert staging_files(warehouse) == []
    assert assert_table_consistent(warehouse, expected) == "B"
    assert_recovers(settings, warehouse, expected)
