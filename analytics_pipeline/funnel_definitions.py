"""Funnel definitions (``assets/funnels.yml``) as a table the funnels model reads.

``funnel_steps_table(path)`` validates the YAML and returns one row per funnel step:
funnel, step_index (1-based), step_type, step_event, step_path, conversion_window_days.
Every validation error is a ``FunnelDefinitionError`` whose message names the file.
The loader exposes the table to SQL as the view ``funnel_steps``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

DEFAULT_FUNNELS_FILE = Path(__file__).resolve().parent.parent / "assets" / "funnels.yml"
DEFAULT_CONVERSION_WINDOW_DAYS = 14
# funnels.sql reads person_events [0, 14]: a longer window would need a wider read window.
MAX_CONVERSION_WINDOW_DAYS = 14
STEP_TYPES = ("track", "page", "screen", "identify", "group", "alias")
FUNNEL_KEYS = {"name", "steps", "conversion_window_days", "description"}
STEP_KEYS = {"type", "event", "path"}

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


class FunnelDefinitionError(ValueError):
    """An invalid funnels file; the message names the file."""


def _text(path: Path, where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FunnelDefinitionError(f"{path}: {where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _step(path: Path, funnel: str, index: int, raw: Any) -> dict[str, Any]:
    where = f"funnel {funnel!r} step {index}"
    if not isinstance(raw, dict):
        raise FunnelDefinitionError(f"{path}: {where}: a step is a mapping with type/event/path, got {raw!r}")
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise FunnelDefinitionError(
            f"{path}: {where}: unknown keys {sorted(unknown)}; allowed: {sorted(STEP_KEYS)}"
        )
    if "type" not in raw:
        raise FunnelDefinitionError(f"{path}: {where}: 'type' is required ({', '.join(STEP_TYPES)})")
    step_type = raw["type"]
    if step_type not in STEP_TYPES:
        raise FunnelDefinitionError(
            f"{path}: {where}: type must be one of {', '.join(STEP_TYPES)}, got {step_type!r}"
        )
    event = raw.get("event")
    step_path = raw.get("path")
    if event is not None:
        _text(path, where, "event", event)
        if step_type != "track":
            raise FunnelDefinitionError(
                f"{path}: {where}: 'event' only applies to type track (events of type {step_type} have no event name)"
            )
    if step_path is not None:
        _text(path, where, "path", step_path)
        if step_type != "page":
            raise FunnelDefinitionError(f"{path}: {where}: 'path' only applies to type page")
    return {"step_type": step_type, "step_event": event, "step_path": step_path}


def load_funnels(path: Path | str = DEFAULT_FUNNELS_FILE) -> list[dict[str, Any]]:
    """The validated funnels: [{name, conversion_window_days, steps: [{step_type, step_event, step_path}]}]."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FunnelDefinitionError(f"{path}: cannot read funnels file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise FunnelDefinitionError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise FunnelDefinitionError(f"{path}: must be a non-empty list of funnels, got {type(raw).__name__}")
    funnels: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise FunnelDefinitionError(f"{path}: funnel #{position} must be a mapping, got {item!r}")
        unknown = set(item) - FUNNEL_KEYS
        if unknown:
            raise FunnelDefinitionError(
                f"{path}: funnel #{position}: unknown keys {sorted(unknown)}; allowed: {sorted(FUNNEL_KEYS)}"
            )
        name = _text(path, f"funnel #{position}", "name", item.get("name"))
        if name in seen:
            raise FunnelDefinitionError(f"{path}: funnel name {name!r} is defined twice")
        seen.add(name)
        window = item.get("conversion_window_days", DEFAULT_CONVERSION_WINDOW_DAYS)
        if (
            isinstance(window, bool)
            or not isinstance(window, int)
            or not 1 <= window <= MAX_CONVERSION_WINDOW_DAYS
        ):
            raise FunnelDefinitionError(
                f"{path}: funnel {name!r}: conversion_window_days must be an integer 1..{MAX_CONVERSION_WINDOW_DAYS} "
                f"(funnels.sql reads person_events [0, {MAX_CONVERSION_WINDOW_DAYS}]), got {window!r}"
            )
        steps = item.get("steps")
        if not isinstance(steps, list) or len(steps) < 2:
            raise FunnelDefinitionError(
                f"{path}: funnel {name!r}: 'steps' must be a list of at least 2 steps"
            )
        funnels.append(
            {
                "name": name,
                "conversion_window_days": window,
                "steps": [_step(path, name, i, s) for i, s in enumerate(steps, start=1)],
            }
        )
    return funnels


def funnel_steps_table(path: Path | str = DEFAULT_FUNNELS_FILE) -> pa.Table:
    """One row per funnel step, in file order (step_index is 1-based)."""
    rows = [
        {"funnel": f["name"], "step_index": i, **step, "conversion_window_days": f["conversion_window_days"]}
        for f in load_funnels(path)
        for i, step in enumerate(f["steps"], start=1)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


__all__ = ["FunnelDefinitionError", "funnel_steps_table", "load_funnels"]
