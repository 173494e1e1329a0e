"""Train: pick the label and the model kinds, check eligibility, train in the background, compare
models on a leaderboard, add a saved model from a directory or a .zip upload.

Training runs in the job registry's worker thread (``core.runtime.jobs``): the job function calls
``core.modeling.pipeline.train_model`` with the job context's progress / log / epoch callbacks and
cancel token and never touches ``st.*``. A fragment polls the registry and draws the live state;
Cancel sets the token, which the training loop checks every step. A model is saved where the CLI
saves it (``core.modeling.model_store.default_model_dir``), so a run killed or cancelled after some
epochs resumes from its checkpoint when the same training is started again, and its job says so.
Adding and deleting models go through ``core.modeling.model_store`` (its checks, its one listing).
The ids of this session's jobs live in ``st.session_state``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core import charts
from core.errors import IntentLensError
from core.modeling.labels import CutoffPlan, Eligibility, LabelSpec, parse_duration
from core.modeling.model_store import default_model_dir
from core.modeling.pipeline import PRESETS, checkpoint_dir_for
from core.modeling.update import model_timeline
from core.runtime.jobs import JobContext, JobState
from models.artifact import KIND_LABELS, MODEL_KINDS
from pages.shared import actions, cached, display, feedback, session

HORIZONS = ("30min", "1h", "6h", "1d", "7d")
OTHER = "other…"
JOBS_KEY = "train_jobs"              # ids of the jobs this session started, oldest first
ANNOUNCED_KEY = "train_jobs_seen"    # ids whose end already triggered a full rerun
CANCELLING_KEY = "train_jobs_cancelling"   # ids whose Cancel was clicked (a queued job ends when its turn comes)
POLL_SECONDS = 1.5
# A job trains on every core but one, so pages stay responsive while it runs.
JOB_THREADS = max(1, (os.cpu_count() or 2) - 1)
RESUMED = "resumed from"             # how the training loop's log says it picked up a checkpoint


# -- helpers (no st.* inside the job function) ----------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def _eligibility_cached(db: str, dataset: str, version: str,
                        spec: tuple[tuple[str, Any], ...]) -> tuple[Eligibility, CutoffPlan]:
    from core.modeling.labels import check_eligibility, plan_cutoffs

    store = cached.get_store()
    label = LabelSpec.from_dict(dict(spec))
    plan = plan_cutoffs(store, dataset, label)
    return check_eligibility(store, dataset, label, plan), plan


def eligibility(dataset: str, spec: LabelSpec) -> tuple[Eligibility, CutoffPlan]:
    """(Eligibility, CutoffPlan) of ``dataset`` under ``spec``, cached until the data changes."""
    return _eligibility_cached(cached.db_path(), dataset, cached.data_version(dataset),
                               tuple(sorted(spec.to_dict().items())))


def make_job(dataset: str, kind: str, spec: LabelSpec, settings: dict[str, Any],
             out: Path) -> Callable[[JobContext], dict[str, Any]]:
    """The function the worker thread runs for one model kind (reports through ``ctx`` only).
    ``settings``: preset, epochs, distill, aux_cart, search, seed, refit, compare_random_split (the form's
    values)."""
    store = cached.get_store()                     # captured here: the worker never calls st.*

    def run(ctx: JobContext) -> dict[str, Any]:
        from core.modeling.pipeline import train_model

        result = train_model(store, dataset, kind=kind, spec=spec, preset=settings["preset"],
                             epochs=settings["epochs"], search=settings["search"], seed=settings["seed"],
                             distill=settings["distill"], aux_cart=settings["aux_cart"],
                             refit=settings["refit"], compare_random_split=settings["compare_random_split"],
                             out=out, progress=ctx.progress, cancel=ctx.cancel, log=ctx.log,
                             on_epoch=ctx.on_epoch, threads=JOB_THREADS)
        return {"model_dir": str(result.model_dir), "kind": kind, "metrics": result.metrics,
                "summary": result.summary()}
    return run


def cancel_job(job_id: str) -> None:
    """Cancel button callback: set the job's cancel token (the loop stops at its next step)."""
    try:
        cached.get_jobs().cancel(job_id)
    except IntentLensError as err:
        feedback.flash("warning", f"Could not cancel: {err}")
        return
    st.session_state.setdefault(CANCELLING_KEY, set()).add(job_id)


