"""Smoke test of ``benchmarks/bench_day.py`` at 100k events: the outputs, never the timings.

The benchmark is only worth its figures if the three contenders did the same work: the
pipeline (through Dagster) must publish every table with its gates passing, and its
events, sessions and daily active users must agree with the bare-DuckDB reference and the
pandas baseline, which skip the pipeline's quarantine rules (so they may keep the few
planted bad lines the pipeline rejects, never fewer rows).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_day.py"
N = 100_000


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_day", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("bench_day")
    out = base / "result.json"
    bench = load_bench()
    assert bench.main(["--events", str(N), "--pandas-events", str(N), "--data-dir", str(base / "work"),
                       "--json", str(out)]) == 0  # fmt: skip
    return dict(json.loads(out.read_text()))


def test_pipeline_publishes_the_day_with_every_gate_passing(document: dict[str, Any]) -> None:
    (result,) = document["results"]
    pipeline, gen = result["pipeline"], result["generated"]
    assert pipeline["ok"] is True
    # an arrival day without files: ingest publishes an empty day, and the events volume gate
    # then blocks (zero rows where the previous days had some), as it should
    idle = {s["step"]: s["status"] for s in result["idle_nightly"]["steps"] if s["step"] != "(run)"}
    assert idle == {"ingest_arrival_day": "SUCCESS", "dedupe_events_day": "FAILURE"}
    day, next_day = sorted(pipeline["outputs"]["raw_events"])
    planted = sum(gen["main"]["malformed_planted"].values()) + sum(gen["next"]["malformed_planted"].values())
    # every line of the two arrival days is an accepted row or a quarantined one
    raw = sum(pipeline["outputs"]["raw_events"].values())
    quarantined = sum(pipeline["outputs"]["quarantined_events"].values())
    assert 0 < quarantined <= planted
    assert raw + quarantined >= gen["main"]["events_planted"]
    events = pipeline["outputs"]["events"]
    # the main day's events: every planted event except late ones landing after the next day
    assert 0.97 * gen["main"]["events_planted"] <= events[day] <= gen["main"]["events_planted"]
    assert events[next_day] >= gen["next"]["events_planted"] * 0.97
    assert pipeline["outputs"]["dau"][day] > 0
    assert pipeline["outputs"]["sessions"][day] > 0


def test_reference_and_pandas_do_the_same_work(document: dict[str, Any]) -> None:
    (result,) = document["results"]
    pipeline = result["pipeline"]["outputs"]
    planted = sum(result["generated"]["main"]["malformed_planted"].values()) + sum(
        result["generated"]["next"]["malformed_planted"].values()
    )
    for name in ("reference", "pandas"):
        other = result[name]["outputs"]
        for day, count in pipeline["events"].items():
            # the others keep the bad lines that only the pipeline's rules reject (schemas, keys)
            assert count <= other["events"][day] <= count + planted, (name, day)
            assert abs(other["dau"][day] - pipeline["persons_unstitched"][day]) <= planted, (name, day)
    # a kept bad line can join two sessions (pandas reads a duplicated key's last value)
    for day, sessions in result["reference"]["outputs"]["sessions"].items():
        assert abs(result["pandas"]["outputs"]["sessions"][day] - sessions) <= planted


def test_document_has_every_figure(document: dict[str, Any]) -> None:
    (result,) = document["results"]
    for name in ("pipeline", "reference", "pandas"):
        assert result[name]["wall_s"] > 0 and result[name]["events_per_s"] > 0
        assert result[name]["peak_rss_mib"] > 0
    assert result["ratio"] == pytest.approx(
        result["pipeline"]["wall_s"] / result["reference"]["wall_s"], 0.01
    )
    steps = [s for s in result["pipeline"]["steps"] if s["step"] != "(run)"]
    names = {s["step"] for s in steps}
    assert {"ingest_arrival_day", "dedupe_events_day"} <= names
    assert all(s["seconds"] >= 0 and s["peak_rss_mib"] for s in steps)
    assert result["executor"] == "multiprocess"  # the default: each step in its own process
    assert all(s.get("pid") for s in steps) and len({s["pid"] for s in steps}) == len(steps)
    assert result["pipeline"]["checks"]["events: gates"]["calls"] == 3  # main day, next day, late window
    assert document["machine"]["cores"] >= 1
