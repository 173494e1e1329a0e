"""AppTest of the Cohorts page on a tiny synthetic dataset, a tiny Transformer and its scoring run:
cut modes, filters, paging, the link to Explain, export with an audit stamp, demo mode."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.settings import get_settings
from tests.app_util import open_app_page, open_app_tab, tiny_app_env
from tests.event_rows import clear_scores

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@pytest.fixture
def app_env(tmp_path_factory, tmp_path, monkeypatch) -> Path:
    return tiny_app_env(tmp_path_factory, tmp_path, monkeypatch)


def cohorts_page(**query) -> AppTest:
    return open_app_page("pages/views/cohorts.py", TIMEOUT, **query)


def open_tab(at: AppTest, label: str) -> AppTest:
    return open_app_tab(at, "cohort_tab", label)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def users(at: AppTest) -> int:
    return int(metrics(at)["Users"].replace(",", ""))


def table(at: AppTest):
    return next(d.value for d in at.dataframe if "user_id" in d.value.columns)


def titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_cohort_page_shows_the_run_and_the_cohort(app_env):
    at = cohorts_page()
    assert at.sidebar.selectbox(key="model_picker").value.endswith("tiny")
    figures = metrics(at)
    total = int(at.session_state["cohort_spec"]["top_percent"])  # default: top 5 %
    assert total == 5 and users(at) > 0
    assert figures["Share of users"].endswith("%")
    assert "Precision at this cut" in figures and "Lift at this cut" in figures
    assert any("Filters are not applied" in c.value for c in at.caption)
    shown = titles(at)
    for title in ("Score distribution of the scoring run", "Top categories", "Behaviour mix", "Recency",
                  "Over-represented last-3 patterns"):
        assert title in shown
    assert "Expected value against the cut" not in shown           # hidden tabs do no work
    open_tab(at, "Value")
    assert "Expected value against the cut" in titles(at) and "Behaviour mix" not in titles(at)
    best = metrics(at)["Best cut"]
    assert best.endswith(" users")
    at.button(key="cohort_use_best").click().run()
    assert at.radio(key="cohort_mode").value == "threshold"
    assert at.query_params["cut"] in ("threshold", ["threshold"])     # the URL follows
    assert not at.error


def test_modes_and_a_filter_change_the_cohort_size(app_env):
    at = cohorts_page()
    at.number_input(key="cohort_top").set_value(50.0).run()
    half = users(at)
    at.radio(key="cohort_mode").set_value("threshold").run()
    at.number_input(key="cohort_threshold").set_value(0.0).run()
    everyone = users(at)
    assert everyone > half > 0
    assert metrics(at)["Share of users"] == "100.0%"
    at.radio(key="cohort_cart").set_value("yes").run()
    with_cart = users(at)
    assert 0 < with_cart < everyone
    at.multiselect(key="cohort_activity").set_value(["heavy"]).run()
    assert users(at) <= with_cart
    assert at.query_params["cart"] in ("yes", ["yes"])
    at.radio(key="cohort_mode").set_value("band").run()
    sizes = []
    for band in ("high", "medium", "low"):
        at.radio(key="cohort_cart").set_value("any").run()
        at.multiselect(key="cohort_activity").set_value([]).run()
        at.selectbox(key="cohort_band").set_value(band).run()
        sizes.append(users(at))
    assert sum(sizes) == everyone
    assert not at.exception


def test_query_params_reopen_the_same_cohort(app_env):
    at = cohorts_page(cut="threshold", threshold="0", cart="no")
    assert at.radio(key="cohort_mode").value == "threshold"
    assert at.radio(key="cohort_cart").value == "no"
    assert at.session_state["cohort_spec"]["open_cart"] is False


def test_user_table_pages_and_links_to_explain(app_env):
    at = cohorts_page()
    at.radio(key="cohort_mode").set_value("threshold").run()
    at.number_input(key="cohort_threshold").set_value(0.0).run()
    open_tab(at, "Users")
    at.selectbox(key="cohort_page_size").set_value(25).run()
    first = table(at)
    assert len(first) == 25
    assert first["score"].is_monotonic_decreasing
    assert first["explain"].iloc[0].startswith("explanations?") and "user=" in first["explain"].iloc[0]
    at.number_input(key="cohort_page").set_value(2).run()
    second = table(at)
    assert len(second) == 25 and not set(second["user_id"]) & set(first["user_id"])
    assert second["score"].max() <= first["score"].min()
    at.selectbox(key="cohort_sort").set_value("n_events").run()
    assert at.number_input(key="cohort_page").value == 1          # a new sort starts at page 1
    assert table(at)["n_events"].is_monotonic_decreasing
    chosen = at.selectbox(key="cohort_explain_user").value
    at.button(key="cohort_explain_go").click().run()
    assert not at.exception, at.exception
    assert at.query_params["user"] in (chosen, [chosen])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_has_the_audit_stamp(app_env, fmt, tmp_path):
    at = open_tab(cohorts_page(), "Export")
    at.radio(key="cohort_export_fmt").set_value(fmt).run()
    at.button(key="cohort_prepare_export").click().run()
    assert not at.exception, at.exception
    ready = at.session_state["cohort_export"]
    stamp = ready["stamp"]
    from models.artifact import load_card

    assert stamp["model_id"] == load_card(get_settings().models_root / "tiny")["model_id"]
    assert stamp["rows"] == users(at) and "top 5 %" in stamp["cut"]
    out = tmp_path / ready["name"]
    out.write_bytes(ready["data"])
    if fmt == "csv":
        text = out.read_text()
        assert text.startswith(f"# model_id: {stamp['model_id']}")
        assert "# sql: " in text and "\nuser_id,category,score" in text
    else:
        import pyarrow.parquet as pq

        meta = pq.read_metadata(out).metadata
        assert json.loads(meta[b"intentlens.audit"])["rows"] == stamp["rows"]
        assert pq.read_table(out).num_rows == stamp["rows"]
    assert json.loads(ready["sidecar"])["dataset_sha256"] == stamp["dataset_sha256"]
    assert any(el.proto.label.startswith("Download cohort-") for el in at.get("download_button"))


def test_demo_mode_hides_rescore(app_env, monkeypatch):
    at = cohorts_page()
    assert any(b.key == "cohort_rescore" for b in at.button)
    monkeypatch.setenv("INTENTLENS_DEMO", "1")
    at = cohorts_page()
    assert not any(b.key == "cohort_rescore" for b in at.button)
    assert users(at) > 0                                 # the existing run is still shown


def test_rescore_runs_in_the_background(app_env):
    from core.data.store import Store

    with Store(app_env) as store:
        clear_scores(store)
    at = cohorts_page()
    assert any("has not scored" in i.value for i in at.info)
    at.button(key="cohort_rescore").click().run()
    assert not at.exception, at.exception
    job_id = at.session_state["cohort_score_job"]
    from pages.shared import cached

    state = cached.get_jobs().wait(job_id, timeout=TIMEOUT)
    assert state.status == "done", state.error
    at.run()
    at.run()
    assert not at.exception, at.exception
    assert users(at) > 0


def test_demand_outlook_explains_that_it_needs_a_category_scope_model(app_env):
    at = open_tab(cohorts_page(), "Demand outlook")
    assert any("--scope category" in e.value for e in at.error)
    assert "Expected purchasers per category" not in " ".join(titles(at))


def test_demand_outlook_of_a_category_scope_model(app_env, tmp_path, monkeypatch):
    """A small category-scope GBDT scores the tiny dataset: the tab draws expected purchasers per
    category with intervals beside the last horizon's buyers, and its table holds the same numbers
    as core's outlook."""
    from core.data.store import Store
    from core.insight.cohorts import score_dataset
    from core.insight.outlook import outlook
    from core.modeling.labels import LabelSpec
    from core.modeling.pipeline import train_model
    from tests.app_util import point_app_at

    root = tmp_path / "models"
    with Store(app_env) as store:
        spec = LabelSpec(horizon="1d", scope="category", max_len=30, max_train_cutoffs=2)
        model = train_model(store, "synth", kind="gbdt", spec=spec, preset="fast", out=root / "cat").model_dir
        score_dataset(store, model, "synth")
        expected = outlook(store, model, "synth", top=20).frame
    point_app_at(monkeypatch, app_env, root)
    at = open_tab(cohorts_page(), "Demand outlook")
    assert not at.error
    spec_json = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                     if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Expected purchasers"))
    assert spec_json["data"][0]["x"] == expected["category"].tolist()
    shown = next(d.value for d in at.dataframe if "last_actual" in d.value.columns)
    assert shown["category"].tolist() == expected["category"].tolist()
    assert shown["expected"].tolist() == pytest.approx(expected["expected"].tolist())
    assert shown["high"].tolist() == expected["high"].tolist()
    assert any("Poisson-binomial" in c.value for c in at.caption)


