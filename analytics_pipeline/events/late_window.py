"""The late window: events dated D arrive on days D .. D+L, so each side knows the other's days.

``events[D]`` reads ``raw_events`` of :func:`arrival_days`; after arrival day Y is ingested,
:func:`event_days_to_rebuild` names the earlier event dates whose events Y's files held.
"""

from __future__ import annotations

from datetime import date, timedelta

from analytics_pipeline.warehouse.storage import Warehouse
from analytics_pipeline.warehouse.tables import RAW_EVENTS


def arrival_days(day: str, late_window_days: int) -> list[str]:
    """The arrival days whose files may hold events dated ``day``."""
    start = date.fromisoformat(day)
    return [(start + timedelta(days=i)).isoformat() for i in range(late_window_days + 1)]


def event_days_to_rebuild(
    arrival_day: str, late_window_days: int, warehouse: Warehouse | None = None
) -> list[str]:
    """Earlier event dates that ``arrival_day``'s files hold events for, oldest first.

    The ingest's manifest lists the event dates it saw, so only those are rebuilt;
    without a manifest every date in the late window is.
    """
    day = date.fromisoformat(arrival_day)
    window = [(day - timedelta(days=i)).isoformat() for i in range(late_window_days, 0, -1)]
    manifest = warehouse.read_manifest(RAW_EVENTS, arrival_day) if warehouse else None
    if manifest is None:
        return window
    seen = set(manifest.get("event_dates", {}))
    return [d for d in window if d in seen]
