"""The store and the pages' cached getters.

Every cache is keyed so that it can never serve stale or another user's data: frames of a dataset
on the database path, the dataset and its *data version* (``ingested_at`` + fingerprint + rows),
so a re-ingest or delete invalidates them; anything of a model on its directory and
``core.modeling.model_store.card_stamp``, which changes when the model is saved, replaced or copied
in. Loaded models are not cached here: ``core.modeling.model_store.load_model_cached`` is the one
process-wide LRU (a model sits in memory once).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from core.data import overview
from core.data.store import Store, resolve_db_path
from core.modeling import model_store
from core.settings import get_settings
from models.artifact import load_card

if TYPE_CHECKING:     # imported where used: the first page a server draws does not need them
    from core.data.quality import QualityReport
    from core.insight.evaluation import Evaluation, Paired
    from core.insight.realized import RealizedReport
    from core.runtime.jobs import JobRegistry
    from core.serving.monitor import DriftReport
    from core.serving.resources import ResourceSampler
    from models.artifact import LoadedModel


# -- store and data versions ----------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    # every cohort query joins scores and user_stats: kept in this process's memory (reloaded when
    # another process commits new ones) instead of read from their Parquet segments each time
    return Store(path, in_memory=("scores", "user_stats"))


def db_path() -> str:
    """The database file this process uses (``core.settings``: INTENTLENS_DB or the default)."""
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


# -- datasets -------------------------------------------------------------------------------------
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
def _quality_cached(db: str, dataset: str, version: str) -> QualityReport:
    from core.data.quality import quality_report

    return quality_report(_open_store(db), dataset)


def quality(dataset: str) -> QualityReport:
    """``core.data.quality.quality_report`` of ``dataset``, cached until the dataset changes."""
    return _quality_cached(db_path(), dataset, data_version(dataset))


def datasets_frame() -> pd.DataFrame:
    """Every dataset with its counts (a tiny table: read fresh on each run)."""
    return overview.datasets_table(get_store())


def dataset_info(dataset: str) -> dict[str, Any]:
    """The ``datasets`` row of ``dataset`` (NotFoundError if it is gone)."""
    return get_store().dataset(dataset)


# -- models ---------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def _models_cached(root: str, dataset: str | None, stamp: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    return model_store.list_models(root, dataset)


def saved_models(dataset: str | None = None) -> pd.DataFrame:
    """``core.modeling.model_store.list_models`` (usable models, newest first; ``dataset``: only
    those trained on it), re-read when a model is added, replaced or deleted."""
    root = get_settings().models_root
    return _models_cached(str(root), dataset, model_store.listing_stamp(root))


def loaded_model(model_dir: str) -> LoadedModel:
    """The model in ``model_dir`` from the process-wide LRU (read it, never change it).
    ModelError (shown by ``feedback.guard``) when it is not a usable model."""
    return model_store.load_model_cached(model_dir)


def model_id(model_dir: str) -> str:
    """The id a model's scores are stored under (its card's ``model_id``, else the folder name)."""
    return str(load_card(model_dir).get("model_id") or Path(model_dir).name)


def run_stamp(model_id: str, dataset: str) -> str | None:
    """When ``model_id`` last scored ``dataset`` (None: never); part of the pages' cache keys."""
    from core.insight.cohorts import scoring_runs

    runs = scoring_runs(get_store(), dataset)
    row = runs[runs["model_id"] == model_id]
    return None if row.empty else str(row["scored_at"].iloc[0])


@st.cache_data(show_spinner=False, max_entries=16)
def _evaluation_rows_cached(model_dir: str, stamp: int) -> pd.DataFrame:
    from core.modeling.pipeline import load_evaluation

    return load_evaluation(model_dir)


def evaluation_rows(model_dir: str) -> pd.DataFrame:
    """The model's saved rows of its test window (label, score, per-member scores, segments;
    ``attrs["split"]`` names the window: validation for models older than the test window)."""
    return _evaluation_rows_cached(str(model_dir), model_store.card_stamp(model_dir))


@st.cache_resource(show_spinner=False, max_entries=8)
def _evaluation_cached(model_dir: str, stamp: int) -> Evaluation:
    """Read-only once built (shared by every session)."""
    from core.insight.evaluation import evaluate_model

    return evaluate_model(model_dir)


