"""``analytics-pipeline drill NAME | --all | --list``: run drills on a sandbox and print the verdicts."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from analytics_pipeline.drills.runner import DrillResult, Echo, format_table, run_drill
from analytics_pipeline.drills.sandbox import DRILL_EVENTS_PER_DAY, make_sandbox
from analytics_pipeline.drills.scenarios import DRILLS


def run_drills(
    names: list[str],
    data_dir: Path | None = None,
    events_per_day: int = DRILL_EVENTS_PER_DAY,
    root: Path | None = None,
    echo: Echo = print,
) -> list[DrillResult]:
    """Each drill on its own copy of one prepared sandbox (copied from ``data_dir`` or generated)."""
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise KeyError(f"no drill named {', '.join(unknown)} (known: {', '.join(DRILLS)})")
    root = Path(root or tempfile.mkdtemp(prefix="analytics-drills-"))
    source = f"a copy of {data_dir}" if data_dir else f"generated ({events_per_day} events a day)"
    echo(f"sandbox under {root}: {source}")
    base = make_sandbox(root / "base", data_dir, events_per_day, echo=echo)
    base.close()
    echo(f"drills act on {', '.join(base.days)}")
    results = []
    for name in names:
        sandbox = base.copy(root / name)
        try:
            results.append(run_drill(DRILLS[name], sandbox, echo))
        finally:
            sandbox.close()
    return results


def cmd_drill(args: argparse.Namespace) -> int:
    if args.list:
        width = max(len(name) for name in DRILLS)
        for drill in DRILLS.values():
            print(f"{drill.name:<{width}}  {drill.promise}")
        return 0
    names = list(DRILLS) if args.all else args.names
    if not names:
        print("analytics-pipeline drill: name a drill, or --all (--list shows them)", file=sys.stderr)
        return 2
    root = Path(args.sandbox) if args.sandbox else Path(tempfile.mkdtemp(prefix="analytics-drills-"))
    try:
        results = run_drills(names, Path(args.data_dir) if args.data_dir else None, args.events_per_day, root)
    except KeyError as unknown:
        print(f"analytics-pipeline drill: {unknown.args[0]}", file=sys.stderr)
        return 2
    finally:
        if not args.keep and not args.sandbox:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(format_table(results))
    if args.keep or args.sandbox:
        print(f"sandboxes kept under {root}")
    return 0 if all(r.passed for r in results) else 1


def add_parser(sub: Any) -> None:
    """The ``drill`` subcommand (the global ``--data-dir`` is the directory copied into the sandbox)."""
    drill = sub.add_parser(
        "drill",
        help="run failure drills on a sandbox copy of the data (--list shows them)",
        description="Inject a fault into a sandbox copy of --data-dir (or a small generated one), recover "
        "through the real pipeline, check the promise and print pass/fail with the time to recover.",
    )
    drill.add_argument("names", nargs="*", metavar="NAME", help="drills to run (see --list)")
    drill.add_argument("--all", action="store_true", help="run every drill")
    drill.add_argument("--list", action="store_true", help="list the drills and their promises")
    drill.add_argument(
        "--events-per-day", type=int, default=DRILL_EVENTS_PER_DAY, help="size of a generated sandbox's days"
    )
    drill.add_argument("--sandbox", help="where to build the sandboxes (kept); default a temporary directory")
    drill.add_argument("--keep", action="store_true", help="keep the temporary sandboxes for inspection")
    drill.set_defaults(func=cmd_drill)
