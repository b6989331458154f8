"""Percentiles of measured timings, the way SLOs are read: nearest rank, no interpolation.

The p-th percentile of n values is the smallest value such that at least p% of the values
are at or below it (the ``ceil(p/100 * n)``-th smallest). With fewer than 100 runs the p99
of a sample is its maximum, so the run count is always reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``values``."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }
