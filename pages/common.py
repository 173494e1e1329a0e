"""The only shared Streamlit glue: store, cached getters, errors, sidebar state, demo mode, formats.

Pages read: widgets -> one ``core`` call (through a cached getter here) -> a ``core.charts`` figure.
Nothing here holds one user's state in a shared cache: the Store is process-wide (one DuckDB
connection, a cursor per call), cached frames are keyed on the database path, the dataset and its
*data version* (``ingested_at`` + fingerprint), so a re-ingest or delete invalidates them, and the
current dataset / model live in ``st.session_state``, mirrored to ``st.query_params`` so a link
reopens the same view.

Adding a page: write ``pages/<name>.py``; its entry in :data:`PAGES` is already there (the app
registers every entry whose file exists), or add one line for a new page.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.data import overview
from core.errors import IntentLensError, ReadOnlyError
from core.data.store import Store, resolve_db_path
from core.settings import ENV_DEMO, get_settings

ROOT = Path(__file__).resolve().parents[1]


# -- page registry --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PageSpec:
    """One page of the app. ``path`` is relative to the repository root."""

    path: str        # "pages/data.py"
    title: str       # navigation label
    icon: str        # material icon shown in the navigation
    blurb: str       # one line on the Home page
    url_path: str    # the page's address; must differ from the file's stem (see below)


# The app's navigation, in order. One line per page; a page whose file does not exist yet is
# simply not registered. The first page is the default one (served at "/"). A url_path must not
# equal the file's stem: Streamlit still routes the first run of a process (and every AppTest run)
# through its legacy pages/ directory router, which would run pages/<stem>.py on its own, without
# app.py's page config and sidebar.
PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/home.py", "Home", ":material/home:", "What IntentLens does; the current dataset and model.", "start"),
    PageSpec("pages/data.py", "Data", ":material/database:", "Ingest logs, check their quality, look at the overview.", "datasets"),
    PageSpec("pages/train.py", "Train", ":material/model_training:", "Train intent models and compare them on a leaderboard.", "training"),
    PageSpec("pages/performance.py", "Performance", ":material/monitoring:", "How well a model ranks buyers: curves, lift, calibration.", "evaluation"),
    PageSpec("pages/cohorts.py", "Cohorts", ":material/groups:", "Pick high-intent users, see what sets them apart, export them.", "cohort-builder"),
    PageSpec("pages/explain.py", "Explain", ":material/psychology:", "Why the model scores one user the way it does.", "explanations"),
)


def available_pages() -> list[PageSpec]:
    """The entries of PAGES whose file exists, in order."""
    return [p for p in PAGES if (ROOT / p.path).is_file()]


# -- store and data versions ----------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store(path)


def db_path() -> str:
    """The database file this process uses (INTENTLENS_DB or data/intentlens.duckdb)."""
    return str(resolve_db_path())


def get_store() -> Store:
    """The process-wide Store for :func:`db_path` (one connection; a cursor per call)."""
    return _open_store(db_path())


def data_version(dataset: str) -> str:
    """Changes whenever ``dataset`` is ingested again, replaced or deleted (cache key)."""
    row = get_store().fetchone(
        "SELECT CAST(ingested_at AS VARCHAR), sha256, rows_stored FROM datasets WHERE name = ?",
        [dataset])
    return "missing" if row is None else "|".join(str(v) for v in row)


# -- cached getters -------------------------------------------------------------------------------
# Overview queries a page may ask for by name (the cache key must be plain data, not a function).
OVERVIEW_QUERIES: dict[str, Callable[..., pd.DataFrame]] = {
    "events_per_day": overview.events_per_day,
    "hour_of_day": overview.hour_of_day,
    "funnel": overview.funnel,
    "top_categories": overview.top_categories,
    "events_per_user": overview.events_per_user,
    "behavior_counts": overview.behavior_counts,
    "quarantine_reasons": overview.quarantine_reasons,
    "quarantine_rows": overview.quarantine_rows,
    "preview_rows": overview.preview_rows,
}


@st.cache_data(show_spinner=False, max_entries=512)
def _overview_cached(name: str, db: str, dataset: str, version: str,
                     params: tuple[tuple[str, Any], ...]) -> pd.DataFrame:
    return OVERVIEW_QUERIES[name](_open_store(db), dataset, **dict(params))


def overview_frame(name: str, dataset: str, **params: Any) -> pd.DataFrame:
    """``core.data.overview.<name>(store, dataset, **params)``, cached until the dataset changes."""
    if name not in OVERVIEW_QUERIES:
        raise KeyError(f"unknown overview query {name!r}; known: {sorted(OVERVIEW_QUERIES)}")
    return _overview_cached(name, db_path(), dataset, data_version(dataset),
                            tuple(sorted(params.items())))


@st.cache_data(show_spinner=False, max_entries=64)
def _offset_cached(db: str, dataset: str, version: str) -> overview.LocalOffset:
    return overview.local_offset(_open_store(db), dataset)


def local_offset(dataset: str) -> overview.LocalOffset:
    """The source time zone offset used for day and hour boundaries of ``dataset``."""
    return _offset_cached(db_path(), dataset, data_version(dataset))


@st.cache_data(show_spinner=False, max_entries=64)
def _quality_cached(db: str, dataset: str, version: str):
    from core.data.quality import quality_report
    return quality_report(_open_store(db), dataset)


def quality(dataset: str):
    """``core.data.quality.quality_report`` of ``dataset``, cached until the dataset changes."""
    return _quality_cached(db_path(), dataset, data_version(dataset))


def datasets_frame() -> pd.DataFrame:
    """Every dataset with its counts (a tiny table: read fresh on each run)."""
    return overview.datasets_table(get_store())


def dataset_info(dataset: str) -> dict[str, Any]:
    """The ``datasets`` row of ``dataset`` (NotFoundError if it is gone)."""
    return get_store().dataset(dataset)


@st.cache_data(show_spinner=False, max_entries=16)
def _models_cached(root: str, stamp: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    return overview.saved_models(root)


def saved_models() -> pd.DataFrame:
    """Models under models/saved with a card.json; re-read when a card is added or changes."""
    root = get_settings().models_root
    cards = sorted(root.glob("*/card.json")) if root.is_dir() else []
    return _models_cached(str(root), tuple((str(p), p.stat().st_mtime_ns) for p in cards))


# -- models and jobs --------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def get_jobs():
    """The process-wide job registry: training and scoring run in its worker thread."""
    from core.runtime.jobs import JobRegistry

    return JobRegistry()


def _card_stamp(model_dir: str) -> int:
    card = Path(model_dir) / "card.json"
    return card.stat().st_mtime_ns if card.exists() else 0


def model_id(model_dir: str) -> str:
    """The id a model's scores are stored under (its card's ``model_id``, else the folder name)."""
    from models.artifact import load_card

    return str(load_card(model_dir).get("model_id") or Path(model_dir).name)


def run_stamp(model_id: str, dataset: str) -> str | None:
    """When ``model_id`` last scored ``dataset`` (None: never); part of the pages' cache keys."""
    from core.insight.cohorts import scoring_runs

    runs = scoring_runs(get_store(), dataset)
    row = runs[runs["model_id"] == model_id]
    return None if row.empty else str(row["scored_at"].iloc[0])


