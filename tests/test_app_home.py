"""AppTest of the entry script and the Home page: first start, key figures, model card, links,
the page registry and demo mode."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.runtime import samples
from models.artifact import FORMAT, SCHEMA_VERSION
from pages.shared import display, registry
from tests import app_util

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
TIMEOUT = 90


@pytest.fixture
def empty_db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "app.duckdb"
    app_util.point_app_at(monkeypatch, path)
    return path


@pytest.fixture
def db(empty_db) -> Path:
    with Store(empty_db) as store:
        ingest_file(store, SAMPLES / "taobao" / "UserBehavior_head.csv", dataset="head")
    return empty_db


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "saved"
    root.mkdir()
    monkeypatch.setenv("INTENTLENS_MODELS", str(root))
    monkeypatch.setattr(samples, "DEMO_MODELS_ROOT", root)
    return root


def write_card(root: Path, name: str, **card) -> None:
    (root / name).mkdir()
    full = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **card}
    (root / name / "card.json").write_text(json.dumps(full))


def metric_row(at: AppTest, label: str):
    """The block holding the metric ``label``: (its proto, the labels of the metrics in it)."""
    def walk(node):
        for child in getattr(node, "children", {}).values():
            labels = [c.label for c in getattr(child, "children", {}).values() if c.type == "metric"]
            if label in labels:
                return child.proto, labels
            found = walk(child)
            if found:
                return found
        return None
    return walk(at.main)


def run_app(**query) -> AppTest:
    return app_util.run_app(TIMEOUT, **query)


def test_first_start_loads_the_shipped_data_without_user_action(empty_db, models_dir):
    at = run_app()
    picker = at.sidebar.selectbox(key="dataset_picker")
    names = [o.split(" · ")[0] for o in picker.options]
    assert {"taobao_head", "rees46", "tianchi_mobile"} <= set(names)
    expected = "demo" if "demo" in names else names[0]     # the synthetic demo log comes first
    assert picker.value == expected
    assert not at.error
    with Store(empty_db) as store:
        assert store.fetchone("SELECT count(*) FROM events")[0] > 10_000


def test_demo_mode_first_start_still_shows_the_shipped_data(empty_db, models_dir, monkeypatch):
    """Demo mode forbids user changes, not the installation's defaults: stakeholders see data."""
    monkeypatch.setenv("INTENTLENS_DEMO", "1")
    at = run_app()
    with Store(empty_db) as store:
        assert "demo" in store.dataset_names()
    assert not at.error


def test_home_shows_dataset_figures_and_links(db, models_dir):
    at = run_app()
    assert at.title[0].value == "IntentLens"
    figures = {m.label: m.value for m in at.metric}
    assert figures["Users"] == "43" and figures["Events"] == "4,321"
    assert any("2017-09-11 → 2017-12-03" in c.value for c in at.caption)
    links = [link.proto.label for link in at.get("page_link")]
    assert "Data" in links and "Home" not in links
    assert any("No trained model yet" in i.value for i in at.info)


def test_home_shows_the_current_model_card(db, models_dir):
    write_card(models_dir, "head-gbdt-1d", model_id="head-gbdt-1d", kind="gbdt", dataset="head",
               label={"horizon": "1d"}, metrics={"pr_auc": {"value": 0.3125, "low": 0.2, "high": 0.4}})
    at = run_app()
    figures = {m.label: m.value for m in at.metric}
    assert figures["Model kind"] == "gbdt"
    assert any("Gradient-boosted trees" in c.value for c in at.caption)   # the kind in words
    assert figures["Validation PR-AUC"] == "0.312"
    assert figures["Horizon"] == "1d"
    model = at.sidebar.selectbox(key="model_picker")
    assert model.value.endswith("head-gbdt-1d")
    assert at.query_params["model"] == "head-gbdt-1d"
    assert not at.warning


def test_model_of_another_dataset_is_flagged(db, models_dir):
    write_card(models_dir, "other", model_id="other", kind="transformer", dataset="elsewhere",
               metrics={"pr_auc": 0.5})
    write_card(models_dir, "broken", model_id="broken")
    (models_dir / "broken" / "card.json").write_text("{not json")
    at = run_app()
    assert any("trained on **elsewhere**" in w.value for w in at.warning)
    # "transformer" in full: the figures sit in a wrapping row of content-wide metrics, not in
    # fixed thirds of the column (which cut it to "transf…" in a browser)
    assert {m.label: m.value for m in at.metric}["Model kind"] == "transformer"
    block, labels = metric_row(at, "Model kind")
    assert labels == ["Model kind", "Validation PR-AUC", "Horizon"]
    assert block.flex_container.wrap and block.flex_container.direction == block.flex_container.HORIZONTAL
    assert len(at.sidebar.selectbox(key="model_picker").options) == 1   # the unreadable card is left out


def test_every_registered_page_renders(db, models_dir):
    at = run_app()
    for spec in registry.available_pages():
        at.switch_page(spec.path).run()
        assert not at.exception, (spec.path, at.exception)
        assert at.sidebar.selectbox(key="dataset_picker").value == "head"   # app shell ran too


def test_page_registry_is_consistent():
    # Every page script is registered; nothing but packages sits directly in pages/ (Streamlit's
    # legacy router would list it in the sidebar and serve it at /<stem> without app.py).
    assert sorted(p.name for p in (ROOT / "pages").glob("*.py")) == ["__init__.py"]
    stems = {p.stem for p in (ROOT / "pages" / "views").glob("*.py")} - {"__init__"}
    registered = {Path(spec.path).stem for spec in registry.PAGES}
    assert stems == registered, f"pages/views files not in PAGES: {stems - registered}"
    assert [spec.title for spec in registry.PAGES][:2] == ["Home", "Data"]
    assert len({spec.url_path for spec in registry.PAGES}) == len(registry.PAGES)
    assert registry.page_path("explain") == "pages/views/explain.py"
    with pytest.raises(KeyError, match="common"):
        registry.page_path("common")


def test_formatters():
    assert display.fmt_int(1234567) == "1,234,567"
    assert display.fmt_int(None) == "–"
    assert display.fmt_pct(0.1234) == "12.3%"
    assert display.fmt_pct(0.5, digits=0) == "50%"
    assert display.fmt_span("2017-11-25 00:00", "2017-12-03 12:00") == "2017-11-25 → 2017-12-03 (8.5 days)"
    assert display.fmt_span("2017-11-26 01:00", "2017-11-26 03:10").endswith("(2.2 hours)")
    assert [display.fmt_seconds(s) for s in (None, 42, 125, 3900)] == ["–", "42 s", "2 min 05 s", "1 h 05 min"]


def test_home_names_the_test_window_for_a_model_measured_on_it(db, models_dir):
    write_card(models_dir, "head-gbdt-1d", model_id="head-gbdt-1d", kind="gbdt", dataset="head",
               label={"horizon": "1d"}, metrics_split="test",
               metrics={"pr_auc": {"value": 0.2875, "low": 0.2, "high": 0.4}})
    at = run_app()
    figures = {m.label: m.value for m in at.metric}
    assert figures["PR-AUC"] == "0.287" and "Validation PR-AUC" not in figures
    assert "test window" in next(m.help for m in at.metric if m.label == "PR-AUC")
