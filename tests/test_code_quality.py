"""The package stays lint-clean, formatted and type-checked (ruff and mypy from the test extras)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_lint_and_format() -> None:
    lint = _run("ruff", "check", "analytics_pipeline", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout[-3000:]
    formatted = _run("ruff", "format", "--check", "analytics_pipeline", "tests", "benchmarks")
    assert formatted.returncode == 0, formatted.stdout[-3000:]


def test_mypy_on_the_package() -> None:
    typed = _run("mypy")
    assert typed.returncode == 0, typed.stdout[-3000:]
