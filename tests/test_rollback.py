"""Rollback: what a version records, how a rollback swaps data and counts, what it rebuilds.

* ``Warehouse``: every publish records its version (number, sha256, bytes, rows, publish
  time, run id, flags, previous); a rollback puts a kept version back with its own counts
  and record and keeps the one it replaced, so it can be undone; numbers are never reused;
  a partition published by the previous release (no records, a kept copy of the published
  file, a stray manifest) rolls back too.
* ``plan_rebuilds`` on changed partitions of any table: the readers of the changed partition
  are planned, never the partition itself; a changed ``raw_events`` arrival day first
  rebuilds the event dates that read it.
* ``analytics-pipeline rollback``: ``--list``; a rollback of ``raw_events`` recorded in
  Dagster (a materialization with the rollback's metadata), the catalog refreshed, and the
  events and models rebuilt to the bytes they had before the bad publish; ``--to`` with
  ``--no-rebuild`` printing the command that rebuilds.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance

from analytics_pipeline.cli import main
from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.loader import ModelSpec, load_models
from analytics_pipeline.models.plan import EVENTS_JOB, PlannedRun, plan_rebuilds
from analytics_pipeline.quality.gate_status import status_path
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.catalog import catalog_path
from analytics_pipeline.warehouse.storage import (
    PUBLISHED_DIR,
    RECORD_KEY,
    Warehouse,
    file_sha256,
    recording_run,
)
from tests.conftest import message, write_lines
from tests.model_fixtures import build_all

D = "2025-02-03"
TABLE = "sessions"


def publish(warehouse: Warehouse, ids: list[int], run_id: str | None = None, versions_kept: int = 3) -> Any:
    """Stage a tiny Parquet file, publish it, write its manifest (as a step does)."""
    staged = warehouse.staging_file(TABLE, D, f"t{len(ids)}-{ids[-1] if ids else 0}")
    pq.write_table(pa.table({"id": ids}), staged)
    result = warehouse.publish(staged, TABLE, D, versions_kept, run_id=run_id)
    warehouse.write_manifest(TABLE, D, {"rows": len(ids), "ids": ids})
    return result


def published_ids(warehouse: Warehouse) -> list[int]:
    return [int(i) for i in pq.read_table(warehouse.partition_file(TABLE, D))["id"].to_pylist()]


def stamp(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- the warehouse: records, rollback, undo -------------------------------------------------


def test_each_version_records_its_number_bytes_rows_time_run_and_flags(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    first = publish(warehouse, [1, 2, 3], run_id="run-1")
    with recording_run("run-2"):  # how the Dagster layer passes context.run_id
        second = publish(warehouse, [1, 2, 3, 4])
    third = publish(warehouse, [1, 2])  # outside Dagster: no run id
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert third.previous_version == warehouse.versions_dir(TABLE, D) / "v000002.parquet"

    newest, middle, oldest = warehouse.history(TABLE, D)
    assert [v.number for v in (newest, middle, oldest)] == [3, 2, 1]
    assert [v.published for v in (newest, middle, oldest)] == [True, False, False]
    assert [v.run_id for v in (newest, middle, oldest)] == [None, "run-2", "run-1"]
    assert [v.rows for v in (newest, middle, oldest)] == [2, 4, 3]
    assert [v.previous for v in (newest, middle, oldest)] == [2, 1, None]
    assert all(v.flags == {} for v in (newest, middle, oldest))
    assert stamp(oldest.published_at) <= stamp(middle.published_at) <= stamp(newest.published_at)
    assert stamp(middle.kept_at) == stamp(newest.published_at) or stamp(middle.kept_at) >= stamp(
        middle.published_at
    )
    for version in (newest, middle, oldest):
        assert version.sha256 == file_sha256(version.path)
        assert version.bytes == version.path.stat().st_size
        assert version.counts == {"rows": version.rows, "ids": list(range(1, (version.rows or 0) + 1))}
    # the published version's record, and a kept version's manifest holding its record
    record = json.loads(warehouse.record_path(TABLE, D).read_text())
    assert record == {
        "version": 3, "sha256": newest.sha256, "bytes": newest.bytes, "rows": 2,
        "published_at": newest.published_at, "run_id": None, "flags": {}, "previous": 2,
    }  # fmt: skip
    kept = json.loads((warehouse.versions_dir(TABLE, D) / "v000002.json").read_text())
    assert kept["rows"] == 4 and kept[RECORD_KEY]["run_id"] == "run-2" and kept[RECORD_KEY]["flags"] == {}
    # the manifest readers get is the counts alone
    assert warehouse.read_manifest(TABLE, D) == {"rows": 2, "ids": [1, 2]}


def test_the_flags_a_build_ran_with_are_recorded_with_its_version(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    staged = warehouse.staging_file(TABLE, D, "flagged")
    pq.write_table(pa.table({"id": [1]}), staged)
    warehouse.publish(staged, TABLE, D, 3, flags={"session_gap_minutes": 45})
    publish(warehouse, [1, 2])
    (kept,) = (v for v in warehouse.history(TABLE, D) if not v.published)
    assert kept.flags == {"session_gap_minutes": 45}
    assert warehouse.rollback(TABLE, D).restored.flags == {"session_gap_minutes": 45}


def test_rollback_swaps_data_counts_and_record_together_and_can_be_undone(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    publish(warehouse, [1], run_id="run-1")
    publish(warehouse, [1, 2], run_id="run-2")
    publish(warehouse, [1, 2, 3], run_id="bad-run")
    v2_published_at = warehouse.history(TABLE, D)[1].published_at

    result = warehouse.rollback(TABLE, D)
    assert (result.restored.number, result.replaced.number) == (2, 3)
    assert published_ids(warehouse) == [1, 2] and warehouse.read_manifest(TABLE, D) == {
        "rows": 2,
        "ids": [1, 2],
    }
    restored = warehouse.published_version(TABLE, D)
    assert restored is not None and restored.number == 2 and restored.run_id == "run-2"
    assert restored.published_at == v2_published_at and restored.restored_at  # first published, then restored
    # the version it replaced is kept with its own counts (off the chain a plain rollback walks)
    assert [v.number for v in warehouse.history(TABLE, D)] == [3, 2, 1]
    assert [p.name for p in warehouse.versions(TABLE, D)] == ["v000001.parquet"]
    bad = next(v for v in warehouse.history(TABLE, D) if v.number == 3)
    assert bad.counts == {"rows": 3, "ids": [1, 2, 3]} and bad.run_id == "bad-run" and bad.kept_at

    # undo: --to the replaced version
    assert warehouse.rollback(TABLE, D, to=3).restored.number == 3
    assert published_ids(warehouse) == [1, 2, 3] and warehouse.read_manifest(TABLE, D) == {
        "rows": 3,
        "ids": [1, 2, 3],
    }
    # a plain rollback steps back one publish at a time: v3 replaced v2, which replaced v1
    assert warehouse.rollback(TABLE, D).restored.number == 2
    assert warehouse.rollback(TABLE, D).restored.number == 1
    assert published_ids(warehouse) == [1] and warehouse.read_manifest(TABLE, D) == {"rows": 1, "ids": [1]}
    with pytest.raises(FileNotFoundError, match="no previous version of sessions for 2025-02-03.*v2, v3"):
        warehouse.rollback(TABLE, D)
    # a new publish takes a new number (never one in use) and replaces the restored v1
    fresh = publish(warehouse, [7])
    assert fresh.version == 4
    assert warehouse.history(TABLE, D)[0].previous == 1
    assert sorted(p.name for p in warehouse.versions_dir(TABLE, D).iterdir()) == [
        f"v00000{n}.{ext}" for n in (1, 2, 3) for ext in ("json", "parquet")
    ]
    assert sorted(p.name for p in (tmp_path / PUBLISHED_DIR / TABLE).iterdir()) == [
        f"date={D}.json",
        f"date={D}.lock",
    ]


def test_after_a_rollback_and_a_new_publish_rollback_returns_to_the_version_that_was_live(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(tmp_path)
    for ids in ([1], [1, 2], [1, 2, 3]):
        publish(warehouse, ids, versions_kept=2)
    warehouse.rollback(TABLE, D)  # v2 back, v3 (bad) kept
    publish(warehouse, [1, 2, 9], versions_kept=2)  # v4 replaces v2
    # the two most recently replaced stay (v3 by the rollback, v2 by the publish); v1 is pruned
    assert sorted(v.number for v in warehouse.history(TABLE, D)) == [2, 3, 4]
    assert warehouse.rollback(TABLE, D).restored.number == 2  # what was live before v4, not v3
    assert published_ids(warehouse) == [1, 2]


def test_rollback_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    with pytest.raises(FileNotFoundError, match="not published"):
        warehouse.rollback(TABLE, D)
    publish(warehouse, [1])
    with pytest.raises(FileNotFoundError, match="no previous version"):
        warehouse.rollback(TABLE, D)
    publish(warehouse, [1, 2])
    with pytest.raises(FileNotFoundError, match="v2 is the published version"):
        warehouse.rollback(TABLE, D, to=2)
    with pytest.raises(FileNotFoundError, match=r"no kept version v7 \(kept: v1\)"):
        warehouse.rollback(TABLE, D, to=7)
    assert published_ids(warehouse) == [1, 2]  # nothing changed
    assert warehouse.history(TABLE, D)[0].number == 2


def test_a_partition_kept_by_the_previous_release_rolls_back(tmp_path: Path) -> None:
    """The old layout: no records, a kept version that is the published file itself (a crash
    between keeping and replacing) and a kept manifest whose file is gone (a crash in rollback)."""
    warehouse = Warehouse(tmp_path)
    target = warehouse.partition_file(TABLE, D)
    target.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2, 3]}), target)
    warehouse.manifest_path(TABLE, D).parent.mkdir(parents=True)
    warehouse.manifest_path(TABLE, D).write_text(json.dumps({"rows": 3}))
    kept = warehouse.versions_dir(TABLE, D)
    kept.mkdir(parents=True)
    pq.write_table(pa.table({"id": [1]}), kept / "v000001.parquet")
    (kept / "v000001.json").write_text(json.dumps({"rows": 1}))
    (kept / "v000002.parquet").hardlink_to(target)  # bug 2's leftover: identical to the published file
    (kept / "v000002.json").write_text(json.dumps({"rows": 3}))
    (kept / "v000003.json").write_text(json.dumps({"rows": 99}))  # bug 1's leftover: an orphan manifest

    published = warehouse.published_version(TABLE, D)
    assert published is not None and published.number == 4 and published.rows == 3  # after every number used
    result = warehouse.rollback(TABLE, D)  # skips the copy of the published file
    assert result.restored.number == 1 and published_ids(warehouse) == [1]
    assert warehouse.read_manifest(TABLE, D) == {"rows": 1}
    assert result.replaced.number == 4 and result.replaced.counts == {"rows": 3}
    fresh = publish(warehouse, [5, 6])
    assert fresh.version == 5  # 3 is never reused, so the orphan cannot pair with a new version
    assert not (kept / "v000003.json").exists()  # pruned with the stray sidecars
    assert all(p.with_suffix(".parquet").exists() for p in kept.glob("v*.json"))


# --- the plan: changed partitions of any table -------------------------------------------------

DAYS = ["2025-02-01", "2025-02-02", "2025-02-03", "2025-02-04", "2025-02-05"]


@pytest.fixture
def planned(tmp_path: Path) -> tuple[list[ModelSpec], Warehouse]:
    """The project's models over a warehouse whose events are published for DAYS (empty files)."""
    warehouse = Warehouse(tmp_path / "warehouse")
    for day in DAYS:
        path = warehouse.partition_file("events", day)
        path.parent.mkdir(parents=True)
        path.touch()
    return load_models(PipelineSettings().models_path), warehouse


