"""The drills: each injects one fault into a sandbox, recovers the way the runbook says, checks the promise.

They act on the sandbox's last two published days (``d1``, ``d2``) through the pipeline's
own entry points (the Dagster jobs, ``analytics_pipeline.rollback``), so a change to the
pipeline's internals keeps them meaningful. Planted messages are copies of real lines of
the day with new ``messageId``s (``drill-<what>-<n>``), so they pass the event schemas and
can be found again.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from analytics_pipeline.drills.runner import Drill, Probe
from analytics_pipeline.drills.sandbox import Sandbox
from analytics_pipeline.quality.gate_status import failed_checks
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.warehouse.tables import (
    EVENT_ID_CONFLICTS,
    EVENTS,
    FILE_LEDGER,
    QUARANTINED_EVENTS,
    RAW_EVENTS,
)

INGEST_TABLES = (RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER)
STEP_TABLES = (*INGEST_TABLES, EVENTS, EVENT_ID_CONFLICTS)
SPIKE_FACTOR = 10
SPIKE_MEMORY_LIMIT = "1GB"
EVENT_COUNTS = "event_counts"  # a model (assets/models/event_counts.sql)
KILL_POINT = "publish:version_kept"  # mid-publish: the old file is kept, the new one not yet in place
CHILD_WAIT_S = 300.0  # guards against a hung child only


# --- planting messages ----------------------------------------------------------------------


def planted(sb: Sandbox, day: str, tag: str, count: int, types: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``count`` accepted messages of arrival and event day ``day``, as delivered, with new ids.

    ``timestamp`` is set to the time the pipeline derived, so a drill can move ``receivedAt``
    without moving the event.
    """
    where = f" AND type IN ({', '.join(repr(t) for t in types)})" if types else ""
    rows = sb.sql(
        "SELECT raw_line, strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%gZ') FROM r "
        f"WHERE arrival_date = DATE '{day}' AND event_date = DATE '{day}'{where} "
        f"ORDER BY file_path, line_number LIMIT {count}",
        r=RAW_EVENTS,
    )
    if len(rows) < count:
        raise RuntimeError(f"{day} has only {len(rows)} accepted messages to copy, {count} needed")
    out = []
    for i, (line, ts) in enumerate(rows):
        message = json.loads(line)
        message["messageId"] = f"drill-{tag}-{i:04d}"
        message["timestamp"] = ts
        out.append(message)
    return out


def arriving_on(messages: list[dict[str, Any]], day: str, shift_days: int = 0) -> list[dict[str, Any]]:
    """The messages received on ``day`` (noon UTC), their event time moved by ``shift_days``."""
    out = []
    for message in messages:
        moved = dict(message)
        stamp = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00")) + timedelta(
            days=shift_days
        )
        moved["timestamp"] = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        moved["receivedAt"] = f"{day}T12:00:00.000Z"
        moved["sentAt"] = f"{day}T11:59:59.000Z"
        moved.pop("originalTimestamp", None)
        out.append(moved)
    return out


def jsonl(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in messages)


def count_ids(sb: Sandbox, table: str, tag: str, day: str | None = None) -> int:
    where = f" AND date = DATE '{day}'" if day else ""
    return int(sb.scalar(f"SELECT count(*) FROM t WHERE message_id LIKE 'drill-{tag}-%'{where}", t=table))


def _check_served(sb: Sandbox, probe: Probe, day: str, before: dict[str, str | None], label: str) -> None:
    """After a fault: the published files are the ones from before, readable, their records their own."""
    for table, sha in before.items():
        probe.check(
            sb.sha(table, day) == sha, f"{table} {day}: the previous version is still served ({label})"
        )
        version = sb.warehouse.published_version(table, day)  # finishes or undoes a cut-short change first
        probe.check(
            version is not None and version.sha256 == sb.sha(table, day),
            f"{table} {day}: its record (v{version.number if version else '?'}) describes the served file",
        )
        rows = sb.scalar("SELECT count(*) FROM t", t=table)
        probe.check(rows is not None, f"{table}: a reader globbing the table reads it ({rows} rows)")
        probe.check(not sb.stray_files(table), f"{table}: nothing but published files in its folder")
    probe.check(not sb.journals(), "no publish left half done (no journal)")


