"""The generator's files re-read independently: counts, rules and determinism.

The checks here classify lines on their own (they do not call the generator's
internals), so a wrong count in the summary fails instead of agreeing with itself.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline.sample_data.generator import (
    BOM,
    FILE_REASONS,
    MALFORMED_REASONS,
    FaultRates,
    GeneratedSummary,
    generate,
)

START = date(2024, 3, 1)
TRACK_NAMES = {"Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Signed Up"}
CURRENCIES = {"USD", "EUR", "GBP"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(value: Any) -> int:
    """ISO 8601 (any offset) or epoch milliseconds -> epoch milliseconds; raises if invalid."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("no offset")
    return (parsed - EPOCH) // timedelta(milliseconds=1)


def ms_date(ms: int) -> date:
    return (EPOCH + timedelta(milliseconds=ms)).date()


def schema_problem(msg: dict[str, Any]) -> str | None:
    props = msg.get("properties", {})
    name = msg.get("event")
    if msg["type"] == "page":
        return None if set(props) == {"path", "url", "title", "referrer"} else "page properties"
    if msg["type"] == "identify":
        traits = msg["traits"]
        return (
            None
            if traits.get("plan") in {"free", "pro", "enterprise"} and "@" in traits["email"]
            else "traits"
        )
    if name not in TRACK_NAMES:
        return "unknown event"
    money = [k for k in ("price", "value", "revenue") if k in props]
    if any(not isinstance(props[k], (int, float)) or props[k] < 0 for k in money):
        return "negative or non-numeric amount"
    if "currency" in props and props["currency"] not in CURRENCIES:
        return "currency"
    if name == "Product Added" and not (isinstance(props["quantity"], int) and props["quantity"] >= 1):
        return "quantity"
    if name == "Signed Up" and props.get("method") not in {"email", "google", "github"}:
        return "method"
    if name in {"Product Viewed", "Product Added"} and not isinstance(props.get("product_id"), str):
        return "product_id"
    if name in {"Checkout Started", "Order Completed"} and not isinstance(props.get("order_id"), str):
        return "order_id"
    return None


def classify(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """('valid', msg) or (reason code, None), decided from the bytes alone."""
    if len(raw) > 1 << 20:
        return "line_too_long", None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    try:
        msg = json.loads(text)
    except ValueError:
        return ("truncated_line" if text.startswith("{") and not text.endswith("}") else "invalid_json"), None
    if not isinstance(msg, dict):
        return "not_an_object", None
    top_keys = [key for key, _ in json.JSONDecoder(object_pairs_hook=list).decode(text)]
    if len(top_keys) != len(set(top_keys)):
        return "duplicate_key", None
    if not isinstance(msg.get("messageId"), str) or not msg["messageId"]:
        return "missing_message_id", None
    if "receivedAt" not in msg:
        return "missing_received_at", None
    body = "traits" if msg.get("type") == "identify" else "properties"
    if body in msg and not isinstance(msg[body], dict):
        return "wrong_field_type", None
    if not msg.get("userId") and not msg.get("anonymousId"):
        return "missing_identity", None
    if msg.get("type") not in {"track", "page", "identify"}:
        return "unknown_type", None
    try:
        for key in ("timestamp", "originalTimestamp", "sentAt", "receivedAt"):
            if key in msg:
                to_ms(msg[key])
    except ValueError:
        return "invalid_timestamp", None
    if schema_problem(msg):
        return "schema_violation", None
    return "valid", msg


@dataclass
class Tree:
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> raw (decompressed) bytes
    valid: list[tuple[date, dict[str, Any]]] = field(default_factory=list)  # (folder date, message)
    reasons: Counter[str] = field(default_factory=Counter)
    line_count: int = 0
    boms: int = 0  # files that open with a UTF-8 byte-order mark


def read_tree(root: Path) -> Tree:
    tree = Tree()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name == "truncated.jsonl.gz":
            continue  # checked on its own
        data = path.read_bytes()
        if path.suffix == ".gz":
            assert data[3] == 0 and data[4:8] == b"\0\0\0\0", "gzip header: no filename, mtime 0"
            data = gzip.decompress(data)
        if data.startswith(BOM):
            data = data[len(BOM) :]
            tree.boms += 1
        tree.files[rel] = data
        if path.name == "empty.jsonl":
            assert data == b""
            tree.reasons["empty_file"] += 1
            continue
        assert data.endswith(b"\n")
        folder = date.fromisoformat(path.parent.name)
        for raw in data.split(b"\n")[:-1]:
            tree.line_count += 1
            verdict, msg = classify(raw)
            if msg is None:
                tree.reasons[verdict] += 1
            else:
                tree.valid.append((folder, msg))
    return tree


def event_ms(msg: dict[str, Any]) -> int:
    """Segment's rule: timestamp, else receivedAt - (sentAt - originalTimestamp)."""
    if "timestamp" in msg:
        return to_ms(msg["timestamp"])
    return to_ms(msg["receivedAt"]) - (to_ms(msg["sentAt"]) - to_ms(msg["originalTimestamp"]))


def content(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k not in {"receivedAt", "sentAt"}}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeneratedSummary, Tree]:
    root = tmp_path_factory.mktemp("landing")
    summary = generate(root, START, days=3, events_per_day=1500, seed=11)
    return root, summary, read_tree(root)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    args: dict[str, Any] = {"start_date": START, "days": 3, "events_per_day": 400}
    first = generate(tmp_path / "a", seed=5, **args)
    second = generate(tmp_path / "b", seed=5, **args)
    other = generate(tmp_path / "c", seed=6, **args)
    assert first == second
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "c")
    assert other.events_planted == first.events_planted == 1200


