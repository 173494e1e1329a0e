"""How well one saved model ranks buyers on its test window, overall, at a cutoff and by segment.

:func:`evaluate_model` reads a model's card and its saved rows of one window (the test window, which
nothing was selected on; the validation window on request, or for models trained before the test
window existed) and computes everything that
does not depend on the cutoff once (an :class:`Evaluation`): rank metrics with bootstrap intervals,
the PR and ROC curves, the lift table, calibration bins, segment labels per row and rank metrics per
segment, and for an ensemble its members' PR-AUC. :func:`at_cutoff` then measures one cutoff (a
probability, or the top X % of rows) cheaply: the confusion counts, the threshold metrics and their
bootstrap intervals drawn from the counts (:func:`cutoff_intervals`). :func:`metrics_table`,
:func:`operating_points` and :func:`segment_table` shape the results for the Performance page.
:func:`paired_comparison` and :func:`ensemble_lead` say whether one model's lead over another holds
on the same users (a paired bootstrap of the difference).

Segments of the rows: activity (thirds of the users by events before the cutoff),
sequence length (events the model saw, capped at its maximum) and the user's most frequent
category (the busiest few by name, the rest "other").
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from core.errors import DataError
from core.modeling import metrics

CUTOFF_METRICS = ("accuracy", "precision", "recall", "f1")        # change with the cutoff
FIXED_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece")   # do not
CUTOFF_MODES = ("probability", "top")
N_BOOT = 200                # row resamples for the rank metrics' intervals (once per model)
N_BOOT_CUTOFF = 1000        # resamples of the four confusion counts per cutoff (cheap: multinomial)
TOP_CATEGORIES = 6          # categories named in the segment view; the rest are "other"
LENGTH_EDGES = (1, 5, 20, 50)   # lower edges of the sequence-length buckets below the maximum
SEGMENT_COLUMNS = ["segment_type", "segment", "rows", "positives", "roc_auc", "pr_auc"]
PAIRED_METRICS = ("roc_auc", "pr_auc", "log_loss")
N_BOOT_PAIRED = 1000        # row resamples of a paired difference
PAIRED_COLUMNS = ["against", "metric", "model", "other", "difference", "low", "high", "not_ahead"]


@dataclass
class Evaluation:
    """Everything about one model's rows of one window that does not depend on the cutoff."""

    name: str                       # the model's folder name, its label on charts and tables
    card: dict[str, Any]            # the model's card.json
    y: np.ndarray                   # (N,) 0/1 labels
    p: np.ndarray                   # (N,) predicted probabilities
    summary: dict[str, Any]         # core.modeling.metrics.summary_metrics (rank metrics with intervals)
    pr: pd.DataFrame                # core.modeling.metrics.pr_curve
    roc: pd.DataFrame               # core.modeling.metrics.roc_curve
    lift: pd.DataFrame              # core.modeling.metrics.lift_table (20 bins)
    calibration: pd.DataFrame       # core.modeling.metrics.calibration_bins (10 bins)
    segments: pd.DataFrame          # per row: one ordered categorical column per segment type
    segment_auc: pd.DataFrame       # per segment: SEGMENT_COLUMNS
    members: pd.DataFrame = field(default_factory=pd.DataFrame)   # ensembles: member, value, low, high, weight
    split: str = "test"             # the window the rows come from: test | valid

    @property
    def base_rate(self) -> float:
        """Share of buyers among the rows."""
        return float(self.y.mean())

    @property
    def window(self) -> str:
        """The window in words, for captions."""
        return ("test window" if self.split == "test"
                else "validation window (the one the model was selected on)")


@dataclass
class AtCutoff:
    """One model measured at one cutoff."""

    threshold: float                          # the score a row needs to be flagged
    confusion: pd.DataFrame                   # core.modeling.metrics.confusion
    values: dict[str, float]                  # core.modeling.metrics.threshold_metrics
    intervals: dict[str, tuple[float, float]]  # 95 % intervals of CUTOFF_METRICS
    fpr: float                                # false-positive rate (NaN without negatives)