def _rerun_publishes(sb: Sandbox, probe: Probe, day: str, tag: str, recovery: str) -> None:
    """After a failed publish: the rerun completes, publishes the 25 new ``tag`` messages, reconciles."""
    outcome = sb.nightly(day)
    probe.recovered(recovery)
    probe.check(outcome.success, f"the rerun completed {outcome.failures or ''}".strip())
    probe.check(count_ids(sb, EVENTS, tag, day) == 25, f"events {day}: the 25 new messages are published")
    problems = sb.reconciliation(day)
    probe.check(not problems, f"counts reconcile {problems or ''}".strip())
    probe.check(not sb.journals(), "no journal left")


# --- 1. a whole day re-delivered twice -----------------------------------------------------------


def redelivered_twice(sb: Sandbox, probe: Probe) -> None:
    day = sb.days[-1]
    folder = sb.settings.landing_path / day
    originals = sorted(p for p in folder.rglob("*") if p.is_file())
    before = {t: sb.content(t, day) for t in (RAW_EVENTS, EVENTS)}
    lines_before = sb.manifest(RAW_EVENTS, day).get("lines_read", 0)
    probe.fault(f"the {len(originals)} files of {day} delivered twice more (redelivery-1/, redelivery-2/)")
    for copy in (1, 2):
        for path in originals:
            target = folder / f"redelivery-{copy}" / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    outcome = sb.nightly(day)
    probe.recovered(f"nightly_job {day} rerun")
    probe.check(outcome.success, f"the rerun succeeded {outcome.failures or ''}".strip())
    for table, content in before.items():
        probe.check(sb.content(table, day) == content, f"{table} {day}: same rows as before ({content[0]})")
    dup_files = sb.scalar(
        f"SELECT count(*) FROM l WHERE date = DATE '{day}' AND status = 'duplicate_file'", l=FILE_LEDGER
    )
    probe.check(
        dup_files == 2 * len(originals),
        f"file_ledger {day}: {dup_files} duplicate_file (expected {2 * len(originals)})",
    )
    dup_lines = sb.manifest(RAW_EVENTS, day).get("duplicate_file_lines")
    probe.check(
        dup_lines == 2 * lines_before, f"{dup_lines} lines of re-delivered files counted (2 x {lines_before})"
    )
    problems = sb.reconciliation(day)
    probe.check(not problems, f"counts reconcile {problems or ''}".strip())


# --- 2. a corrupt gzip and a truncated file ----------------------------------------------------


