"""The per-day summary the demo prints, read from the published manifests.

It is the reconciliation a person can do by eye: every line read is an event, a
duplicate, an id conflict, a quarantined line (too-late ones included) or a line
of a re-delivered file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from analytics_pipeline.warehouse.storage import Warehouse
from analytics_pipeline.warehouse.tables import EVENTS, RAW_EVENTS


def collect(warehouse: Warehouse) -> dict[str, Any]:
    arrivals = {d: warehouse.read_manifest(RAW_EVENTS, d) or {} for d in warehouse.published_days(RAW_EVENTS)}
    events = {d: warehouse.read_manifest(EVENTS, d) or {} for d in warehouse.published_days(EVENTS)}
    reasons: Counter[str] = Counter()
    for manifest in arrivals.values():
        reasons.update(manifest.get("quarantined_by_reason", {}))
    totals = {
        "lines_read": sum(m.get("lines_read", 0) for m in arrivals.values()),
        "raw_events": sum(m.get("raw_events", 0) for m in arrivals.values()),
        "quarantined_lines": sum(m.get("quarantined_lines", 0) for m in arrivals.values()),
        "quarantined_files": sum(m.get("quarantined_files", 0) for m in arrivals.values()),
        "duplicate_file_lines": sum(m.get("duplicate_file_lines", 0) for m in arrivals.values()),
        "events": sum(m.get("events", 0) for m in events.values()),
        "duplicates": sum(m.get("duplicates", 0) for m in events.values()),
        "id_conflicts": sum(m.get("id_conflicts", 0) for m in events.values()),
        "late_events": sum(m.get("late_events", 0) for m in events.values()),
        "quarantined_by_reason": dict(sorted(reasons.items())),
    }
    return {"arrivals": arrivals, "events": events, "totals": totals}


def render(summary: dict[str, Any]) -> str:
    out: list[str] = []
    out.append("Ingestion, by arrival day (landing folder)")
    out.append(f"  {'day':<10} {'files':>5} {'lines':>9} {'accepted':>9} {'quarantined':>11}  reasons")
    for day, m in summary["arrivals"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in m.get("quarantined_by_reason", {}).items())
        out.append(
            f"  {day:<10} {m.get('files', 0):>5} {m.get('lines_read', 0):>9} {m.get('raw_events', 0):>9} "
            f"{m.get('quarantined_lines', 0):>11}  {reasons or '-'}"
        )
    out.append("")
    out.append("Events, by event date (UTC)")
    out.append(
        f"  {'day':<10} {'events':>9} {'duplicates':>10} {'id_conflicts':>12} {'late':>6} {'persons':>8}"
    )
    for day, m in summary["events"].items():
        out.append(
            f"  {day:<10} {m.get('events', 0):>9} {m.get('duplicates', 0):>10} "
            f"{m.get('id_conflicts', 0):>12} {m.get('late_events', 0):>6} {m.get('persons', 0):>8}"
        )
    t = summary["totals"]
    accounted = (
        t["events"] + t["duplicates"] + t["id_conflicts"] + t["quarantined_lines"] + t["duplicate_file_lines"]
    )
    out.append("")
    verdict = "OK" if accounted == t["lines_read"] else f"MISMATCH ({accounted - t['lines_read']:+d})"
    out.append(
        f"Reconciliation: {t['lines_read']} lines read = {t['events']} events + {t['duplicates']} duplicates"
        f" + {t['id_conflicts']} id conflicts + {t['quarantined_lines']} quarantined lines"
        f" + {t['duplicate_file_lines']} lines of re-delivered files"
        f" -> {verdict}"
    )
    out.append(
        f"Quarantined files: {t['quarantined_files']}; quarantined by reason: {t['quarantined_by_reason']}"
    )
    return "\n".join(out)


def _scalar(con: Any, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return row[0] if row else None


def headlines(warehouse: Warehouse) -> list[str]:
    """A few numbers from the models, each with the table it can be checked against."""
    import duckdb

    lines: list[str] = []
    con = duckdb.connect()
    try:

        def table(name: str) -> str | None:
            if not warehouse.published_days(name):
                return None
            return f"read_parquet('{warehouse.table_glob(name)}', hive_partitioning = false)"

        if dau := table("daily_active_users"):
            row = con.execute(
                f"SELECT activity_date, dau, wau, mau FROM {dau} WHERE dau > 0 ORDER BY activity_date DESC LIMIT 1"
            ).fetchone()
            if row:
                lines.append(f"DAU on {row[0]}: {row[1]} (WAU {row[2]}, MAU {row[3]})   [daily_active_users]")
        if sessions := table("sessions"):
            row = con.execute(
                f"SELECT count(*), avg(duration_s), avg(is_bounce::INT) FROM {sessions}"
            ).fetchone()
            if row and row[0]:
                lines.append(
                    f"Sessions: {row[0]} (mean {row[1]:.0f} s, bounce rate {row[2]:.1%})   [sessions]"
                )
        if funnels := table("funnels"):
            for name, entered, converted in con.execute(
                f"""SELECT funnel, sum(persons) FILTER (WHERE step_index = 1),
                           sum(persons) FILTER (WHERE step_index = (SELECT max(step_index) FROM {funnels} f
                                                                     WHERE f.funnel = g.funnel))
                    FROM {funnels} g GROUP BY funnel ORDER BY funnel"""
            ).fetchall():
                if entered:
                    lines.append(
                        f"Funnel {name}: {converted}/{entered} converted ({converted / entered:.1%})   [funnels]"
                    )
        if retention := table("retention"):
            row = con.execute(
                f"SELECT sum(persons_on), sum(cohort_size) FROM {retention} WHERE period = 1"
            ).fetchone()
            if row and row[1]:
                lines.append(
                    f"Day-1 retention: {row[0]}/{row[1]} ({row[0] / row[1]:.1%}) over cohorts with day 1 elapsed"
                    "   [retention]"
                )
    finally:
        con.close()
    return lines
