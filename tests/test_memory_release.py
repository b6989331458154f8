"""Memory a step frees is returned to the operating system (analytics_pipeline/memory.py).

All steps of a run share one process, so what a step frees but keeps counts against the next.
In a fresh interpreter (pytest's own heap would blur the figures) a pandas frame of 1.5M string
rows is built from Arrow, as an expectation suite's chunk is, deleted, and the freed memory
released; the process must give back most of what the frame took (measured: it keeps 67 of
257 MiB; with Arrow's default mimalloc pool and no release it kept 466 of 579 MiB).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa

import analytics_pipeline  # noqa: F401  (importing the package chooses the allocator)

CHILD = """
import gc, json
import analytics_pipeline
import pyarrow as pa
from analytics_pipeline.memory import release_freed_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

before = rss_mib()
table = pa.table({"message_id": [f"message-{i:012d}-{i * 7919 % 104729:06d}" for i in range(1_500_000)]})
frame = table.to_pandas()
peak = rss_mib()
del table, frame
gc.collect()
unreleased = rss_mib()
release_freed_memory()
print(json.dumps({"before": before, "peak": peak, "unreleased": unreleased, "after": rss_mib()}))
"""


def test_the_package_puts_arrow_on_the_system_allocator() -> None:
    assert pa.default_memory_pool().backend_name == "system"


def test_a_deleted_frame_is_given_back() -> None:
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    taken = figures["peak"] - figures["before"]
    kept = figures["after"] - figures["before"]
    assert taken > 100, figures  # the frame was big enough to see
    assert kept < 0.4 * taken, figures  # measured: 26% kept; 80% with mimalloc and no release