def corrupt_and_truncated(sb: Sandbox, probe: Probe) -> None:
    day = sb.days[-1]
    gz_messages = planted(sb, day, "gz", 40)
    cut_messages = planted(sb, day, "cut", 21)
    raw_before = sb.rows(RAW_EVENTS, day)
    events_before = sb.rows(EVENTS, day)
    compressed = gzip.compress(jsonl(gz_messages), mtime=0)
    broken = compressed[: len(compressed) // 2] + b"\x00drill: the rest of this gzip stream is lost" * 4
    whole = jsonl(cut_messages)
    cut = whole[: len(whole) - len(json.dumps(cut_messages[-1])) // 2 - 1]  # the last line loses its end
    probe.fault(
        f"{day}/corrupt.jsonl.gz (a broken gzip stream) and {day}/truncated.jsonl (cut mid-line) land"
    )
    sb.write_landing(day, "corrupt.jsonl.gz", broken)
    sb.write_landing(day, "truncated.jsonl", cut)
    outcome = sb.nightly(day)
    probe.recovered(f"nightly_job {day} rerun")
    probe.check(outcome.success, f"the run succeeded: the rest is published {outcome.failures or ''}".strip())
    reasons = dict(
        sb.sql(
            f"SELECT split_part(file_path, '/', -1), string_agg(DISTINCT reason, ',') FROM q "
            f"WHERE date = DATE '{day}' AND (file_path LIKE '%/corrupt.jsonl.gz' OR file_path LIKE '%/truncated.jsonl') "
            "GROUP BY ALL",
            q=QUARANTINED_EVENTS,
        )
    )
    probe.check(reasons.get("corrupt.jsonl.gz") == "corrupt_gzip", f"corrupt.jsonl.gz quarantined: {reasons}")
    truncated_line = sb.scalar(
        f"SELECT max(line_number) FROM q WHERE date = DATE '{day}' AND reason = 'truncated_line' "
        "AND file_path LIKE '%/truncated.jsonl'",
        q=QUARANTINED_EVENTS,
    )
    probe.check(truncated_line == 21, f"truncated.jsonl line {truncated_line} quarantined as truncated_line")
    from_gz, from_cut = count_ids(sb, RAW_EVENTS, "gz", day), count_ids(sb, RAW_EVENTS, "cut", day)
    probe.check(from_cut == 20, f"the 20 whole lines of truncated.jsonl accepted ({from_cut})")
    probe.check(from_gz < 40, f"{from_gz} of 40 lines of the broken gzip read (those before the damage)")
    probe.check(
        sb.rows(RAW_EVENTS, day) == raw_before + from_gz + from_cut,
        f"raw_events {day}: every other line still there",
    )
    probe.check(
        sb.rows(EVENTS, day) == events_before + from_gz + from_cut,
        f"events {day}: {events_before} + {from_gz + from_cut} readable planted lines",
    )
    ledger = dict(
        sb.sql(
            f"SELECT split_part(path, '/', -1), status FROM l WHERE date = DATE '{day}' "
            "AND (path LIKE '%/corrupt.jsonl.gz' OR path LIKE '%/truncated.jsonl')",
            l=FILE_LEDGER,
        )
    )
    probe.note(f"file_ledger: {ledger}")
    problems = sb.reconciliation(day)
    probe.check(not problems, f"counts reconcile {problems or ''}".strip())


# --- 3. SIGKILL during a publish ------------------------------------------------------------------


def sigkill_mid_publish(sb: Sandbox, probe: Probe) -> None:
    day = sb.days[-1]
    sb.write_landing(
        day, "more.jsonl", jsonl(planted(sb, day, "kill", 25))
    )  # so the rerun publishes a change
    before = {t: sb.sha(t, day) for t in STEP_TABLES}
    sb.instance  # noqa: B018 - the child opens the same DAGSTER_HOME
    command = [
        sys.executable, "-m", "analytics_pipeline.drills.crash_child",
        sb.settings.model_dump_json(), day, KILL_POINT,
    ]  # fmt: skip
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "DAGSTER_HOME": str(sb.dagster_home)},
    )  # fmt: skip
    marker = _wait_for_line(child, "STOPPED ")
    if marker is None:
        child.kill()
        child.wait()
        probe.check(False, f"the child never reached {KILL_POINT}")
        return
    _wait_stopped(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    code = child.wait(timeout=CHILD_WAIT_S)
    probe.fault(f"nightly_job {day} SIGKILLed at {marker.split()[1]} (exit {code})")
    probe.check(code == -signal.SIGKILL, f"the run died by SIGKILL ({code})")
    _check_served(sb, probe, day, before, "after the kill")
    _rerun_publishes(sb, probe, day, "kill", f"nightly_job {day} rerun")


def _wait_for_line(child: subprocess.Popen[str], prefix: str) -> str | None:
    found: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(prefix):
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(CHILD_WAIT_S)
    return found[0] if found else None


def _wait_stopped(pid: int) -> None:
    """The child froze itself (SIGSTOP) right after its line; see it stopped before killing it."""
    deadline = time.monotonic() + CHILD_WAIT_S
    while time.monotonic() < deadline:
        waited, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
        if waited and os.WIFSTOPPED(status):
            return
        time.sleep(0.01)
    raise RuntimeError("the child announced its point but did not stop")


# --- 4. late data within and beyond the late window -----------------------------------------------


def late_data(sb: Sandbox, probe: Probe) -> None:
    d1, d2 = sb.days
    window = sb.settings.late_window_days
    too_old = (date.fromisoformat(d2) - timedelta(days=window + 1)).isoformat()
    within = arriving_on(planted(sb, d1, "late-within", 15), d2)
    shift = (date.fromisoformat(too_old) - date.fromisoformat(d1)).days
    beyond = arriving_on(planted(sb, d1, "late-beyond", 10), d2, shift_days=shift)
    too_late_before = sb.manifest(RAW_EVENTS, d2).get("quarantined_by_reason", {}).get("too_late", 0)
    probe.fault(
        f"{d2} delivers 15 events of {d1} (within the {window}-day window) and 10 of {too_old} (beyond)"
    )
    sb.write_landing(d2, "late.jsonl", jsonl(within + beyond))
    outcome = sb.nightly(d2)
    probe.recovered(f"nightly_job {d2} and late_window_job {d1}")
    probe.check(outcome.success, f"the runs succeeded {outcome.failures or ''}".strip())
    probe.check(count_ids(sb, EVENTS, "late-within", d1) == 15, f"the 15 late events are in events {d1}")
    probe.check(
        count_ids(sb, EVENTS, "late-beyond") == 0, "none of the too-late events is in any events partition"
    )
    too_late = sb.scalar(
        f"SELECT count(*) FROM q WHERE date = DATE '{d2}' AND reason = 'too_late' "
        "AND message_id LIKE 'drill-late-beyond-%'",
        q=QUARANTINED_EVENTS,
    )
    probe.check(too_late == 10, f"the 10 beyond the window quarantined as too_late ({too_late})")
    counted = (
        sb.manifest(RAW_EVENTS, d2).get("quarantined_by_reason", {}).get("too_late", 0) - too_late_before
    )
    probe.check(counted == 10, f"raw_events {d2} manifest counts them: too_late +{counted}")
    for day in (d1, d2):
        problems = sb.reconciliation(day)
        probe.check(not problems, f"counts reconcile for {day} {problems or ''}".strip())


# --- 5. a schema change in the input --------------------------------------------------------------


def schema_change(sb: Sandbox, probe: Probe) -> None:
    day = sb.days[-1]
    added = planted(sb, day, "new-field", 10)
    for message in added:
        message["drillNewField"] = {"rollout": "v2"}
    retyped = planted(sb, day, "retyped", 10, types=("track", "page"))
    retyped = [{**m, "messageId": m["messageId"], "properties": "now a string"} for m in retyped]
    columns_before = sb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{sb.warehouse.partition_file(EVENTS, day)}')"
    )
    probe.fault(f"{day} delivers 10 messages with a new field and 10 whose properties became a string")
    sb.write_landing(day, "schema-change.jsonl", jsonl(added + retyped))
    outcome = sb.nightly(day)
    probe.recovered(f"nightly_job {day} rerun")
    probe.check(outcome.success, f"the run succeeded {outcome.failures or ''}".strip())
    probe.check(
        count_ids(sb, EVENTS, "new-field", day) == 10, "the 10 with a new field are accepted into events"
    )
    wrong_type = sb.scalar(
        f"SELECT count(*) FROM q WHERE date = DATE '{day}' AND reason = 'wrong_field_type' "
        "AND message_id LIKE 'drill-retyped-%'",
        q=QUARANTINED_EVENTS,
    )
    probe.check(
        wrong_type == 10, f"the 10 with a changed type quarantined as wrong_field_type ({wrong_type})"
    )
    probe.check(count_ids(sb, EVENTS, "retyped") == 0, "none of them reached events")
    columns_after = sb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{sb.warehouse.partition_file(EVENTS, day)}')"
    )
    probe.check(columns_after == columns_before, "events keeps its columns and types")
    problems = sb.reconciliation(day)
    probe.check(not problems, f"counts reconcile {problems or ''}".strip())


