"""RUNBOOK.md is executable: every command of its ```bash blocks runs, in order, and does what it says.

The commands are read from the file itself (so they cannot drift from what is tested), with
the placeholders the runbook assigns (``TABLE=... DAY=...``, ``VERSION=...``) replaced by
the values of a generated dataset: two days of traffic, events and models built, then a
bad publish planted the way a buggy release would make one (``events`` of the last day
rebuilt without a tenth of its rows, its counts written, the models rebuilt on it by the
sensor's plan). ``analytics-pipeline`` commands run in this process through ``cli.main``,
the console script's entry point (checked against ``pyproject.toml``); any other command
would run in a shell from the project root. Each command must exit 0, and each section of
the runbook is checked for what it promises:

* Notice it: ``summary`` says MISMATCH; the queries show the day lower than before.
* Find the version: ``--list`` names the published (bad) version and the one rollback restores.
* Roll back: the good bytes and counts are back; the bad version is kept.
* Rebuild: every model partition read from it is back to its bytes from before the bad
  publish, with no blocking failure.
* Verify: ``summary`` says OK, the query prints what it printed before the bad publish.
* Undo: ``--to`` the bad version puts it back, and the models rebuilt on it again.

A section with commands that this test does not know, or a placeholder it cannot fill,
fails the test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics_pipeline.cli import main
from analytics_pipeline.events.dedupe import dedupe_events_day
from analytics_pipeline.ingest.arrival_day import ingest_arrival_day
from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.loader import load_models
from analytics_pipeline.models.plan import plan_rebuilds
from analytics_pipeline.sample_data.generator import FaultRates, generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse, file_sha256, recording_run

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "RUNBOOK.md"
CLI = ".venv/bin/analytics-pipeline"
D1, D2 = "2025-03-10", "2025-03-11"
DOWNSTREAM = ("person_events", "event_counts", "persons", "sessions", "daily_active_users")
PLACEHOLDER = re.compile(r"\$\{?([A-Z_]+)\}?")
ASSIGNMENT = re.compile(r"^[A-Z_]+=\S*$")


@dataclass
class Section:
    title: str
    commands: list[str] = field(default_factory=list)


def runbook_sections(text: str) -> list[Section]:
    """Each ``## `` section with the lines of its ```bash blocks (comments and blanks dropped)."""
    sections = [Section("(preamble)")]
    fence: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence is None:
            if raw.startswith("## "):
                sections.append(Section(raw[3:].strip()))
        elif fence == "bash" and line and not line.startswith("#"):
            sections[-1].commands.append(line)
    return sections


@dataclass
class Scenario:
    settings: PipelineSettings
    warehouse: Warehouse
    good: dict[str, str]  # table -> sha256 of partition D2 before the bad publish
    bad: dict[str, str]  # ... and after it
    good_counts: dict[str, Any]
    bad_version: int
    dropped: int  # rows the bad publish lost
    before: dict[str, str]  # metric -> the result table its runbook query printed before the bad publish

    def sha(self, table: str) -> str:
        return file_sha256(self.warehouse.partition_file(table, D2))

    def shas(self, tables: tuple[str, ...]) -> dict[str, str]:
        return {t: self.sha(t) for t in tables}


def reconciliation(summary: str) -> str:
    return next(line for line in summary.splitlines() if line.startswith("Reconciliation:"))


def result_table(output: str) -> str:
    """A query's printed rows, without the line saying how long it took and whether it was cached."""
    return output.split("\n\n")[0]


def plant_bad_publish(settings: PipelineSettings, warehouse: Warehouse) -> tuple[int, int]:
    """A buggy release rebuilds events D2 without a tenth of its rows; the sensor rebuilds the models."""
    good = warehouse.partition_file("events", D2)
    staged = warehouse.staging_file("events", D2, uuid.uuid4().hex)
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{good}') WHERE hash(message_id) % 10 <> 0) "
            f"TO '{staged}' (FORMAT parquet, COMPRESSION zstd)"
        )
        row = con.execute(f"SELECT count(*) FROM read_parquet('{staged}')").fetchone()
    finally:
        con.close()
    counts = warehouse.read_manifest("events", D2)
    assert row is not None and counts is not None and row[0] < counts["events"]
    with recording_run("run-of-the-buggy-release"):
        version = warehouse.publish(staged, "events", D2, settings.versions_kept).version
    warehouse.write_manifest("events", D2, {**counts, "events": row[0]})
    specs = {spec.name: spec for spec in load_models(settings.models_path)}
    for run in plan_rebuilds(list(specs.values()), {D2}, warehouse):
        for name in run.models:
            build_model(settings, specs[name], run.partition)
    assert version is not None
    return version, int(counts["events"]) - int(row[0])


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Scenario:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(data_dir))  # what the runbook's commands use
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.chdir(tmp_path)
    settings = PipelineSettings()
    warehouse = Warehouse(settings.warehouse_path)
    generate(settings.landing_path, date.fromisoformat(D1), 2, 150, seed=21, faults=FaultRates(late=0.0))
    for day in (D1, D2):
        ingest_arrival_day(settings, day)
    for day in (D1, D2):
        dedupe_events_day(settings, day)
    specs = load_models(settings.models_path)
    for run in plan_rebuilds(specs, {D1, D2}, warehouse):
        for name in run.models:
            build_model(settings, next(s for s in specs if s.name == name), run.partition)
    tables = ("events", *DOWNSTREAM)
    good = {t: file_sha256(warehouse.partition_file(t, D2)) for t in tables}
    good_counts = warehouse.read_manifest("events", D2)
    assert good_counts is not None
    before = {}
    for metric in ("events", "event_counts_total"):
        argv = ["query", metric, "--grain", "day", "--start", D1, "--end", D2]
        assert main(argv) == 0
        before[metric] = result_table(capsys.readouterr().out)
    bad_version, dropped = plant_bad_publish(settings, warehouse)
    bad = {t: file_sha256(warehouse.partition_file(t, D2)) for t in tables}
    assert all(bad[t] != good[t] for t in ("events", "person_events", "event_counts"))
    return Scenario(settings, warehouse, good, bad, good_counts, bad_version, dropped, before)


