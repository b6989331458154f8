"""Bad input in the landing folder becomes counted quarantine rows, never a crash.

Each test builds a tiny landing folder by hand, runs ``ingest_arrival_day`` and reads
the published Parquet back with DuckDB. For every kind of bad input it checks the
one quarantine row (reason, message, file, line, raw text), that the valid lines of
the same file still reach ``raw_events``, and that the reconciliation holds::

    lines_read == raw_events + quarantined_lines + duplicate_file_lines
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import duckdb
import pyarrow as pa
import pytest

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.ingest.landing import (
    KEPT_PREFIX_BYTES,
    MAX_LINE_BYTES,
    UnsafePathError,
    resolve_inside,
)
from analytics_pipeline.ingest.parsing import LINE_REASONS
from tests.landing_builders import (
    DAY,
    DROP,
    Ingested,
    LandingDay,
    encode,
    jsonl_bytes,
    message,
    read_parquet_rows,
)

EVENTS = "events.jsonl"
FILE = f"{DAY}/{EVENTS}"


@pytest.fixture
def landing(tmp_path: Path) -> LandingDay:
    return LandingDay(tmp_path / "data")


def epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def assert_reconciles(out: Ingested) -> None:
    c = out.counts
    assert c["lines_read"] == c["raw_events"] + c["quarantined_lines"] + c["duplicate_file_lines"], c
    # the counts describe what was published, not something else
    assert c["raw_events"] == len(out.raw)
    assert c["quarantined_lines"] == sum(1 for q in out.quarantine if q["line_number"] is not None)
    assert c["quarantined_files"] == sum(1 for q in out.quarantine if q["line_number"] is None)
    assert all(check.passed for check in out.result.raw_checks + out.result.quarantine_checks)


def only_quarantine_row(
    out: Ingested, reason: str, file_path: str, line_number: int | None
) -> dict[str, Any]:
    assert len(out.quarantine) == 1, out.quarantine
    row = out.quarantine[0]
    assert row["reason"] == reason, row
    assert row["message"], row
    assert row["file_path"] == file_path
    assert row["line_number"] == line_number
    assert row["arrival_date"].isoformat() == DAY
    assert out.counts["quarantined_by_reason"] == {reason: 1}
    return row


def sandwich(landing: LandingDay, bad: Any) -> Ingested:
    """Valid line 1, the bad line 2, valid line 3; ingest with default settings."""
    landing.write_lines(EVENTS, [message(1), bad, message(3)])
    return landing.ingest()


def assert_sandwich(out: Ingested, reason: str) -> dict[str, Any]:
    row = only_quarantine_row(out, reason, FILE, 2)
    assert out.raw_ids() == ["m-0001", "m-0003"]
    assert [r["line_number"] for r in out.raw] == [1, 3]
    assert out.counts["lines_read"] == 3
    assert_reconciles(out)
    return row


# --- line-level problems: one bad line between two valid ones ----------------------

TRUNCATED = json.dumps(message(2))[:45]
assert TRUNCATED.startswith("{") and not TRUNCATED.endswith("}")
# the same messageId key twice: DuckDB reads the first value, most JSON parsers the last
DUPLICATED_ID = json.dumps(message(2), separators=(",", ":"))[:-1] + ',"messageId":"m-0009"}'
# a repeated key inside a nested object is not a top-level ambiguity: accepted
NESTED_REPEAT = json.dumps(message(2), separators=(",", ":")).replace(
    '"properties":{', '"properties":{"price":1,', 1
)

# (id, bad line, reason, text the message must contain, message_id kept in quarantine)
LINE_CASES: list[tuple[str, Any, str, str, str | None]] = [
    ("invalid_json_braces", '{"messageId": "m-0002", oops}', "invalid_json", "not valid JSON", None),
    ("invalid_json_text", "hello world", "invalid_json", "not valid JSON", None),
    ("invalid_json_trailing_comma", '{"messageId": "m-0002",}', "invalid_json", "not valid JSON", None),
    ("invalid_json_nan", '{"messageId":"m-0002","properties":{"price":NaN}}', "invalid_json",
     "not valid JSON", None),
    ("invalid_json_infinity", '{"messageId":"m-0002","properties":{"price":-Infinity}}', "invalid_json",
     "not valid JSON", None),
    ("truncated_line", TRUNCATED, "truncated_line", "before its JSON object closes", None),
    ("not_object_array", [1, 2, 3], "not_an_object", "array, expected an object", None),
    ("not_object_string", '"just a string"', "not_an_object", "varchar, expected an object", None),
    ("not_object_number", "42", "not_an_object", "expected an object", None),
    ("not_object_null", "null", "not_an_object", "expected an object", None),
    ("duplicate_key_message_id", DUPLICATED_ID, "duplicate_key",
     'top-level key "messageId" appears more than once', "m-0002"),
    ("duplicate_key_type", '{"messageId":"m-0002","type":"track","type":"page"}', "duplicate_key",
     'top-level key "type" appears more than once', "m-0002"),
    ("missing_message_id", message(2, messageId=DROP), "missing_message_id", "messageId", None),
    ("empty_message_id", message(2, messageId=""), "missing_message_id", "messageId", None),
    ("blank_message_id", message(2, messageId="   "), "missing_message_id", "messageId", None),
    ("null_message_id", message(2, messageId=None), "missing_message_id", "messageId", None),
    # a messageId that is there but not a string: wrong_field_type, not missing_message_id (the
    # quarantine's message_id then holds the value's JSON text, e.g. '42'; not pinned here)
    ("number_message_id", message(2, messageId=42), "wrong_field_type",
     "messageId is ubigint, expected string", ANY),
    ("negative_number_message_id", message(2, messageId=-7), "wrong_field_type",
     "messageId is bigint, expected string", ANY),
    ("float_message_id", message(2, messageId=2.5), "wrong_field_type",
     "messageId is double, expected string", ANY),
    ("object_message_id", message(2, messageId={"id": "m-0002"}), "wrong_field_type",
     "messageId is object, expected string", ANY),
    ("array_message_id", message(2, messageId=["m-0002"]), "wrong_field_type",
     "messageId is array, expected string", ANY),
    ("boolean_message_id", message(2, messageId=True), "wrong_field_type",
     "messageId is boolean, expected string", ANY),
    ("missing_received_at", message(2, receivedAt=DROP), "missing_received_at", "receivedAt", "m-0002"),
    ("no_identity", message(2, anonymousId=DROP), "missing_identity", "neither userId nor anonymousId",
     "m-0002"),
    ("empty_identity", message(2, anonymousId="", userId=""), "missing_identity", "neither userId",
     "m-0002"),
    ("unknown_type", message(2, type="purchase"), "unknown_type", '"purchase"', "m-0002"),
    ("missing_type", message(2, type=DROP), "unknown_type", "type is missing", "m-0002"),
    ("missing_event_name", message(2, event=DROP), "missing_event_name", "without an event name", "m-0002"),
    ("empty_event_name", message(2, event=""), "missing_event_name", "without an event name", "m-0002"),
    ("timestamp_not_a_time", message(2, timestamp="not a time"), "invalid_timestamp", "timestamp is not",
     "m-0002"),
    ("timestamp_feb_30", message(2, timestamp="2024-02-30T10:00:00Z"), "invalid_timestamp",
     "timestamp is not", "m-0002"),
    ("timestamp_epoch_1970", message(2, timestamp=1000), "invalid_timestamp", "between 2000 and 2099",
     "m-0002"),
    ("timestamp_epoch_1980", message(2, timestamp=epoch_ms("1980-06-01T00:00:00Z")), "invalid_timestamp",
     "between 2000 and 2099", "m-0002"),
    ("timestamp_boolean", message(2, timestamp=True), "invalid_timestamp", "timestamp is not", "m-0002"),
    ("received_at_garbage", message(2, receivedAt="yesterday"), "invalid_timestamp", "receivedAt is not",
     "m-0002"),
    ("properties_string", message(2, properties="p1"), "wrong_field_type",
     "properties is varchar, expected object", "m-0002"),
    ("user_id_object", message(2, userId={"id": 7}), "wrong_field_type",
     "userId is object, expected string", "m-0002"),
    ("event_number", message(2, event=5), "wrong_field_type", "event is ubigint, expected string", "m-0002"),
    ("too_late", message(2, timestamp="2024-03-06T23:59:59Z"), "too_late",
     "event date 2024-03-06 is more than 3 days before arrival 2024-03-10", "m-0002"),
    ("future_timestamp", message(2, timestamp="2024-03-11T00:00:00Z"), "future_timestamp",
     "event date 2024-03-11 is after arrival 2024-03-10", "m-0002"),
    ("schema_violation", message(2, event="Order Completed",
                                 properties={"order_id": "o1", "revenue": -5, "currency": "USD"}),
     "schema_violation", "$.revenue: minimum 0 (got -5)", "m-0002"),
    ("schema_violation_required", message(2, event="Order Completed", properties={"order_id": "o1"}),
     "schema_violation", "$.revenue: required", "m-0002"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "reason", "text", "message_id"),
    [pytest.param(*case[1:], id=case[0]) for case in LINE_CASES],
)
def test_bad_line_is_quarantined_and_neighbours_kept(
    landing: LandingDay, bad: Any, reason: str, text: str, message_id: str | None
) -> None:
    out = sandwich(landing, bad)
    row = assert_sandwich(out, reason)
    assert text in row["message"]
    assert row["raw_text"] == encode(bad).decode("utf-8")
    assert row["message_id"] == message_id


def test_json_lookalike_tokens_inside_strings_are_fine(landing: LandingDay) -> None:
    """The strict-JSON guard must not reject NaN, Infinity or ',}' inside string values."""
    tricky = message(1, context={"note": 'NaN, Infinity ,} ,] \\", }'}, userId="Infinity")
    landing.write_lines(EVENTS, [tricky])
    out = landing.ingest()
    assert out.quarantine == []
    (row,) = out.raw
    assert json.loads(row["context"]) == tricky["context"]
    assert row["user_id"] == "Infinity"
    assert_reconciles(out)


def test_every_line_reason_is_covered_by_a_test() -> None:
    covered = {case[2] for case in LINE_CASES} | {
        "invalid_utf8", "line_too_long", "blank_line", "parquet_schema_mismatch", "unregistered_event",
    }  # fmt: skip
    assert covered == set(LINE_REASONS)


def test_repeated_key_inside_a_nested_object_is_accepted(landing: LandingDay) -> None:
    out = sandwich(landing, NESTED_REPEAT)
    assert out.quarantine == []
    assert out.raw_ids() == ["m-0001", "m-0002", "m-0003"]
    assert_reconciles(out)


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("gzipped", [False, True], ids=["jsonl", "jsonl.gz"])
def test_byte_order_mark_at_file_start_is_stripped_and_counted(landing: LandingDay, gzipped: bool) -> None:
    data = BOM + jsonl_bytes([message(1), message(2)])
    name = "bom.jsonl.gz" if gzipped else "bom.jsonl"
    landing.write_bytes(name, gzip.compress(data, mtime=0) if gzipped else data)
    landing.write_lines("plain.jsonl", [message(3)])
    out = landing.ingest()
    assert out.quarantine == []
    assert out.raw_ids() == ["m-0001", "m-0002", "m-0003"]
    assert out.raw[0]["raw_line"] == json.dumps(message(1), separators=(",", ":"))  # no BOM kept
    assert out.ledger_entry(landing.rel(name))["bom_stripped"] == 1
    assert out.ledger_entry(landing.rel("plain.jsonl"))["bom_stripped"] == 0
    assert out.counts["boms_stripped"] == 1
    assert_reconciles(out)


def test_byte_order_mark_inside_a_file_is_still_invalid_json(landing: LandingDay) -> None:
    """Only a file's first bytes can be a byte-order mark; elsewhere it is a bad line."""
    out = sandwich(landing, BOM + encode(message(2)))
    assert_sandwich(out, "invalid_json")
    assert out.counts["boms_stripped"] == 0