@st.cache_resource(show_spinner=False, max_entries=8)
def _loaded_model_cached(model_dir: str, stamp: int):
    from models.artifact import load_model

    return load_model(model_dir)


def loaded_model(model_dir: str):
    """``models.artifact.load_model`` of a directory, shared read-only and reloaded when its card
    changes. ModelError (shown by :func:`guard`) when it is not a usable model."""
    return _loaded_model_cached(str(model_dir), _card_stamp(str(model_dir)))


@st.cache_data(show_spinner=False, max_entries=16)
def _validation_cached(model_dir: str, stamp: int) -> pd.DataFrame:
    from core.modeling.pipeline import load_validation

    return load_validation(model_dir)


def validation_rows(model_dir: str) -> pd.DataFrame:
    """The model's saved validation rows (label, score, per-member scores, segments)."""
    return _validation_cached(str(model_dir), _card_stamp(str(model_dir)))


# -- errors -----------------------------------------------------------------------------------------
def show_error(err: IntentLensError) -> None:
    """The project's title and message in an error box; never a traceback."""
    text = f"**{err.title}.** {err.message}"
    if err.hint:
        text += f"  \n{err.hint}"
    st.error(text, icon=":material/error:")


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Run a block; an IntentLensError inside it is shown with :func:`show_error` and stops the
    block (the rest of the page still renders). Other exceptions are bugs and propagate."""
    try:
        yield
    except IntentLensError as err:
        show_error(err)


def flash(kind: str, text: str) -> None:
    """Queue a message for the next run (survives ``st.rerun``); ``kind``: success|info|warning."""
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    """Show and clear the queued messages."""
    for kind, text in st.session_state.pop("_flash", []):
        getattr(st, kind)(text)


# -- demo (read-only) mode ------------------------------------------------------------------------
def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def is_demo() -> bool:
    """Read-only mode for stakeholder sessions: ``INTENTLENS_DEMO=1`` or ``[intentlens] demo = true``
    in ``.streamlit/secrets.toml``. No uploads, no training, no deletes."""
    demo = get_settings().demo
    if demo is not None:
        return demo
    if st.secrets.load_if_toml_exists():
        section = st.secrets.get("intentlens", {})
        return _truthy(section.get("demo", False))
    return False


def require_writable(action: str) -> None:
    """Raise ReadOnlyError in demo mode (the controls are hidden too; this is the backstop)."""
    if is_demo():
        raise ReadOnlyError(f"{action} is switched off in this demo session.",
                            hint=f"Unset {ENV_DEMO} (or `[intentlens] demo`) to change data or models.")


# -- current dataset and model (sidebar) ----------------------------------------------------------
DATASET_KEY = "dataset_picker"
MODEL_KEY = "model_picker"
_PENDING_DATASET = "_pending_dataset"
DEFAULT_DATASET = "demo"     # shown first when present (the synthetic demo log)


def set_current_dataset(name: str) -> None:
    """Make ``name`` the current dataset from the next run on (call ``st.rerun()`` after)."""
    st.session_state[_PENDING_DATASET] = name


def current_dataset() -> str | None:
    """The dataset chosen in the sidebar (None when there is none yet)."""
    return st.session_state.get(DATASET_KEY)


def current_model() -> str | None:
    """Path of the model chosen in the sidebar (None when there is none)."""
    return st.session_state.get(MODEL_KEY)


def _query_param(name: str) -> str | None:
    value = st.query_params.get(name)
    return value if isinstance(value, str) and value else None


def sidebar() -> None:
    """Dataset and model pickers; keeps session state and the URL's query parameters in step."""
    frame = datasets_frame()
    names = frame["name"].tolist()
    events = dict(zip(frame["name"], frame["rows_stored"].fillna(0).astype("int64")))
    state = st.session_state
    pending = state.pop(_PENDING_DATASET, None)
    if pending in names:
        state[DATASET_KEY] = pending
    elif state.get(DATASET_KEY) not in names:
        wanted = _query_param("dataset")
        fallback = DEFAULT_DATASET if DEFAULT_DATASET in names else (names[0] if names else None)
        state[DATASET_KEY] = wanted if wanted in names else fallback

    with st.sidebar:
        st.markdown("### :material/travel_explore: IntentLens")
        if names:
            st.selectbox("Dataset", names, key=DATASET_KEY,
                         format_func=lambda n: f"{n} · {fmt_int(events.get(n, 0))} events",
                         help="Every page works on this dataset. Add one on the Data page.")
            st.query_params["dataset"] = state[DATASET_KEY]
        else:
            st.info("No dataset yet. Ingest one on the Data page.")
            st.query_params.pop("dataset", None)
        _model_picker(state.get(DATASET_KEY))
        if is_demo():
            st.caption(":material/lock: Demo mode: read-only.")


