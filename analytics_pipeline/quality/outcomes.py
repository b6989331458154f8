"""The vocabulary every gate shares: a check's declaration, its severity and its outcome.

SQL invariants, expectation suites, volume and schema-drift gates all declare checks
the same way (:class:`CheckDeclaration`) and report the same way (:class:`CheckOutcome`).
The Dagster layer derives its ``AssetCheckSpec``s from the declarations and its
``AssetCheckResult``s from the outcomes; nothing here knows about Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """``error``: a failure blocks publishing. ``warn``: a failure is reported, the partition published.

    The same two words in every file (suites, policies) and in code; they are Dagster's
    ERROR and WARN check severities.
    """

    ERROR = "error"
    WARN = "warn"

    @property
    def blocking(self) -> bool:
        return self is Severity.ERROR


@dataclass(frozen=True)
class CheckDeclaration:
    """A check known before anything runs: what the UI lists for an asset."""

    name: str
    description: str
    severity: Severity = Severity.ERROR

    @property
    def blocking(self) -> bool:
        return self.severity.blocking


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result on one staged partition, with what a data engineer needs to act."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: Severity = Severity.ERROR

    @property
    def blocks(self) -> bool:
        """Failed, and severe enough to withhold the publish."""
        return not self.passed and self.severity.blocking


class GateFailed(Exception):
    """A blocking check failed on a staged partition: nothing was published."""

    def __init__(self, table: str, day: str, outcomes: list[CheckOutcome]) -> None:
        self.table = table
        self.day = day
        self.outcomes = outcomes  # every check of the step, passed ones too
        self.failed = [c for c in outcomes if c.blocks]
        details = "; ".join(
            f"{c.name}: {c.description}"
            + (f" e.g. {c.metadata['sample_ids']}" if c.metadata.get("sample_ids") else "")
            + (
                f" e.g. {c.metadata['partial_unexpected_list']}"
                if c.metadata.get("partial_unexpected_list")
                else ""
            )
            for c in self.failed
        )
        super().__init__(
            f"blocking checks failed for {table} partition {day}, nothing published "
            f"(the previous version stays visible): {details}"
        )
