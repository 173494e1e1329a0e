"""Performance: how well a model ranks buyers on its validation window, at one cutoff.

Reads: model (the sidebar's, or another) and an optional second one to compare -> their saved
validation rows (``core.modeling.pipeline.load_validation``) -> ``core.modeling.metrics`` -> ``core.charts``.
Everything that does not depend on the cutoff (bootstrap intervals of the rank metrics, curves,
lift table, calibration bins, segment labels) is computed once per model and card version and
cached; the cutoff lives in a fragment, so moving it reruns only the charts that depend on it.
The cutoff is shareable: ``?cutoff=0.35`` (a probability) or ``?cutoff=top10`` (the top 10 %),
``?compare=<model folder>``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core import charts
from core.modeling import metrics
from pages import common

MODE_KEY, PROB_KEY, TOP_KEY = "perf_cut_mode", "perf_cut_prob", "perf_cut_top"
PICK_KEY, COMPARE_KEY, CONFUSION_KEY = "perf_model", "perf_compare", "perf_confusion_view"
SAVED_KEY = "_perf_saved"          # the cutoff widgets' last values (kept across pages)
MODES = {"probability": "probability ≥", "top": "top X % of users"}
CUTOFF_METRICS = ("accuracy", "precision", "recall", "f1")
FIXED_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece")
N_BOOT_CUTOFF = 1000               # resamples of the four confusion counts (cheap: multinomial)
TOP_CATEGORIES = 6                 # categories shown by name in the segment view; the rest: "other"


# -- cached evaluation of one model (no st.* inside) ----------------------------------------------
@dataclass
class Evaluation:
    """Everything about one model's validation rows that does not depend on the cutoff."""

    name: str                       # the model's folder name, used as its label on charts
    card: dict[str, Any]
    y: np.ndarray                   # (N,) 0/1 labels
    p: np.ndarray                   # (N,) predicted probabilities
    summary: dict[str, Any]         # core.modeling.metrics.summary_metrics (rank metrics with intervals)
    pr: pd.DataFrame                # core.modeling.metrics.pr_curve
    roc: pd.DataFrame               # core.modeling.metrics.roc_curve
    lift: pd.DataFrame              # core.modeling.metrics.lift_table
    calibration: pd.DataFrame       # core.modeling.metrics.calibration_bins
    segments: pd.DataFrame          # per row: activity, length, category (segment labels)
    segment_auc: pd.DataFrame       # per segment: segment_type, segment, rows, positives, roc_auc, pr_auc
    members: pd.DataFrame = field(default_factory=pd.DataFrame)   # ensembles: member, value, low, high, weight


def _length_buckets(max_len: int) -> list[tuple[int, int]]:
    """(low, high) event counts per sequence-length bucket, the last one the full window."""
    edges = [e for e in (1, 5, 20, 50) if e < max_len] + [max_len]
    return [(low, high - 1) for low, high in zip(edges, edges[1:])] + [(max_len, max_len)]


def _segments(rows: pd.DataFrame, max_len: int) -> pd.DataFrame:
    """Segment labels per validation row, as ordered categoricals: activity level (thirds of the
    users by events before the cutoff), sequence length (events the model saw, capped at
    ``max_len``) and the user's most frequent category (the top few by rows, then "other")."""
    n = rows["n_events"].fillna(0).astype("int64").to_numpy()
    out = pd.DataFrame(index=rows.index)
    q1, q2 = (int(v) for v in np.quantile(n, [1 / 3, 2 / 3]).round()) if len(n) else (0, 0)
    names = [f"low (≤ {q1:,} events)", f"medium ({q1 + 1:,}–{q2:,} events)", f"high (> {q2:,} events)"]
    level = np.select([n <= q1, n <= q2], [0, 1], default=2)
    out["activity"] = pd.Categorical.from_codes(level, categories=names, ordered=True)
    buckets = _length_buckets(max_len)
    names = [f"{lo:,}–{hi:,} events" if lo != hi else f"{lo:,} events (full)" for lo, hi in buckets]
    seen = np.minimum(np.maximum(n, 1), max_len)
    codes = np.searchsorted(np.array([lo for lo, _ in buckets]), seen, side="right") - 1
    out["sequence length"] = pd.Categorical.from_codes(codes, categories=names, ordered=True)
    if "top_category" in rows:
        cats = rows["top_category"].astype("string").fillna("none").astype(str)
        top = cats.value_counts().head(TOP_CATEGORIES).index.tolist()
        labels = cats.where(cats.isin(top), "other")
        order = top + (["other"] if (labels == "other").any() else [])
        out["top category"] = pd.Categorical(labels, categories=order, ordered=True)
    return out


