"""core.modeling.metrics against scikit-learn and hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from core.errors import DataError
from core.modeling.metrics import (
    _score_groups,
    _weighted_metrics,
    bootstrap_metrics,
    calibration_bins,
    confusion,
    expected_calibration_error,
    lift_table,
    metrics_frame,
    paired_difference,
    pr_curve,
    roc_curve,
    summary_metrics,
    threshold_for_top_fraction,
    threshold_metrics,
)


@pytest.fixture(scope="module")
def yp():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.15).astype(int)
    p = np.clip(0.15 + 0.35 * y * rng.random(3000) + 0.1 * rng.standard_normal(3000), 0, 1)
    return y, np.round(p, 2)          # rounding makes ties, which rank metrics must handle


def test_summary_matches_sklearn(yp):
    y, p = yp
    s = summary_metrics(y, p, threshold=0.3, n_boot=50)
    pred = (p >= 0.3).astype(int)
    assert s["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p))
    assert s["pr_auc"]["value"] == pytest.approx(skm.average_precision_score(y, p))
    assert s["log_loss"]["value"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)))
    assert s["brier"]["value"] == pytest.approx(skm.brier_score_loss(y, p))
    assert s["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, pred))
    assert s["precision"]["value"] == pytest.approx(skm.precision_score(y, pred))
    assert s["recall"]["value"] == pytest.approx(skm.recall_score(y, pred))
    assert s["f1"]["value"] == pytest.approx(skm.f1_score(y, pred))
    assert s["n"] == 3000 and s["positives"] == int(y.sum()) and s["notes"] == []
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "ece"):
        assert s[name]["low"] <= s[name]["value"] <= s[name]["high"], name
    frame = metrics_frame(s).set_index("metric")
    assert list(frame.columns) == ["value", "low", "high"]
    assert frame.index.tolist() == ["roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "precision",
                                    "recall", "f1", "ece"]
    assert frame.loc["brier", "value"] == s["brier"]["value"] and frame.loc["f1", "high"] == s["f1"]["high"]


def test_bootstrap_intervals_have_the_width_of_the_standard_error(yp):
    """Brier score, log loss and accuracy are means over rows, so their 95 % interval must be about
    2 x 1.96 x sd / sqrt(n) wide; a bootstrap that resampled wrongly (too few rows, the same rows,
    no replacement) would miss that by far more than 400 resamples' noise (~7 % here)."""
    y, p = yp
    s = summary_metrics(y, p, threshold=0.3, n_boot=400, seed=0)
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    per_row = {"brier": (y - p) ** 2, "log_loss": -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)),
               "accuracy": ((p >= 0.3) == y).astype(float)}
    for name, terms in per_row.items():
        assert s[name]["value"] == pytest.approx(terms.mean())
        width = 2 * 1.96 * terms.std() / np.sqrt(len(terms))
        assert 0.8 * width < s[name]["high"] - s[name]["low"] < 1.2 * width, name
        middle = (s[name]["high"] + s[name]["low"]) / 2
        assert abs(middle - terms.mean()) < 0.15 * width, name


def test_weighted_evaluation_equals_sklearn_sample_weight(yp):
    """A bootstrap resample is the sample with integer weights: check against sklearn's weights."""
    y, p = yp
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=len(y)).astype(float)
    order = np.argsort(-p, kind="stable")
    W = np.vstack([np.ones(len(y)), w])[:, order]
    got = _weighted_metrics(W, y[order].astype(float), p[order], 0.3, _score_groups(p[order]), 10)
    for row, weight in ((0, None), (1, w)):
        assert got["roc_auc"][row] == pytest.approx(skm.roc_auc_score(y, p, sample_weight=weight))
        assert got["pr_auc"][row] == pytest.approx(
            skm.average_precision_score(y, p, sample_weight=weight))
        assert got["brier"][row] == pytest.approx(skm.brier_score_loss(y, p, sample_weight=weight))
        pred = (p >= 0.3).astype(int)
        assert got["f1"][row] == pytest.approx(skm.f1_score(y, pred, sample_weight=weight))


