"""Shared fixtures: a throw-away store per test, paths to the shipped samples, and a private
default database per test process."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.settings import ENV_DB, ENV_NAMES  # noqa: E402  (needs ROOT on sys.path)


@pytest.fixture(scope="session", autouse=True)
def private_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never touch the user's database, nor one in the repository: ``INTENTLENS_DB`` points
    into this process's own temp folder (each ``pytest -n`` worker has its own), and the other
    ``INTENTLENS_*`` variables of the caller's shell are cleared, so every test starts from the
    defaults. Tests that need another value set it with ``monkeypatch``."""
    db = tmp_path_factory.mktemp("default-db") / "intentlens.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        for name in ENV_NAMES:
            patch.delenv(name, raising=False)
        patch.setenv(ENV_DB, str(db))
        yield db


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module (as ``serve --threads 1`` runs; tiny models gain nothing
    from two, and CI shares its cores); the previous count is restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(tmp_path):
    from core.data.store import Store

    s = Store(tmp_path / "test.duckdb")
    yield s
    s.close()


@pytest.fixture
def samples() -> Path:
    return SAMPLES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a ``slow`` test run first, each in its own order. ``pytest -n 2 --dist loadfile``
    hands whole files to the workers in collection order (pytest.ini turns off xdist's own reordering,
    which put files with the most tests first); the model-quality check is one test that takes about
    9 minutes, and started last it ran alone while the other worker sat idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)
