"""The Dagster UI, end to end, on data the real pipeline built: what a person opening it would see.

``dagster-webserver`` (read-only, no daemon: nothing is launched) serves ``workspace.yaml`` on a
free loopback port, pointed at the session's ``pipeline`` (its ``DAGSTER_HOME`` and its
``ANALYTICS_DATA_DIR``). Then:

- its GraphQL API must describe the same graph as the definitions: asset keys, upstream edges,
  groups, descriptions, column schemas, freshness policies and check names; the partitions it
  reports materialized (and checked) are the days published in the warehouse, and the column
  lineage recorded on each model points at that model's own upstreams;
- headless Chromium (Debian's, driven by Playwright) shows the asset graph with its stage groups
  and every asset, the ``sessions`` page with its description, columns, freshness policy and a
  check's result per partition, and a ``nightly_job`` run with its status and steps.

Screenshots are kept in ``.test-artifacts/ui/`` (a failure adds ``FAILED-<page>.png``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / ".test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STARTUP_TIMEOUT_S = 120  # the code location loads every stage's definitions; a loaded CI machine is slow
UI_TIMEOUT_MS = 30_000

# tables of each stage whose partitions the UI must report as the warehouse's published days
PARTITIONED_TABLES = ["raw_events", "events", "sessions", "daily_active_users"]
# a gate of each of those stages, whose per-partition results must be there too
GATES = {
    "raw_events": "raw_reconciliation",
    "events": "events_reconciliation",
    "sessions": "session_id__be_unique",
}
ASSET_PAGE, CHECK = "sessions", "session_id__be_unique"


@dataclass(frozen=True)
class Webserver:
    url: str
    settings: PipelineSettings
    log: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _location_loaded(url: str) -> bool:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


@pytest.fixture(scope="module")
def webserver(pipeline: PipelineSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """``dagster-webserver -w workspace.yaml`` on the pipeline fixture's instance and data."""
    home = Path(pipeline.data_dir).parent / "dagster_home"  # where tests/conftest.py ran the pipeline
    assert (home / "dagster.yaml").exists(), f"the pipeline fixture left no instance in {home}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("webserver") / "webserver.log"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ANALYTICS_DATA_DIR": str(pipeline.data_dir),
        "ANALYTICS_DUCKDB_MEMORY_LIMIT": pipeline.duckdb_memory_limit,
        "ANALYTICS_DUCKDB_THREADS": str(pipeline.duckdb_threads),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    command = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port),
               "--read-only"]  # fmt: skip
    with log.open("wb") as out:
        # its own process group: the code server it spawns is stopped with it
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        started = time.monotonic()
        deadline = started + STARTUP_TIMEOUT_S
        while not _location_loaded(url):
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver not serving after {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        print(f"dagster-webserver serving {url} after {time.monotonic() - started:.1f}s (log: {log})")
        yield Webserver(url=url, settings=pipeline, log=log)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _days(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _days_with(ranges: list[dict[str, str]], status: str) -> list[str]:
    return sorted(day for r in ranges if r["status"] == status for day in _days(r["startKey"], r["endKey"]))


def _key(path: list[str]) -> str:
    return "/".join(path)


# --- a. the GraphQL API against the definitions ------------------------------------------------

ASSET_GRAPH = """
query AssetGraph {
  assetNodes {
    assetKey { path }
    groupName
    description
    isPartitioned
    dependencyKeys { path }
    internalFreshnessPolicy {
      __typename
      ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
    }
    metadataEntries {
      label
      ... on TableSchemaMetadataEntry { schema { columns { name } } }
    }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name
          blocking
          partitionStatuses {
            __typename
            ... on AssetCheckTimePartitionStatuses { ranges { status startKey endKey } }
          }
        }
      }
    }
    assetPartitionStatuses {
      __typename
      ... on TimePartitionStatuses { ranges { status startKey endKey } }
      ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
    }
    assetMaterializations(limit: 1) {
      partition
      metadataEntries {
        label
        ... on TableColumnLineageMetadataEntry {
          lineage { columnName columnDeps { assetKey { path } columnName } }
        }
      }
    }
  }
}
"""


def _column_names(metadata_entries: list[dict[str, Any]]) -> list[str]:
    for entry in metadata_entries:
        if entry["label"] == "dagster/column_schema":
            return [column["name"] for column in entry["schema"]["columns"]]
    return []


@pytest.mark.slow
def test_graphql_asset_graph_matches_the_definitions(webserver: Webserver) -> None:
    from analytics_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    served = {_key(node["assetKey"]["path"]): node for node in webserver.graphql(ASSET_GRAPH)["assetNodes"]}
    defined = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}

    # same assets, same upstream edges, same groups and descriptions
    assert sorted(served) == sorted(defined)
    served_edges = {
        (_key(up["path"]), name) for name, node in served.items() for up in node["dependencyKeys"]
    }
    defined_edges = {(up.to_user_string(), name) for name, node in defined.items() for up in node.parent_keys}
    assert served_edges == defined_edges
    assert {n: served[n]["groupName"] for n in served} == {n: defined[n].group_name for n in defined}
    assert {n: served[n]["description"] for n in served} == {n: defined[n].description for n in defined}
    assert {n: served[n]["isPartitioned"] for n in served} == {n: defined[n].is_partitioned for n in defined}

    # the same checks, blocking where the definitions say so
    served_checks = {
        (name, check["name"]): check["blocking"]
        for name, node in served.items()
        for check in node["assetChecksOrError"]["checks"]
    }
    defined_checks = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking
        for key in graph.asset_check_keys
    }
    assert served_checks == defined_checks

    # declared column schemas and freshness policies
    for name, node in defined.items():
        schema = node.metadata.get("dagster/column_schema")
        declared = [column.name for column in schema.columns] if schema else []
        assert _column_names(served[name]["metadataEntries"]) == declared, name
        policy, served_policy = node.freshness_policy, served[name]["internalFreshnessPolicy"]
        if policy is None:
            assert served_policy is None, name
        else:
            assert served_policy == {
                "__typename": "TimeWindowFreshnessPolicy",
                "failWindowSeconds": policy.fail_window.to_timedelta().total_seconds(),
                "warnWindowSeconds": policy.warn_window.to_timedelta().total_seconds(),
            }, name
    assert any(node.freshness_policy for node in defined.values()), "no freshness policy to show"

    # materialized partitions = the days published in the warehouse, and each stage's gate passed on them
    warehouse = Warehouse(webserver.settings.warehouse_path)
    for table in PARTITIONED_TABLES:
        published = warehouse.published_days(table)
        assert published, f"the pipeline fixture published no {table}"
        ranges = served[table]["assetPartitionStatuses"]["ranges"]
        assert _days_with(ranges, "MATERIALIZED") == published, (table, ranges)
        assert not _days_with(ranges, "FAILED"), (table, ranges)
    for table, check_name in GATES.items():
        (check,) = [c for c in served[table]["assetChecksOrError"]["checks"] if c["name"] == check_name]
        ranges = check["partitionStatuses"]["ranges"]
        assert _days_with(ranges, "SUCCEEDED") == warehouse.published_days(table), (table, check_name, ranges)
        assert not _days_with(ranges, "FAILED"), (table, check_name, ranges)

    # the column lineage each model recorded names its own upstreams' declared columns (a seed
    # table such as funnel_steps, assets/funnels.yml, is an external asset of the group: not built)
    models = [name for name, node in defined.items() if node.group_name == "models" and node.is_executable]
    assert models
    outside_the_graph: set[tuple[str, str]] = set()
    untraced: set[str] = set()
    for name in models:
        (latest,) = served[name]["assetMaterializations"]
        lineage = [e for e in latest["metadataEntries"] if e["label"] == "dagster/column_lineage"]
        assert lineage, f"{name}: no column lineage on its latest materialization"
        own_columns = set(_column_names(served[name]["metadataEntries"]))
        if not any(column["columnDeps"] for column in lineage[0]["lineage"]):
            untraced.add(name)
        for column in lineage[0]["lineage"]:
            assert column["columnName"] in own_columns, (name, column)
            for dep in column["columnDeps"]:
                upstream = _key(dep["assetKey"]["path"])
                if upstream not in served:
                    outside_the_graph.add((name, upstream))
                    continue
                assert (upstream, name) in defined_edges, (name, column["columnName"], upstream)
                declared = _column_names(served[upstream]["metadataEntries"])
                assert not declared or dep["columnName"] in declared, (name, upstream, dep["columnName"])
    # every table a model's lineage names is an asset of the graph (funnels reads funnel_steps),
    # and every model traces some column to its upstreams (retention's counts too)
    assert outside_the_graph == set()
    assert untraced == set()
    assert ("funnel_steps", "funnels") in defined_edges


