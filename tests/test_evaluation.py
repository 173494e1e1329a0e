"""core.insight.evaluation against hand-computed truth: length buckets, segment labels, per-segment
rank metrics, the count-level bootstrap against a row bootstrap, cutoffs by probability and by
top share, the metrics table, ensemble members and a saved model read from disk."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.errors import DataError, ModelError
from core.insight import evaluation as ev_mod
from core.insight.evaluation import (
    Evaluation,
    at_cutoff,
    cutoff_intervals,
    ensemble_lead,
    evaluate,
    evaluate_model,
    length_buckets,
    member_metrics,
    metrics_table,
    operating_points,
    paired_comparison,
    segment_labels,
    segment_rank_metrics,
    segment_table,
    window_table,
)
from models.artifact import FORMAT, SCHEMA_VERSION


def rows_frame(labels, scores, n_events, categories=None) -> pd.DataFrame:
    frame = pd.DataFrame({"label": labels, "score": scores, "n_events": n_events})
    if categories is not None:
        frame["top_category"] = categories
    return frame


def test_length_buckets_end_with_the_full_window():
    assert length_buckets(100) == [(1, 4), (5, 19), (20, 49), (50, 99), (100, 100)]
    assert length_buckets(10) == [(1, 4), (5, 9), (10, 10)]
    assert length_buckets(1) == [(1, 1)]
    with pytest.raises(DataError, match="max_len must be at least 1"):
        length_buckets(0)


def test_segment_labels_by_activity_length_and_category():
    rows = rows_frame([0] * 6, [0.5] * 6, [1, 2, 3, 4, 5, 6], ["a", "a", "b", None, "a", "c"])
    seg = segment_labels(rows, max_len=5, top_categories=1)
    # thirds of 1..6: quantiles 2.67 -> 3 and 4.33 -> 4
    assert [str(v) for v in seg["activity"]] == ["low (≤ 3 events)"] * 3 + ["medium (4–4 events)"] + \
        ["high (> 4 events)"] * 2
    assert [str(v) for v in seg["sequence length"]] == ["1–4 events"] * 4 + ["5 events (full)"] * 2
    assert list(seg["top category"]) == ["a", "a", "other", "other", "a", "other"]
    assert list(seg["top category"].cat.categories) == ["a", "other"]
    assert list(segment_labels(rows.drop(columns="top_category"), 5).columns) == ["activity", "sequence length"]


def test_segment_rank_metrics_match_hand_counts():
    # segment x: pairs (pos, neg) ordered right: (.9>.8), (.9>.1), (.3<.8), (.3>.1) -> ROC-AUC 3/4
    y = np.array([1, 0, 1, 0, 1, 1], dtype=float)
    p = np.array([0.9, 0.8, 0.3, 0.1, 0.6, 0.2])
    segments = pd.DataFrame({"kind": pd.Categorical(["x", "x", "x", "x", "y", "y"])})
    out = segment_rank_metrics(y, p, segments).set_index("segment")
    assert out.loc["x", "roc_auc"] == pytest.approx(0.75)
    # average precision of x: buyers at ranks 1 and 3 -> (1/1 + 2/3) / 2
    assert out.loc["x", "pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(out.loc["y", "roc_auc"])              # buyers only: ROC-AUC undefined
    assert out.loc["y", "pr_auc"] == pytest.approx(1.0)
    assert out["rows"].tolist() == [4, 2] and out["positives"].tolist() == [2, 2]


def test_count_bootstrap_agrees_with_a_row_bootstrap():
    counts = {"TP": 30, "FP": 20, "FN": 10, "TN": 140}
    fast = cutoff_intervals(counts, n_boot=4000, seed=1)
    y = np.r_[np.ones(40), np.zeros(160)]
    flagged = np.r_[np.ones(30), np.zeros(10), np.ones(20), np.zeros(140)].astype(bool)
    rng = np.random.default_rng(2)
    draws = {"precision": [], "recall": []}
    for _ in range(4000):
        i = rng.integers(0, 200, 200)
        ys, fs = y[i], flagged[i]
        draws["precision"].append(ys[fs].mean())
        draws["recall"].append(fs[ys == 1].mean())
    for name, values in draws.items():
        low, high = np.percentile(values, [2.5, 97.5])
        assert fast[name][0] == pytest.approx(low, abs=0.03), name
        assert fast[name][1] == pytest.approx(high, abs=0.03), name
    assert fast["precision"][0] < 30 / 50 < fast["precision"][1]
    # a perfect split has no spread; no rows at all is refused
    perfect = cutoff_intervals({"TP": 5, "FP": 0, "FN": 0, "TN": 5})
    assert perfect["precision"] == (1.0, 1.0) and perfect["recall"] == (1.0, 1.0)
    with pytest.raises(DataError, match="every confusion count is 0"):
        cutoff_intervals({"TP": 0, "FP": 0, "FN": 0, "TN": 0})


@pytest.fixture
def ten_rows() -> Evaluation:
    # scores 0.95, 0.85, ..., 0.05; buyers at ranks 1, 2, 4 and 7
    labels = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]
    scores = [0.95 - 0.1 * i for i in range(10)]
    rows = rows_frame(labels, scores, [1, 1, 2, 2, 3, 3, 40, 40, 60, 60], list("aabbaabbcc"))
    card = {"kind": "gbdt", "label": {"max_len": 50}}
    return evaluate("m", card, rows, n_boot=50)


def test_cutoff_by_top_share_and_by_probability(ten_rows):
    top = at_cutoff(ten_rows, "top", 30)
    assert top.threshold == pytest.approx(0.75)            # the third highest score
    counts = dict(zip(top.confusion["outcome"], top.confusion["count"], strict=True))
    assert counts == {"TP": 2, "FP": 1, "FN": 2, "TN": 5}
    assert top.values["precision"] == pytest.approx(2 / 3) and top.values["recall"] == pytest.approx(0.5)
    assert top.fpr == pytest.approx(1 / 6)
    for name in ("precision", "recall", "f1", "accuracy"):
        low, high = top.intervals[name]
        assert low <= top.values[name] <= high, name
    prob = at_cutoff(ten_rows, "probability", 0.5)         # scores >= 0.5: the top 5
    assert prob.values["flagged"] == 5 and prob.values["precision"] == pytest.approx(3 / 5)
    with pytest.raises(DataError, match="cutoff mode"):
        at_cutoff(ten_rows, "median", 1)


def test_tables_at_a_cutoff(ten_rows):
    cut = at_cutoff(ten_rows, "top", 30)
    table = metrics_table([ten_rows], [cut]).set_index("metric")
    assert list(table.index) == ["roc_auc", "pr_auc", "log_loss", "brier", "ece",
                                 "accuracy", "precision", "recall", "f1"]
    assert table.loc["precision", "m"] == pytest.approx(2 / 3)
    assert bool(table.loc["precision", "at the cutoff"]) and not bool(table.loc["roc_auc", "at the cutoff"])
    # ROC-AUC by hand: of 4 x 6 pairs the buyer outranks the non-buyer in 6+6+5+3 = 20
    assert table.loc["roc_auc", "m"] == pytest.approx(20 / 24)
    assert table.loc["roc_auc", "m 95% CI"].startswith("[")
    points = operating_points([ten_rows], [cut])
    assert points.iloc[0][["model", "recall", "tpr"]].tolist() == ["m", 0.5, 0.5]
    assert points.iloc[0]["flagged_share"] == pytest.approx(0.3)
    seg = segment_table(ten_rows, cut.threshold).set_index(["segment_type", "segment"])
    # category "a" holds rows 1, 2, 5, 6: flagged rows 1 and 2, both buyers
    assert seg.loc[("top category", "a"), "flagged"] == 2
    assert seg.loc[("top category", "a"), "precision"] == pytest.approx(1.0)
    # category "c" (rows 9, 10) has nothing flagged and no buyer
    assert seg.loc[("top category", "c"), "flagged"] == 0
    assert np.isnan(seg.loc[("top category", "c"), "precision"])
    assert seg.groupby(level="segment_type")["rows"].sum().tolist() == [10, 10, 10]


def test_ensemble_members_come_from_the_card():
    summary = {"pr_auc": {"value": 0.4, "low": 0.3, "high": 0.5}}
    card = {"kind": "ensemble", "ensemble": {"weights": {"gbdt": 0.7, "logreg": 0.3}},
            "members": {"gbdt": {"metrics": {"pr_auc": {"value": 0.35, "low": 0.3, "high": 0.4}}},
                        "logreg": {"metrics": {"pr_auc": {"value": 0.2, "low": 0.1, "high": 0.3}}},
                        "broken": {"metrics": {}}}}
    members = member_metrics(card, summary)
    assert members["member"].tolist() == ["ensemble", "gbdt", "logreg"]
    assert members["value"].tolist() == [0.4, 0.35, 0.2]
    assert members["weight"].tolist()[1:] == [0.7, 0.3]
    assert member_metrics({"kind": "gbdt"}, summary).empty


def test_evaluate_model_reads_a_saved_model(tmp_path):
    folder = tmp_path / "demo-gbdt"
    folder.mkdir()
    card = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": "gbdt", "label": {"max_len": 20}}
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"evaluation\.parquet"):
        evaluate_model(folder)
    # a model older than the test window: its validation rows, labelled as such
    rows_frame([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], [3, 5, 21, 1]).to_parquet(folder / "validation.parquet")
    ev = evaluate_model(folder, n_boot=20)
    assert ev.split == "valid" and "validation window" in ev.window
    with pytest.raises(ModelError, match=r"evaluation\.parquet"):
        evaluate_model(folder, split="test")
    # today's layout: validation and test rows in one file; the test window is the default
    valid = rows_frame([0, 0, 1, 1], [0.9, 0.8, 0.3, 0.1], [3, 5, 21, 1]).assign(split="valid")
    test = rows_frame([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], [3, 5, 21, 1]).assign(split="test")
    pd.concat([valid, test], ignore_index=True).to_parquet(folder / "evaluation.parquet")
    ev = evaluate_model(folder, n_boot=20)
    assert ev.split == "test" and ev.window == "test window"
    assert evaluate_model(folder, split="valid", n_boot=20).summary["roc_auc"]["value"] == pytest.approx(0.0)
    assert ev.name == "demo-gbdt" and ev.base_rate == 0.5
    assert ev.summary["roc_auc"]["value"] == pytest.approx(0.75)
    assert [str(v) for v in ev.segments["sequence length"]] == ["1–4 events", "5–19 events",
                                                                 "20 events (full)", "1–4 events"]
    assert ev.members.empty and list(ev.segment_auc.columns) == ev_mod.SEGMENT_COLUMNS
    with pytest.raises(ModelError):
        evaluate_model(tmp_path / "missing")


def test_window_table_puts_the_validation_figures_beside_the_test_ones():
    card = {"metrics_split": "test", "metrics": {"roc_auc": {"value": 0.71, "low": 0.6, "high": 0.8}},
            "valid_metrics": {"roc_auc": {"value": 0.75, "low": 0.7, "high": 0.8}}}
    table = window_table(card).set_index("metric")
    assert table.loc["roc_auc", "test window"] == 0.71 and table.loc["roc_auc", "validation window"] == 0.75
    assert np.isnan(table.loc["pr_auc", "test window"])
    old = window_table({"metrics": {"roc_auc": {"value": 0.8, "low": 0.7, "high": 0.9}}}).set_index("metric")
    assert np.isnan(old.loc["roc_auc", "test window"]) and old.loc["roc_auc", "validation window"] == 0.8


def saved_rows(folder, card: dict, rows: pd.DataFrame) -> None:
    folder.mkdir()
    full = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "metrics_split": "test",
            "dataset": "d", "label": {"horizon": "1d", "scope": "any", "max_len": 20}, **card}
    (folder / "card.json").write_text(json.dumps(full))
    rows.to_parquet(folder / "evaluation.parquet")


def planted(n: int, seed: int, *signals: tuple[float, float]) -> tuple[np.ndarray, list[np.ndarray], pd.DataFrame]:
    """Labels (30 % buyers), one score per (signal, noise) pair, and the test rows' keys."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    scores = [np.clip(0.3 + signal * y + noise * rng.standard_normal(n), 0, 1) for signal, noise in signals]
    keys = pd.DataFrame({"user_id": np.arange(n), "cutoff": pd.Timestamp("2017-12-02"), "label": y,
                         "split": "test", "n_events": 5})
    return y, scores, keys