def test_offers_column_and_the_likely_to_buy_filter(app_env):
    """The tiny model predicts any purchase: its offers are each user's most-touched categories,
    marked as coming from events; the "Likely to buy in" filter keeps the users offered a category."""
    from core.insight.cohorts import OFFER_COUNT
    from pages.shared import cached

    at = cohorts_page(cut="threshold", threshold="0")
    everyone = users(at)
    open_tab(at, "Users")
    rows = table(at)
    assert "offers" in rows.columns and rows["offers"].str.endswith("(from events)").all()
    first = rows.iloc[0]
    store = cached.get_store()          # the process-wide store AppTest's run opened
    (cats,) = store.fetchone("SELECT categories FROM user_stats WHERE dataset = 'synth' AND user_id = ?",
                             [first["user_id"]])
    assert first["offers"] == ", ".join(list(cats)[:OFFER_COUNT]) + " (from events)"
    category = cats[0]
    at.multiselect(key="cohort_likely").set_value([category]).run()
    assert not at.exception, at.exception
    kept = users(at)
    (expected,) = store.fetchone("SELECT count(*) FROM user_stats WHERE dataset = 'synth' "
                                 "AND list_contains(categories[1:?], ?)", [OFFER_COUNT, category])
    assert 0 < kept == expected < everyone
    assert at.query_params["likely"] in (category, [category])
    assert all(category in text for text in table(at)["offers"])
