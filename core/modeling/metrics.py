"""Evaluation metrics, curves, thresholds, lift, calibration and bootstrap intervals -> tidy frames.

Point values come from scikit-learn (``roc_auc_score``, ``average_precision_score``, ``log_loss``,
``brier_score_loss``, ``precision_recall_fscore_support``, the curves). Bootstrap intervals resample
rows with replacement; a resample is the same as the full sample with integer row weights, so every
metric is computed for a whole chunk of resamples at once from a (resamples, rows) weight matrix:
rank metrics (ROC-AUC, average precision) through per-distinct-score weight sums, which is exactly
what scikit-learn computes with ``sample_weight``. A resample holding one class only gives NaN for the
rank metrics and is left out of their interval (``nan`` percentiles).

Conventions: ``y`` holds 0/1 labels, ``p`` probabilities of class 1 in [0, 1]; a row is flagged
positive when ``p >= threshold`` (the convention of scikit-learn's curves). When the labels hold one
class only, ROC-AUC (and PR-AUC without positives) is undefined: the value is NaN and
``summary_metrics(...)["notes"]`` says why, instead of raising.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from core.errors import DataError

HEADLINE = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "precision", "recall", "f1", "ece")
_EPS = 1e-15
_BOOT_CELLS = 4_000_000     # resamples x rows held in memory at once


def _check(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D float arrays; DataError naming the rule and the value otherwise."""
    y = np.asarray(y, dtype=float).reshape(-1) if np.ndim(y) <= 1 else np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float).reshape(-1) if np.ndim(p) <= 1 else np.asarray(p, dtype=float)
    if y.ndim != 1 or p.ndim != 1:
        raise DataError(f"labels and probabilities must be 1-D, got shapes {y.shape} and {p.shape}.",
                        title="Bad metric input")
    if len(y) != len(p):
        raise DataError(f"labels and probabilities differ in length ({len(y)} vs {len(p)}).",
                        title="Bad metric input")
    if len(y) == 0:
        raise DataError("no rows to evaluate.", title="Bad metric input")
    bad_y = ~np.isin(y, (0.0, 1.0))
    if bad_y.any():
        raise DataError(f"labels must be 0 or 1; found {y[bad_y][0]!r} "
                        f"({int(bad_y.sum())} bad rows).", title="Bad metric input")
    bad_p = ~np.isfinite(p) | (p < 0.0) | (p > 1.0)
    if bad_p.any():
        raise DataError(f"probabilities must lie in [0, 1]; found {p[bad_p][0]!r} "
                        f"({int(bad_p.sum())} bad rows).", title="Bad metric input")
    return y, p


def _two_classes(y: np.ndarray) -> bool:
    return bool(0 < y.sum() < len(y))


