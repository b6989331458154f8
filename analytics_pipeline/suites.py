"""Expectation suites from ``checks/suites/<asset>.yml``, run with Great Expectations.

A suite file is a GX 1.x suite written as YAML (``expectations``: ``type``, ``kwargs``,
``meta``, ``severity``) plus two policies of ours that GX has no expectation for:
``volume`` (row count against recent partitions) and ``schema_drift`` (see gates.py).

Suites run on the staged partition before it is published. GX's SQL datasource fails on
DuckDB (see DESIGN.md), so the staged Parquet file is read into pandas, only the columns
the expectations name, and validated through an ephemeral GX context. GX severity maps to
ours: ``critical`` is ERROR (blocks publishing), ``warning`` and ``info`` are WARN.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
import pyarrow.parquet as pq
import yaml
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.execution_engine import pandas_execution_engine
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from analytics_pipeline.quality import CheckOutcome
from analytics_pipeline.settings import PROJECT_ROOT

SUITES_DIR = PROJECT_ROOT / "checks" / "suites"
SEVERITIES = {"critical": "ERROR", "warning": "WARN", "info": "WARN"}
PARTIAL_UNEXPECTED = 5
COLUMN_ARGUMENTS = ("column", "column_A", "column_B")
# default check names drop what the column already says: message_id__be_unique
SHORTENED_PREFIXES = ("column_values_to_", "column_pair_values_", "column_", "table_")
CHECK_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Expectation:
    check_name: str
    type: str
    kwargs: dict[str, Any]
    severity: str  # ERROR or WARN
    description: str
    gx_severity: str

    @property
    def blocking(self) -> bool:
        return self.severity == "ERROR"


@dataclass(frozen=True)
class VolumePolicy:
    """Row count against the median of the previous ``history`` published partitions."""

    history: int = 7
    lower_ratio: float = 0.5
    upper_ratio: float = 2.0
    min_median: float = 50  # below this, counts are too small to judge (a quiet day may be empty)
    zero_rows: str = "ERROR"
    out_of_band: str = "WARN"


@dataclass(frozen=True)
class SchemaDriftPolicy:
    """Column changes against the published table: breaking ones block by default."""

    removed_or_retyped: str = "ERROR"
    added: str = "WARN"


@dataclass(frozen=True)
class AssetSuite:
    asset: str
    path: Path
    expectations: list[Expectation] = field(default_factory=list)
    volume: VolumePolicy | None = VolumePolicy()
    schema_drift: SchemaDriftPolicy | None = SchemaDriftPolicy()


def _severity(path: Path, where: str, raw: Any, default: str) -> str:
    """Accept GX's names (critical/warning/info) and ours (ERROR/WARN)."""
    if raw is None:
        return default
    value = str(raw)
    if value in SEVERITIES:
        return SEVERITIES[value]
    if value in ("ERROR", "WARN"):
        return value
    raise SuiteError(
        f"{path}: {where}: severity must be critical, warning or info (or ERROR/WARN), got {raw!r}"
    )


def _default_check_name(expectation_type: str, kwargs: Mapping[str, Any]) -> str:
    columns = [str(kwargs[k]) for k in COLUMN_ARGUMENTS if k in kwargs]
    columns += [str(c) for c in kwargs.get("column_list", [])]
    name = expectation_type.removeprefix("expect_")
    for prefix in SHORTENED_PREFIXES:
        name = name.removeprefix(prefix)
    return "__".join([*columns, name]) if columns else name


def _expectation(path: Path, index: int, raw: Any) -> Expectation:
    where = f"expectations[{index}]"
    if not isinstance(raw, dict) or "type" not in raw:
        raise SuiteError(
            f"{path}: {where} needs a 'type' (a GX expectation name such as expect_column_values_to_be_unique)"
        )
    unknown = set(raw) - {"type", "kwargs", "meta", "severity", "notes", "description"}
    if unknown:
        raise SuiteError(f"{path}: {where}: unknown keys {sorted(unknown)}")
    kwargs = dict(raw.get("kwargs") or {})
    meta = dict(raw.get("meta") or {})
    try:  # GX validates the name and the arguments
        config = ExpectationConfiguration(type=str(raw["type"]), kwargs=kwargs, meta=meta)
        config.to_domain_obj()
    except Exception as exc:
        raise SuiteError(f"{path}: {where} ({raw['type']}): {exc}") from exc
    gx_severity = str(raw.get("severity", "critical"))
    name = str(meta.get("check_name") or _default_check_name(str(raw["type"]), kwargs))
    if not CHECK_NAME.match(name):
        raise SuiteError(f"{path}: {where}: check name {name!r} must be letters, digits and underscores")
    return Expectation(
        check_name=name,
        type=str(raw["type"]),
        kwargs=kwargs,
        severity=_severity(path, where, gx_severity, "ERROR"),
        description=str(raw.get("description") or raw.get("notes") or _describe(str(raw["type"]), kwargs)),
        gx_severity=gx_severity if gx_severity in SEVERITIES else "critical",
    )


def _describe(expectation_type: str, kwargs: Mapping[str, Any]) -> str:
    arguments = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{expectation_type}({arguments})"


