"""Golden queries and data-latency SLOs: percentiles, breached SLOs, planted invariant violations.

The golden queries run as Dagster runs the ``golden_queries`` asset, on data the real pipeline
built (the session's ``pipeline`` fixture), with a copy of ``checks/golden_queries.yml`` whose
run counts are small. A test that plants a fault works on a copy of the data directory.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from analytics_pipeline.defs.slo import golden_queries
from analytics_pipeline.metrics import api as query_module
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.slo.data_latency import (
    ArrivalLatency,
    EventsLatency,
    arrival_day_outcome,
    events_latency_outcomes,
    received_to_publish,
)
from analytics_pipeline.slo.percentiles import percentile, summary
from analytics_pipeline.warehouse.storage import Warehouse

PROJECT_GOLDEN = yaml.safe_load(PipelineSettings().golden_queries_path.read_text())


# --- percentiles --------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_from_known_timings() -> None:
    timings = [float(v) for v in range(1, 101)]  # 1..100 ms
    assert summary(timings) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentile([30.0, 10.0, 20.0], 50) == 20.0  # ceil(1.5) = 2nd smallest
    assert percentile([30.0, 10.0, 20.0], 95) == 30.0
    assert percentile([5.0] * 19 + [500.0], 95) == 5.0  # the 19th of 20: one slow run is not p95
    assert percentile([5.0] * 19 + [500.0], 99) == 500.0  # with 20 runs p99 is the max
    with pytest.raises(ValueError):
        percentile([], 50)


# --- the golden_queries asset -------------------------------------------------------------------


def _golden_file(tmp_path: Path, change: Any = None, runs: tuple[int, int] = (3, 5)) -> Path:
    document = yaml.safe_load(yaml.safe_dump(PROJECT_GOLDEN))
    document["runs"] = {"cold": runs[0], "warm": runs[1]}
    for q in document["queries"].values():  # generous: these tests are about the checks, not this machine
        q["latency_ms"] = {"cold": {"p95": 60_000, "p99": 60_000}, "warm": {"p95": 60_000, "p99": 60_000}}
    if change:
        change(document)
    path = tmp_path / "golden_queries.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def _run(settings: PipelineSettings) -> Any:
    return materialize([golden_queries], resources={"settings": settings}, instance=DagsterInstance.ephemeral(),
                       raise_on_error=False)  # fmt: skip


def _copy(pipeline: PipelineSettings, tmp_path: Path, golden: Path) -> PipelineSettings:
    shutil.copytree(pipeline.data_dir, tmp_path / "data", ignore=shutil.ignore_patterns("cache"))
    return pipeline.replace(data_dir=str(tmp_path / "data"), golden_queries_file=str(golden))


def test_golden_queries_pass_and_record_percentiles(pipeline: PipelineSettings, tmp_path: Path) -> None:
    settings = pipeline.replace(
        golden_queries_file=str(_golden_file(tmp_path)), cache_dir=str(tmp_path / "cache")
    )
    result = _run(settings)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {f"{q}_latency" for q in PROJECT_GOLDEN["queries"]} | set(
        PROJECT_GOLDEN["invariants"]
    )
    assert all(e.passed for e in checks.values()), {
        n: e.description for n, e in checks.items() if not e.passed
    }
    (materialization,) = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    for q in PROJECT_GOLDEN["queries"]:
        for mode, runs in (("cold", 3), ("warm", 5)):
            assert metadata[f"{q}/{mode}_runs"].value == runs  # the run count beside the percentiles
            p50, p95, p99 = (metadata[f"{q}/{mode}_{p}_ms"].value for p in ("p50", "p95", "p99"))
            assert isinstance(p95, float) and 0 < p50 <= p95 <= p99  # numeric: the UI plots them
    # the golden queries keep their own cache: the analysts' hit rate is not theirs
    assert (tmp_path / "golden").exists() and not (tmp_path / "cache").exists()


def test_a_slowed_query_breaches_its_slo(pipeline: PipelineSettings, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    def tighten(d: dict[str, Any]) -> None:
        d["queries"]["dau_yesterday"]["latency_ms"]["cold"] = {"p95": 40, "p99": 60}

    settings = pipeline.replace(
        golden_queries_file=str(_golden_file(tmp_path, tighten)), cache_dir=str(tmp_path / "cache")
    )
    original = query_module.run

    def slow(metrics: Any, settings: PipelineSettings, q: Any) -> Any:
        if q.metric == "daily_active_persons":
            time.sleep(0.08)  # 80 ms: over the 40 ms p95
        return original(metrics, settings, q)

    monkeypatch.setattr(query_module, "run", slow)
    result = _run(settings)
    assert result.success  # the query's severity is warn: reported, not blocking
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "dau_yesterday_latency")
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert "SLO breached: cold p95" in (check.description or "") and "> SLO 40 ms" in (
        check.description or ""
    )
    others = [e for e in result.get_asset_check_evaluations() if e.check_name != "dau_yesterday_latency"]
    assert all(e.passed for e in others)


def _rewrite(settings: PipelineSettings, table: str, day: str, select: str) -> None:
    """Replace a published partition with ``select`` over its own rows (a planted fault)."""
    warehouse = Warehouse(settings.warehouse_path)
    path = warehouse.partition_file(table, day)
    staged = warehouse.staging_file(table, day, "fault")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{path}')")
    con.execute(f"COPY ({select}) TO '{staged}' (FORMAT parquet)")
    con.close()
    warehouse.publish(staged, table, day, 3)


def test_dau_above_wau_fails_its_blocking_invariant_readably(
    pipeline: PipelineSettings, tmp_path: Path
) -> None:
    settings = _copy(pipeline, tmp_path, _golden_file(tmp_path))
    last = Warehouse(settings.warehouse_path).published_days("daily_active_users")[-1]
    _rewrite(settings, "daily_active_users", last, "SELECT * REPLACE (mau + 7 AS dau) FROM t")
    result = _run(settings)
    assert not result.success  # an error invariant is blocking: the run fails
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "dau_le_wau_le_mau")
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert f"violated: {last}: daily_active_persons" in (check.description or "")
    assert "> active_persons_7d" in (check.description or "")


def test_a_funnel_step_above_the_previous_fails_readably(pipeline: PipelineSettings, tmp_path: Path) -> None:
    settings = _copy(pipeline, tmp_path, _golden_file(tmp_path))
    last = Warehouse(settings.warehouse_path).published_days("funnels")[-1]
    _rewrite(settings, "funnels", last,
             "SELECT * REPLACE (CASE WHEN funnel = 'purchase' AND step_index = 3 THEN persons + 1000 "
             "ELSE persons END AS persons) FROM t")  # fmt: skip
    result = _run(settings)
    check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "funnel_steps_non_increasing"
    )
    assert not check.passed
    assert "{'funnel': 'purchase'}: step_index 3 has" in (check.description or "")


def test_event_counts_that_do_not_reconcile_fail_readably(pipeline: PipelineSettings, tmp_path: Path) -> None:
    settings = _copy(pipeline, tmp_path, _golden_file(tmp_path))
    warehouse = Warehouse(settings.warehouse_path)
    last = min(warehouse.published_days("event_counts")[-1], warehouse.published_days("events")[-1])
    _rewrite(settings, "event_counts", last, "SELECT * REPLACE (events + 1 AS events) FROM t")
    result = _run(settings)
    check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "event_counts_equal_events"
    )
    assert not check.passed and f"violated: {last}: event_counts_total" in (check.description or "")
    assert "!= events rows" in (check.description or "")


# --- data-latency SLOs --------------------------------------------------------------------------


def test_received_to_publish_percentiles_and_their_slo(tmp_path: Path) -> None:
    published_at = datetime(2025, 3, 2, 2, 0, tzinfo=UTC)
    # 100 events received 1..100 hours before the publish
    path = tmp_path / "events.parquet"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT TIMESTAMPTZ '2025-03-02 02:00:00+00' - INTERVAL (i) HOUR AS received_at
                         FROM range(1, 101) t(i)) TO '{path}' (FORMAT parquet)""")
    con.close()
    figures = received_to_publish(path, published_at)
    assert figures is not None
    assert (figures["p50_s"], figures["p95_s"], figures["p99_s"]) == (50 * 3600.0, 95 * 3600.0, 99 * 3600.0)
    slo = EventsLatency(received_to_publish_hours={"p95": 96, "p99": 98})
    p95, p99 = events_latency_outcomes(slo, figures)
    assert p95.passed and "95.00 h (within the SLO of 96 h)" in p95.description
    assert not p99.passed and "99.00 h (over the SLO of 98 h)" in p99.description
    assert p99.severity.value == "warn"


