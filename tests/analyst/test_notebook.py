"""notebooks/analyst.py runs headless on demo-like data built by the pipeline, and draws its charts.

In process with ``app.run()`` (every cell runs; a failing cell raises): the four charts are
Altair charts with valid Vega-Lite specs over the same numbers the tables hold. And as
``marimo export html`` (what a user runs; exits 1 when a cell fails), outputs only: the page
holds the four Vega-Lite outputs and no error.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import altair as alt
import duckdb
import pytest

from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "analyst.py"
CHARTS = {
    "active_chart": "Active persons per day",
    "funnel_chart": "Purchase funnel: persons per step (cohorts summed)",
    "retention_chart": "Retention: share of each cohort active N days after its first event",
    "sketch_chart": "Distinct persons per day: HLL sketch estimate (2-sigma bounds) vs exact",
}


@pytest.fixture(scope="module")
def demo(pipeline: PipelineSettings) -> PipelineSettings:
    """The session's demo-like data (tests/conftest.py): the notebook only reads it."""
    return pipeline


def load_notebook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("analyst_notebook", NOTEBOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(settings: PipelineSettings, name: str, sql: str) -> list[dict[str, Any]]:
    glob = Warehouse(settings.warehouse_path).table_glob(name)
    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{glob}')")
        return con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()


def test_every_cell_runs_and_the_charts_hold_the_tables_numbers(
    demo: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANALYTICS_DATA_DIR", demo.data_dir)  # what PipelineSettings() in the notebook reads
    outputs, defs = load_notebook().app.run()  # raises if any cell raises
    try:
        assert defs["settings"].warehouse_path == demo.warehouse_path
        for name, title in CHARTS.items():
            chart = defs[name]
            assert isinstance(chart, alt.TopLevelMixin), name
            spec = chart.to_dict()  # validates against the Vega-Lite schema
            titles = {spec.get("title")} | {layer.get("title") for layer in spec.get("layer", [])}
            assert title in titles, (name, titles)
        assert sum(o is not None for o in outputs) == 5  # the header and the four sections were displayed

        dau = table(
            demo,
            "daily_active_users",
            "SELECT activity_date, dau, wau, mau FROM daily_active_users ORDER BY 1",
        )
        active = defs["active"]
        assert [str(p) for p in active["period"]] == [str(r["activity_date"]) for r in dau]
        assert active["DAU"].tolist() == [r["dau"] for r in dau]
        assert active["WAU (7 days)"].tolist() == [r["wau"] for r in dau]
        assert active["MAU (30 days)"].tolist() == [r["mau"] for r in dau]

        steps = table(demo, "funnels", "SELECT step_index, sum(persons)::BIGINT AS n FROM funnels "
                                       "WHERE funnel = 'purchase' GROUP BY 1 ORDER BY 1")  # fmt: skip
        funnel = defs["funnel"]
        assert funnel["persons"].tolist() == [r["n"] for r in steps] and len(steps) == 4
        assert funnel["persons"].is_monotonic_decreasing and funnel["persons"].iloc[0] > 0

        cells = table(demo, "retention", "SELECT count(*) AS n FROM retention")[0]["n"]
        assert len(defs["retention"]) == cells > 0
        assert defs["retention"]["retention_on"].between(0, 1).all()

        (exact,) = table(demo, "person_events", "SELECT count(DISTINCT person_id) AS n FROM person_events")
        total = defs["sketch_total"].iloc[0]
        assert total["exact"] == exact["n"]
        assert total["lower"] <= total["estimate"] <= total["upper"] and bool(total["within_bounds"])
        assert len(defs["sketch_days"]) == len(dau)
    finally:
        defs["con"].close()


def test_marimo_export_html_renders_the_four_charts(demo: PipelineSettings, tmp_path: Path) -> None:
    page = tmp_path / "analyst.html"
    marimo = Path(sys.executable).parent / "marimo"
    done = subprocess.run(
        [str(marimo), "export", "html", "--no-include-code", str(NOTEBOOK), "-o", str(page), "-f"],
        cwd=ROOT,
        env={**os.environ, "ANALYTICS_DATA_DIR": demo.data_dir},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]  # 1 when a cell failed
    html = page.read_text()
    assert len(re.findall(r"application/vnd\.vegalite\.v\d+\+json", html)) == len(CHARTS)
    for title in CHARTS.values():
        assert title in html, title
    assert "Traceback" not in html and "MarimoExceptionRaisedError" not in html
    assert "No published tables" not in html
