"""The analysts' catalog: ``<warehouse>/analytics.duckdb``, one view per table.

The file is rebuilt under a temporary name and renamed into place, so the pipeline
never holds a DuckDB lock on the file analysts have open read-only: a reader keeps
the version it opened and sees the new views on its next connect.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb

from analytics_pipeline.warehouse.storage import PUBLISHED_FILE, Warehouse

CATALOG_FILE = "analytics.duckdb"


def catalog_path(warehouse: Warehouse) -> Path:
    return warehouse.root / CATALOG_FILE


def published_tables(warehouse: Warehouse) -> list[str]:
    if not warehouse.root.exists():
        return []
    return sorted(
        p.name
        for p in warehouse.root.iterdir()
        if p.is_dir() and not p.name.startswith("_") and any(p.glob(f"date=*/{PUBLISHED_FILE}"))
    )


def refresh_catalog(warehouse: Warehouse) -> Path:
    """Write a fresh catalog of views over every published table and swap it in."""
    target = catalog_path(warehouse)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{CATALOG_FILE}.{uuid.uuid4().hex}.tmp")
    con = duckdb.connect(str(tmp))
    try:
        for table in published_tables(warehouse):
            glob = warehouse.table_glob(table).replace("'", "''")
            con.execute(
                f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM '
                f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
            )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, target)
    return target
