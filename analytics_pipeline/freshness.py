"""Freshness policies of the final models, declared in ``checks/freshness.yml``.

This module only reads and validates the file; ``defs/freshness.py`` turns it into the
per-partition deadline checks and their sensor, and the model assets take their
``FreshnessPolicy`` from :func:`freshness_policy_for`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from dagster import FreshnessPolicy

from analytics_pipeline.settings import PROJECT_ROOT

FRESHNESS_FILE = PROJECT_ROOT / "checks" / "freshness.yml"
FRESHNESS_TIMEZONE = "UTC"  # the daily partitions' timezone; deadlines are wall-clock times in it

_SETTINGS = ("warn_after_hours", "fail_after_hours", "partition_deadline")
_HH_MM = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


class FreshnessConfigError(ValueError):
    """``checks/freshness.yml`` is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class ModelFreshness:
    """One final model's promises: last update within the windows, and a partition deadline."""

    name: str
    warn_after: timedelta
    fail_after: timedelta
    partition_deadline: time | None  # UTC, on the day after the partition's date; None: unpartitioned

    @property
    def policy(self) -> FreshnessPolicy:
        return FreshnessPolicy.time_window(fail_window=self.fail_after, warn_window=self.warn_after)

    @property
    def deadline_cron(self) -> str | None:
        """Cron of the deadline: after each tick, the previous day's partition must exist."""
        if self.partition_deadline is None:
            return None
        return f"{self.partition_deadline.minute} {self.partition_deadline.hour} * * *"


def _hours(where: str, value: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value * 60 < 1:
        raise FreshnessConfigError(
            f"{where}: expected a number of hours, at least 1/60 (one minute), got {value!r}"
        )
    return timedelta(hours=value)


def _deadline(where: str, value: object) -> time | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FreshnessConfigError(
            f'{where}: expected a quoted "HH:MM" time (UTC) or null, got {value!r}'
            " (YAML reads an unquoted time such as 6:00 or 12:30 as a number of minutes)"
        )
    match = _HH_MM.match(value)
    if not match:
        raise FreshnessConfigError(f'{where}: expected a "HH:MM" time (UTC) such as "06:00", got {value!r}')
    return time(int(match.group(1)), int(match.group(2)))


def _mapping(where: str, value: object, allowed: Collection[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise FreshnessConfigError(f"{where}: expected a mapping, got {value!r}")
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise FreshnessConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return value


def parse_freshness(
    document: object, source: str, known_models: Collection[str] | None = None
) -> dict[str, ModelFreshness]:
    """Validate a parsed ``freshness.yml``; errors name ``source`` and the key at fault."""
    top = _mapping(source, document, ("defaults", "models"))
    defaults = _mapping(f"{source}: defaults", top.get("defaults"), _SETTINGS)
    missing = [key for key in _SETTINGS if key not in defaults]
    if missing:
        raise FreshnessConfigError(f"{source}: defaults: missing {missing}")
    models = _mapping(f"{source}: models", top.get("models"))
    if not models:
        raise FreshnessConfigError(f"{source}: models: list at least one final model")
    result: dict[str, ModelFreshness] = {}
    for name, overrides in models.items():
        where = f"{source}: models.{name}"
        if known_models is not None and name not in known_models:
            raise FreshnessConfigError(f"{where}: unknown model; known models: {sorted(known_models)}")
        settings = {**defaults, **_mapping(where, overrides or {}, _SETTINGS)}
        warn = _hours(f"{where}.warn_after_hours", settings["warn_after_hours"])
        fail = _hours(f"{where}.fail_after_hours", settings["fail_after_hours"])
        if warn >= fail:
            raise FreshnessConfigError(
                f"{where}: warn_after_hours ({settings['warn_after_hours']}) must be less than "
                f"fail_after_hours ({settings['fail_after_hours']})"
            )
        deadline = _deadline(f"{where}.partition_deadline", settings["partition_deadline"])
        result[str(name)] = ModelFreshness(str(name), warn, fail, deadline)
    return result


def load_freshness(
    path: Path = FRESHNESS_FILE, known_models: Collection[str] | None = None
) -> dict[str, ModelFreshness]:
    """Read and validate ``path``: final model name -> its freshness promises."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FreshnessConfigError(f"{path}: cannot read freshness policies: {error}") from error
    return parse_freshness(document, str(path), known_models)


@cache
def freshness_config() -> dict[str, ModelFreshness]:
    """The project's ``checks/freshness.yml``, read once per process."""
    return load_freshness()


def freshness_policy_for(model_name: str) -> FreshnessPolicy | None:
    """The model's time-window ``FreshnessPolicy``, or None when it is not a final model."""
    model = freshness_config().get(model_name)
    return model.policy if model else None