def interval(metrics: dict[str, Any], name: str) -> str:
    """'0.812 [0.790, 0.833]' for a metric with its interval ('–' when unknown)."""
    value = metrics.get(name)
    if isinstance(value, dict):
        if pd.isna(value.get("low")):
            return f"{value['value']:.3f}"
        return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
    return "–" if value is None or pd.isna(value) else f"{value:.3f}"


def ci_column(board: pd.DataFrame, name: str) -> list[str]:
    """'[low, high]' per leaderboard row ('–' where the interval is unknown)."""
    return ["–" if pd.isna(lo) or pd.isna(hi) else f"[{lo:.3f}, {hi:.3f}]"
            for lo, hi in zip(board[f"{name}_low"], board[f"{name}_high"], strict=True)]


# -- page -----------------------------------------------------------------------------------------
st.title("Train")
st.caption("Teach a model who buys within a horizon, from the events before a cutoff. Every model "
           "is tuned on a validation window and measured on the last complete window (the test "
           "window, which nothing is selected on); it then lands on the leaderboard below.")
feedback.show_flash()
dataset = session.current_dataset()
demo = session.is_demo()

if dataset is None:
    st.info("No dataset yet. Ingest one on the **Data** page, then come back to train a model.")
    st.stop()

# -- label and model ------------------------------------------------------------------------------
spec: LabelSpec | None = None
settings: dict[str, Any] = {}
if demo:
    st.info(":material/lock: Demo mode: training, uploads and deletes are switched off. The "
            "leaderboard below shows the models already trained.")
else:
    st.subheader(f"Train on **{dataset}**")
    left, mid, right = st.columns([1, 1.3, 1], gap="medium")
    with left:
        choice = st.selectbox(
            "Horizon", [*HORIZONS, OTHER], index=HORIZONS.index("1d"), key="train_horizon",
            help="A user is a buyer when they buy within this time after the cutoff. Short "
                 "horizons (30min, 1h) capture real-time intent; 1d or 7d, planned purchases.")
        horizon = choice
        if choice == OTHER:
            horizon = st.text_input("Custom horizon", value="12h", key="train_horizon_text",
                                    help="A number and a unit: 45min, 12h, 2d, 2w.")
        scope = st.radio(
            "Scope", ["any", "category"], horizontal=True, key="train_scope",
            format_func={"any": "buys anything", "category": "buys in a category"}.get,
            help="'buys anything': one row per user. 'buys in a category': one row per user and "
                 "category the user touched before the cutoff; the label is a buy in that category.")
    with mid:
        kinds = st.multiselect(
            "Model kinds", list(MODEL_KINDS), default=["transformer", "gbdt"], key="train_kinds",
            format_func=lambda k: KIND_LABELS[k],
            help="One training job per kind; they run one after another and all land on the "
                 "leaderboard. The ensemble trains the Transformer, the trees and logistic regression "
                 "and weights them on validation PR-AUC.")
        preset = st.radio(
            "Size", list(PRESETS), index=0, horizontal=True, key="train_preset",
            help="How much compute to spend: the numbers each size implies are listed below it.")
        st.caption(PRESETS[preset].describe())
    with right, st.expander("Advanced", expanded=False):
        epochs = st.number_input(
            "Epochs", min_value=1, max_value=500, value=None, step=1, key="train_epochs",
            placeholder=f"size's {PRESETS[preset].epochs}",
            help="Most passes over the training rows (the Transformer stops earlier when "
                 "validation PR-AUC stops improving). Empty: the size's number.")
        distill = st.number_input(
            "Teacher weight", min_value=0.0, max_value=0.95, value=None, step=0.05, format="%.2f",
            key="train_distill",
            placeholder="size's " + " or ".join(f"{w:g}" for w in PRESETS[preset].teacher_weights),
            help="The Transformer's training targets mix each row's label with the probability of a "
                 "GBDT fitted on the other folds of users, at this weight (out of fold: no row's "
                 "teacher saw its label). 0 trains on the labels alone. Empty: the size's weight; "
                 "where the size names two, the Transformer is fitted at each and the one with the "
                 "better validation PR-AUC is kept.")
        aux_cart = st.number_input(
            "Cart head weight", min_value=0.0, max_value=2.0, value=None, step=0.1, format="%.2f",
            key="train_aux_cart",
            placeholder="size's " + " or ".join(f"{w:g}" for w in PRESETS[preset].cart_weights),
            help="Multi-task training: a second head beside the buy head learns whether the user puts "
                 "something in the cart within the horizon, and its loss is added at this weight. Carts "
                 "outnumber buys, so the shared encoder learns from more rows; the head only trains, the "
                 "saved model scores with the buy head. 0 = none. Empty: the size's weight; where the "
                 "size names two, the Transformer is fitted again with the head once the teacher weight "
                 "is chosen, and the one with the better validation PR-AUC is kept.")
        search = st.number_input(
            "Search trials", min_value=0, max_value=50, value=0, step=1, key="train_search",
            help="Hyper-parameter search (Optuna TPE) for every kind, with the same budget: this many "
                 "trials, each a full training judged on the validation window; the best one is "
                 "kept. 0 = no search.")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1,
                               key="train_seed",
                               help="Same seed, same data, same settings: same model.")
        lookback = st.text_input(
            "Lookback", value="", key="train_lookback", placeholder="all history",
            help="Only events this long before the cutoff count (e.g. 3d). Empty: all history.")
        max_len = st.number_input(
            "Max events per user", min_value=1, max_value=1000, value=100, step=10,
            key="train_max_len", help="The most recent events kept per user and cutoff.")
        refit = st.toggle(
            "Refit on all windows after evaluating", value=False, key="train_refit",
            help="After the model is measured on the test window, fit it again (same epochs and "
                 "trees) on every window up to the latest, so the model that scores today has seen "
                 "today's behaviour. Its card keeps the evaluated fit's test figures.")
        compare_random = st.toggle(
            "Compare with a random 80/20 split", value=False, key="train_compare_random",
            help="Also fit the same kind on a random 80/20 split of the same rows (how the seed "
                 "evaluated) and show both on the Performance page: leakage made visible. Doubles "
                 "the training time.")
    with feedback.guard():
        parse_duration(horizon)
        spec = LabelSpec(horizon=horizon.strip(), scope=scope, lookback=lookback.strip() or None,
                         max_len=int(max_len),
                         max_train_cutoffs=PRESETS[preset].max_train_cutoffs)
        settings = {"kinds": list(kinds), "preset": preset,
                    "epochs": int(epochs) if epochs is not None else None,
                    "distill": float(distill) if distill is not None else None,
                    "aux_cart": float(aux_cart) if aux_cart is not None else None,
                    "search": int(search), "seed": int(seed), "refit": bool(refit),
                    "compare_random_split": bool(compare_random)}

