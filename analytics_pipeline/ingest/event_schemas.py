"""Event schemas (JSON Schema 2020-12 subset) compiled to vectorized DuckDB SQL.

Why: validating tens of millions of tracked events row by row in Python is far
too slow, so the schema files in ``assets/events/`` are translated once into a
plain SQL scalar expression (CASE, json_type / json_extract_string with JSON
pointers, list lambdas; no UDFs) that DuckDB evaluates in its vectorized
engine.  Adding a ``<slug>.schema.json`` file is all it takes to validate a new
event: no code change.

Messages produced by :func:`compile_violation_sql` report the FIRST violated
rule only.  Rules are checked in the schema's keyword order as written in the
file (``required`` is moved before ``properties``), recursing into
``properties`` and ``items`` in order.  Formats::

    <path>: required
    <path>: type <t> (got <json type>)     <t>: integer | [string, null] ...
    <path>: enum [USD, EUR, GBP] (got <value>)
    <path>: const <c> (got <value>)
    <path>: minimum|maximum|exclusiveMinimum|exclusiveMaximum <n> (got <value>)
    <path>: minLength|maxLength <n> (got <value>)
    <path>: pattern <regex> (got <value>)
    <path>: minItems|maxItems <n> (got <value>)
    <path>: additionalProperties false (got <first unexpected key, JSON-quoted>)

* ``<path>`` is ``$`` for the document itself, then ``.name`` for plain
  identifiers, ``."any other name"`` (JSON-escaped) otherwise and ``[i]``
  (0-based) for array elements: ``$.revenue``, ``$."my key"``, ``$.items[2].sku``.
* ``<json type>`` is string, number, integer, boolean, object, array or null;
  numbers DuckDB reads as DOUBLE (a fraction, an exponent or beyond 64 bits)
  report ``number``.
* ``<value>`` is the offending value as minified JSON (strings quoted and
  escaped), truncated to 100 characters.
* Schema values in the rule (enum members, const) are printed raw if they are
  strings and as JSON otherwise; bounds as JSON numbers.

Semantics notes: a NULL properties/traits column counts as ``{}``; ``pattern``
is an unanchored RE2 search (ECMA-262 compatible for the usual syntax: ``$``
matches only at the very end); lengths count code points; numeric bounds are
compared as DOUBLE.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

__all__ = [
    "EventSchema",
    "SchemaError",
    "MESSAGE_TYPES",
    "SCHEMA_FILE_SUFFIX",
    "load_event_schemas",
    "compile_violation_sql",
    "compile_version_sql",
]

SCHEMA_FILE_SUFFIX = ".schema.json"
MESSAGE_TYPES: tuple[str, ...] = ("track", "page", "identify")
#: Keywords that only annotate; they are accepted anywhere and never validated.
ANNOTATION_KEYWORDS: frozenset[str] = frozenset(
    {"$schema", "$id", "self", "title", "description", "examples", "default", "$comment", "format"}
)
#: Keywords the SQL compiler understands; anything else is a SchemaError.
SUPPORTED_KEYWORDS: frozenset[str] = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "items",
        "minItems",
        "maxItems",
    }
)
JSON_TYPES: tuple[str, ...] = ("string", "number", "integer", "boolean", "object", "array", "null")
VALUE_TRUNCATE = 100

_SCHEMAVER = re.compile(r"[0-9]+-[0-9]+-[0-9]+")
_SELF_KEYS = frozenset({"type", "event", "version"})
_NUMBER_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")
_NUMERIC_SQL_TYPES = "('BIGINT', 'UBIGINT', 'HUGEINT', 'UHUGEINT', 'DOUBLE')"
_INTEGER_SQL_TYPES = "('BIGINT', 'UBIGINT', 'HUGEINT', 'UHUGEINT')"
_SIMPLE_TYPE_SQL = {
    "string": "VARCHAR",
    "boolean": "BOOLEAN",
    "null": "NULL",
    "object": "OBJECT",
    "array": "ARRAY",
}
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SchemaError(ValueError):
    """A schema file is malformed or uses a keyword the SQL compiler cannot honour.

    Raised at load time so a bad schema fails the deploy, not the nightly run.
    """


@dataclass(frozen=True)
class EventSchema:
    """One event schema file: which messages it applies to and what it requires."""

    type: str
    event: str | None
    version: str
    path: Path
    schema: dict[str, Any] = field(hash=False, compare=False, repr=False)

    @property
    def key(self) -> str:
        """Registry key: ``track:<event>`` for track events, else the message type."""
        return f"track:{self.event}" if self.type == "track" else self.type


# --------------------------------------------------------------------------- loading


def load_event_schemas(directory: Path) -> list[EventSchema]:
    """Load and check every ``*.schema.json`` in ``directory``, sorted by key.

    Everything the compiler would choke on is rejected here, naming the file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"event schema directory not found: {directory}")
    schemas: list[EventSchema] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob(f"*{SCHEMA_FILE_SUFFIX}")):
        schema = _load_one(path)
        if schema.key in seen:
            raise SchemaError(
                f"{path}: duplicate schema key {schema.key!r} (already defined in {seen[schema.key]})"
            )
        seen[schema.key] = path
        schemas.append(schema)
    return sorted(schemas, key=lambda s: s.key)


