"""Raw lines -> typed ``raw_events`` rows and ``quarantined_events`` rows, in DuckDB.

Every line gets exactly one verdict: a typed row, or a quarantine row carrying the
first rule it broke (``reason``), a readable ``message`` and its raw text. The rules
run as one vectorized SQL statement; nothing here loops over rows in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from analytics_pipeline.ingest.event_schemas import (
    EventSchema,
    compile_version_sql,
    compile_violation_sql,
)
from analytics_pipeline.warehouse.tables import EVENT_TYPES as SEGMENT_TYPES

# Reason codes, in the order the rules are applied. Documented in the README.
LINE_REASONS = (
    "invalid_utf8", "line_too_long", "blank_line", "parquet_schema_mismatch",
    "truncated_line", "invalid_json", "not_an_object", "duplicate_key", "missing_message_id",
    "missing_received_at", "wrong_field_type", "missing_identity", "unknown_type",
    "missing_event_name", "invalid_timestamp", "too_late", "future_timestamp",
    "schema_violation", "unregistered_event",
)  # fmt: skip
FILE_REASONS = (
    "empty_file", "corrupt_gzip", "unreadable_file", "path_outside_landing", "unsupported_file",
)  # fmt: skip

RAW_EVENT_COLUMNS = {
    "message_id": "Segment messageId: the dedupe key.",
    "type": "Segment call type: track, page, screen, identify, group or alias.",
    "event": "Track event name (NULL for other types).",
    "user_id": "userId as sent (numbers become strings).",
    "anonymous_id": "anonymousId as sent.",
    "timestamp": "Event time, UTC, after Segment's clock-skew correction.",
    "original_timestamp": "Client clock time as sent (originalTimestamp).",
    "sent_at": "Client clock time of sending (sentAt).",
    "received_at": "Server receive time (receivedAt).",
    "event_date": "UTC date of timestamp: the events partition this row belongs to.",
    "properties": "Track/page properties as JSON.",
    "traits": "Identify traits as JSON.",
    "context": "Segment context as JSON.",
    "schema_version": "Version of the event schema it was validated against; NULL if none.",
    "content_hash": "md5 of the message content without delivery fields (conflict detection).",
    "arrival_date": "Landing folder date: the raw_events partition.",
    "file_path": "Landing file, relative to the landing folder.",
    "line_number": "1-based line (or Parquet row) number in that file.",
    "raw_line": "The original line, kept for replay.",
}

QUARANTINE_COLUMNS = {
    "arrival_date": "Landing folder date: the quarantined_events partition.",
    "file_path": "Landing file, relative to the landing folder.",
    "line_number": "1-based line number; NULL when the whole file was rejected.",
    "reason": "Reason code (see the README's list).",
    "message": "What was wrong, for a person.",
    "message_id": "messageId when one could be read.",
    "raw_text": "The rejected line (invalid bytes shown as \\xNN).",
}


@dataclass(frozen=True)
class ParseRules:
    arrival_day: str
    late_window_days: int
    quarantine_unregistered: bool
    schemas: list[EventSchema]


# The top-level fields the rules read. One ``json_extract`` with the list of their paths
# parses a line once for all of them (each JSON function call parses the whole line
# again, and a line is about 1 KB). Its elements become ``<field>_json`` (the field's
# JSON text, NULL when absent); ``<field>_jtype`` (json_type: 'NULL' for a JSON null) and
# ``<field>_text`` (json_extract_string) are read from that short text, not the line.
_TYPED_FIELDS = (
    "messageId", "type", "event", "userId", "anonymousId", "timestamp", "originalTimestamp",
    "sentAt", "receivedAt", "properties", "traits", "context",
)  # fmt: skip
_TEXT_FIELDS = (
    "messageId", "type", "event", "userId", "anonymousId", "timestamp", "originalTimestamp",
    "sentAt", "receivedAt",
)  # fmt: skip


def _paths(fields: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'$.{f}'" for f in fields) + "]"


def _fragment_type(fragment: str) -> str:
    """``json_type`` of a field's JSON text; objects, arrays and strings known from the first
    character, without parsing them again (the JSON text is DuckDB's own, no leading space)."""
    return (
        f"CASE left({fragment}, 1) WHEN '{{' THEN 'OBJECT' WHEN '[' THEN 'ARRAY' WHEN '\"' THEN 'VARCHAR' "
        f"ELSE json_type({fragment}) END"
    )


def _ts(field: str) -> str:
    """A JSON field as TIMESTAMPTZ: ISO 8601 with any offset, or epoch milliseconds."""
    return f"""CASE {field}_jtype
        WHEN 'VARCHAR' THEN TRY_CAST({field}_text AS TIMESTAMPTZ)
        WHEN 'BIGINT' THEN TRY(epoch_ms(CAST({field}_json AS BIGINT))::TIMESTAMPTZ)
        WHEN 'UBIGINT' THEN TRY(epoch_ms(CAST({field}_json AS BIGINT))::TIMESTAMPTZ)
    END"""


def _present(field: str) -> str:
    return f"coalesce({field}_jtype, 'NULL') <> 'NULL'"


# DuckDB's JSON reader also accepts trailing commas and NaN/Infinity, which are not
# JSON (RFC 8259). Outside string literals, they are the only way those appear.
_NON_JSON_TOKENS = r"'(,[ \t\r\n]*[]}])|NaN|Infinity'"
_TRAILING_COMMA = r"',[ \t\r\n]*[]}]'"
_JSON_STRING = r"""'"(?:[^"\\]|\\.)*"'"""


def _lenient_only_json(column: str) -> str:
    """True for text DuckDB parses but strict JSON does not (cheap pre-filter first).

    Blanking string literals only removes tokens, so text without any token is strict.
    The pre-filter looks for the three tokens one by one: RE2 finds a literal, or a
    pattern that starts with one, far faster than the alternation of all three.
    """
    return (
        f"CASE WHEN contains({column}, 'NaN') OR contains({column}, 'Infinity') "
        f"OR regexp_matches({column}, {_TRAILING_COMMA}) "
        f"THEN regexp_matches(regexp_replace({column}, {_JSON_STRING}, '\"\"', 'g'), {_NON_JSON_TOKENS}) "
        "ELSE FALSE END"
    )


def _ts_ok(expr: str) -> str:
    """Impossible instants (before 2000 or after 2099) are treated as unparseable."""
    return (
        f"({expr} >= TIMESTAMPTZ '2000-01-01 00:00:00+00' AND {expr} < TIMESTAMPTZ '2100-01-01 00:00:00+00')"
    )


# What ``parse_sql`` returns per line: the columns of both outputs, ``reason`` and what
# the quarantine needs to decide whether a messageId was readable.
PARSED_COLUMNS = (
    "row_id", "file_path", "line_number", "raw_text", "is_json", "doc_type", "reason", "message",
    "message_id", "type", "event", "user_id", "anonymous_id", "event_ts", "original_timestamp",
    "sent_at", "received_at", "event_date", "properties", "traits", "context", "schema_version",
    "content_hash",
)  # fmt: skip


def parse_sql(lines_relation: str, rules: ParseRules, accepted: bool = False) -> str:
    """One SELECT over the lines giving ``PARSED_COLUMNS``: every column of both outputs plus ``reason``.

    ``accepted=True`` is for lines already known to pass every rule (an earlier pass over
    the same lines gave them no reason): the verdict is not computed again (``reason`` is
    NULL), so only what the ``raw_events`` columns need is evaluated.
    """
    violation = compile_violation_sql(rules.schemas) if rules.schemas else "NULL"
    version = compile_version_sql(rules.schemas) if rules.schemas else "NULL"
    unregistered = "TRUE" if rules.quarantine_unregistered else "FALSE"
    arrival = f"DATE '{rules.arrival_day}'"
    late = int(rules.late_window_days)
    string_fields = ("messageId", "type", "event")
    id_fields = ("userId", "anonymousId")
    object_fields = ("properties", "traits", "context")
    type_problems = ",\n            ".join(
        [
            f"CASE WHEN {_present(f)} AND {f}_jtype <> 'VARCHAR' "
            f"THEN '{f} is ' || lower({f}_jtype) || ', expected string' END"
            for f in string_fields
        ]
        + [
            f"CASE WHEN {_present(f)} AND {f}_jtype NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT') "
            f"THEN '{f} is ' || lower({f}_jtype) || ', expected string' END"
            for f in id_fields
        ]
        + [
            f"CASE WHEN {_present(f)} AND {f}_jtype <> 'OBJECT' "
            f"THEN '{f} is ' || lower({f}_jtype) || ', expected object' END"
            for f in object_fields
        ]
    )
    accepted_types = ", ".join(f"'{t}'" for t in SEGMENT_TYPES)
    is_json = "TRUE" if accepted else f"fragments IS NOT NULL AND NOT {_lenient_only_json('raw_text')}"
    reason = "CAST(NULL AS VARCHAR)" if accepted else _reason_sql(unregistered, arrival, late, accepted_types)
    # json_keys lists every top-level key, repeats included (the other JSON functions take the first)
    top_keys = "CAST(NULL AS VARCHAR[])" if accepted else "CASE WHEN is_json THEN json_keys(raw_text) END"
    return f"""
WITH parsed_once AS (  -- the one parse of the whole line: NULL when it is not JSON
    SELECT row_id, file_path, line_number, raw_text, pre_reason, pre_message,
           CASE WHEN pre_reason IS NULL THEN TRY(json_extract(raw_text, {_paths(_TYPED_FIELDS)})) END
               AS fragments
    FROM {lines_relation}
), src AS (
    SELECT *, {is_json} AS is_json FROM parsed_once
), extracted AS (  -- the fields' JSON texts, each parsed on its own (small) when it must be
    SELECT *,
        {", ".join(f"CASE WHEN is_json THEN fragments[{i}] END AS {f}_json" for i, f in enumerate(_TYPED_FIELDS, 1))},
        {top_keys} AS top_keys
    FROM src
), top_level AS (
    SELECT *,
        -- valid JSON that opens with a brace is an object; anything else is rare
        CASE WHEN is_json THEN CASE WHEN left(raw_text, 1) = '{{' THEN 'OBJECT' ELSE json_type(raw_text) END
            END AS doc_type,
        {", ".join(f"{_fragment_type(f + '_json')} AS {f}_jtype" for f in _TYPED_FIELDS)},
        {", ".join(f"json_extract_string({f}_json, '$') AS {f}_text" for f in _TEXT_FIELDS)}
    FROM extracted
), fields AS (
    SELECT *,
        nullif(trim(messageId_text), '') AS message_id,
        type_text AS type,
        nullif(event_text, '') AS event,
        nullif(userId_text, '') AS user_id,
        nullif(anonymousId_text, '') AS anonymous_id,
        {_ts("timestamp")} AS ts_given,
        {_ts("originalTimestamp")} AS original_timestamp,
        {_ts("sentAt")} AS sent_at,
        {_ts("receivedAt")} AS received_at,
        {_present("timestamp")} AS has_timestamp,
        {_present("originalTimestamp")} AS has_original,
        {_present("sentAt")} AS has_sent_at,
        coalesce(  -- the first problem, in this order
            {type_problems}
        ) AS type_problem,
        CASE WHEN properties_jtype = 'OBJECT' THEN properties_json END AS properties,
        CASE WHEN traits_jtype = 'OBJECT' THEN traits_json END AS traits,
        CASE WHEN context_jtype = 'OBJECT' THEN context_json END AS context
    FROM top_level
), timed AS (
    SELECT *,
        CASE
            WHEN has_timestamp THEN ts_given
            WHEN has_original AND has_sent_at THEN received_at - (sent_at - original_timestamp)
            WHEN has_original THEN original_timestamp
            ELSE received_at
        END AS event_ts,
        CASE
            WHEN received_at IS NULL OR NOT {_ts_ok("received_at")} THEN 'receivedAt'
            WHEN has_timestamp AND (ts_given IS NULL OR NOT {_ts_ok("ts_given")}) THEN 'timestamp'
            WHEN NOT has_timestamp AND has_original
                 AND (original_timestamp IS NULL OR NOT {_ts_ok("original_timestamp")}) THEN 'originalTimestamp'
            WHEN NOT has_timestamp AND has_original AND has_sent_at
                 AND (sent_at IS NULL OR NOT {_ts_ok("sent_at")}) THEN 'sentAt'
        END AS bad_time_field
    FROM fields
), judged AS (
    SELECT *,
        CAST(event_ts AS DATE) AS event_date,
        {violation} AS schema_problem,
        {version} AS schema_version
    FROM timed
), verdicts AS (
    SELECT *, {reason} AS reason
    FROM judged
), described AS (
    SELECT *,
        CASE reason
            WHEN 'truncated_line' THEN 'line ends before its JSON object closes'
            WHEN 'invalid_json' THEN 'not valid JSON'
            WHEN 'not_an_object' THEN 'JSON value is ' || lower(doc_type) || ', expected an object'
            WHEN 'duplicate_key' THEN 'top-level key "'
                || list_filter(top_keys, lambda k, i: list_position(top_keys, k) < i)[1]
                || '" appears more than once (readers disagree on which value counts)'
            WHEN 'missing_message_id' THEN 'messageId is missing or empty'
            WHEN 'missing_received_at' THEN 'receivedAt is missing'
            WHEN 'wrong_field_type' THEN type_problem
            WHEN 'missing_identity' THEN 'neither userId nor anonymousId is set'
            WHEN 'unknown_type' THEN 'type ' || coalesce('"' || type || '"', 'is missing') || ' is not one of {", ".join(SEGMENT_TYPES)}'
            WHEN 'missing_event_name' THEN 'track call without an event name'
            WHEN 'invalid_timestamp' THEN coalesce(bad_time_field, 'timestamp')
                || ' is not an ISO 8601 time or epoch milliseconds between 2000 and 2099'
            WHEN 'too_late' THEN 'event date ' || event_date || ' is more than {late} days before arrival {rules.arrival_day}'
            WHEN 'future_timestamp' THEN 'event date ' || event_date || ' is after arrival {rules.arrival_day}'
            WHEN 'schema_violation' THEN 'schema ' || coalesce(schema_version, '?') || ': ' || schema_problem
            WHEN 'unregistered_event' THEN 'no schema registered for ' || type || coalesce(' "' || event || '"', '')
            ELSE pre_message
        END AS message,
        md5(concat_ws(chr(31), type, coalesce(event, ''), coalesce(user_id, ''), coalesce(anonymous_id, ''),
            coalesce(CAST(timestamp_json AS VARCHAR), ''),
            coalesce(CAST(originalTimestamp_json AS VARCHAR), ''),
            coalesce(CAST(properties AS VARCHAR), ''), coalesce(CAST(traits AS VARCHAR), ''))) AS content_hash
    FROM verdicts
)
SELECT {", ".join(PARSED_COLUMNS)}
FROM described
"""


def _reason_sql(unregistered: str, arrival: str, late: int, accepted_types: str) -> str:
    """The first rule a line breaks (a reason code), NULL when it breaks none."""
    return f"""
        CASE
            WHEN pre_reason IS NOT NULL THEN pre_reason
            WHEN NOT is_json THEN CASE
                WHEN ltrim(raw_text) LIKE '{{%' AND rtrim(raw_text) NOT LIKE '%}}' THEN 'truncated_line'
                ELSE 'invalid_json' END
            WHEN doc_type <> 'OBJECT' THEN 'not_an_object'
            WHEN len(top_keys) <> list_unique(top_keys) THEN 'duplicate_key'
            WHEN NOT {_present("messageId")} OR (messageId_jtype = 'VARCHAR' AND message_id IS NULL)
                THEN 'missing_message_id'
            WHEN NOT {_present("receivedAt")} THEN 'missing_received_at'
            WHEN type_problem IS NOT NULL THEN 'wrong_field_type'
            WHEN user_id IS NULL AND anonymous_id IS NULL THEN 'missing_identity'
            WHEN type IS NULL OR type NOT IN ({accepted_types}) THEN 'unknown_type'
            WHEN type = 'track' AND event IS NULL THEN 'missing_event_name'
            WHEN bad_time_field IS NOT NULL OR NOT {_ts_ok("event_ts")} THEN 'invalid_timestamp'
            WHEN event_date < {arrival} - INTERVAL {late} DAY THEN 'too_late'
            WHEN event_date > {arrival} THEN 'future_timestamp'
            WHEN schema_problem IS NOT NULL THEN 'schema_violation'
            WHEN {unregistered} AND schema_version IS NULL THEN 'unregistered_event'
        END"""


# The order of raw_events rows (file order), so that the output bytes are deterministic.
RAW_EVENTS_ORDER = ("file_path", "line_number")


def raw_events_select(parsed: str, arrival_day: str) -> str:
    """Accepted rows, in the order of ``parsed``.

    The lines are staged in ``RAW_EVENTS_ORDER`` and DuckDB keeps insertion order
    when ``preserve_insertion_order`` is on, so no sort is needed (sorting these wide
    rows was most of the cost of writing them); ``ingestion`` checks the order.
    """
    return f"""
SELECT message_id, type, event, user_id, anonymous_id,
       event_ts AS timestamp, original_timestamp, sent_at, received_at, event_date,
       properties, traits, context, schema_version, content_hash,
       DATE '{arrival_day}' AS arrival_date, file_path, line_number, raw_text AS raw_line
FROM {parsed}
WHERE reason IS NULL
"""


def quarantine_select(parsed: str, file_problems: str, arrival_day: str) -> str:
    """Rejected lines plus whole-file problems, in file order."""
    return f"""
SELECT DATE '{arrival_day}' AS arrival_date, file_path, line_number, reason, message,
       CASE WHEN is_json AND doc_type = 'OBJECT' THEN message_id END AS message_id,
       raw_text
FROM {parsed}
WHERE reason IS NOT NULL
UNION ALL
SELECT DATE '{arrival_day}', file_path, CAST(NULL AS BIGINT), reason, message,
       CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR)
FROM {file_problems}
ORDER BY file_path, line_number NULLS FIRST, reason
"""


def connect_lines(con: duckdb.DuckDBPyConnection, lines_path: str) -> None:
    con.execute(f"CREATE OR REPLACE TEMP VIEW lines AS SELECT * FROM read_parquet('{lines_path}')")
