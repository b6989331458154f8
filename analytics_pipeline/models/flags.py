"""Feature flags (``assets/flags.yml``): model variants switched on for a date range, or not at all.

A flag targets one model and changes how its partitions are built: either ``parameters``
(values the model's SQL reads with ``getvariable``, declared with their defaults in the
model's header) or ``sql`` (a second SQL file that replaces the model's SELECT). It is
``enabled`` for a date range (``{from: D1, to: D2}``, both inclusive, either open), for every
day (``true``), or not at all (``false``). The flags active for a partition are recorded in
its manifest and materialization metadata, and observed per partition as the data version
of the model's ``<model>_flags`` source asset, so a flag change marks exactly the partitions
it affects as stale in the Dagster UI.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import sqlglot
from pydantic import Field, field_validator, model_validator

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse, read_yaml
from analytics_pipeline.models.loader import HEADER, ModelSpec, referenced_tables

FLAGS_SUFFIX = "_flags"


class FlagsError(ConfigFileError):
    """``assets/flags.yml`` is invalid; the message names the file, the flag and the key."""


class DateRange(StrictModel):
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.from_ and self.to and self.from_ > self.to:
            raise ValueError(f"from {self.from_} is after to {self.to}")
        return self

    def covers(self, day: date) -> bool:
        return (self.from_ is None or self.from_ <= day) and (self.to is None or day <= self.to)


class FlagDef(StrictModel):
    description: str = Field(min_length=1)
    model: str
    parameters: dict[str, int | float | str | bool] = Field(default_factory=dict)
    sql: str | None = None  # a path relative to the flags file's project root (assets/...)
    enabled: bool | DateRange = False

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("enabled is true, false or {from: YYYY-MM-DD, to: YYYY-MM-DD}")
        return value


class FlagsFile(StrictModel):
    flags: dict[str, FlagDef] = Field(default_factory=dict)


@dataclass(frozen=True)
class Flag:
    name: str
    description: str
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)
    sql: str | None = None  # the variant's SELECT (header stripped), when the flag swaps the SQL
    sql_path: str | None = None
    enabled: bool | DateRange = False

    def active_on(self, day: str | None) -> bool:
        if isinstance(self.enabled, bool):
            return self.enabled
        return day is not None and self.enabled.covers(date.fromisoformat(day))


def load_flags(path: Path, specs: Sequence[ModelSpec]) -> dict[str, Flag]:
    """Read and validate the flags file against the models (names, parameters, variant SQL)."""
    if not path.exists():
        return {}
    document = read_yaml(path, FlagsError, "feature flags") or {}
    config = parse(document, FlagsFile, path, FlagsError)
    by_name = {spec.name: spec for spec in specs}
    flags: dict[str, Flag] = {}
    for name, raw in config.flags.items():
        where = f"{path}: flags.{name}"
        spec = by_name.get(raw.model)
        if spec is None:
            raise FlagsError(f"{where}.model: unknown model {raw.model!r}; models: {sorted(by_name)}")
        unknown = sorted(set(raw.parameters) - set(spec.parameters))
        if unknown:
            raise FlagsError(
                f"{where}.parameters: {raw.model} declares no parameters {unknown}; "
                f"its parameters: {sorted(spec.parameters) or 'none'}"
            )
        for key, value in raw.parameters.items():
            default = spec.parameters[key]
            if type(value) is not type(default) and not (
                isinstance(default, float) and isinstance(value, int)
            ):
                raise FlagsError(
                    f"{where}.parameters.{key}: {value!r} is not a {type(default).__name__} like its default {default!r}"
                )
        sql = None
        if raw.sql is not None:
            variant = (path.parent.parent / raw.sql) if not Path(raw.sql).is_absolute() else Path(raw.sql)
            sql = variant_sql(variant, spec, f"{where}.sql")
        if not raw.parameters and raw.sql is None:
            raise FlagsError(f"{where}: a flag sets parameters or a sql variant")
        flags[name] = Flag(name, raw.description, raw.model, dict(raw.parameters), sql, raw.sql, raw.enabled)
    for model in {f.model for f in flags.values()}:
        swaps = [f.name for f in flags.values() if f.model == model and f.sql]
        if len(swaps) > 1:
            raise FlagsError(f"{path}: flags {swaps} all swap the SQL of {model}; one variant per model")
    return flags


def variant_sql(variant: Path, spec: ModelSpec, where: str) -> str:
    """The SELECT of a variant SQL file (header stripped), checked to read only what ``spec`` reads."""
    if not variant.exists():
        raise FlagsError(f"{where}: no such file {variant}")
    text = variant.read_text()
    match = HEADER.match(text)
    sql = (match["sql"] if match else text).strip().rstrip(";")
    try:
        tables = referenced_tables(sql)
    except sqlglot.errors.ParseError as exc:
        raise FlagsError(f"{where}: {variant} does not parse: {exc}") from None
    allowed = set(spec.upstreams) | set(spec.seeds)
    if not tables <= allowed:
        raise FlagsError(
            f"{where}: {variant} reads {sorted(tables - allowed)}, which {spec.name} does not read"
        )
    return sql


def active_flags(flags: Mapping[str, Flag], model: str, day: str | None) -> list[Flag]:
    """The flags of ``model`` switched on for partition ``day``, by name."""
    return [flags[n] for n in sorted(flags) if flags[n].model == model and flags[n].active_on(day)]


def flag_record(active: Sequence[Flag]) -> dict[str, Any]:
    """What a build records: each active flag's parameters and variant file."""
    return {
        f.name: {"parameters": f.parameters, **({"sql": f.sql_path} if f.sql_path else {})} for f in active
    }


