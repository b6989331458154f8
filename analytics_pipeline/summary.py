"""The per-day summary the demo prints, read from the published manifests.

It is the reconciliation a person can do by eye: every line read is an event, a
duplicate, an id conflict, a quarantined line (too-late ones included) or a line
of a re-delivered file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from analytics_pipeline.conform import EVENTS_TABLE
from analytics_pipeline.ingestion import RAW_TABLE
from analytics_pipeline.storage import Warehouse


def collect(warehouse: Warehouse) -> dict[str, Any]:
    arrivals = {d: warehouse.read_manifest(RAW_TABLE, d) or {} for d in warehouse.published_days(RAW_TABLE)}
    events = {
        d: warehouse.read_manifest(EVENTS_TABLE, d) or {} for d in warehouse.published_days(EVENTS_TABLE)
    }
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
