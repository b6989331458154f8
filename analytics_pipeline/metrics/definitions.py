"""``assets/metrics.yml``: the governed metric definitions, validated when the code location loads.

The file is parsed by :class:`MetricsFile` (unknown keys are errors), then checked against
the modeled tables it names: every table must be a model, every column an expression
reads must be one of the model's declared columns, every dimension a metric allows must
be one of its model's, every grain day, week or month. Errors name the file, the metric
(or model) and the key.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse, read_yaml
from analytics_pipeline.settings import PipelineSettings

GRAINS = ("day", "week", "month")
Grain = Literal["day", "week", "month"]
SKETCHES = ("hll_persons", "frequent_items")


class MetricsDefinitionError(ConfigFileError):
    """``assets/metrics.yml`` is invalid; the message names the file, the metric and the key."""


class DimensionDef(StrictModel):
    expr: str
    description: str = ""


class ModelDef(StrictModel):
    """A modeled table as a semantic model: its time dimension and the dimensions analysts may use."""

    description: str = ""
    table: str | None = None  # default: the model's name
    time_dimension: str
    dimensions: dict[str, DimensionDef] = Field(default_factory=dict)


class MetricDef(StrictModel):
    kind: Literal["simple", "ratio", "rolling", "approximate"]
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    dimensions: list[str] = Field(default_factory=list)
    grains: list[Grain] = Field(default_factory=list)
    model: str | None = None  # simple, rolling (ratio: its parts' model)
    expr: str | None = None  # simple
    numerator: str | None = None  # ratio
    denominator: str | None = None  # ratio
    entity: str | None = None  # rolling
    window_days: int | None = Field(default=None, ge=1, le=366)  # rolling
    sketch: Literal["hll_persons", "frequent_items"] | None = None  # approximate
    sketch_dimension: str | None = None  # approximate, frequent_items


class MetricsFile(StrictModel):
    models: dict[str, ModelDef]
    metrics: dict[str, MetricDef] = Field(min_length=1)


@dataclass(frozen=True)
class Metric:
    """One metric as the query layer uses it."""

    name: str
    kind: str
    description: str
    owner: str
    dimensions: tuple[str, ...]
    grains: tuple[str, ...]
    model: str | None
    expr: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    entity: str | None = None
    window_days: int | None = None
    sketch: str | None = None
    sketch_dimension: str | None = None

    @property
    def formula(self) -> str:
        """How the value is computed, in one line (for the docs)."""
        if self.kind == "simple":
            return f"{self.expr} over {self.model}"
        if self.kind == "ratio":
            return f"{self.numerator} / {self.denominator}"
        if self.kind == "rolling":
            return f"distinct {self.entity} of {self.model} over the {self.window_days} days up to each day"
        if self.sketch == "frequent_items":
            return f"frequent-items sketch of {self.sketch_dimension}, merged over the range"
        return "union of the daily HLL sketches of persons over the range (estimate, 2-sigma bounds)"


@dataclass(frozen=True)
class Metrics:
    """The validated file: semantic models and metrics by name."""

    path: Path
    models: dict[str, ModelDef]
    metrics: dict[str, Metric]

    def get(self, name: str) -> Metric:
        if name not in self.metrics:
            raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(self.metrics))}")
        return self.metrics[name]


def expression_columns(expr: str) -> set[str]:
    """Column names an expression reads: the attributes taken directly on ``_`` (``_.revenue.sum()``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(expr, mode="eval")):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "_":
            names.add(node.attr)
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "_"
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(str(node.slice.value))
    return names


# methods a measure calls on the table itself, not columns
TABLE_METHODS = {"count", "all"}


def _check_expression(where: str, expr: str, columns: set[str]) -> None:
    try:
        used = expression_columns(expr)
    except SyntaxError as exc:
        raise MetricsDefinitionError(f"{where}: not a valid expression: {expr!r} ({exc.msg})") from None
    unknown = sorted(used - columns - TABLE_METHODS)
    if unknown:
        raise MetricsDefinitionError(f"{where}: unknown columns {unknown}; the table has {sorted(columns)}")


def validate(document: object, source: Path, table_columns: Mapping[str, set[str]]) -> Metrics:
    """Parse and check the file against the modeled tables' columns (``table -> columns``)."""
    config = parse(document, MetricsFile, source, MetricsDefinitionError)
    for name, model in config.models.items():
        where = f"{source}: models.{name}"
        table = model.table or name
        if table not in table_columns:
            raise MetricsDefinitionError(
                f"{where}.table: unknown table {table!r}; modeled tables: {sorted(table_columns)}"
            )
        columns = table_columns[table]
        if model.time_dimension not in columns:
            raise MetricsDefinitionError(
                f"{where}.time_dimension: unknown column {model.time_dimension!r}; the table has {sorted(columns)}"
            )
        for dimension, definition in model.dimensions.items():
            _check_expression(f"{where}.dimensions.{dimension}.expr", definition.expr, columns)
    metrics: dict[str, Metric] = {}
    for name, raw in config.metrics.items():
        where = f"{source}: metrics.{name}"
        metrics[name] = _metric(where, name, raw, config, table_columns)
    return Metrics(source, dict(config.models), metrics)