# --- 6. ten times the volume under a 1 GB memory limit ----------------------------------------------


def volume_spike(sb: Sandbox, probe: Probe) -> None:
    day = sb.days[-1]
    events_before = sb.rows(EVENTS, day)
    raw_before = sb.rows(RAW_EVENTS, day)
    sb.settings = sb.settings.replace(duckdb_memory_limit=SPIKE_MEMORY_LIMIT)
    with tempfile.TemporaryDirectory(dir=sb.root) as scratch:
        generate(
            Path(scratch), date.fromisoformat(day), 1, (SPIKE_FACTOR - 1) * events_before, seed=99,
            faults=FaultRates(late=0.0, malformed=0.0),
        )  # fmt: skip
        spike = sb.settings.landing_path / day / "spike"
        shutil.move(str(Path(scratch) / day), spike)
    lines = sum(len(gzip.decompress(p.read_bytes()).splitlines()) for p in spike.glob("*.gz"))
    probe.fault(
        f"{day} delivers {lines} more lines ({SPIKE_FACTOR}x its events), memory_limit {SPIKE_MEMORY_LIMIT}"
    )
    outcome = sb.nightly(day)
    probe.recovered(f"nightly_job {day} completed")
    probe.check(
        outcome.success, f"the run completed under {SPIKE_MEMORY_LIMIT} {outcome.failures or ''}".strip()
    )
    raw_after, events_after = sb.rows(RAW_EVENTS, day), sb.rows(EVENTS, day)
    probe.check(
        raw_after == raw_before + lines, f"raw_events {day}: {raw_before} + {lines} lines = {raw_after}"
    )
    probe.check(
        events_after >= (SPIKE_FACTOR - 1) * events_before,
        f"events {day}: {events_after} (was {events_before}, x{events_after / max(events_before, 1):.1f})",
    )
    warned = sorted(
        f"{e.asset_key.to_user_string()}.{e.check_name}" for e in outcome.evaluations if not e.passed
    )
    probe.note(f"checks that did not pass (warnings only): {warned or 'none'}")
    probe.check(
        not outcome.failed_checks(), f"no blocking check failed {outcome.failed_checks() or ''}".strip()
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    probe.note(f"peak resident memory of this process so far: {peak_mb:.0f} MB")
    problems = sb.reconciliation(day)
    probe.check(not problems, f"counts reconcile {problems or ''}".strip())


# --- 7. a failing blocking gate -------------------------------------------------------------------


def failing_gate(sb: Sandbox, probe: Probe) -> None:
    day = sb.days[-1]
    folder = sb.settings.landing_path / day
    held = sb.root / "held-delivery"
    events_sha, events_content = sb.sha(EVENTS, day), sb.content(EVENTS, day)
    probe.fault(f"the delivery of {day} arrives empty (its files moved aside, one empty file left)")
    shutil.move(str(folder), held)
    sb.write_landing(day, "part-000.jsonl", b"")
    failed = sb.nightly(day)
    probe.check(not failed.success, "the run failed at the gate")
    probe.check(
        "events.volume_not_zero" in failed.failed_checks(), f"the checks report it: {failed.failed_checks()}"
    )
    probe.check(
        any("nothing published" in f for f in failed.failures), f"the step says so: {failed.failures[:1]}"
    )
    probe.check(sb.sha(EVENTS, day) == events_sha, f"events {day}: the previous version is still published")
    probe.check(
        sb.scalar(f"SELECT count(*) FROM e WHERE date = DATE '{day}'", e=EVENTS) == events_content[0],
        f"readers still see its {events_content[0]} rows",
    )
    probe.check(
        failed_checks(sb.warehouse, EVENTS, day) == ["volume_not_zero"],
        f"the gate record holds back what reads events {day}",
    )
    probe.check(
        any(p.parent.name == f"date={day}" and p.parent.parent.name == EVENTS for p in sb.staged_files()),
        "the staged partition that failed is kept for inspection",
    )
    shutil.rmtree(folder)
    shutil.move(str(held), folder)
    outcome = sb.nightly(day)
    probe.recovered(f"the delivery re-sent and nightly_job {day} rerun")
    probe.check(outcome.success, f"the rerun passed its gates {outcome.failures or ''}".strip())
    probe.check(sb.content(EVENTS, day) == events_content, f"events {day}: the same rows as before the fault")
    probe.check(not failed_checks(sb.warehouse, EVENTS, day), "the gate record is clear again")
    problems = sb.reconciliation(day)
    probe.check(not problems, f"counts reconcile {problems or ''}".strip())


def _build_models(sb: Sandbox, probe: Probe) -> None:
    """The models of the sandbox's days, as the models sensor would build them (setup, not timed)."""
    from analytics_pipeline import rollback

    if sb.warehouse.partition_file(EVENT_COUNTS, sb.days[-1]).exists():
        return
    runs = rollback.plan_downstream(sb.settings, EVENTS, sb.days[0])
    built, _ = rollback.run_planned(sb.settings, runs, sb.instance, lambda line: None)
    probe.note(f"setup: the models of {', '.join(sb.days)} built ({'ok' if built else 'FAILED'})")


# --- 8. a bad publish, rolled back and rebuilt ------------------------------------------------------


def bad_publish_rollback(sb: Sandbox, probe: Probe) -> None:
    from dagster import AssetKey

    from analytics_pipeline import rollback

    day = sb.days[-1]
    _build_models(sb, probe)
    good = {t: sb.sha(t, day) for t in (RAW_EVENTS, EVENTS)}
    good_version = sb.warehouse.published_version(EVENTS, day)
    events_before = sb.rows(EVENTS, day)
    replay = sb.write_landing(day, "replay.jsonl", jsonl(planted(sb, day, "replay", 60)))
    outcome = sb.nightly(day)
    bad = sb.rows(EVENTS, day) - events_before
    probe.fault(
        f"bad publish: a client replayed 60 events with new ids; events {day} published with +{bad} rows"
    )
    probe.check(outcome.success and bad == 60, "the bad version was published (it passed every gate)")
    lines: list[str] = []
    for table in (EVENTS, RAW_EVENTS):  # published by the same run (RUNBOOK step 3)
        rollback.roll_back(sb.settings, sb.instance, table, day, None, sb.settings.data_dir, lines.append)
    post_mortem = sb.root / "post-mortem"
    post_mortem.mkdir(exist_ok=True)
    shutil.move(str(replay), post_mortem / replay.name)  # RUNBOOK step 6: before the next run
    ok, evaluations = rollback.rebuild_downstream(
        sb.settings, sb.instance, EVENTS, day, False, sb.settings.data_dir, lines.append
    )
    probe.recovered(f"events and raw_events {day} rolled back, {len(lines)} lines of rollback output")
    for line in lines:
        probe.note(f"rollback: {line}")
    probe.check(ok, "every rebuild run succeeded")
    blocking = [e for e in evaluations if not e.passed and e.severity.value == "ERROR"]
    probe.check(not blocking, f"no blocking check failed in the rebuild ({len(evaluations)} results)")
    for table, sha in good.items():
        probe.check(sb.sha(table, day) == sha, f"{table} {day}: the good version is back")
    restored = sb.warehouse.published_version(EVENTS, day)
    probe.check(
        restored is not None and good_version is not None and restored.number == good_version.number,
        f"events {day}: the record says v{restored.number if restored else '?'} is published",
    )
    counted = sb.scalar(f"SELECT sum(events) FROM c WHERE event_date = DATE '{day}'", c=EVENT_COUNTS)
    probe.check(counted == events_before, f"event_counts {day} rebuilt from it: {counted} events")
    event = sb.instance.get_latest_materialization_event(AssetKey(EVENTS))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    probe.check(
        "rollback" in metadata and getattr(metadata["rollback"], "value", None) is True,
        "the rollback is recorded in Dagster",
    )
    problems = sb.reconciliation(day)
    probe.check(not problems, f"counts reconcile {problems or ''}".strip())


# --- 9. the disk filling up during a write -----------------------------------------------------------


def disk_full(sb: Sandbox, probe: Probe, mode: str = "auto") -> None:
    """On a small tmpfs holding the data when the machine lets us mount one, else ENOSPC injected."""
    day = sb.days[-1]
    sb.write_landing(day, "more.jsonl", jsonl(planted(sb, day, "disk", 25)))
    mount_point = sb.root / "small-disk"
    with _small_disk(sb, mount_point, mode) as how:
        before = {t: sb.sha(t, day) for t in STEP_TABLES}
        probe.fault(f"the disk fills up during the write ({how})")
        with _full(sb, how):
            failed = sb.nightly(day)  # the step's retry policy tries twice more first
        probe.check(not failed.success, "the run failed")
        probe.check(
            any("No space left" in f or "ENOSPC" in f or "[Errno 28]" in f for f in failed.failures),
            f"with an out-of-space error: {[f[:160] for f in failed.failures[:1]]}",
        )
        _check_served(sb, probe, day, before, "after the failed write")
        _rerun_publishes(sb, probe, day, "disk", f"space freed and nightly_job {day} rerun")


@contextmanager
def _small_disk(sb: Sandbox, mount_point: Path, mode: str) -> Iterator[str]:
    """Move the sandbox's data onto a tmpfs sized to it (root, and a kernel that allows it)."""
    data = Path(sb.settings.data_dir)
    if mode in ("auto", "tmpfs"):
        size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) + 8 * 1024 * 1024
        mount_point.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "drill-small-disk", str(mount_point)],
            capture_output=True, text=True, check=False,
        ).returncode == 0  # fmt: skip
        if mounted:
            original = sb.settings
            try:
                shutil.copytree(data, mount_point / "data", symlinks=True)
                sb.settings = original.replace(data_dir=str(mount_point / "data"))
                yield f"a {size // 1024} KiB tmpfs mounted at {mount_point}, filled to its last 16 KiB"
            finally:
                sb.settings = original
                subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)
            return
        if mode == "tmpfs":
            raise RuntimeError("mount -t tmpfs is not allowed here")
    yield "no mount allowed: OSError(ENOSPC) injected in the warehouse's file writes"