# -- segments ----------------------------------------------------------------------------------
def length_buckets(max_len: int) -> list[tuple[int, int]]:
    """(low, high) event counts per sequence-length bucket; the last one is the full window."""
    if max_len < 1:
        raise DataError(f"max_len must be at least 1, got {max_len}.", title="Bad segment input")
    edges = [e for e in LENGTH_EDGES if e < max_len] + [max_len]
    return [(low, high - 1) for low, high in pairwise(edges)] + [(max_len, max_len)]


def segment_labels(rows: pd.DataFrame, max_len: int, *, top_categories: int = TOP_CATEGORIES) -> pd.DataFrame:
    """Segment labels per validation row (``rows`` needs ``n_events``, may have ``top_category``),
    as ordered categoricals: ``activity`` (thirds of the rows by events before the cutoff, edges
    rounded to whole events), ``sequence length`` (events the model saw: ``n_events`` capped at
    ``max_len``, at least 1) and ``top category`` (the ``top_categories`` most common by rows,
    then "other"; "none" for a row without one)."""
    n = rows["n_events"].fillna(0).astype("int64").to_numpy()
    out = pd.DataFrame(index=rows.index)
    q1, q2 = (int(v) for v in np.quantile(n, [1 / 3, 2 / 3]).round()) if len(n) else (0, 0)
    names = [f"low (≤ {q1:,} events)", f"medium ({q1 + 1:,}–{q2:,} events)", f"high (> {q2:,} events)"]
    level = np.select([n <= q1, n <= q2], [0, 1], default=2)
    out["activity"] = pd.Categorical.from_codes(level, categories=pd.Index(names), ordered=True)
    buckets = length_buckets(max_len)
    names = [f"{lo:,}–{hi:,} events" if lo != hi else f"{lo:,} events (full)" for lo, hi in buckets]
    seen = np.minimum(np.maximum(n, 1), max_len)
    codes = np.searchsorted(np.array([lo for lo, _ in buckets]), seen, side="right") - 1
    out["sequence length"] = pd.Categorical.from_codes(codes, categories=pd.Index(names), ordered=True)
    if "top_category" in rows:
        cats = rows["top_category"].astype("string").fillna("none").astype(str)
        top = cats.value_counts().head(top_categories).index.tolist()
        labels = cats.where(cats.isin(top), "other")
        order = top + (["other"] if (labels == "other").any() else [])
        out["top category"] = pd.Categorical(labels, categories=order, ordered=True)
    return out


def segment_groups(segments: pd.DataFrame) -> Iterator[tuple[str, str, np.ndarray]]:
    """(segment type, segment, row positions) in display order; empty segments are left out."""
    for kind in segments.columns:
        for name, index in segments.groupby(kind, sort=True, observed=True).indices.items():
            yield str(kind), str(name), np.asarray(index)


def segment_rank_metrics(y: np.ndarray, p: np.ndarray, segments: pd.DataFrame) -> pd.DataFrame:
    """ROC-AUC and PR-AUC per segment (SEGMENT_COLUMNS). ROC-AUC is NaN where a segment holds one
    class only, PR-AUC where it holds no buyer."""
    records = []
    for kind, name, index in segment_groups(segments):
        ys, ps = y[index], p[index]
        positives = int(ys.sum())
        records.append({
            "segment_type": kind, "segment": name, "rows": len(index), "positives": positives,
            "roc_auc": float(roc_auc_score(ys, ps)) if 0 < positives < len(ys) else np.nan,
            "pr_auc": float(average_precision_score(ys, ps)) if positives > 0 else np.nan})
    return pd.DataFrame(records, columns=SEGMENT_COLUMNS)


def member_metrics(card: dict[str, Any], summary: dict[str, Any]) -> pd.DataFrame:
    """An ensemble's PR-AUC with its interval, then each member's from the card, with its weight
    (member, value, low, high, weight). Empty for a model that is not an ensemble."""
    if card.get("kind") != "ensemble":
        return pd.DataFrame()
    weights = (card.get("ensemble") or {}).get("weights", {})
    rows = [{"member": "ensemble", **summary["pr_auc"], "weight": np.nan}]
    for name, info in (card.get("members") or {}).items():
        value = (info.get("metrics") or {}).get("pr_auc")
        if isinstance(value, dict):
            rows.append({"member": name, **value, "weight": weights.get(name, np.nan)})
    return pd.DataFrame(rows, columns=["member", "value", "low", "high", "weight"])