# -- point metrics ------------------------------------------------------------------------
def threshold_metrics(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and the flagged share at one threshold (p >= threshold)."""
    y, p = _check(y, p)
    pred = (p >= threshold).astype(int)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y.astype(int), pred, average="binary", zero_division=0)
    return {"threshold": float(threshold), "accuracy": float(skm.accuracy_score(y, pred)),
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "flagged": int(pred.sum()), "flagged_share": float(pred.mean())}


def confusion(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> pd.DataFrame:
    """One row per cell: actual, predicted, outcome (TP/FP/FN/TN), count, share of all rows."""
    y, p = _check(y, p)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y.astype(int), pred, labels=[0, 1]).ravel()
    rows = [(1, 1, "TP", tp), (0, 1, "FP", fp), (1, 0, "FN", fn), (0, 0, "TN", tn)]
    frame = pd.DataFrame(rows, columns=["actual", "predicted", "outcome", "count"])
    frame["count"] = frame["count"].astype(int)
    frame["share"] = frame["count"] / len(y)
    return frame


def pr_curve(y: ArrayLike, p: ArrayLike) -> pd.DataFrame:
    """threshold, precision, recall, f1 (the final recall-0 point has threshold NaN)."""
    y, p = _check(y, p)
    if y.sum() == 0:
        frame = pd.DataFrame(columns=["threshold", "precision", "recall", "f1"], dtype=float)
        frame.attrs["note"] = "no positive labels: the precision-recall curve is undefined."
        return frame
    precision, recall, thresholds = skm.precision_recall_curve(y, p)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(precision), where=(precision + recall) > 0)
    return pd.DataFrame({"threshold": np.append(thresholds, np.nan), "precision": precision,
                         "recall": recall, "f1": f1})


def roc_curve(y: ArrayLike, p: ArrayLike) -> pd.DataFrame:
    """fpr, tpr, threshold (the first point, nothing flagged, has threshold NaN)."""
    y, p = _check(y, p)
    if not _two_classes(y):
        frame = pd.DataFrame(columns=["fpr", "tpr", "threshold"], dtype=float)
        frame.attrs["note"] = "the labels hold one class only: the ROC curve is undefined."
        return frame
    fpr, tpr, thresholds = skm.roc_curve(y, p)
    thresholds = np.where(np.isfinite(thresholds), thresholds, np.nan)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def best_f1_threshold(y: ArrayLike, p: ArrayLike) -> float:
    """The threshold that maximises F1 on these labels (NaN without positives)."""
    curve = pr_curve(y, p)
    if curve.empty:
        return float("nan")
    curve = curve.dropna(subset=["threshold"])
    return float(curve["threshold"].iloc[int(curve["f1"].to_numpy().argmax())])


def threshold_for_top_fraction(p: ArrayLike, frac: float) -> float:
    """Threshold t such that ``p >= t`` flags the top ``frac`` of rows (ties may add a few)."""
    p = np.asarray(p, dtype=float).reshape(-1)
    if not 0.0 < float(frac) <= 1.0:
        raise DataError(f"frac must be in (0, 1], got {frac!r}.", title="Bad metric input")
    if len(p) == 0:
        raise DataError("no scores to pick a threshold from.", title="Bad metric input")
    k = max(1, math.ceil(float(frac) * len(p)))
    return float(np.partition(p, len(p) - k)[len(p) - k])


def lift_table(y: ArrayLike, p: ArrayLike, bins: int = 20) -> pd.DataFrame:
    """Rows ranked by score, cut into ``bins`` equal groups; precision, lift and gains per top-k%.

    Columns: bin (1 = highest scores), top_fraction (share of rows down to this bin), n, positives,
    rate (positive share inside the bin), precision (positive share in the top fraction), lift
    (precision / base rate), gain (share of all positives captured so far).
    """
    y, p = _check(y, p)
    if int(bins) < 1:
        raise DataError(f"bins must be >= 1, got {bins}.", title="Bad metric input")
    order = np.argsort(-p, kind="stable")
    groups = np.array_split(y[order], min(int(bins), len(y)))
    n = np.array([len(g) for g in groups])
    pos = np.array([g.sum() for g in groups])
    cum_n, cum_pos = np.cumsum(n), np.cumsum(pos)
    base = y.mean()
    precision = cum_pos / cum_n
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = precision / base if base > 0 else np.full(len(n), np.nan)
        gain = cum_pos / y.sum() if y.sum() > 0 else np.full(len(n), np.nan)
    return pd.DataFrame({"bin": np.arange(1, len(n) + 1), "top_fraction": cum_n / len(y), "n": n,
                         "positives": pos.astype(int), "rate": pos / n, "precision": precision,
                         "lift": lift, "gain": gain})


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    index: np.ndarray = np.minimum((p * bins).astype(int), bins - 1)
    return index


def calibration_bins(y: ArrayLike, p: ArrayLike, bins: int = 10) -> pd.DataFrame:
    """Equal-width probability bins: lower, upper, n, mean_p, frac_pos, gap; ``attrs["ece"]``."""
    y, p = _check(y, p)
    if int(bins) < 1:
        raise DataError(f"bins must be >= 1, got {bins}.", title="Bad metric input")
    idx = _bin_index(p, int(bins))
    n = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p, frac_pos = sum_p / n, sum_y / n
    frame = pd.DataFrame({"bin": np.arange(bins), "lower": np.arange(bins) / bins,
                          "upper": np.arange(1, bins + 1) / bins, "n": n, "mean_p": mean_p,
                          "frac_pos": frac_pos, "gap": mean_p - frac_pos})
    frame.attrs["ece"] = float(np.abs(sum_p - sum_y).sum() / len(y))
    return frame


def expected_calibration_error(y: ArrayLike, p: ArrayLike, bins: int = 10) -> float:
    """ECE: row-weighted mean |mean probability - positive share| over equal-width bins."""
    return float(calibration_bins(y, p, bins).attrs["ece"])


# -- bootstrap: many weighted evaluations at once -----------------------------------------
def _weighted_metrics(W: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float,
                      groups: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Every headline metric for each row of the weight matrix W (resamples, rows)."""
    starts = groups                                # rows sorted by p descending; tie starts
    total = W.sum(axis=1)
    pos_w, neg_w = W * y, W * (1.0 - y)
    n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        # rank metrics from weight sums per distinct score, highest score first
        if len(starts) == len(p):                                    # no ties: one row a group
            gp, gn = pos_w, neg_w
        else:
            gp = np.add.reduceat(pos_w, starts, axis=1)             # (R, G)
            gn = np.add.reduceat(neg_w, starts, axis=1)             # (R, G)
        tp, fp = np.cumsum(gp, axis=1), np.cumsum(gn, axis=1)
        # AUC = P(score_pos > score_neg) + 0.5 P(tie): negatives strictly below + half the tied
        below = n_neg[:, None] - fp                                  # negatives with lower scores
        out["roc_auc"] = (gp * (below + 0.5 * gn)).sum(axis=1) / (n_pos * n_neg)
        precision_at = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        out["pr_auc"] = (gp * precision_at).sum(axis=1) / n_pos
        pc = np.clip(p, _EPS, 1 - _EPS)
        out["log_loss"] = W @ -(y * np.log(pc) + (1 - y) * np.log(1 - pc)) / total
        out["brier"] = W @ (p - y) ** 2 / total
        pred = (p >= threshold).astype(float)
        tp_t, fp_t = W @ (pred * y), W @ (pred * (1 - y))
        fn_t = n_pos - tp_t
        out["accuracy"] = (total - fp_t - fn_t) / total
        out["precision"] = np.where(tp_t + fp_t > 0, tp_t / (tp_t + fp_t), 0.0)
        out["recall"] = np.where(n_pos > 0, tp_t / n_pos, 0.0)
        out["f1"] = np.where(2 * tp_t + fp_t + fn_t > 0, 2 * tp_t / (2 * tp_t + fp_t + fn_t), 0.0)
        bin_of, diff = _bin_index(p, bins), p - y
        ece = np.zeros(len(W))
        for b in np.unique(bin_of):
            inside = bin_of == b
            ece += np.abs(W[:, inside] @ diff[inside])               # |sum_p - sum_y| per bin
        out["ece"] = ece / total
    undefined = (n_pos == 0) | (n_neg == 0)
    out["roc_auc"] = np.where(undefined, np.nan, out["roc_auc"])
    out["pr_auc"] = np.where(n_pos == 0, np.nan, out["pr_auc"])
    return out


def _score_groups(p: np.ndarray) -> np.ndarray:
    """Start index of each run of equal scores in ``p`` (already sorted descending)."""
    return np.flatnonzero(np.r_[True, p[1:] != p[:-1]])


def _resample_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``n_boot`` resamples of ``n`` rows with replacement as (resamples, rows) count matrices, in
    chunks of at most ``_BOOT_CELLS`` cells."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _BOOT_CELLS // max(n, 1)))
    done = 0
    while done < n_boot:
        r = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=r * n).reshape(r, n).astype(float)
        done += r


