"""``assets/metrics.yml`` is validated when the definitions load: every wrong name is an error naming
the file, the metric (or model) and the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics_pipeline.metrics.definitions import (
    MetricsDefinitionError,
    expression_columns,
    load_metrics,
    table_columns,
    validate,
)
from analytics_pipeline.settings import PipelineSettings

SETTINGS = PipelineSettings()
COLUMNS = table_columns(SETTINGS.models_path)
PROJECT = yaml.safe_load(SETTINGS.metrics_path.read_text())


def test_the_project_file_loads_and_every_kind_is_used() -> None:
    metrics = load_metrics(SETTINGS.metrics_path, COLUMNS)
    kinds = {m.kind for m in metrics.metrics.values()}
    assert kinds == {"simple", "ratio", "rolling", "approximate"}
    for metric in metrics.metrics.values():
        assert metric.description and metric.owner and metric.formula


def test_expression_columns_are_the_attributes_taken_on_the_row() -> None:
    assert expression_columns("_.revenue.sum(where=_.event == 'Order Completed')") == {"revenue", "event"}
    assert expression_columns("_.count()") == {"count"}


def _broken(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(PROJECT)
    change(document)
    return document


CASES = [
    (lambda d: d["models"]["sessions"].update(table="sesions"), "models.sessions.table: unknown table 'sesions'"),
    (lambda d: d["models"]["sessions"].update(time_dimension="day"),
     "models.sessions.time_dimension: unknown column 'day'"),
    (lambda d: d["models"]["sessions"]["dimensions"].update(country={"expr": "_.country"}),
     "models.sessions.dimensions.country.expr: unknown columns ['country']"),
    (lambda d: d["metrics"]["events"].update(model="eventz"), "metrics.events.model: unknown model 'eventz'"),
    (lambda d: d["metrics"]["revenue"].update(expr="_.revenu.sum()"), "metrics.revenue.expr: unknown columns ['revenu']"),
    (lambda d: d["metrics"]["events"].update(dimensions=["type", "country"]),
     "metrics.events.dimensions: unknown dimensions ['country']"),
    (lambda d: d["metrics"]["events"].update(grains=["day", "hour"]), "metrics.events.grains[1]: Input should be"),
    (lambda d: d["metrics"]["events"].update(owners="x"), "metrics.events.owners: unknown key"),
    (lambda d: d["metrics"]["events"].pop("owner"), "metrics.events.owner: required key missing"),
    (lambda d: d["metrics"]["bounce_rate"].update(numerator="active_persons_7d"),
     "metrics.bounce_rate.numerator: 'active_persons_7d' is not a simple metric"),
    (lambda d: d["metrics"]["bounce_rate"].update(denominator="events"),
     "metrics.bounce_rate: numerator and denominator read different models"),
    (lambda d: d["metrics"]["active_persons_7d"].update(grains=["week"]),
     "metrics.active_persons_7d.grains: a rolling metric is a value per day"),
    (lambda d: d["metrics"]["active_persons_7d"].update(entity="person"),
     "metrics.active_persons_7d.entity: unknown column 'person'"),
    (lambda d: d["metrics"]["events"].update(expr="_.count("), "metrics.events.expr: not a valid expression"),
    (lambda d: d["metrics"]["top_pages"].update(sketch_dimension="referrer"), "metrics.top_pages.sketch_dimension"),
    (lambda d: d["metrics"]["events"].update(numerator="x"), "metrics.events.numerator: not used by kind simple"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "words"), CASES)
def test_a_wrong_name_stops_loading_naming_file_metric_and_key(change: Any, words: str) -> None:
    source = Path("assets/metrics.yml")
    with pytest.raises(MetricsDefinitionError) as error:
        validate(_broken(change), source, COLUMNS)
    assert str(error.value).startswith(str(source)) and words in str(error.value)


def test_a_wrong_metric_stops_the_code_location_loading(tmp_path: Path) -> None:
    """The Dagster definitions validate the file as they load (what `dagster dev` would show)."""
    import subprocess
    import sys

    broken = tmp_path / "metrics.yml"
    broken.write_text(yaml.safe_dump(_broken(lambda d: d["metrics"]["events"].update(grains=["fortnight"]))))
    env = {"ANALYTICS_METRICS_FILE": str(broken), "PATH": "/usr/bin:/bin"}
    loaded = subprocess.run([sys.executable, "-c", "import analytics_pipeline.definitions"], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert loaded.returncode != 0
    assert f"{broken}: metrics.events.grains[0]" in loaded.stderr
