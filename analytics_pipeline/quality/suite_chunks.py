"""A suite on a staged file, in bounded memory: GX validates a big file a chunk at a time.

A file of up to ``SUITE_CHUNK_ROWS`` rows is validated as one pandas frame (suites.py). One
frame of a 10M-event day is about 2 GB before GX's own intermediates, so a bigger file is
split, per expectation, in the way that keeps GX's answer the same:

- rows: GX map expectations that judge each row on its own (not null, in set, between,
  regex, column pair and multicolumn ones) run on consecutive row chunks of the file;
- keys: uniqueness expectations run on buckets of rows by a hash of their key columns, so
  that the copies of a duplicate share a bucket wherever they are in the file;
- whole: every other expectation still reads its columns whole, as one frame: the aggregate
  ones (row count, mean, max, distinct values, table columns...) and the map expectations
  that look beyond their row (order, z-scores and outliers, dtype). Only these grow in
  memory with the partition; events.yml has none.

GX evaluates every chunk; their results are merged as GX would have computed them on the
whole file (``merge``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
import pyarrow.parquet as pq
from great_expectations.expectations.expectation import (
    ColumnMapExpectation,
    ColumnPairMapExpectation,
    MulticolumnMapExpectation,
    _mostly_success,
)
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from analytics_pipeline.quality.outcomes import CheckOutcome
from analytics_pipeline.quality.suites import (
    PARTIAL_UNEXPECTED,
    AssetSuite,
    Expectation,
    ExpectationResult,
    columns_needed,
    outcome,
    present_columns,
    read_frame,
    run_suite,
    validate_frame,
)

SUITE_CHUNK_ROWS = 500_000  # rows per pandas frame given to GX (about 0.35 GB); a bigger file is chunked
UNIQUENESS = {
    "expect_column_values_to_be_unique",
    "expect_compound_columns_to_be_unique",
    "expect_multicolumn_values_to_be_unique",
}
# map expectations whose answer for a row depends on other rows or on the column's dtype
# (an int column is int64 in a chunk without nulls, float64 in one with)
BEYOND_THE_ROW = {
    "expect_column_values_to_be_increasing",
    "expect_column_values_to_be_decreasing",
    "expect_column_value_z_scores_to_be_less_than",
    "expect_column_values_to_not_be_outliers",
    "expect_column_values_to_be_of_type",
    "expect_column_values_to_be_in_type_list",
}
MAP_EXPECTATIONS = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
Kind = Literal["rows", "keys", "whole"]


def kind(expectation: Expectation, path: Path) -> Kind:
    if expectation.type in UNIQUENESS:
        keys = key_columns(expectation)
        # a missing key column is GX's to report ("could not be evaluated"), as on one frame
        return "keys" if present_columns(path, keys) == keys else "whole"
    if expectation.type in BEYOND_THE_ROW:
        return "whole"
    gx_expectation = ExpectationConfiguration(type=expectation.type, kwargs=dict(expectation.kwargs))
    return "rows" if isinstance(gx_expectation.to_domain_obj(), MAP_EXPECTATIONS) else "whole"


def key_columns(expectation: Expectation) -> list[str]:
    kwargs = expectation.kwargs
    return [str(kwargs["column"])] if "column" in kwargs else [str(c) for c in kwargs["column_list"]]


def row_chunks(path: Path, columns: list[str] | None, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Consecutive rows of the file, at most ``chunk_rows`` at a time.

    Without ``pre_buffer=False`` the reader keeps every column chunk it has read until it is
    done: memory grows with the file. An integer column with nulls in the file is float64 in
    one frame but int64 in a chunk without nulls: same answers, but partial_unexpected_list
    may then show 2 where one frame shows 2.0.
    """
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=chunk_rows, columns=columns):
        yield batch.to_pandas()