def test_summary_counts_match_the_files(run: tuple[Path, GeneratedSummary, Tree]) -> None:
    root, summary, tree = run
    groups: dict[str, list[tuple[date, dict[str, Any]]]] = defaultdict(list)
    for folder, msg in tree.valid:
        groups[msg["messageId"]].append((folder, msg))
    dups = conflicts = late = 0
    for copies in groups.values():
        assert len(copies) <= 2, "a planted fault copies an event at most once"
        copies.sort(key=lambda c: (c[0], to_ms(c[1]["receivedAt"])))
        (folder, first), later = copies[0], copies[1:]
        when = event_ms(first)
        late += folder != ms_date(when)
        for _, copy in later:
            assert event_ms(copy) == when, "a copy keeps the event time"
            assert to_ms(copy["receivedAt"]) >= to_ms(first["receivedAt"])
            if content(copy) == content(first):
                dups += 1
            else:
                conflicts += 1
                body = "traits" if first["type"] == "identify" else "properties"
                assert copy[body] != first[body]
                assert {k: copy.get(k) for k in ("timestamp", "originalTimestamp")} == {
                    k: first.get(k) for k in ("timestamp", "originalTimestamp")
                }
                assert to_ms(copy["receivedAt"]) > to_ms(first["receivedAt"])
    assert len(groups) == summary.events_planted == 3 * 1500
    assert (dups, conflicts, late) == (
        summary.duplicates_planted,
        summary.id_conflicts_planted,
        summary.late_planted,
    )
    assert dups > 0 and conflicts > 0 and late > 0
    corrupt = 1 if (root / "2024-03-02" / "truncated.jsonl.gz").exists() else 0
    assert dict(tree.reasons) | ({"corrupt_gzip": 1} if corrupt else {}) == summary.malformed_planted
    assert tree.line_count == summary.lines_written
    assert len(tree.files) + corrupt == summary.files_written
    assert tree.boms == summary.boms_planted == 1
    folders = sorted({p.parent.name for p in root.rglob("*") if p.is_file()})
    assert folders == summary.days
    assert summary.days[:3] == ["2024-03-01", "2024-03-02", "2024-03-03"]


def test_every_valid_line_has_the_segment_fields(run: tuple[Path, GeneratedSummary, Tree]) -> None:
    _, _, tree = run
    formats: Counter[str] = Counter()
    for folder, msg in tree.valid:
        assert isinstance(msg["messageId"], str) and msg["type"] in {"track", "page", "identify"}
        assert msg.get("userId") or msg.get("anonymousId")
        assert ("event" in msg) == (msg["type"] == "track")
        assert ("timestamp" in msg) != ("originalTimestamp" in msg and "sentAt" in msg)
        assert ("traits" in msg) == (msg["type"] == "identify") != ("properties" in msg)
        if msg["type"] == "identify":
            assert msg.get("userId") and msg.get("anonymousId"), "identify links both ids"
        assert set(msg["context"]) == {"library", "userAgent", "ip", "locale", "page"}
        assert ms_date(to_ms(msg["receivedAt"])) == folder, "the folder is receivedAt's UTC date"
        assert msg["receivedAt"].endswith("Z")
        for key in ("timestamp", "originalTimestamp"):
            if key in msg:
                value = msg[key]
                formats["epoch" if isinstance(value, int) else "Z" if value.endswith("Z") else "offset"] += 1
        assert START <= ms_date(event_ms(msg)) < START + timedelta(days=3)
    assert formats["Z"] > formats["offset"] > formats["epoch"] > 0
    with_ts = sum("timestamp" in m for _, m in tree.valid) / len(tree.valid)
    assert 0.6 < with_ts < 0.8


def test_every_reason_appears(run: tuple[Path, GeneratedSummary, Tree]) -> None:
    _, summary, tree = run
    assert set(summary.malformed_planted) == set(MALFORMED_REASONS) | set(FILE_REASONS)
    assert set(tree.reasons) == set(MALFORMED_REASONS) | {"empty_file"}
    assert summary.malformed_planted["line_too_long"] == 1