def test_file_of_only_a_byte_order_mark_has_no_lines(landing: LandingDay) -> None:
    landing.write_bytes("bom-only.jsonl", BOM)
    out = landing.ingest()
    assert out.quarantine == [] and out.raw == []
    entry = out.ledger_entry(landing.rel("bom-only.jsonl"))
    assert (entry["status"], entry["line_count"], entry["bom_stripped"]) == ("loaded", 0, 1)
    assert_reconciles(out)


def test_non_utf8_bytes_are_quarantined_with_escaped_raw_text(landing: LandingDay) -> None:
    bad = b'{"messageId":"m-0002","event":"Caf\xe9 \xff"}'
    out = sandwich(landing, bad)
    row = assert_sandwich(out, "invalid_utf8")
    assert row["raw_text"] == '{"messageId":"m-0002","event":"Caf\\xe9 \\xff"}'
    assert "not UTF-8" in row["message"] and "invalid continuation byte at byte 34" in row["message"]


def test_blank_and_whitespace_lines_are_quarantined(landing: LandingDay) -> None:
    landing.write_lines(EVENTS, [message(1), "", message(3), " \t ", message(5)])
    out = landing.ingest()
    assert [(q["line_number"], q["reason"], q["raw_text"]) for q in out.quarantine] == [
        (2, "blank_line", ""),
        (4, "blank_line", " \t "),
    ]
    assert out.raw_ids() == ["m-0001", "m-0003", "m-0005"]
    assert out.counts["lines_read"] == 5
    assert_reconciles(out)


