"""Freshness promises of the final models, declared in ``checks/freshness.yml``.

This module reads and validates the file; ``defs/quality.py`` turns it into Dagster's
``FreshnessPolicy`` on each final model and the per-partition deadline checks.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse, read_yaml

FRESHNESS_TIMEZONE = "UTC"  # the daily partitions' timezone; deadlines are wall-clock times in it

_HH_MM = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


class FreshnessConfigError(ConfigFileError):
    """``checks/freshness.yml`` is invalid; the message names the file and the key."""


def _hours(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value * 60 < 1:
        raise ValueError(f"expected a number of hours, at least 1/60 (one minute), got {value!r}")
    return float(value)


def _deadline(value: Any) -> time | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(
            f'expected a quoted "HH:MM" time (UTC) or null, got {value!r}'
            " (YAML reads an unquoted time such as 6:00 or 12:30 as a number of minutes)"
        )
    match = _HH_MM.match(value)
    if not match:
        raise ValueError(f'expected a "HH:MM" time (UTC) such as "06:00", got {value!r}')
    return time(int(match.group(1)), int(match.group(2)))


Hours = Annotated[float, BeforeValidator(_hours)]
Deadline = Annotated[time | None, BeforeValidator(_deadline)]


class FreshnessDefaults(StrictModel):
    warn_after_hours: Hours
    fail_after_hours: Hours
    partition_deadline: Deadline


class FreshnessOverrides(StrictModel):
    """A model's own values; a key left out takes the default (``partition_deadline: null`` is a value)."""

    warn_after_hours: Hours | None = None
    fail_after_hours: Hours | None = None
    partition_deadline: Deadline = None


class FreshnessFile(StrictModel):
    defaults: FreshnessDefaults
    models: dict[str, FreshnessOverrides | None] = Field(min_length=1)


@dataclass(frozen=True)
class ModelFreshness:
    """One final model's promises: last update within the windows, and a partition deadline."""

    name: str
    warn_after: timedelta
    fail_after: timedelta
    partition_deadline: time | None  # UTC, on the day after the partition's date; None: unpartitioned

    @property
    def deadline_cron(self) -> str | None:
        """Cron of the deadline: after each tick, the previous day's partition must exist."""
        if self.partition_deadline is None:
            return None
        return f"{self.partition_deadline.minute} {self.partition_deadline.hour} * * *"


def parse_freshness(
    document: object, source: str, known_models: Collection[str] | None = None
) -> dict[str, ModelFreshness]:
    """Validate a parsed ``freshness.yml``; errors name ``source`` and the key at fault."""
    config = parse(document, FreshnessFile, source, FreshnessConfigError)
    result: dict[str, ModelFreshness] = {}
    for name, overrides in config.models.items():
        where = f"{source}: models.{name}"
        if known_models is not None and name not in known_models:
            raise FreshnessConfigError(f"{where}: unknown model; known models: {sorted(known_models)}")
        values = config.defaults.model_dump()
        if overrides is not None:
            values.update(overrides.model_dump(include=overrides.model_fields_set))
        if values["warn_after_hours"] >= values["fail_after_hours"]:
            raise FreshnessConfigError(
                f"{where}: warn_after_hours ({values['warn_after_hours']:g}) must be less than "
                f"fail_after_hours ({values['fail_after_hours']:g})"
            )
        result[name] = ModelFreshness(
            name,
            timedelta(hours=values["warn_after_hours"]),
            timedelta(hours=values["fail_after_hours"]),
            values["partition_deadline"],
        )
    return result


def load_freshness(path: Path, known_models: Collection[str] | None = None) -> dict[str, ModelFreshness]:
    """Read and validate ``path``: final model name -> its freshness promises."""
    return parse_freshness(
        read_yaml(path, FreshnessConfigError, "freshness policies"), str(path), known_models
    )
