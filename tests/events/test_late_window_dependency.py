"""The backfill dependency ``events[D] <- raw_events[D .. D+L]`` (L = ``late_window_days``).

Declared once in the Dagster asset graph (what a backfill orders its runs by) and
honoured by the dedupe step (what it reads): both must say the same days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from dagster import AssetKey, PartitionsDefinition

from analytics_pipeline.definitions import defs
from analytics_pipeline.defs import resources
from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.events.late_window import arrival_days, event_days_to_rebuild
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from analytics_pipeline.warehouse.tables import EVENT_ID_CONFLICTS, EVENTS, QUARANTINED_EVENTS, RAW_EVENTS
from tests.conftest import message, query, write_lines

NOW = datetime(2025, 6, 1, tzinfo=UTC)  # partitions up to 2025-05-31 exist
RAW = AssetKey(RAW_EVENTS)


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def _subset(partitions_def: PartitionsDefinition, day: str) -> Any:  # a PartitionsSubset
    return partitions_def.empty_subset().with_partition_keys([day])


# --- (a) the asset graph ------------------------------------------------------------------


@pytest.mark.parametrize("asset", [EVENTS, EVENT_ID_CONFLICTS])
@pytest.mark.parametrize("day", ["2025-01-10", "2025-02-27", "2024-12-30", "2025-05-28"])
def test_asset_graph_maps_events_d_to_raw_events_d_through_d_plus_l(asset: str, day: str) -> None:
    late = resources.settings.late_window_days  # the definitions are built from these settings
    assert late >= 1
    graph = defs.resolve_asset_graph()
    key = AssetKey(asset)
    assert graph.get(key).parent_keys == {RAW}
    mapping = graph.get_partition_mapping(key, RAW)
    events_def, raw_def = graph.get(key).partitions_def, graph.get(RAW).partitions_def
    assert events_def is not None and raw_def is not None

    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        _subset(events_def, day), events_def, raw_def, current_time=NOW
    )
    expected = _days(day, _shift(day, late))
    assert expected == arrival_days(day, late)  # what dedupe_events_day reads
    assert sorted(upstream.partitions_subset.get_partition_keys()) == expected
    assert list(upstream.required_but_nonexistent_subset.get_partition_keys()) == []

    # and back: raw_events[D] feeds the events of D-L .. D, i.e. D and the dates the sensor rebuilds
    downstream = mapping.get_downstream_partitions_for_partitions(
        _subset(raw_def, day), raw_def, events_def, current_time=NOW
    )
    assert sorted(downstream.get_partition_keys()) == _days(_shift(day, -late), day)
    assert sorted(downstream.get_partition_keys()) == [*event_days_to_rebuild(day, late), day]


def test_asset_graph_skips_arrival_days_that_do_not_exist_yet() -> None:
    """events of the last L days depend on the arrival days so far; the late-window sensor
    rebuilds them as the next days arrive."""
    graph = defs.resolve_asset_graph()
    mapping = graph.get_partition_mapping(AssetKey(EVENTS), RAW)
    events_def, raw_def = graph.get(AssetKey(EVENTS)).partitions_def, graph.get(RAW).partitions_def
    assert events_def is not None and raw_def is not None
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        _subset(events_def, "2025-05-30"), events_def, raw_def, current_time=NOW
    )
    assert sorted(upstream.partitions_subset.get_partition_keys()) == ["2025-05-30", "2025-05-31"]
    assert list(upstream.required_but_nonexistent_subset.get_partition_keys()) == []


# --- (b) what building events[D] reads ----------------------------------------------------

DAY = "2025-01-10"


def _arrive(arrival: str, event_day: str, message_id: str) -> dict[str, Any]:
    return message(
        messageId=message_id, timestamp=f"{event_day}T12:00:00.000Z", receivedAt=f"{arrival}T00:00:01.000Z"
    )


def _event_ids(settings: PipelineSettings) -> list[str]:
    path = Warehouse(settings.warehouse_path).partition_file(EVENTS, DAY)
    return [r[0] for r in query(path, "SELECT message_id FROM t ORDER BY message_id")]


def test_events_d_reads_exactly_arrival_days_d_through_d_plus_l(settings: PipelineSettings) -> None:
    late = settings.late_window_days
    warehouse = Warehouse(settings.warehouse_path)
    day = {k: _shift(DAY, k) for k in range(-1, late + 2)}
    # every arrival day holds an event of its own date; D+L and D+L+1 also hold one dated D
    for k, arrival in day.items():
        records = [_arrive(arrival, arrival, f"own-{k}")]
        if k == late:
            records.append(_arrive(arrival, DAY, "late-by-L"))
        if k == late + 1:
            records.append(_arrive(arrival, DAY, "late-by-L+1"))
        write_lines(settings, arrival, "a.jsonl", records)

    # built before arrival day D+L is ingested: the late event is not there yet
    for k in range(-1, late):
        ingest_arrival_day(settings, day[k])
    counts = dedupe_events_day(settings, DAY).counts
    assert _event_ids(settings) == ["own-0"]
    assert counts["arrival_days_read"] == [day[k] for k in range(late)]
    assert counts["arrival_days_missing"] == [day[late]]

    # built after raw_events[D+L] is ingested: the event that arrived on D+L lands in events[D]
    ingest_arrival_day(settings, day[late])
    counts = dedupe_events_day(settings, DAY).counts
    assert _event_ids(settings) == ["late-by-L", "own-0"]
    assert counts["arrival_days_read"] == arrival_days(DAY, late) == [day[k] for k in range(late + 1)]
    assert counts["arrival_days_missing"] == []
    assert counts["input_rows"] == 2 and counts["late_events"] == 1
    assert query(warehouse.partition_file(EVENTS, DAY), "SELECT arrival_date::VARCHAR FROM t ORDER BY 1") == [
        (DAY,),
        (day[late],),
    ]
    assert warehouse.read_manifest(EVENTS, DAY) == counts

    # one day later is too late: quarantined on its arrival day, never in raw_events or events[D]
    ingest_arrival_day(settings, day[late + 1])
    quarantined = query(
        warehouse.partition_file(QUARANTINED_EVENTS, day[late + 1]), "SELECT message_id, reason FROM t"
    )
    assert quarantined == [("late-by-L+1", "too_late")]
    raw = query(warehouse.partition_file(RAW_EVENTS, day[late + 1]), "SELECT message_id FROM t")
    assert raw == [(f"own-{late + 1}",)]
    result = dedupe_events_day(settings, DAY)
    assert result.counts["arrival_days_read"] == arrival_days(DAY, late)  # not D-1, not D+L+1
    assert result.published[EVENTS].changed is False  # the same bytes as before D+L+1 existed
    assert _event_ids(settings) == ["late-by-L", "own-0"]