# -- eligibility card, then the button ------------------------------------------------------------
if spec is not None:
    ready = False
    with feedback.guard(), st.container(border=True):
        st.markdown("**Eligibility** · positives and negatives the time split gives")
        elig, plan = eligibility(dataset, spec)
        cols = st.columns(7)
        cols[0].metric("Training positives", display.fmt_int(elig.train_pos),
                       help="Rows labelled 1 (a buy within the horizon) over all training cutoffs.")
        cols[1].metric("Training negatives", display.fmt_int(elig.train_neg),
                       help="Rows labelled 0 over all training cutoffs.")
        cols[2].metric("Validation positives", display.fmt_int(elig.valid_pos),
                       help="Rows labelled 1 at the validation cutoff, the window before the test "
                            "window: early stopping, search, ensemble weights and calibration use it.")
        cols[3].metric("Validation negatives", display.fmt_int(elig.valid_neg),
                       help="Rows labelled 0 at the validation cutoff.")
        cols[4].metric("Test positives", display.fmt_int(elig.test_pos),
                       help="Rows labelled 1 at the test cutoff (the last complete window): only "
                            "reported, never selected on.")
        cols[5].metric("Test negatives", display.fmt_int(elig.test_neg),
                       help="Rows labelled 0 at the test cutoff.")
        cols[6].metric("Training windows", display.fmt_int(elig.windows),
                       help="Training cutoffs, each one step apart, all before validation.")
        train_span = (f"{display.fmt_ts(plan.train_cutoffs[0])} → {display.fmt_ts(plan.train_cutoffs[-1])}"
                      if plan.train_cutoffs else "none")
        last = plan.last_label_cutoff
        st.caption(f"Training cutoffs (UTC): {train_span} · validation cutoff "
                   f"{display.fmt_ts(plan.valid_cutoff)} · test cutoff {display.fmt_ts(plan.test_cutoff)}, "
                   f"labels up to {display.fmt_ts(last + spec.horizon_td)} · positive share in "
                   f"the test window {display.fmt_pct(elig.test_pos / max(elig.test_pos + elig.test_neg, 1))}")
        (st.success if elig.ok else st.warning)(elig.message)
        ready = elig.ok
    kinds = settings.get("kinds", [])
    label = f"Train {len(kinds)} model{'s' if len(kinds) != 1 else ''}" if kinds else "Train"
    if st.button(label, type="primary", key="train_start", disabled=not (ready and kinds),
                 icon=":material/play_arrow:",
                 help="Starts one background job per model kind. The app stays usable; come back "
                      "here to follow the jobs." if ready else
                      "Pick at least one model kind and a label the data can support."):
        with feedback.guard():
            session.require_writable("Training")
            registry = cached.get_jobs()
            for kind in kinds:
                out = default_model_dir(dataset, kind, spec)
                job_id = registry.submit("train", make_job(dataset, kind, spec, settings, out),
                    {"dataset": dataset, "kind": kind, "horizon": spec.horizon, "scope": spec.scope,
                     "preset": settings["preset"], "out": str(out)})
                st.session_state.setdefault(JOBS_KEY, []).append(job_id)


