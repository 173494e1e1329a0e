"""Hyper-parameter search for the models on aggregate features, one budget for every kind.

``search_feature_model`` runs an Optuna TPE search over ``SEARCH_SPACES[kind]`` (gbdt, logreg, svm,
forest, mlp): each trial fits the kind's model on the training rows with the trial's parameters and is
scored by its PR-AUC on the validation rows; the best trial's fitted model is returned, so nothing is
refitted. Every kind gets the same ``n_trials`` (the Transformer's search, with its own space, is
``core.modeling.training.search_transformer``). The sampler is seeded, so a search is repeatable.

Selection reads the validation window only; report the chosen model on the test window.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from core.progress import CancelToken, ProgressFn, report
from models.baselines import FeatureModel, fit_feature_model

# Per kind, per parameter: ("int" | "float" | "logfloat", low, high) or ("cat", choices). Ranges keep a
# fit on ~100k rows x 60 features within about a minute on one thread (the forest: at most 200 trees of
# depth 16 drawing at most 40k rows each).
SEARCH_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "gbdt": {"learning_rate": ("logfloat", 0.02, 0.2), "num_leaves": ("int", 8, 128),
             "min_child_samples": ("int", 5, 200), "subsample": ("float", 0.5, 1.0),
             "colsample_bytree": ("float", 0.4, 1.0), "reg_lambda": ("logfloat", 1e-3, 10.0)},
    "logreg": {"C": ("logfloat", 1e-3, 10.0), "class_weight": ("cat", ("balanced", None))},
    "svm": {"C": ("logfloat", 1e-4, 1.0), "class_weight": ("cat", ("balanced", None))},
    "forest": {"n_estimators": ("int", 50, 200), "max_depth": ("int", 4, 16),
               "min_samples_leaf": ("int", 5, 100), "max_features": ("float", 0.1, 0.6),
               "max_samples": ("cat", (5_000, 10_000, 20_000, 40_000))},
    "mlp": {"hidden_layer_sizes": ("cat", ("32", "64", "64-32", "128-64")),
            "alpha": ("logfloat", 1e-6, 1e-2), "learning_rate_init": ("logfloat", 3e-4, 1e-2),
            "batch_size": ("cat", (128, 256, 512))},
}


def _suggest(trial: Any, name: str, space: tuple[Any, ...]) -> Any:
    """One parameter value from ``trial`` (an optuna.Trial) for a SEARCH_SPACES entry."""
    kind = space[0]
    if kind == "int":
        return trial.suggest_int(name, space[1], space[2])
    if kind == "float":
        return trial.suggest_float(name, space[1], space[2])
    if kind == "logfloat":
        return trial.suggest_float(name, space[1], space[2], log=True)
    return trial.suggest_categorical(name, list(space[1]))


def _model_params(kind: str, sampled: dict[str, Any]) -> dict[str, Any]:
    """Optuna's sampled values -> constructor parameters (layer widths are sampled as "64-32")."""
    params = dict(sampled)
    if kind == "mlp" and "hidden_layer_sizes" in params:
        params["hidden_layer_sizes"] = tuple(int(w) for w in str(params["hidden_layer_sizes"]).split("-"))
    return params


def search_feature_model(kind: str, X_train: pd.DataFrame, y_train: Any, X_valid: pd.DataFrame, y_valid: Any,
                         *, n_trials: int, seed: int, progress: ProgressFn | None = None,
                         cancel: CancelToken | None = None,
                         n_estimators: int | None = None,
                         ) -> tuple[FeatureModel, dict[str, Any], list[dict[str, Any]]]:
    """Optuna TPE over ``SEARCH_SPACES[kind]``, maximising validation PR-AUC, ``n_trials`` fits.

    Returns (the best trial's fitted model, its constructor parameters, every trial as
    ``{"number", "params", "valid_pr_auc", "seconds"}`` in the order run). n_estimators: the GBDT's
    most boosting rounds (as :func:`models.baselines.fit_feature_model`). ``cancel`` is checked
    before each trial. ValueError for an unknown kind, n_trials < 1, or validation labels without
    both classes (PR-AUC cannot rank the trials then).
    """
    import optuna

    if kind not in SEARCH_SPACES:
        raise ValueError(f"kind must be one of {', '.join(SEARCH_SPACES)}; got {kind!r}.")
    if n_trials < 1:
        raise ValueError(f"n_trials must be an int >= 1; got {n_trials!r}.")
    yv = np.asarray(y_valid, dtype=float).reshape(-1)
    if not 0 < yv.sum() < len(yv):
        raise ValueError(f"the validation labels need both classes to rank trials by PR-AUC "
                         f"({int(yv.sum())} positive(s) in {len(yv)} rows).")
    space = SEARCH_SPACES[kind]
    trials: list[dict[str, Any]] = []
    kept: dict[str, Any] = {}               # the best trial so far: its score, parameters and model

    def objective(trial: optuna.Trial) -> float:
        if cancel is not None:
            cancel.check()
        report(progress, trial.number, n_trials, f"{kind}: trial {trial.number + 1}/{n_trials}")
        params = _model_params(kind, {name: _suggest(trial, name, spec) for name, spec in space.items()})
        started = time.perf_counter()
        model = fit_feature_model(kind, X_train, y_train, X_valid, y_valid, seed=seed, params=params,
                                  n_estimators=n_estimators)
        p = model.predict_proba(X_valid)
        value = float(average_precision_score(yv, p)) if np.isfinite(p).all() else -1.0
        record = {"number": trial.number, "params": params, "valid_pr_auc": value,
                  "seconds": time.perf_counter() - started}
        trials.append(record)
        if not kept or value > kept["value"]:      # keep only the best model in memory
            kept.update(value=value, params=params, model=model)
        return value if math.isfinite(value) else -1.0

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(5, n_trials // 2)))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    report(progress, n_trials, n_trials, f"{kind}: best validation PR-AUC {kept['value']:.4f}")
    return kept["model"], dict(kept["params"]), trials

