"""Event schemas as the pipeline uses them: a new file takes effect with no code change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.settings import PROJECT_ROOT, PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse
from tests.conftest import message, query, write_lines

DAY = "2025-01-10"


def _quarantine(settings: PipelineSettings) -> list[tuple]:
    path = Warehouse(settings.warehouse_path).partition_file("quarantined_events", DAY)
    return query(path, "SELECT message_id, reason, message FROM t ORDER BY message_id")


def test_new_schema_file_takes_effect_without_code_changes(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(PROJECT_ROOT / "assets" / "events", schemas)
    settings = PipelineSettings(data_dir=str(tmp_path / "data"), event_schemas_dir=str(schemas))
    lines = [
        message(messageId="ok", event="Coupon Applied", properties={"code": "SAVE10", "discount": 10}),
        message(messageId="bad", event="Coupon Applied", properties={"code": "SAVE10", "discount": 150}),
    ]
    write_lines(settings, DAY, "a.jsonl", lines)
    before = ingest_arrival_day(settings, DAY).counts
    assert before["unregistered_events"] == 2 and before["quarantined_lines"] == 0

    (schemas / "coupon_applied.schema.json").write_text(json.dumps({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "self": {"type": "track", "event": "Coupon Applied", "version": "1-0-0"},
        "type": "object",
        "properties": {"code": {"type": "string"}, "discount": {"type": "number", "maximum": 100}},
        "required": ["code", "discount"],
    }))  # fmt: skip
    after = ingest_arrival_day(settings, DAY).counts
    assert after["unregistered_events"] == 0
    assert after["quarantined_by_reason"] == {"schema_violation": 1}
    [(message_id, reason, text)] = _quarantine(settings)
    assert (message_id, reason) == ("bad", "schema_violation")
    assert "$.discount" in text and "maximum" in text and "1-0-0" in text
    versions = query(Warehouse(settings.warehouse_path).partition_file("raw_events", DAY),
                     "SELECT message_id, schema_version FROM t")  # fmt: skip
    assert versions == [("ok", "1-0-0")]


def test_unregistered_events_can_be_quarantined_by_setting(tmp_path: Path) -> None:
    settings = PipelineSettings(data_dir=str(tmp_path / "data"), unregistered_events="quarantine")
    write_lines(settings, DAY, "a.jsonl", [message(messageId="x", event="Mystery Event", properties={})])
    counts = ingest_arrival_day(settings, DAY).counts
    assert counts["quarantined_by_reason"] == {"unregistered_event": 1}
    assert _quarantine(settings)[0][2] == 'no schema registered for track "Mystery Event"'