# -- jobs (polled) ---------------------------------------------------------------------------------
def _job_states(ids: list[str | None] | None = None) -> list[JobState]:
    """Snapshots of this session's training jobs (or of ``ids``), skipping ones the process forgot."""
    registry = cached.get_jobs()
    states = []
    for job_id in (st.session_state.get(JOBS_KEY, []) if ids is None else [i for i in ids if i]):
        try:
            states.append(registry.snapshot(job_id))
        except IntentLensError:
            continue     # the app process restarted: that job is gone
    return states


def _resumed(state: JobState) -> str | None:
    """The job's log line saying it resumed from a checkpoint (None when it started afresh)."""
    return next((line for line in state.log if RESUMED in line.lower()), None)


def _job_card(state: JobState) -> None:
    params = state.params
    badge = {"queued": ":gray-badge[queued]", "running": ":blue-badge[running]",
             "done": ":green-badge[done]", "failed": ":red-badge[failed]",
             "cancelled": ":orange-badge[cancelled]"}[state.status]
    with st.container(border=True):
        head, button = st.columns([5, 1], vertical_alignment="center")
        kind = str(params.get("kind"))
        head.markdown(f"{badge} **{KIND_LABELS.get(kind, kind)}** · "
                      f"{params.get('dataset')} · horizon {params.get('horizon')} · "
                      f"scope {params.get('scope')} · size {params.get('preset')}")
        cancelling = state.id in st.session_state.get(CANCELLING_KEY, set())
        if not state.finished and not cancelling:
            button.button("Cancel", key=f"cancel_{state.id}", on_click=cancel_job, args=(state.id,),
                          icon=":material/stop:", help="Stop this job at its next step; nothing is saved.")
        if state.status in ("queued", "running") and cancelling:
            st.info("Cancel requested: the job stops at its next step"
                    + (" (or as soon as its turn comes)." if state.status == "queued" else "."),
                    icon=":material/hourglass_top:")
        elif state.status in ("queued", "running"):
            eta, fraction = state.eta_seconds, state.fraction
            text = state.message or ("waiting for the job before it" if state.status == "queued" else "starting")
            if eta is not None and fraction is not None and 0 < fraction < 1:
                text += f" · about {display.fmt_seconds(eta)} left"
            st.progress(fraction or 0.0, text=text)
            if state.epochs:
                last = state.epochs[-1]
                weight = (f" (teacher weight {last['teacher_weight']:g}"
                          + (f", cart-head weight {last['cart_weight']:g}" if last.get("cart_weight") else "")
                          + ")" if last.get("teacher_weight") is not None else "")
                st.caption(f"Epoch {last['epoch']}{weight}: train loss {last['train_loss']:.4f}, validation "
                           f"loss {last['valid_loss']:.4f}, validation PR-AUC {last['valid_pr_auc']:.3f}")
        elif state.status == "done" and isinstance(state.result, dict):
            result = state.result
            cols = st.columns([1, 1, 1, 1.2])
            cols[0].metric("ROC-AUC", interval(result["metrics"], "roc_auc"),
                           help="Test-window ROC-AUC (nothing was selected on that window) with its "
                                "bootstrap 95 % interval.")
            cols[1].metric("PR-AUC", interval(result["metrics"], "pr_auc"),
                           help="Test-window PR-AUC (average precision) with its 95 % interval.")
            cols[2].metric("Log-loss", interval(result["metrics"], "log_loss"),
                           help="Test-window log-loss (lower is better).")
            with cols[3]:
                current = st.session_state.get(session.MODEL_KEY) == result["model_dir"]
                st.button("Current model" if current else "Use this model", key=f"use_{state.id}",
                          disabled=current, on_click=session.use_model, args=(result["model_dir"],),
                          icon=":material/check:",
                          help="Make it the sidebar's model for the Performance, Cohorts and "
                               "Explain pages.")
            st.caption(f"Saved to `{result['model_dir']}` in "
                       f"{display.fmt_seconds((state.finished_at or 0) - (state.started_at or 0))}.")
        elif state.status == "failed":
            st.error(state.error or "The job failed.", icon=":material/error:")
        elif state.status == "cancelled":
            kept = checkpoint_dir_for(Path(params["out"])).is_dir()
            st.warning("Cancelled: training stopped and no model was saved."
                       + (" The finished epochs are kept: start the same training again to resume."
                          if kept else ""), icon=":material/stop:")
        resumed = _resumed(state)
        if resumed is not None:
            st.info(f"This run {resumed}: the epochs before it were not trained again.",
                    icon=":material/restart_alt:")
        if params.get("kind") in ("transformer", "ensemble") and (state.epochs or not state.finished):
            display.chart(charts.training_curves(pd.DataFrame(
                state.epochs, columns=["epoch", "train_loss", "valid_loss", "valid_pr_auc"])),
                key=f"curves_{state.id}")
        if state.log:
            with st.expander("Log", expanded=False):
                st.code("\n".join(state.log[-40:]), language=None)


