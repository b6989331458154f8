"""Tests for analytics_pipeline.ingest.event_schemas: schema loading and the SQL compiler.

Every verdict is computed by DuckDB over a real table with JSON columns, because
the compiled SQL (not Python) is what the pipeline runs.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics_pipeline.ingest.event_schemas import (
    EventSchema,
    SchemaError,
    compile_version_sql,
    compile_violation_sql,
    load_event_schemas,
)
from analytics_pipeline.settings import PipelineSettings

SHIPPED_DIR = PipelineSettings().event_schemas_path
_ABSENT = object()  # marks "SQL NULL document" in row tuples

Row = tuple[str, str | None, Any, Any]  # (type, event, properties, traits)


def _json_or_null(doc: Any) -> str | None:
    return None if doc is _ABSENT or doc is None else json.dumps(doc)


def evaluate(
    schemas: list[EventSchema], rows: Sequence[Row], con: duckdb.DuckDBPyConnection | None = None
) -> list[tuple[str | None, str | None]]:
    """(violation, version) per row, computed by DuckDB over JSON columns.

    A document of None or _ABSENT is stored as SQL NULL ("absent").
    """
    con = con or duckdb.connect()
    con.execute(
        "CREATE OR REPLACE TEMP TABLE ev "
        "(n INTEGER, type VARCHAR, event VARCHAR, properties JSON, traits JSON)"
    )
    if rows:
        con.executemany(
            "INSERT INTO ev VALUES (?, ?, ?, ?, ?)",
            [(n, t, e, _json_or_null(p), _json_or_null(tr)) for n, (t, e, p, tr) in enumerate(rows)],
        )
    sql = f"SELECT {compile_violation_sql(schemas)}, {compile_version_sql(schemas)} FROM ev ORDER BY n"
    return [(v, ver) for v, ver in con.execute(sql).fetchall()]


def violation(schemas: list[EventSchema], row: Row) -> str | None:
    return evaluate(schemas, [row])[0][0]


def write_schema(directory: Path, slug: str, self_block: dict[str, Any], body: dict[str, Any]) -> Path:
    path = directory / f"{slug}.schema.json"
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "self": self_block, **body}
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def track_schema(
    tmp_path: Path, event: str, body: dict[str, Any], version: str = "1-0-0"
) -> list[EventSchema]:
    write_schema(tmp_path, "test_event", {"type": "track", "event": event, "version": version}, body)
    return load_event_schemas(tmp_path)


@pytest.fixture(scope="module")
def shipped() -> list[EventSchema]:
    return load_event_schemas(SHIPPED_DIR)


# --------------------------------------------------------------------------- loading


def test_load_shipped_schemas(shipped: list[EventSchema]) -> None:
    assert [s.key for s in shipped] == [
        "identify",
        "page",
        "track:Checkout Started",
        "track:Order Completed",
        "track:Product Added",
        "track:Product Viewed",
        "track:Signed Up",
    ]
    for schema in shipped:
        assert re.fullmatch(r"\d+-\d+-\d+", schema.version)
        assert schema.path.name.endswith(".schema.json")
        assert (schema.event is None) == (schema.type != "track")
    order = next(s for s in shipped if s.key == "track:Order Completed")
    assert order.schema["required"] == ["order_id", "revenue", "currency"]


def test_shipped_schemas_are_valid_draft_2020_12(shipped: list[EventSchema]) -> None:
    for schema in shipped:
        jsonschema.Draft202012Validator.check_schema(schema.schema)


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ({"oneOf": [{"type": "object"}]}, "oneOf"),
        ({"properties": {"x": {"anyOf": [{"type": "string"}]}}}, "anyOf"),
        ({"properties": {"x": {"type": "array", "items": {"uniqueItems": True}}}}, "uniqueItems"),
        ({"patternProperties": {"^a": {}}}, "patternProperties"),
        ({"$ref": "#/$defs/x"}, "$ref"),
    ],
)
def test_unsupported_keyword_raises_naming_it(tmp_path: Path, body: dict[str, Any], keyword: str) -> None:
    path = write_schema(tmp_path, "bad", {"type": "track", "event": "Bad", "version": "1-0-0"}, body)
    with pytest.raises(SchemaError) as info:
        load_event_schemas(tmp_path)
    assert repr(keyword) in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("self_block", "body", "fragment"),
    [
        ({"type": "track", "event": "X", "version": "1.0.0"}, {}, "version"),
        ({"type": "track", "event": "X", "version": "1-0"}, {}, "version"),
        ({"type": "track", "version": "1-0-0"}, {}, "event"),
        ({"type": "page", "event": "Home", "version": "1-0-0"}, {}, "event"),
        ({"type": "screen", "version": "1-0-0"}, {}, "self.type"),
        ({"type": "track", "event": "X", "version": "1-0-0", "vendor": "x"}, {}, "vendor"),
        (
            {"type": "track", "event": "X", "version": "1-0-0"},
            {"additionalProperties": {"type": "string"}},
            "additionalProperties",
        ),
        ({"type": "track", "event": "X", "version": "1-0-0"}, {"type": "text"}, "type"),
        ({"type": "track", "event": "X", "version": "1-0-0"}, {"minimum": "0"}, "minimum"),
        ({"type": "track", "event": "X", "version": "1-0-0"}, {"minLength": -1}, "minLength"),
        ({"type": "track", "event": "X", "version": "1-0-0"}, {"enum": [{"a": 1}]}, "enum"),
        (
            {"type": "track", "event": "X", "version": "1-0-0"},
            {"properties": {"p": {"pattern": "(unclosed"}}},
            "pattern",
        ),
        ({"type": "track", "event": "X", "version": "1-0-0"}, {"items": [{"type": "string"}]}, "items"),
    ],
)
def test_invalid_schema_files_raise(
    tmp_path: Path, self_block: dict[str, Any], body: dict[str, Any], fragment: str
) -> None:
    path = write_schema(tmp_path, "bad", self_block, body)
    with pytest.raises(SchemaError) as info:
        load_event_schemas(tmp_path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_self_and_invalid_json_raise(tmp_path: Path) -> None:
    (tmp_path / "a.schema.json").write_text('{"type": "object"}', encoding="utf-8")
    with pytest.raises(SchemaError, match="self"):
        load_event_schemas(tmp_path)
    (tmp_path / "a.schema.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SchemaError, match="invalid JSON"):
        load_event_schemas(tmp_path)
    (tmp_path / "a.schema.json").write_text(
        '{"self": {"type": "page", "version": "1-0-0"}, "type": "object", "type": "array"}', encoding="utf-8"
    )
    with pytest.raises(SchemaError, match="duplicate key 'type'"):
        load_event_schemas(tmp_path)


def test_duplicate_key_raises(tmp_path: Path) -> None:
    first = write_schema(tmp_path, "a", {"type": "track", "event": "Same", "version": "1-0-0"}, {})
    second = write_schema(tmp_path, "b", {"type": "track", "event": "Same", "version": "2-0-0"}, {})
    with pytest.raises(SchemaError) as info:
        load_event_schemas(tmp_path)
    assert "track:Same" in str(info.value)
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_duplicate_key_rejected_by_compiler_too(shipped: list[EventSchema]) -> None:
    with pytest.raises(SchemaError, match="duplicate"):
        compile_violation_sql([shipped[0], shipped[0]])


def test_annotations_and_format_are_allowed(tmp_path: Path) -> None:
    body = {
        "$id": "x",
        "title": "T",
        "$comment": "c",
        "examples": [{}],
        "properties": {"e": {"type": "string", "format": "email", "default": "a@b.c", "description": "d"}},
    }
    schemas = track_schema(tmp_path, "Annotated", body)
    assert violation(schemas, ("track", "Annotated", {"e": "not an email"}, None)) is None


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_event_schemas(tmp_path / "nope")


# --------------------------------------------------------------------------- shipped rules


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (("track", "Order Completed", {"order_id": "o1", "revenue": 10.5, "currency": "USD"}, None), None),
        (
            ("track", "Order Completed", {"order_id": "o1", "revenue": 0, "currency": "GBP", "x": 1}, None),
            None,
        ),
        (
            ("track", "Order Completed", {"order_id": "o1", "revenue": -5, "currency": "USD"}, None),
            "$.revenue: minimum 0 (got -5)",
        ),
        (
            ("track", "Order Completed", {"order_id": "o1", "revenue": 5, "currency": "XYZ"}, None),
            '$.currency: enum [USD, EUR, GBP] (got "XYZ")',
        ),
        (("track", "Order Completed", {"revenue": 5, "currency": "XYZ"}, None), "$.order_id: required"),
        (
            ("track", "Order Completed", {"order_id": "", "revenue": 5, "currency": "EUR"}, None),
            '$.order_id: minLength 1 (got "")',
        ),
        (
            ("track", "Order Completed", {"order_id": "o", "revenue": "5", "currency": "EUR"}, None),
            "$.revenue: type number (got string)",
        ),
        (("track", "Order Completed", "oops", None), "$: type object (got string)"),
        (("track", "Order Completed", None, None), "$.order_id: required"),
        (("track", "Product Added", {"product_id": "p", "quantity": 2}, None), None),
        (("track", "Product Added", {"product_id": "p", "quantity": 2.0}, None), None),
        (
            ("track", "Product Added", {"product_id": "p", "quantity": "2"}, None),
            "$.quantity: type integer (got string)",
        ),
        (
            ("track", "Product Added", {"product_id": "p", "quantity": 2.5}, None),
            "$.quantity: type integer (got number)",
        ),
        (
            ("track", "Product Added", {"product_id": "p", "quantity": 0}, None),
            "$.quantity: minimum 1 (got 0)",
        ),
        (("track", "Product Viewed", {"product_id": "p", "price": 1}, None), None),
        (
            ("track", "Product Viewed", {"product_id": "p", "price": 1, "currency": None}, None),
            "$.currency: type string (got null)",
        ),
        (("track", "Checkout Started", {"order_id": "o"}, None), None),
        (("track", "Checkout Started", {"order_id": 7}, None), "$.order_id: type string (got integer)"),
        (("track", "Signed Up", {"method": "github"}, None), None),
        (
            ("track", "Signed Up", {"method": "myspace"}, None),
            '$.method: enum [email, google, github] (got "myspace")',
        ),
        (("page", None, {"path": "/pricing", "title": "Pricing"}, None), None),
        (("page", "Pricing", {"path": "pricing"}, None), '$.path: pattern ^/ (got "pricing")'),
        (("page", None, {}, None), "$.path: required"),
        (("identify", None, None, None), None),
        (("identify", None, {"properties": "ignored"}, {"email": "a@b.co", "plan": "pro"}), None),
        (("identify", None, None, {"plan": "gold"}), '$.plan: enum [free, pro, enterprise] (got "gold")'),
        (
            ("identify", None, None, {"email": "a@b.co\n"}),
            r'$.email: pattern ^[^@ \t\r\n]+@[^@ \t\r\n]+\.[^@ \t\r\n]+$ (got "a@b.co\n")',
        ),
        (("identify", None, None, [1]), "$: type object (got array)"),
    ],
)
def test_shipped_rules(shipped: list[EventSchema], row: Row, expected: str | None) -> None:
    assert violation(shipped, row) == expected


def test_json_null_document_is_not_absent(shipped: list[EventSchema]) -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE ev AS SELECT 'track' AS type, 'Signed Up' AS event, "
        "'null'::JSON AS properties, NULL::JSON AS traits"
    )
    assert con.execute(f"SELECT {compile_violation_sql(shipped)} FROM ev").fetchone() == (
        "$: type object (got null)",
    )


def test_unregistered_events_give_null_violation_and_version(shipped: list[EventSchema]) -> None:
    rows: list[Row] = [
        ("track", "Unknown Event", {"anything": -1}, None),
        ("track", None, "not even an object", None),
        ("track", "order completed", {}, None),  # names are case-sensitive
        ("screen", "Home", {}, None),
        ("alias", None, None, None),
    ]
    assert evaluate(shipped, rows) == [(None, None)] * len(rows)
    registered = evaluate(
        shipped, [("track", "Signed Up", {"method": "email"}, None), ("page", None, {"path": "/"}, None)]
    )
    assert registered == [(None, "1-0-0"), (None, "1-0-0")]


def test_no_schemas_compiles_to_null() -> None:
    assert evaluate([], [("track", "X", {}, None)]) == [(None, None)]


def test_custom_column_names(shipped: list[EventSchema]) -> None:
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE raw AS SELECT 'track' AS "msg type", 'Signed Up' AS name,
           '{"method": 1}'::JSON AS props, NULL::JSON AS user_traits"""
    )
    sql = compile_violation_sql(
        shipped, type_col="msg type", event_col="name", properties_col="props", traits_col="user_traits"
    )
    version = compile_version_sql(shipped, type_col="r.msg type", event_col="r.name")
    got = con.execute(f"SELECT {sql}, {version} FROM raw AS r").fetchone()
    assert got == ("$.method: type string (got integer)", "1-0-0")