def _policy(path: Path, key: str, raw: Any, cls: type[Any]) -> Any:
    if raw is False:
        return None
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: {key} must be a mapping or false")
    allowed = set(cls.__dataclass_fields__)
    unknown = set(raw) - allowed
    if unknown:
        raise SuiteError(f"{path}: {key}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    values = {}
    for name, value in raw.items():
        default = cls.__dataclass_fields__[name].default
        values[name] = _severity(path, f"{key}.{name}", value, default) if isinstance(default, str) else value
    policy = cls(**values)
    if isinstance(policy, VolumePolicy) and not (0 <= policy.lower_ratio <= 1 <= policy.upper_ratio):
        raise SuiteError(f"{path}: volume: need 0 <= lower_ratio <= 1 <= upper_ratio")
    return policy


def load_suite_file(path: Path) -> AssetSuite:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite is a mapping with 'name' and 'expectations'")
    unknown = set(raw) - {"name", "expectations", "volume", "schema_drift", "meta", "notes"}
    if unknown:
        raise SuiteError(f"{path}: unknown keys {sorted(unknown)}")
    asset = str(raw.get("name") or path.stem)
    if asset != path.stem:
        raise SuiteError(f"{path}: name {asset!r} must match the file name (the asset it gates)")
    expectations = [_expectation(path, i, e) for i, e in enumerate(raw.get("expectations") or [])]
    seen: set[str] = set()
    for expectation in expectations:
        if expectation.check_name in seen:
            raise SuiteError(
                f"{path}: two expectations are named {expectation.check_name!r}; "
                "give one a meta: {check_name: ...}"
            )
        seen.add(expectation.check_name)
    return AssetSuite(
        asset=asset,
        path=path,
        expectations=expectations,
        volume=_policy(path, "volume", raw.get("volume"), VolumePolicy),
        schema_drift=_policy(path, "schema_drift", raw.get("schema_drift"), SchemaDriftPolicy),
    )


@cache
def load_suites(directory: Path = SUITES_DIR) -> dict[str, AssetSuite]:
    """Every suite in the folder, by asset name (read once per process)."""
    return {p.stem: load_suite_file(p) for p in sorted(directory.glob("*.yml"))}


def suite_for(asset: str, directory: Path = SUITES_DIR) -> AssetSuite | None:
    return load_suites(directory).get(asset)


def columns_needed(suite: AssetSuite) -> list[str] | None:
    """Only these columns are read into pandas; None means every column."""
    needed: set[str] = set()
    for expectation in suite.expectations:
        if expectation.type.startswith("expect_table_column"):
            return None
        needed.update(str(expectation.kwargs[k]) for k in COLUMN_ARGUMENTS if k in expectation.kwargs)
        needed.update(str(c) for c in expectation.kwargs.get("column_list", []))
    return sorted(needed)


def read_frame(path: Path, columns: Iterable[str] | None) -> pd.DataFrame:
    wanted = None if columns is None else list(columns)
    present = set(pq.read_schema(path).names)
    if wanted is not None:
        wanted = [c for c in wanted if c in present]  # a missing column fails its expectation
    return pq.read_table(path, columns=wanted).to_pandas()


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


def run_suite(
    suite: AssetSuite, frame: pd.DataFrame, parameters: Mapping[str, Any] | None = None
) -> list[CheckOutcome]:
    """Validate a partition's rows; one outcome per expectation, in the suite's order."""
    if not suite.expectations:
        return []
    gx_suite = gx.ExpectationSuite(name=suite.asset)
    for expectation in suite.expectations:
        gx_suite.add_expectation_configuration(
            ExpectationConfiguration(
                type=expectation.type,
                kwargs=dict(expectation.kwargs),
                meta={"check_name": expectation.check_name},
            )
        )
    batch = _validator_factory().get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(
        gx_suite,
        expectation_parameters=dict(parameters or {}),
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED},
    )
    by_name = {r.expectation_config.meta["check_name"]: r for r in validation.results}
    outcomes = []
    for expectation in suite.expectations:
        result = by_name[expectation.check_name]
        details = result.result or {}
        error = _exception_message(result.exception_info)
        unexpected = details.get("unexpected_count")
        passed = bool(result.success) and not error
        if error:
            summary = f"could not be evaluated: {error}"
        elif unexpected is not None:
            summary = f"{unexpected} unexpected of {details.get('element_count')} rows"
        else:
            summary = f"observed {_plain(details.get('observed_value'))}"
        outcomes.append(
            CheckOutcome(
                name=expectation.check_name,
                passed=passed,
                description=f"{expectation.description}: {summary}",
                severity=expectation.severity,
                metadata={
                    "expectation": expectation.type,
                    "kwargs": _plain(dict(expectation.kwargs)),
                    "evaluated_kwargs": _plain(
                        {k: v for k, v in result.expectation_config.kwargs.items() if k != "batch_id"}
                    ),
                    "success": bool(result.success),
                    "severity": expectation.severity,
                    "unexpected_count": unexpected,
                    "unexpected_percent": _plain(details.get("unexpected_percent")),
                    "partial_unexpected_list": _plain(details.get("partial_unexpected_list", [])),
                    "observed_value": _plain(details.get("observed_value")),
                    "element_count": details.get("element_count"),
                    **({"error": error} if error else {}),
                },
            )
        )
    return outcomes
