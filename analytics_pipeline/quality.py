"""The invariant checks written in SQL, evaluated on staged data.

Each check is a DuckDB query over the staged Parquet file, run before that file is
published (write-audit-publish). A result carries what a data engineer needs to act:
the counts and a few offending ids. The Dagster layer turns results into
``AssetCheckResult`` events; nothing here knows about Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb

from analytics_pipeline.parsing import SEGMENT_TYPES

SAMPLE_SIZE = 5


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: str = "ERROR"  # ERROR blocks publishing when it fails; WARN only reports

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == "ERROR"


def count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """The single integer a ``SELECT count(*) ...`` returns."""
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _samples(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [str(row[0]) for row in con.execute(f"{sql} LIMIT {SAMPLE_SIZE}").fetchall()]


def not_null(
    con: duckdb.DuckDBPyConnection, relation: str, columns: Iterable[str], id_column: str, name: str
) -> CheckOutcome:
    cols = list(columns)
    counts_sql = ", ".join(f"count(*) FILTER (WHERE {c} IS NULL)" for c in cols)
    counts = con.execute(f"SELECT {counts_sql} FROM {relation}").fetchone() or ()
    nulls = {c: int(n) for c, n in zip(cols, counts, strict=True) if n}
    any_null = " OR ".join(f"{c} IS NULL" for c in cols)
    samples = _samples(con, f"SELECT {id_column} FROM {relation} WHERE {any_null}") if nulls else []
    return CheckOutcome(
        name,
        not nulls,
        f"null values in {nulls}" if nulls else f"no nulls in {', '.join(cols)}",
        {"null_counts": nulls, "sample_ids": samples, "columns": cols},
    )


def identity_present(con: duckdb.DuckDBPyConnection, relation: str, name: str) -> CheckOutcome:
    bad = con.execute(
        f"SELECT count(*) FROM {relation} WHERE user_id IS NULL AND anonymous_id IS NULL"
    ).fetchone()
    count = int(bad[0]) if bad else 0
    samples = (
        _samples(con, f"SELECT message_id FROM {relation} WHERE user_id IS NULL AND anonymous_id IS NULL")
        if count
        else []
    )
    return CheckOutcome(
        name,
        count == 0,
        f"{count} rows without userId and anonymousId" if count else "every row has a person id",
        {"rows_without_person": count, "sample_ids": samples},
    )


def accepted_types(con: duckdb.DuckDBPyConnection, relation: str, name: str) -> CheckOutcome:
    allowed = ", ".join(f"'{t}'" for t in SEGMENT_TYPES)
    where = f"type IS NULL OR type NOT IN ({allowed})"
    bad = con.execute(f"SELECT count(*) FROM {relation} WHERE {where}").fetchone()
    count = int(bad[0]) if bad else 0
    samples = _samples(con, f"SELECT message_id FROM {relation} WHERE {where}") if count else []
    return CheckOutcome(
        name,
        count == 0,
        f"{count} rows with a type outside {list(SEGMENT_TYPES)}" if count else "every type is accepted",
        {"unexpected_type_rows": count, "sample_ids": samples, "accepted": list(SEGMENT_TYPES)},
    )


def reconciliation(name: str, read: int, parts: Mapping[str, int]) -> CheckOutcome:
    """What was read equals the sum of where it went, exactly."""
    accounted = sum(parts.values())
    passed = read == accounted
    terms = " + ".join(f"{k} {v}" for k, v in parts.items())
    return CheckOutcome(
        name,
        passed,
        f"{read} read = {terms}"
        if passed
        else f"{read} read but {terms} = {accounted} ({accounted - read:+d})",
        {"read": read, **parts, "difference": accounted - read},
    )
