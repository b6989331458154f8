"""Crash safety: a process SIGKILLed while publishing or rolling back never leaves a broken state.

``tests/scripts/publish_loop.py`` stages a ~200k-row Parquet file with DuckDB ``COPY``
and publishes it with ``Warehouse.publish`` (then writes its manifest, as a step does),
alternating two contents (A and B), optionally rolls back, and freezes itself
(``SIGSTOP``) at one aimed point after printing ``STOPPED <point> <k>``: inside the
``COPY`` (a partially written staged file, no footer yet), or at a step of
``storage.PUBLISH_STEPS``, where ``Warehouse.publish``/``rollback`` (and the recovery the
next operation runs) call the test seam ``storage.PUBLISH_STEP_HOOK``. Each test waits
for that line, checks the process is stopped, SIGKILLs it and checks it died by SIGKILL
with that line as its last word, and that the files show the state of that very point.
Then it checks:

* a reader globbing the table (``read_parquet(warehouse.table_glob(table))``) succeeds
  and sees exactly one complete version: the one published before the point, or the
  new one once ``os.replace`` (the commit point) is done (row count and content checksum);
* the table's folder holds nothing but ``date=D/part-0.parquet`` (no temporary or
  partial file is visible to the glob), and every kept version is a readable file;
* through the warehouse's API (whose first access finishes or undoes what the killed
  process left): the published version's manifest and record are its own (or, after a
  commit whose step died before writing its counts, there are no counts: never another
  version's), each kept version's manifest and record are its own, numbers are unique,
  no kept version is another name of the published file and the previous version has other
  bytes (so a rollback always changes something), and no journal, stray sidecar or
  temporary link is left;
* a normal ``ingest_arrival_day``, publish and rollback afterwards succeed, clear what the
  killed process left in ``_staging``, and never reuse a version number.

No assertion depends on timing, and no test passes without its kill landing at its point.
"""

from __future__ import annotations

import json
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
from analytics_pipeline.warehouse.storage import (
    PUBLISH_STEPS,
    PUBLISHED_DIR,
    PUBLISHED_FILE,
    RECORD_KEY,
    STAGING_DIR,
    Warehouse,
    file_sha256,
)
from analytics_pipeline.warehouse.tables import RAW_EVENTS

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from publish_loop import COPY_POINT, checksum_sql, manifest_of, version_sql  # noqa: E402

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
        recover: bool = False,
    ) -> None:
        self.marker = f"STOPPED {point} {occurrence}"
        command = [
            sys.executable, str(SCRIPT), str(warehouse.root), TABLE, DAY,
            "--stop-at", point, "--occurrence", str(occurrence), "--publishes", str(publishes),
            "--rows", str(ROWS), "--start", "B", "--versions-kept", str(VERSIONS_KEPT),
        ] + (["--rollback"] if rollback else []) + (["--recover"] if recover else [])  # fmt: skip
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
    """A normal, uninterrupted stage + publish + manifest in this process."""
    staged = warehouse.staging_file(TABLE, DAY, uuid.uuid4().hex)
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({version_sql(version, ROWS)}) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()
    warehouse.publish(staged, TABLE, DAY, versions_kept=VERSIONS_KEPT)
    warehouse.write_manifest(TABLE, DAY, manifest_of(version, ROWS))


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
    numbers_before = {v.number for v in warehouse.history(TABLE, DAY)}
    assert_normal_run_succeeds(settings, warehouse)
    publish_version(warehouse, "A")  # and a normal publish
    assert expected[read_table(warehouse)] == "A"
    assert files_under(warehouse.root / TABLE) == [warehouse.partition_file(TABLE, DAY)]
    assert staging_files(warehouse) == []
    # two new versions, numbered after every number used before (no number is used twice)
    published = warehouse.published_version(TABLE, DAY)
    assert published is not None and published.number == max(numbers_before) + 2
    assert warehouse.read_manifest(TABLE, DAY) == manifest_of("A", ROWS)
    # and a rollback: the ingested version comes back, with its own counts
    result = warehouse.rollback(TABLE, DAY)
    assert result.restored.number == published.number - 1 and result.replaced.number == published.number
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT count(*) FROM read_parquet('{warehouse.table_glob(TABLE)}')").fetchone()
    finally:
        con.close()
    assert row is not None and row[0] == result.restored.rows  # the ingested rows, neither A nor B
    assert (warehouse.read_manifest(TABLE, DAY) or {}).get("raw_events") == result.restored.rows