# --- b. what a person sees in the browser ------------------------------------------------------

NIGHTLY_RUNS = """
query NightlyRuns {
  runsOrError(filter: {pipelineName: "nightly_job"}) {
    __typename
    ... on Runs { results { runId status tags { key value } stepStats { stepKey status } } }
  }
}
"""


@pytest.mark.slow
def test_the_ui_shows_groups_assets_checks_and_runs(webserver: Webserver) -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            f"Debian's chromium is not installed ({CHROMIUM} missing): `apt-get install -y chromium` "
            "(.ci/run does it) needs the package registry"
        )
    from playwright.sync_api import Page, expect, sync_playwright

    from analytics_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    groups = {node.group_name for node in assets.values()}
    assert {"ingest", "events", "models", "metrics"} <= groups
    assert {"sessions", "events", "daily_active_users"} <= set(assets)
    nightly_steps = set(defs.resolve_job_def("nightly_job").graph.node_names())
    warehouse = Warehouse(webserver.settings.warehouse_path)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    print(f"\nUI screenshots: {ARTIFACTS}")
    expect.set_options(timeout=UI_TIMEOUT_MS)

    def shot(page: Page, name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        # Dagster's "Join the community" dialog, shown once per instance: dismissed as a person would
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
        current = "start"
        try:
            # 1. the asset graph: the stage groups (collapsed, once their statuses are in), then every asset
            current = "asset-graph"
            page.goto(f"{webserver.url}/asset-groups")
            canvas = page.locator("[data-svg-viewport]")
            for group in groups:  # collapsed: one box per stage, ingest -> events -> models -> metrics
                expect(canvas.get_by_text(group, exact=True)).to_be_visible()
            expect(canvas.get_by_text(re.compile("fetching statuses"))).to_have_count(0)
            shot(page, "1-asset-graph-groups")
            page.keyboard.press("Alt+e")  # the graph's "Expand all groups"
            for name in assets:
                # an asset named like its group ("events") shows twice: the group's title and the asset
                expect(canvas.get_by_text(name, exact=True)).to_have_count(1 + (name in groups))
            shot(page, "2-asset-graph")

            # 2. one asset's page: what it is, its columns and freshness, then a check per partition
            current = "asset"
            node = assets[ASSET_PAGE]
            page.goto(f"{webserver.url}/assets/{ASSET_PAGE}")
            first_line = node.description.splitlines()[0]
            expect(page.get_by_text(first_line[:60])).to_be_visible()
            for column in node.metadata["dagster/column_schema"].columns:
                expect(page.get_by_role("row").filter(has_text=column.name).first).to_be_visible()
            fail_hours = round(node.freshness_policy.fail_window.to_timedelta().total_seconds() / 3600)
            expect(page.get_by_text(f"Fails if more than {fail_hours} hours")).to_be_visible()
            shot(page, "3-asset-overview")

            current = "asset-checks"
            page.get_by_role("tab", name="Checks", exact=True).click()
            expect(page.get_by_text(f"Checks ({len(node.check_keys)})")).to_be_visible()
            page.get_by_text(CHECK, exact=True).first.click()
            expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
            page.get_by_role("tab", name="Execution history", exact=True).click()
            published = warehouse.published_days(ASSET_PAGE)
            for day in published:
                row = page.get_by_role("row").filter(has_text=day)
                expect(row).to_contain_text("Passed")
                expect(row).to_contain_text("0 unexpected")
            shot(page, "4-asset-check-history")
            page.get_by_role("tab", name="Partitions", exact=True).and_(page.locator("button")).click()
            expect(page.get_by_text(f"Passed ({len(published)})", exact=True)).to_be_visible()
            expect(page.get_by_text("Failed (0)", exact=True)).to_be_visible()
            expect(page.get_by_text("Execution Failed (0)", exact=True)).to_be_visible()
            shot(page, "5-asset-check-partitions")

            # 3. a run: the nightly_job of the last day, found in the runs list, with its steps
            current = "run"
            runs = webserver.graphql(NIGHTLY_RUNS)["runsOrError"]["results"]
            last_day = warehouse.published_days("raw_events")[-1]
            (run,) = [r for r in runs if {"key": "dagster/partition", "value": last_day} in r["tags"]]
            steps = [s["stepKey"] for s in run["stepStats"]]
            assert run["status"] == "SUCCESS" and set(steps) == nightly_steps, run
            page.goto(f"{webserver.url}/runs?q%5B0%5D=job%3Anightly_job")
            # one line per arrival day, each named by the run's short id and its partition
            expect(page.get_by_role("link", name=re.compile(r"^run [0-9a-f]{8}$"))).to_have_count(len(runs))
            for day in warehouse.published_days("raw_events"):
                expect(page.get_by_text(f"partition: {day}", exact=True)).to_be_visible()
            shot(page, "6-runs")
            page.get_by_role("link", name=f"run {run['runId'][:8]}", exact=True).click()
            expect(page).to_have_url(re.compile(f"/runs/{run['runId']}"))
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            expect(page.get_by_role("link", name="nightly_job").first).to_be_visible()
            expect(page.get_by_text(f"partition: {last_day}")).to_be_visible()
            expect(page.get_by_text("RUN_SUCCESS")).to_be_visible()  # the event log's last line
            for step in steps:  # the first match is the step's bar in the run's timeline
                expect(page.get_by_text(step, exact=True).first).to_be_visible()
            expect(page.get_by_text("Errored (0)", exact=True)).to_be_visible()
            page.get_by_text(f"Succeeded ({len(steps)})", exact=True).click()  # lists them, with durations
            for step in steps:
                expect(page.get_by_text(re.compile(rf"^{step}\s*\d+:\d\d:\d\d$"))).to_be_visible()
            shot(page, "7-run")
        except Exception:
            shot(page, f"FAILED-{current}")
            print(f"webserver log: {webserver.log}")
            raise
        finally:
            browser.close()
