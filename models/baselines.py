"""Models on aggregate features, and an ensemble of model outputs.

The feature models (``FEATURE_KINDS``): logistic regression (``logreg``), gradient-boosted trees
(``gbdt``), a linear SVM with Platt-scaled probabilities (``svm``), a random forest (``forest``) and a
multi-layer perceptron (``mlp``). :func:`fit_feature_model` fits any of them by kind, so callers need
no branch per kind.

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
* ``SVMBaseline`` -> ``svm.json`` and ``MLPBaseline`` -> ``mlp.json``: plain numbers again (scaling,
  weights, Platt sigmoid), evaluated with numpy.
* ``ForestBaseline`` -> ``forest.skops`` (``skops.io``: a zip of JSON and numpy arrays, loaded only
  when every type it names is one skops trusts by default or is listed in ``FOREST_TRUSTED_TYPES``)
  + ``forest.json`` (feature names, parameters, logit offset).

Class imbalance: logistic regression, the SVM and the trees re-weight the positive class (logistic,
SVM, forest: ``class_weight="balanced"``; GBDT: ``scale_pos_weight``), which inflates predicted
probabilities. A correction brings them back to calibrated: for the (converged) logistic regression
the prior shift -log(n_neg / n_pos) of the intercept; for the (early-stopped) GBDT and the forest the
logit shift that makes the mean training prediction equal the training positive rate; for the SVM,
Platt scaling fitted on out-of-fold margins and unweighted labels. The MLP trains unweighted on
log-loss, so its probabilities need no correction.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.optimize import brentq, minimize
from scipy.special import expit, logit
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, log_loss
from sklearn.preprocessing import StandardScaler

from core.errors import ModelError
from models.artifact import (
    FOREST_META_FILE,
    FOREST_MODEL_FILE,
    GBDT_META_FILE,
    GBDT_MODEL_FILE,
    LOGREG_FILE,
    MLP_FILE,
    SVM_FILE,
)

__all__ = ["FEATURE_KINDS", "FOREST_META_FILE", "FOREST_MODEL_FILE", "FOREST_TRUSTED_TYPES", "GBDT_META_FILE",
           "GBDT_MODEL_FILE", "LOGREG_FILE", "MLP_FILE", "SVM_FILE", "EnsembleModel", "FeatureModel", "ForestBaseline",
           "GBDTBaseline", "LogisticBaseline", "MLPBaseline", "SVMBaseline", "fit_feature_model"]

# The one type a saved forest holds that skops does not trust by default (scikit-learn's compiled
# tree structure: node arrays only). Anything else a forest file names beyond skops' defaults is refused.
FOREST_TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


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


def _scaling(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fill, mean, scale) per column: the training median fills missing or infinite values (0 for a
    column without any finite value); mean and scale standardise the filled values."""
    fill = np.nanmedian(np.where(np.isfinite(values), values, np.nan), axis=0)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    scaler = StandardScaler().fit(np.where(np.isfinite(values), values, fill))
    return fill, scaler.mean_.copy(), scaler.scale_.copy()