def test_paired_difference_resamples_both_models_on_the_same_rows(yp):
    """The Brier difference is a mean of per-row differences, so a paired bootstrap's interval is
    about 2 x 1.96 x sd(d) / sqrt(n) wide; resampling the two models independently would give a
    much wider one (the two models share most of their errors here)."""
    y, p = yp
    rng = np.random.default_rng(1)
    q = np.round(np.clip(p + 0.05 * rng.standard_normal(len(p)), 0, 1), 2)    # a noisier model B
    frame = paired_difference(y, p, q, metrics=("roc_auc", "pr_auc", "brier"), n_boot=400).set_index("metric")
    assert frame.loc["roc_auc", "a"] == pytest.approx(skm.roc_auc_score(y, p))
    assert frame.loc["pr_auc", "b"] == pytest.approx(skm.average_precision_score(y, q))
    assert frame.loc["roc_auc", "difference"] == pytest.approx(skm.roc_auc_score(y, p) - skm.roc_auc_score(y, q))
    d = (p - y) ** 2 - (q - y) ** 2
    width = 2 * 1.96 * d.std() / np.sqrt(len(d))
    assert frame.loc["brier", "difference"] == pytest.approx(d.mean())
    assert 0.8 * width < frame.loc["brier", "high"] - frame.loc["brier", "low"] < 1.2 * width
    unpaired = 2 * 1.96 * np.hypot(((p - y) ** 2).std(), ((q - y) ** 2).std()) / np.sqrt(len(d))
    assert width < 0.5 * unpaired
    # the noisier model is behind on ranking: A ahead in (nearly) every resample, for both directions
    assert frame.loc["roc_auc", "low"] > 0 and frame.loc["roc_auc", "share_not_ahead"] < 0.05
    assert frame.loc["brier", "high"] < 0 and frame.loc["brier", "share_not_ahead"] < 0.05
    swapped = paired_difference(y, q, p, metrics=("roc_auc",), n_boot=400).iloc[0]
    assert swapped["difference"] == pytest.approx(-frame.loc["roc_auc", "difference"])
    assert swapped["share_not_ahead"] > 0.95
    same = paired_difference(y, p, p, n_boot=50).set_index("metric")
    assert (same[["difference", "low", "high"]] == 0).all().all() and (same["share_not_ahead"] == 1).all()
    bare = paired_difference(y, p, q, n_boot=0).set_index("metric")      # the point difference alone
    assert bare.loc["roc_auc", "difference"] == frame.loc["roc_auc", "difference"]
    assert bare[["low", "high", "share_not_ahead"]].isna().all().all()
    with pytest.raises(DataError, match="unknown metric auc"):
        paired_difference(y, p, q, metrics=("auc",))
    with pytest.raises(DataError, match="differ in length"):
        paired_difference(y, p, q[:-1])


def test_bootstrap_is_seeded(yp):
    y, p = yp
    a = bootstrap_metrics(y, p, n_boot=100, seed=3)
    b = bootstrap_metrics(y, p, n_boot=100, seed=3)
    c = bootstrap_metrics(y, p, n_boot=100, seed=4)
    assert a == b and a != c


def test_one_class_labels_give_nan_with_a_note():
    y = np.zeros(50)
    p = np.linspace(0, 1, 50)
    s = summary_metrics(y, p, n_boot=20)
    assert np.isnan(s["roc_auc"]["value"]) and np.isnan(s["pr_auc"]["value"])
    assert np.isnan(s["roc_auc"]["low"])
    assert any("one class" in n for n in s["notes"])
    assert s["brier"]["value"] == pytest.approx(np.mean(p ** 2))
    assert roc_curve(y, p).empty and "one class" in roc_curve(y, p).attrs["note"]
    assert pr_curve(y, p).empty