def jobs_panel() -> None:
    states = _job_states()
    if not states:
        return
    st.subheader("Jobs")
    seen = st.session_state.setdefault(ANNOUNCED_KEY, set())
    for state in reversed(states):
        _job_card(state)
    ended = {s.id for s in states if s.finished} - seen
    if ended:
        seen |= ended
        # Rerun the whole page: a new model is on disk for the sidebar and the leaderboard, and
        # with nothing left running the fragment stops polling.
        st.rerun(scope="app")


_active = any(not s.finished for s in _job_states())
st.fragment(jobs_panel, run_every=POLL_SECONDS if _active else None)()

# -- label efficiency -----------------------------------------------------------------------------
LE_JOB_KEY = "train_label_efficiency_job"


def make_label_efficiency_job(dataset: str, spec: LabelSpec, seeds: int, encoder: str | None,
                              freeze: str) -> Callable[[JobContext], dict[str, Any]]:
    """The worker's function: core.modeling.experiments.label_efficiency, summarised."""
    store = cached.get_store()

    def run(ctx: JobContext) -> dict[str, Any]:
        from core.modeling.experiments import label_efficiency, summarise

        frame = label_efficiency(store, dataset, spec=spec, seeds=tuple(range(seeds)), preset="fast",
                                 pretrained=encoder, freeze=freeze, threads=JOB_THREADS,
                                 progress=ctx.progress, cancel=ctx.cancel)
        return {"summary": summarise(frame).to_dict(orient="records")}
    return run


def label_efficiency_panel() -> None:
    job_id = st.session_state.get(LE_JOB_KEY)
    state = None
    if job_id is not None:
        try:
            state = cached.get_jobs().snapshot(job_id)
        except IntentLensError:
            state = None
    if state is not None and not state.finished:
        st.progress(state.fraction or 0.0, text=state.message or "starting")
    elif state is not None and state.error:
        st.error(state.error)
    elif state is not None and state.result:
        summary = pd.DataFrame(state.result["summary"])
        display.chart(charts.label_efficiency_chart(summary, metric="roc_auc"), key="train_le_roc")
        display.chart(charts.label_efficiency_chart(summary, metric="pr_auc"), key="train_le_pr")
        st.dataframe(summary, hide_index=True, key="train_le_table")


