"""Idempotency: the same landing files always give the same warehouse, byte for byte.

What must hold (and what each test would catch if it broke):

* Two runs over the same input, in fresh warehouses or in the same one, publish
  byte-identical Parquet files and identical manifests; a rerun in the same warehouse
  publishes nothing new (``publish`` notices identical bytes, no ``_versions`` entry).
* Re-delivered files, the same day or a later one, and a whole day delivered twice,
  leave ``events`` unchanged: the extra lines become ``duplicate_file_lines`` (same
  day) or ``duplicates`` / ``id_conflicts`` of the events step (later day).
* Late data: a new event dated D arriving on D+2 is in ``events`` D after the rebuild,
  the replaced version is kept in ``_versions/`` and ``Warehouse.rollback`` restores it.
* Models: rebuilding every model partition over unchanged inputs publishes nothing
  (same bytes, ``changed`` False, no ``_versions`` entry, same manifests).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.models import build as model_build
from analytics_pipeline.models.build import build_model
from analytics_pipeline.sample_data.generator import GeneratedSummary, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import (
    MANIFESTS_DIR,
    STAGING_DIR,
    VERSIONS_DIR,
    Warehouse,
    file_sha256,
)
from analytics_pipeline.warehouse.tables import (
    EVENT_ID_CONFLICTS,
    EVENTS,
    FILE_LEDGER,
    QUARANTINED_EVENTS,
    RAW_EVENTS,
)
from tests.model_fixtures import build_all, event, specs, write_events

START = date(2025, 3, 1)
EVENT_DAYS = 3
EVENTS_PER_DAY = 2000
D0 = START.isoformat()
D1 = (START + timedelta(days=1)).isoformat()
D2 = (START + timedelta(days=2)).isoformat()
EVENT_DAY_KEYS = [(START + timedelta(days=i)).isoformat() for i in range(EVENT_DAYS)]
PUBLISHED_TABLES = (RAW_EVENTS, QUARANTINED_EVENTS, FILE_LEDGER, EVENTS, EVENT_ID_CONFLICTS)


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeneratedSummary]:
    """One deterministic landing folder (default fault rates), copied into each data dir."""
    landing = tmp_path_factory.mktemp("generated") / "landing"
    summary = generate(landing, START, EVENT_DAYS, EVENTS_PER_DAY)
    return landing, summary


@pytest.fixture(scope="module")
def baseline(
    tmp_path_factory: pytest.TempPathFactory, generated: tuple[Path, GeneratedSummary]
) -> tuple[Path, dict[str, Any]]:
    """A complete warehouse built once from the generated landing folder, and its counts."""
    settings = make_settings(tmp_path_factory.mktemp("baseline") / "data", generated[0])
    return Path(settings.data_dir), counts_of(run_all(settings))


def copy_of_baseline(
    tmp_path: Path, baseline: tuple[Path, dict[str, Any]]
) -> tuple[PipelineSettings, Warehouse, dict[str, Any]]:
    data_dir = tmp_path / "data"
    shutil.copytree(baseline[0], data_dir)
    settings = PipelineSettings(data_dir=str(data_dir), duckdb_threads=2)
    return settings, Warehouse(settings.warehouse_path), baseline[1]


def make_settings(data_dir: Path, landing: Path) -> PipelineSettings:
    shutil.copytree(landing, data_dir / "landing")
    return PipelineSettings(data_dir=str(data_dir), duckdb_threads=2)


def arrival_days(settings: PipelineSettings) -> list[str]:
    return sorted(p.name for p in settings.landing_path.iterdir() if p.is_dir())


def run_all(settings: PipelineSettings) -> dict[str, Any]:
    """Ingest every arrival folder, then build every event day: the whole backfill."""
    results: dict[str, Any] = {"ingest": {}, "events": {}}
    for day in arrival_days(settings):
        results["ingest"][day] = ingest_arrival_day(settings, day)
    for day in EVENT_DAY_KEYS:
        results["events"][day] = dedupe_events_day(settings, day)
    return results


def counts_of(results: dict[str, Any]) -> dict[str, Any]:
    return {step: {day: result.counts for day, result in by_day.items()} for step, by_day in results.items()}


def published_hashes(warehouse: Warehouse) -> dict[str, str]:
    """sha256 of every file a reader's glob can see, by path relative to the warehouse."""
    hashes = {}
    for table in PUBLISHED_TABLES:
        for path in sorted((warehouse.root / table).rglob("*")):
            if path.is_file():
                hashes[str(path.relative_to(warehouse.root))] = file_sha256(path)
    return hashes