def test_crlf_line_endings_are_accepted(landing: LandingDay) -> None:
    landing.write_bytes(EVENTS, b"".join(encode(message(n)) + b"\r\n" for n in (1, 2)))
    out = landing.ingest()
    assert out.raw_ids() == ["m-0001", "m-0002"]
    assert out.quarantine == []
    assert_reconciles(out)


# --- over-long lines -------------------------------------------------------------------


def padded_message(n: int, total_bytes: int) -> bytes:
    """A valid message whose encoded line is exactly ``total_bytes`` long."""
    base = encode(message(n, context={"pad": ""}))
    line = encode(message(n, context={"pad": "x" * (total_bytes - len(base))}))
    assert len(line) == total_bytes
    return line


def test_line_over_one_mib_keeps_a_prefix_and_states_its_length(landing: LandingDay) -> None:
    long_line = padded_message(2, MAX_LINE_BYTES + MAX_LINE_BYTES // 2)
    out = sandwich(landing, long_line)
    row = assert_sandwich(out, "line_too_long")
    assert row["raw_text"] == long_line[:KEPT_PREFIX_BYTES].decode("utf-8")
    assert len(row["raw_text"]) == KEPT_PREFIX_BYTES
    assert f"line is {len(long_line)} bytes" in row["message"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_line_length_limit_boundary(landing: LandingDay, newline: bytes) -> None:
    at_limit = padded_message(2, MAX_LINE_BYTES)
    over_limit = padded_message(3, MAX_LINE_BYTES + 1)
    lines = [encode(message(1)), at_limit, over_limit, encode(message(4))]
    landing.write_bytes(EVENTS, b"".join(line + newline for line in lines))
    out = landing.ingest()
    assert out.raw_ids() == ["m-0001", "m-0002", "m-0004"]
    row = only_quarantine_row(out, "line_too_long", FILE, 3)
    assert f"line is {MAX_LINE_BYTES + 1} bytes" in row["message"]
    assert out.counts["lines_read"] == 4
    assert_reconciles(out)


def test_over_long_last_line_without_newline(landing: LandingDay) -> None:
    long_line = padded_message(2, 2 * MAX_LINE_BYTES + 10)
    landing.write_bytes(EVENTS, encode(message(1)) + b"\n" + long_line)
    out = landing.ingest()
    row = only_quarantine_row(out, "line_too_long", FILE, 2)
    assert f"line is {len(long_line)} bytes" in row["message"]
    assert out.raw_ids() == ["m-0001"]
    assert_reconciles(out)


# --- file-level problems ---------------------------------------------------------------


def test_empty_file_is_one_file_level_row(landing: LandingDay) -> None:
    landing.write_bytes("empty.jsonl", b"")
    landing.write_lines(EVENTS, [message(1), message(2)])
    out = landing.ingest()
    row = only_quarantine_row(out, "empty_file", f"{DAY}/empty.jsonl", None)
    assert row["raw_text"] is None and row["message_id"] is None
    assert out.ledger_entry(f"{DAY}/empty.jsonl")["status"] == "empty"
    assert out.raw_ids() == ["m-0001", "m-0002"]
    assert out.counts["lines_read"] == 2
    assert out.counts["quarantined_files"] == 1
    assert_reconciles(out)


def test_truncated_gzip_keeps_the_readable_lines(landing: LandingDay) -> None:
    lines = [message(n, properties={"product_id": f"product-{n * 7919 % 1000}", "price": n * 1.25})
             for n in range(1, 101)]  # fmt: skip
    landing.write_gz("events.jsonl.gz", lines, keep_fraction=0.6)
    out = landing.ingest()
    rel = f"{DAY}/events.jsonl.gz"
    row = only_quarantine_row(out, "corrupt_gzip", rel, None)
    assert row["raw_text"] is None
    kept = out.counts["raw_events"]
    assert 0 < kept < 100
    # exactly the lines before the corrupt point, in order, and nothing else
    assert out.raw_ids() == [f"m-{n:04d}" for n in range(1, kept + 1)]
    assert out.counts["lines_read"] == kept
    entry = out.ledger_entry(rel)
    assert entry["status"] == "partial"
    assert entry["line_count"] == kept
    assert f"after line {kept}" in row["message"]
    assert_reconciles(out)


def test_file_that_is_not_gzip_at_all(landing: LandingDay) -> None:
    landing.write_bytes("events.jsonl.gz", encode(message(1)) + b"\n")
    landing.write_lines("good.jsonl", [message(2)])
    out = landing.ingest()
    only_quarantine_row(out, "corrupt_gzip", f"{DAY}/events.jsonl.gz", None)
    assert out.raw_ids() == ["m-0002"]
    assert out.counts["lines_read"] == 1
    assert_reconciles(out)


def test_parquet_with_another_schema_quarantines_every_row(landing: LandingDay) -> None:
    landing.write_parquet("other.parquet", pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]}))
    landing.write_lines(EVENTS, [message(1)])
    out = landing.ingest()
    rel = f"{DAY}/other.parquet"
    assert [(q["file_path"], q["line_number"], q["reason"]) for q in out.quarantine] == [
        (rel, n, "parquet_schema_mismatch") for n in (1, 2, 3)
    ]
    for n, q in enumerate(out.quarantine, start=1):
        assert "missing columns" in q["message"]
        assert "unknown columns ['id']" in q["message"]  # "name" is a Segment field (page name)
        assert json.loads(q["raw_text"]) == {"id": n, "name": "abc"[n - 1]}
    assert out.raw_ids() == ["m-0001"]
    assert out.counts["lines_read"] == 4
    assert out.counts["quarantined_by_reason"] == {"parquet_schema_mismatch": 3}
    assert out.ledger_entry(rel)["line_count"] == 3
    assert_reconciles(out)