# --------------------------------------------------------------------------- every rule kind

RULES_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "s_min": {"type": "string", "minLength": 2},
        "s_max": {"type": "string", "maxLength": 3},
        "s_pat": {"type": "string", "pattern": "^[a-z]+\\d$"},
        "s_search": {"pattern": "b"},
        "n_min": {"minimum": 0},
        "n_max": {"type": "number", "maximum": 10},
        "n_xmin": {"exclusiveMinimum": 0},
        "n_xmax": {"exclusiveMaximum": 1.5},
        "i": {"type": "integer"},
        "num": {"type": "number"},
        "b": {"type": "boolean"},
        "nul": {"type": "null"},
        "multi": {"type": ["string", "null"]},
        "e": {"enum": ["a", 1, True, None]},
        "c": {"const": "fixed"},
        "c2": {"const": 3},
        "obj": {
            "type": "object",
            "properties": {"must": {}, "inner": {"type": "integer"}},
            "required": ["must"],
            "additionalProperties": False,
        },
        "arr": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
        },
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "matrix": {"items": {"items": {"type": "integer"}}},
    },
}


RULE_CASES: list[tuple[dict[str, Any], str | None]] = [
    ({}, None),
    ({"s_min": "ab"}, None),
    ({"s_min": "a"}, '$.s_min: minLength 2 (got "a")'),
    ({"s_min": "é"}, '$.s_min: minLength 2 (got "é")'),
    ({"s_min": "👍🏽"}, None),  # two code points, as JSON Schema counts
    ({"s_max": "abc"}, None),
    ({"s_max": "abcd"}, '$.s_max: maxLength 3 (got "abcd")'),
    ({"s_max": "x" * 300}, '$.s_max: maxLength 3 (got "' + "x" * 99 + ")"),
    ({"s_pat": "xyz1"}, None),
    ({"s_pat": "ab"}, '$.s_pat: pattern ^[a-z]+\\d$ (got "ab")'),
    ({"s_search": "abc"}, None),  # search, not full match
    ({"s_search": "xyz"}, '$.s_search: pattern b (got "xyz")'),
    ({"s_search": 5}, None),  # pattern ignores non-strings
    ({"n_min": 0}, None),
    ({"n_min": -0.5}, "$.n_min: minimum 0 (got -0.5)"),
    ({"n_min": "-1"}, None),  # minimum ignores non-numbers
    ({"n_max": 10}, None),
    ({"n_max": 10.5}, "$.n_max: maximum 10 (got 10.5)"),
    ({"n_max": 1e21}, "$.n_max: maximum 10 (got 1e21)"),
    ({"n_xmin": 0.001}, None),
    ({"n_xmin": 0}, "$.n_xmin: exclusiveMinimum 0 (got 0)"),
    ({"n_xmax": 1.4}, None),
    ({"n_xmax": 1.5}, "$.n_xmax: exclusiveMaximum 1.5 (got 1.5)"),
    ({"i": 1.0}, None),
    ({"i": -3}, None),
    ({"i": 2**64 + 1}, None),
    ({"i": 2.5}, "$.i: type integer (got number)"),
    ({"i": "3"}, "$.i: type integer (got string)"),
    ({"num": 18446744073709551615}, None),
    ({"num": "1"}, "$.num: type number (got string)"),
    ({"num": True}, "$.num: type number (got boolean)"),
    ({"b": False}, None),
    ({"b": 1}, "$.b: type boolean (got integer)"),
    ({"nul": None}, None),
    ({"nul": 0}, "$.nul: type null (got integer)"),
    ({"multi": None}, None),
    ({"multi": "x"}, None),
    ({"multi": 1}, "$.multi: type [string, null] (got integer)"),
    ({"multi": {"a": 1}}, "$.multi: type [string, null] (got object)"),
    ({"e": "a"}, None),
    ({"e": 1.0}, None),
    ({"e": True}, None),
    ({"e": None}, None),
    ({"e": "b"}, '$.e: enum [a, 1, true, null] (got "b")'),
    ({"e": "1"}, '$.e: enum [a, 1, true, null] (got "1")'),
    ({"e": False}, "$.e: enum [a, 1, true, null] (got false)"),
    ({"e": [1]}, "$.e: enum [a, 1, true, null] (got [1])"),
    ({"c": "fixed"}, None),
    ({"c": "other"}, '$.c: const fixed (got "other")'),
    ({"c2": 3.0}, None),
    ({"c2": 4}, "$.c2: const 3 (got 4)"),
    ({"obj": {"must": 1, "inner": 2}}, None),
    ({"obj": {}}, "$.obj.must: required"),
    ({"obj": {"must": 1, "inner": "x"}}, "$.obj.inner: type integer (got string)"),
    ({"obj": {"must": 1, "zzz": 1, "yyy": 2}}, '$.obj: additionalProperties false (got "zzz")'),
    ({"obj": []}, "$.obj: type object (got array)"),
    ({"arr": [{"sku": "a"}]}, None),
    ({"arr": []}, "$.arr: minItems 1 (got [])"),
    (
        {"arr": [{"sku": "a"}] * 4},
        '$.arr: maxItems 3 (got [{"sku":"a"},{"sku":"a"},{"sku":"a"},{"sku":"a"}])',
    ),
    ({"arr": [{"sku": "a"}, {}]}, "$.arr[1].sku: required"),
    ({"arr": [{"sku": "a"}, 5, {}]}, "$.arr[1]: type object (got integer)"),
    ({"arr": [{"sku": 1}]}, "$.arr[0].sku: type string (got integer)"),
    ({"tags": []}, None),
    ({"tags": ["a", "b"]}, None),
    ({"tags": ["a", ""]}, '$.tags[1]: minLength 1 (got "")'),
    ({"matrix": [[1], [2, 3.0]]}, None),
    ({"matrix": [[1], [2, "x"]]}, "$.matrix[1][1]: type integer (got string)"),
    ({"matrix": "not an array"}, None),  # items only applies to arrays
    ({"s_min": "a", "n_min": -1}, '$.s_min: minLength 2 (got "a")'),  # first in file order wins
]


