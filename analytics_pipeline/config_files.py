"""YAML files of the project (suites, freshness, funnels, model headers) read into pydantic models.

Every file model forbids unknown keys, so a misspelt key is an error rather than a
silently ignored promise. Errors name the file, the entry and the key, e.g.
``checks/suites/sessions.yml: expectations[2].severity: Input should be 'error' or 'warn'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")


class StrictModel(BaseModel):
    """A block of a project file: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigFileError(ValueError):
    """A project file that cannot be used; the message names the file, the entry and the key."""


def location(loc: tuple[int | str, ...]) -> str:
    """``("expectations", 2, "severity")`` -> ``expectations[2].severity``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def describe(error: ValidationError) -> str:
    """One line per problem: where it is and what is wrong."""
    lines = []
    for problem in error.errors():
        where = location(tuple(p for p in problem["loc"] if not _is_union_tag(p)))
        if problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif problem["type"] == "missing":
            lines.append(f"{where}: required key missing")
        else:
            lines.append(f"{where}: {problem['msg']} (got {problem.get('input')!r})")
    return "; ".join(lines)


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union member it tried (e.g. "function-after[...]", "literal['x']")
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "bool", "list[int]"))


def parse(document: Any, schema: type[T], source: str | Path, error: type[ConfigFileError]) -> T:
    """Validate an already-parsed document against ``schema``; errors name ``source``."""
    try:
        return TypeAdapter(schema).validate_python(document)
    except ValidationError as exc:
        raise error(f"{source}: {describe(exc)}") from None


def read_yaml(path: Path, error: type[ConfigFileError], what: str) -> Any:
    """The parsed YAML document, or ``error`` naming the file."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: cannot read {what}: not valid YAML: {exc}") from exc


def load(path: Path, schema: type[T], error: type[ConfigFileError], what: str) -> T:
    """Read and validate one YAML file."""
    return parse(read_yaml(path, error, what), schema, path, error)