def test_paired_comparison_pairs_the_same_users_and_says_why_when_it_cannot(tmp_path):
    n = 600
    y, (good, weak), keys = planted(n, 0, (0.4, 0.15), (0.1, 0.15))
    saved_rows(tmp_path / "good", {"kind": "gbdt"}, keys.assign(score=good))
    # the weak model's rows come in another order and with 100 users the good one never scored
    extra = pd.DataFrame({"user_id": np.arange(n, n + 100), "cutoff": pd.Timestamp("2017-12-02"),
                          "label": 1, "split": "test", "n_events": 5, "score": 0.99})
    saved_rows(tmp_path / "weak", {"kind": "logreg"},
               pd.concat([keys.assign(score=weak), extra]).sample(frac=1, random_state=1))
    result = paired_comparison(tmp_path / "good", tmp_path / "weak", n_boot=200)
    assert result.rows == n and result.note == ""
    table = result.table.set_index("metric")
    assert list(result.table.columns) == ev_mod.PAIRED_COLUMNS and set(table["against"]) == {"weak"}
    assert table.loc["roc_auc", "difference"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, weak))
    assert table.loc["roc_auc", "low"] > 0 and table.loc["roc_auc", "not_ahead"] == 0
    assert table.loc["log_loss", "high"] < 0          # lower is better: the good model is ahead there too
    # models that cannot be paired: the reason instead of a table
    saved_rows(tmp_path / "other-data", {"kind": "gbdt", "dataset": "e"}, keys.assign(score=good))
    saved_rows(tmp_path / "other-label", {"kind": "gbdt", "label": {"horizon": "7d", "scope": "any"}},
               keys.assign(score=good))
    saved_rows(tmp_path / "later", {"kind": "gbdt"}, keys.assign(score=good, cutoff=pd.Timestamp("2017-12-03")))
    saved_rows(tmp_path / "old", {"kind": "gbdt", "metrics_split": "valid"}, keys.assign(score=good))
    for name, why in (("other-data", "different datasets"), ("other-label", "predict different things"),
                      ("later", "share no users"), ("old", "predates the test window")):
        result = paired_comparison(tmp_path / "good", tmp_path / name)
        assert result.table.empty and why in result.note, (name, result.note)
    assert ensemble_lead(tmp_path / "good").table.empty
    assert "not an ensemble" in ensemble_lead(tmp_path / "good").note


def test_ensemble_lead_reads_the_members_scores_saved_beside_its_own(tmp_path):
    n = 500
    y, (member_a, member_b), keys = planted(n, 2, (0.3, 0.2), (0.3, 0.2))
    rows = keys.assign(score=(member_a + member_b) / 2, score_a=member_a, score_b=member_b)
    saved_rows(tmp_path / "ens", {"kind": "ensemble", "ensemble": {"weights": {"a": 0.5, "b": 0.5}}}, rows)
    lead = ensemble_lead(tmp_path / "ens", n_boot=200)
    assert lead.rows == n and sorted(set(lead.table["against"])) == ["a", "b"]
    roc = lead.table[lead.table["metric"] == "roc_auc"].set_index("against")
    assert roc.loc["a", "other"] == pytest.approx(roc_auc_score(y, member_a))
    assert (roc["low"] > 0).all()        # averaging two independent noisy members beats either
    saved_rows(tmp_path / "bare", {"kind": "ensemble", "ensemble": {"weights": {"a": 1.0}}},
               rows.drop(columns=["score_a", "score_b"]))
    assert "no member scores" in ensemble_lead(tmp_path / "bare").note
