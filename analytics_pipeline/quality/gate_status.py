"""The latest gate result of every partition, kept in the warehouse beside its manifests.

A partition whose blocking check failed was not published (its previous version stays),
so nothing should be built on top of it until a rerun passes: the rule of Dagster's
``AutomationCondition.all_deps_blocking_checks_passed()``. The sensors and the CLI read
this record rather than Dagster's check storage (whose status API is private), so the
rule holds the same way inside and outside Dagster. Layout::

    <warehouse>/_gates/<table>/date=YYYY-MM-DD.json   {"passed": ..., "failed": [...], "checks": {...}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from analytics_pipeline.quality.outcomes import CheckOutcome
from analytics_pipeline.warehouse.storage import Warehouse

GATES_DIR = "_gates"


def status_path(warehouse: Warehouse, table: str, partition: str) -> Path:
    return warehouse.root / GATES_DIR / table / f"date={partition}.json"


def record(
    warehouse: Warehouse, tables: Sequence[str], partition: str, outcomes: Iterable[CheckOutcome]
) -> None:
    """Write the outcome of one audit of ``partition`` for each of ``tables`` (a step may stage several)."""
    outcomes = list(outcomes)
    failed = [o.name for o in outcomes if o.blocks]
    document = {
        "passed": not failed,
        "failed": failed,
        "checks": {o.name: o.passed for o in outcomes},
    }
    for table in tables:
        path = status_path(warehouse, table, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True))
        os.replace(tmp, path)


def failed_checks(warehouse: Warehouse, table: str, partition: str) -> list[str]:
    """Blocking checks that failed in the latest audit of the partition (empty: passed or never audited)."""
    path = status_path(warehouse, table, partition)
    if not path.exists():
        return []
    failed: list[str] = json.loads(path.read_text()).get("failed", [])
    return failed


def blocked_partitions(
    warehouse: Warehouse, partitions: Mapping[str, Iterable[str]]
) -> dict[tuple[str, str], list[str]]:
    """(table, partition) -> its failed blocking checks, for those of ``partitions`` whose latest gate failed."""
    blocked: dict[tuple[str, str], list[str]] = {}
    for table, days in partitions.items():
        for day in sorted(set(days)):
            failed = failed_checks(warehouse, table, day)
            if failed:
                blocked[(table, day)] = failed
    return blocked
