"""The warehouse: Hive-partitioned Parquet published with write-audit-publish, versions, rollback.

Layout under ``<warehouse>``::

    <table>/date=YYYY-MM-DD/part-0.parquet            published (what readers glob)
    _staging/<table>/date=YYYY-MM-DD/<token>.parquet  being written or audited
    _manifests/<table>/date=YYYY-MM-DD.json           counts of the published version (its step writes them)
    _published/<table>/date=YYYY-MM-DD.json           record of the published version
    _versions/<table>/date=YYYY-MM-DD/v000001.parquet a kept version: another name of a replaced file
    _versions/<table>/date=YYYY-MM-DD/v000001.json    its counts, and its record under "_version"
    _published/<table>/date=YYYY-MM-DD.journal        a publish or rollback under way (or cut short)
    _published/<table>/date=YYYY-MM-DD.lock           flock: one publish or rollback of a partition at a time

One file per partition, so publishing is a single ``os.replace``: a reader sees the
old file or the new one, never a mix, and a crash leaves nothing inside a table's
glob but published files.

Versions. Every publish that changes a partition takes the next number (1, 2, ...; never
reused) and writes its record: ``version``, ``sha256``, ``bytes``, ``rows``, ``published_at``
(UTC), ``run_id`` (the Dagster run, when there is one: the ``run_id`` argument or the
:func:`recording_run` block around the step), ``flags`` (the flags active for the build,
the ``flags`` argument; ``{}`` when none are passed) and ``previous`` (the number it
replaced). The replaced version is kept (a hard
link, no copy) with its counts and record; the ``versions_kept`` most recently replaced stay.
:meth:`Warehouse.rollback` puts a kept version back in place (by default ``previous``, one
publish back at a time; or any kept number) and keeps the version it replaces, so a rollback
can itself be undone.

Atomicity. A publish or rollback changes several files: the published file, its manifest,
its record and the kept versions. Under the partition's lock it first writes a journal that
names the whole change (both records, both manifests), then changes the files in a fixed
order in which the ``os.replace`` of the published file is the commit point. A process that
dies leaves the journal; the next operation on that partition (``publish``, ``rollback``,
``read_manifest``, ``write_manifest``, ``versions``, ``history``) finishes the change if the
new file is in place and undoes it if not, before doing anything else. So the published file
is only ever described by its own counts and record (or by no counts yet: a step writes them
after ``publish`` returns), a kept version by its own, a number is never used twice, and no
kept version is a copy of the published one.

Test seam: ``publish``, ``rollback`` and the recovery call ``PUBLISH_STEP_HOOK`` with the
name of each point in ``PUBLISH_STEPS`` they pass, the moments where a crash matters. It
does nothing unless a test replaces it (``tests/scripts/publish_loop.py`` stops its own
process there, so ``tests/test_crash_safety.py`` can SIGKILL it exactly at that point);
package code never sets it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PUBLISHED_FILE = "part-0.parquet"
# COPY options of the tables with wide rows (raw_events, events: a line or its JSON is ~1 KB):
# row groups and their pages are cut by size, so a reader's buffers stay bounded (at 122,880
# rows a row group of raw_events was ~250 MB, and its readers needed one 128 MB allocation
# after another) and the time slices of the events step skip row groups outside their hours.
WIDE_PARQUET = "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE_BYTES '32MB'"
STAGING_DIR = "_staging"
VERSIONS_DIR = "_versions"
MANIFESTS_DIR = "_manifests"
PUBLISHED_DIR = "_published"
RECORD_KEY = "_version"  # where a kept version's manifest holds its record

# Where a crash matters, in the order a publish that replaces a file (or a rollback) passes them.
PUBLISH_STEPS = (
    "publish:staged_synced",  # the staged file is fsynced; nothing else touched
    "publish:journaled",  # the journal names the change; no other file touched yet
    "keep_version:linked",  # the replaced file has its manifest and second name in _versions
    "publish:version_kept",  # ... and its manifest left _manifests; os.replace not done yet
    "publish:replaced",  # os.replace done (the commit point); the new record not written yet
    "publish:recorded",  # the new record is written; old versions not pruned, journal still there
    "publish:done",  # pruned, journal removed; publish is about to return
    "rollback:journaled",  # the journal names the change; no other file touched yet
    "rollback:kept",  # the published version is kept (file, counts, record); os.replace not done yet
    "rollback:replaced",  # the kept version is back in place (the commit point); its counts not yet
    "rollback:recorded",  # manifest and record are the restored version's; it is still in _versions too
    "rollback:done",  # journal removed; rollback is about to return
)


def _no_hook(step: str) -> None:
    """The default ``PUBLISH_STEP_HOOK``: nothing happens at a step."""


# A test seam (see the module docstring): called with each name of PUBLISH_STEPS as it is passed.
PUBLISH_STEP_HOOK: Callable[[str], None] = _no_hook


def _step(name: str) -> None:
    PUBLISH_STEP_HOOK(name)  # looked up at each call, so replacing the module attribute works


_RUN_ID: ContextVar[str | None] = ContextVar("analytics_pipeline_publish_run_id", default=None)


@contextlib.contextmanager
def recording_run(run_id: str | None) -> Iterator[None]:
    """Every publish inside the block records ``run_id`` (unless given its own ``run_id``).

    The Dagster layer wraps each step's call in it with ``context.run_id``, so the stages
    need not pass the run id along.
    """
    token = _RUN_ID.set(run_id)
    try:
        yield
    finally:
        _RUN_ID.reset(token)


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def parquet_rows(path: Path) -> int | None:
    """Rows of a Parquet file, from its footer (None when it is not one)."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except (pa.ArrowException, OSError):
        return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, document: Any, durable: bool = False) -> None:
    """Replace ``path`` with the JSON document in one rename (fsynced first when ``durable``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    with tmp.open("w") as handle:
        handle.write(json.dumps(document, indent=2, sort_keys=True, default=str))
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _version_name(number: int) -> str:
    return f"v{number:06d}"


@dataclass(frozen=True)
class PublishResult:
    path: Path
    bytes_written: int
    sha256: str
    previous_version: Path | None  # where the replaced file was kept, if any
    changed: bool  # False when the new bytes equal the published bytes
    version: int | None = None  # the number of the published version (None: not recorded)


@dataclass(frozen=True)
class VersionInfo:
    """One version of a partition: the published one or a kept one, with its record and counts."""

    number: int
    path: Path  # the published file, or the kept file under _versions
    published: bool  # the version readers see now
    sha256: str | None  # None: kept by an older release without a record
    bytes: int
    rows: int | None
    published_at: str | None  # when it was first published (UTC); a file time for older releases
    run_id: str | None  # the Dagster run that published it, if any
    flags: dict[str, Any]  # the flags active when it was published
    previous: int | None  # the version it replaced when it was published
    kept_at: str | None = None  # when it stopped being the published version
    restored_at: str | None = None  # when a rollback last put it back in place
    counts: dict[str, Any] | None = field(default=None, compare=False)  # its manifest

    @property
    def name(self) -> str:
        return f"v{self.number}"


@dataclass(frozen=True)
class RollbackResult:
    path: Path  # the published file, now holding the restored version
    restored: VersionInfo  # the version put back in place
    replaced: VersionInfo  # the version it replaced, now kept (``rollback --to`` it to undo)


def _info(record: Mapping[str, Any], path: Path, published: bool, counts: Any) -> VersionInfo:
    return VersionInfo(
        number=int(record["version"]),
        path=path,
        published=published,
        sha256=record.get("sha256"),
        bytes=int(record.get("bytes") or 0),
        rows=record.get("rows"),
        published_at=record.get("published_at"),
        run_id=record.get("run_id"),
        flags=dict(record.get("flags") or {}),
        previous=record.get("previous"),
        kept_at=record.get("kept_at"),
        restored_at=record.get("restored_at"),
        counts=counts,
    )


@dataclass(frozen=True)
class Warehouse:
    """Paths and publishing rules for one warehouse directory."""

    root: Path

    def table_glob(self, table: str) -> str:
        return str(self.root / table / "date=*" / "*.parquet")

    def partition_file(self, table: str, day: str) -> Path:
        return self.root / table / f"date={day}" / PUBLISHED_FILE

    def staging_file(self, table: str, day: str, token: str) -> Path:
        path = self.root / STAGING_DIR / table / f"date={day}" / f"{token}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def clear_staging(self, table: str, day: str) -> None:
        """Remove what a killed run left in staging; readers never saw it."""
        shutil.rmtree(self.root / STAGING_DIR / table / f"date={day}", ignore_errors=True)

    def versions_dir(self, table: str, day: str) -> Path:
        return self.root / VERSIONS_DIR / table / f"date={day}"

    def published_days(self, table: str) -> list[str]:
        table_dir = self.root / table
        if not table_dir.exists():
            return []
        return sorted(p.parent.name.removeprefix("date=") for p in table_dir.glob(f"date=*/{PUBLISHED_FILE}"))

    # --- paths of the records, the journal and the lock ------------------------------
    def record_path(self, table: str, day: str) -> Path:
        return self.root / PUBLISHED_DIR / table / f"date={day}.json"

    def _journal_path(self, table: str, day: str) -> Path:
        return self.root / PUBLISHED_DIR / table / f"date={day}.journal"

    def _restoring_path(self, table: str, day: str) -> Path:
        """Where a rollback gives the restored file its new name first (outside every glob)."""
        return self.root / PUBLISHED_DIR / table / f"date={day}.restoring"

    def _kept_file(self, table: str, day: str, number: int) -> Path:
        return self.versions_dir(table, day) / f"{_version_name(number)}.parquet"

    @contextlib.contextmanager
    def _locked(self, table: str, day: str) -> Iterator[None]:
        """The partition's lock (released by the kernel if the process dies), after recovery."""
        path = self.root / PUBLISHED_DIR / table / f"date={day}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._recover(table, day)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _settled(self, table: str, day: str) -> None:
        """Finish or undo a change a dead process left, if there is one (readers call this first)."""
        if self._journal_path(table, day).exists():
            with self._locked(table, day):
                pass

    # --- publish ----------------------------------------------------------------------
    def publish(
        self,
        staged: Path,
        table: str,
        day: str,
        versions_kept: int,
        run_id: str | None = None,
        flags: Mapping[str, Any] | None = None,
        promotion: Mapping[str, Any] | None = None,
    ) -> PublishResult:
        """Atomically move an audited staging file into the table; keep the old one.

        ``run_id`` (default: the one of the enclosing :func:`recording_run`) and ``flags``
        (the flags active for this build; default none) go into the new version's record, and
        ``promotion`` (the canary it came from: who, when, forced) when it is a promoted canary.
        The manifest of the replaced version moves to its kept copy; the step writes the
        new one with :meth:`write_manifest` after this returns.
        """
        target = self.partition_file(table, day)
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged.open("rb") as handle:
            os.fsync(handle.fileno())
        _step("publish:staged_synced")
        new_hash = file_sha256(staged)
        size = staged.stat().st_size
        rows = parquet_rows(staged)
        with self._locked(table, day):
            current = None
            if target.exists():
                current_hash = file_sha256(target)
                if current_hash == new_hash:
                    staged.unlink()
                    record = self._published_record(table, day, current_hash)
                    return PublishResult(
                        target, size, new_hash, None, changed=False, version=record["version"]
                    )
                current = self._published_record(table, day, current_hash)
            number = self._next_number(table, day, current)
            new_record: dict[str, Any] = {
                "version": number,
                "sha256": new_hash,
                "bytes": size,
                "rows": rows,
                "published_at": _now(),
                "run_id": run_id if run_id is not None else _RUN_ID.get(),
                "flags": dict(flags or {}),
                "previous": current["version"] if current else None,
                **({"promotion": dict(promotion)} if promotion else {}),
            }
            old: dict[str, Any] | None = None
            if current is not None:
                old = {"record": {**current, "kept_at": _now()}, "counts": self._counts(table, day)}
            change = {
                "op": "publish",
                "old": old,
                "new": {"record": new_record, "counts": None, "source": str(staged)},
                "versions_kept": versions_kept,
            }
            _write_json(self._journal_path(table, day), change, durable=True)
            _step("publish:journaled")
            if old is not None:
                self._keep(table, day, old)
                _step("keep_version:linked")
                self.manifest_path(table, day).unlink(missing_ok=True)
                _step("publish:version_kept")
            os.replace(staged, target)
            _step("publish:replaced")
            _fsync_dir(target.parent)
            self._finish(table, day, change)
        kept = self._kept_file(table, day, current["version"]) if current else None
        return PublishResult(target, size, new_hash, kept, changed=True, version=number)

    def _keep(self, table: str, day: str, old: Mapping[str, Any]) -> None:
        """Give the published file a second name in _versions, its counts and record first."""
        record = old["record"]
        kept = self._kept_file(table, day, record["version"])
        manifest = {**(old["counts"] or {}), RECORD_KEY: record}
        _write_json(kept.with_suffix(".json"), manifest)
        if not kept.exists():
            os.link(self.partition_file(table, day), kept)  # a second name for the same bytes
        _fsync_dir(kept.parent)

    def _finish(self, table: str, day: str, change: Mapping[str, Any]) -> None:
        """Everything after the commit point; each step may run again after a crash."""
        new = change["new"]
        if change["op"] == "publish":
            _write_json(self.record_path(table, day), new["record"])
            _step("publish:recorded")
            self._prune(table, day, int(change["versions_kept"]))
            self._journal_path(table, day).unlink(missing_ok=True)
            _step("publish:done")
            return
        _write_json(self.record_path(table, day), new["record"])
        if new["counts"] is None:
            self.manifest_path(table, day).unlink(missing_ok=True)
        else:
            _write_json(self.manifest_path(table, day), new["counts"])
        _step("rollback:recorded")
        restored = self._kept_file(table, day, new["record"]["version"])
        restored.unlink(missing_ok=True)  # it is the published version now
        restored.with_suffix(".json").unlink(missing_ok=True)
        self._restoring_path(table, day).unlink(missing_ok=True)
        self._journal_path(table, day).unlink(missing_ok=True)
        _step("rollback:done")

    def _undo(self, table: str, day: str, change: Mapping[str, Any]) -> None:
        """Before the commit point: put back what the change touched; the old file never moved."""
        old = change["old"]
        self._restoring_path(table, day).unlink(missing_ok=True)
        if old is not None:
            kept = self._kept_file(table, day, old["record"]["version"])
            kept.unlink(missing_ok=True)  # only this change kept the published number
            kept.with_suffix(".json").unlink(missing_ok=True)
            if old["counts"] is not None:
                _write_json(self.manifest_path(table, day), old["counts"])
        self._journal_path(table, day).unlink(missing_ok=True)

    def _recover(self, table: str, day: str) -> None:
        """Finish (the new file is in place) or undo (it is not) a change a dead process left."""
        change = _read_json(self._journal_path(table, day))
        if change is None:
            return
        target = self.partition_file(table, day)
        committed = target.exists() and file_sha256(target) == change["new"]["record"]["sha256"]
        if committed:
            self._finish(table, day, change)
        else:
            self._undo(table, day, change)

    def _prune(self, table: str, day: str, versions_kept: int) -> None:
        """Keep the ``versions_kept`` most recently replaced versions; drop stray sidecars."""
        directory = self.versions_dir(table, day)
        if not directory.exists():
            return
        kept = self._kept(table, day)
        order = sorted(kept, key=lambda n: (kept[n][1].get("kept_at") or "", n))
        for number in order[: max(0, len(order) - versions_kept)]:
            kept[number][0].unlink()
            kept[number][0].with_suffix(".json").unlink(missing_ok=True)
        for stray in directory.glob("v*.json"):  # counts of a version whose file is gone
            if not stray.with_suffix(".parquet").exists():
                stray.unlink()
        for tmp in directory.glob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)

    # --- records ------------------------------------------------------------------------
    def _counts(self, table: str, day: str) -> dict[str, Any] | None:
        counts: dict[str, Any] | None = _read_json(self.manifest_path(table, day))
        return counts

    def _numbers(self, table: str, day: str) -> set[int]:
        directory = self.versions_dir(table, day)
        if not directory.exists():
            return set()
        return {int(p.stem[1:]) for p in directory.glob("v*.*") if p.stem[1:].isdigit()}

    def _next_number(self, table: str, day: str, current: Mapping[str, Any] | None) -> int:
        """One more than any number in use: kept files, stray sidecars, the published version."""
        used = self._numbers(table, day) | ({int(current["version"])} if current else set())
        return max(used, default=0) + 1

    def _published_record(self, table: str, day: str, sha256: str | None = None) -> dict[str, Any]:
        """The record of the published file; one made up from the file when it has none.

        A file published by an older release (or put there by hand) has no record, or one
        whose sha256 (when given) is not its own: it is numbered after every kept version.
        """
        record: dict[str, Any] | None = _read_json(self.record_path(table, day))
        if record is not None and (sha256 is None or record.get("sha256") == sha256):
            return record
        target = self.partition_file(table, day)
        kept = self._kept(table, day)
        return {
            "version": max(self._numbers(table, day), default=0) + 1,
            "sha256": sha256 or file_sha256(target),
            "bytes": target.stat().st_size,
            "rows": parquet_rows(target),
            "published_at": _mtime(target),
            "run_id": None,
            "flags": {},
            "previous": max(kept, default=None),
        }

    def _kept(self, table: str, day: str) -> dict[int, tuple[Path, dict[str, Any]]]:
        """Kept versions: number -> (file, record); a record made up for an older release's."""
        directory = self.versions_dir(table, day)
        if not directory.exists():
            return {}
        kept: dict[int, tuple[Path, dict[str, Any]]] = {}
        for path in sorted(directory.glob("v*.parquet")):
            number = int(path.stem[1:])
            manifest = _read_json(path.with_suffix(".json")) or {}
            record = manifest.get(RECORD_KEY) or {
                "version": number,
                "sha256": None,
                "bytes": path.stat().st_size,
                "rows": parquet_rows(path),
                "published_at": _mtime(path),
                "run_id": None,
                "flags": {},
                "previous": number - 1 if number > 1 else None,  # older releases kept them in order
            }
            kept[number] = (path, record)
        return kept

    def _kept_counts(self, path: Path) -> dict[str, Any] | None:
        manifest = _read_json(path.with_suffix(".json"))
        if manifest is None:
            return None
        counts = {k: v for k, v in manifest.items() if k != RECORD_KEY}
        return counts if counts or RECORD_KEY not in manifest else None

    def history(self, table: str, day: str) -> list[VersionInfo]:
        """Every version of the partition, the published one and the kept ones, newest number first."""
        self._settled(table, day)
        out = [
            _info(record, path, False, self._kept_counts(path))
            for path, record in self._kept(table, day).values()
        ]
        target = self.partition_file(table, day)
        if target.exists():
            out.append(_info(self._published_record(table, day), target, True, self._counts(table, day)))
        return sorted(out, key=lambda v: v.number, reverse=True)

    def versions(self, table: str, day: str) -> list[Path]:
        """The kept versions a plain ``rollback`` steps back through, oldest first.

        That is the published version's ``previous``, its ``previous``, and so on while they
        are kept. Versions a rollback replaced are kept too, off this chain (see ``history``).
        """
        self._settled(table, day)
        kept = self._kept(table, day)
        if not self.partition_file(table, day).exists():
            return [kept[n][0] for n in sorted(kept)]
        chain: list[Path] = []
        number = self._published_record(table, day).get("previous")
        while number in kept and len(chain) < len(kept):
            chain.append(kept[number][0])
            number = kept[number][1].get("previous")
        return chain[::-1]

    def published_version(self, table: str, day: str) -> VersionInfo | None:
        """The published version with its record (None: nothing published)."""
        return next((v for v in self.history(table, day) if v.published), None)

    # --- rollback -----------------------------------------------------------------------
    def rollback(self, table: str, day: str, to: int | None = None) -> RollbackResult:
        """Put a kept version back in place with its counts and record; keep the one it replaces.

        ``to``: the version number to restore (default: the version the published one replaced,
        skipping any with the same bytes). Raises FileNotFoundError when there is none.
        """
        target = self.partition_file(table, day)
        with self._locked(table, day):
            if not target.exists():
                raise FileNotFoundError(f"{table} {day} is not published: nothing to roll back")
            current = self._published_record(table, day, file_sha256(target))
            kept = self._kept(table, day)
            number = self._rollback_target(table, day, current, kept, to)
            source, record = kept[number]
            counts = self._kept_counts(source)
            if record.get("sha256") is None:  # kept by an older release: its record is made up
                record = {**record, "sha256": file_sha256(source)}
            if record["sha256"] == current["sha256"]:
                raise FileNotFoundError(
                    f"{table} {day}: v{number} holds the same bytes as the published v{current['version']}"
                )
            now = _now()
            old: dict[str, Any] = {"record": {**current, "kept_at": now}, "counts": self._counts(table, day)}
            restored = {**record, "restored_at": now}
            restored.pop("kept_at", None)
            change = {
                "op": "rollback",
                "old": old,
                "new": {"record": restored, "counts": counts, "source": str(source)},
            }
            _write_json(self._journal_path(table, day), change, durable=True)
            _step("rollback:journaled")
            self._keep(table, day, old)
            self.manifest_path(table, day).unlink(missing_ok=True)
            _step("rollback:kept")
            restoring = self._restoring_path(table, day)
            restoring.unlink(missing_ok=True)
            os.link(source, restoring)  # the kept name stays until the change is finished
            os.replace(restoring, target)
            _step("rollback:replaced")
            _fsync_dir(target.parent)
            self._finish(table, day, change)
        return RollbackResult(
            path=target,
            restored=_info(restored, target, True, counts),
            replaced=_info(
                old["record"], self._kept_file(table, day, current["version"]), False, old["counts"]
            ),
        )

    def _rollback_target(
        self,
        table: str,
        day: str,
        current: Mapping[str, Any],
        kept: Mapping[int, tuple[Path, Mapping[str, Any]]],
        to: int | None,
    ) -> int:
        listed = ", ".join(f"v{n}" for n in sorted(kept)) or "none"
        if to is not None:
            if to == current["version"]:
                raise FileNotFoundError(f"{table} {day}: v{to} is the published version already")
            if to not in kept:
                raise FileNotFoundError(f"{table} {day}: no kept version v{to} (kept: {listed})")
            return to
        number: int | None = current.get("previous")
        seen: set[int] = set()
        while number is not None and number in kept and number not in seen:  # skip copies of the same bytes
            seen.add(number)
            path, record = kept[number]
            if record.get("sha256") != current["sha256"] and not os.path.samefile(
                path, self.partition_file(table, day)
            ):
                return number
            number = record.get("previous")
        hint = f" (kept: {listed}; choose one with --to)" if kept else ""
        raise FileNotFoundError(f"no previous version of {table} for {day} to roll back to{hint}")

    # --- manifests: the counts behind each published partition -------------------
    def manifest_path(self, table: str, day: str) -> Path:
        return self.root / MANIFESTS_DIR / table / f"date={day}.json"

    def write_manifest(self, table: str, day: str, manifest: Mapping[str, Any]) -> None:
        """The counts of the published version (a step calls it right after ``publish``)."""
        with self._locked(table, day):
            _write_json(self.manifest_path(table, day), dict(manifest))

    def read_manifest(self, table: str, day: str) -> dict[str, Any] | None:
        self._settled(table, day)
        return self._counts(table, day)