@contextmanager
def _full(sb: Sandbox, how: str) -> Iterator[None]:
    """The disk is full inside the block; space is freed when it ends."""
    if "tmpfs" in how:
        filler = Path(sb.settings.data_dir).parent / "filler"
        stat = os.statvfs(filler.parent)
        with filler.open("wb") as handle:
            handle.truncate(0)
            handle.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 16 * 1024))
        try:
            yield
        finally:
            filler.unlink()
        return
    from analytics_pipeline.warehouse import storage

    real_write = storage._write_json

    def no_space(path: Path, document: Any, durable: bool = False) -> None:
        # _write_json writes a temporary file and renames it: a full disk cuts the temporary file short
        tmp = path.with_name(f".{path.name}.tmp-drill-enospc")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(json.dumps(document).encode()[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    with mock.patch.object(storage, "_write_json", no_space):
        yield
    assert storage._write_json is real_write


# --- 10. a canary that must be held -------------------------------------------------------------------


def canary_held(sb: Sandbox, probe: Probe) -> None:
    """A candidate ``event_counts`` SQL that counts every event twice is tried as a canary."""
    from analytics_pipeline.canary import CanaryHeld, promote, run_canary

    _build_models(sb, probe)
    production = {day: sb.sha(EVENT_COUNTS, day) for day in sb.days}
    source = sb.settings.models_path / f"{EVENT_COUNTS}.sql"
    candidate = sb.root / "event_counts_counted_twice.sql"
    text = source.read_text()
    probe.check("count(*) AS events" in text, f"{source.name} has the line the drill breaks")
    candidate.write_text(text.replace("count(*) AS events", "count(*) * 2 AS events"))
    probe.fault(f"a change to {EVENT_COUNTS} that counts every event twice ({candidate.name})")
    verdict = run_canary(sb.settings, EVENT_COUNTS, list(sb.days), sql=str(candidate))
    try:
        promote(sb.settings, verdict, force=False, promoted_by="drill")
        refused = False
    except CanaryHeld as held:
        refused = True
        probe.note(f"promote refused: {held}")
    probe.recovered(f"canary {verdict.id} judged {verdict.verdict} and its promotion refused")
    probe.check(verdict.verdict == "hold", f"the verdict is {verdict.verdict}")
    over = sorted({f"{f.check} {f.subject}" for f in verdict.findings if not f.passed})
    probe.check(bool(over), f"with the evidence: over the limits {over[:6]}")
    probe.check(refused, "promote without --force refuses a held canary")
    for day, sha in production.items():
        probe.check(sb.sha(EVENT_COUNTS, day) == sha, f"{EVENT_COUNTS} {day}: production untouched")
    probe.check(
        not str(Path(verdict.directory).resolve()).startswith(str(sb.warehouse.root.resolve())),
        f"the candidate lives outside the warehouse ({verdict.directory})",
    )


DRILLS: dict[str, Drill] = {
    drill.name: drill
    for drill in (
        Drill(
            "redelivery",
            "a day delivered twice more: outputs unchanged, duplicate files counted",
            redelivered_twice,
        ),
        Drill(
            "corrupt-files",
            "a corrupt gzip and a truncated file: quarantined with reasons, counts reconcile, the rest published",
            corrupt_and_truncated,
        ),
        Drill(
            "sigkill-publish",
            "SIGKILL mid-publish: the last version served, records consistent, the rerun completes",
            sigkill_mid_publish,
        ),
        Drill(
            "late-data",
            "late within the window reaches its date; beyond it is quarantined too_late",
            late_data,
        ),
        Drill(
            "schema-change",
            "a new field is accepted; a changed type is quarantined wrong_field_type",
            schema_change,
        ),
        Drill(
            "volume-spike",
            "ten times the volume under a 1 GB DuckDB limit: completes, counts reconcile",
            volume_spike,
        ),
        Drill(
            "failing-gate",
            "a failing blocking gate: publish withheld, previous version served, reported",
            failing_gate,
        ),
        Drill(
            "bad-publish-rollback",
            "a bad publish rolled back and rebuilt: the good version and what reads it are back",
            bad_publish_rollback,
        ),
        Drill(
            "disk-full",
            "the disk fills during a write: an error, no corruption, the rerun succeeds",
            disk_full,
        ),
        Drill(
            "canary-hold",
            "a canary of a bad change is held: not promotable, production untouched",
            canary_held,
        ),
    )
}
