"""Running a drill: time from the fault to the recovery, the checks it made, a pass or a fail.

A drill is a function ``(sandbox, probe) -> None``: it injects its fault (``probe.fault``),
does what an operator or the pipeline does to recover (``probe.recovered`` when the promise
should hold again) and checks the promise (``probe.check``). It passes only when it reached
its recovery, made at least one check and every check held: a drill that stops early or
checks nothing fails.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from analytics_pipeline.drills.sandbox import Sandbox

Echo = Callable[[str], None]
# a test seam: called with the sandbox right after the recovery, before the checks that follow it
AfterRecovery = Callable[[Sandbox], None]


@dataclass
class DrillResult:
    """One drill's verdict, its measured time to recover and the evidence behind it."""

    name: str
    passed: bool
    recovery_s: float | None  # from the fault to the recovery; None: it never recovered
    evidence: list[str] = field(default_factory=list)


class Probe:
    """What a drill records: the fault and recovery times, and each check with its outcome."""

    def __init__(self, sandbox: Sandbox, echo: Echo, after_recovery: AfterRecovery | None = None) -> None:
        self.sandbox = sandbox
        self.echo = echo
        self.after_recovery = after_recovery
        self.evidence: list[str] = []
        self.failures: list[str] = []
        self.checks = 0
        self.fault_at: float | None = None
        self.recovered_at: float | None = None

    def note(self, line: str) -> None:
        self.evidence.append(line)
        self.echo(f"  {line}")

    def fault(self, what: str) -> None:
        self.fault_at = time.monotonic()
        self.note(f"fault: {what}")

    def recovered(self, what: str) -> None:
        self.recovered_at = time.monotonic()
        self.note(f"recovered: {what} ({self.recovery_s:.1f} s after the fault)")
        if self.after_recovery is not None:
            self.after_recovery(self.sandbox)

    @property
    def recovery_s(self) -> float | None:
        if self.fault_at is None or self.recovered_at is None:
            return None
        return self.recovered_at - self.fault_at

    def check(self, ok: bool, what: str) -> bool:
        self.checks += 1
        self.note(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)
        return ok


DrillFunction = Callable[[Sandbox, Probe], None]


@dataclass(frozen=True)
class Drill:
    name: str
    promise: str  # what must hold, in one line (``drill --list``)
    run: DrillFunction


def run_drill(
    drill: Drill, sandbox: Sandbox, echo: Echo = print, after_recovery: AfterRecovery | None = None
) -> DrillResult:
    """Run one drill on ``sandbox`` (which it changes); an exception is a failed drill, not a crash."""
    echo(f"drill {drill.name}: {drill.promise}")
    probe = Probe(sandbox, echo, after_recovery)
    try:
        drill.run(sandbox, probe)
    except Exception as error:  # noqa: BLE001 - a drill that raises has failed; say where
        probe.failures.append(f"raised {type(error).__name__}: {error}")
        probe.note(f"FAIL raised {type(error).__name__}: {error}")
        probe.note(traceback.format_exc(limit=4).strip().replace("\n", " | "))
    if probe.recovered_at is None:
        probe.failures.append("never reached its recovery")
    if probe.checks == 0:
        probe.failures.append("made no check")
    passed = not probe.failures
    echo(f"drill {drill.name}: {'PASS' if passed else 'FAIL'}")
    return DrillResult(drill.name, passed, probe.recovery_s, probe.evidence)


def format_table(results: list[DrillResult]) -> str:
    """The verdicts as the CLI prints them."""
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'drill':<{width}}  result  recovery"]
    for r in results:
        recovery = f"{r.recovery_s:.1f} s" if r.recovery_s is not None else "-"
        lines.append(f"{r.name:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {recovery}")
    return "\n".join(lines)
