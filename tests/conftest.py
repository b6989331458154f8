"""Shared fixtures: a throwaway data directory and builders for landing files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics_pipeline.settings import PipelineSettings

# Keep Dagster from writing telemetry or looking for a real DAGSTER_HOME during tests.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture
def settings(tmp_path: Path) -> PipelineSettings:
    return PipelineSettings(data_dir=str(tmp_path / "data"), duckdb_memory_limit="1GB", duckdb_threads=2)


def message(**overrides: Any) -> dict[str, Any]:
    """A valid Segment track message; override or drop (value None) any field."""
    base: dict[str, Any] = {
        "messageId": "m-1",
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-1",
        "timestamp": "2025-01-10T12:00:00.000Z",
        "receivedAt": "2025-01-10T12:00:01.000Z",
        "properties": {"product_id": "p1", "price": 9.5, "currency": "USD"},
        "context": {"library": {"name": "analytics.js", "version": "4.1.0"}},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signup_day(
    day: str,
    persons: Iterable[int] = range(6),
    hour: Callable[[int], str] = lambda person: f"1{person % 10}",
    signed_up_properties: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Each person: a page view, a product view, then a sign-up that links anonymousId to userId.

    A day every model has something to build from (sessions, a funnel, identities, retention).
    """
    signed_up = {"method": "email"} if signed_up_properties is None else signed_up_properties
    rows = []
    for person in persons:
        for step, (kind, name) in enumerate(
            [("page", None), ("track", "Product Viewed"), ("track", "Signed Up")]
        ):
            at = f"{day}T{hour(person)}:0{step}:00.000Z"
            rows.append(
                message(
                    messageId=f"{day}-{person}-{step}", type=kind, event=name, anonymousId=f"anon-{person}",
                    userId=f"user-{person}" if name == "Signed Up" else None, timestamp=at, receivedAt=at,
                    properties={"path": "/pricing"} if kind == "page"
                    else signed_up if name == "Signed Up" else {"product_id": "p1", "price": 9.5, "currency": "USD"},
                )
            )  # fmt: skip
    return rows


def write_lines(settings: PipelineSettings, day: str, name: str, records: list[Any]) -> Path:
    """Write records (dicts are JSON-encoded, str/bytes written as they are) as one landing file."""
    path = settings.landing_path / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for record in records:
            if isinstance(record, bytes):
                handle.write(record + b"\n")
            elif isinstance(record, str):
                handle.write(record.encode() + b"\n")
            else:
                handle.write(json.dumps(record).encode() + b"\n")
    return path


def query(path_or_glob: str | Path, sql: str = "SELECT * FROM t") -> list[tuple[Any, ...]]:
    """Run ``sql`` against a Parquet file or glob exposed as table ``t``."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{path_or_glob}')")
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def dagster_instance(tmp_path: Path) -> Iterator[Any]:
    from dagster import DagsterInstance

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.local_temp(str(home)) as instance:
        yield instance


PIPELINE_DAYS = 4
PIPELINE_EVENTS_PER_DAY = 1200


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> PipelineSettings:
    """Four generated days run through the real pipeline (``analytics-pipeline run``), once per worker.

    Shared read-only by the metrics, SLO and analyst tests; a test that changes data copies it first.
    """
    from datetime import date, timedelta

    from analytics_pipeline import cli
    from analytics_pipeline.sample_data.generator import generate

    root = tmp_path_factory.mktemp("pipeline")
    settings = PipelineSettings(data_dir=str(root / "data"), duckdb_memory_limit="1GB", duckdb_threads=2)
    start = date.today() - timedelta(days=PIPELINE_DAYS)
    generate(settings.landing_path, start, PIPELINE_DAYS, PIPELINE_EVENTS_PER_DAY, seed=11)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        instance = cli.dagster_instance()
        assert cli.run_days(settings, cli.landing_days(settings), instance, echo=False)
    return settings
