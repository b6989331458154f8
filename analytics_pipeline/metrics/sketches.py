"""``daily_sketches``: mergeable sketches of one day's person-level events (Apache DataSketches).

Built from ``person_events`` (deduplicated, each event with its resolved person), so a
re-delivered event never inflates anything. One row per sketch:

* ``hll_persons``: an HLL sketch of distinct persons, overall (``dimension = 'all'``) and per
  value of ``event``, ``page_path`` and ``library``;
* ``frequent_items``: a frequent-items sketch of page paths (page calls) and of event names
  (track calls), weighted by events;
* ``count_min``: a Count-Min sketch of events per person.

Any date range is answered by merging the days' sketches (:func:`union_persons`,
:func:`merge_frequent_items`, :func:`merge_count_min`), without rescanning events; every
estimate comes with bounds at 2 standard deviations. Items are fed in sorted order, so the
same day gives the same bytes on every rebuild.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasketches import (
    count_min_sketch,
    frequent_items_error_type,
    frequent_strings_sketch,
    hll_sketch,
    hll_union,
    tgt_hll_type,
)

from analytics_pipeline.models.build import ModelResult
from analytics_pipeline.models.loader import ModelSpec, Window
from analytics_pipeline.quality import gate_status
from analytics_pipeline.quality.gates import audit
from analytics_pipeline.quality.outcomes import GateFailed
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

SKETCHES_TABLE = "daily_sketches"
SOURCE_TABLE = "person_events"
HLL_LG_K = 12  # 4096 registers: relative standard error about 1.6%, 2 sigma about 3.3%
HLL_TYPE = tgt_hll_type.HLL_8
FREQUENT_LG_MAX_K = 10  # up to 768 tracked items per sketch
CM_HASHES = count_min_sketch.suggest_num_hashes(0.99)  # 5
CM_BUCKETS = count_min_sketch.suggest_num_buckets(0.001)  # error at most 0.1% of the day's events
BOUND_STD_DEVS = 2
FETCH_ROWS = 100_000  # rows fetched into Python at a time
PERSON_DIMENSIONS = ("event", "page_path", "library")
FREQUENT_DIMENSIONS = {"page_path": "type = 'page'", "event": "type = 'track'"}

SKETCH_COLUMNS = {
    "sketch_date": "The day the sketch summarises (the partition).",
    "kind": "hll_persons, frequent_items or count_min.",
    "dimension": "What the sketch is of: 'all', event, page_path, library (hll); page_path, event (frequent); "
    "person_id (count_min).",
    "value": "The dimension's value a persons sketch is restricted to (NULL for 'all' and other kinds).",
    "sketch": "The serialized sketch (DataSketches binary format).",
    "estimate": "The sketch's estimate for the day: distinct persons (hll) or total events (others).",
    "lower_bound": "Lower bound of the estimate at 2 standard deviations.",
    "upper_bound": "Upper bound of the estimate at 2 standard deviations.",
    "exact_count": "The exact number the sketch estimates for this day (cheap here; unions are where sketches save).",
}

SCHEMA = pa.schema(
    [
        pa.field("sketch_date", pa.date32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("dimension", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("sketch", pa.binary(), nullable=False),
        pa.field("estimate", pa.float64(), nullable=False),
        pa.field("lower_bound", pa.float64(), nullable=False),
        pa.field("upper_bound", pa.float64(), nullable=False),
        pa.field("exact_count", pa.int64(), nullable=False),
    ]
)

# The table joins the rebuild plan like a SQL model: partition D reads person_events D.
SKETCHES_SPEC = ModelSpec(
    name=SKETCHES_TABLE,
    path=Path(__file__),
    sql="",
    description="Mergeable sketches of each day's person-level events: HLL of distinct persons (overall "
    "and per event, page path and library), frequent page paths and events, Count-Min of events per person.",
    grain="one row per (kind, dimension, value) per day",
    partitioned=True,
    upstreams={SOURCE_TABLE: Window(0, 0)},
    columns=SKETCH_COLUMNS,
)


@dataclass(frozen=True)
class Estimate:
    estimate: float
    lower_bound: float
    upper_bound: float


def _hll_row(day: Any, dimension: str, value: str | None, sketch: hll_sketch, exact: int) -> dict[str, Any]:
    return {
        "sketch_date": day,
        "kind": "hll_persons",
        "dimension": dimension,
        "value": value,
        "sketch": sketch.serialize_compact(),
        "estimate": sketch.get_estimate(),
        "lower_bound": sketch.get_lower_bound(BOUND_STD_DEVS),
        "upper_bound": sketch.get_upper_bound(BOUND_STD_DEVS),
        "exact_count": exact,
    }


def _streamed(con: Any, sql: str) -> Iterator[tuple[Any, ...]]:
    """A query's rows in bounded batches: a 10M-event day has millions of (dimension, person) rows."""
    cursor = con.execute(sql)
    while batch := cursor.fetchmany(FETCH_ROWS):
        yield from batch