def _model_picker(dataset: str | None) -> None:
    models = saved_models()
    usable = models[models["error"].isna()] if not models.empty else models
    if not usable.empty and dataset is not None:
        mine = usable[usable["dataset"] == dataset]
        usable = mine if not mine.empty else usable
    if usable.empty:
        st.session_state.pop(MODEL_KEY, None)
        st.caption("No trained model yet: train one on the Train page or with "
                   "`python -m core train --dataset NAME`.")
        return
    labels = {row.path: _model_label(row) for row in usable.itertuples()}
    paths = list(labels)
    if st.session_state.get(MODEL_KEY) not in paths:
        wanted = _query_param("model")
        match = [p for p in paths if Path(p).name == wanted]
        st.session_state[MODEL_KEY] = match[0] if match else paths[0]
    st.selectbox("Model", paths, key=MODEL_KEY, format_func=labels.get,
                 help="Models saved under models/saved; the Performance, Cohorts and Explain "
                      "pages use this one.")
    st.query_params["model"] = Path(st.session_state[MODEL_KEY]).name


def _model_label(row: Any) -> str:
    parts = [str(row.kind or "model"), str(row.model_id)]
    if row.pr_auc is not None and not pd.isna(row.pr_auc):
        parts.append(f"PR-AUC {row.pr_auc:.3f}")
    return " · ".join(parts)


