"""Shared fixtures: a throw-away store per test, paths to the shipped samples."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests must never touch the user's real database.
os.environ.setdefault("INTENTLENS_DB", str(ROOT / "data" / "test-default.duckdb"))


@pytest.fixture
def store(tmp_path):
    from core.data.store import Store

    s = Store(tmp_path / "test.duckdb")
    yield s
    s.close()


@pytest.fixture
def samples() -> Path:
    return SAMPLES