def _hll_groups(rows: Iterable[tuple[str, str, str]]) -> Iterator[tuple[tuple[str, str], hll_sketch, int]]:
    """(dimension, value, person) rows sorted by the first two -> one HLL sketch and exact count per group."""
    key: tuple[str, str] | None = None
    sketch, members = hll_sketch(HLL_LG_K, HLL_TYPE), 0
    for dimension, value, person in rows:
        if (dimension, value) != key:
            if key is not None:
                yield key, sketch, members
            key, sketch, members = (dimension, value), hll_sketch(HLL_LG_K, HLL_TYPE), 0
        sketch.update(person)
        members += 1
    if key is not None:
        yield key, sketch, members


def sketch_rows(con: Any, relation: str, day: Any) -> list[dict[str, Any]]:
    """Every sketch of one day's rows of ``relation`` (a person_events partition)."""
    rows: list[dict[str, Any]] = []
    everyone = _streamed(con, f"SELECT DISTINCT 'all', NULL, person_id FROM {relation} ORDER BY 3")
    for _, sketch, members in _hll_groups(everyone):
        rows.append(_hll_row(day, "all", None, sketch, members))
    if not rows:  # no events: an empty sketch of nobody
        rows.append(_hll_row(day, "all", None, hll_sketch(HLL_LG_K, HLL_TYPE), 0))
    union = " UNION ALL ".join(
        f"SELECT '{d}' AS dimension, {d} AS value, person_id FROM {relation} WHERE {d} IS NOT NULL"
        for d in PERSON_DIMENSIONS
    )
    grouped = _streamed(con, f"SELECT DISTINCT dimension, value, person_id FROM ({union}) ORDER BY 1, 2, 3")
    for (dimension, value), sketch, members in _hll_groups(grouped):
        rows.append(_hll_row(day, dimension, value, sketch, members))
    for dimension, where in FREQUENT_DIMENSIONS.items():
        counts = con.execute(
            f"SELECT {dimension}, count(*) FROM {relation} WHERE {where} AND {dimension} IS NOT NULL "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        frequent = frequent_strings_sketch(FREQUENT_LG_MAX_K)
        for item, weight in counts:
            frequent.update(str(item), int(weight))
        total = sum(int(w) for _, w in counts)
        rows.append(
            {
                "sketch_date": day, "kind": "frequent_items", "dimension": dimension, "value": None,
                "sketch": frequent.serialize(), "estimate": float(total), "lower_bound": float(total),
                "upper_bound": float(total), "exact_count": total,
            }
        )  # fmt: skip
    count_min = count_min_sketch(CM_HASHES, CM_BUCKETS)
    total = 0
    for person, events in _streamed(con, f"SELECT person_id, count(*) FROM {relation} GROUP BY 1 ORDER BY 1"):
        count_min.update(str(person), float(events))
        total += int(events)
    rows.append(
        {
            "sketch_date": day, "kind": "count_min", "dimension": "person_id", "value": None,
            "sketch": count_min.serialize(), "estimate": float(total), "lower_bound": float(total),
            "upper_bound": float(total), "exact_count": total,
        }
    )  # fmt: skip
    return rows


def build_sketches(settings: PipelineSettings, spec: ModelSpec, day: str | None) -> ModelResult:
    """Build, audit and publish one day of sketches (write-audit-publish, as every model)."""
    if day is None:
        raise ValueError(f"{SKETCHES_TABLE} is partitioned: give a day")
    started = time.perf_counter()
    warehouse = Warehouse(settings.warehouse_path)
    warehouse.clear_staging(SKETCHES_TABLE, day)
    staged = warehouse.staging_file(SKETCHES_TABLE, day, uuid.uuid4().hex)
    source = warehouse.partition_file(SOURCE_TABLE, day)
    if not source.exists():
        raise FileNotFoundError(f"{SKETCHES_TABLE} {day}: {SOURCE_TABLE} {day} is not published yet")
    con = settings.connect()
    try:
        con.execute(
            f"CREATE TEMP VIEW day_events AS SELECT * FROM read_parquet('{source}', hive_partitioning = false)"
        )
        rows = sketch_rows(con, "day_events", date.fromisoformat(day))
    finally:
        con.close()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), staged, compression="zstd")
    gate = audit(warehouse, SKETCHES_TABLE, day, staged, settings.suites_path)
    gate_status.record(warehouse, [SKETCHES_TABLE], day, gate.outcomes)
    if gate.failed:
        raise GateFailed(SKETCHES_TABLE, day, gate.outcomes)
    published = warehouse.publish(staged, SKETCHES_TABLE, day, settings.versions_kept)
    inputs = {SOURCE_TABLE: [day]}
    warehouse.write_manifest(SKETCHES_TABLE, day, {"rows": len(rows), "inputs": inputs})
    return ModelResult(
        SKETCHES_TABLE, day, len(rows), published, inputs, time.perf_counter() - started,
        lineage={c: [(SOURCE_TABLE, "person_id")] for c in ("estimate", "sketch")},
        checks=gate.outcomes, gate_duration_s=gate.duration_s,
    )  # fmt: skip


