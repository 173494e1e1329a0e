"""Performance: how well a model ranks buyers on its test window, at one cutoff.

Reads: model (the sidebar's, or another) and an optional second one to compare ->
``core.insight.evaluation.evaluate_model`` (cached once per model version: rank metrics with
bootstrap intervals, curves, lift, calibration, segments; on the test window, which nothing was
selected on) -> per cutoff ``at_cutoff`` and the tables shaped from it -> ``core.charts``. The
validation window's figures (what early stopping, search, ensemble weights and calibration saw) are
shown beside, labelled, and a model trained with ``--compare-random-split`` shows how much a random
80/20 split would have over-stated its quality. The cutoff lives in a fragment, so moving it reruns only
the charts that depend on it. The cutoff is shareable: ``?cutoff=0.35`` (a probability) or
``?cutoff=top10`` (the top 10 %), ``?compare=<model folder>``. With a second model, or an ensemble,
the page also shows whether a lead holds on the same test users (a paired bootstrap difference).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core import charts
from core.insight.evaluation import (
    Evaluation,
    at_cutoff,
    metrics_table,
    operating_points,
    segment_table,
    window_table,
)
from core.insight.report import build_report
from core.modeling.pipeline import split_comparison
from pages.shared import cached, display, feedback, session

MODE_KEY, PROB_KEY, TOP_KEY = "perf_cut_mode", "perf_cut_prob", "perf_cut_top"
PICK_KEY, COMPARE_KEY, CONFUSION_KEY = "perf_model", "perf_compare", "perf_confusion_view"
SAVED_KEY = "_perf_saved"          # the cutoff widgets' last values (kept across pages)
MODES = {"probability": "probability ≥", "top": "top X % of users"}
REPORT_KEY = "_perf_report"        # the last built report: {"key", "data", "figures", "notes"}


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
    st.session_state[session.MODEL_KEY] = st.session_state[PICK_KEY]


def _label(paths_info: pd.DataFrame, path: str | None) -> str:
    if path is None:
        return "— none —"
    row = paths_info[paths_info["path"] == path]
    if row.empty:
        return Path(path).name
    r = row.iloc[0]
    auc = "" if r["pr_auc"] is None or pd.isna(r["pr_auc"]) else f" · PR-AUC {r['pr_auc']:.3f}"
    return f"{Path(path).name} · {r['kind']}{auc}"


def _report_download(model_dir: str, ev: Evaluation, threshold: float) -> None:
    """A button that builds the HTML report (core.insight.report) of the model at this cutoff, then
    the download of that file; a report built for another model or cutoff is not offered."""
    dataset_name = str(ev.card.get("dataset") or "")
    key = f"{model_dir}|{ev.card.get('model_id')}|{dataset_name}|{threshold:.6f}"
    left, right = st.columns([1, 3], vertical_alignment="center")
    if left.button("Build the report", icon=":material/summarize:", key="perf_build_report",
                   help="One HTML file that opens offline: the model card, this cutoff's test-window "
                        "performance, the top 5 % cohort of its scoring run and the global drivers."):
        with feedback.guard(), st.spinner("Writing the report…"):
            built = build_report(cached.get_store(), model_dir, dataset_name, threshold=threshold)
            st.session_state[REPORT_KEY] = {"key": key, "data": built.html.encode("utf-8"),
                                            "figures": built.figures, "notes": built.notes}
    ready = st.session_state.get(REPORT_KEY)
    if ready and ready["key"] == key:
        right.download_button("Download report", ready["data"], file_name=f"report-{Path(model_dir).name}.html",
                              mime="text/html", icon=":material/download:", key="perf_download_report",
                              on_click="ignore",
                              help=f"{ready['figures']} figures; plotly is inside the file, so it opens offline.")
        for note in ready["notes"]:
            st.caption(note)
    else:
        right.caption(f"Press **Build the report** to write this model's report at the cutoff "
                      f"{threshold:.3f} on **{dataset_name}**; the download appears here.")


def _calibration_text(card: dict[str, Any]) -> str:
    from models.calibration import Calibrator

    try:
        return "calibrated with " + Calibrator.from_dict(card.get("calibration")).describe()
    except ValueError:
        return "its calibration map is unreadable"


# -- page -----------------------------------------------------------------------------------------
st.title("Performance")
st.caption("How well a model finds the users who buy, on the **test window**: the last complete time "
           "window, which the model never trained on and nothing (epochs, settings, ensemble weights, "
           "calibration) was chosen on. One cutoff drives every number and chart below.")
feedback.show_flash()

usable = cached.saved_models()
if usable.empty:
    st.info("No trained model yet: train one on the **Train** page or run "
            "`python -m core train --dataset NAME`.", icon=":material/info:")
    st.stop()

dataset = session.current_dataset()
paths = usable["path"].tolist()
if dataset is not None:            # the current dataset's models first
    paths = sorted(paths, key=lambda p: usable.loc[usable["path"] == p, "dataset"].iloc[0] != dataset)
current = session.current_model()
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
         "test window.")
if second is None:
    st.query_params.pop("compare", None)
else:
    st.query_params["compare"] = Path(second).name

evals: list[Evaluation] = []
with feedback.guard(), st.spinner("Measuring the model on its test window…"):
    evals = [cached.evaluation(primary)] + ([cached.evaluation(second)] if second else [])
if not evals:
    st.stop()

main = evals[0]
label = main.card.get("label") or {}
cutoffs = main.card.get("cutoffs") or {}
st.caption(
    f"**{main.name}** · {main.card.get('kind')} · dataset **{main.card.get('dataset', '–')}** · "
    f"horizon {label.get('horizon', '–')} · scope {label.get('scope', '–')} · "
    + (f"test cutoff {display.fmt_ts(cutoffs.get('test_cutoff'))}" if main.split == "test"
       else f"validation cutoff {display.fmt_ts(cutoffs.get('valid_cutoff'))}")
    + f" · {display.fmt_int(len(main.y))} rows, {display.fmt_int(main.y.sum())} buyers "
    f"({display.fmt_pct(main.y.mean())})")
if main.split != "test":
    st.warning("This model was trained before IntentLens kept a test window: its figures come from "
               "the validation window that chose its epochs and weights, so they are optimistic. "
               "Retrain it to measure it on a window nothing was selected on.")
if main.card.get("refit"):
    st.info("This model was refitted on every window up to the latest after it was evaluated, so the "
            "model that scores today has seen today's data; the figures here are those of the "
            "evaluated fit on the test window.", icon=":material/update:")
if main.card.get("teacher"):
    from core.modeling.pipeline import describe_teacher

    st.caption(f"The Transformer was distilled: {describe_teacher(main.card['teacher'])}. The teacher only "
               "shaped its training; it scores from the user's events alone.")
for field, what in (("teacher_weights", "teacher weight"), ("cart_weights", "cart-head weight")):
    if main.card.get(field):
        from core.modeling.pipeline import describe_choices

        kept = main.card["train_config"]["distill" if field == "teacher_weights" else "aux_cart"]
        st.caption(f"The Transformer was fitted once per {what} and the validation window chose: "
                   + describe_choices(what, main.card[field], kept) + ".")
if (main.card.get("train_config") or {}).get("aux_cart"):
    from core.modeling.pipeline import describe_cart_head

    line = describe_cart_head(main.card["train_config"]["aux_cart"])
    st.caption(line[0].upper() + line[1:] + ".")
if dataset is not None and main.card.get("dataset") not in (None, dataset):
    st.warning(f"This model was trained on **{main.card.get('dataset')}**, not on the current "
               f"dataset **{dataset}**; its test rows come from **{main.card.get('dataset')}**.")
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
    cols[1].metric("Users flagged", display.fmt_int(main_cut.values["flagged"]),
                   help=f"{display.fmt_pct(main_cut.values['flagged_share'])} of the {main.window}'s rows.")
    cols[2].metric("Precision", display.fmt_pct(main_cut.values["precision"]),
                   help="Share of flagged users who bought.")
    cols[3].metric("Recall", display.fmt_pct(main_cut.values["recall"]),
                   help="Share of buyers who were flagged.")
    base = main.base_rate
    cols[4].metric("Lift", f"{main_cut.values['precision'] / base:.2f}×" if base > 0 else "–",
                   help="Precision divided by the share of buyers among all rows.")

    _report_download(primary, main, main_cut.threshold)

    st.markdown("##### Metrics with bootstrap 95 % intervals")
    table = metrics_table(evals, cuts)
    table["metric"] = table["metric"].map(charts.METRIC_LABELS)
    st.dataframe(table, hide_index=True, key="perf_metrics_table", column_config={
        "at the cutoff": st.column_config.CheckboxColumn(
            help="Accuracy, precision, recall and F1 change with the cutoff; the others do not."),
        **{n: st.column_config.NumberColumn(n, format="%.3f") for n in names}})

    points = operating_points(evals, cuts)
    pr = pd.concat([ev.pr.assign(model=ev.name) for ev in evals], ignore_index=True)
    roc = pd.concat([ev.roc.assign(model=ev.name) for ev in evals], ignore_index=True)
    left, right = st.columns(2, gap="medium")
    with left:
        display.chart(charts.pr_curves(pr, points=points, base_rate=base), key="perf_pr")
    with right:
        display.chart(charts.roc_curves(roc, points=points), key="perf_roc")

    view = st.segmented_control("Confusion matrix shows", ["counts", "shares"], default="counts",
                                key=CONFUSION_KEY,
                                help="Counts of test rows, or each cell's share of all rows.")
    shares = view == "shares"
    for i, (ev, cut) in enumerate(zip(evals, cuts, strict=True)):
        left, right = st.columns(2, gap="medium")
        with left:
            display.chart(charts.confusion_matrix(cut.confusion, shares=shares,
                                                 title=f"Confusion matrix · {ev.name}"),
                         key=f"perf_confusion_{i}")
        with right:
            fig = charts.score_histogram(pd.DataFrame({"score": ev.p, "label": ev.y}),
                                         threshold=cut.threshold)
            if len(evals) > 1:
                fig.update_layout(title_text=f"Scores by true label · {ev.name}")
            display.chart(fig, key=f"perf_hist_{i}")

    lift = pd.concat([ev.lift.assign(model=ev.name) for ev in evals], ignore_index=True)
    left, right = st.columns(2, gap="medium")
    with left:
        display.chart(charts.lift_chart(lift, cutoff_fraction=main_cut.values["flagged_share"]),
                     key="perf_lift")
    with right:
        display.chart(charts.gains_chart(lift, cutoff_fraction=main_cut.values["flagged_share"]),
                     key="perf_gains")

    segments = segment_table(main, main_cut.threshold)
    display.chart(charts.segment_quality(segments), key="perf_segments")
    st.dataframe(
        segments[["segment_type", "segment", "rows", "positives", "roc_auc", "pr_auc", "flagged",
                  "precision"]],
        hide_index=True, key="perf_segment_table",
        column_config={**display.count_columns(["rows", "positives", "flagged"]),
                       "segment_type": st.column_config.TextColumn("segment type"),
                       "roc_auc": st.column_config.NumberColumn("ROC-AUC", format="%.3f"),
                       "pr_auc": st.column_config.NumberColumn("PR-AUC", format="%.3f"),
                       "precision": st.column_config.NumberColumn("precision at the cutoff",
                                                                  format="%.3f")})
    st.caption(f"Segments of **{main.name}**'s {main.window} rows. Activity: thirds of users by "
               "events before the cutoff. Sequence length: events the model saw (capped at its "
               "maximum). ROC-AUC is blank where a segment holds one class only.")


with feedback.guard():
    cutoff_view()

# -- does not depend on the cutoff ----------------------------------------------------------------
left, right = st.columns(2, gap="medium")
with left:
    calib = pd.concat([ev.calibration.assign(model=ev.name) for ev in evals], ignore_index=True)
    display.chart(charts.calibration_chart(calib), key="perf_calibration")
    st.caption("Reliability on the test window: a calibrated model's dots lie on the diagonal, so a "
               "score reads as expected buyers. ECE (expected calibration error) and Brier score: "
               + ", ".join(f"{ev.name} ECE {ev.summary['ece']['value']:.3f}, Brier "
                           f"{ev.summary['brier']['value']:.4f}" for ev in evals)
               + ". " + " ".join(f"{ev.name}: {_calibration_text(ev.card)}." for ev in evals))
with right:
    ensembles = [ev for ev in evals if not ev.members.empty]
    if ensembles:
        for ev in ensembles:
            display.chart(charts.member_scores(ev.members), key=f"perf_members_{ev.name}")
    else:
        history = pd.DataFrame(main.card.get("history") or [],
                               columns=["epoch", "train_loss", "valid_loss", "valid_pr_auc"])
        display.chart(charts.training_curves(
            history, empty_message="This model trains in one pass: there are no epochs to show."),
            key="perf_history")

# -- is a lead real? ------------------------------------------------------------------------------
def paired_view() -> None:
    """The first model minus the second, and each ensemble minus its members, on the same users."""
    leads = [(f"**{main.name}** minus **{evals[1].name}**", cached.paired(primary, second))] if second else []
    leads += [(f"**{ev.name}** minus each of its members", cached.paired(path))
              for ev, path in zip(evals, [primary, second], strict=False)
              if path is not None and ev.card.get("kind") == "ensemble"]
    if not leads:
        return
    st.markdown("##### Is the lead real? Paired differences on the same test users")
    for i, (title, result) in enumerate(leads):
        if result.table.empty:
            st.caption(f"{title}: no paired comparison, {result.note}")
            continue
        st.caption(f"{title}, on the {display.fmt_int(result.rows)} test rows both scored:")
        st.dataframe(result.table, hide_index=True, key=f"perf_paired_{i}", column_config={
            **{c: st.column_config.NumberColumn(c, format="%.4f")
               for c in ("model", "other", "difference", "low", "high")},
            "not_ahead": st.column_config.NumberColumn(
                "not ahead", format="%.3f",
                help="Share of the resamples in which the first model is not better.")})
    st.caption("Each resample draws the test users once and scores both models on them, so the luck "
               "of which users fell in the window cancels: a lead whose interval (low to high) "
               "excludes 0 holds beyond that noise, even where the two models' own intervals above "
               "overlap. Lower is better for log loss.")


with feedback.guard():
    paired_view()

# -- selected on vs reported, and the random split ---------------------------------------------------
st.markdown("##### Validation window beside the test window")
st.dataframe(window_table(main.card), hide_index=True, key="perf_windows",
             column_config={c: st.column_config.NumberColumn(c, format="%.4f")
                            for c in ("test window", "validation window")})
st.caption("The validation window chose the epochs, the settings, the ensemble weights and the "
           "calibration map, so its figures are a little flattering; the test window is the honest "
           "one. A large gap means the choices fitted the validation window's noise.")
comparison = split_comparison(main.card)
with st.expander("Time split versus a random 80/20 split (leakage made visible)",
                 expanded=not comparison.empty):
    if comparison.empty:
        st.caption("This model was trained without the comparison. Train it with **Compare with a "
                   "random 80/20 split** on the Train page, or `python -m core train ... "
                   "--compare-random-split`, to see how much a random split would over-state it.")
    else:
        display.chart(charts.split_comparison_chart(comparison), key="perf_split_comparison")
        st.dataframe(comparison, hide_index=True, key="perf_split_table",
                     column_config={c: st.column_config.NumberColumn(c, format="%.4f")
                                    for c in ("time_split", "random_split", "overstatement")})
        st.caption(str((main.card.get("random_split") or {}).get("why", "")))
