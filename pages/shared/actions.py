"""What changes data or models, with the page's feedback: the shipped data on a first start,
ingest (and the preview of an upload before it), deleting a dataset, adding and deleting models.

Each action checks demo mode first (``session.require_writable``), calls ``core`` once, and shows a
user error with the project's message; ``core`` makes every change one transaction (or one
rename), so a refused action leaves nothing changed.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core.errors import IntentLensError
from core.modeling import model_store
from pages.shared import cached, session
from pages.shared.display import fmt_int
from pages.shared.feedback import flash, guard, progress_to, show_error

if TYPE_CHECKING:
    from core.data.ingest import IngestReport
    from core.runtime.samples import Sample

UPLOAD_SUFFIXES = (".csv.gz", ".tsv.gz", ".parquet", ".csv", ".tsv", ".txt", ".gz")
PREVIEW_ROWS = 20
_PREVIEW_KEY = "_upload_preview"      # (options key, preview frame or the error it raised)


# -- first start ----------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _first_start_state(db: str) -> dict[str, Any]:
    """Per database file and process: a lock and whether the shipped data was checked."""
    return {"lock": threading.Lock(), "done": False}


def ensure_first_start_data() -> None:
    """On a database with no dataset, ingest the shipped samples and the synthetic demo log
    (once per process), with visible progress. Failures show the project's message."""
    state = _first_start_state(cached.db_path())
    if state["done"]:
        return
    with state["lock"]:
        if state["done"]:
            return
        store = cached.get_store()
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
                    session.set_current_dataset(names[0])
            state["done"] = True


# -- ingest ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadOptions:
    """How to read a log: the layout, the generic layout's maps and time options, the duplicate
    policy (``core.data.ingest.ingest_file``'s keyword arguments of the same names)."""

    layout: str = "auto"
    column_map: dict[str, str] | None = None
    behavior_map: dict[str, str] | None = None
    ts_format: str | None = None
    tz: str | None = None
    year: int | None = None
    duplicates: str | None = None          # drop | keep | None (from the timestamps' resolution)

    def reading(self) -> dict[str, Any]:
        """The options that decide how rows are parsed (``preview_file``'s keywords)."""
        return {"layout": self.layout, "column_map": self.column_map or None,
                "behavior_map": self.behavior_map or None, "ts_format": self.ts_format or None,
                "tz": self.tz or None, "year": self.year}

    def key(self) -> str:
        return json.dumps(self.reading(), sort_keys=True, default=str)


@contextlib.contextmanager
def saved_upload(uploaded: UploadedFile) -> Iterator[Path]:
    """Write an uploaded file to a private temp file (keeping its extension so the reader knows
    the format) and remove it afterwards."""
    name = str(uploaded.name).lower()
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


def preview_upload(uploaded: UploadedFile, options: ReadOptions) -> pd.DataFrame:
    """The first rows of an upload as ingest would read them (``core.data.ingest.preview_file``),
    nothing stored. Kept in this session until the file or a reading option changes; a
    DataError for the file or the options is raised (and kept) the same way."""
    from core.data.ingest import preview_file

    key = f"{uploaded.file_id}|{uploaded.size}|{options.key()}"
    kept = st.session_state.get(_PREVIEW_KEY)
    if kept is None or kept[0] != key:
        try:
            with saved_upload(uploaded) as path:
                result: pd.DataFrame | IntentLensError = preview_file(path, rows=PREVIEW_ROWS, **options.reading())
        except IntentLensError as err:
            result = err
        kept = (key, result)
        st.session_state[_PREVIEW_KEY] = kept
    if isinstance(kept[1], IntentLensError):
        raise kept[1].with_traceback(None)
    return kept[1]


def ingest(path: str | Path, *, dataset: str | None, options: ReadOptions, replace: bool = False,
           source_name: str | None = None) -> IngestReport | None:
    """Ingest ``path`` with a progress bar; on success make it the current dataset, queue a
    summary and return the IngestReport; on a user error show the message and return None (the
    ingest is one transaction, so the database is unchanged)."""
    from core.data.ingest import ingest_file

    bar = st.progress(0.0, text="Reading the file…")
    try:
        session.require_writable("Ingesting data")
        report = ingest_file(cached.get_store(), path, dataset=dataset or None, replace=replace,
                             progress=progress_to(bar), source_name=source_name,
                             duplicates=options.duplicates, **options.reading())
    except IntentLensError as err:
        bar.empty()
        show_error(err)
        return None
    bar.empty()
    session.set_current_dataset(report.dataset)
    repeats = (f"{fmt_int(report.duplicates_dropped)} duplicates dropped" if report.duplicates == "drop"
               else f"{fmt_int(report.duplicates_kept)} identical rows kept")
    flash("success", f"Ingested **{report.dataset}**: {fmt_int(report.rows_stored)} events stored, "
                     f"{fmt_int(report.rows_quarantined)} quarantined, {repeats} "
                     f"(duplicates: {report.duplicates}, {report.duplicates_reason}).")
    st.session_state.pop(_PREVIEW_KEY, None)
    return report


def delete_dataset(name: str) -> bool:
    """Delete a dataset (events, quarantine, scores, its row) in one transaction."""
    try:
        session.require_writable("Deleting a dataset")
        store = cached.get_store()
        store.dataset(name)
        store.delete_dataset(name)
    except IntentLensError as err:
        show_error(err)
        return False
    session.forget_dataset()
    flash("success", f"Deleted dataset **{name}**.")
    return True


def sample_catalogue() -> list[Sample]:
    """The shipped samples whose file is present."""
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
    for field, column in zip(frame["field"], frame["column"], strict=True):
        if isinstance(field, str) and isinstance(column, str) and field.strip() and column.strip():
            out[field.strip()] = column.strip()
    return out


# -- models ---------------------------------------------------------------------------------------
def add_model_zip(uploaded: UploadedFile) -> Path:
    """``core.modeling.model_store.install_zip`` of an uploaded archive (named after its folder,
    else the file); the new model folder."""
    session.require_writable("Uploading a model")
    return model_store.install_zip(uploaded.getvalue(), name=uploaded.name)


def add_model_dir(text: str) -> Path:
    """``core.modeling.model_store.install_from_dir``: only folders below the models root or the
    configured ``INTENTLENS_MODEL_DIRS`` are read."""
    session.require_writable("Adding a model")
    return model_store.install_from_dir(text.strip())


def delete_model(model_dir: str) -> None:
    """``core.modeling.model_store.delete_model``; the sidebar forgets it when it was current."""
    session.require_writable("Deleting a model")
    model_store.delete_model(model_dir)
    session.forget_model(model_dir)
