"""Building model tables in tests: write `events` partitions directly, then build models."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import yaml

from analytics_pipeline.models.build import ModelResult, build_model
from analytics_pipeline.models.loader import ModelSpec, load_models
from analytics_pipeline.models.plan import affected_partitions
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

MODELS_DIR = PipelineSettings().models_path
SUITES_DIR = PipelineSettings().suites_path
UTC = UTC

EVENTS_DDL = """
CREATE TABLE events (
    message_id VARCHAR, type VARCHAR, event VARCHAR, user_id VARCHAR, anonymous_id VARCHAR,
    timestamp TIMESTAMPTZ, event_date DATE, received_at TIMESTAMPTZ, sent_at TIMESTAMPTZ,
    original_timestamp TIMESTAMPTZ, properties JSON, traits JSON, context JSON,
    schema_version VARCHAR, deliveries BIGINT, arrival_date DATE, file_path VARCHAR, line_number BIGINT
)"""


def event(
    message_id: str,
    at: datetime,
    *,
    type: str = "track",
    event: str | None = "Product Viewed",
    user_id: str | None = None,
    anonymous_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    traits: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One conformed event row (what the events table holds)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return {
        "message_id": message_id,
        "type": type,
        "event": event if type == "track" else None,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "timestamp": at,
        "properties": dict(properties or {}),
        "traits": dict(traits) if traits is not None else None,
    }


def write_events(
    settings: PipelineSettings, rows: Iterable[Mapping[str, Any]], days: Iterable[str] = ()
) -> list[str]:
    """Publish `events` partitions holding ``rows`` (grouped by UTC date) plus empty ``days``.

    Returns the sorted list of days written. Rewriting a day replaces it, as a rebuild would.
    """
    by_day: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[row["timestamp"].astimezone(UTC).date().isoformat()].append(row)
    for day in days:
        by_day.setdefault(day, [])
    warehouse = Warehouse(settings.warehouse_path)
    for day, day_rows in sorted(by_day.items()):
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(EVENTS_DDL)
        for line, row in enumerate(day_rows, start=1):
            con.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, '{}', NULL, 1, ?, 'test', ?)",
                [
                    row["message_id"], row["type"], row.get("event"), row.get("user_id"), row.get("anonymous_id"),
                    row["timestamp"], day, row["timestamp"],
                    json.dumps(row.get("properties") or {}),
                    json.dumps(row["traits"]) if row.get("traits") is not None else None,
                    day, line,
                ],
            )  # fmt: skip
        staged = warehouse.staging_file("events", day, "test")
        con.execute(
            f"COPY (SELECT * FROM events ORDER BY timestamp, message_id) TO '{staged}' (FORMAT parquet)"
        )
        con.close()
        warehouse.publish(staged, "events", day, settings.versions_kept)
    return sorted(by_day)


def suites_without_volume_gates(directory: Path) -> Path:
    """The project's suites with ``volume: false``, for tests of model semantics on arbitrary data.

    Property tests draw days of wildly different sizes (52 events, then none), which the
    volume gate rightly calls a collapse; the gate itself is tested in test_quality_gates.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for suite in SUITES_DIR.glob("*.yml"):
        raw = yaml.safe_load(suite.read_text())
        raw["volume"] = False
        (directory / suite.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return directory


def specs(models_dir: Path = MODELS_DIR) -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_models(models_dir)}


def build_all(
    settings: PipelineSettings, days: Iterable[str], models_dir: Path = MODELS_DIR
) -> dict[str, Any]:
    """Build every model for every day in dependency order (the pipeline's own rebuild plan)."""
    results: dict[str, Any] = {}
    day_list = sorted(days)
    plan = affected_partitions(load_models(models_dir), {"events": set(day_list)}, day_list)
    for spec, day in plan:
        results[f"{spec.name}:{day}" if day else spec.name] = build_model(settings, spec, day)
    return results


def read_table(
    settings: PipelineSettings, table: str, day: str | None = None, order_by: str = "ALL"
) -> list[dict[str, Any]]:
    """Rows of a published table (one partition, or all), as dicts."""
    warehouse = Warehouse(settings.warehouse_path)
    source = f"'{warehouse.partition_file(table, day)}'" if day else f"'{warehouse.table_glob(table)}'"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cursor = con.execute(
        f"SELECT * FROM read_parquet({source}, hive_partitioning = false) ORDER BY {order_by}"
    )
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    con.close()
    return rows


def day_range(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


__all__ = ["ModelResult", "build_all", "day_range", "event", "read_table", "specs", "write_events"]