@pytest.mark.parametrize(("props", "expected"), RULE_CASES)
def test_rule_kinds(tmp_path: Path, props: dict[str, Any], expected: str | None) -> None:
    schemas = track_schema(tmp_path, "Rules", RULES_BODY)
    assert violation(schemas, ("track", "Rules", props, None)) == expected


def test_rule_kinds_agree_with_jsonschema(tmp_path: Path) -> None:
    """The hand-written expectations above are themselves JSON Schema semantics."""
    schemas = track_schema(tmp_path, "Rules", RULES_BODY)
    validator = jsonschema.Draft202012Validator(schemas[0].schema)
    rows: list[Row] = [("track", "Rules", props, None) for props, _ in RULE_CASES]
    for (props, _), (got, _version) in zip(RULE_CASES, evaluate(schemas, rows), strict=True):
        assert (got is None) == validator.is_valid(props), (props, got)


def test_required_is_checked_before_properties_and_file_order_elsewhere(tmp_path: Path) -> None:
    body = {
        "properties": {"a": {"type": "string"}, "z": {"enum": ["x"], "type": "string"}},
        "required": ["b"],
    }
    schemas = track_schema(tmp_path, "Order", body)
    assert violation(schemas, ("track", "Order", {"a": 1}, None)) == "$.b: required"
    assert violation(schemas, ("track", "Order", {"b": 1, "z": 5}, None)) == "$.z: enum [x] (got 5)"


