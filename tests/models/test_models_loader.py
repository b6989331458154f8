"""The model loader: SQL files become assets whose upstreams come from the SQL."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, Definitions, materialize

from analytics_pipeline.defs.models import model_asset
from analytics_pipeline.models import build as build_module
from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.loader import (
    SOURCE_TABLES,
    ModelError,
    load_model,
    load_models,
    referenced_tables,
)
from analytics_pipeline.models.plan import affected_partitions
from analytics_pipeline.quality.outcomes import GateFailed
from analytics_pipeline.settings import PROJECT_ROOT, PipelineSettings
from analytics_pipeline.warehouse.storage import STAGING_DIR, Warehouse
from tests.model_fixtures import event, write_events

MODELS = PROJECT_ROOT / "assets" / "models"
GATE_CHAIN = ("identities", "person_events", "event_counts")

NEW_MODEL = """/*
description: Page views per path per day.
grain: one row per (day, path)
window:
  person_events: [-6, 0]
columns:
  path: The page path.
  views_7d: Page views in the 7 days ending on the partition date.
*/
SELECT p.page_path AS path, count(*) AS views_7d
FROM person_events AS p
JOIN identities AS i ON i.user_id = p.person_id
GROUP BY p.page_path
"""


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def _copy_models(tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(MODELS, target)
    return target


def test_sql_references_become_upstreams_without_ctes() -> None:
    sql = "WITH a AS (SELECT * FROM events) SELECT * FROM a JOIN identities USING (x)"
    assert referenced_tables(sql) == {"events", "identities"}


def test_a_new_sql_file_is_a_new_asset_with_the_right_upstreams(tmp_path: Path) -> None:
    models_dir = _copy_models(tmp_path)
    (models_dir / "page_views_7d.sql").write_text(NEW_MODEL)
    specs = {spec.name: spec for spec in load_models(models_dir)}
    spec = specs["page_views_7d"]
    assert set(spec.upstreams) == {"person_events", "identities"}
    assert (spec.upstreams["person_events"].start, spec.upstreams["person_events"].end) == (-6, 0)
    defs = Definitions(
        assets=[model_asset(s) for s in specs.values()],
        resources={"settings": PipelineSettings(data_dir=str(tmp_path / "data"))},
    )
    graph = defs.resolve_asset_graph()
    node = graph.get(AssetKey("page_views_7d"))
    assert node.parent_keys == {AssetKey("person_events"), AssetKey("identities")}
    assert node.partitions_def is not None
    columns = {c.name: c.description for c in node.metadata["dagster/column_schema"].columns}
    assert columns["views_7d"].startswith("Page views in the 7 days")


def test_new_model_builds_through_dagster_with_lineage(tmp_path: Path) -> None:
    models_dir = _copy_models(tmp_path)
    (models_dir / "page_views_7d.sql").write_text(NEW_MODEL)
    settings = PipelineSettings(data_dir=str(tmp_path / "data"))
    write_events(settings, [
        event("a", datetime(2025, 1, 10, 9), type="page", user_id="u", anonymous_id="x",
              properties={"path": "/pricing"}),
    ])  # fmt: skip
    assets = [model_asset(s) for s in load_models(models_dir)]
    result = materialize(assets, partition_key="2025-01-10", resources={"settings": settings}, selection=None)
    assert result.success
    [mat] = [
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey("page_views_7d")
    ]
    assert mat.metadata["dagster/row_count"].value == 1
    lineage = mat.metadata["dagster/column_lineage"].value.deps_by_column
    assert [(d.asset_key, d.column_name) for d in lineage["path"]] == [
        (AssetKey("person_events"), "page_path")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT 1 FROM events", "starts with a /* YAML header */"),
        ("/*\ndescription: x\ngrain: y\n*/\nSELECT * FROM nowhere", "unknown tables ['nowhere']"),
        (
            "/*\ndescription: x\ngrain: y\nwindow:\n  events: [2, 1]\n*/\nSELECT * FROM events",
            "window.events: start 2 is after end 1",
        ),
        (
            "/*\ndescription: x\ngrain: y\nwindow:\n  sessions: [0, 0]\n*/\nSELECT * FROM events",
            "does not read",
        ),
        ("/*\ngrain: y\n*/\nSELECT * FROM events", "header: description: required key missing"),
        (
            "/*\ndescription: x\ngrain: y\nwindow:\n  broken: [-1, -1]\ncolumns:\n  a: no type\n*/\n"
            "SELECT * FROM broken, events",
            "declares every column's type",
        ),
    ],
)
def test_bad_model_files_give_errors_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "broken.sql").write_text(text)
    with pytest.raises(ModelError) as error:
        load_models(models_dir)
    assert "broken" in str(error.value) and message in str(error.value)


def test_late_change_marks_every_reader_in_buildable_order() -> None:
    specs = load_models(MODELS)
    days = [f"2025-01-{d:02d}" for d in range(1, 11)]
    plan = [(spec.name, day) for spec, day in affected_partitions(specs, {"events": {"2025-01-05"}}, days)]
    by_model: dict[str, list[str | None]] = {}
    for name, day in plan:
        by_model.setdefault(name, []).append(day)
    # identities is a running snapshot: every later day changes too
    assert by_model["identities"] == days[4:]
    for name, day in plan:  # upstreams of the same day come first
        if name == "person_events":
            assert plan.index(("identities", day)) < plan.index((name, day))
    # windows reach forward: sessions[D] waits for person_events[D+1], retention[D] for D+k
    assert plan.index(("person_events", "2025-01-06")) < plan.index(("sessions", "2025-01-05"))
    assert plan.index(("person_events", "2025-01-10")) < plan.index(("retention", "2025-01-05"))
    assert plan[-1] == ("users", None)


def test_failed_gate_keeps_the_staged_file_until_the_next_build_of_that_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition whose blocking gate fails is not published, and its staged file stays in
    <warehouse>/_staging/<table>/date=D/ for inspection: other builds leave it, the next
    build of the same partition clears it (a failing one leaves its own file instead)."""
    monkeypatch.setattr(build_module, "column_lineage", lambda *args, **kwargs: {})
    settings = PipelineSettings(data_dir=str(tmp_path / "data"))
    day, other = "2025-01-10", "2025-01-11"
    write_events(settings, [
        event(f"{d}-{i}", datetime.fromisoformat(d).replace(hour=9 + i, tzinfo=UTC),
              type="page" if i % 2 else "track", user_id=f"u{i % 3}")
        for d in (day, other) for i in range(6)
    ])  # fmt: skip
    known = set(SOURCE_TABLES) | {p.stem for p in MODELS.glob("*.sql")}
    spec = {name: load_model(MODELS / f"{name}.sql", known) for name in GATE_CHAIN}
    for d in (day, other):
        for name in GATE_CHAIN:
            build_model(settings, spec[name], d)
    warehouse = Warehouse(settings.warehouse_path)
    published = warehouse.partition_file("event_counts", day)
    published_bytes = published.read_bytes()
    staging = warehouse.root / STAGING_DIR / "event_counts" / f"date={day}"
    assert _files(staging) == []  # a clean build leaves nothing in staging

    # every row counts 0 persons: the ERROR expectation persons >= 1 fails
    faulty = dataclasses.replace(
        spec["event_counts"],
        sql=f"SELECT * REPLACE (CAST(0 AS BIGINT) AS persons) FROM ({spec['event_counts'].sql})",
    )
    with pytest.raises(GateFailed) as failed:
        build_model(settings, faulty, day)
    assert [c.name for c in failed.value.failed] == ["persons__be_between"]
    (kept,) = _files(staging)
    assert kept.suffix == ".parquet"
    with duckdb.connect() as con:
        staged_rows = con.execute(
            f"SELECT type, event_name, persons FROM read_parquet('{kept}') ORDER BY ALL"
        ).fetchall()
    assert staged_rows == [("page", "page", 0), ("track", "Product Viewed", 0)]  # what the gate saw
    assert published.read_bytes() == published_bytes and warehouse.versions("event_counts", day) == []

    # builds of another partition and of another model leave it where it is
    build_model(settings, spec["event_counts"], other)
    build_model(settings, spec["person_events"], day)
    assert _files(staging) == [kept]
    # the next build of the partition clears it; failing again, it leaves only its own file
    with pytest.raises(GateFailed):
        build_model(settings, faulty, day)
    (again,) = _files(staging)
    assert again != kept and not kept.exists()
    # a clean build clears it and publishes (here the same bytes as before: nothing new)
    result = build_model(settings, spec["event_counts"], day)
    assert _files(staging) == []
    assert result.published.changed is False and published.read_bytes() == published_bytes
