"""Modeled tables from ``assets/models/*.sql``: read a file into a :class:`ModelSpec`.

A model is one SQL file: a ``/* ... */`` YAML header (description, grain, partitioning,
the partition window it reads of each upstream, column descriptions), parsed by
:class:`ModelHeader`, and one SELECT. Upstreams are the tables the SELECT names (found
with sqlglot), so adding a table is adding a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import sqlglot
import yaml
from pydantic import Field
from sqlglot import exp

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse
from analytics_pipeline.warehouse.tables import EVENTS, QUARANTINED_EVENTS, RAW_EVENTS

# Tables built by Python steps rather than SQL files; models may read them.
SOURCE_TABLES = {EVENTS: "daily", RAW_EVENTS: "daily", QUARANTINED_EVENTS: "daily"}
# Small unpartitioned tables built from files in assets/ (see build.py); a model that names
# one gets it as a view while it is built. Not upstream partitions.
SEED_TABLE_NAMES = ("funnel_steps",)
HEADER = re.compile(r"\A\s*/\*(?P<yaml>.*?)\*/(?P<sql>.*)\Z", re.DOTALL)


class ModelError(ConfigFileError):
    """A model file that cannot be loaded; the message names the file."""


class ColumnDoc(StrictModel):
    description: str = ""
    type: str | None = None  # required for a model that reads its own previous partition


class ModelHeader(StrictModel):
    """The YAML header of a model file."""

    name: str | None = None
    description: str = Field(min_length=1)
    grain: str = Field(min_length=1)
    partitioned: Literal["daily", "none"] = "daily"
    window: dict[str, Literal["latest"] | tuple[int, int]] = Field(default_factory=dict)
    columns: dict[str, str | ColumnDoc] = Field(default_factory=dict)
    # values the SQL reads with getvariable('<name>'); a feature flag may change them (assets/flags.yml)
    parameters: dict[str, int | float | str | bool] = Field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    """Partitions of an upstream read for partition D: D+start .. D+end, or the latest one."""

    start: int = 0
    end: int = 0
    latest: bool = False

    def days(self, day: str) -> list[str]:
        base = date.fromisoformat(day)
        return [(base + timedelta(days=i)).isoformat() for i in range(self.start, self.end + 1)]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    sql: str
    description: str
    grain: str
    partitioned: bool
    upstreams: dict[str, Window]
    columns: dict[str, str] = field(default_factory=dict)
    column_types: dict[str, str] = field(default_factory=dict)
    seeds: tuple[str, ...] = ()
    parameters: dict[str, int | float | str | bool] = field(default_factory=dict)

    @property
    def self_dependent(self) -> bool:
        return self.name in self.upstreams


def _window(path: Path, upstream: str, raw: Literal["latest"] | tuple[int, int]) -> Window:
    if raw == "latest":
        return Window(latest=True)
    start, end = raw
    if start > end:
        raise ModelError(f"{path}: window.{upstream}: start {start} is after end {end}")
    return Window(start, end)


def referenced_tables(sql: str) -> set[str]:
    """Tables a SELECT reads, without its own CTE names."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return {table.name for table in tree.find_all(exp.Table) if table.name} - ctes


def load_model(path: Path, known_tables: set[str]) -> ModelSpec:
    text = path.read_text()
    match = HEADER.match(text)
    if not match:
        raise ModelError(f"{path}: a model starts with a /* YAML header */ block")
    try:
        document = yaml.safe_load(match["yaml"]) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: header is not YAML: {exc}") from exc
    header = parse(document, ModelHeader, f"{path}: header", ModelError)
    name = header.name or path.stem
    sql = match["sql"].strip().rstrip(";")
    try:
        tables = referenced_tables(sql)
    except sqlglot.errors.ParseError as exc:
        raise ModelError(f"{path}: SQL does not parse: {exc}") from exc
    unknown = tables - known_tables
    if unknown:
        raise ModelError(f"{path}: reads unknown tables {sorted(unknown)}; known: {sorted(known_tables)}")
    stray = set(header.window) - (tables - set(SEED_TABLE_NAMES))
    if stray:
        raise ModelError(f"{path}: window names tables the SQL does not read: {sorted(stray)}")
    upstreams = {
        t: _window(path, t, header.window.get(t, (0, 0))) for t in sorted(tables) if t not in SEED_TABLE_NAMES
    }
    columns = {
        column: about if isinstance(about, str) else about.description
        for column, about in header.columns.items()
    }
    column_types = {
        column: about.type
        for column, about in header.columns.items()
        if isinstance(about, ColumnDoc) and about.type
    }
    if name in upstreams and upstreams[name] != Window(-1, -1):
        raise ModelError(f"{path}: a model reads its own previous partition only: window {name}: [-1, -1]")
    if name in tables and set(column_types) != set(columns):
        raise ModelError(
            f"{path}: a model that reads its own previous partition declares every column's type"
        )
    return ModelSpec(
        name=name,
        path=path,
        sql=sql,
        description=header.description.strip(),
        grain=header.grain.strip(),
        partitioned=header.partitioned == "daily",
        upstreams=upstreams,
        columns=columns,
        column_types=column_types,
        seeds=tuple(sorted(tables & set(SEED_TABLE_NAMES))),
        parameters=dict(header.parameters),
    )


def load_models(directory: Path) -> list[ModelSpec]:
    """Every model in the folder, in an order where upstreams come first."""
    paths = sorted(directory.glob("*.sql"))
    names = {p.stem for p in paths}
    known = set(SOURCE_TABLES) | set(SEED_TABLE_NAMES) | names
    specs = {spec.name: spec for spec in (load_model(p, known) for p in paths)}
    ordered: list[ModelSpec] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in SOURCE_TABLES or any(s.name == name for s in ordered):
            return
        if name in visiting:
            raise ModelError(f"models form a cycle through {name}")
        visiting.add(name)
        for upstream in specs[name].upstreams:
            if upstream != name:
                visit(upstream)
        visiting.discard(name)
        ordered.append(specs[name])

    for name in sorted(specs):
        visit(name)
    return ordered
