"""The audit a staged partition passes before it is published (write-audit-publish).

For an asset with a suite in ``checks/suites/<asset>.yml`` the audit runs, on the staged
file only: the suite's expectations (Great Expectations, see suites.py), the volume
anomaly checks and the schema drift checks. Each outcome carries its severity; an
``error`` that fails blocks the publish, a ``warn`` only reports. The names here are the asset
check names the Dagster layer declares (``planned_checks``), so the UI lists the same
checks whether they passed, failed or were never reached.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analytics_pipeline.memory import release_freed_memory
from analytics_pipeline.quality.outcomes import CheckDeclaration, CheckOutcome
from analytics_pipeline.quality.suite_chunks import validate_file
from analytics_pipeline.quality.suites import SchemaDriftPolicy, VolumePolicy, suite_for
from analytics_pipeline.warehouse.storage import Warehouse

VOLUME_NOT_ZERO = "volume_not_zero"
VOLUME_WITHIN_BAND = "volume_within_band"
SCHEMA_UNCHANGED = "schema_columns_unchanged"
SCHEMA_NO_NEW_COLUMNS = "schema_no_new_columns"
UNPARTITIONED = "all"


@dataclass(frozen=True)
class Audit:
    outcomes: list[CheckOutcome]
    duration_s: float

    @property
    def failed(self) -> list[CheckOutcome]:
        return [c for c in self.outcomes if c.blocks]


def planned_checks(asset: str, suites_dir: Path) -> list[CheckDeclaration]:
    """The checks ``audit`` reports for this asset, known before anything runs."""
    suite = suite_for(asset, suites_dir)
    if suite is None:
        return []
    planned = [CheckDeclaration(e.name, e.description, e.severity) for e in suite.expectations]
    if suite.volume:
        planned += [
            CheckDeclaration(
                VOLUME_NOT_ZERO,
                f"Zero rows where the previous {suite.volume.history} published partitions had data.",
                suite.volume.zero_rows,
            ),
            CheckDeclaration(
                VOLUME_WITHIN_BAND,
                f"Row count within [{suite.volume.lower_ratio}, {suite.volume.upper_ratio}] x the median "
                f"of the previous {suite.volume.history} published partitions.",
                suite.volume.out_of_band,
            ),
        ]
    if suite.schema_drift:
        planned += [
            CheckDeclaration(
                SCHEMA_UNCHANGED,
                "No published column is removed or changes type.",
                suite.schema_drift.removed_or_retyped,
            ),
            CheckDeclaration(
                SCHEMA_NO_NEW_COLUMNS,
                "No column appears that the published table lacks.",
                suite.schema_drift.added,
            ),
        ]
    return planned


def suite_parameters(day: str | None) -> dict[str, Any]:
    """Values a suite can name with ``{"$PARAMETER": ...}`` (GX's suite parameters)."""
    if day is None:
        return {}
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    return {
        "partition_date": date.fromisoformat(day),
        "partition_start": start,
        "partition_end": start + timedelta(days=1),
    }


def audit(warehouse: Warehouse, table: str, day: str | None, staged: Path, suites_dir: Path) -> Audit:
    """Every gate of ``table``'s suite, run on the staged file (nothing published yet)."""
    started = time.perf_counter()
    suite = suite_for(table, suites_dir)
    if suite is None:
        return Audit([], 0.0)
    outcomes = validate_file(suite, staged, suite_parameters(day))
    partition = day or UNPARTITIONED
    if suite.volume:
        rows = pq.read_metadata(staged).num_rows
        outcomes += volume_checks(
            suite.volume, rows, previous_row_counts(warehouse, table, partition, suite.volume)
        )
    if suite.schema_drift:
        outcomes += schema_drift_checks(
            suite.schema_drift, pq.read_schema(staged), reference_schema(warehouse, table, partition)
        )
    release_freed_memory()  # the suite's frames: the next step starts from what this one kept
    return Audit(outcomes, time.perf_counter() - started)


def previous_row_counts(
    warehouse: Warehouse, table: str, partition: str, policy: VolumePolicy
) -> dict[str, int]:
    """Row counts of the previous published partitions (Parquet footers, no data read).

    An unpartitioned table is compared with the version it replaces.
    """
    if partition == UNPARTITIONED:
        days = [UNPARTITIONED] if warehouse.partition_file(table, UNPARTITIONED).exists() else []
    else:
        days = [d for d in warehouse.published_days(table) if d < partition][-policy.history :]
    return {d: pq.read_metadata(warehouse.partition_file(table, d)).num_rows for d in days}


def volume_checks(policy: VolumePolicy, rows: int, history: dict[str, int]) -> list[CheckOutcome]:
    median = statistics.median(history.values()) if history else None
    low = policy.lower_ratio * median if median is not None else None
    high = policy.upper_ratio * median if median is not None else None
    metadata = {
        "rows": rows,
        "median_of_previous": median,
        "previous_partitions": history,
        "band": [low, high],
        "ratio_to_median": round(rows / median, 4) if median else None,
    }
    if median is None:
        band_text = "no published partition before it to compare with"
        collapsed, in_band = False, True
    elif median < policy.min_median:
        band_text = (
            f"{rows} rows; median of the previous {len(history)} partitions {median} is below "
            f"min_median {policy.min_median}: too few rows to judge"
        )
        collapsed, in_band = False, True
    else:
        band_text = (
            f"{rows} rows; median of the previous {len(history)} partitions {median}, band [{low}, {high}]"
        )
        collapsed = rows == 0
        in_band = low is not None and high is not None and low <= rows <= high
    return [
        CheckOutcome(
            VOLUME_NOT_ZERO,
            not collapsed,
            f"0 rows where the previous partitions had a median of {median}" if collapsed else band_text,
            dict(metadata),
            policy.zero_rows,
        ),
        CheckOutcome(
            VOLUME_WITHIN_BAND,
            in_band,
            ("outside the band: " if not in_band else "") + band_text,
            dict(metadata),
            policy.out_of_band,
        ),
    ]


def reference_schema(warehouse: Warehouse, table: str, partition: str) -> tuple[str, pa.Schema] | None:
    """The published schema to compare with: the newest published partition other than this one,
    else this partition's own published version."""
    days = warehouse.published_days(table)
    others = [d for d in days if d != partition]
    chosen = others[-1] if others else (partition if partition in days else None)
    if chosen is None:
        return None
    return chosen, pq.read_schema(warehouse.partition_file(table, chosen))


def schema_drift_checks(
    policy: SchemaDriftPolicy, staged: pa.Schema, reference: tuple[str, pa.Schema] | None
) -> list[CheckOutcome]:
    new = {f.name: str(f.type) for f in staged}
    if reference is None:
        note = "no published partition to compare with"
        return [
            CheckOutcome(SCHEMA_UNCHANGED, True, note, {"columns": new}, policy.removed_or_retyped),
            CheckOutcome(SCHEMA_NO_NEW_COLUMNS, True, note, {"columns": new}, policy.added),
        ]
    partition, schema = reference
    old = {f.name: str(f.type) for f in schema}
    removed = sorted(set(old) - set(new))
    added = sorted(set(new) - set(old))
    retyped = {
        c: {"published": old[c], "staged": new[c]} for c in sorted(set(old) & set(new)) if old[c] != new[c]
    }
    metadata = {"compared_with_partition": partition, "removed": removed, "added": added, "retyped": retyped}
    breaking = bool(removed or retyped)
    return [
        CheckOutcome(
            SCHEMA_UNCHANGED,
            not breaking,
            f"schema drift against partition {partition}: removed {removed}, retyped {retyped}"
            if breaking
            else f"same columns and types as partition {partition}",
            dict(metadata),
            policy.removed_or_retyped,
        ),
        CheckOutcome(
            SCHEMA_NO_NEW_COLUMNS,
            not added,
            f"new columns {added} not in partition {partition}" if added else "no new columns",
            dict(metadata),
            policy.added,
        ),
    ]
