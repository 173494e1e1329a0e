"""Baselines on aggregate features: logistic regression, gradient-boosted trees, and an ensemble.

All follow scikit-learn's estimator contract (they are ``sklearn.base.BaseEstimator`` subclasses, so
``get_params(deep=...)``, ``set_params`` and ``sklearn.base.clone`` work): ``__init__`` only stores
parameters, ``fit`` checks them (ValueError naming the parameter, its rule and the value) and returns
self, learned state ends in ``_``, ``predict_proba(X)`` checks that the model is fitted and that X has
the training columns, and returns P(y = 1) as a 1-D array (not the (N, 2) of scikit-learn).

Saved formats never execute code on load (no pickle, no joblib):

* ``LogisticBaseline`` -> ``logreg.json``: feature names, fill values, scaler mean/scale, coefficients
  and intercept; prediction is plain numpy maths on those numbers, before and after a reload.
* ``GBDTBaseline`` -> ``gbdt.txt`` (LightGBM's text model, read back with
  ``lightgbm.Booster(model_file=...)``) + ``gbdt.json`` (feature names, parameters, logit offset).

Class imbalance: both re-weight the positive class (logistic: ``class_weight="balanced"``; trees:
``scale_pos_weight``), which inflates predicted probabilities. A prior correction shifts the logit
back so that probabilities stay calibrated: for the (converged) logistic regression by exactly
-log(n_neg / n_pos); for the (early-stopped) trees by the shift that makes the mean training
prediction equal the training positive rate.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from core.errors import ModelError
from models.artifact import GBDT_META_FILE, GBDT_MODEL_FILE, LOGREG_FILE

__all__ = ["GBDT_META_FILE", "GBDT_MODEL_FILE", "LOGREG_FILE", "EnsembleModel", "GBDTBaseline",
           "LogisticBaseline"]


def _as_frame(X: Any, what: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame of named features, got {type(X).__name__}.")
    return X


def _labels(y: Any, n: int) -> np.ndarray:
    labels: np.ndarray = np.asarray(y, dtype=float).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"y has {len(labels)} labels for {n} rows.")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("y must hold 0/1 labels only.")
    if labels.min() == labels.max():
        raise ValueError(f"y holds one class only ({int(labels[0])}); a classifier needs both.")
    return labels


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and math.isfinite(value))


def _require(owner: BaseEstimator, name: str, ok: bool, rule: str) -> None:
    """ValueError ``<Class>.<name> must be <rule>; got <value>.`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(owner).__name__}.{name} must be {rule}; got {getattr(owner, name)!r}.")


class _FeatureModel(BaseEstimator):
    """Shared checks: fitted-ness and the training columns."""

    feature_names_in_: list[str]

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) "
                                 f"or load(dir) first.")

    def _matrix(self, X: Any) -> np.ndarray:
        """X's training columns, in training order, as float64 (N, F)."""
        self._check_fitted()
        X = _as_frame(X, f"{type(self).__name__}.predict_proba")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ModelError(f"the features differ from training: {len(missing)} column(s) missing "
                             f"({shown}).", hint="Build features with the same version of "
                             "core.modeling.features that trained the model, or retrain it.")
        return np.asarray(X[self.feature_names_in_].to_numpy(dtype=float))


class LogisticBaseline(_FeatureModel):
    """Standardised logistic regression with balanced class weights.

    C: float > 0, inverse L2 regularisation strength.
    max_iter: int >= 1, solver iterations.
    class_weight: "balanced" or None.
    prior_correction: bool, undo the class re-weighting in the intercept (calibrated probabilities).
    Missing values are filled with the training median of their column.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, class_weight: str | None = "balanced",
                 prior_correction: bool = True):
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.prior_correction = prior_correction

    def _check_params(self) -> None:
        _require(self, "C", _is_real(self.C) and self.C > 0, "a float > 0")
        _require(self, "max_iter", _is_int(self.max_iter) and self.max_iter >= 1, "an int >= 1")
        _require(self, "class_weight", self.class_weight in ("balanced", None), "'balanced' or None")
        _require(self, "prior_correction", isinstance(self.prior_correction, bool), "a bool")

    def fit(self, X: pd.DataFrame, y: Any) -> LogisticBaseline:
        self._check_params()
        X = _as_frame(X, "LogisticBaseline.fit")
        y = _labels(y, len(X))
        names = [str(c) for c in X.columns]
        values = X.to_numpy(dtype=float)
        fill = np.nanmedian(np.where(np.isfinite(values), values, np.nan), axis=0)
        fill = np.where(np.isfinite(fill), fill, 0.0)
        values = np.where(np.isfinite(values), values, fill)
        scaler = StandardScaler().fit(values)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        clf.fit(scaler.transform(values), y.astype(int))
        offset = 0.0
        if self.prior_correction and self.class_weight == "balanced":
            offset = -math.log((1 - y).sum() / y.sum())   # weights n/(2 n_c): ratio n_neg/n_pos
        self.feature_names_in_ = names
        self.fill_ = fill
        self.mean_ = scaler.mean_.copy()
        self.scale_ = scaler.scale_.copy()
        self.coef_ = clf.coef_.reshape(-1).copy()
        self.intercept_ = float(clf.intercept_[0]) + offset
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        values = self._matrix(X)
        values = np.where(np.isfinite(values), values, self.fill_)
        return np.asarray(((values - self.mean_) / self.scale_) @ self.coef_ + self.intercept_, dtype=float)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per row, shape (N,)."""
        return np.asarray(expit(self.decision_function(X)), dtype=float)

    def coefficients(self) -> pd.DataFrame:
        """feature, coef (per standard deviation), sorted by |coef|."""
        self._check_fitted()
        frame = pd.DataFrame({"feature": self.feature_names_in_, "coef": self.coef_})
        return frame.reindex(frame["coef"].abs().sort_values(ascending=False).index).reset_index(drop=True)

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        path = Path(directory) / LOGREG_FILE
        path.write_text(json.dumps({
            "format": "intentlens-logreg/1", "params": self.get_params(),
            "feature_names": self.feature_names_in_, "fill": self.fill_.tolist(),
            "mean": self.mean_.tolist(), "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(), "intercept": self.intercept_}, indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LogisticBaseline:
        path = Path(directory) / LOGREG_FILE
        try:
            data = json.loads(path.read_text())
            model = cls(**data["params"])
            model._check_params()
            names = [str(n) for n in data["feature_names"]]
            arrays = {k: np.asarray(data[k], dtype=float) for k in ("fill", "mean", "scale", "coef")}
            intercept = float(data["intercept"])
        except FileNotFoundError as err:
            raise ModelError(f"{path} is missing.", hint="Retrain the model.") from err
        except (ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{path} is not a logistic-regression file this version reads "
                             f"({type(err).__name__}: {err}).", hint="Retrain the model.") from err
        if any(len(a) != len(names) for a in arrays.values()):
            raise ModelError(f"{path}: the arrays do not match its {len(names)} feature names.",
                             hint="Retrain the model.")
        model.feature_names_in_ = names
        model.fill_, model.mean_, model.scale_, model.coef_ = (
            arrays["fill"], arrays["mean"], arrays["scale"], arrays["coef"])
        model.intercept_ = intercept
        return model


class GBDTBaseline(_FeatureModel):
    """LightGBM gradient-boosted trees with early stopping on a validation set.

    n_estimators: int >= 1, the most boosting rounds.
    learning_rate: float in (0, 1].
    num_leaves: int >= 2, leaves per tree.
    min_child_samples: int >= 1, rows per leaf at least.
    subsample: float in (0, 1], row share per round; colsample_bytree: float in (0, 1], column share.
    reg_lambda: float >= 0, L2 on leaf values.
    early_stopping_rounds: int >= 1, rounds without validation PR-AUC gain before stopping.
    pos_weight: "auto" (n_neg / n_pos, capped at 100) or a float > 0, weight of positives.
    prior_correction: bool, shift the raw score so that the mean training prediction equals the
        training positive rate (undoes the re-weighting; calibrated probabilities).
    n_jobs: int >= 1 threads, or None = half the CPU cores (LightGBM's OpenMP threads slow down
        badly when they compete with other busy processes for every core).
    random_state: int >= 0 seed (training is deterministic for a seed).
    """

    def __init__(self, n_estimators: int = 400, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 20, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 reg_lambda: float = 1.0, early_stopping_rounds: int = 30,
                 pos_weight: str | float = "auto", prior_correction: bool = True,
                 n_jobs: int | None = None,
                 random_state: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.pos_weight = pos_weight
        self.prior_correction = prior_correction
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_params(self) -> None:
        for name, low in (("n_estimators", 1), ("num_leaves", 2), ("min_child_samples", 1),
                          ("early_stopping_rounds", 1), ("random_state", 0)):
            value = getattr(self, name)
            _require(self, name, _is_int(value) and value >= low, f"an int >= {low}")
        for name in ("learning_rate", "subsample", "colsample_bytree"):
            value = getattr(self, name)
            _require(self, name, _is_real(value) and 0 < value <= 1, "a float in (0, 1]")
        _require(self, "reg_lambda", _is_real(self.reg_lambda) and self.reg_lambda >= 0, "a float >= 0")
        _require(self, "pos_weight", self.pos_weight == "auto" or (_is_real(self.pos_weight)
                                                                   and float(self.pos_weight) > 0),
                 "'auto' or a float > 0")
        _require(self, "prior_correction", isinstance(self.prior_correction, bool), "a bool")
        _require(self, "n_jobs", self.n_jobs is None or (_is_int(self.n_jobs) and self.n_jobs >= 1),
                 "None or an int >= 1")

    def fit(self, X: pd.DataFrame, y: Any, X_valid: pd.DataFrame | None = None,
            y_valid: Any = None) -> GBDTBaseline:
        import lightgbm as lgb

        self._check_params()
        X = _as_frame(X, "GBDTBaseline.fit")
        y = _labels(y, len(X))
        weight = (min(100.0, float((1 - y).sum() / y.sum())) if self.pos_weight == "auto"
                  else float(self.pos_weight))
        names = [str(c) for c in X.columns]
        clf = lgb.LGBMClassifier(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=self.min_child_samples,
            subsample=self.subsample, subsample_freq=1 if self.subsample < 1 else 0,
            colsample_bytree=self.colsample_bytree, reg_lambda=self.reg_lambda,
            scale_pos_weight=weight, random_state=self.random_state,
            n_jobs=self.n_jobs if self.n_jobs is not None else max(1, (os.cpu_count() or 2) // 2),
            deterministic=True, force_row_wise=True, verbose=-1)
        kwargs: dict[str, Any] = {}
        valid_ok = X_valid is not None and y_valid is not None
        if valid_ok:
            yv = np.asarray(y_valid, dtype=float).reshape(-1)
            valid_ok = 0 < yv.sum() < len(yv)      # PR-AUC needs both classes to stop on
        if valid_ok:
            Xv = _as_frame(X_valid, "GBDTBaseline.fit(X_valid)")[names]
            kwargs = {"eval_X": (Xv.to_numpy(dtype=float),), "eval_y": (yv,),
                      "eval_metric": "average_precision",
                      "callbacks": [lgb.early_stopping(self.early_stopping_rounds,
                                                       first_metric_only=True, verbose=False)]}
        clf.fit(X.to_numpy(dtype=float), y.astype(int), feature_name=names, **kwargs)
        best = clf.best_iteration_ if valid_ok and clf.best_iteration_ else clf.n_estimators_
        self.feature_names_in_ = names
        self.booster_ = clf.booster_
        self.n_iter_ = int(best)
        self.pos_weight_ = weight
        self.logit_offset_ = 0.0
        if self.prior_correction and weight != 1.0:
            # the trees stop before the weighted optimum, so -log(weight) would over-correct:
            # shift the logit until the mean training prediction equals the training positive rate
            raw = np.asarray(self.booster_.predict(X.to_numpy(dtype=float), raw_score=True,
                                                   num_iteration=self.n_iter_), dtype=float)
            self.logit_offset_ = float(brentq(lambda c: expit(raw + c).mean() - y.mean(), -30, 30))
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        values = self._matrix(X)
        raw = self.booster_.predict(values, raw_score=True, num_iteration=self.n_iter_)
        return np.asarray(raw, dtype=float) + float(self.logit_offset_)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per row, shape (N,)."""
        return np.asarray(expit(self.decision_function(X)), dtype=float)

    def feature_importances(self, importance_type: str = "gain") -> pd.DataFrame:
        """feature, importance (``gain`` or ``split``), highest first."""
        self._check_fitted()
        values = self.booster_.feature_importance(importance_type=importance_type,
                                                  iteration=self.n_iter_)
        frame = pd.DataFrame({"feature": self.feature_names_in_, "importance": values})
        return frame.sort_values("importance", ascending=False, ignore_index=True)

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        directory = Path(directory)
        self.booster_.save_model(str(directory / GBDT_MODEL_FILE), num_iteration=self.n_iter_)
        (directory / GBDT_META_FILE).write_text(json.dumps({
            "format": "intentlens-gbdt/1", "params": self.get_params(),
            "feature_names": self.feature_names_in_, "n_iter": self.n_iter_,
            "pos_weight": self.pos_weight_, "logit_offset": self.logit_offset_}, indent=1))
        return directory / GBDT_MODEL_FILE

    @classmethod
    def load(cls, directory: str | Path) -> GBDTBaseline:
        import lightgbm as lgb

        directory = Path(directory)
        meta_path, model_path = directory / GBDT_META_FILE, directory / GBDT_MODEL_FILE
        for path in (meta_path, model_path):
            if not path.is_file():
                raise ModelError(f"{path} is missing.", hint="Retrain the model.")
        try:
            meta = json.loads(meta_path.read_text())
            model = cls(**meta["params"])
            model._check_params()
            names = [str(n) for n in meta["feature_names"]]
            n_iter, pos_weight = int(meta["n_iter"]), float(meta["pos_weight"])
            offset = float(meta["logit_offset"])
        except (ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{meta_path} is not a GBDT description this version reads "
                             f"({type(err).__name__}: {err}).", hint="Retrain the model.") from err
        try:
            booster = lgb.Booster(model_file=str(model_path))
        except lgb.basic.LightGBMError as err:
            raise ModelError(f"{model_path} is not a LightGBM text model ({err}).",
                             hint="Retrain the model.") from err
        if booster.feature_name() != names:
            raise ModelError(f"{model_path} was trained on other features than {meta_path} lists.",
                             hint="Retrain the model.")
        model.feature_names_in_ = names
        model.booster_ = booster
        model.n_iter_ = n_iter
        model.pos_weight_ = pos_weight
        model.logit_offset_ = offset
        return model


class EnsembleModel(BaseEstimator):
    """A weighted average of member probabilities, p = sum_m w_m p_m with w on the simplex.

    The weights maximise validation PR-AUC over a grid of convex weights (``step`` apart). The grid
    holds every single member (weight 1 on it), so on the validation set the ensemble is never worse
    than its best member; that comparison is in-sample on validation, so expect a smaller gain on new
    data. Members are named by kind ("transformer", "gbdt", "logreg"); any subset may be present.

    step: float in (0, 1], the grid resolution (1/step must be an integer).
    """

    def __init__(self, step: float = 0.05):
        self.step = step

    def _check_params(self) -> None:
        ok = _is_real(self.step) and 0 < self.step <= 1
        _require(self, "step", ok and math.isclose(round(1.0 / self.step) * self.step, 1.0),
                 "a float in (0, 1] that divides 1 evenly")

    @staticmethod
    def _stack(probs: dict[str, Any], names: list[str]) -> np.ndarray:
        missing = [n for n in names if n not in probs]
        if missing:
            raise ModelError(f"the ensemble needs the probabilities of {', '.join(missing)}.")
        columns = [np.asarray(probs[n], dtype=float).reshape(-1) for n in names]
        if len({len(c) for c in columns}) != 1:
            raise ValueError("member probabilities differ in length: "
                             + ", ".join(f"{n}={len(c)}" for n, c in zip(names, columns, strict=True)))
        return np.column_stack(columns)                                   # (N, M)

    def fit(self, probs: dict[str, Any], y: Any) -> EnsembleModel:
        self._check_params()
        names = sorted(probs)
        if not names:
            raise ValueError("an ensemble needs at least one member.")
        P = self._stack(probs, names)
        y = _labels(y, len(P))
        steps = round(1.0 / self.step)
        best_score, best_w = -1.0, None
        # every composition of `steps` into len(names) parts = a point on the simplex grid
        for cut in itertools.combinations(range(steps + len(names) - 1), len(names) - 1):
            parts = np.diff(np.r_[-1, cut, steps + len(names) - 1]) - 1
            w = parts / steps
            score = average_precision_score(y, P @ w)
            if score > best_score + 1e-12:
                best_score, best_w = score, w
        assert best_w is not None            # the grid is never empty
        self.members_ = names
        self.weights_ = {n: float(v) for n, v in zip(names, best_w, strict=True)}
        self.valid_pr_auc_ = float(best_score)
        self.member_pr_auc_ = {n: float(average_precision_score(y, P[:, i]))
                               for i, n in enumerate(names)}
        return self

    def predict_proba(self, probs: dict[str, Any]) -> np.ndarray:
        if not hasattr(self, "weights_"):
            raise NotFittedError("this EnsembleModel is not fitted yet: call fit(probs, y) first.")
        P = self._stack(probs, self.members_)
        return np.asarray(P @ np.array([self.weights_[n] for n in self.members_]), dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.get_params(), "weights": self.weights_,
                "valid_pr_auc": self.valid_pr_auc_, "member_pr_auc": self.member_pr_auc_}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleModel:
        model = cls(**data.get("params", {}))
        model._check_params()
        model.weights_ = {str(k): float(v) for k, v in data["weights"].items()}
        model.members_ = sorted(model.weights_)
        model.valid_pr_auc_ = float(data.get("valid_pr_auc", float("nan")))
        model.member_pr_auc_ = dict(data.get("member_pr_auc", {}))
        return model
