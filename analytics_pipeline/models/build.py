"""Build one partition of a modeled table: views over its upstream windows, the SQL, audit, publish.

While partition D is built each upstream is a view over exactly the partitions its window
names. The SQL reads the partition date with ``getvariable('partition_date')`` and the
published days of an upstream's window with ``getvariable('<upstream>_partitions')`` (a
DATE list). Seed tables (``funnel_steps`` from ``assets/funnels.yml``) are registered as
views. The staged result passes the model's gates before it is published.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage

from analytics_pipeline.models.flags import Flag, active_flags, build_inputs, flag_record, project_flags
from analytics_pipeline.models.funnels import funnel_steps_table
from analytics_pipeline.models.loader import ModelError, ModelSpec, Window
from analytics_pipeline.quality import gate_status
from analytics_pipeline.quality.gates import audit
from analytics_pipeline.quality.outcomes import CheckOutcome, GateFailed
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import PublishResult, Warehouse

# seed table -> how it is built from the project's files
SEED_TABLES: dict[str, Callable[[PipelineSettings], pa.Table]] = {
    "funnel_steps": lambda settings: funnel_steps_table(settings.funnels_path),
}
DEFAULT_CONVERSION_EVENTS = ("Order Completed", "Signed Up")
UNPARTITIONED = "all"


@dataclass
class ModelResult:
    name: str
    day: str | None
    rows: int
    published: PublishResult
    inputs: dict[str, list[str]]
    duration_s: float
    lineage: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    gate_duration_s: float = 0.0  # of duration_s, spent in the audit before publishing
    flags: dict[str, Any] = field(default_factory=dict)  # the feature flags active for this partition


_LINEAGE_CACHE: dict[str, dict[str, list[tuple[str, str]]]] = {}


def column_lineage(
    spec: ModelSpec, output_columns: list[str], schema: dict[str, dict[str, str]]
) -> dict[str, list[tuple[str, str]]]:
    """Lineage per model, SQL and input schema (cached: tracing costs ~0.3 s a build)."""
    key = repr(
        (spec.name, spec.sql, output_columns, sorted((t, sorted(c.items())) for t, c in schema.items()))
    )
    if key not in _LINEAGE_CACHE:
        _LINEAGE_CACHE[key] = _trace_lineage(spec, output_columns, schema)
    return _LINEAGE_CACHE[key]


def _trace_lineage(
    spec: ModelSpec, output_columns: list[str], schema: dict[str, dict[str, str]]
) -> dict[str, list[tuple[str, str]]]:
    """For each output column, the upstream (table, column) pairs it is computed from.

    Columns sqlglot cannot trace (e.g. from ``getvariable``) map to an empty list.
    """
    result: dict[str, list[tuple[str, str]]] = {}
    for column in output_columns:
        try:
            node = lineage(column, spec.sql, schema=schema, dialect="duckdb")
        except (SqlglotError, KeyError, ValueError):
            result[column] = []
            continue
        sources = {
            (n.expression.name, n.name.split(".")[-1])
            for n in node.walk()
            if isinstance(n.expression, exp.Table)
        }
        result[column] = sorted(sources)
    return result


def _view_sql(
    warehouse: Warehouse, table: str, window: Window, day: str | None, spec: ModelSpec
) -> tuple[str, list[str]]:
    """A view over exactly the partitions the window names (an empty typed view if none exist)."""
    published = warehouse.published_days(table)
    if window.latest:
        chosen = [d for d in published if day is None or d <= day][-1:]
    elif day is None:
        chosen = published
    else:
        wanted = set(window.days(day))
        chosen = [d for d in published if d in wanted]
    files = [str(warehouse.partition_file(table, d)) for d in chosen]
    if files:
        listed = ", ".join(f"'{f}'" for f in files)
        return (
            f"SELECT * FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false)",
            chosen,
        )
    schema_file = _any_partition(warehouse, table)
    if schema_file is None:
        raise ModelError(f"{spec.name}: upstream {table} has no published partition yet")
    return f"SELECT * FROM read_parquet('{schema_file}', hive_partitioning = false) WHERE false", []


def _any_partition(warehouse: Warehouse, table: str) -> Path | None:
    days = warehouse.published_days(table)
    return warehouse.partition_file(table, days[-1]) if days else None


def build_model(
    settings: PipelineSettings, spec: ModelSpec, day: str | None, flags: Mapping[str, Flag] | None = None
) -> ModelResult:
    """Build one partition (or the whole unpartitioned table), audit it, publish it atomically.

    ``flags`` replaces the flags file's flags (a canary tries one switched on).
    Raises GateFailed (and publishes nothing) when an ERROR check of its suite fails.
    """
    started = time.perf_counter()
    warehouse = Warehouse(settings.warehouse_path)
    partition = day if spec.partitioned and day else UNPARTITIONED
    token = uuid.uuid4().hex
    warehouse.clear_staging(spec.name, partition)
    staged = warehouse.staging_file(spec.name, partition, token)
    inputs: dict[str, list[str]] = {}
    if flags is None:
        flags = project_flags(settings.flags_path, settings.models_path)
    active = active_flags(flags, spec.name, day)
    con = settings.connect()
    try:
        for seed in spec.seeds:
            con.register(seed, SEED_TABLES[seed](settings))
        for table, window in spec.upstreams.items():
            if table == spec.name and day and not [d for d in warehouse.published_days(table) if d < day]:
                # the first partition of a self-dependent model starts from an empty state
                typed = ", ".join(f'"{c}" {t}' for c, t in spec.column_types.items())
                con.execute(f'CREATE TEMP TABLE "{table}" ({typed})')
                con.execute(f"SET VARIABLE {table}_partitions = CAST([] AS DATE[])")
                inputs[table] = []
                continue
            if table == spec.name and day:
                previous = set(window.days(day))
                if not previous & set(warehouse.published_days(table)):
                    raise ModelError(
                        f"{spec.name} {day}: reads its own partitions {sorted(previous)}, which are not "
                        "built yet; build the earlier partitions first"
                    )
            view, inputs[table] = _view_sql(warehouse, table, window, day, spec)
            con.execute(f'CREATE TEMP VIEW "{table}" AS {view}')
            # which of the window's days are published: "has this period elapsed?"
            listed = ", ".join(f"DATE '{d}'" for d in inputs[table])
            con.execute(f"SET VARIABLE {table}_partitions = CAST([{listed}] AS DATE[])")
        if day:
            con.execute(f"SET VARIABLE partition_date = DATE '{day}'")
        con.execute(f"SET VARIABLE late_window_days = {int(settings.late_window_days)}")
        conversions = ", ".join("'" + e.replace("'", "''") + "'" for e in DEFAULT_CONVERSION_EVENTS)
        con.execute(f"SET VARIABLE conversion_events = [{conversions}]")
        sql, parameters = build_inputs(spec, active)  # the model's parameters, feature flags applied
        for name, value in parameters.items():
            con.execute(f"SET VARIABLE {name} = ?", [value])
        con.execute(f"COPY ({sql}) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)")
        row = con.execute(
            f"SELECT count(*) FROM read_parquet('{staged}', hive_partitioning = false)"
        ).fetchone()
        rows = int(row[0]) if row else 0
        schema = {
            table: {str(r[0]): str(r[1]) for r in con.execute(f'DESCRIBE SELECT * FROM "{table}"').fetchall()}
            for table in spec.upstreams
        }
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{staged}', hive_partitioning = false)")
        outputs = [str(r[0]) for r in described.fetchall()]
    finally:
        con.close()
    gate = audit(warehouse, spec.name, day if spec.partitioned else None, staged, settings.suites_path)
    gate_status.record(warehouse, [spec.name], partition, gate.outcomes)
    if gate.failed:  # the staged file stays for inspection until the next build clears it
        raise GateFailed(spec.name, partition, gate.outcomes)
    published = warehouse.publish(
        staged, spec.name, partition, settings.versions_kept, flags=flag_record(active)
    )
    manifest: dict[str, object] = {"rows": rows, "inputs": inputs}
    if spec.parameters or active:  # which variant this partition is: what a flag change compares with
        manifest["flags"] = flag_record(active)
    warehouse.write_manifest(spec.name, partition, manifest)
    return ModelResult(
        spec.name, day, rows, published, inputs, time.perf_counter() - started,
        lineage=column_lineage(spec, outputs, schema), checks=gate.outcomes, gate_duration_s=gate.duration_s,
        flags=flag_record(active),
    )  # fmt: skip