def _load_one(path: Path) -> EventSchema:
    """Parse one schema file and validate its self block and keywords."""
    try:
        doc = json.loads(
            path.read_text(encoding="utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SchemaError(f"{path}: a schema must be a JSON object")
    self_block = doc.get("self")
    if not isinstance(self_block, dict):
        raise SchemaError(f"{path}: missing 'self' object")
    unknown = sorted(set(self_block) - _SELF_KEYS)
    if unknown:
        raise SchemaError(f"{path}: unsupported keyword {unknown[0]!r} in 'self'")
    msg_type = self_block.get("type")
    if msg_type not in MESSAGE_TYPES:
        raise SchemaError(f"{path}: 'self.type' must be one of {list(MESSAGE_TYPES)}, got {msg_type!r}")
    event = self_block.get("event")
    if msg_type == "track":
        if not isinstance(event, str) or not event:
            raise SchemaError(f"{path}: 'self.event' must be a non-empty string for track schemas")
        _check_name(event, path, "self.event")
    elif "event" in self_block:
        raise SchemaError(f"{path}: 'self.event' is only allowed for track schemas")
    version = self_block.get("version")
    if not isinstance(version, str) or not _SCHEMAVER.fullmatch(version):
        raise SchemaError(
            f"{path}: 'self.version' must be SchemaVer MODEL-REVISION-ADDITION, got {version!r}"
        )
    _check_node(doc, path, "#")
    return EventSchema(type=msg_type, event=event, version=version, path=path, schema=doc)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Reject duplicate object keys: with them, keyword order would be ambiguous."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    """NaN/Infinity are not JSON; Python would otherwise accept them silently."""
    raise ValueError(f"non-standard JSON constant {name}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_node(node: object, path: Path, where: str) -> None:
    """Validate one (sub)schema recursively; `where` is its schema location."""
    if not isinstance(node, dict):
        raise SchemaError(f"{path}: schema at {where} must be an object")
    for kw, value in node.items():
        if kw in ANNOTATION_KEYWORDS:
            continue
        if kw not in SUPPORTED_KEYWORDS:
            raise SchemaError(f"{path}: unsupported keyword {kw!r} at {where}")
        bad = f"{path}: invalid keyword {kw!r} at {where}"
        if kw == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(n not in JSON_TYPES for n in names) or len(set(names)) != len(names):
                raise SchemaError(f"{bad}: expected one or a list of {list(JSON_TYPES)}")
        elif kw == "properties":
            if not isinstance(value, dict):
                raise SchemaError(f"{bad}: expected an object")
            for name, sub in value.items():
                _check_name(name, path, where)
                _check_node(sub, path, f"{where}/properties/{_pointer_token(name)}")
        elif kw == "required":
            if not isinstance(value, list) or any(not isinstance(n, str) for n in value):
                raise SchemaError(f"{bad}: expected a list of strings")
            if len(set(value)) != len(value):
                raise SchemaError(f"{bad}: duplicate names")
            for name in value:
                _check_name(name, path, where)
        elif kw == "additionalProperties":
            if not isinstance(value, bool):
                raise SchemaError(f"{bad}: only true or false is supported")
        elif kw in ("enum", "const"):
            members = value if kw == "enum" else [value]
            if kw == "enum" and (not isinstance(value, list) or not value):
                raise SchemaError(f"{bad}: expected a non-empty list")
            for member in members:
                if isinstance(member, (dict, list)):
                    raise SchemaError(f"{bad}: object/array values are unsupported")
                if isinstance(member, str):
                    _check_name(member, path, where)
        elif kw in _NUMBER_KEYWORDS:
            if not _is_number(value) or not math.isfinite(value):
                raise SchemaError(f"{bad}: expected a finite number")
        elif kw in _COUNT_KEYWORDS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SchemaError(f"{bad}: expected a non-negative integer")
        elif kw == "pattern":
            if not isinstance(value, str):
                raise SchemaError(f"{bad}: expected a string")
            _check_name(value, path, where)
            _check_regex(value, path, where)
        elif kw == "items":
            _check_node(value, path, f"{where}/items")


def _check_name(text: str, path: Path, where: str) -> None:
    """NUL or a lone surrogate cannot be written into SQL text, so refuse them early."""
    if "\x00" in text:
        raise SchemaError(f"{path}: NUL character in a string at {where}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SchemaError(f"{path}: invalid unicode in a string at {where}") from exc


def _check_regex(pattern: str, path: Path, where: str) -> None:
    """Compile the pattern with DuckDB's own (RE2) engine so SQL never fails later."""
    problem = _regex_problem(pattern)
    if problem is not None:
        raise SchemaError(f"{path}: invalid keyword 'pattern' at {where}: {problem}")


@lru_cache(maxsize=1024)
def _regex_problem(pattern: str) -> str | None:
    """RE2's complaint about `pattern`, or None; cached since a connection costs ~30 ms."""
    con = duckdb.connect()
    try:
        con.execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
    except duckdb.Error as exc:
        return str(exc)
    finally:
        con.close()
    return None


# --------------------------------------------------------------------------- SQL helpers


def _lit(text: str) -> str:
    """SQL string literal (standard quoting: only single quotes need doubling)."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    """Quote a column reference; dots separate qualifiers (``e.type``)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _pointer_token(name: str) -> str:
    """RFC 6901 escaping: unambiguous for any key (dots, spaces, quotes...)."""
    return name.replace("~", "~0").replace("/", "~1")


def _render_value(value: object) -> str:
    """How schema values appear inside messages: strings raw, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _num_lit(value: float) -> str:
    return f"{float(value)!r}::DOUBLE"


@dataclass(frozen=True)
class _Raw:
    """A SQL expression that is part of a message (as opposed to literal text)."""

    sql: str


_Part = str | _Raw


def _concat(parts: Iterable[_Part]) -> str:
    """Concatenate literal text and SQL pieces, merging adjacent literals."""
    merged: list[_Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + part
        elif part != "":
            merged.append(part)
    sql = [_lit(p) if isinstance(p, str) else p.sql for p in merged]
    return " || ".join(sql) if sql else "''"


def _display_child(disp: tuple[_Part, ...], name: str) -> tuple[_Part, ...]:
    """Display path for a property: ``.name`` or ``."odd name"`` (JSON-escaped)."""
    if _PLAIN_NAME.fullmatch(name):
        return (*disp, f".{name}")
    return (*disp, "." + json.dumps(name, ensure_ascii=False))


@dataclass(frozen=True)
class _When:
    """A rule that fires when `cond` is true; `report` is its report list (see _Rules)."""

    cond: str
    report: str


@dataclass(frozen=True)
class _Expr:
    """A nested expression already yielding a report list or NULL."""

    expr: str


_Check = _When | _Expr


def _assemble(checks: Sequence[_Check]) -> str | None:
    """First non-NULL report: runs of rules become one searched CASE (lazy, ordered)."""
    parts: list[str] = []
    run: list[_When] = []

    def flush() -> None:
        if run:
            whens = " ".join(f"WHEN {c.cond} THEN {c.report}" for c in run)
            parts.append(f"CASE {whens} END")
            run.clear()

    for check in checks:
        if isinstance(check, _When):
            run.append(check)
        else:
            flush()
            parts.append(check.expr)
    flush()
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else f"COALESCE({', '.join(parts)})"


# What follows a rule's text in its message: nothing, "<json type>)" or "<value>)".
_KIND_NONE, _KIND_TYPE, _KIND_VALUE = "n", "t", "v"
_JSON_TYPE_NAMES = "['VARCHAR', 'DOUBLE', 'BOOLEAN', 'OBJECT', 'ARRAY', 'NULL']"
_SCHEMA_TYPE_NAMES = "['string', 'number', 'boolean', 'object', 'array', 'null']"


@dataclass(frozen=True)
class _Rule:
    path: str | None  # static display path; None when it contains an array index
    text: str  # e.g. ": minimum 0 (got "
    kind: str


class _Rules:
    """Message templates of all compiled rules.

    Why: DuckDB re-initialises a lambda body's expression state for every vector
    it runs on, and a per-event CASE hands it small, scattered vectors, so
    the per-schema lambda bodies must stay small.  A firing rule therefore
    only reports ``[id, json_type, value, dynamic_path]`` and one formatter,
    run once over all rows, expands it into ``"<path>: <rule> (got ...)"``.
    """

    def __init__(self) -> None:
        self.rules: list[_Rule] = []

    def report(
        self, disp: tuple[_Part, ...], text: str, kind: str, t: str | None = None, s: str | None = None
    ) -> str:
        """Register a rule; return the SQL list a violating row yields for it."""
        static = all(isinstance(part, str) for part in disp)
        path = "".join(part for part in disp if isinstance(part, str)) if static else None
        self.rules.append(_Rule(path, text, kind))
        items = [_lit(str(len(self.rules)))]
        if kind != _KIND_NONE or not static:
            items.append(t or "NULL")
        if kind == _KIND_VALUE or not static:
            items.append(s or "NULL")
        if not static:
            items.append(_concat(disp))
        return f"[{', '.join(items)}]"

    def format(self, report: str) -> str:
        """Expand the report list computed by `report` into the message (NULL stays NULL)."""
        if not self.rules:
            return "CAST(NULL AS VARCHAR)"
        paths = ", ".join("NULL" if r.path is None else _lit(r.path) for r in self.rules)
        texts = ", ".join(_lit(r.text) for r in self.rules)
        kinds = _lit("".join(r.kind for r in self.rules))
        rid = "CAST(_v[1] AS INTEGER)"
        got_type = f"COALESCE({_SCHEMA_TYPE_NAMES}[list_position({_JSON_TYPE_NAMES}, _v[2])], 'integer')"
        got_value = (
            f"left(CASE WHEN _v[2] = 'VARCHAR' THEN CAST(to_json(_v[3]) AS VARCHAR) "
            f"ELSE COALESCE(_v[3], 'null') END, {VALUE_TRUNCATE})"
        )
        body = (
            f"COALESCE(_v[4], CAST([{paths}] AS VARCHAR[])[{rid}]) || CAST([{texts}] AS VARCHAR[])[{rid}] || "
            f"CASE substr({kinds}, {rid}, 1) WHEN '{_KIND_TYPE}' THEN {got_type} || ')' "
            f"WHEN '{_KIND_VALUE}' THEN {got_value} || ')' ELSE '' END"
        )
        return f"list_transform([{report}], lambda _v: {body})[1]"


class _Root:
    """One JSON document: the row's properties/traits, or an array element.

    Every JSON pointer a schema needs is read with ONE multi-path call each of
    ``json_type`` and ``json_extract_string``, so a document is parsed twice per
    row, not once per rule.  Rules refer to list slots through NUL-delimited
    placeholder tokens (NUL is banned from schema strings) that a _Binding
    resolves once all pointers are known.
    """

    _ids = itertools.count(1)

    def __init__(self, doc: str, depth: int) -> None:
        self.doc = doc
        self.depth = depth
        self._id = next(_Root._ids)
        self._lists: dict[str, dict[str, int]] = {"t": {}, "s": {}}

    def _slot(self, kind: str, ptr: str) -> str:
        slots = self._lists[kind]
        idx = slots.setdefault(ptr, len(slots) + 1)
        return f"\x00{self._id}{kind}{idx}\x00"

    def t(self, ptr: str) -> str:
        """json_type at `ptr`: NULL when missing, 'NULL' for JSON null."""
        return self._slot("t", ptr)

    def s(self, ptr: str) -> str:
        """json_extract_string at `ptr`: the text for strings, JSON text otherwise."""
        return self._slot("s", ptr)

    def num(self, ptr: str) -> str:
        return f"TRY_CAST({self.s(ptr)} AS DOUBLE)"

    def attach(self, binding: _Binding, body: str) -> str:
        """Add this document's lists to `binding`; point the tokens in `body` at them."""
        offsets: dict[str, int] = {}
        for kind, function in (("t", "json_type"), ("s", "json_extract_string")):
            slots = self._lists[kind]
            if slots:
                paths = ", ".join(_lit(p) for p in slots)
                offsets[kind] = binding.add(f"{function}({self.doc}, [{paths}])", len(slots))

        def resolve(match: re.Match[str]) -> str:
            return f"{binding.var}[{offsets[match.group(1)] + int(match.group(2))}]"

        return re.sub(f"\x00{self._id}([ts])([0-9]+)\x00", resolve, body)


class _Binding:
    """Evaluate several VARCHAR lists once per row and bind their concatenation.

    ``list_transform([x], lambda v: ...)[1]`` is SQL's "let".  A single flat
    list and a lambda that captures no column or outer variable keep DuckDB's
    per-vector lambda overhead low (nested lambdas, captures and structs of
    lists each cost 2-3x).
    """

    def __init__(self, var: str) -> None:
        self.var = var
        self._segments: list[str] = []
        self._size = 0

    def add(self, list_sql: str, length: int) -> int:
        """Append a list of known `length`; return the offset of its first slot minus one."""
        offset = self._size
        self._segments.append(list_sql)
        self._size += length
        return offset

    def wrap(self, body: str) -> str:
        if not self._segments:
            return body
        values = (
            self._segments[0] if len(self._segments) == 1 else f"list_concat({', '.join(self._segments)})"
        )
        return f"list_transform([{values}], lambda {self.var}: {body})[1]"


def _ordered_keywords(node: Mapping[str, Any]) -> list[str]:
    """File order, except 'required' is always checked before 'properties'."""
    keys = [k for k in node if k in SUPPORTED_KEYWORDS]
    if "required" in keys and "properties" in keys:
        keys.remove("required")
        keys.insert(keys.index("properties"), "required")
    return keys


def _compile_node(
    node: Mapping[str, Any], root: _Root, ptr: str, disp: tuple[_Part, ...], rules: _Rules
) -> list[_Check]:
    """Rules for the value at `ptr` of `root`, in evaluation order.

    Conditions rely on NULL logic: a missing value has json_type NULL, which
    makes every condition NULL, i.e. not firing.
    """
    t = root.t(ptr)
    checks: list[_Check] = []
    object_checks: list[_Check] = []  # consecutive object keywords share one guard

    def add(check: _Check) -> None:
        flush_object_checks()
        checks.append(check)

    def flush_object_checks() -> None:
        inner = _assemble(object_checks)
        if inner is not None:
            checks.append(_Expr(f"CASE WHEN {t} = 'OBJECT' THEN {inner} END"))
        object_checks.clear()

    def value_report(text: str) -> str:
        return rules.report(disp, text, _KIND_VALUE, t, root.s(ptr))

    for kw in _ordered_keywords(node):
        value = node[kw]
        if kw == "type":
            names: list[str] = value if isinstance(value, list) else [value]
            report = rules.report(disp, f": type {_render_types(names)} (got ", _KIND_TYPE, t)
            add(_When(f"NOT ({_type_accepts(names, root, ptr)})", report))
        elif kw in ("enum", "const"):
            members: list[Any] = value if kw == "enum" else [value]
            rule = (
                f"enum [{', '.join(_render_value(m) for m in members)}]"
                if kw == "enum"
                else f"const {_render_value(value)}"
            )
            add(_When(f"NOT ({_enum_match(members, root, ptr)})", value_report(f": {rule} (got ")))
        elif kw in _NUMBER_KEYWORDS:
            op = {"minimum": "<", "maximum": ">", "exclusiveMinimum": "<=", "exclusiveMaximum": ">="}[kw]
            add(
                _When(
                    f"{t} IN {_NUMERIC_SQL_TYPES} AND {root.num(ptr)} {op} {_num_lit(value)}",
                    value_report(f": {kw} {json.dumps(value)} (got "),
                )
            )
        elif kw in ("minLength", "maxLength"):
            op = "<" if kw == "minLength" else ">"
            add(
                _When(
                    f"{t} = 'VARCHAR' AND length({root.s(ptr)}) {op} {value}",
                    value_report(f": {kw} {value} (got "),
                )
            )
        elif kw == "pattern":
            add(
                _When(
                    f"{t} = 'VARCHAR' AND NOT regexp_matches({root.s(ptr)}, {_lit(value)})",
                    value_report(f": pattern {value} (got "),
                )
            )
        elif kw in ("minItems", "maxItems"):
            op = "<" if kw == "minItems" else ">"
            add(
                _When(
                    f"{t} = 'ARRAY' AND json_array_length({root.s(ptr)}) {op} {value}",
                    value_report(f": {kw} {value} (got "),
                )
            )
        elif kw == "required":
            for name in value:
                child_t = root.t(f"{ptr}/{_pointer_token(name)}")
                report = rules.report(_display_child(disp, name), ": required", _KIND_NONE)
                object_checks.append(_When(f"{child_t} IS NULL", report))
        elif kw == "properties":
            for name, sub in value.items():
                child_ptr = f"{ptr}/{_pointer_token(name)}"
                object_checks.extend(_compile_node(sub, root, child_ptr, _display_child(disp, name), rules))
        elif kw == "additionalProperties":
            if value is False:
                object_checks.append(_additional_properties(node, root, ptr, disp, rules))
        elif kw == "items":
            item = _compile_items(value, root, ptr, disp, rules)
            if item is not None:
                add(_Expr(f"CASE WHEN {t} = 'ARRAY' THEN {item} END"))
    flush_object_checks()
    return checks


def _type_accepts(names: Sequence[str], root: _Root, ptr: str) -> str:
    """SQL predicate: the value at `ptr` has one of the JSON types (NULL if missing)."""
    t = root.t(ptr)
    simple = [_SIMPLE_TYPE_SQL[n] for n in names if n in _SIMPLE_TYPE_SQL]
    terms: list[str] = []
    if "number" in names:
        terms.append(f"{t} IN {_NUMERIC_SQL_TYPES}")
    elif "integer" in names:
        # JSON Schema counts 1.0 as an integer; DuckDB types it DOUBLE.
        x = root.num(ptr)
        whole = f"COALESCE(isfinite({x}) AND {x} = floor({x}), FALSE)"
        terms.append(f"{t} IN {_INTEGER_SQL_TYPES} OR ({t} = 'DOUBLE' AND {whole})")
    if len(simple) == 1:
        terms.append(f"{t} = {_lit(simple[0])}")
    elif simple:
        terms.append(f"{t} IN ({', '.join(_lit(s) for s in simple)})")
    return " OR ".join(terms)


def _render_types(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"[{', '.join(names)}]"


def _enum_match(members: Sequence[Any], root: _Root, ptr: str) -> str:
    """SQL predicate: the value equals a scalar member (1 == 1.0, true != 1); NULL if missing."""
    t = root.t(ptr)
    terms: list[str] = []
    strings = [m for m in members if isinstance(m, str)]
    numbers = [m for m in members if _is_number(m)]
    booleans = [m for m in members if isinstance(m, bool)]
    if strings:
        terms.append(f"({t} = 'VARCHAR' AND {root.s(ptr)} IN ({', '.join(_lit(s) for s in strings)}))")
    if numbers:
        values = ", ".join(_num_lit(n) for n in numbers)
        terms.append(f"({t} IN {_NUMERIC_SQL_TYPES} AND {root.num(ptr)} IN ({values}))")
    if booleans:
        terms.append(
            f"({t} = 'BOOLEAN' AND {root.s(ptr)} IN ({', '.join(_lit(json.dumps(b)) for b in booleans)}))"
        )
    if any(m is None for m in members):
        terms.append(f"{t} = 'NULL'")
    return " OR ".join(terms)


def _additional_properties(
    node: Mapping[str, Any], root: _Root, ptr: str, disp: tuple[_Part, ...], rules: _Rules
) -> _When:
    """additionalProperties: false -> report the first key not in 'properties'."""
    allowed = list(node.get("properties", {}))
    allowed_sql = f"[{', '.join(_lit(a) for a in allowed)}]" if allowed else "CAST([] AS VARCHAR[])"
    keys = f"json_keys({root.s(ptr)})"
    k = f"_a{root.depth}"
    first_extra = f"list_filter({keys}, lambda {k}: NOT list_contains({allowed_sql}, {k}))[1]"
    report = rules.report(disp, ": additionalProperties false (got ", _KIND_VALUE, "'VARCHAR'", first_extra)
    return _When(f"NOT list_has_all({allowed_sql}, {keys})", report)


def _compile_items(
    node: Mapping[str, Any], root: _Root, ptr: str, disp: tuple[_Part, ...], rules: _Rules
) -> str | None:
    """Validate every array element with list_transform; the first failing element wins."""
    depth = root.depth + 1
    x, i, m = f"_x{depth}", f"_i{depth}", f"_m{depth}"
    element = _Root(x, depth)
    element_disp: tuple[_Part, ...] = (*disp, "[", _Raw(f"({i} - 1)"), "]")
    body = _assemble(_compile_node(node, element, "", element_disp, rules))
    if body is None:
        return None
    binding = _Binding(f"_r{depth}")
    bound = binding.wrap(element.attach(binding, body))
    elements = f"json_extract({root.s(ptr)}, '$[*]')"
    return (
        f"list_filter(list_transform({elements}, lambda {x}, {i}: {bound}), lambda {m}: {m} IS NOT NULL)[1]"
    )


def _compile_document(schema: EventSchema, root: _Root, rules: _Rules) -> str:
    """Report-list expression for one schema applied to the row document `root`."""
    body = _assemble(_compile_node(schema.schema, root, "", ("$",), rules))
    return "CAST(NULL AS VARCHAR[])" if body is None else body


def _dispatch(
    schemas: Sequence[EventSchema],
    type_sql: str,
    event_sql: str,
    branch: Callable[[EventSchema], str],
    null: str,
) -> str:
    """CASE on message type (and track event name) selecting each schema's expression."""
    seen: set[str] = set()
    by_type: dict[str, list[EventSchema]] = {}
    for schema in sorted(schemas, key=lambda s: s.key):
        if schema.key in seen:
            raise SchemaError(f"{schema.path}: duplicate schema key {schema.key!r}")
        seen.add(schema.key)
        by_type.setdefault(schema.type, []).append(schema)
    if not by_type:
        return null
    outer: list[str] = []
    for msg_type, group in by_type.items():
        if msg_type == "track":
            inner = " ".join(f"WHEN {_lit(s.event or '')} THEN {branch(s)}" for s in group)
            expr = f"CASE {event_sql} {inner} END"
        else:
            expr = branch(group[0])
        outer.append(f"WHEN {_lit(msg_type)} THEN {expr}")
    return f"CASE {type_sql} {' '.join(outer)} END"


# --------------------------------------------------------------------------- public API


def compile_violation_sql(
    schemas: list[EventSchema],
    type_col: str = "type",
    event_col: str = "event",
    properties_col: str = "properties",
    traits_col: str = "traits",
) -> str:
    """One SQL scalar expression: NULL if the row conforms or is unregistered, else
    ``"<path>: <rule>"`` for the first violated rule (see module docstring).

    track/page rows validate ``properties_col``, identify rows ``traits_col``; a
    NULL document counts as ``{}``.  Column names are quoted as identifiers
    (a dot separates a table qualifier).
    """
    for schema in schemas:
        _check_name(schema.event or "", schema.path, "self.event")
        _check_node(schema.schema, schema.path, "#")
    rules = _Rules()
    properties_doc = f"COALESCE({_ident(properties_col)}, '{{}}')"
    traits_doc = f"COALESCE({_ident(traits_col)}, '{{}}')"

    def branch(schema: EventSchema) -> str:
        root = _Root(traits_doc if schema.type == "identify" else properties_doc, 0)
        body = _compile_document(schema, root, rules)
        binding = _Binding("_r0")
        return binding.wrap(root.attach(binding, body))

    reports = _dispatch(schemas, _ident(type_col), _ident(event_col), branch, "CAST(NULL AS VARCHAR[])")
    return rules.format(reports)


def compile_version_sql(schemas: list[EventSchema], type_col: str = "type", event_col: str = "event") -> str:
    """SQL expression giving the registered schema version for the row, NULL if none.

    The pipeline counts/quarantines unregistered events with ``... IS NULL``.
    """
    expr = _dispatch(
        schemas, _ident(type_col), _ident(event_col), lambda s: _lit(s.version), "CAST(NULL AS VARCHAR)"
    )
    return f"CAST({expr} AS VARCHAR)"