def assert_consistent(warehouse: Warehouse, expected: Expected, counts_may_be_missing: bool = False) -> str:
    """What the API shows (its first access settles a cut-short change): each version is described
    by its own manifest and record, numbers are unique, no kept version is the published file and
    the previous one (what ``rollback`` restores) has other bytes, and nothing of the change is
    left behind. Returns the published content."""
    versions = warehouse.history(TABLE, DAY)
    published = [v for v in versions if v.published]
    assert len(published) == 1, versions
    numbers = [v.number for v in versions]
    assert len(numbers) == len(set(numbers)), numbers
    content = version_of(published[0].path, expected)
    assert published[0].sha256 == file_sha256(published[0].path)
    manifest = warehouse.read_manifest(TABLE, DAY)
    if manifest is None:  # committed, and the step died before writing its counts: unknown, never wrong
        assert counts_may_be_missing, "the published version lost its counts"
    else:
        assert manifest == manifest_of(content, ROWS), f"published {content} is described by {manifest}"
    for kept in (v for v in versions if not v.published):
        kept_content = version_of(kept.path, expected)
        assert kept.sha256 == file_sha256(kept.path)
        assert not os.path.samefile(kept.path, published[0].path), "a kept name of the published file"
        assert kept.counts == manifest_of(kept_content, ROWS), (
            f"kept {kept_content} is described by {kept.counts}"
        )
        sidecar = json.loads(kept.path.with_suffix(".json").read_text())
        assert sidecar[RECORD_KEY]["version"] == kept.number
    previous = warehouse.versions(TABLE, DAY)  # what a plain rollback restores differs from what is published
    assert not previous or file_sha256(previous[-1]) != published[0].sha256
    versions_dir = warehouse.versions_dir(TABLE, DAY)
    assert sorted(p.name for p in files_under(versions_dir)) == sorted(
        f"v{v.number:06d}.{ext}" for v in versions if not v.published for ext in ("json", "parquet")
    ), "a stray file in _versions"
    assert sorted(p.name for p in files_under(warehouse.root / PUBLISHED_DIR / TABLE)) == [
        f"date={DAY}.json",
        f"date={DAY}.lock",
    ], "a journal or a temporary link was left behind"
    return content


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
    replaced: bool  # whether the new file is in place at that point (the commit point passed)

    @property
    def visible(self) -> str:
        return published_by(self.occurrence if self.replaced else self.occurrence - 1)


PUBLISH_WINDOWS = [
    Window("publish:staged_synced", 1, replaced=False),
    Window("publish:journaled", 1, replaced=False),
    Window("keep_version:linked", 4, replaced=False),  # 3 versions kept already: a 4th, not pruned
    Window("publish:version_kept", 1, replaced=False),
    Window("publish:replaced", 2, replaced=True),
    Window("publish:recorded", 2, replaced=True),
    Window("publish:done", 1, replaced=True),
]

# the child publishes B then A over the fixture's A (v1): v3 (A) published, v1 (A) and v2 (B)
# kept; its rollback puts v2 (B) back and keeps v3. Before the commit point the recovery undoes
# the rollback (v3 stays published), after it the recovery finishes it (v2 is published).
ROLLBACK_WINDOWS = [
    Window("rollback:journaled", 1, replaced=False),
    Window("rollback:kept", 1, replaced=False),
    Window("rollback:replaced", 1, replaced=True),
    Window("rollback:recorded", 1, replaced=True),
    Window("rollback:done", 1, replaced=True),
]


def journal(warehouse: Warehouse) -> Path:
    return warehouse.root / PUBLISHED_DIR / TABLE / f"date={DAY}.journal"


