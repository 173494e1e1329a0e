"""Train: pick the label and the model kinds, check eligibility, train in the background, compare
models on a leaderboard, add a saved model from a directory or a .zip upload.

Training runs in the job registry's worker thread (``core.runtime.jobs``): the job function calls
``core.modeling.pipeline.train_model`` with the job context's progress / log / epoch callbacks and cancel
token and never touches ``st.*``. A fragment polls the registry and draws the live state; Cancel
sets the token, which the training loop checks every step. The ids of this session's jobs live in
``st.session_state``.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import streamlit as st

from core import charts
from core.data import overview
from core.errors import ConflictError, IntentLensError, ModelError
from core.modeling.labels import LabelSpec, parse_duration
from core.modeling.pipeline import MODEL_KINDS, PRESETS
from core.settings import get_settings
from pages import common

HORIZONS = ("30min", "1h", "6h", "1d", "7d")
OTHER = "other…"
JOBS_KEY = "train_jobs"              # ids of the jobs this session started, oldest first
ANNOUNCED_KEY = "train_jobs_seen"    # ids whose end already triggered a full rerun
CANCELLING_KEY = "train_jobs_cancelling"   # ids whose Cancel was clicked (a queued job ends when its turn comes)
POLL_SECONDS = 1.5
# A job trains on every core but one, so pages stay responsive while it runs.
JOB_THREADS = max(1, (os.cpu_count() or 2) - 1)
KIND_LABELS = {"transformer": "Transformer (event sequences)", "gbdt": "Gradient-boosted trees",
               "logreg": "Logistic regression", "ensemble": "Ensemble of the three"}
# Files a model directory may hold (models/artifact.py, models/baselines.py, core/pipeline.py).
MODEL_FILES = frozenset({"card.json", "weights.pt", "vocab.json", "logreg.json", "gbdt.txt",
                         "gbdt.json", "validation.parquet"})
ZIP_JUNK = ("__MACOSX/", ".DS_Store")   # added by some archivers; skipped, never extracted
MAX_ZIP_BYTES = 512 * 1024 * 1024     # uncompressed size an upload may unpack to
MAX_ZIP_MEMBERS = 32


# -- helpers (no st.* inside the job function) ----------------------------------------------------
def models_root() -> Path:
    """Where saved models live (the sidebar's picker reads the same folder)."""
    return get_settings().models_root


def safe_name(text: str) -> str:
    """A folder name made of letters, digits, ``_ . -`` (never empty, never hidden)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._-")
    return name or "model"


def model_dir_name(dataset: str, kind: str, spec: LabelSpec) -> str:
    """``<dataset>-<kind>-<horizon>[-category]``, the CLI's default folder name."""
    return safe_name(f"{dataset}-{kind}-{spec.horizon}" + ("" if spec.scope == "any" else "-category"))


def preset_text(name: str) -> str:
    p = PRESETS[name]
    layers = "layer" if p["n_layers"] == 1 else "layers"
    return (f"{p['epochs']} epochs at most · Transformer width {p['d_model']}, {p['n_heads']} heads, "
            f"{p['n_layers']} {layers}, feed-forward {p['d_ff']}"
            + (f", dropout {p['dropout']:g}" if "dropout" in p else "")
            + f" · batch {p['batch_size']} · up to {p['max_train_cutoffs']} training cutoffs"
            + (f" and {p['max_train_rows']:,} training rows" if "max_train_rows" in p else "")
            + f" · {p['gbdt_trees']:,} boosted trees")


@st.cache_data(show_spinner=False, max_entries=64)
def _eligibility_cached(db: str, dataset: str, version: str, spec: tuple[tuple[str, Any], ...]):
    from core.modeling.labels import check_eligibility, plan_cutoffs

    store = common.get_store()
    label = LabelSpec.from_dict(dict(spec))
    plan = plan_cutoffs(store, dataset, label)
    return check_eligibility(store, dataset, label, plan), plan


def eligibility(dataset: str, spec: LabelSpec):
    """(Eligibility, CutoffPlan) of ``dataset`` under ``spec``, cached until the data changes."""
    return _eligibility_cached(common.db_path(), dataset, common.data_version(dataset),
                               tuple(sorted(spec.to_dict().items())))


@st.cache_data(show_spinner=False, max_entries=32)
def _leaderboard_cached(root: str, dataset: str, stamp: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    from core.modeling.pipeline import list_models

    return list_models(root, dataset)


def leaderboard(dataset: str) -> pd.DataFrame:
    """``core.modeling.pipeline.list_models`` of ``dataset``, re-read when a card is added or changes."""
    root = models_root()
    cards = sorted(root.glob("*/card.json")) if root.is_dir() else []
    return _leaderboard_cached(str(root), dataset, tuple((str(p), p.stat().st_mtime_ns) for p in cards))


def make_job(store: Any, dataset: str, kind: str, spec: LabelSpec, preset: str, epochs: int | None,
             search: int, seed: int, out: Path):
    """The function the worker thread runs for one model kind (reports through ``ctx`` only)."""
    def run(ctx) -> dict[str, Any]:
        from core.modeling.pipeline import train_model

        result = train_model(store, dataset, kind=kind, spec=spec, preset=preset, epochs=epochs,
                             search=search, seed=seed, out=out, progress=ctx.progress,
                             cancel=ctx.cancel, log=ctx.log, on_epoch=ctx.on_epoch,
                             threads=JOB_THREADS)
        return {"model_dir": str(result.model_dir), "kind": kind, "metrics": result.metrics,
                "summary": result.summary()}
    return run


def cancel_job(job_id: str) -> None:
    """Cancel button callback: set the job's cancel token (the loop stops at its next step)."""
    try:
        common.get_jobs().cancel(job_id)
    except IntentLensError as err:
        common.flash("warning", f"Could not cancel: {err}")
        return
    st.session_state.setdefault(CANCELLING_KEY, set()).add(job_id)


def use_model(model_dir: str) -> None:
    """Make ``model_dir`` the sidebar's current model (runs before the next script run)."""
    st.session_state[common.MODEL_KEY] = model_dir


def interval(metrics: dict[str, Any], name: str) -> str:
    value = metrics.get(name)
    if isinstance(value, dict):
        if pd.isna(value.get("low")):
            return f"{value['value']:.3f}"
        return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
    return "–" if value is None or pd.isna(value) else f"{value:.3f}"


def ci_column(board: pd.DataFrame, name: str) -> list[str]:
    """'[low, high]' per leaderboard row ('–' where the interval is unknown)."""
    low = board.get(f"{name}_low", pd.Series([None] * len(board)))
    high = board.get(f"{name}_high", pd.Series([None] * len(board)))
    return ["–" if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else f"[{lo:.3f}, {hi:.3f}]"
            for lo, hi in zip(low, high)]


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# -- adding a saved model -------------------------------------------------------------------------
def _refuse(why: str) -> ModelError:
    return ModelError(f"the upload is not an IntentLens model: {why}.",
                      title="Not an IntentLens model",
                      hint="Upload a .zip of one model directory (card.json and its weights), as "
                           "written by `python -m core train`.")


def extract_model_zip(data: bytes, dest: Path) -> str | None:
    """Unpack a model archive into ``dest`` (flat) after checking every member: no absolute
    paths, no ``..``, no links, only model file names, at most one enclosing folder, a size cap
    counted on the bytes actually read. Returns the enclosing folder's name (or None)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise _refuse("it is not a .zip archive") from err
    with archive:
        members = [m for m in archive.infolist()
                   if not m.is_dir() and not any(j in m.filename for j in ZIP_JUNK)]
        if not members:
            raise _refuse("the archive is empty")
        if len(members) > MAX_ZIP_MEMBERS:
            raise _refuse(f"the archive holds {len(members):,} files; a model has at most "
                          f"{len(MODEL_FILES)}")
        folders: set[str] = set()
        for member in members:
            name = member.filename
            path = PurePosixPath(name)
            if name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name) \
                    or ".." in path.parts:
                raise _refuse(f"the archive member {name!r} points outside the model folder")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise _refuse(f"the archive member {name!r} is a link")
            if len(path.parts) > 2:
                raise _refuse(f"the archive member {name!r} is nested too deep")
            if path.name not in MODEL_FILES:
                raise _refuse(f"unexpected file {name!r} (a model holds only "
                              f"{', '.join(sorted(MODEL_FILES))})")
            folders.add(path.parts[0] if len(path.parts) == 2 else "")
        if len(folders) > 1:
            raise _refuse("the archive holds several folders; zip one model directory")
        if len({PurePosixPath(m.filename).name for m in members}) != len(members):
            raise _refuse("the archive holds the same file twice")
        if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            raise _refuse(f"it unpacks to more than {MAX_ZIP_BYTES // 2**20:,} MB")
        written = 0
        for member in members:
            with archive.open(member) as src, (dest / PurePosixPath(member.filename).name).open("wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > MAX_ZIP_BYTES:
                        raise _refuse(f"it unpacks to more than {MAX_ZIP_BYTES // 2**20:,} MB")
                    out.write(chunk)
    folder = folders.pop()
    return folder or None


def install_model(src: Path, name: str) -> Path:
    """Validate ``src`` with ``load_model`` and copy its model files into ``models/saved/<name>``
    (card.json last, then one rename, so the picker never sees half a model). ConflictError when
    a model of that name exists; ModelError when ``src`` is not a usable model."""
    from models.artifact import load_model

    common.require_writable("Adding a model")
    load_model(src)                        # ModelError with the reason and what to do
    root = models_root()
    target = root / safe_name(name)
    if target.resolve() == src.resolve():
        raise ConflictError(f"{src} is already in {root}.", title="Already listed",
                            hint="Pick it in the sidebar's Model box.")
    if target.exists():
        raise ConflictError(f"a model named {target.name!r} already exists in {root}.",
                            title="Name taken", hint="Delete the old one below, or rename the folder.")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".import", dir=root))
    try:
        files = sorted((p for p in src.iterdir() if p.is_file() and p.name in MODEL_FILES),
                       key=lambda p: p.name == "card.json")
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def add_from_directory(text: str) -> Path:
    from models.artifact import load_card

    path = Path(text.strip()).expanduser()
    load_card(path)                        # a clear message for "not a model directory"
    return install_model(path, path.name)


def add_from_upload(uploaded: Any) -> Path:
    common.require_writable("Uploading a model")
    stem = re.sub(r"\.zip$", "", str(getattr(uploaded, "name", "model.zip")), flags=re.IGNORECASE)
    folder = Path(tempfile.mkdtemp(prefix="intentlens-model-upload-"))
    try:
        inner = extract_model_zip(uploaded.getvalue(), folder)
        return install_model(folder, inner or stem)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def delete_model(model_dir: str) -> None:
    common.require_writable("Deleting a model")
    root = models_root().resolve()
    path = Path(model_dir).resolve()
    if path.parent != root or not (path / "card.json").is_file():
        raise ModelError(f"{model_dir} is not a model in {root}; only those can be deleted here.")
    shutil.rmtree(path)
    if st.session_state.get(common.MODEL_KEY) == model_dir:
        st.session_state.pop(common.MODEL_KEY, None)


# -- page -----------------------------------------------------------------------------------------
st.title("Train")
st.caption("Teach a model who buys within a horizon, from the events before a cutoff. Every model "
           "is validated on the last complete time window and lands on the leaderboard below.")
common.show_flash()
dataset = common.current_dataset()
demo = common.is_demo()

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
            format_func=KIND_LABELS.get,
            help="One training job per kind; they run one after another and all land on the "
                 "leaderboard. The ensemble trains all three and weights them on validation PR-AUC.")
        preset = st.radio(
            "Size", list(PRESETS), index=0, horizontal=True, key="train_preset",
            help="How much compute to spend: the numbers each size implies are listed below it.")
        st.caption(preset_text(preset))
    with right:
        with st.expander("Advanced", expanded=False):
            epochs = st.number_input(
                "Epochs", min_value=1, max_value=500, value=None, step=1, key="train_epochs",
                placeholder=f"size's {PRESETS[preset]['epochs']}",
                help="Most passes over the training rows (the Transformer stops earlier when "
                     "validation PR-AUC stops improving). Empty: the size's number.")
            search = st.number_input(
                "Search trials", min_value=0, max_value=50, value=0, step=1, key="train_search",
                help="Transformer hyper-parameter search (Optuna TPE): this many trials, each a "
                     "full training; the best one is kept. 0 = no search.")
            seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1,
                                   key="train_seed",
                                   help="Same seed, same data, same settings: same model.")
            lookback = st.text_input(
                "Lookback", value="", key="train_lookback", placeholder="all history",
                help="Only events this long before the cutoff count (e.g. 3d). Empty: all history.")
            max_len = st.number_input(
                "Max events per user", min_value=1, max_value=1000, value=100, step=10,
                key="train_max_len", help="The most recent events kept per user and cutoff.")
    with common.guard():
        parse_duration(horizon)
        spec = LabelSpec(horizon=horizon.strip(), scope=scope, lookback=lookback.strip() or None,
                         max_len=int(max_len),
                         max_train_cutoffs=int(PRESETS[preset]["max_train_cutoffs"]))
        settings = {"kinds": list(kinds), "preset": preset,
                    "epochs": int(epochs) if epochs is not None else None,
                    "search": int(search), "seed": int(seed)}

# -- eligibility card, then the button ------------------------------------------------------------
if spec is not None:
    ready = False
    with common.guard():
        with st.container(border=True):
            st.markdown("**Eligibility** · positives and negatives the time split gives")
            elig, plan = eligibility(dataset, spec)
            cols = st.columns(5)
            cols[0].metric("Training positives", common.fmt_int(elig.train_pos),
                           help="Rows labelled 1 (a buy within the horizon) over all training cutoffs.")
            cols[1].metric("Training negatives", common.fmt_int(elig.train_neg),
                           help="Rows labelled 0 over all training cutoffs.")
            cols[2].metric("Validation positives", common.fmt_int(elig.valid_pos),
                           help="Rows labelled 1 at the validation cutoff (the last complete window).")
            cols[3].metric("Validation negatives", common.fmt_int(elig.valid_neg),
                           help="Rows labelled 0 at the validation cutoff.")
            cols[4].metric("Training windows", common.fmt_int(elig.windows),
                           help="Training cutoffs, each one horizon apart, all before validation.")
            train_span = (f"{common.fmt_ts(plan.train_cutoffs[0])} → {common.fmt_ts(plan.train_cutoffs[-1])}"
                          if plan.train_cutoffs else "none")
            st.caption(f"Training cutoffs (UTC): {train_span} · validation cutoff "
                       f"{common.fmt_ts(plan.valid_cutoff)}, labels up to "
                       f"{common.fmt_ts(plan.valid_cutoff + spec.horizon_td)} · positive share in "
                       f"validation {common.fmt_pct(elig.valid_pos / max(elig.valid_pos + elig.valid_neg, 1))}")
            (st.success if elig.ok else st.warning)(elig.message)
            ready = elig.ok
    kinds = settings.get("kinds", [])
    label = f"Train {len(kinds)} model{'s' if len(kinds) != 1 else ''}" if kinds else "Train"
    if st.button(label, type="primary", key="train_start", disabled=not (ready and kinds),
                 icon=":material/play_arrow:",
                 help="Starts one background job per model kind. The app stays usable; come back "
                      "here to follow the jobs." if ready else
                      "Pick at least one model kind and a label the data can support."):
        with common.guard():
            common.require_writable("Training")
            store = common.get_store()
            registry = common.get_jobs()
            for kind in kinds:
                out = models_root() / model_dir_name(dataset, kind, spec)
                job_id = registry.submit("train", make_job(
                    store, dataset, kind, spec, settings["preset"], settings["epochs"],
                    settings["search"], settings["seed"], out),
                    {"dataset": dataset, "kind": kind, "horizon": spec.horizon, "scope": spec.scope,
                     "preset": settings["preset"], "out": str(out)})
                st.session_state.setdefault(JOBS_KEY, []).append(job_id)


# -- jobs (polled) ---------------------------------------------------------------------------------
def _job_states() -> list:
    registry = common.get_jobs()
    states = []
    for job_id in st.session_state.get(JOBS_KEY, []):
        try:
            states.append(registry.snapshot(job_id))
        except IntentLensError:
            continue     # the app process restarted: that job is gone
    return states


def _job_card(state) -> None:
    params = state.params
    badge = {"queued": ":gray-badge[queued]", "running": ":blue-badge[running]",
             "done": ":green-badge[done]", "failed": ":red-badge[failed]",
             "cancelled": ":orange-badge[cancelled]"}[state.status]
    with st.container(border=True):
        head, button = st.columns([5, 1], vertical_alignment="center")
        head.markdown(f"{badge} **{KIND_LABELS.get(params.get('kind'), params.get('kind'))}** · "
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
                text += f" · about {fmt_seconds(eta)} left"
            st.progress(fraction or 0.0, text=text)
            if state.epochs:
                last = state.epochs[-1]
                st.caption(f"Epoch {last['epoch']}: train loss {last['train_loss']:.4f}, validation "
                           f"loss {last['valid_loss']:.4f}, validation PR-AUC {last['valid_pr_auc']:.3f}")
        elif state.status == "done" and isinstance(state.result, dict):
            result = state.result
            cols = st.columns([1, 1, 1, 1.2])
            cols[0].metric("ROC-AUC", interval(result["metrics"], "roc_auc"),
                           help="Validation ROC-AUC with its bootstrap 95 % interval.")
            cols[1].metric("PR-AUC", interval(result["metrics"], "pr_auc"),
                           help="Validation PR-AUC (average precision) with its 95 % interval.")
            cols[2].metric("Log-loss", interval(result["metrics"], "log_loss"),
                           help="Validation log-loss (lower is better).")
            with cols[3]:
                current = st.session_state.get(common.MODEL_KEY) == result["model_dir"]
                st.button("Current model" if current else "Use this model", key=f"use_{state.id}",
                          disabled=current, on_click=use_model, args=(result["model_dir"],),
                          icon=":material/check:",
                          help="Make it the sidebar's model for the Performance, Cohorts and "
                               "Explain pages.")
            st.caption(f"Saved to `{result['model_dir']}` in "
                       f"{fmt_seconds((state.finished_at or 0) - (state.started_at or 0))}.")
        elif state.status == "failed":
            st.error(state.error or "The job failed.", icon=":material/error:")
        elif state.status == "cancelled":
            st.warning("Cancelled: training stopped and no model was saved.", icon=":material/stop:")
        if params.get("kind") in ("transformer", "ensemble") and (state.epochs or not state.finished):
            common.chart(charts.training_curves(pd.DataFrame(
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

# -- leaderboard ----------------------------------------------------------------------------------
st.subheader("Leaderboard")
board = pd.DataFrame()
with common.guard():
    board = leaderboard(dataset)
    if board.empty:
        st.info(f"No model trained on **{dataset}** yet: train one above, or run "
                f"`python -m core train --dataset {dataset}`.")
    else:
        table = pd.DataFrame({
            "model": board["model_id"], "kind": board["kind"], "horizon": board["horizon"],
            "scope": board["scope"], "ROC-AUC": board["roc_auc"], "ROC-AUC 95% CI": ci_column(board, "roc_auc"),
            "PR-AUC": board["pr_auc"], "PR-AUC 95% CI": ci_column(board, "pr_auc"),
            "log-loss": board["log_loss"], "size (MB)": board["size_mb"],
            "time to train": [fmt_seconds(s) for s in board["train_seconds"]],
            "created": pd.to_datetime(board["created_at"], errors="coerce", utc=True),
        })
        st.dataframe(table, hide_index=True, key="leaderboard_table", column_config={
            "ROC-AUC": st.column_config.NumberColumn(format="%.3f", help="Validation ROC-AUC."),
            "PR-AUC": st.column_config.NumberColumn(format="%.3f", help="Validation PR-AUC."),
            "log-loss": st.column_config.NumberColumn(format="%.4f", help="Lower is better."),
            "size (MB)": st.column_config.NumberColumn(format="%.2f"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", help="UTC"),
        })
        common.chart(charts.leaderboard(board), key="chart_leaderboard")

# -- add or delete saved models --------------------------------------------------------------------
if not demo:
    st.subheader("Add a saved model")
    from_dir, from_zip = st.tabs(["From a directory", "Upload a .zip"])
    with from_dir:
        path_text = st.text_input(
            "Model directory", key="model_dir_path", placeholder="/path/to/models/saved/demo",
            help="A directory written by `python -m core train` (it holds card.json). It is "
                 "checked, then copied into models/saved so every page can use it.")
        if st.button("Add model", key="add_model_dir", disabled=not path_text.strip(),
                     help="Check the directory and copy it into models/saved."):
            with common.guard():
                added = add_from_directory(path_text)
                common.flash("success", f"Added model **{added.name}**.")
                st.rerun()
    with from_zip:
        uploaded = st.file_uploader(
            "Model archive (.zip)", type=["zip"], key="model_zip",
            help="A .zip of one model directory. It is unpacked in a private temp folder, "
                 "checked, and only then copied into models/saved.")
        if st.button("Add uploaded model", key="add_model_zip", disabled=uploaded is None,
                     help="Check the archive and add the model it holds."):
            with common.guard():
                added = add_from_upload(uploaded)
                common.flash("success", f"Added model **{added.name}**.")
                st.rerun()
    if not board.empty:
        with st.expander("Delete a model", expanded=False):
            victim = st.selectbox("Model to delete", board["path"].tolist(), key="delete_model_pick",
                                  format_func=lambda p: Path(p).name,
                                  help="Removes its folder from models/saved.")
            sure = st.checkbox("Yes, delete it", key="delete_model_sure",
                               help="Deleting cannot be undone.")
            if st.button("Delete model", key="delete_model", disabled=not sure, type="secondary",
                         help="Remove the model's folder for good."):
                with common.guard():
                    delete_model(victim)
                    common.flash("success", f"Deleted model **{Path(victim).name}**.")
                    st.rerun()
