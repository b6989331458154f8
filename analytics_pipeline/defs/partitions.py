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
# Upstream days after today do not exist yet; that is normal, not an error.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)
    late_window_mapping = TimeWindowPartitionMapping(
        start_offset=0, end_offset=LATE_WINDOW_DAYS, allow_nonexistent_upstream_partitions=True
    )