def test_every_publish_step_has_an_aimed_kill() -> None:
    assert [w.step for w in PUBLISH_WINDOWS + ROLLBACK_WINDOWS] == list(PUBLISH_STEPS)


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

    # the files are in the state of that very point (read directly: nothing has recovered yet)
    kept = sorted(warehouse.versions_dir(TABLE, DAY).glob("v*.parquet"))
    published = warehouse.partition_file(TABLE, DAY)
    manifest = json.loads(m.read_text()) if (m := warehouse.manifest_path(TABLE, DAY)).exists() else None
    assert journal(warehouse).exists() == (window.step not in ("publish:staged_synced", "publish:done"))
    if window.replaced:
        assert not staged.exists() and staging_files(warehouse) == []
        assert kept and version_of(kept[-1], expected) == published_by(window.occurrence - 1)
        assert manifest is None  # the replaced version took its counts along; the new ones are not written
    else:  # the complete, fsynced new file still waits in staging
        assert staging_files(warehouse) == [staged]
        assert version_of(staged, expected) == new_version
    if window.step in ("keep_version:linked", "publish:version_kept"):
        assert os.path.samefile(kept[-1], published)  # the old version got its second name (bug 2's state)
        assert len(kept) == (window.occurrence if window.step == "keep_version:linked" else 1)
        kept_manifest = json.loads(kept[-1].with_suffix(".json").read_text())
        assert kept_manifest["content"] == published_by(window.occurrence - 1)  # its own counts
        assert (manifest is None) == (window.step == "publish:version_kept")
    if window.step == "keep_version:linked":
        assert len(kept) == VERSIONS_KEPT + 1  # killed before pruning

    assert assert_table_consistent(warehouse, expected) == window.visible
    # the recovery: undone before the commit point, finished after it
    assert assert_consistent(warehouse, expected, counts_may_be_missing=window.replaced) == window.visible
    if not window.replaced and window.occurrence > 1:  # bug 2: the kept copy of the published file is gone
        previous = warehouse.rollback(TABLE, DAY)  # so a rollback changes what readers see
        assert read_table(warehouse) != checksum(f"read_parquet('{previous.replaced.path}')")
    assert_recovers(settings, warehouse, expected)


@pytest.mark.parametrize("window", ROLLBACK_WINDOWS, ids=lambda w: w.step)
def test_sigkill_at_a_rollback_step_leaves_one_complete_version(
    setup: tuple[PipelineSettings, Warehouse, Expected], window: Window
) -> None:
    settings, warehouse, expected = setup
    child = AimedProcess(warehouse, window.step, publishes=2, rollback=True)
    child.kill_at_marker()
    assert child.seen[-2] == "ROLLBACK"
    assert staging_files(warehouse) == []

    # the files at that point (nothing has recovered yet)
    kept = {
        int(p.stem[1:]): version_of(p, expected)
        for p in warehouse.versions_dir(TABLE, DAY).glob("v*.parquet")
    }
    manifest = json.loads(m.read_text()) if (m := warehouse.manifest_path(TABLE, DAY)).exists() else None
    assert journal(warehouse).exists() == (window.step != "rollback:done")
    if window.step == "rollback:journaled":
        assert kept == {1: "A", 2: "B"} and manifest == manifest_of("A", ROWS)
    if window.step == "rollback:kept":  # v3 kept with its counts; v2 not back yet
        assert kept == {1: "A", 2: "B", 3: "A"} and manifest is None
    if window.step == "rollback:replaced":  # bug 1's point: B is back, and no counts claim it is A
        assert kept == {1: "A", 2: "B", 3: "A"} and manifest is None
    if window.step in ("rollback:recorded", "rollback:done"):
        assert manifest == manifest_of("B", ROWS)
        assert kept == ({1: "A", 2: "B", 3: "A"} if window.step == "rollback:recorded" else {1: "A", 3: "A"})

    assert assert_table_consistent(warehouse, expected) == ("B" if window.replaced else "A")
    assert assert_consistent(warehouse, expected) == ("B" if window.replaced else "A")
    published = warehouse.published_version(TABLE, DAY)
    assert published is not None
    if window.replaced:  # finished: v2 published with its counts, v3 kept, a further rollback steps to v1
        assert published.number == 2 and published.restored_at
        assert {v.number for v in warehouse.history(TABLE, DAY)} == {1, 2, 3}
        assert [p.name for p in warehouse.versions(TABLE, DAY)] == ["v000001.parquet"]
    else:  # undone: as before the rollback, which can simply run again
        assert published.number == 3 and not published.restored_at
        assert warehouse.rollback(TABLE, DAY).restored.number == 2
        assert assert_consistent(warehouse, expected) == "B"
    assert_recovers(settings, warehouse, expected)


def test_sigkill_during_the_recovery_of_a_cut_short_rollback(
    setup: tuple[PipelineSettings, Warehouse, Expected],
) -> None:
    """The recovery is itself crash-safe: killed while finishing a rollback, the next access finishes it."""
    settings, warehouse, expected = setup
    AimedProcess(warehouse, "rollback:replaced", publishes=2, rollback=True).kill_at_marker()
    recovering = AimedProcess(warehouse, "rollback:recorded", recover=True)
    recovering.kill_at_marker()
    assert recovering.seen[-2] == "RECOVER" and journal(warehouse).exists()
    assert assert_table_consistent(warehouse, expected) == "B"
    assert assert_consistent(warehouse, expected) == "B"
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