def names(runs: list[PlannedRun]) -> list[tuple[str, str | None]]:
    return [(name, run.partition) for run in runs for name in run.models]


def test_a_changed_model_partition_rebuilds_its_readers_but_not_itself(
    planned: tuple[list[ModelSpec], Warehouse],
) -> None:
    specs, warehouse = planned
    plan = names(plan_rebuilds(specs, {"sessions": {DAYS[2]}}, warehouse))
    assert plan == [
        ("person_sessions", DAYS[2]), ("person_sessions", DAYS[3]), ("person_sessions", DAYS[4]), ("users", None),
    ]  # fmt: skip
    # a snapshot: its later partitions read it, each with the models that read it that day
    plan = names(plan_rebuilds(specs, {"persons": {DAYS[2]}}, warehouse))
    assert plan == [
        ("daily_active_users", DAYS[2]), ("retention", DAYS[2]),
        ("persons", DAYS[3]), ("daily_active_users", DAYS[3]), ("retention", DAYS[3]),
        ("persons", DAYS[4]), ("daily_active_users", DAYS[4]), ("retention", DAYS[4]),
        ("users", None),
    ]  # fmt: skip
    assert plan_rebuilds(specs, {"daily_active_users": {DAYS[2]}}, warehouse) == []  # nothing reads it
    # a set of days still means events dates (the sensor's late-data call)
    assert plan_rebuilds(specs, {DAYS[2]}, warehouse) == plan_rebuilds(
        specs, {"events": {DAYS[2]}}, warehouse
    )


