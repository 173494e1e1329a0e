"""What drives a model's scores, put together for the Explain page from ``core.insight.explain``.

For one user: :func:`first_user` (whom to show before anyone is picked: the top of the model's
scoring run), :func:`user_methods` (the attribution methods a model supports), :func:`explain`
(those methods for one user), :func:`faithfulness_of` and :func:`what_if_of` (checks on one
explanation). Across users: :func:`population` (a fixed sample of a cohort, or of everyone),
:func:`cohort_drivers` (mean per-event attribution by behaviour, time before T and category) and
:func:`tree_shap_drivers` (cohort -> aggregate features at T -> tree SHAP of the GBDT member).
Nothing here caches; the pages cache the results per model, data version and user or cohort.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data.store import Store
from core.errors import ModelError
from core.insight import cohorts as C
from core.insight import explain as E
from core.modeling.model_store import load_model_cached

EVERYONE = C.CohortSpec(mode="top", top_percent=100)    # every scored user


def _model_id(loaded: Any, model_dir: str | Path) -> str:
    return str(loaded.card.get("model_id") or Path(model_dir).name)


# -- one user ----------------------------------------------------------------------------------
def first_user(store: Store, model_id: str, dataset: str) -> str | None:
    """The user with the highest score in ``model_id``'s scoring run of ``dataset`` (ties: the
    smallest id), or None when the model has not scored the dataset."""
    top = C.cohort_users(store, model_id, dataset, EVERYONE, order_by="score", descending=True, limit=1)
    return None if top.empty else str(top["user_id"].iloc[0])


def user_methods(model_dir: str | Path) -> tuple[str, ...]:
    """The per-event attribution methods for the model's users: all of ``E.METHODS``, except that
    scope 'category' models get SHAP and attention only (``core.insight.explain`` has no
    integrated gradients for them yet)."""
    scope = getattr(load_model_cached(model_dir).spec, "scope", "any")
    return tuple(m for m in E.METHODS if scope != "category" or m != "ig")


def quick_methods(model_dir: str | Path) -> tuple[str, ...]:
    """The methods to show first: :func:`user_methods` without SHAP when others remain. SHAP's
    permutation explainer JIT-compiles its numba kernels on its first call in a process (the
    demo's first explanation: 10.3 s with SHAP against 1.4 s without, ``bench/explain_cold.py``),
    so a page shows the other methods at once and computes SHAP when it is asked for."""
    methods = user_methods(model_dir)
    return tuple(m for m in methods if m != "shap") or methods


def explain(store: Store, model_dir: str | Path, dataset: str, user_id: str,
            methods: Sequence[str] | None = None) -> E.Explanation:
    """:func:`core.insight.explain.explain_user` with ``methods`` (default: every method the
    model supports, :func:`user_methods`)."""
    return E.explain_user(store, model_dir, dataset, user_id,
                          methods=tuple(methods) if methods is not None else user_methods(model_dir))


def faithfulness_of(exp: E.Explanation) -> pd.DataFrame:
    """The faithfulness curves of every method in an explanation (``E.Explanation.faithfulness``,
    the same curve ``python -m core explain --json`` returns); ModelError without a Transformer."""
    return exp.faithfulness()


def what_if_of(exp: E.Explanation, removed: Sequence[int] = (),
               added: Sequence[tuple[str, str | None, float]] = ()) -> dict[str, float]:
    """Re-score the explained user without the events at ``removed`` positions and with the
    hypothetical events ``added`` as (behaviour, category or None, seconds before T), the sequence
    rebuilt from the edited events (``E.Explanation.what_if``). A Transformer model's probabilities
    go through its calibration map, like its score."""
    events = [{"behavior": b, "category": c, "gap_seconds": g} for b, c, g in added]
    out = exp.what_if(remove_positions=tuple(removed), add_events=events)
    calibration = exp.model.calibration
    if calibration is not None and exp.model.kind == "transformer":
        before, after = (float(v) for v in calibration.apply([out["before"], out["after"]]))
        out = {"before": before, "after": after, "delta": after - before}
    return out


# -- across users ------------------------------------------------------------------------------
def population(store: Store, model_id: str, dataset: str, cohort: C.CohortSpec | None,
               n_users: int) -> list[str]:
    """Up to ``n_users`` users of ``cohort`` (None: everyone scored) in a fixed pseudo-random
    order. NotFoundError when the model has not scored the dataset."""
    return C.cohort_sample(store, model_id, dataset, cohort or EVERYONE, n_users)


def cohort_drivers(store: Store, model_dir: str | Path, dataset: str, cohort: C.CohortSpec | None,
                   n_users: int, method: str) -> dict[str, pd.DataFrame]:
    """Global drivers (``E.global_drivers``: behaviour, gap, category frames) of a sample of
    ``n_users``: of the cohort's users, or with ``cohort`` None of everyone in the dataset (no
    scoring run needed)."""
    users = None
    if cohort is not None:
        users = population(store, _model_id(load_model_cached(model_dir), model_dir), dataset,
                           cohort, n_users)
    return E.global_drivers(store, model_dir, dataset, users, method, max_users=n_users)


def contrast_drivers(cohort: dict[str, pd.DataFrame],
                     everyone: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each driver frame of a cohort next to everyone's (``E.compare_drivers`` per frame)."""
    return {key: E.compare_drivers(cohort[key], everyone[key]) for key in everyone}


def tree_shap_drivers(store: Store, model_dir: str | Path, dataset: str, cohort: C.CohortSpec | None,
                      n_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tree SHAP of the model's GBDT member for a sample of ``n_users`` of the cohort (None:
    everyone scored): their aggregate features at T = the dataset's last event, then
    ``E.tree_shap``. Returns (SHAP values, features), one row per user, both indexed by
    ``user_id`` in the sample's order. ModelError when
    the model has no GBDT member; NotFoundError without a scoring run."""
    from core.modeling.features import build_features

    loaded = load_model_cached(model_dir)
    gbdt = loaded.gbdt
    if gbdt is None:
        raise ModelError(f"model {_model_id(loaded, model_dir)!r} has no gradient-boosted member, so "
                         "there is no tree SHAP.", hint="Train a 'gbdt' or 'ensemble' model.")
    users = population(store, _model_id(loaded, model_dir), dataset, cohort, n_users)
    cutoff = pd.Timestamp(store.dataset(dataset)["ts_max"])
    examples = pd.DataFrame({"user_id": users,
                             "cutoff": pd.Series([cutoff] * len(users), dtype="datetime64[us]"),
                             "label": np.nan, "split": "score"})
    features = build_features(store, dataset, examples, loaded.spec)
    features.index = pd.Index(users, name="user_id")
    values, _ = E.tree_shap(gbdt, features)
    return values, features
