"""The session's current dataset and model (the sidebar's pickers, mirrored to ``st.query_params``
so a link reopens the same view) and demo (read-only) mode.

The choices live in ``st.session_state`` (one user's state, never in a shared cache).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import ReadOnlyError
from core.settings import ENV_DEMO, get_settings, parse_flag
from pages.shared import cached
from pages.shared.display import fmt_int

DATASET_KEY = "dataset_picker"
MODEL_KEY = "model_picker"
_PENDING_DATASET = "_pending_dataset"
DEFAULT_DATASET = "demo"     # shown first when present (the synthetic demo log)


# -- demo (read-only) mode ------------------------------------------------------------------------
def is_demo() -> bool:
    """Read-only mode for stakeholder sessions: ``INTENTLENS_DEMO=1`` or ``[intentlens] demo = true``
    in ``.streamlit/secrets.toml``. No uploads, no training, no deletes."""
    demo = get_settings().demo
    if demo is not None:
        return demo
    if st.secrets.load_if_toml_exists():
        section = st.secrets.get("intentlens", {})
        return parse_flag(str(section.get("demo", False)))
    return False


def require_writable(action: str) -> None:
    """Raise ReadOnlyError in demo mode (the controls are hidden too; this is the backstop)."""
    if is_demo():
        raise ReadOnlyError(f"{action} is switched off in this demo session.",
                            hint=f"Unset {ENV_DEMO} (or `[intentlens] demo`) to change data or models.")


# -- current dataset and model --------------------------------------------------------------------
def set_current_dataset(name: str) -> None:
    """Make ``name`` the current dataset from the next run on (call ``st.rerun()`` after)."""
    st.session_state[_PENDING_DATASET] = name


def forget_dataset() -> None:
    """Drop the current dataset (it was deleted): the sidebar picks another on the next run."""
    st.session_state.pop(DATASET_KEY, None)


def current_dataset() -> str | None:
    """The dataset chosen in the sidebar (None when there is none yet)."""
    return st.session_state.get(DATASET_KEY)


def current_model() -> str | None:
    """Path of the model chosen in the sidebar (None when there is none)."""
    return st.session_state.get(MODEL_KEY)


def use_model(model_dir: str) -> None:
    """Make ``model_dir`` the sidebar's current model (a callback: runs before the next run)."""
    st.session_state[MODEL_KEY] = model_dir


def forget_model(model_dir: str) -> None:
    """Drop ``model_dir`` as the current model if it is (it was deleted)."""
    if st.session_state.get(MODEL_KEY) == model_dir:
        st.session_state.pop(MODEL_KEY, None)


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


def query_param(name: str) -> str | None:
    """The URL's query parameter ``name`` (None when absent or empty)."""
    value = st.query_params.get(name)
    return value if isinstance(value, str) and value else None


# -- sidebar --------------------------------------------------------------------------------------
def sidebar() -> None:
    """Dataset and model pickers; keeps session state and the URL's query parameters in step."""
    frame = cached.datasets_frame()
    names = frame["name"].tolist()
    events = dict(zip(frame["name"], frame["rows_stored"].fillna(0).astype("int64"), strict=True))
    state = st.session_state
    pending = state.pop(_PENDING_DATASET, None)
    if pending in names:
        state[DATASET_KEY] = pending
    elif state.get(DATASET_KEY) not in names:
        wanted = query_param("dataset")
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
    usable = cached.saved_models()
    if not usable.empty and dataset is not None:
        mine = usable[usable["dataset"] == dataset]
        usable = mine if not mine.empty else usable
    if usable.empty:
        st.session_state.pop(MODEL_KEY, None)
        st.caption("No trained model yet: train one on the Train page or with "
                   "`python -m core train --dataset NAME`.")
        return
    labels = {str(row["path"]): model_label(row) for _, row in usable.iterrows()}
    paths = list(labels)
    if st.session_state.get(MODEL_KEY) not in paths:
        wanted = query_param("model")
        match = [p for p in paths if Path(p).name == wanted]
        # no choice yet: the newest model that reads event sequences (the headline Transformer or
        # an ensemble holding one), else the newest model
        sequential = [str(row["path"]) for _, row in usable.iterrows()
                      if row["kind"] in ("transformer", "ensemble")]
        st.session_state[MODEL_KEY] = match[0] if match else (sequential or paths)[0]
    st.selectbox("Model", paths, key=MODEL_KEY, format_func=lambda p: labels[p],
                 help="Models saved under the models folder; the Performance, Cohorts and Explain "
                      "pages use this one.")
    st.query_params["model"] = Path(st.session_state[MODEL_KEY]).name


def model_label(row: pd.Series) -> str:
    """'kind · model id · PR-AUC 0.312' for a ``list_models`` row."""
    parts = [str(row["kind"] or "model"), str(row["model_id"])]
    if not pd.isna(row["pr_auc"]):
        parts.append(f"PR-AUC {row['pr_auc']:.3f}")
    return " · ".join(parts)
