"""AppTest of the Explain page with a tiny Transformer: score, summary and timeline for a user,
the top-scored user shown at once, ?user= preselection, suggestions, a random user, the method
switch, the what-if editor, an unknown user, global drivers for a cohort built on the Cohorts page."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.data.store import Store
from tests.app_util import open_app_page, tiny_app_env

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@pytest.fixture
def app_env(tmp_path_factory, tmp_path, monkeypatch) -> Path:
    return tiny_app_env(tmp_path_factory, tmp_path, monkeypatch)


def top_user(db: Path, rank: int = 0) -> str:
    from core.data.store import Store

    with Store(db) as store:
        return store.fetchall("SELECT user_id FROM scores ORDER BY probability DESC, user_id")[rank][0]


def explain_page(**query) -> AppTest:
    return open_app_page("pages/views/explain.py", TIMEOUT, **query)


def specs(at: AppTest) -> dict[str, dict]:
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def values(data) -> list:
    """A plotly JSON array: a list, or plotly 6's typed array {"dtype", "bdata" (base64)}."""
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"])).tolist()
    return list(data)


def timeline_colors(at: AppTest) -> list[float]:
    spec = next(s for t, s in specs(at).items() if t.startswith("Timeline coloured by"))
    return [v for trace in spec["data"] for v in values(trace["marker"]["color"])]


def test_user_from_link_shows_score_summary_and_timeline(app_env):
    user = top_user(app_env)
    at = explain_page(user=user)
    assert at.text_input(key="explain_user").value == user
    figures = {m.label: m.value for m in at.metric}
    assert figures["Rank"].startswith("top ") and figures["Position"].startswith("#1 of ")
    assert float(figures["Score"]) > 0
    summary = at.markdown[[m.value.startswith("> ") for m in at.markdown].index(True)].value
    assert summary.startswith(f"> {float(figures['Score']):.2f}, top ")
    shown = specs(at)
    assert "Timeline coloured by integrated gradients" in shown
    assert "Attention from [CLS] to each event" in shown
    assert "Faithfulness: score drop when the top-k events are removed" in shown
    n_events = int(figures["Events"].replace(",", ""))
    assert len(timeline_colors(at)) == n_events
    assert at.query_params["user"] in (user, [user])
    assert not at.error


def test_method_switch_changes_the_coloured_values(app_env):
    at = explain_page(user=top_user(app_env))
    ig = timeline_colors(at)
    at.radio(key="explain_method").set_value("attention").run()
    assert "Timeline coloured by attention rollout" in specs(at)
    attention = timeline_colors(at)
    assert attention != ig and min(attention) >= 0          # rollout weights are non-negative
    at.radio(key="explain_method").set_value("shap").run()
    assert timeline_colors(at) not in (ig, attention)
    at.selectbox(key="explain_layer").set_value(0).run()
    at.selectbox(key="explain_head").set_value(1).run()
    heat = specs(at)["Attention from [CLS] to each event"]["data"][0]
    assert heat["y"] == ["layer 1 · head 2"]
    assert not at.exception


def test_unknown_user_shows_the_project_message(app_env):
    at = explain_page(user="nobody-here")
    assert not at.exception
    assert any("nobody-here" in e.value and "not in dataset" in e.value for e in at.error)
    assert "Global drivers" in [s.value for s in at.subheader]    # the rest of the page still renders


def test_the_page_opens_on_the_top_scored_user(app_env):
    """A demo opens on someone: the top of the scoring run, explained at once."""
    at = explain_page()
    top = top_user(app_env)
    assert at.text_input(key="explain_user").value == top
    figures = {m.label: m.value for m in at.metric}
    assert figures["Position"].startswith("#1 of ")
    assert any("top-scored user" in c.value for c in at.caption)
    assert any(t.startswith("Timeline coloured by") for t in specs(at))
    assert at.query_params["user"] in (top, [top])
    assert not any("Type a user id" in i.value for i in at.info)
    # a link names another user: it wins over the top one
    second = top_user(app_env, rank=1)
    at = explain_page(user=second)
    assert at.text_input(key="explain_user").value == second
    with Store(app_env) as store:
        stored = store.fetchone("SELECT probability FROM scores WHERE user_id = ?", [second])[0]
    assert float({m.label: m.value for m in at.metric}["Score"]) == pytest.approx(stored, abs=1e-3)
    assert not any("top-scored user" in c.value for c in at.caption)


