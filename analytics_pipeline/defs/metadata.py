"""Materialization metadata, the same way for every step: schema, row count, file, counts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
from dagster import MetadataValue, TableColumn, TableSchema

from analytics_pipeline.warehouse.storage import PublishResult


def column_schema(path: Path, descriptions: Mapping[str, str]) -> TableSchema:
    """The published file's real column types, with descriptions from the code."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{path}', hive_partitioning = false)"
        ).fetchall()
    finally:
        con.close()
    return TableSchema(
        columns=[
            TableColumn(name=str(r[0]), type=str(r[1]), description=descriptions.get(str(r[0]))) for r in rows
        ]
    )


def declared_schema(descriptions: Mapping[str, str]) -> TableSchema:
    """Column names and meanings known before anything runs, for the asset's definition."""
    return TableSchema(
        columns=[
            TableColumn(name=n, type="see materialization", description=d) for n, d in descriptions.items()
        ]
    )


def publish_metadata(
    published: PublishResult, row_count: int, descriptions: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "dagster/row_count": row_count,
        "dagster/column_schema": column_schema(published.path, descriptions),
        "path": MetadataValue.path(str(published.path)),
        "bytes_written": published.bytes_written,
        "sha256": published.sha256,
        "changed": published.changed,
        "previous_version": str(published.previous_version) if published.previous_version else "none",
    }


def count_metadata(counts: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers stay numbers (so the UI can plot them); nested counts become JSON."""
    metadata: dict[str, Any] = {}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            metadata[key] = MetadataValue.json(value) if isinstance(value, dict | list) else str(value)
        else:
            metadata[key] = value
    return metadata
