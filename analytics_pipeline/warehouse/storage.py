"""The warehouse: Hive-partitioned Parquet published with write-audit-publish.

Layout under ``<warehouse>``::

    <table>/date=YYYY-MM-DD/part-0.parquet        published (what readers glob)
    _staging/<table>/date=YYYY-MM-DD/<token>.parquet  being written or audited
    _versions/<table>/date=YYYY-MM-DD/v000001.parquet previous versions, for rollback
    _manifests/<table>/date=YYYY-MM-DD.json        counts of the published version

One file per partition, so publishing is a single ``os.replace``: a reader sees the
old file or the new one, never a mix, and a crash leaves nothing inside a table's
glob but published files.

Test seam: ``publish``, ``_keep_version`` and ``rollback`` call ``PUBLISH_STEP_HOOK``
with the name of each point in ``PUBLISH_STEPS`` they pass, the moments where a crash
matters. It does nothing unless a test replaces it (``tests/scripts/publish_loop.py``
stops its own process there, so ``tests/test_crash_safety.py`` can SIGKILL it exactly
at that point); package code never sets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PUBLISHED_FILE = "part-0.parquet"
STAGING_DIR = "_staging"
VERSIONS_DIR = "_versions"
MANIFESTS_DIR = "_manifests"

# Where a crash matters, in the order a publish that replaces a file passes them.
PUBLISH_STEPS = (
    "publish:staged_synced",  # the staged file is fsynced; the table is untouched
    "keep_version:linked",  # the published file has a second name in _versions; old ones not pruned
    "publish:version_kept",  # the replaced file is kept (pruned); os.replace not done yet
    "publish:replaced",  # os.replace done; the table directory not fsynced yet
    "publish:done",  # the directory is fsynced; publish is about to return
    "rollback:replaced",  # a kept version is back in place; directory and manifest not updated yet
)


def _no_hook(step: str) -> None:
    """The default ``PUBLISH_STEP_HOOK``: nothing happens at a step."""


# A test seam (see the module docstring): called with each name of PUBLISH_STEPS as it is passed.
PUBLISH_STEP_HOOK: Callable[[str], None] = _no_hook


def _step(name: str) -> None:
    PUBLISH_STEP_HOOK(name)  # looked up at each call, so replacing the module attribute works


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PublishResult:
    path: Path
    bytes_written: int
    sha256: str
    previous_version: Path | None  # where the replaced file was kept, if any
    changed: bool  # False when the new bytes equal the published bytes


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

    def versions(self, table: str, day: str) -> list[Path]:
        directory = self.versions_dir(table, day)
        return sorted(directory.glob("v*.parquet")) if directory.exists() else []

    def published_days(self, table: str) -> list[str]:
        table_dir = self.root / table
        if not table_dir.exists():
            return []
        return sorted(p.parent.name.removeprefix("date=") for p in table_dir.glob(f"date=*/{PUBLISHED_FILE}"))

    def publish(self, staged: Path, table: str, day: str, versions_kept: int) -> PublishResult:
        """Atomically move an audited staging file into the table; keep the old one."""
        target = self.partition_file(table, day)
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged.open("rb") as handle:
            os.fsync(handle.fileno())
        _step("publish:staged_synced")
        new_hash = file_sha256(staged)
        size = staged.stat().st_size
        kept: Path | None = None
        if target.exists():
            if file_sha256(target) == new_hash:
                staged.unlink()
                return PublishResult(target, size, new_hash, None, changed=False)
            kept = self._keep_version(target, table, day, versions_kept)
            _step("publish:version_kept")
        os.replace(staged, target)
        _step("publish:replaced")
        _fsync_dir(target.parent)
        _step("publish:done")
        return PublishResult(target, size, new_hash, kept, changed=True)

    def _keep_version(self, current: Path, table: str, day: str, versions_kept: int) -> Path:
        directory = self.versions_dir(table, day)
        directory.mkdir(parents=True, exist_ok=True)
        existing = self.versions(table, day)
        number = int(existing[-1].stem[1:]) + 1 if existing else 1
        kept = directory / f"v{number:06d}.parquet"
        manifest = self.manifest_path(table, day)
        if manifest.exists():  # the counts of the replaced version stay with it, for rollback
            shutil.copyfile(manifest, kept.with_suffix(".json"))
        os.link(current, kept)  # a second name for the same bytes: cheap and atomic
        _step("keep_version:linked")
        for old in self.versions(table, day)[:-versions_kept]:
            old.unlink()
            old.with_suffix(".json").unlink(missing_ok=True)
        return kept

    def rollback(self, table: str, day: str) -> Path:
        """Put the newest kept version back in place (it stops being a kept version)."""
        versions = self.versions(table, day)
        if not versions:
            raise FileNotFoundError(f"no previous version of {table} for {day} to roll back to")
        target = self.partition_file(table, day)
        kept_manifest = versions[-1].with_suffix(".json")
        os.replace(versions[-1], target)
        _step("rollback:replaced")
        _fsync_dir(target.parent)
        manifest = self.manifest_path(table, day)
        if kept_manifest.exists():
            os.replace(kept_manifest, manifest)
        else:  # kept without its counts: no manifest is better than the replaced version's
            manifest.unlink(missing_ok=True)
        return target

    # --- manifests: the counts behind each published partition -------------------
    def manifest_path(self, table: str, day: str) -> Path:
        return self.root / MANIFESTS_DIR / table / f"date={day}.json"

    def write_manifest(self, table: str, day: str, manifest: Mapping[str, Any]) -> None:
        path = self.manifest_path(table, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)

    def read_manifest(self, table: str, day: str) -> dict[str, Any] | None:
        path = self.manifest_path(table, day)
        if not path.exists():
            return None
        result: dict[str, Any] = json.loads(path.read_text())
        return result