def key_buckets(path: Path, keys: Sequence[str], rows: int, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The key columns, one hash bucket of about ``chunk_rows`` rows at a time: rows with equal
    keys are in the same bucket. One scan of the key columns per bucket (DuckDB, in file order)."""
    buckets = math.ceil(rows / chunk_rows)
    columns = ", ".join('"' + k.replace('"', '""') + '"' for k in keys)
    with duckdb.connect(config={"memory_limit": "1GB"}) as con:  # a scan needs far less
        con.execute("SET TimeZone = 'UTC'")
        for bucket in range(buckets):  # integers inline: a parameter makes DuckDB's modulo 5x slower
            query = f"SELECT {columns} FROM read_parquet(?) WHERE hash({columns}) % {buckets} = {bucket}"
            yield con.sql(query, params=[str(path)]).to_arrow_table().to_pandas()


def merge(expectation: Expectation, chunks: list[ExpectationResult]) -> ExpectationResult:
    """One map expectation's result on the whole file from its results on the chunks.

    Counts are summed. unexpected_percent is GX's: of the non-missing rows when GX reported
    ``missing_count`` (it ignores nulls), else of every row. Without ``mostly`` the file
    passes when every chunk passes; with it, GX's rule is applied to the summed counts.
    partial_unexpected_list is the first values in chunk order (file order for row chunks,
    bucket order for uniqueness: not the order of the whole-frame path).
    """
    failed = next((c for c in chunks if c.error), None)
    if failed is not None:
        return failed
    element = sum(c.details["element_count"] for c in chunks)
    unexpected = sum(c.details["unexpected_count"] for c in chunks)
    missing = sum(c.details.get("missing_count", 0) for c in chunks)
    considered = element - missing
    if "mostly" not in expectation.kwargs:
        success = all(c.success for c in chunks)
    else:
        success = considered == 0 or _mostly_success(
            considered, unexpected, chunks[0].evaluated_kwargs["mostly"]
        )
    partial = chain.from_iterable(c.details.get("partial_unexpected_list", []) for c in chunks)
    details = {
        "element_count": element,
        "unexpected_count": unexpected,
        "unexpected_percent": unexpected / considered * 100 if considered else None,
        "partial_unexpected_list": list(islice(partial, PARTIAL_UNEXPECTED)),
    }
    return ExpectationResult(success, details, chunks[0].evaluated_kwargs)


def validate_file(
    suite: AssetSuite,
    path: Path,
    parameters: Mapping[str, Any] | None = None,
    chunk_rows: int | None = None,
) -> list[CheckOutcome]:
    """The suite's outcomes on a staged file, in the suite's order (chunked above ``chunk_rows``)."""
    if not suite.expectations:
        return []
    chunk_rows = chunk_rows or SUITE_CHUNK_ROWS
    rows = pq.read_metadata(path).num_rows
    if rows <= chunk_rows:
        return run_suite(suite, read_frame(path, columns_needed(suite.expectations)), parameters)
    by_kind: dict[Kind, list[Expectation]] = {"rows": [], "keys": [], "whole": []}
    for expectation in suite.expectations:
        by_kind[kind(expectation, path)].append(expectation)
    results: dict[str, ExpectationResult] = {}
    if whole := by_kind["whole"]:
        results |= validate_frame(whole, read_frame(path, columns_needed(whole)), parameters)
    if mapped := by_kind["rows"]:
        columns = present_columns(path, columns_needed(mapped))
        per_chunk = [
            validate_frame(mapped, frame, parameters) for frame in row_chunks(path, columns, chunk_rows)
        ]
        results |= {e.name: merge(e, [chunk[e.name] for chunk in per_chunk]) for e in mapped}
    for expectation in by_kind["keys"]:
        buckets = key_buckets(path, key_columns(expectation), rows, chunk_rows)
        per_bucket = [validate_frame([expectation], frame, parameters)[expectation.name] for frame in buckets]
        results[expectation.name] = merge(expectation, per_bucket)
    return [outcome(e, results[e.name]) for e in suite.expectations]
