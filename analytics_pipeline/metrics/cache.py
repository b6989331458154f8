"""The result cache: metric query results keyed by the query and the versions of what it read.

Stored with ``diskcache`` (SQLite, safe across processes). An entry remembers the version
(size, mtime, inode) of every partition its query read; a lookup whose partitions have
since been republished (late data, a rollback) is a miss, and :meth:`ResultCache.sweep`
removes exactly such entries. Hits, misses, entries, bytes, staleness and age are
counted per metric, so ``analytics-pipeline cache stats`` and the ``metrics_cache`` asset
can show them.

Staleness of a served result is now minus the publish time (file mtime) of the newest
partition it read: how old the data behind the number is. An entry is never served once a
newer version of a partition it read exists; ``stale_entries`` counts those not yet swept.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from diskcache import Cache

from analytics_pipeline.warehouse.storage import Warehouse

RESULT_PREFIX = "result:"
STATS_PREFIX = "stats:"
COUNTERS = ("hits", "misses", "invalidated", "staleness_ms_total", "staleness_ms_max")

Versions = dict[str, dict[str, str]]  # table -> partition -> version


def partition_versions(warehouse: Warehouse, partitions: Mapping[str, list[str]]) -> Versions:
    """A version string per partition read: a republish (os.replace) gives a new inode and mtime."""
    versions: Versions = {}
    for table, days in partitions.items():
        versions[table] = {}
        for day in days:
            stat = warehouse.partition_file(table, day).stat()
            versions[table][day] = f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ino}"
    return versions


def _newest_publish_time(versions: Versions) -> float | None:
    """When the newest partition read was written (seconds since the epoch)."""
    times = [int(version.split("-")[1]) / 1e9 for days in versions.values() for version in days.values()]
    return max(times) if times else None


def _serialize(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _deserialize(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(blob).read_all()


@dataclass(frozen=True)
class MetricStats:
    metric: str
    hits: int
    misses: int
    invalidated: int
    entries: int
    bytes: int
    stale_entries: int
    mean_staleness_s: float | None
    max_staleness_s: float | None
    max_entry_age_s: float | None

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "hit_rate": self.hit_rate}


class ResultCache:
    """Query results on disk, with their counters, under ``directory``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._cache = Cache(str(directory))

    def close(self) -> None:
        self._cache.close()

    @staticmethod
    def _key(query_key: str) -> str:
        return RESULT_PREFIX + hashlib.sha256(query_key.encode()).hexdigest()

    def _count(self, metric: str, counter: str, amount: int = 1) -> None:
        self._cache.incr(f"{STATS_PREFIX}{metric}:{counter}", amount)

    def get(
        self, metric: str, query_key: str, versions: Versions, warehouse: Warehouse | None = None
    ) -> pa.Table | None:
        """The cached rows if every partition the query reads is still the version they came from."""
        entry = self._cache.get(self._key(query_key))
        if entry is None or entry["versions"] != versions:
            if entry is not None:
                self._count(metric, "invalidated")
            self._count(metric, "misses")
            return None
        self._count(metric, "hits")
        published = entry.get("newest_publish_time")
        if published is not None:
            staleness_ms = max(0, int((time.time() - published) * 1000))
            self._count(metric, "staleness_ms_total", staleness_ms)
            with self._cache.transact():
                key = f"{STATS_PREFIX}{metric}:staleness_ms_max"
                if staleness_ms > int(self._cache.get(key, 0)):
                    self._cache.set(key, staleness_ms)
        return _deserialize(entry["rows"])

    def put(self, metric: str, query_key: str, versions: Versions, table: pa.Table) -> None:
        rows = _serialize(table)
        self._cache.set(
            self._key(query_key),
            {
                "metric": metric,
                "query": query_key,
                "versions": versions,
                "rows": rows,
                "bytes": len(rows),
                "created_at": time.time(),
                "newest_publish_time": _newest_publish_time(versions),
            },
            tag=metric,
        )

    def _entries(self) -> list[dict[str, Any]]:
        entries = []
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(RESULT_PREFIX):
                entry = self._cache.get(key)
                if entry is not None:
                    entries.append({"key": key, **entry})
        return entries

    def sweep(self, warehouse: Warehouse) -> int:
        """Remove the entries that read a partition republished since; returns how many."""
        removed = 0
        for entry in self._entries():
            current = partition_versions_if_present(warehouse, entry["versions"])
            if current != entry["versions"]:
                self._cache.delete(entry["key"])
                self._count(entry["metric"], "invalidated")
                removed += 1
        return removed

    def clear(self) -> None:
        self._cache.clear()

    def stats(self, warehouse: Warehouse) -> dict[str, MetricStats]:
        """Per metric and ``_total``: counters since the cache was created, entries as they are now."""
        now = time.time()
        entries = self._entries()
        metrics = {e["metric"] for e in entries}
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(STATS_PREFIX):
                metrics.add(key[len(STATS_PREFIX) :].rsplit(":", 1)[0])
        result: dict[str, MetricStats] = {}
        for metric in sorted(metrics):
            mine = [e for e in entries if e["metric"] == metric]
            counters = {c: int(self._cache.get(f"{STATS_PREFIX}{metric}:{c}", 0)) for c in COUNTERS}
            result[metric] = _stats(metric, counters, mine, warehouse, now)
        totals = {
            c: sum(int(self._cache.get(f"{STATS_PREFIX}{m}:{c}", 0)) for m in metrics) for c in COUNTERS
        }
        totals["staleness_ms_max"] = max(
            (int(self._cache.get(f"{STATS_PREFIX}{m}:staleness_ms_max", 0)) for m in metrics), default=0
        )
        result["_total"] = _stats("_total", totals, entries, warehouse, now)
        return result


def partition_versions_if_present(warehouse: Warehouse, versions: Versions) -> Versions:
    """The current versions of the partitions an entry read ('missing' for one no longer published)."""
    current: Versions = {}
    for table, days in versions.items():
        current[table] = {}
        for day in days:
            path = warehouse.partition_file(table, day)
            if path.exists():
                stat = path.stat()
                current[table][day] = f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ino}"
            else:
                current[table][day] = "missing"
    return current


def _stats(
    metric: str, counters: Mapping[str, int], entries: list[dict[str, Any]], warehouse: Warehouse, now: float
) -> MetricStats:
    stale = sum(
        1 for e in entries if partition_versions_if_present(warehouse, e["versions"]) != e["versions"]
    )
    served = counters["hits"]
    return MetricStats(
        metric=metric,
        hits=counters["hits"],
        misses=counters["misses"],
        invalidated=counters["invalidated"],
        entries=len(entries),
        bytes=sum(int(e["bytes"]) for e in entries),
        stale_entries=stale,
        mean_staleness_s=counters["staleness_ms_total"] / served / 1000 if served else None,
        max_staleness_s=counters["staleness_ms_max"] / 1000 if served else None,
        max_entry_age_s=max((now - e["created_at"] for e in entries), default=None),
    )


def cache_files_bytes(directory: Path) -> int:
    """Bytes the cache takes on disk (its SQLite index and value files)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not os.path.islink(p))
