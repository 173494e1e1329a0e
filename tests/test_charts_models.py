"""Model-quality figures of core/charts.py without a UI: traces, cutoff markers, axis titles and
empty states, on small frames made with core.modeling.metrics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import charts
from core.modeling import metrics


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    p = rng.random(2_000)
    y = (rng.random(2_000) < p * 0.6).astype(int)
    return y, p


def tagged(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    return frame.assign(model=model)


def axis_title(fig, axis: str) -> str:
    return getattr(fig.layout, axis).title.text


def test_pr_curves_draw_one_line_per_model_and_mark_the_cutoff(scored):
    y, p = scored
    frame = pd.concat([tagged(metrics.pr_curve(y, p), "a"), tagged(metrics.pr_curve(y, p ** 2), "b")])
    at = metrics.threshold_metrics(y, p, 0.4)
    points = pd.DataFrame({"model": ["a"], "recall": [at["recall"]], "precision": [at["precision"]],
                           "threshold": [0.4]})
    fig = charts.pr_curves(frame, points=points, base_rate=y.mean())
    lines = [t for t in fig.data if t.mode == "lines"]
    assert [t.name for t in lines] == ["a", "b"]
    assert lines[0].line.color == charts.model_color(0) != lines[1].line.color
    marker = [t for t in fig.data if t.mode == "markers"]
    assert len(marker) == 1
    assert marker[0].x[0] == pytest.approx(at["recall"])
    assert marker[0].y[0] == pytest.approx(at["precision"])
    assert marker[0].marker.color == charts.model_color(0)
    assert axis_title(fig, "xaxis").startswith("recall")
    assert axis_title(fig, "yaxis").startswith("precision")
    assert fig.layout.shapes[0].y0 == pytest.approx(y.mean())    # the random baseline
    assert fig.layout.template.layout.separators == ".,"         # the IntentLens template


def test_curves_are_thinned_but_keep_their_ends():
    n = 50_000
    frame = pd.DataFrame({"model": "m", "fpr": np.linspace(0, 1, n), "tpr": np.linspace(0, 1, n) ** 0.5})
    fig = charts.roc_curves(frame)
    line = next(t for t in fig.data if t.name == "m")
    assert len(line.x) <= charts.CURVE_POINTS
    assert (line.x[0], line.x[-1]) == (0.0, 1.0) and line.y[-1] == 1.0


def test_roc_curve_marker_sits_at_the_cutoff_rates(scored):
    y, p = scored
    cells = metrics.confusion(y, p, 0.3).set_index("outcome")["count"]
    fpr = cells["FP"] / (cells["FP"] + cells["TN"])
    tpr = cells["TP"] / (cells["TP"] + cells["FN"])
    points = pd.DataFrame({"model": ["a"], "fpr": [fpr], "tpr": [tpr], "threshold": [0.3]})
    fig = charts.roc_curves(tagged(metrics.roc_curve(y, p), "a"), points=points)
    marker = next(t for t in fig.data if t.mode == "markers")
    assert (marker.x[0], marker.y[0]) == (pytest.approx(fpr), pytest.approx(tpr))
    # The point lies on the drawn curve: between its last point above the cutoff and its first
    # one below (scikit-learn drops collinear points, so the exact one may be left out).
    curve = metrics.roc_curve(y, p).dropna(subset=["threshold"])
    above, below = curve[curve["threshold"] >= 0.3].iloc[-1], curve[curve["threshold"] < 0.3].iloc[0]
    assert above["fpr"] <= fpr <= below["fpr"] and above["tpr"] <= tpr <= below["tpr"]
    assert axis_title(fig, "xaxis").startswith("false-positive rate")


def test_confusion_matrix_counts_and_shares(scored):
    y, p = scored
    frame = metrics.confusion(y, p, 0.5)
    counts = frame.set_index("outcome")["count"]
    fig = charts.confusion_matrix(frame)
    heat = fig.data[0]
    assert heat.type == "heatmap"
    assert list(heat.y) == ["buyer", "not a buyer"]
    assert heat.z[0][0] == counts["TP"] and heat.z[0][1] == counts["FN"]
    assert heat.z[1][0] == counts["FP"] and heat.z[1][1] == counts["TN"]
    assert f"{counts['TN']:,}" in heat.text[1][1]
    fig = charts.confusion_matrix(frame, shares=True)
    assert fig.data[0].z[0][0] == pytest.approx(counts["TP"] / len(y))
    assert fig.data[0].text[0][0].split("<br>")[1].endswith("%")


def test_lift_and_gains(scored):
    y, p = scored
    table = tagged(metrics.lift_table(y, p, bins=10), "a")
    lift = charts.lift_chart(table, cutoff_fraction=0.2)
    line = next(t for t in lift.data if t.name == "a")
    assert list(line.x) == pytest.approx(np.arange(1, 11) / 10)
    # the first point: the buyer share among the 10 % highest scores over the base rate
    top = np.argsort(-p, kind="stable")[:200]
    assert line.y[0] == pytest.approx(y[top].mean() / y.mean())
    assert list(line.y) == pytest.approx(table.sort_values("top_fraction")["lift"].tolist())
    assert line.y[-1] == pytest.approx(1.0)                        # everyone: the base rate
    assert lift.layout.shapes[-1].x0 == pytest.approx(0.2)        # the cutoff line
    assert axis_title(lift, "yaxis").startswith("lift")
    gains = charts.gains_chart(table, cutoff_fraction=0.2)
    line = next(t for t in gains.data if t.name == "a")
    assert line.x[0] == 0.0 and line.y[0] == 0.0 and line.y[-1] == pytest.approx(1.0)
    assert line.y[1] == pytest.approx(y[top].sum() / y.sum())      # buyers found in the top 10 %
    assert any(t.name == "random" for t in gains.data)


def test_calibration_has_the_diagonal_and_skips_empty_bins():
    frame = pd.DataFrame({"model": "a", "mean_p": [0.05, np.nan, 0.8], "frac_pos": [0.1, np.nan, 0.7],
                          "n": [10, 0, 5]})
    fig = charts.calibration_chart(frame)
    diagonal, line = fig.data
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    assert list(line.x) == [0.05, 0.8]
    assert axis_title(fig, "xaxis") == "mean predicted probability"


def test_score_histogram_bins_by_label_and_draws_the_cutoff(scored):
    y, p = scored
    frame = pd.DataFrame({"score": p, "label": y})
    fig = charts.score_histogram(frame, threshold=0.35, bins=20)
    neg, pos = fig.data
    assert list(neg.x) == pytest.approx(np.arange(20) / 20 + 0.025)             # bin centres
    # bin i holds scores in [i/20, (i+1)/20), the last one also 1.0; heights are shares of the class
    for trace, value in ((neg, 0), (pos, 1)):
        mine = p[y == value]
        counts = np.bincount(np.minimum((mine * 20).astype(int), 19), minlength=20)
        assert list(trace.y) == pytest.approx(counts / len(mine))
    assert pos.name == f"bought ({int(y.sum()):,})"
    assert fig.layout.shapes[0].x0 == pytest.approx(0.35)
    counts = charts.score_histogram(frame, bins=20, shares=False)
    assert sum(counts.data[0].y) + sum(counts.data[1].y) == len(p)
    assert not counts.layout.shapes


def test_training_curves_use_two_axes():
    frame = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.9, 0.7, 0.6],
                          "valid_loss": [0.8, 0.75, 0.74], "valid_pr_auc": [0.3, 0.4, 0.42]})
    fig = charts.training_curves(frame)
    assert [t.name for t in fig.data] == ["train loss", "validation loss", "validation PR-AUC"]
    assert fig.data[2].yaxis == "y2"
    assert fig.layout.yaxis2.title.text == "validation PR-AUC"
    assert axis_title(fig, "xaxis") == "epoch"


def test_leaderboard_sorts_and_carries_intervals():
    frame = pd.DataFrame({"model_id": ["m1", "m2"], "kind": ["gbdt", "transformer"],
                          "pr_auc": [0.4, 0.6], "pr_auc_low": [0.35, 0.5], "pr_auc_high": [0.45, 0.7]})
    fig = charts.leaderboard(frame)
    dots = fig.data[0]
    assert list(dots.y) == ["transformer · m2", "gbdt · m1"]           # best first
    assert list(dots.error_x.array) == pytest.approx([0.1, 0.05])
    assert list(dots.error_x.arrayminus) == pytest.approx([0.1, 0.05])


def test_segment_quality_and_members():
    seg = pd.DataFrame({"segment_type": ["activity", "activity"], "segment": ["low", "high"],
                        "rows": [100, 50], "roc_auc": [0.7, 0.8], "pr_auc": [0.2, 0.5],
                        "precision": [0.3, np.nan]})
    fig = charts.segment_quality(seg)
    assert [t.name for t in fig.data] == ["ROC-AUC", "PR-AUC", "precision"]
    assert list(fig.data[0].y) == ["activity · low", "activity · high"]
    members = pd.DataFrame({"member": ["ensemble", "gbdt", "logreg"], "value": [0.6, 0.55, 0.5],
                            "low": [0.5, 0.45, 0.4], "high": [0.7, 0.65, 0.6],
                            "weight": [np.nan, 0.7, 0.3]})
    fig = charts.member_scores(members)
    bars = fig.data[0]
    assert list(bars.x) == ["ensemble", "gbdt", "logreg"]
    assert bars.marker.color[0] == charts.ACCENT
    assert "weight 70%" in bars.text[1]


@pytest.mark.parametrize("fn, columns", [
    (charts.pr_curves, ["model", "recall", "precision"]),
    (charts.roc_curves, ["model", "fpr", "tpr"]),
    (charts.confusion_matrix, ["actual", "predicted", "outcome", "count", "share"]),
    (charts.lift_chart, ["model", "top_fraction", "lift"]),
    (charts.gains_chart, ["model", "top_fraction", "gain"]),
    (charts.calibration_chart, ["model", "mean_p", "frac_pos", "n"]),
    (charts.score_histogram, ["score", "label"]),
    (charts.training_curves, ["epoch", "train_loss", "valid_loss", "valid_pr_auc"]),
    (charts.leaderboard, ["model_id", "kind", "pr_auc"]),
    (charts.segment_quality, ["segment_type", "segment", "rows", "roc_auc", "pr_auc", "precision"]),
    (charts.member_scores, ["member", "value", "low", "high"]),
])
def test_empty_input_gives_an_empty_state_and_missing_columns_raise(fn, columns):
    fig = fn(pd.DataFrame(columns=columns))
    assert charts.is_empty_figure(fig)
    assert fig.layout.annotations[0].text          # says why / what to do
    with pytest.raises(ValueError, match="lacks columns"):
        fn(pd.DataFrame({"unrelated": [1]}))


def test_undefined_curves_from_one_class_labels_show_an_empty_state():
    y, p = np.zeros(20), np.linspace(0, 1, 20)
    assert charts.is_empty_figure(charts.pr_curves(tagged(metrics.pr_curve(y, p), "a")))
    assert charts.is_empty_figure(charts.roc_curves(tagged(metrics.roc_curve(y, p), "a")))
    assert charts.is_empty_figure(charts.lift_chart(tagged(metrics.lift_table(y, p), "a")))
