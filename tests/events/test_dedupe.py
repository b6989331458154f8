"""Dedupe and conform rules of the events step, on hand-made landing files."""

from __future__ import annotations

import duckdb
import pytest

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.events.late_window import arrival_days
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import message, query, write_lines

DAY = "2025-01-10"


def _events(settings: PipelineSettings, day: str = DAY) -> list[tuple]:
    path = Warehouse(settings.warehouse_path).partition_file("events", day)
    return query(path, "SELECT message_id, received_at, file_path, line_number, deliveries, "
                       "json_extract_string(properties, '$.price') FROM t ORDER BY message_id")  # fmt: skip


def _run(settings: PipelineSettings, arrival: list[str], event_day: str = DAY) -> dict:
    for day in arrival:
        ingest_arrival_day(settings, day)
    return dedupe_events_day(settings, event_day).counts


def test_arrival_window_covers_the_late_days() -> None:
    assert arrival_days("2025-01-30", 3) == ["2025-01-30", "2025-01-31", "2025-02-01", "2025-02-02"]


def test_earliest_received_copy_wins_and_identical_copies_are_duplicates(settings: PipelineSettings) -> None:
    later = message(receivedAt="2025-01-10T12:00:05.000Z")
    earlier = message(receivedAt="2025-01-10T12:00:01.000Z")
    write_lines(settings, DAY, "a.jsonl", [later, message(messageId="m-2")])
    write_lines(settings, DAY, "b.jsonl", [earlier])
    counts = _run(settings, [DAY])
    rows = _events(settings)
    assert [r[0] for r in rows] == ["m-1", "m-2"]
    assert rows[0][2] == f"{DAY}/b.jsonl"  # the copy received first
    assert rows[0][4] == 2  # deliveries: both copies had the same content
    assert counts["input_rows"] == 3 and counts["events"] == 2
    assert counts["duplicates"] == 1 and counts["id_conflicts"] == 0


def test_ties_on_received_at_break_by_arrival_day_then_file_then_line(settings: PipelineSettings) -> None:
    copy = message()
    write_lines(settings, "2025-01-11", "a.jsonl", [copy])
    write_lines(settings, DAY, "z.jsonl", [message(messageId="x"), copy])
    write_lines(settings, DAY, "y.jsonl", [message(messageId="y"), message(messageId="w"), copy])
    _run(settings, [DAY, "2025-01-11"])
    winner = [r for r in _events(settings) if r[0] == "m-1"][0]
    assert (winner[2], winner[3]) == (f"{DAY}/y.jsonl", 3)


def test_same_id_with_different_content_is_an_id_conflict(settings: PipelineSettings) -> None:
    first = message(receivedAt="2025-01-10T12:00:01.000Z")
    changed = message(
        receivedAt="2025-01-10T12:00:02.000Z",
        properties={"product_id": "p1", "price": 10.5, "currency": "USD"},
    )
    write_lines(settings, DAY, "a.jsonl", [changed, first])
    counts = _run(settings, [DAY])
    assert counts["events"] == 1 and counts["id_conflicts"] == 1 and counts["duplicates"] == 0
    assert _events(settings)[0][5] == "9.5"  # the copy received first is kept
    conflicts = query(
        Warehouse(settings.warehouse_path).partition_file("event_id_conflicts", DAY),
        "SELECT message_id, reason, json_extract_string(raw_line::JSON, '$.properties.price') FROM t",
    )
    assert conflicts == [("m-1", "id_conflict", "10.5")]


def test_late_events_land_in_their_own_event_date(settings: PipelineSettings) -> None:
    write_lines(settings, DAY, "a.jsonl", [message(messageId="on-time")])
    write_lines(
        settings, "2025-01-13", "a.jsonl", [message(messageId="late-3", receivedAt="2025-01-13T00:00:01Z")]
    )
    write_lines(
        settings, "2025-01-14", "a.jsonl", [message(messageId="late-4", receivedAt="2025-01-14T00:00:01Z")]
    )
    counts = _run(settings, [DAY, "2025-01-13", "2025-01-14"])
    assert [r[0] for r in _events(settings)] == ["late-3", "on-time"]
    assert counts["late_events"] == 1
    too_late = query(
        Warehouse(settings.warehouse_path).partition_file("quarantined_events", "2025-01-14"),
        "SELECT message_id, reason FROM t",
    )
    assert too_late == [("late-4", "too_late")]


def test_rebuilding_after_more_late_data_updates_the_partition(settings: PipelineSettings) -> None:
    write_lines(settings, DAY, "a.jsonl", [message(messageId="a")])
    _run(settings, [DAY])
    assert [r[0] for r in _events(settings)] == ["a"]
    write_lines(
        settings, "2025-01-12", "b.jsonl", [message(messageId="b", receivedAt="2025-01-12T08:00:00Z")]
    )
    _run(settings, ["2025-01-12"])
    assert [r[0] for r in _events(settings)] == ["a", "b"]
    versions = Warehouse(settings.warehouse_path).versions("events", DAY)
    assert len(versions) == 1 and query(versions[0], "SELECT count(*) FROM t") == [(1,)]