# -- first start ----------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _first_start_state(db: str) -> dict[str, Any]:
    """Per database file and process: a lock and whether the shipped data was checked."""
    return {"lock": threading.Lock(), "done": False}


def ensure_first_start_data() -> None:
    """On a database with no dataset, ingest the shipped samples and the synthetic demo log
    (once per process), with visible progress. Failures show the project's message."""
    state = _first_start_state(db_path())
    if state["done"]:
        return
    with state["lock"]:
        if state["done"]:
            return
        store = get_store()
        from core.runtime.samples import ensure_default_data, ensure_demo_scores

        # Shipped data and the shipped demo model's scores are loaded even in demo mode: they are
        # the installation's defaults, not a user's change.
        if store.dataset_names():
            with guard():
                ensure_demo_scores(store)
            state["done"] = True
            return
        with st.status("First start: loading the sample and demo data…", expanded=True) as box:
            bar = st.progress(0.0)
            with guard():
                names = ensure_default_data(store, progress=progress_to(bar))
                ensure_demo_scores(store, progress=progress_to(bar))
                box.update(label=f"Loaded {len(names)} datasets: {', '.join(names)}",
                           state="complete", expanded=False)
                if names:
                    set_current_dataset(names[0])
            state["done"] = True


# -- ingest and delete (Data page) ----------------------------------------------------------------
def progress_to(bar: Any) -> Callable[[float, float | None, str], None]:
    """A core progress callback that drives an ``st.progress`` element."""
    def progress(done: float, total: float | None, message: str) -> None:
        fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
        bar.progress(fraction, text=message or None)
    return progress


UPLOAD_SUFFIXES = (".csv.gz", ".tsv.gz", ".parquet", ".csv", ".tsv", ".txt", ".gz")


@contextlib.contextmanager
def saved_upload(uploaded: Any) -> Iterator[Path]:
    """Write an uploaded file to a private temp file (keeping its extension so the reader knows
    the format) and remove it afterwards."""
    name = str(getattr(uploaded, "name", "upload.csv")).lower()
    suffix = next((s for s in UPLOAD_SUFFIXES if name.endswith(s)), ".csv")
    folder = Path(tempfile.mkdtemp(prefix="intentlens-upload-"))
    try:
        path = folder / f"upload{suffix}"
        uploaded.seek(0)
        with path.open("wb") as out:
            shutil.copyfileobj(uploaded, out, length=1 << 20)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ingest(path: str | Path, *, dataset: str | None, layout: str = "auto",
           column_map: dict[str, str] | None = None, behavior_map: dict[str, str] | None = None,
           replace: bool = False, source_name: str | None = None):
    """Ingest ``path`` with a progress bar; on success make it the current dataset, queue a
    summary and return the IngestReport; on a user error show the message and return None (the
    ingest is one transaction, so the database is unchanged)."""
    from core.data.ingest import ingest_file

    bar = st.progress(0.0, text="Reading the file…")
    try:
        require_writable("Ingesting data")
        report = ingest_file(get_store(), path, dataset=dataset or None, layout=layout,
                             column_map=column_map or None, behavior_map=behavior_map or None,
                             replace=replace, progress=progress_to(bar), source_name=source_name)
    except IntentLensError as err:
        bar.empty()
        show_error(err)
        return None
    bar.empty()
    set_current_dataset(report.dataset)
    flash("success", f"Ingested **{report.dataset}**: {fmt_int(report.rows_stored)} events stored, "
                     f"{fmt_int(sum(report.quarantined.values()))} quarantined, "
                     f"{fmt_int(report.duplicates_dropped)} duplicates dropped.")
    return report


def delete_dataset(name: str) -> bool:
    """Delete a dataset (events, quarantine, scores, its row) in one transaction."""
    try:
        require_writable("Deleting a dataset")
        store = get_store()
        store.dataset(name)
        store.delete_dataset(name)
    except IntentLensError as err:
        show_error(err)
        return False
    st.session_state.pop(DATASET_KEY, None)
    flash("success", f"Deleted dataset **{name}**.")
    return True