def test_a_changed_arrival_day_rebuilds_the_event_dates_that_read_it_then_the_models(
    planned: tuple[list[ModelSpec], Warehouse],
) -> None:
    specs, warehouse = planned
    with pytest.raises(ValueError, match="late_window_days"):
        plan_rebuilds(specs, {"raw_events": {DAYS[3]}}, warehouse)
    runs = plan_rebuilds(specs, {"raw_events": {DAYS[3]}}, warehouse, late_window_days=3)
    # events[E] reads raw_events[E .. E+3]: arrival day 4 is read by event dates 1 .. 4
    events_runs = [PlannedRun(EVENTS_JOB, day, ["events", "event_id_conflicts"]) for day in DAYS[:4]]
    assert runs[:4] == events_runs
    assert runs[4:] == plan_rebuilds(specs, {"events": set(DAYS[:4])}, warehouse)
    # an event date that also reads an arrival day whose gate failed waits (all_deps_blocking_checks_passed)
    failed = status_path(warehouse, "raw_events", DAYS[4])
    failed.parent.mkdir(parents=True)
    failed.write_text(json.dumps({"passed": False, "failed": ["lines_reconcile"], "checks": {}}))
    skipped: list[tuple[str, str | None]] = []
    runs = plan_rebuilds(
        specs,
        {"raw_events": {DAYS[3]}},
        warehouse,
        lambda n, d, b: skipped.append((n, d)),
        late_window_days=3,
    )
    assert skipped[:3] == [("events", DAYS[1]), ("events", DAYS[2]), ("events", DAYS[3])]
    assert runs[0] == events_runs[0] and runs[1:] == plan_rebuilds(specs, {"events": {DAYS[0]}}, warehouse)


