"""Expectation suites from ``checks/suites/<asset>.yml``, run with Great Expectations.

A suite file lists GX 1.x expectations in GX's own terms (``type``, ``kwargs``, ``meta``),
each with our ``severity`` (``error`` blocks publishing, ``warn`` reports), plus two
policies of ours that GX has no expectation for: ``volume`` (row count against recent
partitions) and ``schema_drift`` (see gates.py). The file is parsed by :class:`SuiteFile`;
GX validates each expectation's name and arguments.

Suites run on the staged partition before it is published. GX's SQL datasource fails on
DuckDB (see DESIGN.md), so the staged Parquet file is read into pandas, only the columns
the expectations name, and validated through an ephemeral GX context: as one frame up to
``suite_chunks.SUITE_CHUNK_ROWS`` rows, in chunks above that (suite_chunks.py says how, and
which expectations still read their columns whole).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import great_expectations as gx
import pandas as pd
import pyarrow.parquet as pq
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.execution_engine import pandas_execution_engine
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from pydantic import Field, model_validator

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse, read_yaml
from analytics_pipeline.quality.outcomes import CheckDeclaration, CheckOutcome, Severity

PARTIAL_UNEXPECTED = 5
COLUMN_ARGUMENTS = ("column", "column_A", "column_B")
# default check names drop what the column already says: message_id__be_unique
SHORTENED_PREFIXES = ("column_values_to_", "column_pair_values_", "column_", "table_")
CHECK_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class SuiteError(ConfigFileError):
    """A suite file that cannot be used; the message names the file and the entry."""


class VolumePolicy(StrictModel):
    """Row count against the median of the previous ``history`` published partitions."""

    history: int = Field(default=7, ge=1)
    lower_ratio: float = Field(default=0.5, ge=0)
    upper_ratio: float = 2.0
    min_median: float = 50  # below this, counts are too small to judge (a quiet day may be empty)
    zero_rows: Severity = Severity.ERROR
    out_of_band: Severity = Severity.WARN

    @model_validator(mode="after")
    def _band(self) -> VolumePolicy:
        if not 0 <= self.lower_ratio <= 1 <= self.upper_ratio:
            raise ValueError("need 0 <= lower_ratio <= 1 <= upper_ratio")
        return self


class SchemaDriftPolicy(StrictModel):
    """Column changes against the published table: breaking ones block by default."""

    removed_or_retyped: Severity = Severity.ERROR
    added: Severity = Severity.WARN


class ExpectationEntry(StrictModel):
    """One entry of ``expectations``: a GX expectation name, its arguments, our severity."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = Severity.ERROR
    description: str | None = None
    notes: str | None = None


class SuiteFile(StrictModel):
    """``checks/suites/<asset>.yml``: ``volume: false`` or ``schema_drift: false`` turns a policy off."""

    name: str | None = None
    expectations: list[ExpectationEntry] = Field(default_factory=list)
    volume: VolumePolicy | Literal[False] = VolumePolicy()
    schema_drift: SchemaDriftPolicy | Literal[False] = SchemaDriftPolicy()
    meta: dict[str, Any] = Field(default_factory=dict)
    notes: str | None = None


@dataclass(frozen=True)
class Expectation(CheckDeclaration):
    """An expectation as the gate runs it: a declared check plus GX's name and arguments."""

    type: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AssetSuite:
    asset: str
    path: Path
    expectations: list[Expectation] = field(default_factory=list)
    volume: VolumePolicy | None = VolumePolicy()
    schema_drift: SchemaDriftPolicy | None = SchemaDriftPolicy()


def _default_check_name(expectation_type: str, kwargs: Mapping[str, Any]) -> str:
    columns = [str(kwargs[k]) for k in COLUMN_ARGUMENTS if k in kwargs]
    columns += [str(c) for c in kwargs.get("column_list", [])]
    name = expectation_type.removeprefix("expect_")
    for prefix in SHORTENED_PREFIXES:
        name = name.removeprefix(prefix)
    return "__".join([*columns, name]) if columns else name


def _expectation(path: Path, index: int, entry: ExpectationEntry) -> Expectation:
    where = f"expectations[{index}]"
    try:  # GX validates the name and the arguments
        config = ExpectationConfiguration(type=entry.type, kwargs=dict(entry.kwargs), meta=dict(entry.meta))
        config.to_domain_obj()
    except Exception as exc:
        raise SuiteError(f"{path}: {where} ({entry.type}): {exc}") from exc
    name = str(entry.meta.get("check_name") or _default_check_name(entry.type, entry.kwargs))
    if not CHECK_NAME.match(name):
        raise SuiteError(f"{path}: {where}: check name {name!r} must be letters, digits and underscores")
    return Expectation(
        name=name,
        description=entry.description or entry.notes or _describe(entry.type, entry.kwargs),
        severity=entry.severity,
        type=entry.type,
        kwargs=dict(entry.kwargs),
    )


def _describe(expectation_type: str, kwargs: Mapping[str, Any]) -> str:
    arguments = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{expectation_type}({arguments})"


def load_suite_file(path: Path) -> AssetSuite:
    raw = read_yaml(path, SuiteError, "suite") or {}
    suite = parse(raw, SuiteFile, path, SuiteError)
    asset = suite.name or path.stem
    if asset != path.stem:
        raise SuiteError(f"{path}: name {asset!r} must match the file name (the asset it gates)")
    expectations = [_expectation(path, i, e) for i, e in enumerate(suite.expectations)]
    seen: set[str] = set()
    for expectation in expectations:
        if expectation.name in seen:
            raise SuiteError(
                f"{path}: two expectations are named {expectation.name!r}; give one a meta: {{check_name: ...}}"
            )
        seen.add(expectation.name)
    return AssetSuite(
        asset=asset,
        path=path,
        expectations=expectations,
        volume=suite.volume or None,
        schema_drift=suite.schema_drift or None,
    )


