"""AppTest of the Performance page through app.py: one cutoff (a probability or the top X %)
drives the metrics table and the charts, a link reopens the same cutoff, two models compare, an
ensemble shows its members, and the empty and broken states say what to do.

The expensive part runs once per module: the demo log in a temp database, a small GBDT and a
small ensemble (one Transformer epoch) trained on it into a temp models folder.
"""
from __future__ import annotations

import base64
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.modeling import metrics
from core.modeling.labels import LabelSpec
from core.modeling.pipeline import load_evaluation, train_model
from tests.app_util import open_app_page, point_app_at

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 90
SPEC = LabelSpec(horizon="1d", max_train_cutoffs=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("performance-page")
    db, saved = folder / "app.duckdb", folder / "saved"
    with Store(db) as store:
        ingest_file(store, ROOT / "sample_data" / "demo" / "events.csv.gz", dataset="demo")
        train_model(store, "demo", kind="gbdt", spec=SPEC, preset="fast", out=saved / "demo-gbdt-1d")
        train_model(store, "demo", kind="ensemble", spec=SPEC, preset="fast", epochs=1,
                    out=saved / "demo-ensemble-1d")
    return db, saved


@pytest.fixture
def models(trained, tmp_path, monkeypatch) -> Path:
    db, saved = trained
    root = tmp_path / "saved"
    shutil.copytree(saved, root)
    point_app_at(monkeypatch, db, root)
    return root


def performance_page(**query) -> AppTest:
    return open_app_page("pages/views/performance.py", TIMEOUT, **query)


def pick_model(at: AppTest, path: Path) -> AppTest:
    at.sidebar.selectbox(key="model_picker").set_value(str(path)).run()
    assert not at.exception, at.exception
    return at


def specs(at: AppTest) -> dict[str, dict]:
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"].get("title", {}).get("text", "")] = spec
    return out


def confusion_cells(at: AppTest, model: str) -> list[list[float]]:
    return specs(at)[f"Confusion matrix · {model}"]["data"][0]["z"]


def array(values) -> np.ndarray:
    """A trace's values from the figure JSON (plotly writes numeric arrays as base64 typed arrays)."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def shown(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def metrics_table(at: AppTest):
    return next(d.value for d in at.dataframe if "at the cutoff" in d.value.columns)


def test_the_page_draws_every_view_of_the_model(models):
    at = pick_model(performance_page(), models / "demo-gbdt-1d")
    titles = set(specs(at))
    for title in ("Precision-recall curve", "ROC curve", "Confusion matrix · demo-gbdt-1d",
                  "Scores by true label", "Lift by top share of users", "Cumulative gains",
                  "Quality by segment", "Reliability diagram"):
        assert title in titles, titles
        assert specs(at)[title]["data"], title               # real traces, not an empty state
    table = metrics_table(at)
    assert list(table["metric"]) == ["ROC-AUC", "PR-AUC", "log-loss", "Brier", "ECE", "accuracy",
                                     "precision", "recall", "F1"]
    rows = load_evaluation(models / "demo-gbdt-1d")
    expected = metrics.summary_metrics(rows["label"], rows["score"], n_boot=0)
    roc = table.set_index("metric").loc["ROC-AUC"]
    assert roc["demo-gbdt-1d"] == pytest.approx(expected["roc_auc"]["value"])
    for _, row in table.iterrows():                          # each interval holds its value
        low, high = (float(x) for x in row["demo-gbdt-1d 95% CI"].strip("[]").split(", "))
        assert low - 1e-9 <= row["demo-gbdt-1d"] <= high + 1e-9, row["metric"]
    segments = next(d.value for d in at.dataframe if "segment_type" in d.value.columns)
    assert set(segments["segment_type"]) == {"activity", "sequence length", "top category"}
    for kind, part in segments.groupby("segment_type"):
        assert part["rows"].sum() == len(rows), kind          # every row in one segment per type
    assert not at.error
    for widget in [*at.selectbox, *at.radio, *at.slider]:
        assert widget.help, widget.label


def test_moving_the_cutoff_changes_the_confusion_matrix(models):
    at = pick_model(performance_page(), models / "demo-gbdt-1d")
    rows = load_evaluation(models / "demo-gbdt-1d")
    at.slider(key="perf_cut_prob").set_value(0.2).run()
    low = confusion_cells(at, "demo-gbdt-1d")
    at.slider(key="perf_cut_prob").set_value(0.6).run()
    assert not at.exception
    high = confusion_cells(at, "demo-gbdt-1d")
    assert low != high
    for threshold, cells in ((0.2, low), (0.6, high)):
        counts = metrics.confusion(rows["label"], rows["score"], threshold).set_index("outcome")["count"]
        assert cells == [[counts["TP"], counts["FN"]], [counts["FP"], counts["TN"]]]
    assert high[0][0] + high[1][0] < low[0][0] + low[1][0]        # fewer flagged at 0.6
    assert at.query_params["cutoff"] == "0.6"
    assert shown(at)["Cutoff probability"] == "0.600"
    # The shares view shows the same cells as shares of all rows.
    at.segmented_control(key="perf_confusion_view").set_value("shares").run()
    shares = confusion_cells(at, "demo-gbdt-1d")
    assert shares[0][0] == pytest.approx(high[0][0] / len(rows))


def test_top_share_mode_flags_that_share_and_is_in_the_link(models):
    at = pick_model(performance_page(), models / "demo-gbdt-1d")
    rows = load_evaluation(models / "demo-gbdt-1d")
    at.radio(key="perf_cut_mode").set_value("top").run()
    at.slider(key="perf_cut_top").set_value(10.0).run()
    assert not at.exception
    threshold = metrics.threshold_for_top_fraction(rows["score"], 0.10)
    flagged = int((rows["score"] >= threshold).sum())
    assert shown(at)["Users flagged"] == f"{flagged:,}"
    assert math.ceil(0.1 * len(rows)) <= flagged <= 0.12 * len(rows)
    cells = confusion_cells(at, "demo-gbdt-1d")
    assert cells[0][0] + cells[1][0] == flagged
    lift = specs(at)["Lift by top share of users"]
    assert any(s.get("x0") == pytest.approx(flagged / len(rows)) for s in lift["layout"]["shapes"])
    assert at.query_params["cutoff"] == "top10"


def test_a_link_reopens_the_same_cutoff(models):
    at = pick_model(performance_page(cutoff="top25"), models / "demo-gbdt-1d")
    assert at.radio(key="perf_cut_mode").value == "top"
    assert at.slider(key="perf_cut_top").value == 25.0
    at = pick_model(performance_page(cutoff="0.35"), models / "demo-gbdt-1d")
    assert at.radio(key="perf_cut_mode").value == "probability"
    assert at.slider(key="perf_cut_prob").value == pytest.approx(0.35)
    at = pick_model(performance_page(cutoff="junk"), models / "demo-gbdt-1d")
    assert at.radio(key="perf_cut_mode").value == "probability"  # a bad link falls back


def test_comparing_two_models(models):
    at = pick_model(performance_page(), models / "demo-gbdt-1d")
    at.selectbox(key="perf_compare").set_value(str(models / "demo-ensemble-1d")).run()
    assert not at.exception, at.exception
    pr = specs(at)["Precision-recall curve"]
    lines = [t["name"] for t in pr["data"] if t.get("mode") == "lines"]
    assert lines == ["demo-gbdt-1d", "demo-ensemble-1d"]
    markers = [t for t in pr["data"] if t.get("mode") == "markers"]
    assert len(markers) == 2                                     # the cutoff on each curve
    assert "Confusion matrix · demo-ensemble-1d" in specs(at)
    table = metrics_table(at)
    assert {"demo-gbdt-1d", "demo-ensemble-1d"} <= set(table.columns)
    assert table["demo-gbdt-1d"].tolist() != table["demo-ensemble-1d"].tolist()
    assert at.query_params["compare"] == "demo-ensemble-1d"
    # the paired differences: the first model minus the second, then the ensemble minus its members
    paired = [d.value for d in at.dataframe if "not_ahead" in d.value.columns]
    assert len(paired) == 2
    versus = paired[0].set_index("metric")
    assert set(versus["against"]) == {"demo-ensemble-1d"}
    a, b = (load_evaluation(models / m) for m in ("demo-gbdt-1d", "demo-ensemble-1d"))
    both = a.merge(b, on=["user_id", "cutoff"])
    expected = (metrics.summary_metrics(both["label_x"], both["score_x"], n_boot=0)["roc_auc"]["value"]
                - metrics.summary_metrics(both["label_y"], both["score_y"], n_boot=0)["roc_auc"]["value"])
    assert versus.loc["roc_auc", "difference"] == pytest.approx(expected)
    assert versus.loc["roc_auc", "low"] <= expected <= versus.loc["roc_auc", "high"]
    assert sorted(set(paired[1]["against"])) == ["gbdt", "logreg", "transformer"]
    assert any(f"{len(both):,} test rows both scored" in c.value for c in at.caption)
    # Top X % flags the top share of *each* model, on its own validation rows.
    at.radio(key="perf_cut_mode").set_value("top").run()
    flagged = [sum(r[0] for r in confusion_cells(at, m)) for m in ("demo-gbdt-1d", "demo-ensemble-1d")]
    assert all(abs(f - 0.1 * 2900) < 0.02 * 2900 for f in flagged), flagged


def test_an_ensemble_shows_its_members(models):
    at = pick_model(performance_page(), models / "demo-ensemble-1d")
    members = specs(at)["Ensemble and members: test-window PR-AUC"]["data"][0]
    names, heights = list(members["x"]), array(members["y"])
    assert names[0] == "ensemble"
    assert sorted(names[1:]) == ["gbdt", "logreg", "transformer"]
    card = json.loads((models / "demo-ensemble-1d" / "card.json").read_text())
    gbdt = names.index("gbdt")
    assert heights[gbdt] == pytest.approx(card["members"]["gbdt"]["metrics"]["pr_auc"]["value"])
    assert heights[0] == pytest.approx(card["metrics"]["pr_auc"]["value"])
    assert np.isfinite(heights).all()
    # the presets distil the Transformer from an out-of-fold GBDT; the page says so
    distilled = [c.value for c in at.caption if "The Transformer was distilled" in c.value]
    assert len(distilled) == 1 and f"{card['teacher']['folds']} folds of users" in distilled[0]


def test_no_model_says_how_to_train_one(models):
    shutil.rmtree(models)
    models.mkdir()
    at = performance_page()
    assert any("No trained model yet" in i.value and "Train" in i.value for i in at.info)
    assert not at.get("plotly_chart") and not at.error


def test_a_model_without_evaluation_rows_shows_the_project_message(models):
    (models / "demo-gbdt-1d" / "evaluation.parquet").unlink()
    at = pick_model(performance_page(), models / "demo-gbdt-1d")
    assert any("evaluation.parquet" in e.value for e in at.error)
    assert not at.exception


def test_the_page_reports_the_test_window_with_validation_beside_it(models):
    at = pick_model(performance_page(), models / "demo-gbdt-1d")
    card = json.loads((models / "demo-gbdt-1d" / "card.json").read_text())
    assert any("test cutoff" in c.value for c in at.caption)
    assert not any("before IntentLens kept a test window" in w.value for w in at.warning)
    windows = next(d.value for d in at.dataframe if "validation window" in d.value.columns).set_index("metric")
    assert windows.loc["roc_auc", "test window"] == pytest.approx(card["metrics"]["roc_auc"]["value"])
    assert windows.loc["roc_auc", "validation window"] == pytest.approx(card["valid_metrics"]["roc_auc"]["value"])
    # the metrics table reads the test rows, which are not the validation rows
    test_rows = load_evaluation(models / "demo-gbdt-1d")
    valid_rows = load_evaluation(models / "demo-gbdt-1d", "valid")
    assert metrics_table(at).set_index("metric").loc["ROC-AUC", "demo-gbdt-1d"] == pytest.approx(
        metrics.summary_metrics(test_rows["label"], test_rows["score"], n_boot=0)["roc_auc"]["value"])
    assert set(test_rows["cutoff"]) != set(valid_rows["cutoff"])
    # trained without the comparison: the expander says how to get it
    assert any("--compare-random-split" in c.value for c in at.caption)


def test_the_settings_the_validation_window_chose_are_captioned(models):
    """A card with a teacher-weight and a cart-head-weight choice (``train --distill 0.5,0.7 --aux-cart
    0,0.5``): the page lists each value's validation PR-AUC, the kept one, and the cart head."""
    folder = models / "demo-ensemble-1d"
    card = json.loads((folder / "card.json").read_text())
    card["teacher_weights"] = {"0.5": 0.61, "0.7": 0.6}
    card["cart_weights"] = {"0": 0.61, "0.5": 0.625}
    card["train_config"].update(distill=0.5, aux_cart=0.5)
    (folder / "card.json").write_text(json.dumps(card))
    captions = [c.value for c in pick_model(performance_page(), folder).caption]
    assert ("The Transformer was fitted once per teacher weight and the validation window chose: teacher "
            "weight 0.5 kept of 0.5 (validation PR-AUC 0.6100), 0.7 (validation PR-AUC 0.6000).") in captions
    assert ("The Transformer was fitted once per cart-head weight and the validation window chose: cart-head "
            "weight 0.5 kept of 0 (validation PR-AUC 0.6100), 0.5 (validation PR-AUC 0.6250).") in captions
    assert ('Transformer multi-task: a second head learnt "carts within the horizon" beside the buy head '
            "(loss weight 0.5); only the buy head scores.") in captions


def test_a_model_older_than_the_test_window_is_labelled_optimistic(models):
    folder = models / "demo-gbdt-1d"
    rows = load_evaluation(folder, "valid")
    rows.to_parquet(folder / "validation.parquet")
    (folder / "evaluation.parquet").unlink()
    card = json.loads((folder / "card.json").read_text())
    card.pop("metrics_split")
    (folder / "card.json").write_text(json.dumps(card))
    at = pick_model(performance_page(), folder)
    assert not at.exception
    assert any("optimistic" in w.value for w in at.warning)
    assert any("validation cutoff" in c.value for c in at.caption)


def test_the_random_split_comparison_is_drawn_when_the_model_has_it(models, tmp_path):
    folder = models / "demo-logreg-1d"
    with Store(tmp_path / "db.duckdb") as store:
        ingest_file(store, ROOT / "sample_data/demo/events.csv.gz", dataset="demo")
        result = train_model(store, "demo", kind="logreg", spec=SPEC, preset="fast", out=folder,
                             compare_random_split=True)
    at = pick_model(performance_page(), folder)
    assert not at.exception
    chart = specs(at)["Time split vs random 80/20 split"]
    names = [t["name"] for t in chart["data"]]
    assert names == ["time split (test window, honest)", "random 80/20 split (leaky)"]
    table = next(d.value for d in at.dataframe if "overstatement" in d.value.columns).set_index("metric")
    random_auc = result.card["random_split"]["metrics"]["roc_auc"]["value"]
    assert table.loc["roc_auc", "random_split"] == pytest.approx(random_auc)
    assert table.loc["roc_auc", "overstatement"] == pytest.approx(random_auc - result.metrics["roc_auc"]["value"])
    assert any("random split mixes every window" in c.value.lower() for c in at.caption)


def test_download_report_builds_the_html_of_this_cutoff(models):
    at = performance_page(cutoff="0.35")
    assert not at.get("download_button")                     # built only when asked
    at.button(key="perf_build_report").click().run()
    assert not at.exception and not at.error
    buttons = at.get("download_button")
    assert [b.proto.label for b in buttons] == ["Download report"]
    built = at.session_state["_perf_report"]
    page = built["data"].decode("utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("plotly.js v") == 1
    assert "Test-window performance at cutoff 0.350" in page and built["figures"] >= 4