def bootstrap_metrics(y: ArrayLike, p: ArrayLike, *, threshold: float = 0.5, n_boot: int = 200, seed: int = 0,
                      bins: int = 10, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals (low, high) of every headline metric over ``n_boot`` resamples."""
    y, p = _check(y, p)
    if n_boot < 1:
        return {name: (float("nan"), float("nan")) for name in HEADLINE}
    order = np.argsort(-p, kind="stable")      # resampling is exchangeable: sort rows once
    y, p = y[order], p[order]
    groups = _score_groups(p)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in HEADLINE}
    for W in _resample_weights(len(y), n_boot, seed):
        for name, values in _weighted_metrics(W, y, p, threshold, groups, bins).items():
            collected[name].append(values)
    tail = (1.0 - level) / 2 * 100
    out = {}
    for name in HEADLINE:
        values = np.concatenate(collected[name])
        values = values[np.isfinite(values)]
        if len(values) == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            low, high = np.percentile(values, [tail, 100 - tail])
            out[name] = (float(low), float(high))
    return out


def summary_metrics(y: ArrayLike, p: ArrayLike, *, threshold: float = 0.5, n_boot: int = 200,
                    seed: int = 0) -> dict[str, Any]:
    """Headline metrics, each as {"value", "low", "high"} (bootstrap 95 % percentile interval).

    Also: best_f1_threshold, threshold, positives, n and ``notes`` (why a value is NaN).
    """
    y, p = _check(y, p)
    notes: list[str] = []
    two = _two_classes(y)
    values: dict[str, float] = {}
    if two:
        values["roc_auc"] = float(skm.roc_auc_score(y, p))
    else:
        values["roc_auc"] = float("nan")
        notes.append("ROC-AUC is undefined: the labels hold one class only.")
    if y.sum() > 0:
        values["pr_auc"] = float(skm.average_precision_score(y, p))
    else:
        values["pr_auc"] = float("nan")
        notes.append("PR-AUC is undefined: there are no positive labels.")
    values["log_loss"] = float(skm.log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1]))
    values["brier"] = float(skm.brier_score_loss(y, p, pos_label=1))
    at = threshold_metrics(y, p, threshold)
    for name in ("accuracy", "precision", "recall", "f1"):
        values[name] = at[name]
    values["ece"] = expected_calibration_error(y, p)
    intervals = bootstrap_metrics(y, p, threshold=threshold, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {}
    for name in HEADLINE:
        low, high = intervals[name]
        out[name] = {"value": values[name], "low": low, "high": high}
    out["best_f1_threshold"] = best_f1_threshold(y, p)
    out["threshold"] = float(threshold)
    out["positives"] = int(y.sum())
    out["n"] = len(y)
    out["notes"] = notes
    return out


def metrics_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """A summary_metrics dict as a tidy frame: metric, value, low, high."""
    rows = [{"metric": name, **summary[name]} for name in HEADLINE if name in summary]
    return pd.DataFrame(rows, columns=["metric", "value", "low", "high"])


def paired_difference(y: ArrayLike, p_a: ArrayLike, p_b: ArrayLike, *, metrics: tuple[str, ...] = ("roc_auc", "pr_auc"),
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """How much model A beats model B on the same rows: metric(p_a) - metric(p_b) with a paired
    bootstrap interval. Each resample weights the rows once and scores both models on it, so the
    luck of which users fell in the window is shared and cancels; the interval is much narrower
    than comparing the two models' own intervals. Columns: metric, a, b, difference, low, high and
    ``share_not_ahead`` (the share of resamples where A is not better: lower is better for
    log_loss, brier and ece, higher for the rest)."""
    y, p_a = _check(y, p_a)
    _, p_b = _check(y, p_b)
    unknown = [m for m in metrics if m not in HEADLINE]
    if unknown:
        raise DataError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(HEADLINE)}.",
                        title="Bad metric input")
    point_a, point_b = (summary_metrics(y, p, n_boot=0) for p in (p_a, p_b))
    orders = [(p, np.argsort(-p, kind="stable")) for p in (p_a, p_b)]
    sides = [(y[o], p[o], _score_groups(p[o]), o) for p, o in orders]
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for W in _resample_weights(len(y), n_boot, seed):
        a, b = (_weighted_metrics(W[:, o], ys, ps, 0.5, g, 10) for ys, ps, g, o in sides)
        for m in metrics:
            diffs[m].append(a[m] - b[m])
    tail = (1.0 - level) / 2 * 100
    rows = []
    for m in metrics:
        values = np.concatenate(diffs[m]) if diffs[m] else np.zeros(0)     # n_boot < 1: no resample
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        lower_better = m in ("log_loss", "brier", "ece")
        not_ahead = float(np.mean(values >= 0 if lower_better else values <= 0)) if len(values) else np.nan
        a, b = point_a[m]["value"], point_b[m]["value"]
        rows.append({"metric": m, "a": a, "b": b, "difference": a - b,
                     "low": float(low), "high": float(high), "share_not_ahead": not_ahead})
    return pd.DataFrame(rows, columns=["metric", "a", "b", "difference", "low", "high", "share_not_ahead"])