# --- what each section promises ---------------------------------------------------------------

Outputs = list[tuple[list[str], str]]  # (argv, stdout) of the section's commands


def notice(s: Scenario, outputs: Outputs) -> None:
    summary = next(out for argv, out in outputs if argv[1:] == ["summary"])
    assert reconciliation(summary).endswith(f"-> MISMATCH (-{s.dropped})"), summary
    for argv, out in outputs:
        if argv[1] == "query":
            assert result_table(out) != s.before[argv[2]], f"the bad day does not show in {argv}"


def find_version(s: Scenario, outputs: Outputs) -> None:
    (_, listing), *_ = outputs
    lines = listing.splitlines()
    assert lines[0] == f"events {D2}: published v{s.bad_version}; `rollback` restores v{s.bad_version - 1}"
    published = next(line for line in lines if line.split()[:2] == [f"v{s.bad_version}", "published"])
    assert "run-of-the-buggy-release" in published


def roll_back(s: Scenario, outputs: Outputs) -> None:
    (_, out), *_ = outputs
    assert s.sha("events") == s.good["events"]
    assert s.warehouse.read_manifest("events", D2) == s.good_counts
    assert (
        f"v{s.bad_version} is kept; to undo: analytics-pipeline rollback events {D2} --to {s.bad_version}"
        in out
    )
    assert out.rstrip().endswith(f"rebuild them with: analytics-pipeline rollback events {D2} --rebuild-only")
    assert s.shas(DOWNSTREAM) == {t: s.bad[t] for t in DOWNSTREAM}  # not rebuilt yet


def rebuild(s: Scenario, outputs: Outputs) -> None:
    (_, out), *_ = outputs
    assert s.shas(DOWNSTREAM) == {t: s.good[t] for t in DOWNSTREAM}
    assert "FAILED" not in out and ", 0 blocking failures" in out.splitlines()[-1], out


def verify(s: Scenario, outputs: Outputs) -> None:
    summary = next(out for argv, out in outputs if argv[1:] == ["summary"])
    assert reconciliation(summary).endswith("-> OK"), summary
    for argv, out in outputs:
        if argv[1] == "query":
            assert result_table(out) == s.before[argv[2]]
    listing = next(out for argv, out in outputs if "--list" in argv)
    states = {line.split()[0]: line.split()[1] for line in listing.splitlines()[2:]}
    assert states == {f"v{s.bad_version}": "kept", f"v{s.bad_version - 1}": "published"}
    assert "(restored" in listing


def undo(s: Scenario, outputs: Outputs) -> None:
    assert s.shas(("events", *DOWNSTREAM)) == s.bad


CHECKS: dict[str, Callable[[Scenario, Outputs], None]] = {
    "1. Notice it": notice,
    "2. Find the version to restore": find_version,
    "3. Roll back": roll_back,
    "4. Rebuild what was built on it": rebuild,
    "5. Verify": verify,
    "7. Undo the rollback": undo,
}


def test_the_console_script_is_cli_main() -> None:
    """The commands run in process through ``cli.main``: what ``.venv/bin/analytics-pipeline`` runs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["analytics-pipeline"] == "analytics_pipeline.cli:main"


@pytest.mark.slow
def test_every_runbook_command_runs_and_does_what_the_runbook_says(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    sections = runbook_sections(RUNBOOK.read_text())
    with_commands = [s for s in sections if s.commands]
    assert [s.title for s in with_commands] == ["(preamble)", *CHECKS], "a section the test does not check"
    values = {
        "TABLE": "events", "DAY": D2, "START": D1, "END": D2, "VERSION": str(scenario.bad_version),
    }  # fmt: skip
    assigned: set[str] = set()
    ran = 0
    for section in with_commands:
        outputs: Outputs = []
        for line in section.commands:
            tokens = shlex.split(line, comments=True)
            if tokens and all(ASSIGNMENT.match(t) for t in tokens):  # NAME=example: the test's value instead
                names = {t.split("=", 1)[0] for t in tokens}
                assert names <= set(values), f"RUNBOOK.md assigns {names - set(values)}, unknown to this test"
                assigned |= names
                continue
            used = set(PLACEHOLDER.findall(line))
            assert used <= assigned, f"{line!r} uses {used - assigned} before RUNBOOK.md assigns it"
            argv = shlex.split(PLACEHOLDER.sub(lambda m: values[m[1]], line), comments=True)
            if argv[0] == CLI:
                code = main(argv[1:])
                captured = capsys.readouterr()
                output = captured.out
                assert code == 0, f"{line!r} exited {code}:\n{captured.out}\n{captured.err}"
            else:  # not expected today; run as the reader would
                done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
                output = done.stdout
                assert done.returncode == 0, (
                    f"{line!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
                )
            outputs.append((argv, output))
            ran += 1
        if section.title in CHECKS:
            CHECKS[section.title](scenario, outputs)
    assert assigned == set(values)
    assert ran >= 9
