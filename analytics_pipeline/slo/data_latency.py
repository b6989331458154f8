"""Data-latency SLOs (``checks/slos.yml``): how long data takes to become readable.

Two measures, both recorded as numeric metadata on the materialization and checked
against the SLO (never blocking: withholding data would not make it fresher):

* per events partition, p50/p95/p99 of (publish time - ``receivedAt``) over its events: how
  long after the collector received an event an analyst could read it;
* per arrival day, the time from the end of that day (UTC midnight after it) to the
  publication of its partitions (raw_events, quarantined_events, file_ledger).

The publish time is the published file's modification time (os.replace keeps the time the
audited file was written), read after the step, so no transform depends on the clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
from pydantic import Field

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse, read_yaml
from analytics_pipeline.quality.outcomes import CheckOutcome, Severity

RECEIVED_P95 = "received_to_publish_p95"
RECEIVED_P99 = "received_to_publish_p99"
ARRIVAL_DAY = "arrival_day_to_publish"


class SloError(ConfigFileError):
    """``checks/slos.yml`` is invalid; the message names the file and the key."""


class HoursPercentiles(StrictModel):
    p95: float = Field(gt=0)
    p99: float = Field(gt=0)


class EventsLatency(StrictModel):
    received_to_publish_hours: HoursPercentiles
    severity: Severity = Severity.WARN


class ArrivalLatency(StrictModel):
    end_of_day_to_publish_hours: float = Field(gt=0)
    severity: Severity = Severity.WARN


class SloFile(StrictModel):
    events: EventsLatency
    arrival_days: ArrivalLatency


def load_slos(path: Path) -> SloFile:
    return parse(read_yaml(path, SloError, "SLOs"), SloFile, path, SloError)


def publish_time(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)


def received_to_publish(path: Path, published_at: datetime) -> dict[str, float] | None:
    """Percentiles (seconds) of publish time - receivedAt over a published events file; None if empty."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(
            f"""SELECT count(*),
                   quantile_disc(d, 0.5), quantile_disc(d, 0.95), quantile_disc(d, 0.99), max(d)
            FROM (SELECT epoch(CAST(? AS TIMESTAMPTZ)) - epoch(received_at) AS d
                  FROM read_parquet('{path}', hive_partitioning = false))""",
            [published_at],
        ).fetchone()
    finally:
        con.close()
    if not row or not row[0]:
        return None
    return {"events": float(row[0]), "p50_s": float(row[1]), "p95_s": float(row[2]), "p99_s": float(row[3]),
            "max_s": float(row[4])}  # fmt: skip


def events_latency_outcomes(slo: EventsLatency, figures: dict[str, float] | None) -> list[CheckOutcome]:
    hours = slo.received_to_publish_hours
    if figures is None:
        note = "no events in the partition"
        return [CheckOutcome(RECEIVED_P95, True, note, {}, slo.severity),
                CheckOutcome(RECEIVED_P99, True, note, {}, slo.severity)]  # fmt: skip
    outcomes = []
    for name, key, limit in ((RECEIVED_P95, "p95_s", hours.p95), (RECEIVED_P99, "p99_s", hours.p99)):
        value_h = figures[key] / 3600
        outcomes.append(
            CheckOutcome(
                name,
                value_h <= limit,
                f"{key[:3]} of publish time - receivedAt is {value_h:.2f} h "
                f"({'within' if value_h <= limit else 'over'} the SLO of {limit:g} h) over {figures['events']:.0f} events",
                {**figures, "slo_hours": limit},
                slo.severity,
            )
        )
    return outcomes


def arrival_day_outcome(slo: ArrivalLatency, day: str, published_at: datetime) -> CheckOutcome:
    end_of_day = datetime.combine(
        date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), tzinfo=UTC
    )
    hours = (published_at - end_of_day).total_seconds() / 3600
    limit = slo.end_of_day_to_publish_hours
    return CheckOutcome(
        ARRIVAL_DAY,
        hours <= limit,
        f"published {hours:.2f} h after the end of arrival day {day} "
        f"({'within' if hours <= limit else 'over'} the SLO of {limit:g} h)",
        {
            "hours_after_end_of_day": round(hours, 3),
            "published_at": published_at.isoformat(),
            "slo_hours": limit,
        },
        slo.severity,
    )
