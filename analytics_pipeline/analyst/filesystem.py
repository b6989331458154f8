"""A read-only file system over the published files of the analyst tables, for DuckDB.

DuckDB's ``allowed_directories`` lets a connection with ``enable_external_access = false``
read *and write* under the directories it names (tested on DuckDB 2.0.1: ``COPY ... TO``
into an allowed directory writes the file). Allowing the warehouse's table folders would
therefore let ``COPY (SELECT ...) TO '<warehouse>/persons/date=.../part-0.parquet'``
overwrite a published partition. So the analyst connection reaches the Parquet files
through this file system instead, registered under ``analyst://``, and only
``analyst://<table>/`` prefixes are allowed: DuckDB refuses every other path (local paths
included), and this file system refuses every write and exposes nothing but

    analyst://<table>/                               a table's folder (allowed tables only)
    analyst://<table>/date=<day>/                    a partition folder
    analyst://<table>/date=<day>/part-0.parquet      its published file

so ``_staging``, ``_versions``, ``_manifests`` and the other tables do not exist here.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem

from analytics_pipeline.warehouse.storage import PUBLISHED_FILE

PROTOCOL = "analyst"
READ_ONLY_MARKER = "the published analyst tables are read-only"
PARTITION_PREFIX = "date="


class _ReadOnlyFile(io.RawIOBase):
    """A read-only, unbuffered handle on a pinned file (DuckDB reads in large blocks itself).

    It has its own descriptor (a ``dup`` of the pin, so it outlives the pin) and its own
    position (``pread``, since duplicated descriptors share one offset). DuckDB's fsspec
    bridge drops handles without calling ``close()``; a plain ``open()`` file would then
    warn "unclosed file" when collected, this one closes quietly (``IOBase`` finalisation).
    """

    def __init__(self, name: str, fd: int) -> None:
        super().__init__()
        self.name = name
        self._fd = os.dup(fd)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        read = os.preadv(self._fd, [buffer], self._position)
        self._position += read
        return read

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class ReadOnlyTablesFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """The published files of ``tables`` under ``root``, read-only, as ``analyst://<table>/...``."""

    protocol = (PROTOCOL,)
    cachable = False  # one instance per connection, never shared through fsspec's instance cache
    root_marker = ""

    def __init__(self, root: Path, tables: Iterable[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).resolve()
        self.tables = frozenset(tables)
        self._pins: dict[str, int] = {}
        self._pins_lock = threading.Lock()

    # --- pins: one version of each file per statement ----------------------------
    def _pin(self, parts: list[str]) -> int:
        """The descriptor every size, time and read of this file uses until :meth:`release`.

        DuckDB asks a file's size (by path) and opens it (by path) in separate calls; a
        partition swapped by ``os.replace`` in between would pair the old size with the new
        bytes (a torn footer read: "invalid TType"). A pinned descriptor keeps one inode.
        """
        key = "/".join(parts)
        with self._pins_lock:
            fd = self._pins.get(key)
            if fd is None:
                try:
                    fd = os.open(self._real(parts), os.O_RDONLY)
                except OSError:
                    raise FileNotFoundError(f"{PROTOCOL}://{key}") from None
                self._pins[key] = fd
            return fd

    def release(self) -> None:
        """Forget the pinned versions: the next statement sees the files published by then."""
        with self._pins_lock:
            pins, self._pins = self._pins, {}
        for fd in pins.values():
            os.close(fd)

    # --- mapping ------------------------------------------------------------------
    def _parts(self, path: str) -> list[str]:
        stripped = self._strip_protocol(str(path)).strip("/")
        if not stripped:
            return []
        parts = stripped.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise FileNotFoundError(f"{path}: not a path of the analyst tables")
        if parts[0] not in self.tables:
            raise FileNotFoundError(f"{path}: {parts[0]!r} is not an analyst table")
        if len(parts) > 3 or (len(parts) >= 2 and not parts[1].startswith(PARTITION_PREFIX)):
            raise FileNotFoundError(f"{path}: not a published partition of {parts[0]}")
        if len(parts) == 3 and parts[2] != PUBLISHED_FILE:
            raise FileNotFoundError(f"{path}: only {PUBLISHED_FILE} is published in a partition")
        return parts

    def _real(self, parts: list[str]) -> Path:
        if not parts:
            return self.root
        real = self.root.joinpath(*parts)
        table_dir = (self.root / parts[0]).resolve()
        if not real.resolve().is_relative_to(table_dir):  # a symlink out of the table folder
            raise FileNotFoundError(f"{'/'.join(parts)}: not a path of the analyst tables")
        return real

    def _entry(self, parts: list[str]) -> dict[str, Any]:
        name = "/".join(parts)
        if not parts:
            return {"name": "", "size": 0, "type": "directory"}
        if len(parts) == 3:  # files only at depth 3, folders above it
            st = os.fstat(self._pin(parts))
            is_dir = False
            if stat.S_ISDIR(st.st_mode):
                raise FileNotFoundError(f"{PROTOCOL}://{name} is not a file")
        else:
            try:
                st = os.stat(self._real(parts))
            except OSError:
                raise FileNotFoundError(f"{PROTOCOL}://{name}") from None
            is_dir = stat.S_ISDIR(st.st_mode)
            if not is_dir:
                raise FileNotFoundError(f"{PROTOCOL}://{name}")
        return {
            "name": name,
            "size": 0 if is_dir else st.st_size,
            "type": "directory" if is_dir else "file",
            "mtime": st.st_mtime,
            "created": st.st_ctime,
        }

    # --- reading ------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._entry(self._parts(path))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        parts = self._parts(path)
        if len(parts) == 3:
            entries = [self._entry(parts)]
        else:
            if not parts:
                names = sorted(self.tables)
            else:
                real = self._real(parts)
                if not real.is_dir():
                    raise FileNotFoundError(f"{PROTOCOL}://{'/'.join(parts)}")
                names = sorted(p.name for p in real.iterdir())
            entries = []
            for name in names:
                try:
                    entries.append(self._entry(self._parts("/".join([*parts, name]))))
                except FileNotFoundError:
                    continue  # not exposed (a stray file, a missing table folder)
        return entries if detail else [e["name"] for e in entries]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            raise PermissionError(
                f"{READ_ONLY_MARKER}: cannot write {PROTOCOL}://{self._strip_protocol(path)}"
            )
        parts = self._parts(path)
        if len(parts) != 3:
            raise FileNotFoundError(f"{PROTOCOL}://{'/'.join(parts)} is not a file")
        return _ReadOnlyFile(f"{PROTOCOL}://{'/'.join(parts)}", self._pin(parts))

    def modified(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["mtime"], tz=UTC)

    def created(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["created"], tz=UTC)

    # --- writing: refused ---------------------------------------------------------
    def _refuse(self, path: Any) -> None:
        raise PermissionError(f"{READ_ONLY_MARKER}: cannot change {path}")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self._refuse(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._refuse(path)

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        self._refuse(path)

    def _rm(self, path: str) -> None:
        self._refuse(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        self._refuse(path)

    def mv(
        self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any
    ) -> None:
        self._refuse(path1)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._refuse(path2)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        self._refuse(path)

    def put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> None:
        self._refuse(rpath)