def test_parquet_with_a_non_string_message_id_is_a_schema_mismatch(landing: LandingDay) -> None:
    table = pa.table({"messageId": [1], "type": ["track"], "receivedAt": [f"{DAY}T10:00:00Z"]})
    landing.write_parquet("ids.parquet", table)
    out = landing.ingest()
    row = only_quarantine_row(out, "parquet_schema_mismatch", f"{DAY}/ids.parquet", 1)
    assert "messageId is int64, expected string" in row["message"]
    assert_reconciles(out)


def test_valid_parquet_is_ingested_like_json_lines(landing: LandingDay) -> None:
    props = pa.struct([("product_id", pa.string()), ("price", pa.float64()), ("currency", pa.string())])
    table = pa.table(
        {
            "messageId": ["pq-1", "pq-2", "pq-3"],
            "type": ["track", "track", "track"],
            "event": ["Product Viewed", "Product Viewed", "Product Viewed"],
            "anonymousId": ["anon-1", None, "anon-3"],  # row 2 has no identity
            "timestamp": [f"{DAY}T10:00:00Z", f"{DAY}T10:01:00Z", f"{DAY}T12:02:00+02:00"],
            "receivedAt": [f"{DAY}T10:00:01Z", f"{DAY}T10:01:01Z", f"{DAY}T10:02:01Z"],
            "properties": pa.array(
                [{"product_id": f"p{n}", "price": 1.5 * n, "currency": "EUR"} for n in (1, 2, 3)], props
            ),
        }
    )
    landing.write_parquet("events.parquet", table)
    out = landing.ingest()
    rel = f"{DAY}/events.parquet"
    only_quarantine_row(out, "missing_identity", rel, 2)
    assert out.raw_ids() == ["pq-1", "pq-3"]
    first, third = out.raw
    assert (first["file_path"], first["line_number"], third["line_number"]) == (rel, 1, 3)
    assert json.loads(first["properties"]) == {"product_id": "p1", "price": 1.5, "currency": "EUR"}
    assert first["schema_version"] == "1-0-0"
    assert third["timestamp"] == datetime(2024, 3, 10, 10, 2, tzinfo=UTC)
    entry = out.ledger_entry(rel)
    assert (entry["format"], entry["status"], entry["line_count"]) == ("parquet", "loaded", 3)
    assert_reconciles(out)


def test_garbage_parquet_file_is_unreadable(landing: LandingDay) -> None:
    landing.write_bytes("broken.parquet", b"this is not parquet at all")
    landing.write_lines(EVENTS, [message(1)])
    out = landing.ingest()
    only_quarantine_row(out, "unreadable_file", f"{DAY}/broken.parquet", None)
    assert out.ledger_entry(f"{DAY}/broken.parquet")["status"] == "unreadable"
    assert out.raw_ids() == ["m-0001"]
    assert_reconciles(out)