if spec is not None:
    with st.expander("Label efficiency: how many labelled users does the Transformer need?"):
        st.caption("Trains the Transformer (fast size) on 1 %, 5 %, 20 % and 100 % of the training "
                   "users' labels and measures each on the same test window, from scratch and, given "
                   "an encoder from `python -m core pretrain`, pre-trained on every user's events. "
                   "Each point carries its bootstrap 95 % interval (over every seed). The models are "
                   "not kept.")
        a, b, c = st.columns([1, 2, 1])
        le_seeds = a.number_input("Seeds", min_value=1, max_value=5, value=1, key="train_le_seeds",
                                  help="Trainings per point, each with other users and initialisation.")
        encoder = b.text_input("Pre-trained encoder folder (optional)", key="train_le_encoder",
                               placeholder="/path/to/encoder",
                               help="A folder written by `python -m core pretrain --dataset NAME --out DIR`; "
                                    "empty: only the from-scratch curve.")
        le_freeze = c.selectbox("Freeze", ["none", "embeddings", "all"], key="train_le_freeze",
                                help="What stays fixed in the pre-trained encoder while fine-tuning.")
        if st.button("Measure label efficiency", key="train_le_start", disabled=demo,
                     icon=":material/science:",
                     help="Starts a background job: 4 trainings per seed and variant."):
            with feedback.guard():
                session.require_writable("Training")
                if encoder.strip():
                    from core.modeling.pretrain import load_pretrained

                    load_pretrained(encoder.strip())        # a clear message now, not in the job
                st.session_state[LE_JOB_KEY] = cached.get_jobs().submit(
                    "label_efficiency",
                    make_label_efficiency_job(dataset, spec, int(le_seeds), encoder.strip() or None, le_freeze),
                    {"dataset": dataset, "horizon": spec.horizon})
        _le_running = any(not j.finished for j in _job_states([st.session_state.get(LE_JOB_KEY)]))
        st.fragment(label_efficiency_panel, run_every=POLL_SECONDS if _le_running else None)()

