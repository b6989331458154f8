"""The metrics stage in Dagster: definitions published as metadata, the cache's health as numbers,
and the sketches rebuilt with the models when late data changes a date."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, materialize

from analytics_pipeline.defs.metrics import metric_definitions, metrics_cache
from analytics_pipeline.defs.models import planned_specs
from analytics_pipeline.metrics.api import query
from analytics_pipeline.models.plan import plan_rebuilds
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse


def test_metric_definitions_and_cache_health_are_recorded(pipeline: PipelineSettings, tmp_path: Path) -> None:
    settings = pipeline.replace(cache_dir=str(tmp_path / "cache"))
    last = Warehouse(settings.warehouse_path).published_days("person_events")[-1]
    for _ in range(3):
        query("events", start=last, end=last, settings=settings)  # 1 miss, 2 hits
    result = materialize([metric_definitions, metrics_cache], resources={"settings": settings},
                         instance=DagsterInstance.ephemeral())  # fmt: skip
    assert result.success
    by_asset = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    definitions = by_asset["metric_definitions"]
    assert "| `events` | simple |" in definitions["metrics"].value
    assert definitions["metric_count"].value >= 20
    cache = by_asset["metrics_cache"]
    assert (cache["hits"].value, cache["misses"].value, cache["entries"].value) == (2, 1, 1)
    assert cache["hit_rate"].value == 2 / 3 and cache["events/hit_rate"].value == 2 / 3
    assert cache["bytes"].value > 0 and cache["swept_entries"].value == 0
    assert isinstance(cache["max_entry_age_s"].value, float)


def test_late_data_rebuilds_the_sketches_of_the_changed_date(pipeline: PipelineSettings) -> None:
    warehouse = Warehouse(pipeline.warehouse_path)
    day = warehouse.published_days("events")[0]
    runs = plan_rebuilds(planned_specs, {day}, warehouse)
    planned = [(name, run.partition) for run in runs for name in run.models]
    assert ("daily_sketches", day) in planned
    assert planned.index(("daily_sketches", day)) > planned.index(("person_events", day))