def test_malformed_message_ids_are_unique(run: tuple[Path, GeneratedSummary, Tree]) -> None:
    root, _, tree = run
    valid_ids = {m["messageId"] for _, m in tree.valid}
    seen: list[str] = []
    for data in tree.files.values():
        for raw in data.split(b"\n")[:-1]:
            verdict, _ = classify(raw)
            if verdict != "valid" and b'"messageId":"' in raw[:200]:
                seen.append(raw.split(b'"messageId":"', 1)[1].split(b'"', 1)[0].decode())
    assert len(seen) == len(set(seen)) > 0
    assert not set(seen) & valid_ids


def test_truncated_gzip_keeps_its_first_lines(run: tuple[Path, GeneratedSummary, Tree]) -> None:
    root, summary, tree = run
    first_day = set(tree.files["2024-03-01/part-000.jsonl.gz"].split(b"\n"))
    for name in ("part-001.jsonl.gz", "part-002.jsonl.gz"):
        first_day |= set(tree.files[f"2024-03-01/{name}"].split(b"\n"))
    lines: list[bytes] = []
    with pytest.raises(EOFError), gzip.open(root / "2024-03-02" / "truncated.jsonl.gz", "rb") as handle:
        for line in handle:
            lines.append(line)
    assert 0 < len(lines) == summary.corrupt_gzip_readable_lines < 50
    assert all(line.endswith(b"\n") and line[:-1] in first_day for line in lines)


def test_clock_skew_recovers_the_event_time(run: tuple[Path, GeneratedSummary, Tree]) -> None:
    _, _, tree = run
    first_folder: dict[str, date] = {}
    first_received: dict[str, int] = {}  # the original; planted copies arrive later
    for folder, msg in tree.valid:
        mid, received = msg["messageId"], to_ms(msg["receivedAt"])
        first_folder[mid] = min(folder, first_folder.get(mid, folder))
        first_received[mid] = min(received, first_received.get(mid, received))
    skewed = 0
    for _, msg in tree.valid:
        if "timestamp" in msg:
            continue
        true_ms = event_ms(msg)
        skew = to_ms(msg["originalTimestamp"]) - true_ms
        assert abs(skew) <= 5 * 60_000
        skewed += skew != 0
        lag = (first_folder[msg["messageId"]] - ms_date(true_ms)).days
        assert 0 <= lag <= 5
        if to_ms(msg["receivedAt"]) == first_received[msg["messageId"]] and lag == 0:
            assert to_ms(msg["receivedAt"]) - true_ms <= 10_000, "on time means seconds, not days"
    assert skewed > 100


def test_sessions_and_identity_stitching(run: tuple[Path, GeneratedSummary, Tree]) -> None:
    _, _, tree = run
    originals: dict[str, dict[str, Any]] = {}
    for _, msg in tree.valid:
        originals.setdefault(msg["messageId"], msg)
    anon_of_user = {
        m["userId"]: m["anonymousId"] for m in originals.values() if m.get("userId") and m.get("anonymousId")
    }
    times: dict[str, list[int]] = defaultdict(list)
    for msg in originals.values():
        times[msg.get("anonymousId") or anon_of_user[msg["userId"]]].append(event_ms(msg))
    for person in times.values():
        person.sort()
        for a, b in zip(person, person[1:], strict=False):
            assert b - a <= 240_000 or b - a > 30 * 60_000, "inside a session or > 30 min apart"
    linked = 0
    for msg in originals.values():
        if msg["type"] == "identify":
            anon, when = msg["anonymousId"], event_ms(msg)
            before = [m for m in originals.values() if m.get("anonymousId") == anon and event_ms(m) < when]
            if before and all("userId" not in m for m in before):
                linked += 1
    assert linked > 0
    anonymous_only = [m for m in originals.values() if "userId" not in m]
    assert anonymous_only and all(m["type"] != "identify" for m in anonymous_only)


def test_plain_files_and_no_faults(tmp_path: Path) -> None:
    summary = generate(tmp_path / "plain", START, 2, 300, gzip_files=False, files_per_day=2)
    names = {p.name for p in (tmp_path / "plain").rglob("*") if p.is_file()}
    assert names <= {"part-000.jsonl", "part-001.jsonl", "empty.jsonl"}
    assert "corrupt_gzip" not in summary.malformed_planted
    assert summary.corrupt_gzip_readable_lines == 0
    clean = generate(tmp_path / "clean", START, 2, 300, faults=FaultRates(0, 0, 0, 0))
    tree = read_tree(tmp_path / "clean")
    assert clean.malformed_planted == {} and not tree.reasons
    assert clean.boms_planted == tree.boms == 0
    assert (clean.duplicates_planted, clean.id_conflicts_planted, clean.late_planted) == (0, 0, 0)
    assert clean.days == ["2024-03-01", "2024-03-02"]
    assert len(tree.valid) == clean.lines_written == clean.events_planted == 600
    assert len({m["messageId"] for _, m in tree.valid}) == 600