# -- leaderboard ----------------------------------------------------------------------------------
st.subheader("Leaderboard")
board = pd.DataFrame()
with feedback.guard():
    board = cached.saved_models(dataset)
    if board.empty:
        st.info(f"No model trained on **{dataset}** yet: train one above, or run "
                f"`python -m core train --dataset {dataset}`.")
    else:
        table = pd.DataFrame({
            "model": board["model_id"], "kind": board["kind"], "horizon": board["horizon"],
            "scope": board["scope"], "ROC-AUC": board["roc_auc"], "ROC-AUC 95% CI": ci_column(board, "roc_auc"),
            "PR-AUC": board["pr_auc"], "PR-AUC 95% CI": ci_column(board, "pr_auc"),
            "ECE": board["ece"], "measured on": board["window"],
            "validation ROC-AUC": board["valid_roc_auc"],
            "log-loss": board["log_loss"], "size (MB)": board["size_mb"],
            "time to train": [display.fmt_seconds(s) for s in board["train_seconds"]],
            "created": pd.to_datetime(board["created_at"], errors="coerce", utc=True),
        })
        st.dataframe(table, hide_index=True, key="leaderboard_table", column_config={
            "ROC-AUC": st.column_config.NumberColumn(format="%.3f", help="ROC-AUC on the test window: the "
                                                     "latest complete horizon, which nothing was selected on."),
            "PR-AUC": st.column_config.NumberColumn(format="%.3f", help="PR-AUC on the test window."),
            "ECE": st.column_config.NumberColumn(format="%.3f", help="Expected calibration error on the test "
                                                 "window: how far scores are from observed buyer shares."),
            "measured on": st.column_config.TextColumn(help="test: the window nothing was selected on. "
                                                       "validation: a model older than the test window, "
                                                       "measured where it was selected (optimistic)."),
            "validation ROC-AUC": st.column_config.NumberColumn(
                format="%.3f", help="On the validation window, which chose epochs, settings, ensemble weights "
                                    "and calibration: shown for comparison, not for ranking."),
            "log-loss": st.column_config.NumberColumn(format="%.4f", help="Lower is better."),
            "size (MB)": st.column_config.NumberColumn(format="%.2f"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", help="UTC"),
        })
        display.chart(charts.leaderboard(board), key="chart_leaderboard")

# -- models timeline ------------------------------------------------------------------------------
st.subheader("Models timeline")
st.caption("This dataset's models in the order they were trained, each at its ROC-AUC on its own test "
           "window, with an arrow from a model to the update made from it. `python -m core update` "
           "appends new events, warm-starts the current model and promotes the candidate only when it is "
           "no worse on the newest test window; a candidate that is not promoted is kept aside in the "
           "models folder's `rejected/` and the current model keeps serving.")
with feedback.guard():
    timeline = model_timeline(dataset)
    if not timeline.empty:
        display.chart(charts.models_timeline(timeline), key="chart_models_timeline")
        st.dataframe(timeline[["trained_at", "model_id", "kind", "status", "parent_id", "roc_auc", "pr_auc",
                               "new_window_roc_auc", "parent_new_window_roc_auc", "events_added",
                               "duplicates_dropped", "reason"]],
                     hide_index=True, key="models_timeline_table", column_config={
            "trained_at": st.column_config.DatetimeColumn("trained at", format="YYYY-MM-DD HH:mm", help="UTC"),
            "model_id": "model", "parent_id": st.column_config.TextColumn(
                "parent", help="The model this one was warm-started from (empty: trained from scratch)."),
            "status": st.column_config.TextColumn(help="trained: from scratch; promoted: an update that serves "
                                                  "(or served); rejected: an update kept aside."),
            "roc_auc": st.column_config.NumberColumn("ROC-AUC", format="%.3f",
                                                     help="On the model's own test window."),
            "pr_auc": st.column_config.NumberColumn("PR-AUC", format="%.3f", help="On the model's own test window."),
            "new_window_roc_auc": st.column_config.NumberColumn(
                "ROC-AUC, compared", format="%.3f",
                help="An update's ROC-AUC on the newest test window it was compared on."),
            "parent_new_window_roc_auc": st.column_config.NumberColumn(
                "parent's ROC-AUC, same rows", format="%.3f", help="The parent's ROC-AUC on the very same rows."),
            "events_added": st.column_config.NumberColumn("events added", format="%d"),
            "duplicates_dropped": st.column_config.NumberColumn("duplicates dropped", format="%d"),
            "reason": st.column_config.TextColumn(help="Why the update was promoted or not, with both figures."),
        })

# -- add or delete saved models --------------------------------------------------------------------
if not demo:
    st.subheader("Add a saved model")
    from_dir, from_zip = st.tabs(["From a directory", "Upload a .zip"])
    with from_dir:
        path_text = st.text_input(
            "Model directory", key="model_dir_path", placeholder="/path/to/models/saved/demo",
            help="A directory written by `python -m core train` (it holds card.json), below the "
                 "models folder or a folder the administrator allowed (INTENTLENS_MODEL_DIRS). It "
                 "is checked, then copied into the models folder so every page can use it.")
        if st.button("Add model", key="add_model_dir", disabled=not path_text.strip(),
                     help="Check the directory and copy it into the models folder."):
            with feedback.guard():
                added = actions.add_model_dir(path_text)
                feedback.flash("success", f"Added model **{added.name}**.")
                st.rerun()
    with from_zip:
        uploaded = st.file_uploader(
            "Model archive (.zip)", type=["zip"], key="model_zip",
            help="A .zip of one model directory. Every entry is checked before anything is "
                 "unpacked, the model is loaded, and only then copied into the models folder.")
        if st.button("Add uploaded model", key="add_model_zip", disabled=uploaded is None,
                     help="Check the archive and add the model it holds.") and uploaded is not None:
            with feedback.guard():
                added = actions.add_model_zip(uploaded)
                feedback.flash("success", f"Added model **{added.name}**.")
                st.rerun()
    if not board.empty:
        with st.expander("Delete a model", expanded=False):
            victim = st.selectbox("Model to delete", board["path"].tolist(), key="delete_model_pick",
                                  format_func=lambda p: Path(p).name,
                                  help="Removes its folder from the models folder.")
            sure = st.checkbox("Yes, delete it", key="delete_model_sure",
                               help="Deleting cannot be undone.")
            if st.button("Delete model", key="delete_model", disabled=not sure, type="secondary",
                         help="Remove the model's folder for good."):
                with feedback.guard():
                    actions.delete_model(victim)
                    feedback.flash("success", f"Deleted model **{Path(victim).name}**.")
                    st.rerun()