# --- the command ---------------------------------------------------------------------------------

D1 = "2025-01-10"


def _sha(warehouse: Warehouse, table: str) -> str:
    return file_sha256(warehouse.partition_file(table, D1))


@pytest.mark.slow
def test_rollback_of_an_arrival_day_is_recorded_refreshes_the_catalog_and_rebuilds_downstream(
    settings: PipelineSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    data = ["--data-dir", settings.data_dir]
    warehouse = Warehouse(settings.warehouse_path)
    generate(settings.landing_path, date.fromisoformat(D1), 1, 120, seed=4, faults=FaultRates(late=0.0))
    ingest_arrival_day(settings, D1)
    dedupe_events_day(settings, D1)
    build_all(settings, [D1])
    good = {t: _sha(warehouse, t) for t in ("raw_events", "events", "event_counts", "person_events")}
    good_counts = warehouse.read_manifest("events", D1)

    # the bad publish: a file of bogus events lands late in D1's folder and is ingested, and
    # everything downstream is rebuilt from it (what the nightly run and the sensors do)
    write_lines(settings, D1, "zz-bogus.jsonl", [
        message(messageId=f"bogus-{i}", timestamp=f"{D1}T23:0{i}:00Z", receivedAt=f"{D1}T23:0{i}:01Z")
        for i in range(5)
    ])  # fmt: skip
    bad_raw = ingest_arrival_day(settings, D1).published["raw_events"]
    dedupe_events_day(settings, D1)
    for run in plan_rebuilds(load_models(settings.models_path), {D1}, warehouse):
        for name in run.models:
            build_model(
                settings, next(s for s in load_models(settings.models_path) if s.name == name), run.partition
            )
    assert _sha(warehouse, "event_counts") != good["event_counts"]

    assert main([*data, "rollback", "raw_events", D1, "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"raw_events {D1}: published v2; `rollback` restores v1"
    assert [line.split()[:2] for line in listing[2:]] == [["v2", "published"], ["v1", "kept,"]]

    catalog = catalog_path(warehouse)
    assert main([*data, "rollback", "raw_events", D1]) == 0
    out = capsys.readouterr().out
    assert f"rolled back raw_events {D1}: v1 (" in out and "is back in place of v2" in out
    assert (
        f"to undo: analytics-pipeline --data-dir {settings.data_dir} rollback raw_events {D1} --to 2" in out
    )
    assert "the step that publishes raw_events publishes quarantined_events, file_ledger with it" in out
    assert f"late_window_job {D1} events, event_id_conflicts: ok" in out
    assert "dimensions_job users: ok" in out and ", 0 blocking failures" in out
    # the arrival day, then the events and the models read from it, are back to their bytes
    assert {t: _sha(warehouse, t) for t in good} == good
    assert warehouse.read_manifest("events", D1) == good_counts
    assert catalog.exists()

    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        event = instance.get_latest_materialization_event(AssetKey("raw_events"))
        assert event is not None and event.run_id == ""  # runless: reported by the CLI
        materialization = event.asset_materialization
        assert materialization is not None and materialization.partition == D1
        meta = {k: v.value for k, v in materialization.metadata.items()}
        assert meta["rollback"] is True
        assert (meta["restored_version"], meta["replaced_version"]) == (1, 2)
        assert meta["sha256"] == good["raw_events"]
        assert meta["dagster/row_count"] == warehouse.published_version("raw_events", D1).rows  # type: ignore[union-attr]
        runs = instance.get_runs()
        assert runs and all(r.tags.get("analytics/rollback") == f"raw_events/{D1}" for r in runs)
        assert all(r.is_success for r in runs)

    # undo without rebuilding: the bad version is back, and the exact command to rebuild is printed
    assert main([*data, "rollback", "raw_events", D1, "--to", "2", "--no-rebuild"]) == 0
    out = capsys.readouterr().out
    assert _sha(warehouse, "raw_events") == bad_raw.sha256
    assert f"  late_window_job {D1} events, event_id_conflicts" in out
    assert out.rstrip().endswith(
        f"rebuild them with: analytics-pipeline --data-dir {settings.data_dir} rollback raw_events {D1} --rebuild-only"
    )