def test_root_additional_properties(tmp_path: Path) -> None:
    body = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    schemas = track_schema(tmp_path, "Closed", body)
    assert violation(schemas, ("track", "Closed", {"a": 1}, None)) is None
    assert violation(schemas, ("track", "Closed", None, None)) is None
    assert violation(schemas, ("track", "Closed", {"a": 1, 'it"s': 2}, None)) == (
        '$: additionalProperties false (got "it\\"s")'
    )
    empty = track_schema(tmp_path, "Closed", {"additionalProperties": False})
    assert violation(empty, ("track", "Closed", {"x": 1}, None)) == '$: additionalProperties false (got "x")'


def test_awkward_property_and_event_names(tmp_path: Path) -> None:
    body = {
        "type": "object",
        "properties": {
            "my.key name": {"type": "integer"},
            'it\'s "q"': {"type": "string"},
            "a/b~c": {"type": "boolean"},
            "é": {"type": "string"},
            "": {"type": "null"},
            "0": {"type": "string"},
        },
        "required": ["my.key name"],
    }
    event = 'Bob\'s "Big" Event'
    schemas = track_schema(tmp_path, event, body)
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"my.key name": 1, 'it\'s "q"': "x", "a/b~c": True, "é": "x", "": None, "0": "x"}, None),
        ({"my": {"key name": 1}}, '$."my.key name": required'),
        ({"my.key name": "1"}, '$."my.key name": type integer (got string)'),
        ({"my.key name": 1, 'it\'s "q"': 2}, '$."it\'s \\"q\\"": type string (got integer)'),
        ({"my.key name": 1, "a/b~c": "no"}, '$."a/b~c": type boolean (got string)'),
        ({"my.key name": 1, "é": 1}, '$."é": type string (got integer)'),
        ({"my.key name": 1, "": 1}, '$."": type null (got integer)'),
        ({"my.key name": 1, "0": 1}, '$."0": type string (got integer)'),
    ]
    results = evaluate(schemas, [("track", event, props, None) for props, _ in cases])
    assert [v for v, _ in results] == [expected for _, expected in cases]
    assert {ver for _, ver in results} == {"1-0-0"}