def test_degenerate_resamples_are_skipped():
    # two positives among 40: many resamples miss them; the interval still exists
    y = np.zeros(40)
    y[[3, 17]] = 1
    p = np.linspace(0.01, 0.99, 40)
    s = summary_metrics(y, p, n_boot=200, seed=0)
    assert np.isfinite(s["roc_auc"]["low"]) and np.isfinite(s["roc_auc"]["high"])


@pytest.mark.parametrize("y,p,match", [
    ([0, 1], [0.5], "differ in length"),
    ([0, 1], [0.2, 1.2], r"\[0, 1\]"),
    ([0, 1], [0.2, np.nan], r"\[0, 1\]"),
    ([0, 2], [0.2, 0.3], "0 or 1"),
    ([], [], "no rows"),
])
def test_bad_input_is_refused(y, p, match):
    with pytest.raises(DataError, match=match):
        summary_metrics(y, p, n_boot=0)


def test_threshold_metrics_and_confusion_by_hand():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.6, 0.2, 0.4, 0.5])
    t = threshold_metrics(y, p, 0.5)             # flagged: 0.9, 0.6, 0.6, 0.5 -> TP 2, FP 2, FN 1
    assert t["precision"] == pytest.approx(0.5) and t["recall"] == pytest.approx(2 / 3)
    assert t["accuracy"] == pytest.approx(3 / 6) and t["flagged"] == 4
    c = confusion(y, p, 0.5).set_index("outcome")
    assert c.loc["TP", "count"] == 2 and c.loc["FP", "count"] == 2
    assert c.loc["FN", "count"] == 1 and c.loc["TN", "count"] == 1
    assert c["share"].sum() == pytest.approx(1.0)


def test_curves_match_sklearn(yp):
    y, p = yp
    pr = pr_curve(y, p)
    precision, recall, thresholds = skm.precision_recall_curve(y, p)
    np.testing.assert_allclose(pr["precision"], precision)
    np.testing.assert_allclose(pr["recall"], recall)
    np.testing.assert_allclose(pr["threshold"].iloc[:-1], thresholds)
    roc = roc_curve(y, p)
    fpr, tpr, _ = skm.roc_curve(y, p)
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    assert np.isnan(roc["threshold"].iloc[0])
    s = summary_metrics(y, p, n_boot=0)
    best = pr.dropna().sort_values("f1").iloc[-1]
    assert s["best_f1_threshold"] == pytest.approx(best["threshold"])


def test_lift_table_by_hand():
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    p = np.linspace(1.0, 0.1, 10)                      # already ranked
    lift = lift_table(y, p, bins=5)
    assert list(lift["n"]) == [2, 2, 2, 2, 2]
    assert list(lift["positives"]) == [2, 1, 0, 0, 0]
    assert lift["precision"].iloc[0] == pytest.approx(1.0)
    assert lift["lift"].iloc[0] == pytest.approx(1.0 / 0.3)
    assert lift["gain"].iloc[1] == pytest.approx(1.0) and lift["top_fraction"].iloc[-1] == 1.0


def test_calibration_bins_and_ece_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.85, 0.95])
    bins = calibration_bins(y, p, bins=2)
    assert list(bins["n"]) == [2, 2]
    np.testing.assert_allclose(bins["mean_p"], [0.1, 0.9])
    np.testing.assert_allclose(bins["frac_pos"], [0.0, 1.0])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.1)
    assert bins.attrs["ece"] == pytest.approx(0.1)
    perfect = calibration_bins(np.r_[np.zeros(8), np.ones(2)], np.full(10, 0.2), bins=5)
    assert perfect.attrs["ece"] == pytest.approx(0.0)


def test_threshold_for_top_fraction():
    p = np.arange(100) / 100
    t = threshold_for_top_fraction(p, 0.1)
    assert (p >= t).sum() == 10
    assert (p >= threshold_for_top_fraction(p, 1.0)).sum() == 100
    assert (p >= threshold_for_top_fraction(p, 0.001)).sum() == 1
    with pytest.raises(DataError, match="frac"):
        threshold_for_top_fraction(p, 0)