# --- paths: symlinks and '..' ------------------------------------------------------------


def test_symlinked_file_outside_landing_is_refused(landing: LandingDay, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "secret.jsonl"
    outside.parent.mkdir()
    outside.write_bytes(encode(message(99, messageId="secret-1")) + b"\n")
    landing.write_lines(EVENTS, [message(1)])
    os.symlink(outside, landing.folder / "link.jsonl")
    out = landing.ingest()
    rel = f"{DAY}/link.jsonl"
    row = only_quarantine_row(out, "path_outside_landing", rel, None)
    assert "outside the landing folder" in row["message"]
    entry = out.ledger_entry(rel)
    assert (entry["status"], entry["line_count"], entry["sha256"], entry["size_bytes"]) == (
        "refused",
        0,
        "",
        0,
    )
    assert out.raw_ids() == ["m-0001"]
    assert out.counts["lines_read"] == 1
    assert_reconciles(out)


def test_symlinked_directory_outside_landing_is_refused(landing: LandingDay, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "more.jsonl").write_bytes(encode(message(99, messageId="secret-1")) + b"\n")
    landing.write_lines(EVENTS, [message(1)])
    os.symlink(outside, landing.folder / "sub", target_is_directory=True)
    out = landing.ingest()
    rel = f"{DAY}/sub"
    only_quarantine_row(out, "path_outside_landing", rel, None)
    assert out.ledger_entry(rel)["status"] == "refused"
    assert "secret-1" not in out.raw_ids()
    assert out.raw_ids() == ["m-0001"]
    assert_reconciles(out)


@pytest.mark.parametrize(
    "candidate", ["../etc/passwd", f"{DAY}/../../outside.jsonl", f"{DAY}/../{DAY}/events.jsonl"]
)
def test_resolve_inside_refuses_dot_dot(landing: LandingDay, candidate: str) -> None:
    landing.write_lines(EVENTS, [message(1)])
    with pytest.raises(UnsafePathError, match=r"'\.\.' is not allowed"):
        resolve_inside(landing.landing_root, Path(candidate))


def test_resolve_inside_accepts_inside_and_refuses_absolute_outside(
    landing: LandingDay, tmp_path: Path
) -> None:
    landing.write_lines(EVENTS, [message(1)])
    root = landing.landing_root
    assert resolve_inside(root, Path(FILE)) == (root / FILE).resolve()
    with pytest.raises(UnsafePathError, match="outside the landing folder"):
        resolve_inside(root, tmp_path)


# --- event time rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("2024-03-07T00:00:00Z", True),  # exactly the late window (3 days): still counts
        ("2024-03-06T23:59:59Z", False),
        ("2024-03-10T23:59:59Z", True),
        ("2024-03-11T00:00:00Z", False),
    ],
)
def test_late_window_and_future_boundaries(landing: LandingDay, timestamp: str, accepted: bool) -> None:
    out = sandwich(landing, message(2, timestamp=timestamp))
    if accepted:
        assert out.raw_ids() == ["m-0001", "m-0002", "m-0003"]
        assert out.quarantine == []
        assert_reconciles(out)
    else:
        assert_sandwich(out, "too_late" if timestamp < DAY else "future_timestamp")


def test_late_window_setting_is_used(landing: LandingDay) -> None:
    landing.write_lines(EVENTS, [message(1, timestamp="2024-03-08T10:00:00Z")])
    out = landing.ingest(late_window_days=1)
    row = only_quarantine_row(out, "too_late", FILE, 1)
    assert "more than 1 days before arrival" in row["message"]
    assert out.counts["too_late"] == 1


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # Segment clock-skew correction: timestamp = receivedAt - (sentAt - originalTimestamp)
        (
            {
                "originalTimestamp": f"{DAY}T10:00:00Z",
                "sentAt": f"{DAY}T10:00:05Z",
                "receivedAt": f"{DAY}T10:00:02Z",
            },
            datetime(2024, 3, 10, 9, 59, 57, tzinfo=UTC),
        ),
        (
            {
                "originalTimestamp": f"{DAY}T10:00:00.250Z",
                "sentAt": f"{DAY}T09:00:00Z",
                "receivedAt": f"{DAY}T12:00:00Z",
            },
            datetime(2024, 3, 10, 13, 0, 0, 250000, tzinfo=UTC),
        ),
        # without sentAt the client clock is taken as is; without either, receivedAt
        (
            {"originalTimestamp": f"{DAY}T08:00:00Z", "receivedAt": f"{DAY}T10:00:00Z"},
            datetime(2024, 3, 10, 8, tzinfo=UTC),
        ),
        ({"receivedAt": f"{DAY}T10:00:00Z"}, datetime(2024, 3, 10, 10, tzinfo=UTC)),
        # an explicit timestamp wins over the client clocks
        (
            {
                "timestamp": f"{DAY}T07:00:00Z",
                "originalTimestamp": f"{DAY}T10:00:00Z",
                "sentAt": f"{DAY}T10:00:05Z",
                "receivedAt": f"{DAY}T10:00:02Z",
            },
            datetime(2024, 3, 10, 7, tzinfo=UTC),
        ),
    ],
    ids=["skew", "skew_fraction", "original_only", "received_only", "timestamp_wins"],
)
def test_clock_skew_correction(landing: LandingDay, fields: dict[str, str], expected: datetime) -> None:
    landing.write_lines(EVENTS, [message(1, **{"timestamp": DROP, **fields})])
    out = landing.ingest()
    assert out.quarantine == []
    (row,) = out.raw
    assert row["timestamp"] == expected
    assert row["event_date"].isoformat() == expected.date().isoformat()
    assert_reconciles(out)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (f"{DAY}T12:00:00+02:00", datetime(2024, 3, 10, 10, tzinfo=UTC)),
        (f"{DAY}T01:30:00+02:00", datetime(2024, 3, 9, 23, 30, tzinfo=UTC)),  # UTC date is the day before
        (f"{DAY}T20:00:00-05:00", None),  # 01:00 UTC on the 11th: after the arrival day
        (epoch_ms(f"{DAY}T10:00:00Z"), datetime(2024, 3, 10, 10, tzinfo=UTC)),
        (epoch_ms(f"{DAY}T10:00:00Z") + 123, datetime(2024, 3, 10, 10, 0, 0, 123000, tzinfo=UTC)),
    ],
    ids=["plus_two", "plus_two_previous_utc_day", "minus_five_next_utc_day", "epoch_ms", "epoch_ms_fraction"],
)
def test_offsets_and_epoch_milliseconds(
    landing: LandingDay, timestamp: Any, expected: datetime | None
) -> None:
    landing.write_lines(EVENTS, [message(1, timestamp=timestamp)])
    out = landing.ingest()
    if expected is None:
        only_quarantine_row(out, "future_timestamp", FILE, 1)
        return
    assert out.quarantine == []
    (row,) = out.raw
    assert row["timestamp"] == expected
    assert row["event_date"].isoformat() == expected.date().isoformat()
    assert out.counts["late_events"] == (1 if expected.date().isoformat() < DAY else 0)
    assert_reconciles(out)


