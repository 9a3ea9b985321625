"""Project-wide promises: types checked, lint clean, CI runs the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_package_is_mypy_strict_clean() -> None:
    result = _run("mypy", "--no-incremental")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_ruff_clean() -> None:
    result = _run("ruff", "check", "guard", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("Run the tests:", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", quickstart, re.S)
    assert command is not None
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command.group(1).strip() in ci_lines


def test_training_tests_collect_without_torch() -> None:
    # torch is an optional extra: on a machine without it, the torch tests skip and the rest
    # must still import.  A None entry in sys.modules makes `import torch` fail even where
    # torch is installed, so this holds on every machine.
    code = (
        "import sys; sys.modules['torch'] = None; import pytest; "
        "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', "
        "'tests/training']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