def test_clock_skew_correction_decides_the_event_date(settings: PipelineSettings) -> None:
    # The client clock is 2 hours fast: originalTimestamp says 01:00 on the 11th, but the
    # event happened at 23:00 on the 10th (receivedAt - (sentAt - originalTimestamp)).
    skewed = message(
        messageId="skewed", timestamp=None,
        originalTimestamp="2025-01-11T01:00:00Z", sentAt="2025-01-11T01:00:10Z",
        receivedAt="2025-01-10T23:00:10Z",
    )  # fmt: skip
    write_lines(settings, DAY, "a.jsonl", [skewed])
    _run(settings, [DAY])
    rows = query(
        Warehouse(settings.warehouse_path).partition_file("events", DAY),
        "SELECT message_id, timestamp FROM t",
    )
    assert rows[0][0] == "skewed"
    assert rows[0][1].isoformat() == "2025-01-10T23:00:00+00:00"


@pytest.mark.parametrize("late_window_days", [0, 1, 3])
def test_late_window_setting_bounds_what_is_read(tmp_path, late_window_days: int) -> None:
    settings = PipelineSettings(data_dir=str(tmp_path / "data"), late_window_days=late_window_days)
    for k in range(0, 4):
        day = f"2025-01-{10 + k}"
        write_lines(settings, day, "a.jsonl", [message(messageId=f"k{k}", receivedAt=f"{day}T09:00:00Z")])
    counts = _run(settings, [f"2025-01-{10 + k}" for k in range(4)])
    assert counts["events"] == late_window_days + 1


def _reverse_stored_rows(settings: PipelineSettings, arrival_day: str) -> None:
    """Rewrite a published raw_events partition with its rows stored last line first."""
    path = Warehouse(settings.warehouse_path).partition_file("raw_events", arrival_day)
    reversed_copy = path.with_name("reversed.parquet.tmp")
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{path}') ORDER BY file_path DESC, line_number DESC) "
            f"TO '{reversed_copy}' (FORMAT parquet)"
        )
    finally:
        con.close()
    reversed_copy.replace(path)
    assert [r[0] for r in query(path, "SELECT line_number FROM t")] == list(range(10, 0, -1))


@pytest.mark.parametrize("stored", ["file_order", "reversed"])
@pytest.mark.parametrize("earlier", ["price_9.5", "price_10.5", "identical"])
def test_tie_on_received_at_in_one_file_is_broken_by_the_earlier_line(
    settings: PipelineSettings, earlier: str, stored: str
) -> None:
    """Two copies of m-1, same receivedAt, same arrival day, same file, on lines 9 and 10
    (9 < 10 as numbers, not as text). The copy on line 9 wins, whichever content it has
    (``earlier``), and also when raw_events stores the rows last line first (``stored``), so
    it is the line number that decides, not the content or the order the rows are read in."""
    cheap = message(properties={"product_id": "p1", "price": 9.5, "currency": "USD"})
    dear = message(properties={"product_id": "p1", "price": 10.5, "currency": "USD"})
    first, second = {"price_9.5": (cheap, dear), "price_10.5": (dear, cheap), "identical": (cheap, cheap)}[
        earlier
    ]
    assert first["receivedAt"] == second["receivedAt"]
    filler = [message(messageId=f"f-{n}") for n in range(1, 9)]  # lines 1..8
    write_lines(settings, DAY, "a.jsonl", [*filler, first, second])
    ingest_arrival_day(settings, DAY)
    if stored == "reversed":
        _reverse_stored_rows(settings, DAY)
    counts = dedupe_events_day(settings, DAY).counts

    (winner,) = [r for r in _events(settings) if r[0] == "m-1"]
    kept_price = str(first["properties"]["price"])
    assert (winner[2], winner[3], winner[5]) == (f"{DAY}/a.jsonl", 9, kept_price)
    conflicts = query(
        Warehouse(settings.warehouse_path).partition_file("event_id_conflicts", DAY),
        "SELECT message_id, line_number, json_extract_string(raw_line::JSON, '$.properties.price') FROM t",
    )
    assert counts["events"] == 9 and counts["input_rows"] == 10
    if earlier == "identical":
        assert winner[4] == 2  # one event delivered twice
        assert (counts["duplicates"], counts["id_conflicts"]) == (1, 0) and conflicts == []
    else:
        assert winner[4] == 1
        assert (counts["duplicates"], counts["id_conflicts"]) == (0, 1)
        assert conflicts == [("m-1", 10, str(second["properties"]["price"]))]