# The impossible-instant bound: a time is valid from 2000-01-01T00:00:00Z up to, not including,
# 2100-01-01T00:00:00Z (parsing._ts_ok, on the instant, whatever offset it is written with).
# invalid_timestamp is judged before too_late and future_timestamp, so cases are also placed
# where those two rules would not reject them: 2100-01-01 00:00Z arriving on 2100-01-01 is not
# in the future, and 1999-12-31 arriving on 2000-01-01 is within the 3-day late window.
# Per arrival day: (messageId, fields, verdict): the event date of an accepted line, or
# (reason, the field its message names) of a quarantined one.
BOUND_CASES: dict[str, list[tuple[str, dict[str, Any], str | tuple[str, str]]]] = {
    "2099-12-31": [
        ("ts-last-us", {"timestamp": "2099-12-31T23:59:59.999999Z"}, "2099-12-31"),
        ("ts-offset", {"timestamp": "2100-01-01T00:59:59.999+01:00"}, "2099-12-31"),  # 23:59:59.999Z
        ("ms-last", {"timestamp": epoch_ms("2100-01-01T00:00:00Z") - 1}, "2099-12-31"),
        ("ts-2100", {"timestamp": "2100-01-01T00:00:00Z"}, ("invalid_timestamp", "timestamp")),
        ("ts-2100-offset", {"timestamp": "2099-12-31T23:00:00-01:00"}, ("invalid_timestamp", "timestamp")),
        ("ms-2100", {"timestamp": epoch_ms("2100-01-01T00:00:00Z")}, ("invalid_timestamp", "timestamp")),
        ("recv-last-us", {"receivedAt": "2099-12-31T23:59:59.999999Z"}, "2099-12-31"),
        ("recv-2100", {"receivedAt": "2100-01-01T00:00:00Z"}, ("invalid_timestamp", "receivedAt")),
        # no timestamp: originalTimestamp is the event time, and the bound applies to it
        ("orig-last-us", {"timestamp": DROP, "originalTimestamp": "2099-12-31T23:59:59.999999Z"}, "2099-12-31"),
        ("orig-2100", {"timestamp": DROP, "originalTimestamp": "2100-01-01T00:00:00Z"},
         ("invalid_timestamp", "originalTimestamp")),
    ],
    "2100-01-01": [  # receivedAt stays in 2099: the arrival folder's date is not compared with it
        ("ts-last-us", {"timestamp": "2099-12-31T23:59:59.999999Z"}, "2099-12-31"),  # a late event
        ("ts-2100", {"timestamp": "2100-01-01T00:00:00Z"}, ("invalid_timestamp", "timestamp")),
        ("ts-2100-noon", {"timestamp": "2100-01-01T12:00:00Z"}, ("invalid_timestamp", "timestamp")),
    ],
    "2000-01-01": [
        ("ts-first", {"timestamp": "2000-01-01T00:00:00Z"}, "2000-01-01"),
        ("ms-first", {"timestamp": epoch_ms("2000-01-01T00:00:00Z")}, "2000-01-01"),
        ("ts-1999", {"timestamp": "1999-12-31T23:59:59.999999Z"}, ("invalid_timestamp", "timestamp")),
        ("ms-1999", {"timestamp": epoch_ms("2000-01-01T00:00:00Z") - 1}, ("invalid_timestamp", "timestamp")),
        ("ts-1999-offset", {"timestamp": "2000-01-01T00:59:59+01:00"}, ("invalid_timestamp", "timestamp")),
        ("recv-first", {"receivedAt": "2000-01-01T00:00:00Z"}, "2000-01-01"),
        ("recv-1999", {"receivedAt": "1999-12-31T23:59:59.999999Z"}, ("invalid_timestamp", "receivedAt")),
    ],
}  # fmt: skip
BOUND_DEFAULTS = {  # valid times on each arrival day, which the cases override
    "2099-12-31": {"timestamp": "2099-12-31T12:00:00Z", "receivedAt": "2099-12-31T12:00:01Z"},
    "2100-01-01": {"timestamp": "2099-12-31T12:00:00Z", "receivedAt": "2099-12-31T23:59:59Z"},
    "2000-01-01": {"timestamp": "2000-01-01T12:00:00Z", "receivedAt": "2000-01-01T12:00:01Z"},
}


