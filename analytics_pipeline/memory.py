"""Memory a step frees goes back to the operating system.

All steps of ``analytics-pipeline run`` (and of the benchmark) share one process, so memory a
step frees but the process keeps counts against every later step. Arrow's default pool
(mimalloc) keeps freed pages, and glibc keeps freed heap until it is trimmed: measured, a
3M-row pandas frame (an expectation suite's chunk or a whole partition) left 0.6 GB of RSS after
it was deleted; with Arrow on the system allocator and ``malloc_trim`` after it, 0.28 GB (the
interpreter and its imports).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

import pyarrow as pa


def use_system_allocator() -> None:
    """Arrow allocates from the system allocator, whose freed memory ``release_freed_memory`` returns."""
    pa.set_memory_pool(pa.system_memory_pool())


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


def release_freed_memory() -> None:
    """Give freed heap pages back to the operating system (a no-op where libc has no malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