def _require(where: str, raw: MetricDef, needed: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    for key in needed:
        if getattr(raw, key) is None:
            raise MetricsDefinitionError(f"{where}.{key}: required for kind {raw.kind}")
    for key in forbidden:
        if getattr(raw, key) is not None:
            raise MetricsDefinitionError(f"{where}.{key}: not used by kind {raw.kind}")


def _metric(
    where: str, name: str, raw: MetricDef, config: MetricsFile, table_columns: Mapping[str, set[str]]
) -> Metric:
    model_name = raw.model
    if raw.kind == "simple":
        _require(
            where, raw, ("model", "expr"), ("numerator", "denominator", "entity", "window_days", "sketch")
        )
    elif raw.kind == "ratio":
        _require(
            where, raw, ("numerator", "denominator"), ("model", "expr", "entity", "window_days", "sketch")
        )
        parts = []
        for key in ("numerator", "denominator"):
            part = getattr(raw, key)
            other = config.metrics.get(part)
            if other is None or other.kind != "simple":
                raise MetricsDefinitionError(
                    f"{where}.{key}: {part!r} is not a simple metric of this file; a ratio divides two simple metrics"
                )
            parts.append(other)
        if parts[0].model != parts[1].model:
            raise MetricsDefinitionError(
                f"{where}: numerator and denominator read different models ({parts[0].model}, {parts[1].model})"
            )
        model_name = parts[0].model
    elif raw.kind == "rolling":
        _require(
            where, raw, ("model", "entity", "window_days"), ("expr", "numerator", "denominator", "sketch")
        )
        if list(raw.grains) != ["day"]:
            raise MetricsDefinitionError(
                f"{where}.grains: a rolling metric is a value per day: grains: [day]"
            )
    else:
        _require(
            where, raw, ("sketch",), ("model", "expr", "numerator", "denominator", "entity", "window_days")
        )
        if raw.sketch == "frequent_items" and raw.sketch_dimension not in ("page_path", "event"):
            raise MetricsDefinitionError(
                f"{where}.sketch_dimension: page_path or event for a frequent_items sketch"
            )
        if raw.sketch == "hll_persons" and not set(raw.dimensions) <= {"event", "page_path", "library"}:
            raise MetricsDefinitionError(
                f"{where}.dimensions: the persons sketches are kept per event, page_path and library only"
            )
    if model_name is not None:
        if model_name not in config.models:
            raise MetricsDefinitionError(
                f"{where}.model: unknown model {model_name!r}; models of this file: {sorted(config.models)}"
            )
        model = config.models[model_name]
        columns = table_columns[model.table or model_name]
        unknown = sorted(set(raw.dimensions) - set(model.dimensions))
        if unknown:
            raise MetricsDefinitionError(
                f"{where}.dimensions: unknown dimensions {unknown}; {model_name} has {sorted(model.dimensions)}"
            )
        if raw.expr is not None:
            _check_expression(f"{where}.expr", raw.expr, columns)
        if raw.entity is not None and raw.entity not in columns:
            raise MetricsDefinitionError(f"{where}.entity: unknown column {raw.entity!r} of {model_name}")
    return Metric(
        name=name,
        kind=raw.kind,
        description=raw.description.strip(),
        owner=raw.owner,
        dimensions=tuple(raw.dimensions),
        grains=tuple(raw.grains),
        model=model_name,
        expr=raw.expr,
        numerator=raw.numerator,
        denominator=raw.denominator,
        entity=raw.entity,
        window_days=raw.window_days,
        sketch=raw.sketch,
        sketch_dimension=raw.sketch_dimension,
    )


def load_metrics(path: Path, table_columns: Mapping[str, set[str]]) -> Metrics:
    """Read and validate ``assets/metrics.yml``."""
    return validate(read_yaml(path, MetricsDefinitionError, "metric definitions"), path, table_columns)


def table_columns(models_dir: Path) -> dict[str, set[str]]:
    """The columns each modeled table declares in its SQL header."""
    from analytics_pipeline.models.loader import load_models

    return {spec.name: set(spec.columns) for spec in load_models(models_dir)}


def project_metrics(settings: PipelineSettings) -> Metrics:
    """The project's metric definitions, checked against its models (read once per settings)."""
    key = (str(settings.metrics_path), str(settings.models_path))
    if key not in _LOADED:
        _LOADED[key] = load_metrics(settings.metrics_path, table_columns(settings.models_path))
    return _LOADED[key]


_LOADED: dict[tuple[str, str], Metrics] = {}