def test_properties_only_apply_to_objects(tmp_path: Path) -> None:
    body = {"properties": {"0": {"type": "string"}}, "required": ["0"]}
    schemas = track_schema(tmp_path, "Loose", body)
    # A JSON pointer "/0" would address an array element; it must not here.
    assert violation(schemas, ("track", "Loose", [5], None)) is None
    assert violation(schemas, ("track", "Loose", {"0": 5}, None)) == '$."0": type string (got integer)'


def test_new_schema_file_takes_effect_without_code_change(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    shutil.copytree(SHIPPED_DIR, directory)
    rows: list[Row] = [
        ("track", "Coupon Applied", {"coupon": "SAVE10", "discount": 10}, None),
        ("track", "Coupon Applied", {"discount": 150}, None),
        ("track", "Order Completed", {"order_id": "o", "revenue": -1, "currency": "USD"}, None),
    ]
    before = evaluate(load_event_schemas(directory), rows)
    assert before[:2] == [(None, None), (None, None)]
    write_schema(
        directory,
        "coupon_applied",
        {"type": "track", "event": "Coupon Applied", "version": "1-0-2"},
        {
            "type": "object",
            "properties": {"coupon": {"type": "string"}, "discount": {"type": "number", "maximum": 100}},
            "required": ["coupon"],
        },
    )
    after = evaluate(load_event_schemas(directory), rows)
    assert after == [
        (None, "1-0-2"),
        ("$.coupon: required", "1-0-2"),
        ("$.revenue: minimum 0 (got -1)", "1-0-0"),
    ]


def test_sql_is_plain_and_compact(shipped: list[EventSchema]) -> None:
    sql = compile_violation_sql(shipped)
    assert "\n" not in sql
    assert len(sql) < 25_000
    # Parsing is shared: each schema parses its document once per pointer list.
    assert sql.count("json_type(") == len(shipped)


# --------------------------------------------------------------------------- property-based


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    """ECMA-262 (and RE2) '$' matches only at the end, Python's also before a final
    newline; ECMA's \\d is ASCII-only.  Adjust the oracle accordingly."""
    if validator.is_type(instance, "string") and not re.search(
        pattern.replace("$", r"\Z"), instance, re.ASCII
    ):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


OracleValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


@lru_cache(maxsize=1)
def _shipped_for_property_test() -> tuple[list[EventSchema], duckdb.DuckDBPyConnection]:
    return load_event_schemas(SHIPPED_DIR), duckdb.connect()


INTERESTING: list[Any] = [
    "",
    "x",
    "USD",
    "EUR",
    "GBP",
    "XYZ",
    "usd",
    "email",
    "google",
    "github",
    "free",
    "pro",
    "enterprise",
    "/",
    "/home",
    "home",
    "a@b.co",
    "a@b.co\n",
    "a b@c.d",
    "@b.co",
    "a@b",
    0,
    1,
    -1,
    2,
    0.0,
    -0.0,
    1.0,
    1.5,
    -0.5,
    2**63,
    -(2**63) - 1,
    2**64,
    1e300,
    5e-324,
    -5e-324,
    True,
    False,
    None,
    [],
    {},
    ["x"],
    {"a": 1},
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def event_rows(draw: st.DrawFn) -> tuple[int, Row]:
    schemas, _ = _shipped_for_property_test()
    index = draw(st.integers(0, len(schemas) - 1))
    schema = schemas[index]
    doc: Any
    if draw(st.integers(0, 19)) == 0:
        doc = draw(st.just(_ABSENT) | json_values)  # absent, or possibly not an object
    else:
        doc = {}
        for name in schema.schema.get("properties", {}):
            choice = draw(st.integers(0, 9))
            if choice < 2:
                continue
            doc[name] = draw(st.sampled_from(INTERESTING)) if choice < 8 else draw(json_values)
        doc.update(draw(st.dictionaries(st.text(max_size=4), json_values, max_size=2)))
    props, traits = (_ABSENT, doc) if schema.type == "identify" else (doc, _ABSENT)
    event = schema.event if schema.type == "track" else draw(st.none() | st.text(max_size=3))
    return index, (schema.type, event, props, traits)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_rows(), min_size=1, max_size=25))