def _standardised(values: np.ndarray, fill: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.asarray((np.where(np.isfinite(values), values, fill) - mean) / scale, dtype=float)


def _mean_matching_offset(raw: np.ndarray, y: np.ndarray) -> float:
    """The logit shift c with mean(expit(raw + c)) == mean(y): undoes a class re-weighting when the
    model's own optimum does not give the exact prior shift (early stopping, bagging)."""
    return float(brentq(lambda c: expit(raw + c).mean() - y.mean(), -30, 30))


def _read_json(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """A saved JSON state of format ``fmt``; ModelError when missing, unreadable or of another format."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ModelError(f"{path} is missing.", hint="Retrain the model.") from err
    except ValueError as err:                       # bad JSON or bad UTF-8
        raise ModelError(f"{path} is not a {what} file ({err}).", hint="Retrain the model.") from err
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"{path} is not a {what} file this version reads (format {found!r}, "
                         f"expected {fmt!r}).", hint="Retrain the model.")
    return data


def _vectors(data: dict[str, Any], keys: tuple[str, ...], n: int, path: Path) -> list[np.ndarray]:
    """Float vectors ``data[k]`` of length n each; ValueError otherwise (callers turn it into ModelError)."""
    out = [np.asarray(data[k], dtype=float) for k in keys]
    if any(v.shape != (n,) for v in out):
        raise ValueError(f"the arrays of {path.name} do not match its {n} feature names")
    return out


class FeatureModel(BaseEstimator):
    """Shared checks: fitted-ness and the training columns.

    ``uses_validation``: whether ``fit(X, y, X_valid, y_valid)`` stops early on validation rows
    (:func:`fit_feature_model` passes them only then).
    """

    uses_validation: ClassVar[bool] = False
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


class LogisticBaseline(FeatureModel):
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
        fill, mean, scale = _scaling(values)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        clf.fit(_standardised(values, fill, mean, scale), y.astype(int))
        offset = 0.0
        if self.prior_correction and self.class_weight == "balanced":
            offset = -math.log((1 - y).sum() / y.sum())   # weights n/(2 n_c): ratio n_neg/n_pos
        self.feature_names_in_ = names
        self.fill_, self.mean_, self.scale_ = fill, mean, scale
        self.coef_ = clf.coef_.reshape(-1).copy()
        self.intercept_ = float(clf.intercept_[0]) + offset
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        values = _standardised(self._matrix(X), self.fill_, self.mean_, self.scale_)
        return np.asarray(values @ self.coef_ + self.intercept_, dtype=float)

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


class GBDTBaseline(FeatureModel):
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

    uses_validation = True

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
            y_valid: Any = None, init_model: GBDTBaseline | None = None) -> GBDTBaseline:
        """Boost up to ``n_estimators`` trees (early-stopped on the validation rows when given).
        ``init_model``: a fitted GBDTBaseline on the same features to continue from (a warm start):
        its trees are kept and the new ones added after them."""
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
        if init_model is not None:
            init_model._check_fitted()
            if list(init_model.feature_names_in_) != names:
                raise ValueError("GBDTBaseline.fit: init_model was fitted on other features than X's columns.")
            kwargs["init_model"] = lgb.Booster(model_str=init_model.model_text())
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
            self.logit_offset_ = _mean_matching_offset(raw, y)
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

    def model_text(self) -> str:
        """The LightGBM text model of the kept trees (what ``save`` writes)."""
        self._check_fitted()
        return str(self.booster_.model_to_string(num_iteration=self.n_iter_))

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


MIN_PLATT_SLOPE = 1e-3     # the Platt slope's floor (see _platt)


def _platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, c) of P(y = 1 | margin) = expit(a * margin + c) by maximum likelihood, on Platt's smoothed
    targets ((n_pos + 1) / (n_pos + 2) for positives, 1 / (n_neg + 2) for negatives). The slope is
    kept positive: with few buyers the out-of-fold margins can slope the wrong way by chance, and a
    negative slope would turn the SVM's ranking upside down."""
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] * margin + theta[1]
        residual = expit(z) - target                      # d(log-loss)/dz
        value = float(np.mean(np.logaddexp(0.0, z) - target * z))
        return value, np.array([np.mean(residual * margin), np.mean(residual)])

    start = np.array([1.0, math.log((n_pos + 1) / (n_neg + 1))])
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(MIN_PLATT_SLOPE, None), (None, None)])
    return float(result.x[0]), float(result.x[1])


