"""Style and types as part of the test run: ruff over the code, tests and benches, mypy over the
application code, both with the settings in pyproject.toml. Deselect with ``-m "not lint"``.

The two planted-file tests prove the settings are live: a config that silently stopped reading
pyproject.toml (or a rule set that lost its rules) would let the tree pass while checking nothing.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF_PATHS = ["core", "models", "pages", "app.py", "tests", "bench"]

pytestmark = pytest.mark.lint


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(result.args[2:])}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def _require_clean(result: subprocess.CompletedProcess[str]) -> None:
    """Fail with the tool's own report (file:line: code message), not a Python traceback."""
    if result.returncode != 0:
        pytest.fail(_report(result), pytrace=False)


def test_ruff_is_clean() -> None:
    _require_clean(_run("ruff", "check", "--no-cache", "--output-format", "concise", *RUFF_PATHS))


def test_mypy_is_clean() -> None:
    result = _run("mypy")                      # files and flags from [tool.mypy] in pyproject.toml
    _require_clean(result)
    assert "Success: no issues found" in result.stdout, _report(result)


def test_ruff_settings_catch_planted_faults(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\n"                  # F401 twice, I001
                   f"VALUE = {'1 + ' * 40}1 \n\n\n"            # E501 (longer than 120), W291
                   "def f(items=[]):\n    return items\n",     # B006
                   encoding="utf-8")
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise",
                  "--config", str(ROOT / "pyproject.toml"), str(bad))
    assert result.returncode == 1, _report(result)
    codes = {line.split(" ")[1] for line in result.stdout.splitlines() if line.startswith(str(bad))}
    assert {"F401", "I001", "E501", "W291", "B006"} <= codes, _report(result)


def test_mypy_settings_catch_planted_faults(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def untyped(x):\n    return x\n\n\n"       # no-untyped-def
                   "def wrong() -> int:\n    return 'text'\n",  # return-value
                   encoding="utf-8")
    result = _run("mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
                  str(bad), cwd=tmp_path)
    assert result.returncode == 1, _report(result)
    assert "[no-untyped-def]" in result.stdout, _report(result)
    assert "[return-value]" in result.stdout, _report(result)