# -- one model ---------------------------------------------------------------------------------
def evaluate(name: str, card: dict[str, Any], rows: pd.DataFrame, *, n_boot: int = N_BOOT,
             seed: int = 0) -> Evaluation:
    """The cutoff-free evaluation of ``rows`` (label, score, n_events[, top_category]) of the model
    described by ``card``; ``rows.attrs["split"]`` names their window (default test). DataError when
    the rows are empty or out of range."""
    y = rows["label"].to_numpy(dtype=float)
    p = rows["score"].to_numpy(dtype=float)
    summary = metrics.summary_metrics(y, p, threshold=0.5, n_boot=n_boot, seed=seed)   # checks y and p
    segments = segment_labels(rows, int((card.get("label") or {}).get("max_len", 100)))
    return Evaluation(name=name, card=card, y=y, p=p, summary=summary,
                      pr=metrics.pr_curve(y, p), roc=metrics.roc_curve(y, p),
                      lift=metrics.lift_table(y, p, bins=20),
                      calibration=metrics.calibration_bins(y, p, bins=10), segments=segments,
                      segment_auc=segment_rank_metrics(y, p, segments),
                      members=member_metrics(card, summary), split=str(rows.attrs.get("split", "test")))


def evaluate_model(model_dir: str | Path, *, split: str | None = None, n_boot: int = N_BOOT,
                   seed: int = 0) -> Evaluation:
    """:func:`evaluate` of a saved model's card and rows of ``split`` (None: its test window;
    ModelError when the folder is not a model or has no such rows)."""
    from core.modeling.pipeline import load_evaluation
    from models.artifact import load_card

    card = load_card(model_dir)
    return evaluate(Path(model_dir).name, card, load_evaluation(model_dir, split), n_boot=n_boot, seed=seed)