def evaluation(model_dir: str) -> Evaluation:
    """``core.insight.evaluation.evaluate_model``, once per model version."""
    return _evaluation_cached(str(model_dir), model_store.card_stamp(model_dir))


@st.cache_data(show_spinner=False, max_entries=16)
def _paired_cached(model_dir: str, stamp: int, other_dir: str | None, other_stamp: int) -> Paired:
    from core.insight.evaluation import ensemble_lead, paired_comparison

    return ensemble_lead(model_dir) if other_dir is None else paired_comparison(model_dir, other_dir)


def paired(model_dir: str, other_dir: str | None = None) -> Paired:
    """``core.insight.evaluation.paired_comparison`` of the two models, or with no ``other_dir``
    the ensemble's ``ensemble_lead`` over its members; once per pair of model versions."""
    other_stamp = model_store.card_stamp(other_dir) if other_dir else 0
    return _paired_cached(str(model_dir), model_store.card_stamp(model_dir),
                          None if other_dir is None else str(other_dir), other_stamp)


# -- monitoring -----------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def _drift_cached(db: str, model_dir: str, stamp: int, dataset: str, version: str, threshold: float,
                  reference_version: str) -> DriftReport:
    from core.serving.monitor import drift_report

    return drift_report(_open_store(db), model_dir, dataset, threshold=threshold)


def drift(model_dir: str, dataset: str, threshold: float) -> DriftReport:
    """``core.serving.monitor.drift_report``, once per model version, data version of the dataset
    (and of the model's training dataset) and threshold."""
    reference = str(load_card(model_dir).get("dataset") or dataset)
    return _drift_cached(db_path(), str(model_dir), model_store.card_stamp(model_dir), dataset,
                         data_version(dataset), float(threshold), data_version(reference))


@st.cache_data(show_spinner=False, max_entries=64)
def _stability_cached(db: str, model_id: str, dataset: str, top_percent: float,
                      runs: tuple[str, ...]) -> pd.DataFrame:
    from core.serving.monitor import cohort_stability

    return cohort_stability(_open_store(db), model_id, dataset, top_percent=top_percent)


def cohort_stability(model_id: str, dataset: str, top_percent: float, runs: tuple[str, ...]) -> pd.DataFrame:
    """``core.serving.monitor.cohort_stability`` (consecutive runs), until a new run is recorded:
    ``runs`` is the run ids of ``core.serving.monitor.score_runs``."""
    return _stability_cached(db_path(), model_id, dataset, float(top_percent), runs)


@st.cache_data(show_spinner=False, max_entries=16)
def _realized_cached(db: str, model_dir: str, stamp: int, dataset: str, version: str, top_percent: float,
                     history: str) -> RealizedReport:
    from core.insight.realized import realized_runs

    return realized_runs(_open_store(db), model_dir, dataset, top_percent=top_percent)


def realized(model_dir: str, dataset: str, top_percent: float) -> RealizedReport:
    """``core.insight.realized.realized_runs``, until the model, the data, its scoring runs or its
    exports change."""
    card = load_card(model_dir)
    row = get_store().fetchone(
        "SELECT (SELECT count(*) FROM score_runs WHERE model_id = ? AND dataset = ?), "
        "(SELECT count(*) FROM exports WHERE model_id = ? AND dataset = ?)",
        [card.get("model_id"), dataset, card.get("model_id"), dataset])
    return _realized_cached(db_path(), str(model_dir), model_store.card_stamp(model_dir), dataset,
                            data_version(dataset), float(top_percent), str(row))


# -- jobs -----------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def get_jobs() -> JobRegistry:
    """The process-wide job registry: training and scoring run in its worker thread."""
    from core.runtime.jobs import JobRegistry
    from core.serving.resources import default_resource_path

    return JobRegistry(resource_log=default_resource_path(db_path()))


@st.cache_resource(show_spinner=False)
def _app_sampler(db: str) -> ResourceSampler:
    from core.serving.resources import start_sampler

    return start_sampler(db, "app")


def sample_app_resources() -> None:
    """Start, once per process and database, the thread that writes this app's CPU and memory to
    the resource log the Monitor page reads."""
    _app_sampler(db_path())