@pytest.mark.parametrize("arrival_day", sorted(BOUND_CASES))
def test_timestamps_outside_2000_to_2099_are_invalid_at_the_exact_bound(
    tmp_path: Path, arrival_day: str
) -> None:
    cases = BOUND_CASES[arrival_day]
    landing = LandingDay(tmp_path / "data", day=arrival_day)
    landing.write_lines(EVENTS, [
        message(n, messageId=mid, **{**BOUND_DEFAULTS[arrival_day], **fields})
        for n, (mid, fields, _) in enumerate(cases, start=1)
    ])  # fmt: skip
    out = landing.ingest()
    verdicts: dict[str, str | tuple[str, str]] = {
        r["message_id"]: r["event_date"].isoformat() for r in out.raw
    }
    for q in out.quarantine:
        assert q["line_number"] is not None
        assert q["message"].endswith(" is not an ISO 8601 time or epoch milliseconds between 2000 and 2099")
        verdicts[q["message_id"]] = (q["reason"], q["message"].split(" ")[0])
    assert verdicts == {mid: verdict for mid, _, verdict in cases}
    rejected = sum(1 for _, _, verdict in cases if isinstance(verdict, tuple))
    assert out.counts["quarantined_by_reason"] == {"invalid_timestamp": rejected}
    assert_reconciles(out)


# --- other Segment call types ------------------------------------------------------------


def test_screen_group_and_alias_calls_are_accepted_with_their_type(landing: LandingDay) -> None:
    """Not only track, page and identify: screen, group and alias calls reach raw_events and,
    after the dedupe step, events, keeping their type (and no event name)."""
    lines = [
        message(1),
        message(2, type="screen", event=DROP, name="Home Screen", properties={"variation": "blue"}),
        message(3, type="group", event=DROP, properties=DROP, userId="u-3", groupId="g-1",
                traits={"name": "Acme", "plan": "pro"}),
        message(4, type="alias", event=DROP, properties=DROP, anonymousId=DROP, userId="u-4",
                previousId="anon-4"),
    ]  # fmt: skip
    landing.write_lines(EVENTS, lines)
    out = landing.ingest()
    assert out.quarantine == []
    expected = [
        ("m-0001", "track", "Product Viewed", None, "anon-1"),
        ("m-0002", "screen", None, None, "anon-2"),
        ("m-0003", "group", None, "u-3", "anon-3"),
        ("m-0004", "alias", None, "u-4", None),
    ]
    columns = ("message_id", "type", "event", "user_id", "anonymous_id")
    assert [tuple(r[c] for c in columns) for r in out.raw] == expected
    by_id = {r["message_id"]: r for r in out.raw}
    assert json.loads(by_id["m-0002"]["properties"]) == {"variation": "blue"}
    assert json.loads(by_id["m-0003"]["traits"]) == {"name": "Acme", "plan": "pro"}
    assert out.counts["unregistered_events"] == 3  # no schema is registered for these types
    assert_reconciles(out)

    settings = landing.settings()
    result = dedupe_events_day(settings, DAY)
    assert (result.counts["events"], result.counts["duplicates"], result.counts["id_conflicts"]) == (4, 0, 0)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        events = read_parquet_rows(con, result.published["events"].path, "message_id")
    finally:
        con.close()
    assert [tuple(r[c] for c in columns) for r in events] == expected


def test_numeric_user_id_is_accepted_as_string(landing: LandingDay) -> None:
    landing.write_lines(EVENTS, [message(1, userId=12345, anonymousId=DROP)])
    out = landing.ingest()
    assert out.quarantine == []
    (row,) = out.raw
    assert row["user_id"] == "12345" and row["anonymous_id"] is None
    assert_reconciles(out)


# --- registered and unregistered events ------------------------------------------------


def test_unregistered_event_is_accepted_by_default(landing: LandingDay) -> None:
    out = sandwich(landing, message(2, event="Mystery Event", properties={"x": 1}))
    assert out.quarantine == []
    assert out.raw_ids() == ["m-0001", "m-0002", "m-0003"]
    assert out.counts["unregistered_events"] == 1
    by_id = {r["message_id"]: r for r in out.raw}
    assert by_id["m-0002"]["schema_version"] is None
    assert by_id["m-0001"]["schema_version"] == "1-0-0"
    assert_reconciles(out)


def test_unregistered_event_is_quarantined_when_configured(landing: LandingDay) -> None:
    landing.write_lines(EVENTS, [message(1), message(2, event="Mystery Event"), message(3)])
    out = landing.ingest(unregistered_events="quarantine")
    row = assert_sandwich(out, "unregistered_event")
    assert row["message"] == 'no schema registered for track "Mystery Event"'
    assert out.counts["unregistered_events"] == 0


# --- folders, suffixes and duplicate files ----------------------------------------------


def test_date_equals_folder_naming(tmp_path: Path) -> None:
    landing = LandingDay(tmp_path / "data", folder_name=f"date={DAY}")
    landing.write_lines(EVENTS, [message(1), "not json"])
    out = landing.ingest()
    assert out.raw_ids() == ["m-0001"]
    assert out.raw[0]["file_path"] == f"date={DAY}/{EVENTS}"
    only_quarantine_row(out, "invalid_json", f"date={DAY}/{EVENTS}", 2)
    assert_reconciles(out)