# -- at a cutoff -------------------------------------------------------------------------------
def cutoff_intervals(counts: dict[str, int], n_boot: int = N_BOOT_CUTOFF,
                     seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % bootstrap intervals of accuracy, precision, recall and F1 at a fixed threshold, from
    the confusion counts ``TP``, ``FP``, ``FN``, ``TN``.

    Resampling the rows with replacement only moves the four confusion counts, and their joint
    distribution is multinomial with the observed cell shares, so drawing the counts directly is
    the same bootstrap as resampling rows, at a cost independent of the number of rows. A resample
    with nothing flagged (or no buyer) counts precision (recall) as 0, as scikit-learn does.
    """
    tp, fp, fn, tn = (int(counts[k]) for k in ("TP", "FP", "FN", "TN"))
    n = tp + fp + fn + tn
    if n == 0:
        raise DataError("no rows to resample: every confusion count is 0.", title="Bad metric input")
    draws = np.random.default_rng(seed).multinomial(n, np.array([tp, fp, fn, tn]) / n, size=n_boot)
    TP, FP, FN, TN = draws.T.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {"accuracy": (TP + TN) / n,
                  "precision": np.where(TP + FP > 0, TP / (TP + FP), 0.0),
                  "recall": np.where(TP + FN > 0, TP / (TP + FN), 0.0),
                  "f1": np.where(2 * TP + FP + FN > 0, 2 * TP / (2 * TP + FP + FN), 0.0)}
    out: dict[str, tuple[float, float]] = {}
    for name, v in values.items():
        low, high = np.percentile(v, [2.5, 97.5])
        out[name] = (float(low), float(high))
    return out


def cutoff_threshold(ev: Evaluation, mode: str, value: float) -> float:
    """The score threshold of a cutoff: ``value`` itself (mode ``probability``) or the score of the
    last row inside the top ``value`` % (mode ``top``)."""
    if mode not in CUTOFF_MODES:
        raise DataError(f"cutoff mode must be one of {', '.join(CUTOFF_MODES)}, got {mode!r}.",
                        title="Bad cutoff")
    if mode == "top":
        return metrics.threshold_for_top_fraction(ev.p, float(value) / 100)
    return float(value)


def at_cutoff(ev: Evaluation, mode: str, value: float, *, n_boot: int = N_BOOT_CUTOFF) -> AtCutoff:
    """``ev`` measured at one cutoff (see :func:`cutoff_threshold`)."""
    threshold = cutoff_threshold(ev, mode, value)
    confusion = metrics.confusion(ev.y, ev.p, threshold)
    counts = {str(k): int(v) for k, v in zip(confusion["outcome"], confusion["count"], strict=True)}
    negatives = counts["FP"] + counts["TN"]
    return AtCutoff(threshold=threshold, confusion=confusion,
                    values=metrics.threshold_metrics(ev.y, ev.p, threshold),
                    intervals=cutoff_intervals(counts, n_boot=n_boot),
                    fpr=counts["FP"] / negatives if negatives else float("nan"))


def metrics_table(evals: Sequence[Evaluation], cuts: Sequence[AtCutoff]) -> pd.DataFrame:
    """One row per metric (FIXED_METRICS, then CUTOFF_METRICS): ``metric`` (its key), ``at the
    cutoff`` and per model its value and ``<name> 95% CI`` as text ("–" when unknown)."""
    rows = []
    for metric in (*FIXED_METRICS, *CUTOFF_METRICS):
        row: dict[str, Any] = {"metric": metric, "at the cutoff": metric in CUTOFF_METRICS}
        for ev, cut in zip(evals, cuts, strict=True):
            if metric in CUTOFF_METRICS:
                value, (low, high) = cut.values[metric], cut.intervals[metric]
            else:
                value, low, high = (ev.summary[metric][k] for k in ("value", "low", "high"))
            row[ev.name] = value
            row[f"{ev.name} 95% CI"] = "–" if np.isnan(low) else f"[{low:.3f}, {high:.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def operating_points(evals: Sequence[Evaluation], cuts: Sequence[AtCutoff]) -> pd.DataFrame:
    """Where each model's cutoff sits on its curves: model, threshold, precision, recall, fpr,
    tpr (= recall), flagged_share."""
    return pd.DataFrame([{"model": ev.name, "threshold": cut.threshold,
                          "precision": cut.values["precision"], "recall": cut.values["recall"],
                          "fpr": cut.fpr, "tpr": cut.values["recall"],
                          "flagged_share": cut.values["flagged_share"]}
                         for ev, cut in zip(evals, cuts, strict=True)],
                        columns=["model", "threshold", "precision", "recall", "fpr", "tpr", "flagged_share"])


def segment_table(ev: Evaluation, threshold: float) -> pd.DataFrame:
    """Per segment: SEGMENT_COLUMNS plus ``flagged`` (rows at or above ``threshold``) and
    ``precision`` among them (NaN when none is flagged)."""
    flagged = ev.p >= threshold
    records = []
    for kind, name, index in segment_groups(ev.segments):
        hits = flagged[index]
        records.append({"segment_type": kind, "segment": name, "flagged": int(hits.sum()),
                        "precision": float(ev.y[index][hits].mean()) if hits.any() else np.nan})
    extra = pd.DataFrame(records, columns=["segment_type", "segment", "flagged", "precision"])
    return ev.segment_auc.merge(extra, on=["segment_type", "segment"], how="left")


def window_table(card: dict[str, Any]) -> pd.DataFrame:
    """A model's headline metrics on the test window beside the validation window's (metric, test
    window, validation window), from its card. Models older than the test window have only the
    validation column."""
    split = card.get("metrics_split", "valid")
    test = card.get("metrics", {}) if split == "test" else {}
    valid = card.get("valid_metrics", {}) if split == "test" else card.get("metrics", {})
    rows = []
    for name in FIXED_METRICS:
        cells = {label: (m.get(name) or {}).get("value", np.nan) if isinstance(m.get(name), dict) else np.nan
                 for label, m in (("test window", test), ("validation window", valid))}
        rows.append({"metric": name, **cells})
    return pd.DataFrame(rows, columns=["metric", "test window", "validation window"])


# -- paired differences -------------------------------------------------------------------------------
@dataclass
class Paired:
    """One model's lead over others on the rows they share."""

    table: pd.DataFrame         # PAIRED_COLUMNS; empty when the models cannot be compared
    rows: int                   # rows both models scored (joined on user and cutoff)
    note: str = ""              # why there is no table, when there is none

    @classmethod
    def none(cls, note: str, rows: int = 0) -> Paired:
        """No comparison, and why."""
        return cls(pd.DataFrame(columns=PAIRED_COLUMNS), rows, note)


def _paired_rows(model: pd.Series, others: dict[str, pd.Series], y: pd.Series,
                 n_boot: int) -> pd.DataFrame:
    parts = [metrics.paired_difference(y, model, other, metrics=PAIRED_METRICS, n_boot=n_boot)
             .rename(columns={"a": "model", "b": "other", "share_not_ahead": "not_ahead"}).assign(against=name)
             for name, other in others.items()]
    return pd.concat(parts, ignore_index=True)[PAIRED_COLUMNS]


def ensemble_lead(model_dir: str | Path, *, n_boot: int = N_BOOT_PAIRED) -> Paired:
    """An ensemble's lead over each of its members on its test window, from its saved rows (the
    members' scores are saved beside the ensemble's). An empty table, with the reason, for other
    kinds and for models without a test window."""
    from core.modeling.pipeline import load_evaluation
    from models.artifact import load_card

    card = load_card(model_dir)
    if card.get("kind") != "ensemble":
        return Paired.none("not an ensemble: it has no members.")
    if card.get("metrics_split") != "test":
        return Paired.none("this ensemble predates the test window; retrain it to compare it with its members.")
    rows = load_evaluation(model_dir, "test")
    members = sorted((card.get("ensemble") or {}).get("weights") or {})
    others = {m: rows[f"score_{m}"] for m in members if f"score_{m}" in rows}
    if not others:
        return Paired.none("its saved rows hold no member scores; retrain it with this version.", len(rows))
    return Paired(_paired_rows(rows["score"], others, rows["label"], n_boot), len(rows))


def paired_comparison(model_dir: str | Path, other_dir: str | Path, *,
                      n_boot: int = N_BOOT_PAIRED) -> Paired:
    """``model_dir``'s lead over ``other_dir`` on the test rows both hold (the same user at the
    same cutoff, with the same label): a paired bootstrap interval of each difference. Two models
    of different datasets or label definitions, or without a test window, share no rows: the
    table is empty and ``note`` says why."""
    from core.modeling.pipeline import load_evaluation
    from models.artifact import load_card

    cards = [load_card(d) for d in (model_dir, other_dir)]
    if any(c.get("metrics_split") != "test" for c in cards):
        return Paired.none("one of them predates the test window, so there are no test rows to pair.")
    if cards[0].get("dataset") != cards[1].get("dataset"):
        return Paired.none(f"they were trained on different datasets ({cards[0].get('dataset')} and "
                           f"{cards[1].get('dataset')}), so they scored different users.")
    labels = [{k: (c.get("label") or {}).get(k) for k in ("horizon", "scope")} for c in cards]
    if labels[0] != labels[1]:
        return Paired.none(f"they predict different things ({labels[0]} and {labels[1]}).")
    keys = ["user_id", "cutoff"]
    a, b = (load_evaluation(d, "test")[[*keys, "label", "score"]] for d in (model_dir, other_dir))
    both = a.merge(b, on=keys, suffixes=("", "_other"))
    both = both[both["label"] == both["label_other"]]
    if both.empty or both["label"].nunique() < 2:
        return Paired.none("their test windows share no users with both buyers and non-buyers (different "
                           "cutoffs?), so the lead cannot be measured.", len(both))
    table = _paired_rows(both["score"], {Path(other_dir).name: both["score_other"]}, both["label"], n_boot)
    return Paired(table, len(both))
