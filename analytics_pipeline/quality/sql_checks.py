"""Invariants written in SQL, each declared once: name, description, severity, how it is evaluated.

A stage lists its :class:`SqlCheck`s next to the SQL that stages its data; the step runs
them on the staged files (views in its DuckDB connection) before publishing, and the
Dagster layer declares one asset check per entry. The evaluators below are the shapes
of invariant the pipeline needs: counts that reconcile, columns that are never null,
a person id on every row, values from an accepted set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from analytics_pipeline.quality.outcomes import CheckDeclaration, CheckOutcome

SAMPLE_SIZE = 5


@dataclass(frozen=True)
class Finding:
    """What an evaluator found; the check's declaration supplies its name and severity."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


# (connection with the staged views, the step's counts) -> what was found
Evaluator = Callable[[duckdb.DuckDBPyConnection, Mapping[str, Any]], Finding]


@dataclass(frozen=True)
class SqlCheck(CheckDeclaration):
    evaluate: Evaluator = field(kw_only=True)

    def run(self, con: duckdb.DuckDBPyConnection, counts: Mapping[str, Any]) -> CheckOutcome:
        found = self.evaluate(con, counts)
        return CheckOutcome(self.name, found.passed, found.description, found.metadata, self.severity)


def run_all(
    checks: Sequence[SqlCheck], con: duckdb.DuckDBPyConnection, counts: Mapping[str, Any]
) -> list[CheckOutcome]:
    return [check.run(con, counts) for check in checks]


def count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """The single integer a ``SELECT count(*) ...`` returns."""
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _samples(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [str(row[0]) for row in con.execute(f"{sql} LIMIT {SAMPLE_SIZE}").fetchall()]


def not_null(relation: str, columns: Iterable[str], id_column: str) -> Evaluator:
    """None of ``columns`` is null in ``relation``; samples name rows by ``id_column``."""
    cols = list(columns)

    def evaluate(con: duckdb.DuckDBPyConnection, counts: Mapping[str, Any]) -> Finding:
        counts_sql = ", ".join(f"count(*) FILTER (WHERE {c} IS NULL)" for c in cols)
        found = con.execute(f"SELECT {counts_sql} FROM {relation}").fetchone() or ()
        nulls = {c: int(n) for c, n in zip(cols, found, strict=True) if n}
        any_null = " OR ".join(f"{c} IS NULL" for c in cols)
        samples = _samples(con, f"SELECT {id_column} FROM {relation} WHERE {any_null}") if nulls else []
        return Finding(
            not nulls,
            f"null values in {nulls}" if nulls else f"no nulls in {', '.join(cols)}",
            {"null_counts": nulls, "sample_ids": samples, "columns": cols},
        )

    return evaluate


def identity_present(relation: str) -> Evaluator:
    """Every row names a person: a userId or an anonymousId."""
    missing = "user_id IS NULL AND anonymous_id IS NULL"

    def evaluate(con: duckdb.DuckDBPyConnection, counts: Mapping[str, Any]) -> Finding:
        bad = count(con, f"SELECT count(*) FROM {relation} WHERE {missing}")
        samples = _samples(con, f"SELECT message_id FROM {relation} WHERE {missing}") if bad else []
        return Finding(
            bad == 0,
            f"{bad} rows without userId and anonymousId" if bad else "every row has a person id",
            {"rows_without_person": bad, "sample_ids": samples},
        )

    return evaluate


def accepted_values(relation: str, column: str, accepted: Sequence[str]) -> Evaluator:
    """``column`` is one of ``accepted`` (never null)."""
    allowed = ", ".join("'" + value.replace("'", "''") + "'" for value in accepted)
    where = f"{column} IS NULL OR {column} NOT IN ({allowed})"

    def evaluate(con: duckdb.DuckDBPyConnection, counts: Mapping[str, Any]) -> Finding:
        bad = count(con, f"SELECT count(*) FROM {relation} WHERE {where}")
        samples = _samples(con, f"SELECT message_id FROM {relation} WHERE {where}") if bad else []
        return Finding(
            bad == 0,
            f"{bad} rows with a {column} outside {list(accepted)}" if bad else f"every {column} is accepted",
            {f"unexpected_{column}_rows": bad, "sample_ids": samples, "accepted": list(accepted)},
        )

    return evaluate


def reconciliation(read: str, parts: Sequence[str]) -> Evaluator:
    """The step's ``counts[read]`` equals the sum of ``counts[part]``, exactly."""

    def evaluate(con: duckdb.DuckDBPyConnection, counts: Mapping[str, Any]) -> Finding:
        total = int(counts[read])
        found = {part: int(counts[part]) for part in parts}
        accounted = sum(found.values())
        terms = " + ".join(f"{k} {v}" for k, v in found.items())
        return Finding(
            total == accounted,
            f"{total} read = {terms}"
            if total == accounted
            else f"{total} read but {terms} = {accounted} ({accounted - total:+d})",
            {"read": total, **found, "difference": accounted - total},
        )

    return evaluate