def test_the_chosen_user_survives_a_visit_to_another_page(app_env):
    at = explain_page()
    second = top_user(app_env, rank=1)
    at.text_input(key="explain_user").set_value(second).run()
    at.switch_page("pages/views/data.py").run()
    at.query_params.pop("user", None)              # the other page's link has no ?user=
    at.switch_page("pages/views/explain.py").run()
    assert not at.exception, at.exception
    assert at.text_input(key="explain_user").value == second
    # clearing the box is respected too: no user, and the prompt says how to pick one
    at.text_input(key="explain_user").set_value("").run()
    assert any("Type a user id" in i.value for i in at.info)
    assert not any(m.label == "Score" for m in at.metric)


def test_typing_a_prefix_offers_suggestions_and_random_user(app_env):
    at = explain_page()
    user = top_user(app_env)
    at.text_input(key="explain_user").set_value(user[:-1]).run()
    suggestions = at.selectbox(key="explain_suggestion")
    assert user in suggestions.options and len(suggestions.options) <= 20
    suggestions.set_value(user).run()
    assert at.text_input(key="explain_user").value == user
    assert any(m.label == "Score" for m in at.metric)
    at.selectbox(key="explain_band").set_value("low").run()
    at.button(key="explain_random").click().run()
    drawn = at.text_input(key="explain_user").value
    assert drawn and drawn != user
    assert not at.exception


def test_what_if_removing_events_changes_the_score(app_env):
    at = explain_page(user=top_user(app_env))
    score = float({m.label: m.value for m in at.metric}["Score"])
    remove = at.multiselect(key="explain_remove")
    all_but_oldest = [int(label.split()[0].lstrip("#")) for label in remove.options[1:]]
    remove.set_value(all_but_oldest).run()
    figures = {m.label: m for m in at.metric}
    before, after = float(figures["Score now"].value), float(figures["What-if score"].value)
    assert before == pytest.approx(score, abs=1e-3)
    assert float(figures["What-if score"].delta) == pytest.approx(after - before, abs=2e-4)
    assert after != before                     # the top user's events matter
    at.toggle(key="explain_add").set_value(True).run()
    assert not at.exception, at.exception
    assert "What-if score" in {m.label for m in at.metric}


def test_global_drivers_for_everyone_and_for_a_cohort(app_env):
    at = explain_page()
    at.toggle(key="explain_drivers_on").set_value(True).run()
    assert not at.exception, at.exception
    behavior = specs(at)["By behaviour"]
    assert [t["name"] for t in behavior["data"]] == ["everyone"]
    assert any("no gradient-boosted member" in c.value for c in at.caption)
    # a cohort built on the Cohorts page is compared with everyone
    at.switch_page("pages/views/cohorts.py").run()
    at.number_input(key="cohort_top").set_value(30.0).run()
    at.switch_page("pages/views/explain.py").run()
    assert not at.exception, at.exception
    assert any("top 30 %" in c.value for c in at.caption)
    behavior = specs(at)["By behaviour"]
    assert [t["name"] for t in behavior["data"]] == ["everyone", "cohort"]


def test_gbdt_model_gets_tree_shap_and_no_timeline(app_env, tmp_path, monkeypatch):
    from core.data.store import Store
    from core.insight.cohorts import score_dataset
    from core.modeling.labels import LabelSpec
    from core.modeling.pipeline import train_model

    saved = tmp_path / "saved"
    with Store(app_env) as store:
        result = train_model(store, "synth", kind="gbdt", preset="fast", out=saved / "gbdt",
                             spec=LabelSpec(horizon="1d", max_len=30, max_train_cutoffs=2))
        score_dataset(store, result.model_dir, "synth")
    monkeypatch.setenv("INTENTLENS_MODELS", str(saved))
    at = explain_page(user=top_user(app_env))
    assert any("no per-event attribution" in i.value for i in at.info)
    features = next(d.value for d in at.dataframe if "shap" in d.value.columns)
    assert list(features.columns) == ["feature", "value", "shap"]
    assert not any(t.startswith("Timeline") for t in specs(at))
    at.toggle(key="explain_drivers_on").set_value(True).run()
    assert not at.exception, at.exception
    assert any("Transformer" in e.value for e in at.error)       # per-event drivers need one
    shown = specs(at)
    assert "SHAP values per feature (each dot one user)" in shown
    assert "Feature importance (mean |SHAP value|)" in shown