def flags_version(active: Sequence[Flag]) -> str:
    """A short, stable version of the active flags ('none' without any): the partition's data version."""
    if not active:
        return "none"
    return hashlib.sha256(json.dumps(flag_record(active), sort_keys=True).encode()).hexdigest()[:16]


def build_inputs(spec: ModelSpec, active: Sequence[Flag]) -> tuple[str, dict[str, Any]]:
    """The SQL and parameter values a partition is built with, flags applied."""
    sql = spec.sql
    parameters = dict(spec.parameters)
    for flag in active:
        parameters.update(flag.parameters)
        if flag.sql:
            sql = flag.sql
    return sql, parameters


_LOADED: dict[tuple[str, str, float], dict[str, Flag]] = {}


def project_flags(flags_path: Path, models_dir: Path) -> dict[str, Flag]:
    """The flags file checked against the models of ``models_dir`` (re-read when the file changes)."""
    from analytics_pipeline.models.loader import load_models

    stamp = flags_path.stat().st_mtime if flags_path.exists() else 0.0
    key = (str(flags_path), str(models_dir), stamp)
    if key not in _LOADED:
        _LOADED[key] = load_flags(flags_path, load_models(models_dir))
    return _LOADED[key]


def flagged_models(flags: Mapping[str, Flag], specs: Sequence[ModelSpec]) -> list[str]:
    """Models a flag can change: those with parameters, and those a flag names."""
    named = {f.model for f in flags.values()}
    return [s.name for s in specs if s.parameters or s.name in named]


@dataclass(frozen=True)
class OutOfDate:
    """A published partition built with other flags than the flags file now makes active."""

    model: str
    day: str  # 'all' for an unpartitioned model
    built_with: dict[str, Any]
    active: dict[str, Any]


def out_of_date(flags: Mapping[str, Flag], specs: Sequence[ModelSpec], warehouse: Any) -> list[OutOfDate]:
    """Every published partition of a flagged model whose manifest's flags differ from the active ones.

    ``warehouse`` is a :class:`~analytics_pipeline.warehouse.storage.Warehouse`; a manifest
    without ``flags`` was built with none.
    """
    stale = []
    for spec in specs:
        if spec.name not in flagged_models(flags, specs):
            continue
        days = warehouse.published_days(spec.name) if spec.partitioned else ["all"]
        for day in days:
            if not warehouse.partition_file(spec.name, day).exists():
                continue
            manifest = warehouse.read_manifest(spec.name, day) or {}
            built_with = manifest.get("flags") or {}
            active = flag_record(active_flags(flags, spec.name, day if spec.partitioned else None))
            if built_with != active:
                stale.append(OutOfDate(spec.name, day, built_with, active))
    return stale