def test_arrival_day_to_publish_hours() -> None:
    slo = ArrivalLatency(end_of_day_to_publish_hours=4)
    on_time = arrival_day_outcome(slo, "2025-03-01", datetime(2025, 3, 2, 2, 30, tzinfo=UTC))
    assert on_time.passed and on_time.metadata["hours_after_end_of_day"] == 2.5
    late = arrival_day_outcome(slo, "2025-03-01", datetime(2025, 3, 3, 2, 0, tzinfo=UTC))
    assert not late.passed and "published 26.00 h after the end of arrival day 2025-03-01" in late.description


def test_the_pipeline_records_data_latency_on_every_events_partition(pipeline: PipelineSettings) -> None:
    """The demo-like backfill ran days after the events were received: honestly over the SLO."""
    from analytics_pipeline.definitions import defs

    warehouse = Warehouse(pipeline.warehouse_path)
    day = warehouse.published_days("events")[0]
    path = warehouse.partition_file("events", day)
    figures = received_to_publish(path, datetime.fromtimestamp(path.stat().st_mtime, tz=UTC))
    assert figures is not None and figures["p95_s"] > 0
    specs = {s.name: s for s in defs.resolve_assets_def("events").check_specs}
    assert not specs["received_to_publish_p95"].blocking and not specs["received_to_publish_p99"].blocking
    raw = {s.name: s for s in defs.resolve_assets_def("raw_events").check_specs}
    assert "arrival_day_to_publish" in raw and not raw["arrival_day_to_publish"].blocking
    assert datetime.now(UTC) - datetime.fromtimestamp(path.stat().st_mtime, tz=UTC) < timedelta(days=1)