@cache
def load_suites(directory: Path) -> dict[str, AssetSuite]:
    """Every suite in the folder, by asset name (read once per process)."""
    return {p.stem: load_suite_file(p) for p in sorted(directory.glob("*.yml"))}


def suite_for(asset: str, directory: Path) -> AssetSuite | None:
    return load_suites(directory).get(asset)


def columns_needed(expectations: Iterable[Expectation]) -> list[str] | None:
    """Only these columns are read into pandas; None means every column."""
    needed: set[str] = set()
    for expectation in expectations:
        if expectation.type.startswith("expect_table_column"):
            return None
        needed.update(str(expectation.kwargs[k]) for k in COLUMN_ARGUMENTS if k in expectation.kwargs)
        needed.update(str(c) for c in expectation.kwargs.get("column_list", []))
    return sorted(needed)


def present_columns(path: Path, columns: Iterable[str] | None) -> list[str] | None:
    """The wanted columns the file has: a missing column fails its expectation, not the read."""
    if columns is None:
        return None
    present = set(pq.read_schema(path).names)
    return [c for c in columns if c in present]


def read_frame(path: Path, columns: Iterable[str] | None) -> pd.DataFrame:
    """Dates stay ``datetime.date`` objects: as datetime64 (smaller) GX cannot compare them
    with the ``partition_date`` parameter, and the values listed in outcomes would change."""
    return pq.read_table(path, columns=present_columns(path, columns)).to_pandas()


@cache
def _validator_factory() -> Any:
    """One ephemeral GX context and pandas batch definition per process."""
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # GX fingerprints every pandas batch under 1 GB by hashing all of it (about half of a
    # 1M-row audit); the fingerprint only labels stored results, which an ephemeral
    # context never keeps.
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("staged_partitions")
    return source.add_dataframe_asset("staged").add_batch_definition_whole_dataframe("whole_partition")


def _plain(value: Any) -> Any:
    """JSON-safe metadata: timestamps and dates become ISO strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if value != value else value
    if hasattr(value, "isoformat"):
        try:
            return str(value.isoformat())
        except ValueError:  # NaT
            return None
    return str(value)


def _exception_message(info: Any) -> str | None:
    """GX reports an expectation it could not evaluate (e.g. a missing column) here."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return str(nested[0].get("exception_message")) if nested else None


@dataclass(frozen=True)
class ExpectationResult:
    """What an outcome needs of one GX result (or of per-chunk results merged, suite_chunks.py)."""

    success: bool
    details: dict[str, Any]  # GX's ``result``: element_count, unexpected_count, observed_value...
    evaluated_kwargs: dict[str, Any]  # the arguments with $PARAMETER values filled in
    error: str | None = None


def validate_frame(
    expectations: Iterable[Expectation], frame: pd.DataFrame, parameters: Mapping[str, Any] | None = None
) -> dict[str, ExpectationResult]:
    """GX's result of each expectation on these rows, by check name."""
    gx_suite = gx.ExpectationSuite(name="staged")
    for expectation in expectations:
        gx_suite.add_expectation_configuration(
            ExpectationConfiguration(
                type=expectation.type,
                kwargs=dict(expectation.kwargs),
                meta={"check_name": expectation.name},
            )
        )
    batch = _validator_factory().get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(
        gx_suite,
        expectation_parameters=dict(parameters or {}),
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED},
    )
    return {
        r.expectation_config.meta["check_name"]: ExpectationResult(
            success=bool(r.success),
            details=dict(r.result or {}),
            evaluated_kwargs={k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
            error=_exception_message(r.exception_info),
        )
        for r in validation.results
    }


def outcome(expectation: Expectation, result: ExpectationResult) -> CheckOutcome:
    details, error = result.details, result.error
    unexpected = details.get("unexpected_count")
    if error:
        summary = f"could not be evaluated: {error}"
    elif unexpected is not None:
        summary = f"{unexpected} unexpected of {details.get('element_count')} rows"
    else:
        summary = f"observed {_plain(details.get('observed_value'))}"
    return CheckOutcome(
        name=expectation.name,
        passed=result.success and not error,
        description=f"{expectation.description}: {summary}",
        severity=expectation.severity,
        metadata={
            "expectation": expectation.type,
            "kwargs": _plain(dict(expectation.kwargs)),
            "evaluated_kwargs": _plain(result.evaluated_kwargs),
            "success": result.success,
            "severity": expectation.severity.value,
            "unexpected_count": unexpected,
            "unexpected_percent": _plain(details.get("unexpected_percent")),
            "partial_unexpected_list": _plain(details.get("partial_unexpected_list", [])),
            "observed_value": _plain(details.get("observed_value")),
            "element_count": details.get("element_count"),
            **({"error": error} if error else {}),
        },
    )


def run_suite(
    suite: AssetSuite, frame: pd.DataFrame, parameters: Mapping[str, Any] | None = None
) -> list[CheckOutcome]:
    """Validate a partition's rows; one outcome per expectation, in the suite's order."""
    if not suite.expectations:
        return []
    results = validate_frame(suite.expectations, frame, parameters)
    return [outcome(e, results[e.name]) for e in suite.expectations]
