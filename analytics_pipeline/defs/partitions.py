"""Daily partitions shared by every asset: arrival dates and event dates alike."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, DailyPartitionsDefinition, TimeWindowPartitionMapping

from analytics_pipeline.defs.resources import settings

daily_partitions = DailyPartitionsDefinition(start_date=settings.partitions_start, timezone="UTC")


def window_mapping(start_offset: int, end_offset: int) -> TimeWindowPartitionMapping:
    """Partitions D+start .. D+end of an upstream; days before the first or after today may not exist."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return TimeWindowPartitionMapping(
            start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True
        )


# events[D] reads raw_events[D .. D+L]: late arrivals land in their own event date.
late_window_mapping = window_mapping(0, settings.late_window_days)
