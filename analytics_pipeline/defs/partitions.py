"""Daily partitions shared by every asset: arrival dates and event dates alike."""

from __future__ import annotations

import os
import warnings

from dagster import BetaWarning, DailyPartitionsDefinition, TimeWindowPartitionMapping

from analytics_pipeline.settings import late_window_days_from_env

PARTITIONS_START = os.environ.get("ANALYTICS_PARTITIONS_START", "2024-01-01")

daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

LATE_WINDOW_DAYS = late_window_days_from_env()

# events[D] reads raw_events[D .. D+L]: late arrivals land in their own event date.


def window_mapping(start_offset: int, end_offset: int) -> TimeWindowPartitionMapping:
    """Partitions D+start .. D+end of an upstream; days before the first or after today may not exist."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return TimeWindowPartitionMapping(
            start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True
        )


late_window_mapping = window_mapping(0, LATE_WINDOW_DAYS)