# --- merging over a range ---------------------------------------------------------------------


def union_persons(blobs: Iterable[bytes]) -> Estimate:
    """Distinct persons over the days whose HLL sketches are given (0 when none)."""
    union = hll_union(HLL_LG_K)
    for blob in blobs:
        union.update(hll_sketch.deserialize(blob))
    result = union.get_result(HLL_TYPE)
    return Estimate(
        result.get_estimate(), result.get_lower_bound(BOUND_STD_DEVS), result.get_upper_bound(BOUND_STD_DEVS)
    )


@dataclass(frozen=True)
class FrequentItem:
    item: str
    estimate: int
    lower_bound: int
    upper_bound: int


def merge_frequent_items(blobs: Iterable[bytes], limit: int | None = None) -> list[FrequentItem]:
    """The items no false negative can hide (upper bound above the sketch's error), most frequent first."""
    merged = frequent_strings_sketch(FREQUENT_LG_MAX_K)
    for blob in blobs:
        merged.merge(frequent_strings_sketch.deserialize(blob))
    items = merged.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES)
    ranked = sorted((FrequentItem(str(i), int(e), int(lb), int(ub)) for i, e, lb, ub in items),
                    key=lambda f: (-f.estimate, f.item))  # fmt: skip
    return ranked[:limit] if limit else ranked


def merge_count_min(blobs: Iterable[bytes]) -> count_min_sketch:
    """One Count-Min sketch of events per person over the days given."""
    merged = count_min_sketch(CM_HASHES, CM_BUCKETS)
    for blob in blobs:
        merged.merge(count_min_sketch.deserialize(blob))
    return merged