def _groups(segments: pd.DataFrame):
    """(segment type, segment, row positions) in display order; empty segments left out."""
    for kind in segments.columns:
        for name, index in segments.groupby(kind, sort=True, observed=True).indices.items():
            yield kind, str(name), index


def _segment_rank_metrics(y: np.ndarray, p: np.ndarray, segments: pd.DataFrame) -> pd.DataFrame:
    from sklearn.metrics import average_precision_score, roc_auc_score

    records = []
    for kind, name, index in _groups(segments):
        ys, ps = y[index], p[index]
        positives = int(ys.sum())
        records.append({
            "segment_type": kind, "segment": name, "rows": int(len(index)), "positives": positives,
            "roc_auc": float(roc_auc_score(ys, ps)) if 0 < positives < len(ys) else np.nan,
            "pr_auc": float(average_precision_score(ys, ps)) if positives > 0 else np.nan})
    return pd.DataFrame(records, columns=["segment_type", "segment", "rows", "positives", "roc_auc",
                                          "pr_auc"])


def _members(card: dict[str, Any], summary: dict[str, Any]) -> pd.DataFrame:
    if card.get("kind") != "ensemble":
        return pd.DataFrame()
    weights = (card.get("ensemble") or {}).get("weights", {})
    rows = [{"member": "ensemble", **summary["pr_auc"], "weight": np.nan}]
    for name, info in (card.get("members") or {}).items():
        value = (info.get("metrics") or {}).get("pr_auc")
        if isinstance(value, dict):
            rows.append({"member": name, **value, "weight": weights.get(name, np.nan)})
    return pd.DataFrame(rows, columns=["member", "value", "low", "high", "weight"])


@st.cache_resource(show_spinner=False, max_entries=8)
def _evaluation_cached(model_dir: str, stamp: int) -> Evaluation:
    """Read-only once built (shared by every session): keyed on the card's mtime."""
    from core.modeling.pipeline import load_validation
    from models.artifact import load_card

    card = load_card(model_dir)
    rows = load_validation(model_dir)
    y = rows["label"].to_numpy(dtype=float)
    p = rows["score"].to_numpy(dtype=float)
    summary = metrics.summary_metrics(y, p, threshold=0.5, n_boot=200, seed=0)
    segments = _segments(rows, int((card.get("label") or {}).get("max_len", 100)))
    return Evaluation(name=Path(model_dir).name, card=card, y=y, p=p, summary=summary,
                      pr=metrics.pr_curve(y, p), roc=metrics.roc_curve(y, p),
                      lift=metrics.lift_table(y, p, bins=20),
                      calibration=metrics.calibration_bins(y, p, bins=10), segments=segments,
                      segment_auc=_segment_rank_metrics(y, p, segments), members=_members(card, summary))


def evaluation(model_dir: str) -> Evaluation:
    card = Path(model_dir) / "card.json"
    return _evaluation_cached(str(model_dir), card.stat().st_mtime_ns if card.exists() else 0)


