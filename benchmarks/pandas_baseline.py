"""The essential work of a day in plain pandas: parse, dedupe, events Parquet, sessions, DAU.

A baseline for ``bench_day.py`` (run there at 1M events): what a straightforward pandas
script does with the same landing files, without accounting, quarantine or checks. Lines
that are not JSON objects with the required fields are skipped.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

FIELDS = ("messageId", "type", "event", "userId", "anonymousId", "timestamp", "originalTimestamp",
          "sentAt", "receivedAt", "properties", "traits", "context")  # fmt: skip
TYPES = {"track", "page", "screen", "identify", "group", "alias"}


def _records(path: Path) -> list[tuple[Any, ...]]:
    rows = []
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if len(line) > 1 << 20:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                rows.append(tuple(msg.get(f) for f in FIELDS))
    return rows


def _times(column: pd.Series) -> pd.Series:
    """ISO 8601 strings (any offset) or epoch milliseconds -> UTC timestamps (NaT if neither)."""
    numeric = pd.to_numeric(column.where(column.map(lambda v: isinstance(v, int | float))), errors="coerce")
    text = column.where(column.map(lambda v: isinstance(v, str)))
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    from_ms = pd.to_datetime(numeric, unit="ms", utc=True, errors="coerce")
    return parsed.fillna(from_ms)


def _json(value: Any) -> str | None:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else None


def run(files: list[Path], work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    work.mkdir(parents=True, exist_ok=True)
    steps = []

    started = time.perf_counter()
    frame = pd.DataFrame([row for path in files for row in _records(path)], columns=list(FIELDS))
    frame = frame.rename(
        columns={"messageId": "message_id", "userId": "user_id", "anonymousId": "anonymous_id"}
    )
    given, original = _times(frame["timestamp"]), _times(frame["originalTimestamp"])
    sent, received = _times(frame["sentAt"]), _times(frame["receivedAt"])
    skewed = received - (sent - original)
    frame["timestamp"] = given.fillna(skewed).fillna(original).fillna(received)
    frame["received_at"], frame["sent_at"], frame["original_timestamp"] = received, sent, original
    frame = frame[
        frame["message_id"].map(lambda v: isinstance(v, str) and v != "")
        & frame["received_at"].notna()
        & (frame["user_id"].notna() | frame["anonymous_id"].notna())
        & frame["type"].isin(TYPES)
        & ((frame["type"] != "track") | frame["event"].notna())
        & (frame["timestamp"] >= pd.Timestamp("2000-01-01", tz="UTC"))
        & (frame["timestamp"] < pd.Timestamp("2100-01-01", tz="UTC"))
    ].copy()
    frame["user_id"] = frame["user_id"].map(lambda v: None if v is None else str(v))
    frame["event_date"] = frame["timestamp"].dt.date
    for column in ("properties", "traits", "context"):
        frame[column] = frame[column].map(_json)
    frame = frame.drop(columns=["originalTimestamp", "sentAt", "receivedAt"])
    steps.append({"step": "parse", "seconds": round(time.perf_counter() - started, 3)})

    started = time.perf_counter()
    frame = frame.sort_values(["received_at"], kind="stable")
    events = frame.drop_duplicates(subset=["event_date", "message_id"], keep="first")
    steps.append({"step": "dedupe", "seconds": round(time.perf_counter() - started, 3)})

    started = time.perf_counter()
    counts = {}
    for day, part in events.sort_values(["timestamp", "message_id"]).groupby("event_date"):
        part.to_parquet(work / f"events-{day}.parquet", compression="zstd", index=False)
        counts[str(day)] = len(part)
    steps.append({"step": "events", "seconds": round(time.perf_counter() - started, 3)})

    started = time.perf_counter()
    person = events["user_id"].fillna("anonymous:" + events["anonymous_id"].fillna(""))
    ordered = events.assign(person_id=person).sort_values(["person_id", "timestamp", "message_id"])
    gap = ordered.groupby("person_id")["timestamp"].diff()
    ordered["session_no"] = (
        (gap.isna() | (gap > pd.Timedelta(minutes=30))).astype(int).groupby(ordered["person_id"]).cumsum()
    )
    sessions = ordered.groupby(["person_id", "session_no"]).agg(
        started_at=("timestamp", "min"), ended_at=("timestamp", "max"), event_count=("message_id", "size"),
        page_views=("type", lambda t: int((t == "page").sum())),
    )  # fmt: skip
    sessions["session_date"] = sessions["started_at"].dt.date
    sessions.reset_index().to_parquet(work / "sessions.parquet", compression="zstd", index=False)
    steps.append({"step": "sessions", "seconds": round(time.perf_counter() - started, 3)})

    started = time.perf_counter()
    dau = ordered.groupby("event_date")["person_id"].nunique()
    dau.reset_index().to_parquet(work / "daily_active_users.parquet", index=False)
    steps.append({"step": "daily_active_users", "seconds": round(time.perf_counter() - started, 3)})
    outputs = {
        "events": counts,
        "sessions": {str(k): int(v) for k, v in sessions.groupby("session_date").size().items()},
        "dau": {str(k): int(v) for k, v in dau.items()},
    }
    return steps, outputs