def sample_catalogue() -> list[Any]:
    """The shipped samples whose file is present (``core.runtime.samples.Sample``: name, path, layout,
    description, column_map, behavior_map)."""
    from core.runtime.samples import samples
    return samples(available_only=True)


def default_dataset_name(file_name: str) -> str:
    """The dataset name an upload gets unless the user types one."""
    from core.data.ingest import default_dataset_name as from_file
    return from_file(file_name)


def column_map_frame(fields: tuple[str, ...]) -> pd.DataFrame:
    """Rows for the generic layout's column-map editor (``field`` -> source ``column``)."""
    return pd.DataFrame({"field": list(fields), "column": [""] * len(fields)})


def behavior_map_frame() -> pd.DataFrame:
    """An empty behaviour-value map editor (source value in ``field``, behaviour in ``column``)."""
    return pd.DataFrame({"field": pd.Series(dtype=str), "column": pd.Series(dtype=str)})


def mapping_from_editor(frame: pd.DataFrame) -> dict[str, str]:
    """The filled rows of a map editor as ``{field: column}`` (blank cells left out)."""
    out: dict[str, str] = {}
    for field, column in zip(frame["field"], frame["column"]):
        if isinstance(field, str) and isinstance(column, str) and field.strip() and column.strip():
            out[field.strip()] = column.strip()
    return out


STATUS_COLORS = {"pass": "#E3F4EA", "warn": "#FDF0DC", "fail": "#FBE3E4"}   # light badge fills
STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2}


def quality_table(checks: pd.DataFrame) -> Any:
    """The quality checks for display: failures first (report order otherwise), the status cell
    tinted like a badge, values rounded. Returns a pandas Styler for ``st.dataframe``."""
    frame = checks.assign(_order=checks["status"].map(STATUS_ORDER).fillna(3))
    frame = frame.sort_values("_order", kind="stable").drop(columns="_order")
    frame["value"] = frame["value"].map(
        lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v))
        else f"{v:,.4g}" if isinstance(v, (int, float)) else str(v))
    frame = frame[["status", "group", "check", "value", "reason"]].reset_index(drop=True)
    return frame.style.map(lambda s: f"background-color: {STATUS_COLORS.get(s, 'white')}; "
                                     "font-weight: 600", subset=["status"])


# -- formats --------------------------------------------------------------------------------------
def fmt_int(value: Any) -> str:
    """1234567 -> '1,234,567'; missing -> '–'."""
    if value is None or pd.isna(value):
        return "–"
    return f"{int(value):,}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'; missing -> '–'."""
    if value is None or pd.isna(value):
        return "–"
    return f"{float(value):.{digits}%}"


def fmt_ts(value: Any) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM' (UTC); missing -> '–'."""
    if value is None or pd.isna(value):
        return "–"
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def fmt_span(start: Any, end: Any) -> str:
    """'2017-11-25 → 2017-12-03 (9 days)'."""
    if start is None or end is None or pd.isna(start) or pd.isna(end):
        return "–"
    a, b = pd.Timestamp(start), pd.Timestamp(end)
    days = (b - a).total_seconds() / 86400
    length = f"{days:.1f} days" if days < 10 else f"{days:,.0f} days"
    if days < 1:
        length = f"{days * 24:.1f} hours"
    return f"{a:%Y-%m-%d} → {b:%Y-%m-%d} ({length})"


def count_columns(columns: list[str]) -> dict[str, Any]:
    """``st.column_config`` entries showing counts with thousands separators."""
    return {c: st.column_config.NumberColumn(c.replace("_", " "), format="localized")
            for c in columns}


def chart(fig: Any, key: str) -> None:
    """Show a core.charts figure with its own template (not Streamlit's theme)."""
    st.plotly_chart(fig, theme=None, key=key, config={"displaylogo": False})


def require_dataset_and_model(no_model: str) -> tuple[str, str]:
    """The current dataset and model directory; otherwise an empty state saying what to do next
    (``no_model`` when there is no model) and the page stops."""
    dataset, model_dir = current_dataset(), current_model()
    if dataset is None:
        st.info("No dataset yet. Ingest one on the **Data** page.")
        st.stop()
    if model_dir is None:
        st.info(no_model)
        st.stop()
    return dataset, model_dir