# -- per cutoff (cheap) ---------------------------------------------------------------------------
def cutoff_intervals(counts: dict[str, int], n_boot: int = N_BOOT_CUTOFF, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % bootstrap intervals of accuracy, precision, recall and F1 at a fixed threshold.

    Resampling the rows with replacement only moves the four confusion counts, and their joint
    distribution is multinomial with the observed cell shares, so drawing the counts directly is
    the same bootstrap as resampling rows, at a cost independent of the number of rows.
    """
    tp, fp, fn, tn = (int(counts[k]) for k in ("TP", "FP", "FN", "TN"))
    n = tp + fp + fn + tn
    draws = np.random.default_rng(seed).multinomial(n, np.array([tp, fp, fn, tn]) / n, size=n_boot)
    TP, FP, FN, TN = draws.T.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {"accuracy": (TP + TN) / n,
                  "precision": np.where(TP + FP > 0, TP / (TP + FP), 0.0),
                  "recall": np.where(TP + FN > 0, TP / (TP + FN), 0.0),
                  "f1": np.where(2 * TP + FP + FN > 0, 2 * TP / (2 * TP + FP + FN), 0.0)}
    return {k: tuple(float(x) for x in np.percentile(v, [2.5, 97.5])) for k, v in values.items()}


@dataclass
class AtCutoff:
    threshold: float
    confusion: pd.DataFrame          # core.modeling.metrics.confusion
    values: dict[str, float]         # core.modeling.metrics.threshold_metrics
    intervals: dict[str, tuple[float, float]]
    fpr: float


def at_cutoff(ev: Evaluation, mode: str, value: float) -> AtCutoff:
    threshold = (metrics.threshold_for_top_fraction(ev.p, value / 100) if mode == "top" else float(value))
    confusion = metrics.confusion(ev.y, ev.p, threshold)
    counts = dict(zip(confusion["outcome"], confusion["count"]))
    values = metrics.threshold_metrics(ev.y, ev.p, threshold)
    negatives = counts["FP"] + counts["TN"]
    return AtCutoff(threshold=threshold, confusion=confusion, values=values,
                    intervals=cutoff_intervals(counts),
                    fpr=counts["FP"] / negatives if negatives else float("nan"))


def metrics_table(evals: list[Evaluation], cuts: list[AtCutoff]) -> pd.DataFrame:
    rows = []
    for metric in (*FIXED_METRICS, *CUTOFF_METRICS):
        row: dict[str, Any] = {"metric": charts.METRIC_LABELS[metric],
                               "at the cutoff": metric in CUTOFF_METRICS}
        for ev, cut in zip(evals, cuts):
            if metric in CUTOFF_METRICS:
                value, (low, high) = cut.values[metric], cut.intervals[metric]
            else:
                value, low, high = (ev.summary[metric][k] for k in ("value", "low", "high"))
            row[ev.name] = value
            row[f"{ev.name} 95% CI"] = "–" if pd.isna(low) else f"[{low:.3f}, {high:.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def segment_table(ev: Evaluation, threshold: float) -> pd.DataFrame:
    flagged = ev.p >= threshold
    records = []
    for kind, name, index in _groups(ev.segments):
        hits = flagged[index]
        records.append({"segment_type": kind, "segment": name, "flagged": int(hits.sum()),
                        "precision": float(ev.y[index][hits].mean()) if hits.any() else np.nan})
    return ev.segment_auc.merge(pd.DataFrame(records), on=["segment_type", "segment"], how="left")


# -- state: session, then the URL, then defaults --------------------------------------------------
def _seed_cutoff(default_prob: float) -> None:
    state, saved = st.session_state, st.session_state.get(SAVED_KEY, {})
    raw = str(st.query_params.get("cutoff", "") or "")
    url: dict[str, Any] = {}
    try:
        if raw.startswith("top"):
            url = {MODE_KEY: "top", TOP_KEY: min(max(float(raw[3:]), 0.5), 100.0)}
        elif raw:
            url = {MODE_KEY: "probability", PROB_KEY: min(max(float(raw), 0.0), 1.0)}
    except ValueError:
        url = {}          # a hand-edited link: fall back to the defaults
    defaults = {MODE_KEY: "probability", PROB_KEY: default_prob, TOP_KEY: 10.0}
    for key, value in defaults.items():
        if key not in state:
            state[key] = saved.get(key, url.get(key, value))


def _remember_cutoff() -> None:
    state = st.session_state
    state[SAVED_KEY] = {k: state[k] for k in (MODE_KEY, PROB_KEY, TOP_KEY) if k in state}
    st.query_params["cutoff"] = (f"top{state[TOP_KEY]:g}" if state[MODE_KEY] == "top"
                                 else f"{state[PROB_KEY]:g}")


def _sync_pick() -> None:
    st.session_state[common.MODEL_KEY] = st.session_state[PICK_KEY]


def _label(paths_info: pd.DataFrame, path: str | None) -> str:
    if path is None:
        return "— none —"
    row = paths_info[paths_info["path"] == path]
    if row.empty:
        return Path(path).name
    r = row.iloc[0]
    auc = "" if r["pr_auc"] is None or pd.isna(r["pr_auc"]) else f" · PR-AUC {r['pr_auc']:.3f}"
    return f"{Path(path).name} · {r['kind']}{auc}"


# -- page -----------------------------------------------------------------------------------------
st.title("Performance")
st.caption("How well a model finds the users who buy, on the last complete time window it never "
           "trained on. One cutoff drives every number and chart below.")
common.show_flash()

models = common.saved_models()
usable = models[models["error"].isna()] if not models.empty else models
if usable.empty:
    st.info("No trained model yet: train one on the **Train** page or run "
            "`python -m core train --dataset NAME`.", icon=":material/info:")
    st.stop()

dataset = common.current_dataset()
paths = usable["path"].tolist()
if dataset is not None:            # the current dataset's models first
    paths = sorted(paths, key=lambda p: usable.loc[usable["path"] == p, "dataset"].iloc[0] != dataset)
current = common.current_model()
if current in paths and st.session_state.get(PICK_KEY) != current:
    st.session_state[PICK_KEY] = current
elif st.session_state.get(PICK_KEY) not in paths:
    st.session_state[PICK_KEY] = paths[0]
wanted = st.query_params.get("compare")
if COMPARE_KEY not in st.session_state:
    match = [p for p in paths if Path(p).name == wanted]
    st.session_state[COMPARE_KEY] = match[0] if match else None

left, right = st.columns(2, gap="medium")
primary = left.selectbox(
    "Model", paths, key=PICK_KEY, on_change=_sync_pick, format_func=lambda p: _label(usable, p),
    help="The model to look at (the same as the sidebar's; changing it here changes it there).")
others = [None, *[p for p in paths if p != primary]]
if st.session_state.get(COMPARE_KEY) not in others:
    st.session_state[COMPARE_KEY] = None
second = right.selectbox(
    "Compare with", others, key=COMPARE_KEY, format_func=lambda p: _label(usable, p),
    placeholder="— none —",
    help="Optional second model, drawn beside the first; each is measured on its own "
         "validation rows.")
if second is None:
    st.query_params.pop("compare", None)
else:
    st.query_params["compare"] = Path(second).name

evals: list[Evaluation] = []
with common.guard():
    with st.spinner("Measuring the model on its validation rows…"):
        evals = [evaluation(primary)] + ([evaluation(second)] if second else [])
if not evals:
    st.stop()

main = evals[0]
label = main.card.get("label") or {}
cutoffs = main.card.get("cutoffs") or {}
st.caption(
    f"**{main.name}** · {main.card.get('kind')} · dataset **{main.card.get('dataset', '–')}** · "
    f"horizon {label.get('horizon', '–')} · scope {label.get('scope', '–')} · validation cutoff "
    f"{common.fmt_ts(cutoffs.get('valid_cutoff'))} · {common.fmt_int(len(main.y))} rows, "
    f"{common.fmt_int(main.y.sum())} buyers ({common.fmt_pct(main.y.mean())})")
if dataset is not None and main.card.get("dataset") not in (None, dataset):
    st.warning(f"This model was trained on **{main.card.get('dataset')}**, not on the current "
               f"dataset **{dataset}**; its validation rows come from **{main.card.get('dataset')}**.")
for note in main.summary.get("notes", []):
    st.warning(note)

best = main.summary.get("best_f1_threshold")
_seed_cutoff(round(float(best), 2) if best is not None and np.isfinite(best) else 0.5)
names = [ev.name for ev in evals]


@st.fragment
def cutoff_view() -> None:
    """The cutoff and everything it drives (reruns alone when the cutoff moves)."""
    a, b = st.columns([1, 2], vertical_alignment="bottom")
    mode = a.radio("Set the cutoff as", list(MODES), key=MODE_KEY, format_func=MODES.get,
                   horizontal=True,
                   help="A probability: users scored at or above it are flagged. Top X %: the "
                        "X % highest-scored users of each model are flagged.")
    if mode == "top":
        value = b.slider("Top share of users flagged (%)", 0.5, 100.0, key=TOP_KEY, step=0.5,
                         format="%.1f%%", help="Flag this share of users, highest scores first.")
    else:
        value = b.slider("Cutoff probability", 0.0, 1.0, key=PROB_KEY, step=0.01, format="%.2f",
                         help="Users whose predicted purchase probability is at least this are "
                              "flagged. The default is the cutoff with the best F1.")
    _remember_cutoff()
    cuts = [at_cutoff(ev, mode, value) for ev in evals]

    main_cut = cuts[0]
    cols = st.columns(5)
    cols[0].metric("Cutoff probability", f"{main_cut.threshold:.3f}",
                   help="The score a user needs to be flagged (for top X %, the score of the last "
                        "user inside it).")
    cols[1].metric("Users flagged", common.fmt_int(main_cut.values["flagged"]),
                   help=f"{common.fmt_pct(main_cut.values['flagged_share'])} of the validation rows.")
    cols[2].metric("Precision", common.fmt_pct(main_cut.values["precision"]),
                   help="Share of flagged users who bought.")
    cols[3].metric("Recall", common.fmt_pct(main_cut.values["recall"]),
                   help="Share of buyers who were flagged.")
    base = float(main.y.mean())
    cols[4].metric("Lift", f"{main_cut.values['precision'] / base:.2f}×" if base > 0 else "–",
                   help="Precision divided by the share of buyers among all rows.")

    st.markdown("##### Metrics with bootstrap 95 % intervals")
    table = metrics_table(evals, cuts)
    st.dataframe(table, hide_index=True, key="perf_metrics_table", column_config={
        "at the cutoff": st.column_config.CheckboxColumn(
            help="Accuracy, precision, recall and F1 change with the cutoff; the others do not."),
        **{n: st.column_config.NumberColumn(n, format="%.3f") for n in names}})

    points = [(ev.name, cut) for ev, cut in zip(evals, cuts)]
    pr = pd.concat([ev.pr.assign(model=ev.name) for ev in evals], ignore_index=True)
    roc = pd.concat([ev.roc.assign(model=ev.name) for ev in evals], ignore_index=True)
    pr_points = pd.DataFrame([{"model": n, "recall": c.values["recall"],
                               "precision": c.values["precision"], "threshold": c.threshold}
                              for n, c in points])
    roc_points = pd.DataFrame([{"model": n, "fpr": c.fpr, "tpr": c.values["recall"],
                                "threshold": c.threshold} for n, c in points])
    left, right = st.columns(2, gap="medium")
    with left:
        common.chart(charts.pr_curves(pr, points=pr_points, base_rate=base), key="perf_pr")
    with right:
        common.chart(charts.roc_curves(roc, points=roc_points), key="perf_roc")

    view = st.segmented_control("Confusion matrix shows", ["counts", "shares"], default="counts",
                                key=CONFUSION_KEY,
                                help="Counts of validation rows, or each cell's share of all rows.")
    shares = view == "shares"
    for i, (ev, cut) in enumerate(zip(evals, cuts)):
        left, right = st.columns(2, gap="medium")
        with left:
            common.chart(charts.confusion_matrix(cut.confusion, shares=shares,
                                                 title=f"Confusion matrix · {ev.name}"),
                         key=f"perf_confusion_{i}")
        with right:
            fig = charts.score_histogram(pd.DataFrame({"score": ev.p, "label": ev.y}),
                                         threshold=cut.threshold)
            if len(evals) > 1:
                fig.update_layout(title_text=f"Scores by true label · {ev.name}")
            common.chart(fig, key=f"perf_hist_{i}")

    lift = pd.concat([ev.lift.assign(model=ev.name) for ev in evals], ignore_index=True)
    left, right = st.columns(2, gap="medium")
    with left:
        common.chart(charts.lift_chart(lift, cutoff_fraction=main_cut.values["flagged_share"]),
                     key="perf_lift")
    with right:
        common.chart(charts.gains_chart(lift, cutoff_fraction=main_cut.values["flagged_share"]),
                     key="perf_gains")

    segments = segment_table(main, main_cut.threshold)
    common.chart(charts.segment_quality(segments), key="perf_segments")
    st.dataframe(
        segments[["segment_type", "segment", "rows", "positives", "roc_auc", "pr_auc", "flagged",
                  "precision"]],
        hide_index=True, key="perf_segment_table",
        column_config={**common.count_columns(["rows", "positives", "flagged"]),
                       "segment_type": st.column_config.TextColumn("segment type"),
                       "roc_auc": st.column_config.NumberColumn("ROC-AUC", format="%.3f"),
                       "pr_auc": st.column_config.NumberColumn("PR-AUC", format="%.3f"),
                       "precision": st.column_config.NumberColumn("precision at the cutoff",
                                                                  format="%.3f")})
    st.caption(f"Segments of **{main.name}**'s validation rows. Activity: thirds of users by "
               "events before the cutoff. Sequence length: events the model saw (capped at its "
               "maximum). ROC-AUC is blank where a segment holds one class only.")


with common.guard():
    cutoff_view()

# -- does not depend on the cutoff ----------------------------------------------------------------
left, right = st.columns(2, gap="medium")
with left:
    calib = pd.concat([ev.calibration.assign(model=ev.name) for ev in evals], ignore_index=True)
    common.chart(charts.calibration_chart(calib), key="perf_calibration")
    st.caption("ECE (expected calibration error): "
               + ", ".join(f"{ev.name} {ev.summary['ece']['value']:.3f}" for ev in evals))
with right:
    ensembles = [ev for ev in evals if not ev.members.empty]
    if ensembles:
        for ev in ensembles:
            common.chart(charts.member_scores(ev.members), key=f"perf_members_{ev.name}")
    else:
        history = pd.DataFrame(main.card.get("history") or [],
                               columns=["epoch", "train_loss", "valid_loss", "valid_pr_auc"])
        common.chart(charts.training_curves(
            history, empty_message="This model trains in one pass: there are no epochs to show."),
            key="perf_history")
