"""Funnel definitions (``assets/funnels.yml``) as a table the funnels model reads.

``funnel_steps_table(path)`` validates the YAML (:class:`FunnelDefinition`) and returns
one row per funnel step: funnel, step_index (1-based), step_type, step_event, step_path,
conversion_window_days. Every validation error is a ``FunnelDefinitionError`` whose
message names the file, the funnel and the key. The build exposes the table to SQL as
the view ``funnel_steps``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from analytics_pipeline.config_files import ConfigFileError, StrictModel, parse, read_yaml

DEFAULT_CONVERSION_WINDOW_DAYS = 14
# funnels.sql reads person_events [0, 14]: a longer window would need a wider read window.
MAX_CONVERSION_WINDOW_DAYS = 14

SCHEMA = pa.schema(
    [
        pa.field("funnel", pa.string(), nullable=False),
        pa.field("step_index", pa.int64(), nullable=False),
        pa.field("step_type", pa.string(), nullable=False),
        pa.field("step_event", pa.string()),
        pa.field("step_path", pa.string()),
        pa.field("conversion_window_days", pa.int64(), nullable=False),
    ]
)


class FunnelDefinitionError(ConfigFileError):
    """An invalid funnels file; the message names the file."""


class FunnelStep(StrictModel):
    """An event filter: every key given must equal the event's value."""

    type: Literal["track", "page", "screen", "identify", "group", "alias"]
    event: str | None = Field(default=None, min_length=1)
    path: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _keys_fit_the_type(self) -> FunnelStep:
        if self.event is not None and self.type != "track":
            raise ValueError(
                f"'event' only applies to type track (events of type {self.type} have no event name)"
            )
        if self.path is not None and self.type != "page":
            raise ValueError("'path' only applies to type page")
        return self


class FunnelDefinition(StrictModel):
    name: str = Field(min_length=1)
    description: str | None = None
    conversion_window_days: int = DEFAULT_CONVERSION_WINDOW_DAYS
    steps: list[FunnelStep] = Field(min_length=2)

    @field_validator("conversion_window_days", mode="before")
    @classmethod
    def _within_the_read_window(cls, value: Any) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_CONVERSION_WINDOW_DAYS
        ):
            raise ValueError(
                f"must be an integer 1..{MAX_CONVERSION_WINDOW_DAYS} "
                f"(funnels.sql reads person_events [0, {MAX_CONVERSION_WINDOW_DAYS}])"
            )
        return value


def load_funnels(path: Path | str) -> list[FunnelDefinition]:
    """The validated funnels, in file order."""
    path = Path(path)
    raw: Any = read_yaml(path, FunnelDefinitionError, "funnels file")
    if not isinstance(raw, list) or not raw:
        raise FunnelDefinitionError(f"{path}: must be a non-empty list of funnels, got {type(raw).__name__}")
    funnels = parse(raw, list[FunnelDefinition], path, FunnelDefinitionError)
    seen: set[str] = set()
    for funnel in funnels:
        if funnel.name in seen:
            raise FunnelDefinitionError(f"{path}: funnel name {funnel.name!r} is defined twice")
        seen.add(funnel.name)
    return funnels


def funnel_steps_table(path: Path | str) -> pa.Table:
    """One row per funnel step, in file order (step_index is 1-based)."""
    rows = [
        {
            "funnel": funnel.name,
            "step_index": index,
            "step_type": step.type,
            "step_event": step.event,
            "step_path": step.path,
            "conversion_window_days": funnel.conversion_window_days,
        }
        for funnel in load_funnels(path)
        for index, step in enumerate(funnel.steps, start=1)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


__all__ = ["FunnelDefinition", "FunnelDefinitionError", "funnel_steps_table", "load_funnels"]
