"""A snapshot of what the code location declares, so a change to the graph is a reviewed diff.

Asset keys with their upstreams, step, group, partitioning and checks; jobs with the assets
they select; schedules; sensors. Serialized deterministically to ``definitions_snapshot.json``
beside this file. After an intended change, regenerate it and commit the diff::

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py

Only values the code declares are kept: the partitions' start date and the late window
come from settings (environment), so they are left out.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from dagster import AssetsDefinition, Definitions

from analytics_pipeline.definitions import defs

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")
UPDATE_ENV = "UPDATE_SNAPSHOTS"


def snapshot(definitions: Definitions) -> dict[str, Any]:
    graph = definitions.resolve_asset_graph()
    step_of: dict[str, dict[str, Any]] = {}
    for assets_def in definitions.assets or []:
        if isinstance(assets_def, AssetsDefinition):
            for key in assets_def.keys:
                step_of[key.to_user_string()] = {
                    "step": assets_def.node_def.name,
                    "can_subset": assets_def.can_subset,
                }
    checks: dict[str, dict[str, str]] = {}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        checks.setdefault(check_key.asset_key.to_user_string(), {})[check_key.name] = (
            "blocking" if spec.blocking else "non-blocking"
        )
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        name = key.to_user_string()
        assets[name] = {
            "upstream": sorted(k.to_user_string() for k in node.parent_keys),
            "group": node.group_name,
            "partitions": type(node.partitions_def).__name__ if node.partitions_def else None,
            **step_of.get(name, {}),
            "checks": dict(sorted(checks.get(name, {}).items())),
        }
    jobs = {
        job.name: {
            "assets": sorted(k.to_user_string() for k in job.selection.resolve(graph)),
            "partitioned": job.partitions_def is not None,
            "tags": dict(sorted(job.tags.items())),
        }
        for job in definitions.jobs or []
        if hasattr(job, "selection")  # asset jobs (every job of this project)
    }
    schedules = {
        schedule.name: {
            "cron": schedule.cron_schedule,
            "timezone": schedule.execution_timezone,
            "job": schedule.job_name,
            "default_status": schedule.default_status.value,
        }
        for schedule in definitions.schedules or []
    }
    sensors = {
        sensor.name: {
            "type": sensor.sensor_type.value,
            "jobs": [target.job_name for target in sensor.targets],
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
        }
        for sensor in definitions.sensors or []
    }
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_definitions_match_the_committed_snapshot() -> None:
    current = render(snapshot(defs))
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.write_text(current)
        return
    assert SNAPSHOT.exists(), f"no {SNAPSHOT.name}; write it with {UPDATE_ENV}=1"
    committed = SNAPSHOT.read_text()
    if current != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True), current.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.name} (committed)", tofile="definitions (now)",
            )
        )  # fmt: skip
        raise AssertionError(
            f"The definitions changed:\n{diff}\nIf the change is intended, regenerate the snapshot and "
            f"commit it: {UPDATE_ENV}=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py"
        )