class SVMBaseline(FeatureModel):
    """Standardised linear support-vector machine (scikit-learn's LinearSVC) with Platt-scaled
    probabilities.

    C: float > 0, inverse L2 regularisation strength of the hinge loss.
    max_iter: int >= 1, solver iterations.
    class_weight: "balanced" or None.
    calibration_folds: int >= 2, stratified folds for the Platt sigmoid: it is fitted on margins of
        rows the SVM did not train on (out-of-fold), then the SVM is refitted on every training row.
        The sigmoid is fitted on unweighted labels, so it also undoes the class re-weighting.
    random_state: int >= 0 seed (folds and the liblinear solver).
    Missing values are filled with the training median of their column.
    """

    def __init__(self, C: float = 0.1, max_iter: int = 2000, class_weight: str | None = "balanced",
                 calibration_folds: int = 3, random_state: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.calibration_folds = calibration_folds
        self.random_state = random_state

    def _check_params(self) -> None:
        _require(self, "C", _is_real(self.C) and self.C > 0, "a float > 0")
        _require(self, "max_iter", _is_int(self.max_iter) and self.max_iter >= 1, "an int >= 1")
        _require(self, "class_weight", self.class_weight in ("balanced", None), "'balanced' or None")
        _require(self, "calibration_folds", _is_int(self.calibration_folds) and self.calibration_folds >= 2,
                 "an int >= 2")
        _require(self, "random_state", _is_int(self.random_state) and self.random_state >= 0, "an int >= 0")

    def _svc(self) -> Any:
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight, dual="auto",
                         random_state=self.random_state)

    def fit(self, X: pd.DataFrame, y: Any) -> SVMBaseline:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        self._check_params()
        X = _as_frame(X, "SVMBaseline.fit")
        y = _labels(y, len(X))
        n_minority = int(min(y.sum(), len(y) - y.sum()))
        if n_minority < self.calibration_folds:
            raise ValueError(f"SVMBaseline.calibration_folds must be at most the rows of the smaller class "
                             f"({n_minority}); got {self.calibration_folds!r}.")
        values = X.to_numpy(dtype=float)
        fill, mean, scale = _scaling(values)
        Z = _standardised(values, fill, mean, scale)
        folds = StratifiedKFold(self.calibration_folds, shuffle=True, random_state=self.random_state)
        margin = cross_val_predict(self._svc(), Z, y.astype(int), cv=folds, method="decision_function")
        self.platt_a_, self.platt_c_ = _platt(np.asarray(margin, dtype=float), y)
        svc = self._svc().fit(Z, y.astype(int))
        self.feature_names_in_ = [str(c) for c in X.columns]
        self.fill_, self.mean_, self.scale_ = fill, mean, scale
        self.coef_ = np.asarray(svc.coef_, dtype=float).reshape(-1).copy()
        self.intercept_ = float(svc.intercept_[0])
        return self

    def margin(self, X: pd.DataFrame) -> np.ndarray:
        """The SVM's signed distance-like score w.z + b per row (before Platt scaling)."""
        values = _standardised(self._matrix(X), self.fill_, self.mean_, self.scale_)
        return np.asarray(values @ self.coef_ + self.intercept_, dtype=float)

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """The calibrated logit a * margin + c per row."""
        margin = self.margin(X)                                 # checks fitted-ness and columns first
        return self.platt_a_ * margin + self.platt_c_

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per row, shape (N,)."""
        return np.asarray(expit(self.decision_function(X)), dtype=float)

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        path = Path(directory) / SVM_FILE
        path.write_text(json.dumps({
            "format": "intentlens-svm/1", "params": self.get_params(),
            "feature_names": self.feature_names_in_, "fill": self.fill_.tolist(),
            "mean": self.mean_.tolist(), "scale": self.scale_.tolist(), "coef": self.coef_.tolist(),
            "intercept": self.intercept_, "platt_a": self.platt_a_, "platt_c": self.platt_c_}, indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SVMBaseline:
        path = Path(directory) / SVM_FILE
        data = _read_json(path, "intentlens-svm/1", "linear-SVM")
        try:
            model = cls(**data["params"])
            model._check_params()
            names = [str(n) for n in data["feature_names"]]
            model.fill_, model.mean_, model.scale_, model.coef_ = _vectors(
                data, ("fill", "mean", "scale", "coef"), len(names), path)
            model.intercept_ = float(data["intercept"])
            model.platt_a_, model.platt_c_ = float(data["platt_a"]), float(data["platt_c"])
        except (ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{path} is not a linear-SVM file this version reads "
                             f"({type(err).__name__}: {err}).", hint="Retrain the model.") from err
        model.feature_names_in_ = names
        return model


class ForestBaseline(FeatureModel):
    """scikit-learn's RandomForestClassifier with balanced class weights and calibrated probabilities.

    n_estimators: int >= 1, trees.
    max_depth: int >= 1 or None (unbounded), the deepest a tree grows.
    min_samples_leaf: int >= 1, rows per leaf at least.
    max_features: "sqrt" or a float in (0, 1], the share of columns each split considers.
    max_samples: rows each tree draws with replacement: an int >= 1 (a count, which bounds the time a
        tree takes however many rows there are) or a float in (0, 1] (a share of the training rows).
    class_weight: "balanced", "balanced_subsample" or None. scikit-learn draws each tree's rows in
        proportion to the class weights, so "balanced" trees see about as many positives as negatives.
    prior_correction: bool, shift the logit of the forest's probability so that the mean training
        prediction equals the training positive rate (undoes the re-weighting). Out-of-bag predictions
        would be the cleaner reference, but a balanced draw leaves almost no positive out of bag when
        positives are rare; the bounded leaf size keeps the in-bag predictions from being overfitted.
    n_jobs: int >= 1, threads (1 by default: the machine is shared).
    random_state: int >= 0 seed (training is deterministic for a seed).
    Missing values go to the trees as they are (scikit-learn's trees route them at each split).
    """

    _EPS = 1e-6          # probabilities are clipped to [eps, 1 - eps] before the logit shift

    def __init__(self, n_estimators: int = 100, max_depth: int | None = 12, min_samples_leaf: int = 20,
                 max_features: str | float = "sqrt", max_samples: int | float = 10_000,
                 class_weight: str | None = "balanced", prior_correction: bool = True, n_jobs: int = 1,
                 random_state: int = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_samples = max_samples
        self.class_weight = class_weight
        self.prior_correction = prior_correction
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_params(self) -> None:
        for name, low in (("n_estimators", 1), ("min_samples_leaf", 1), ("n_jobs", 1), ("random_state", 0)):
            value = getattr(self, name)
            _require(self, name, _is_int(value) and value >= low, f"an int >= {low}")
        _require(self, "max_depth", self.max_depth is None or (_is_int(self.max_depth) and self.max_depth >= 1),
                 "None or an int >= 1")
        _require(self, "max_features", self.max_features == "sqrt" or (
            _is_real(self.max_features) and 0 < float(self.max_features) <= 1), "'sqrt' or a float in (0, 1]")
        _require(self, "max_samples", (_is_int(self.max_samples) and self.max_samples >= 1) or (
            _is_real(self.max_samples) and not _is_int(self.max_samples) and 0 < float(self.max_samples) <= 1),
                 "an int >= 1 (rows) or a float in (0, 1] (a share)")
        _require(self, "class_weight", self.class_weight in ("balanced", "balanced_subsample", None),
                 "'balanced', 'balanced_subsample' or None")
        _require(self, "prior_correction", isinstance(self.prior_correction, bool), "a bool")

    @staticmethod
    def _values(values: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(values), values, np.nan)      # +-inf count as missing

    def _logit(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(logit(np.clip(p, self._EPS, 1 - self._EPS)), dtype=float)

    def fit(self, X: pd.DataFrame, y: Any) -> ForestBaseline:
        from sklearn.ensemble import RandomForestClassifier

        self._check_params()
        X = _as_frame(X, "ForestBaseline.fit")
        y = _labels(y, len(X))
        values = self._values(X.to_numpy(dtype=float))
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features, max_samples=self.max_samples, bootstrap=True,
            class_weight=self.class_weight, n_jobs=self.n_jobs, random_state=self.random_state)
        forest.fit(values, y.astype(int))
        self.logit_offset_ = 0.0
        if self.prior_correction and self.class_weight is not None:
            train = np.asarray(forest.predict_proba(values), dtype=float)[:, 1]
            self.logit_offset_ = _mean_matching_offset(self._logit(train), y)
        self.feature_names_in_ = [str(c) for c in X.columns]
        self.forest_ = forest
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        values = self._values(self._matrix(X))                  # checks fitted-ness and columns first
        p = np.asarray(self.forest_.predict_proba(values), dtype=float)[:, 1]
        return self._logit(p) + float(self.logit_offset_)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per row, shape (N,)."""
        return np.asarray(expit(self.decision_function(X)), dtype=float)

    def feature_importances(self) -> pd.DataFrame:
        """feature, importance (mean decrease in impurity), highest first."""
        self._check_fitted()
        frame = pd.DataFrame({"feature": self.feature_names_in_, "importance": self.forest_.feature_importances_})
        return frame.sort_values("importance", ascending=False, ignore_index=True)

    def save(self, directory: str | Path) -> Path:
        import skops.io as sio

        self._check_fitted()
        directory = Path(directory)
        sio.dump(self.forest_, directory / FOREST_MODEL_FILE, compression=zipfile.ZIP_DEFLATED)
        (directory / FOREST_META_FILE).write_text(json.dumps({
            "format": "intentlens-forest/1", "params": self.get_params(),
            "feature_names": self.feature_names_in_, "logit_offset": self.logit_offset_}, indent=1))
        return directory / FOREST_MODEL_FILE

    @classmethod
    def load(cls, directory: str | Path) -> ForestBaseline:
        import skops.io as sio
        from sklearn.ensemble import RandomForestClassifier
        from skops.io.exceptions import UnsupportedTypeException, UntrustedTypesFoundException

        directory = Path(directory)
        meta_path, model_path = directory / FOREST_META_FILE, directory / FOREST_MODEL_FILE
        meta = _read_json(meta_path, "intentlens-forest/1", "random-forest description")
        try:
            model = cls(**meta["params"])
            model._check_params()
            names = [str(n) for n in meta["feature_names"]]
            offset = float(meta["logit_offset"])
        except (ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{meta_path} is not a random-forest description this version reads "
                             f"({type(err).__name__}: {err}).", hint="Retrain the model.") from err
        if not model_path.is_file():
            raise ModelError(f"{model_path} is missing.", hint="Retrain the model.")
        try:
            untrusted = set(sio.get_untrusted_types(file=model_path)) - set(FOREST_TRUSTED_TYPES)
            if untrusted:
                shown = ", ".join(sorted(untrusted)[:5])
                raise ModelError(f"{model_path} names types a random forest does not hold ({shown}); it is "
                                 f"not loaded, since they could run code.", hint="Retrain the model.")
            forest = sio.load(model_path, trusted=list(FOREST_TRUSTED_TYPES))
        except (zipfile.BadZipFile, UntrustedTypesFoundException, UnsupportedTypeException, ValueError,
                KeyError, TypeError, AttributeError, OSError) as err:
            raise ModelError(f"{model_path} is not a random forest this version reads "
                             f"({type(err).__name__}: {err}).", hint="Retrain the model.") from err
        if (not isinstance(forest, RandomForestClassifier) or getattr(forest, "n_features_in_", None) != len(names)
                or [int(c) for c in getattr(forest, "classes_", [])] != [0, 1]):
            raise ModelError(f"{model_path} does not hold a fitted 0/1 random forest over the {len(names)} "
                             f"features {meta_path.name} lists.", hint="Retrain the model.")
        model.feature_names_in_ = names
        model.forest_ = forest
        model.logit_offset_ = offset
        return model


class MLPBaseline(FeatureModel):
    """A multi-layer perceptron (scikit-learn's MLPClassifier, Adam) on standardised features, early-stopped.

    hidden_layer_sizes: 1 to 3 ints in [1, 512], units per hidden layer.
    activation: "relu" or "tanh".
    alpha: float >= 0, L2 penalty.
    learning_rate_init: float in (0, 1], Adam's step size.
    batch_size: int >= 1, rows per step.
    max_epochs: int >= 1, passes over the training rows at most.
    patience: int >= 1, epochs without a better validation score before stopping; the best epoch's
        weights are kept. The score is PR-AUC (the validation log-loss when its labels hold one class).
    validation_fraction: float in (0, 0.5], the share of training rows held out to stop on when fit
        gets no validation rows (X_valid, y_valid).
    random_state: int >= 0 seed (initialisation, shuffling, hold-out).
    Missing values are filled with the training median of their column. The network trains on
    unweighted log-loss, so its probabilities need no prior correction.
    """

    uses_validation = True

    def __init__(self, hidden_layer_sizes: tuple[int, ...] = (64, 32), activation: str = "relu",
                 alpha: float = 1e-4, learning_rate_init: float = 1e-3, batch_size: int = 256,
                 max_epochs: int = 100, patience: int = 8, validation_fraction: float = 0.1,
                 random_state: int = 0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _check_params(self) -> None:
        sizes: object = self.hidden_layer_sizes         # checked as a value from anywhere (a card, a form)
        _require(self, "hidden_layer_sizes", isinstance(sizes, (tuple, list)) and 1 <= len(sizes) <= 3
                 and all(_is_int(s) and 1 <= s <= 512 for s in sizes), "1 to 3 ints in [1, 512]")
        _require(self, "activation", self.activation in ("relu", "tanh"), "'relu' or 'tanh'")
        _require(self, "alpha", _is_real(self.alpha) and self.alpha >= 0, "a float >= 0")
        _require(self, "learning_rate_init", _is_real(self.learning_rate_init) and 0 < self.learning_rate_init <= 1,
                 "a float in (0, 1]")
        for name, low in (("batch_size", 1), ("max_epochs", 1), ("patience", 1), ("random_state", 0)):
            value = getattr(self, name)
            _require(self, name, _is_int(value) and value >= low, f"an int >= {low}")
        _require(self, "validation_fraction", _is_real(self.validation_fraction)
                 and 0 < self.validation_fraction <= 0.5, "a float in (0, 0.5]")

    @staticmethod
    def _score(y: np.ndarray, p: np.ndarray) -> float:
        if 0 < y.sum() < len(y):
            return float(average_precision_score(y, p))
        return -float(log_loss(y, p, labels=[0, 1]))

    def fit(self, X: pd.DataFrame, y: Any, X_valid: pd.DataFrame | None = None,
            y_valid: Any = None) -> MLPBaseline:
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        self._check_params()
        X = _as_frame(X, "MLPBaseline.fit")
        y = _labels(y, len(X)).astype(int)
        names = [str(c) for c in X.columns]
        values = X.to_numpy(dtype=float)
        fill, mean, scale = _scaling(values)
        Z = _standardised(values, fill, mean, scale)
        if X_valid is not None and y_valid is not None and len(X_valid) > 0:
            Xv = _as_frame(X_valid, "MLPBaseline.fit(X_valid)")
            yv = np.asarray(y_valid, dtype=float).reshape(-1)
            if len(yv) != len(Xv):
                raise ValueError(f"y_valid has {len(yv)} labels for {len(Xv)} rows.")
            Zv, Zt, yt = _standardised(Xv[names].to_numpy(dtype=float), fill, mean, scale), Z, y
        else:
            stratify = y if min(y.sum(), len(y) - y.sum()) >= 2 else None
            Zt, Zv, yt, yv = train_test_split(Z, y, test_size=self.validation_fraction, stratify=stratify,
                                              random_state=self.random_state)
        clf = MLPClassifier(hidden_layer_sizes=tuple(self.hidden_layer_sizes), activation=self.activation,
                            alpha=self.alpha, learning_rate_init=self.learning_rate_init,
                            batch_size=min(self.batch_size, len(yt)), random_state=self.random_state)
        best_score, best_epoch = -math.inf, 0
        weights: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        for epoch in range(1, self.max_epochs + 1):
            clf.partial_fit(Zt, yt, classes=np.array([0, 1]))        # one pass over the rows
            p = clf.predict_proba(Zv)[:, 1]
            score = self._score(yv, p) if np.isfinite(p).all() else -math.inf
            if score > best_score + 1e-6:
                best_score, best_epoch = score, epoch
                weights = ([w.copy() for w in clf.coefs_], [b.copy() for b in clf.intercepts_])
            elif epoch - best_epoch >= self.patience:
                break
        if not weights[0]:
            raise ModelError(f"the MLP diverged (no finite validation predictions in {epoch} epoch(s)).",
                             hint="Lower learning_rate_init or alpha.")
        self.feature_names_in_ = names
        self.fill_, self.mean_, self.scale_ = fill, mean, scale
        self.coefs_, self.intercepts_ = weights
        self.n_iter_ = best_epoch
        self.valid_score_ = best_score
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """The output unit's logit per row (the network evaluated with numpy)."""
        h = _standardised(self._matrix(X), self.fill_, self.mean_, self.scale_)
        for W, b in zip(self.coefs_[:-1], self.intercepts_[:-1], strict=True):
            h = h @ W + b                                        # (N, units)
            h = np.maximum(h, 0.0) if self.activation == "relu" else np.tanh(h)
        return np.asarray(h @ self.coefs_[-1] + self.intercepts_[-1], dtype=float).reshape(-1)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per row, shape (N,)."""
        return np.asarray(expit(self.decision_function(X)), dtype=float)

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        path = Path(directory) / MLP_FILE
        path.write_text(json.dumps({
            "format": "intentlens-mlp/1", "params": self.get_params(), "feature_names": self.feature_names_in_,
            "fill": self.fill_.tolist(), "mean": self.mean_.tolist(), "scale": self.scale_.tolist(),
            "coefs": [w.tolist() for w in self.coefs_], "intercepts": [b.tolist() for b in self.intercepts_],
            "n_iter": self.n_iter_, "valid_score": self.valid_score_}))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> MLPBaseline:
        path = Path(directory) / MLP_FILE
        data = _read_json(path, "intentlens-mlp/1", "MLP")
        try:
            params = dict(data["params"])
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
            model = cls(**params)
            model._check_params()
            names = [str(n) for n in data["feature_names"]]
            model.fill_, model.mean_, model.scale_ = _vectors(data, ("fill", "mean", "scale"), len(names), path)
            coefs = [np.asarray(w, dtype=float) for w in data["coefs"]]
            intercepts = [np.asarray(b, dtype=float) for b in data["intercepts"]]
            widths = [len(names), *model.hidden_layer_sizes, 1]
            shapes = [(a, b) for a, b in itertools.pairwise(widths)]
            if [w.shape for w in coefs] != shapes or [b.shape for b in intercepts] != [(s[1],) for s in shapes]:
                raise ValueError(f"the weights do not have the shapes {shapes} of the layers")
            model.n_iter_, model.valid_score_ = int(data["n_iter"]), float(data["valid_score"])
        except (ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{path} is not an MLP file this version reads "
                             f"({type(err).__name__}: {err}).", hint="Retrain the model.") from err
        model.feature_names_in_ = names
        model.coefs_, model.intercepts_ = coefs, intercepts
        return model


class EnsembleModel(BaseEstimator):
    """A weighted average of member probabilities, p = sum_m w_m p_m with w on the simplex.

    The weights maximise validation PR-AUC over a grid of convex weights (``step`` apart). The grid
    holds every single member (weight 1 on it), so on the validation set the ensemble is never worse
    than its best member; that comparison is in-sample on validation, so expect a smaller gain on new
    data. Members are named by kind ("transformer", "gbdt", "logreg", ...); any set of kinds may be present.

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


# The models on aggregate features, by kind (the kind names of models.artifact.MODEL_KINDS).
FEATURE_KINDS: dict[str, type[FeatureModel]] = {
    "gbdt": GBDTBaseline, "logreg": LogisticBaseline, "svm": SVMBaseline, "forest": ForestBaseline,
    "mlp": MLPBaseline}


def fit_feature_model(kind: str, X_train: pd.DataFrame, y_train: Any, X_valid: pd.DataFrame | None = None,
                      y_valid: Any = None, *, seed: int, params: dict[str, Any] | None = None,
                      n_estimators: int | None = None) -> FeatureModel:
    """Fit the feature model of ``kind`` (a key of ``FEATURE_KINDS``) and return it.

    params: constructor parameters (unknown names raise ValueError); ``random_state`` defaults to
    ``seed`` for the kinds that have one. n_estimators: the GBDT's most boosting rounds (a preset's
    ``gbdt_trees``; early stopping may end sooner), ignored by the other kinds. The validation rows go
    to the kinds that stop early on them (``uses_validation``: gbdt, mlp); the others ignore them.
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FEATURE_KINDS)}; got {kind!r}.")
    cls = FEATURE_KINDS[kind]
    known = cls._get_param_names()
    kwargs = dict(params or {})
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {', '.join(unknown)} (known: {', '.join(known)}).")
    if "random_state" in known:
        kwargs.setdefault("random_state", seed)
    if n_estimators is not None and kind == "gbdt":
        kwargs["n_estimators"] = n_estimators
    model = cls(**kwargs)
    fitted: FeatureModel = (model.fit(X_train, y_train, X_valid, y_valid) if cls.uses_validation
                            else model.fit(X_train, y_train))
    return fitted