def test_sql_verdict_matches_jsonschema(batch: list[tuple[int, Row]]) -> None:
    schemas, con = _shipped_for_property_test()
    results = evaluate(schemas, [row for _, row in batch], con)
    for (index, row), (message, version) in zip(batch, results, strict=True):
        schema = schemas[index]
        doc = row[3] if schema.type == "identify" else row[2]
        instance = {} if doc is _ABSENT or doc is None else doc  # both stored as SQL NULL
        expected_valid = OracleValidator(schema.schema).is_valid(instance)
        assert (message is None) == expected_valid, (schema.key, instance, message)
        assert version == schema.version


def _near(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that are often valid for `schema` and often just barely not."""
    options: list[st.SearchStrategy[Any]] = [json_values, st.sampled_from(INTERESTING)]
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    if "const" in schema:
        options.append(st.just(schema["const"]))
    if "properties" in schema or schema.get("type") == "object":
        properties = {name: _near(sub) for name, sub in schema.get("properties", {}).items()}
        extra = st.dictionaries(st.sampled_from(["zzz", "must", "x y"]), json_scalars, max_size=1)
        options.append(
            st.tuples(st.fixed_dictionaries({}, optional=properties), extra).map(
                lambda pair: {**pair[1], **pair[0]}
            )
        )
    if "items" in schema or schema.get("type") == "array":
        options.append(st.lists(_near(schema.get("items", {})), max_size=5))
    if any(k in schema for k in ("minLength", "maxLength", "pattern")):
        options.append(st.text(alphabet="ab1 \n٣", max_size=5))
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        options.append(st.sampled_from([-1, -0.5, 0, 0.001, 1, 1.4, 1.5, 1.6, 10, 10.0, 10.5]))
    return st.one_of(options)


RULES_SCHEMA = EventSchema(
    type="track",
    event="Rules",
    version="1-0-0",
    path=Path("rules.schema.json"),
    schema={"self": {"type": "track", "event": "Rules", "version": "1-0-0"}, **RULES_BODY},
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_near(RULES_BODY), min_size=1, max_size=25))
def test_every_rule_kind_matches_jsonschema(docs: list[Any]) -> None:
    _, con = _shipped_for_property_test()
    results = evaluate([RULES_SCHEMA], [("track", "Rules", doc, None) for doc in docs], con)
    validator = OracleValidator(RULES_SCHEMA.schema)
    for doc, (message, _version) in zip(docs, results, strict=True):
        instance = {} if doc is None else doc
        assert (message is None) == validator.is_valid(instance), (instance, message)