def test_both_folder_namings_and_nested_folders_are_read(tmp_path: Path) -> None:
    plain = LandingDay(tmp_path / "data")
    hive = LandingDay(tmp_path / "data", folder_name=f"date={DAY}")
    plain.write_lines("a/b/deep.jsonl", [message(1)])
    hive.write_lines(EVENTS, [message(2)])
    LandingDay(tmp_path / "data", day="2024-03-11").write_lines(EVENTS, [message(3)])  # another day
    out = plain.ingest()
    assert sorted(out.raw_ids()) == ["m-0001", "m-0002"]
    assert {r["file_path"] for r in out.raw} == {f"{DAY}/a/b/deep.jsonl", f"date={DAY}/{EVENTS}"}
    assert_reconciles(out)


def test_suffixes_are_read_and_other_files_ignored(landing: LandingDay) -> None:
    landing.write_lines("a.ndjson", [message(1)])
    landing.write_lines("b.json", [message(2)])
    landing.write_gz("c.jsonl.gz", [message(3), message(4)])
    landing.write_bytes("notes.txt", b"remember to buy milk\n")
    out = landing.ingest()
    assert out.raw_ids() == ["m-0001", "m-0002", "m-0003", "m-0004"]
    row = only_quarantine_row(out, "unsupported_file", f"{DAY}/notes.txt", None)
    assert row["raw_text"] is None
    formats = {e["path"]: (e["format"], e["status"]) for e in out.ledger}
    assert formats == {
        f"{DAY}/a.ndjson": ("jsonl", "loaded"),
        f"{DAY}/b.json": ("jsonl", "loaded"),
        f"{DAY}/c.jsonl.gz": ("jsonl.gz", "loaded"),
        f"{DAY}/notes.txt": ("unknown", "ignored"),
    }
    assert out.counts["lines_read"] == 4  # the ignored file's line is not read
    assert_reconciles(out)


def test_same_file_delivered_twice_is_read_once(landing: LandingDay) -> None:
    lines = [message(1), message(2), "not json"]
    first = landing.write_lines("a.jsonl", lines)
    second = landing.write_lines("b.jsonl", lines)
    assert first.read_bytes() == second.read_bytes()
    out = landing.ingest()
    assert out.raw_ids() == ["m-0001", "m-0002"]
    assert {r["file_path"] for r in out.raw} == {f"{DAY}/a.jsonl"}
    only_quarantine_row(out, "invalid_json", f"{DAY}/a.jsonl", 3)
    dup = out.ledger_entry(f"{DAY}/b.jsonl")
    assert (dup["status"], dup["duplicate_of"], dup["line_count"]) == ("duplicate_file", f"{DAY}/a.jsonl", 3)
    assert dup["sha256"] == out.ledger_entry(f"{DAY}/a.jsonl")["sha256"]
    assert out.counts["duplicate_file_lines"] == 3
    assert out.counts["lines_read"] == 6
    assert_reconciles(out)


def test_ingest_is_repeatable(landing: LandingDay) -> None:
    landing.write_lines(EVENTS, [message(1), "not json", message(3)])
    first = landing.ingest()
    second = landing.ingest()
    assert first.raw == second.raw and first.quarantine == second.quarantine
    assert second.result.published["raw_events"].changed is False


# --- everything at once -------------------------------------------------------------


def all_bad_kinds_file() -> tuple[list[Any], Counter[str]]:
    """Valid lines interleaved with every line-level bad kind; returns lines and planted reasons."""
    bad: list[tuple[str, Any]] = [(case[2], case[1]) for case in LINE_CASES]
    bad += [
        ("invalid_utf8", b'{"messageId":"u-1","event":"\xff\xfe"}'),
        ("line_too_long", padded_message(500, MAX_LINE_BYTES + 100)),
        ("blank_line", ""),
        ("blank_line", "   "),
        ("unregistered_event", message(600, event="Mystery Event")),
    ]
    lines: list[Any] = []
    planted: Counter[str] = Counter()
    for i, (reason, line) in enumerate(bad):
        lines.append(message(1000 + i))  # a valid line before every bad one
        lines.append(line)
        planted[reason] += 1
    lines.append(message(2000))
    return lines, planted


@pytest.mark.parametrize("unregistered", ["accept", "quarantine"])
def test_every_bad_kind_in_one_file(landing: LandingDay, unregistered: str) -> None:
    lines, planted = all_bad_kinds_file()
    valid = [f"m-{n:04d}" for n in [*range(1000, 1000 + sum(planted.values())), 2000]]
    if unregistered == "accept":
        planted["unregistered_event"] -= 1
        valid.append("m-0600")
    planted = +planted  # drop zero counts
    landing.write_lines(EVENTS, lines)
    out = landing.ingest(unregistered_events=unregistered)

    assert out.counts["quarantined_by_reason"] == dict(planted)
    assert Counter(q["reason"] for q in out.quarantine) == planted
    assert all(q["message"] and q["file_path"] == FILE and q["line_number"] for q in out.quarantine)
    # each quarantined line is exactly the bad line planted at that position
    for q in out.quarantine:
        assert lines[q["line_number"] - 1] is not None
        if q["reason"] not in ("invalid_utf8", "line_too_long"):
            assert q["raw_text"] == encode(lines[q["line_number"] - 1]).decode("utf-8")
    assert sorted(out.raw_ids()) == sorted(valid)
    assert out.counts["lines_read"] == len(lines)
    assert out.counts["unregistered_events"] == (1 if unregistered == "accept" else 0)
    assert_reconciles(out)