def manifests(warehouse: Warehouse) -> dict[str, Any]:
    root = warehouse.root / MANIFESTS_DIR
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def events_rows(warehouse: Warehouse, day: str | None = None) -> list[tuple[Any, ...]]:
    """Every column but ``deliveries``, sorted by message_id (which is unique)."""
    glob = warehouse.table_glob(EVENTS) if day is None else str(warehouse.partition_file(EVENTS, day))
    con = duckdb.connect()
    try:
        return con.execute(
            f"SELECT * EXCLUDE (deliveries) FROM read_parquet('{glob}') ORDER BY message_id"
        ).fetchall()
    finally:
        con.close()


def scalar(sql: str) -> Any:
    con = duckdb.connect()
    try:
        row = con.execute(sql).fetchone()
    finally:
        con.close()
    assert row is not None
    return row[0]


def deliveries_total(warehouse: Warehouse, day: str) -> int:
    return int(scalar(f"SELECT sum(deliveries) FROM read_parquet('{warehouse.partition_file(EVENTS, day)}')"))


def conflict_rows(warehouse: Warehouse, day: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        return con.execute(
            f"SELECT * FROM read_parquet('{warehouse.partition_file(EVENT_ID_CONFLICTS, day)}') "
            "ORDER BY message_id, file_path, line_number"
        ).fetchall()
    finally:
        con.close()


def raw_rows_from(warehouse: Warehouse, arrival_day: str, file_paths: list[str]) -> dict[str, int]:
    """Rows of ``raw_events`` for one arrival day that came from these landing files, by event date."""
    listed = ", ".join(f"'{p}'" for p in file_paths)
    raw = warehouse.partition_file(RAW_EVENTS, arrival_day)
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT event_date::VARCHAR, count(*) FROM read_parquet('{raw}') "
            f"WHERE file_path IN ({listed}) GROUP BY 1 ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    return {str(d): int(n) for d, n in rows}


def landing_lines(path: Path) -> int:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return sum(1 for _ in handle)
    except EOFError:  # the generator's truncated gzip: only what decompresses
        return -1


# --- (a) reruns are byte-identical ------------------------------------------------------


def test_reruns_publish_identical_bytes(
    tmp_path: Path, generated: tuple[Path, GeneratedSummary], baseline: tuple[Path, dict[str, Any]]
) -> None:
    landing, summary = generated
    first, wh_first, first_counts = copy_of_baseline(tmp_path / "first", baseline)  # fresh run no. 1
    second = make_settings(tmp_path / "second", landing)  # fresh run no. 2
    wh_second = Warehouse(second.warehouse_path)
    results_second = run_all(second)

    hashes = published_hashes(wh_first)
    # every arrival day of every ingestion table, every event day of both event tables
    assert len(hashes) == 3 * len(summary.days) + 2 * EVENT_DAYS
    assert sum(c["events"] for c in first_counts["events"].values()) > 0.95 * EVENT_DAYS * EVENTS_PER_DAY

    # two fresh warehouses: the same bytes, the same manifests, the same counts
    assert published_hashes(wh_second) == hashes
    assert manifests(wh_second) == manifests(wh_first)
    assert counts_of(results_second) == first_counts
    for table in PUBLISHED_TABLES:  # the first publication of a partition keeps nothing
        assert files_under(wh_first.root / VERSIONS_DIR / table) == []

    # the same warehouse again: nothing changes and nothing is kept as a "previous version"
    before_manifests = manifests(wh_first)
    results_again = run_all(first)
    assert published_hashes(wh_first) == hashes
    assert manifests(wh_first) == before_manifests
    assert counts_of(results_again) == first_counts
    for step in ("ingest", "events"):
        for day, result in results_again[step].items():
            for table, published in result.published.items():
                assert published.changed is False, f"{table} {day} was republished with different bytes"
                assert published.previous_version is None
    assert files_under(wh_first.root / VERSIONS_DIR) == []
    # write-audit-publish leaves nothing behind in staging after successful runs
    assert files_under(wh_first.root / STAGING_DIR) == []


# --- (b) a re-delivered file --------------------------------------------------------------


def test_file_redelivered_same_day_is_a_duplicate_file(
    tmp_path: Path, baseline: tuple[Path, dict[str, Any]]
) -> None:
    settings, warehouse, counts = copy_of_baseline(tmp_path, baseline)
    before_hashes = published_hashes(warehouse)
    before_rows = events_rows(warehouse)

    original = settings.landing_path / D0 / "part-001.jsonl.gz"
    copy = settings.landing_path / D0 / "zz-redelivered-part-001.jsonl.gz"  # sorts after the original
    shutil.copyfile(original, copy)
    copied_lines = landing_lines(original)
    assert copied_lines > 500

    again = ingest_arrival_day(settings, D0)
    old = counts["ingest"][D0]
    new = again.counts
    assert new["duplicate_file_lines"] == old["duplicate_file_lines"] + copied_lines
    assert new["lines_read"] == old["lines_read"] + copied_lines
    assert new["files_by_status"]["duplicate_file"] == old["files_by_status"].get("duplicate_file", 0) + 1
    for key in ("raw_events", "quarantined_lines", "event_dates", "late_events"):
        assert new[key] == old[key], key
    # the raw rows themselves did not change: the same bytes, nothing republished
    assert again.published[RAW_EVENTS].changed is False
    assert again.published[QUARANTINED_EVENTS].changed is False
    assert again.published[FILE_LEDGER].changed is True  # the ledger records the copy

    for day in EVENT_DAY_KEYS:
        rebuilt = dedupe_events_day(settings, day)
        assert rebuilt.counts == counts["events"][day]
        assert rebuilt.published[EVENTS].changed is False
    assert events_rows(warehouse) == before_rows
    after_hashes = published_hashes(warehouse)
    changed = {p for p in after_hashes if after_hashes[p] != before_hashes.get(p)}
    assert changed == {f"{FILE_LEDGER}/date={D0}/part-0.parquet"}


def test_file_redelivered_on_a_later_day_leaves_events_unchanged(
    tmp_path: Path, baseline: tuple[Path, dict[str, Any]]
) -> None:
    settings, warehouse, counts = copy_of_baseline(tmp_path, baseline)
    before_rows = events_rows(warehouse)
    before_conflicts = {day: conflict_rows(warehouse, day) for day in EVENT_DAY_KEYS}
    before_deliveries = {day: deliveries_total(warehouse, day) for day in EVENT_DAY_KEYS}

    copy_rel = f"{D1}/redelivered-part-000.jsonl.gz"
    shutil.copyfile(settings.landing_path / D0 / "part-000.jsonl.gz", settings.landing_path / copy_rel)
    copied_lines = landing_lines(settings.landing_path / copy_rel)

    again = ingest_arrival_day(settings, D1)
    old, new = counts["ingest"][D1], again.counts
    assert new["lines_read"] == old["lines_read"] + copied_lines
    # another day's file is not a duplicate *file* (the ledger is per day): it is read
    assert new["duplicate_file_lines"] == old["duplicate_file_lines"]
    extra = raw_rows_from(warehouse, D1, [copy_rel])
    assert set(extra) == {D0}  # the first folder only holds events dated D0
    assert new["raw_events"] == old["raw_events"] + extra[D0]
    assert new["quarantined_lines"] == old["quarantined_lines"] + (copied_lines - extra[D0])

    rebuilt = {day: dedupe_events_day(settings, day) for day in EVENT_DAY_KEYS}
    assert events_rows(warehouse) == before_rows

    for day in EVENT_DAY_KEYS:
        old_e, new_e = counts["events"][day], rebuilt[day].counts
        added = extra.get(day, 0)
        assert new_e["events"] == old_e["events"]
        assert new_e["input_rows"] == old_e["input_rows"] + added
        dup_delta = new_e["duplicates"] - old_e["duplicates"]
        conflict_delta = new_e["id_conflicts"] - old_e["id_conflicts"]
        assert dup_delta + conflict_delta == added
        # the copies of conflicting lines lose again (the original was received first)
        new_conflicts = conflict_rows(warehouse, day)
        assert [r for r in new_conflicts if r[-3] != copy_rel] == before_conflicts[day]
        assert len([r for r in new_conflicts if r[-3] == copy_rel]) == conflict_delta
        # every other copy is counted as one more delivery of the kept row
        assert deliveries_total(warehouse, day) == before_deliveries[day] + dup_delta
    assert rebuilt[D0].counts["duplicates"] > counts["events"][D0]["duplicates"]
    assert rebuilt[D1].published[EVENTS].changed is False
    assert rebuilt[D2].published[EVENTS].changed is False


# --- (c) every event delivered twice ------------------------------------------------------


def test_whole_day_delivered_twice_leaves_events_unchanged(
    tmp_path: Path, baseline: tuple[Path, dict[str, Any]]
) -> None:
    settings, warehouse, counts = copy_of_baseline(tmp_path, baseline)
    before_rows = events_rows(warehouse)
    assert len(before_rows) == sum(c["events"] for c in counts["events"].values())

    copied = []
    for source in sorted((settings.landing_path / D0).iterdir()):
        rel = f"{D1}/again-{source.name}"
        shutil.copyfile(source, settings.landing_path / rel)
        copied.append(rel)
    again = ingest_arrival_day(settings, D1)
    extra = raw_rows_from(warehouse, D1, copied)
    assert extra == {D0: counts["ingest"][D0]["raw_events"]}  # every D0 event arrived twice
    assert again.counts["raw_events"] == counts["ingest"][D1]["raw_events"] + extra[D0]

    rebuilt = {day: dedupe_events_day(settings, day) for day in EVENT_DAY_KEYS}
    assert events_rows(warehouse) == before_rows
    for day in EVENT_DAY_KEYS:
        old_e, new_e = counts["events"][day], rebuilt[day].counts
        assert new_e["events"] == old_e["events"]
        assert (new_e["duplicates"] + new_e["id_conflicts"]) - (
            old_e["duplicates"] + old_e["id_conflicts"]
        ) == extra.get(day, 0)
    # every kept D0 event that arrived on D0 was delivered (at least) twice now
    assert (
        scalar(
            f"SELECT min(deliveries) FROM read_parquet('{warehouse.partition_file(EVENTS, D0)}') "
            f"WHERE arrival_date = DATE '{D0}'"
        )
        >= 2
    )
    # and the rebuild is itself idempotent
    assert dedupe_events_day(settings, D0).published[EVENTS].changed is False


# --- (d) late data, rerun and rollback ----------------------------------------------------


def _late_line(warehouse: Warehouse) -> tuple[str, bytes]:
    """A valid new event dated D0 (timestamp given), received on D0+2."""
    raw_line = scalar(
        f"SELECT raw_line FROM read_parquet('{warehouse.partition_file(RAW_EVENTS, D0)}') "
        "WHERE type = 'page' AND json_extract_string(raw_line, '$.timestamp') LIKE '%Z' "
        "ORDER BY line_number LIMIT 1"
    )
    msg = json.loads(raw_line)
    msg.pop("sentAt", None)
    msg.pop("originalTimestamp", None)
    msg["messageId"] = "late-0000-test-message"
    msg["timestamp"] = f"{D0}T23:59:58.000Z"
    msg["receivedAt"] = f"{D2}T09:30:00.000Z"
    assert datetime.fromisoformat(msg["timestamp"].replace("Z", "+00:00")).date().isoformat() == D0
    return msg["messageId"], (json.dumps(msg, separators=(",", ":")) + "\n").encode()


def test_late_data_updates_events_and_keeps_a_rollback_version(
    tmp_path: Path, baseline: tuple[Path, dict[str, Any]]
) -> None:
    settings, warehouse, counts = copy_of_baseline(tmp_path, baseline)
    events_d0 = warehouse.partition_file(EVENTS, D0)
    old_sha = file_sha256(events_d0)
    old_count = counts["events"][D0]["events"]
    old_manifest = warehouse.read_manifest(EVENTS, D0)
    assert old_manifest is not None and old_manifest["events"] == old_count
    assert warehouse.versions(EVENTS, D0) == []

    message_id, line = _late_line(warehouse)
    (settings.landing_path / D2 / "late-arrival.jsonl").write_bytes(line)
    ingested = ingest_arrival_day(settings, D2)
    assert ingested.counts["raw_events"] == counts["ingest"][D2]["raw_events"] + 1
    assert ingested.counts["event_dates"][D0] == counts["ingest"][D2]["event_dates"][D0] + 1

    rebuilt = dedupe_events_day(settings, D0)
    assert rebuilt.published[EVENTS].changed is True
    assert rebuilt.counts["events"] == old_count + 1
    assert rebuilt.counts["late_events"] == counts["events"][D0]["late_events"] + 1
    assert warehouse.read_manifest(EVENTS, D0) == json.loads(json.dumps(rebuilt.counts))
    got = scalar(
        f"SELECT count(*) FROM read_parquet('{events_d0}') "
        f"WHERE message_id = '{message_id}' AND arrival_date = DATE '{D2}' AND event_date = DATE '{D0}'"
    )
    assert got == 1
    # the other event dates did not change
    for day in (D1, D2):
        assert dedupe_events_day(settings, day).published[EVENTS].changed is False

    # the replaced version is kept, byte for byte
    versions = warehouse.versions(EVENTS, D0)
    assert len(versions) == 1
    assert file_sha256(versions[0]) == old_sha

    # a rerun is a no-op: same bytes, no further version
    rerun = dedupe_events_day(settings, D0)
    assert rerun.published[EVENTS].changed is False
    assert rerun.counts == rebuilt.counts
    assert len(warehouse.versions(EVENTS, D0)) == 1

    # rollback restores the previous partition: old bytes, old row count
    warehouse.rollback(EVENTS, D0)
    assert file_sha256(events_d0) == old_sha
    assert scalar(f"SELECT count(*) FROM read_parquet('{events_d0}')") == old_count
    assert scalar(f"SELECT count(*) FROM read_parquet('{events_d0}') WHERE message_id = '{message_id}'") == 0
    assert warehouse.versions(EVENTS, D0) == []
    # ... and the manifest describes the restored partition again, not the rolled-back one
    assert warehouse.read_manifest(EVENTS, D0) == old_manifest
    # and the next build brings the late event back
    again = dedupe_events_day(settings, D0)
    assert again.published[EVENTS].changed is True
    assert scalar(f"SELECT count(*) FROM read_parquet('{events_d0}')") == old_count + 1


def test_versions_kept_is_bounded(tmp_path: Path, baseline: tuple[Path, dict[str, Any]]) -> None:
    """Each changed publication keeps one version, and only ``versions_kept`` of them stay."""
    settings, warehouse, _ = copy_of_baseline(tmp_path, baseline)
    shas = [file_sha256(warehouse.partition_file(EVENTS, D0))]
    for n in range(settings.versions_kept + 2):
        page = {"path": "/", "url": "https://shop.example.com/", "title": "Home", "referrer": ""}
        extra = {"messageId": f"late-{n}", "type": "page", "anonymousId": f"anon-{n}",
                 "timestamp": f"{D0}T12:00:0{n}.000Z", "receivedAt": f"{D1}T08:00:00.000Z",
                 "properties": page}  # fmt: skip
        (settings.landing_path / D1 / f"late-{n}.jsonl").write_text(json.dumps(extra) + "\n")
        ingest_arrival_day(settings, D1)
        result = dedupe_events_day(settings, D0)
        assert result.published[EVENTS].changed is True
        shas.append(file_sha256(warehouse.partition_file(EVENTS, D0)))
    kept = warehouse.versions(EVENTS, D0)
    assert len(kept) == settings.versions_kept
    # the newest kept versions, oldest first, are the publications just before the current one
    assert [file_sha256(p) for p in kept] == shas[-1 - settings.versions_kept : -1]
    # each keeps the manifest it was published with; pruned versions take theirs along
    kept_manifests = sorted(warehouse.versions_dir(EVENTS, D0).glob("*.json"))
    assert [p.stem for p in kept_manifests] == [p.stem for p in kept]
    for version, kept_manifest in zip(kept, kept_manifests, strict=True):
        rows = scalar(f"SELECT count(*) FROM read_parquet('{version}')")
        assert json.loads(kept_manifest.read_text())["events"] == rows
    # rolling back step by step restores each version together with its counts
    for version in reversed(kept):
        rows = scalar(f"SELECT count(*) FROM read_parquet('{version}')")
        warehouse.rollback(EVENTS, D0)
        assert scalar(f"SELECT count(*) FROM read_parquet('{warehouse.partition_file(EVENTS, D0)}')") == rows
        manifest = warehouse.read_manifest(EVENTS, D0)
        assert manifest is not None and manifest["events"] == rows


# --- (e) model rebuilds with unchanged inputs -----------------------------------------------

MODEL_DAYS = [D0, D1, D2]


def _model_traffic() -> list[dict[str, Any]]:
    """Three days of events for every model: anonymous visits that identify later, sessions
    crossing midnight, funnel steps, traits; several rows per partition, so the row order of
    every table is exercised."""
    rows = []
    for n, day in enumerate(MODEL_DAYS):
        midnight = datetime.fromisoformat(day).replace(tzinfo=UTC)
        for person in range(6):
            anon, user = f"anon-{person}", f"user-{person}" if person % 2 else None
            at = midnight + timedelta(hours=20 + person % 5, minutes=7 * person)
            rows += [
                event(f"{day}-{person}-a", at, type="page", anonymous_id=anon, properties={"path": "/"}),
                event(f"{day}-{person}-b", at + timedelta(minutes=9), event="Product Viewed", anonymous_id=anon),
                event(f"{day}-{person}-c", at + timedelta(minutes=15 + n), type="identify", user_id=user,
                      anonymous_id=anon, traits={"plan": ["free", "pro"][(person + n) % 2]}),
                event(f"{day}-{person}-d", at + timedelta(minutes=40), event="Signed Up", user_id=user,
                      anonymous_id=anon),
            ]  # fmt: skip
    return rows


def model_files(warehouse: Warehouse, tables: set[str]) -> dict[str, str]:
    """sha256 of every published file of the model tables, by path relative to the warehouse."""
    return {
        str(path.relative_to(warehouse.root)): file_sha256(path)
        for table in sorted(tables)
        for path in sorted((warehouse.root / table).rglob("*.parquet"))
    }


def test_model_rebuilds_with_unchanged_inputs_publish_nothing_new(tmp_path: Path) -> None:
    """Every model partition (and the unpartitioned users) rebuilt over the same events: the
    same bytes, ``changed`` False, no ``_versions`` entry, the same manifests. Then one changed
    input day: only then do rebuilds publish, keeping the replaced version."""
    (tmp_path / "no_suites").mkdir()  # the gates do not write what is published; skip their cost
    settings = PipelineSettings(
        data_dir=str(tmp_path / "data"), duckdb_threads=2, suites_dir=str(tmp_path / "no_suites")
    )
    warehouse = Warehouse(settings.warehouse_path)
    write_events(settings, _model_traffic())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_build, "column_lineage", lambda *args, **kwargs: {})
        first = build_all(settings, MODEL_DAYS)
        tables = {key.split(":")[0] for key in first}
        assert {"identities", "persons", "sessions", "retention", "funnels", "users"} <= tables
        assert all(result.published.changed for result in first.values())  # first publication
        hashes, before_manifests = model_files(warehouse, tables), manifests(warehouse)
        assert len(hashes) == len(first)
        assert all(
            result.rows > 0 for key, result in first.items() if key.startswith(("sessions", "persons"))
        )

        again = build_all(settings, MODEL_DAYS)
        assert list(again) == list(first)
        for key, result in again.items():
            assert result.published.changed is False, f"{key} was republished with different bytes"
            assert result.published.previous_version is None, key
            assert result.published.sha256 == first[key].published.sha256, key
        assert model_files(warehouse, tables) == hashes
        assert manifests(warehouse) == before_manifests
        assert files_under(warehouse.root / VERSIONS_DIR) == []
        assert files_under(warehouse.root / STAGING_DIR) == []

        # the check can fail: one more event on D2 changes person_events D2, which then keeps a version
        write_events(settings, [*_model_traffic(), event("extra", datetime.fromisoformat(D2).replace(
            hour=3, tzinfo=UTC), user_id="user-new")])  # fmt: skip
        rebuilt = build_model(settings, specs()["person_events"], D2)
        assert rebuilt.published.changed is True
        assert [p.name for p in warehouse.versions("person_events", D2)] == ["v000001.parquet"]
        assert (
            file_sha256(warehouse.versions("person_events", D2)[0])
            == hashes[f"person_events/date={D2}/part-0.parquet"]
        )
