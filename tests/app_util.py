"""AppTest helpers shared by the page tests: every page runs through the real entry script
(app.py with st.navigation), opened the way a user or a shared link opens it; and the tiny scored
installation the Cohorts and Explain tests share."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.event_rows import copy_store

ROOT = Path(__file__).resolve().parents[1]
_BUILT: dict[str, tuple[Path, Path]] = {}


def tiny_app_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(database, models root) once per test process: 200 synthetic users over 5 days, a
    one-epoch 'fast' Transformer saved under <root>/saved/tiny and its scoring run."""
    if "data" not in _BUILT:
        from core.data.ingest import ingest_file
        from core.data.store import Store
        from core.insight.cohorts import score_dataset
        from core.modeling.labels import LabelSpec
        from core.modeling.pipeline import train_model
        from core.modeling.synth import SynthConfig, generate

        root = tmp_path_factory.mktemp("tiny_app")
        generate(SynthConfig(users=200, days=5, seed=3, n_categories=12, n_items=300), root / "synth.csv")
        saved = root / "saved"
        with Store(root / "db.duckdb") as store:
            ingest_file(store, root / "synth.csv", dataset="synth")
            spec = LabelSpec(horizon="1d", max_len=30, max_train_cutoffs=2)
            result = train_model(store, "synth", kind="transformer", spec=spec, epochs=1, preset="fast",
                                 out=saved / "tiny")
            score_dataset(store, result.model_dir, "synth")
        _BUILT["data"] = (root / "db.duckdb", saved)
    return _BUILT["data"]


def tiny_app_env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """For a test's ``app_env`` fixture: a private copy of the tiny database (tests may write)
    served by the app, with the tiny model's folder as the models root."""
    db, saved = tiny_app_data(tmp_path_factory)
    mine = tmp_path / "app.duckdb"
    copy_store(db, mine)
    point_app_at(monkeypatch, mine, saved)
    return mine


def point_app_at(monkeypatch: pytest.MonkeyPatch, db: Path, models: Path | None = None) -> None:
    """Serve the app from ``db`` (and ``models`` as its models root), outside demo mode."""
    monkeypatch.setenv("INTENTLENS_DB", str(db))
    monkeypatch.delenv("INTENTLENS_DEMO", raising=False)
    if models is not None:
        monkeypatch.setenv("INTENTLENS_MODELS", str(models))


def run_app(timeout: float, **query: str) -> AppTest:
    """app.py run once with ``query`` as the URL's query parameters; no exception shown."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def open_app_page(page: str, timeout: float, **query: str) -> AppTest:
    """app.py run with ``query``, then switched to ``page`` (e.g. ``pages/views/data.py``)."""
    at = run_app(timeout, **query)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def open_app_tab(at: AppTest, key: str, label: str, *, in_url: bool = False) -> AppTest:
    """Open tab ``label`` of the stateful ``st.tabs`` with ``key`` (only the open tab runs) and
    rerun. ``in_url``: the tabs are bound to the URL, so set ``?key=label`` too, as a shared link
    does (the default tab is left out of the URL, so the link alone cannot reopen that one)."""
    if in_url:
        at.query_params[key] = label
    at.session_state[key] = label
    at.run()
    assert not at.exception, at.exception
    return at
