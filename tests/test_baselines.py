"""Logistic and GBDT baselines: estimator contract, learning, code-free save/load; the ensemble."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score, roc_auc_score

from core.errors import ModelError
from models.baselines import GBDT_META_FILE, GBDT_MODEL_FILE, LOGREG_FILE, EnsembleModel, GBDTBaseline, LogisticBaseline


def planted_features(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features with a linear and an interaction signal, a few NaNs; returns X, y, true p."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"carts_1d": rng.poisson(1.0, n).astype(float),
                      "views_1d": rng.poisson(5.0, n).astype(float),
                      "recency_cart_h": rng.exponential(24, n),
                      "noise": rng.standard_normal(n)})
    logit = -2.5 + 1.2 * X["carts_1d"] - 0.05 * X["recency_cart_h"] + 0.8 * (
        (X["views_1d"] > 6) & (X["carts_1d"] > 0))
    p = 1 / (1 + np.exp(-logit.to_numpy()))
    y = (rng.random(n) < p).astype(int)
    X.loc[rng.random(n) < 0.05, "recency_cart_h"] = np.nan
    return X, y, p


@pytest.fixture(scope="module")
def data():
    return planted_features(4000, 0), planted_features(2000, 1)


@pytest.mark.parametrize("cls", [LogisticBaseline, GBDTBaseline])
def test_contract_fit_predict_save_load(cls, data, tmp_path):
    (X, y, _), (Xv, yv, pv) = data
    model = cls()
    assert not hasattr(model, "feature_names_in_")            # __init__ only stores params
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict_proba(Xv)
    kwargs = {"X_valid": Xv, "y_valid": yv} if cls is GBDTBaseline else {}
    assert model.fit(X, y, **kwargs) is model
    p = model.predict_proba(Xv)
    assert p.shape == (len(Xv),) and np.all((p > 0) & (p < 1))
    assert roc_auc_score(yv, p) > 0.9 * roc_auc_score(yv, pv)
    # calibrated despite class re-weighting: mean prediction near the base rate
    assert abs(p.mean() - yv.mean()) < 0.05
    # column order does not matter; extra columns are ignored; missing ones are named
    shuffled = Xv[list(reversed(Xv.columns))].assign(extra=1.0)
    np.testing.assert_array_equal(model.predict_proba(shuffled), p)
    with pytest.raises(ModelError, match="views_1d"):
        model.predict_proba(Xv.drop(columns=["views_1d"]))
    # save -> load -> identical predictions, without pickle
    model.save(tmp_path)
    files = {f.name for f in tmp_path.iterdir()}
    assert files == ({LOGREG_FILE} if cls is LogisticBaseline else {GBDT_MODEL_FILE, GBDT_META_FILE})
    loaded = cls.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(Xv), p)
    assert loaded.get_params() == model.get_params()


def test_logreg_json_is_plain_numbers(data, tmp_path):
    (X, y, _), _ = data
    LogisticBaseline().fit(X, y).save(tmp_path)
    stored = json.loads((tmp_path / LOGREG_FILE).read_text())
    assert stored["feature_names"] == list(X.columns)
    assert len(stored["coef"]) == len(stored["mean"]) == len(stored["scale"]) == 4
    assert isinstance(stored["intercept"], float)


def test_gbdt_early_stopping_and_importances(data):
    (X, y, _), (Xv, yv, _) = data
    model = GBDTBaseline(n_estimators=2000, learning_rate=0.2, early_stopping_rounds=10)
    model.fit(X, y, X_valid=Xv, y_valid=yv)
    assert model.n_iter_ < 2000
    imp = model.feature_importances()
    assert imp["feature"].iloc[0] in ("carts_1d", "recency_cart_h")
    assert "noise" not in list(imp["feature"].iloc[:2])


def test_load_refuses_broken_files(data, tmp_path):
    (X, y, _), _ = data
    with pytest.raises(ModelError, match="missing"):
        LogisticBaseline.load(tmp_path)
    (tmp_path / LOGREG_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="logistic-regression"):
        LogisticBaseline.load(tmp_path)
    GBDTBaseline(n_estimators=20).fit(X, y).save(tmp_path)
    (tmp_path / GBDT_MODEL_FILE).write_text("garbage")
    with pytest.raises(ModelError, match="LightGBM"):
        GBDTBaseline.load(tmp_path)


def test_fit_refuses_one_class(data):
    (X, _, _), _ = data
    with pytest.raises(ValueError, match="one class"):
        LogisticBaseline().fit(X, np.zeros(len(X)))


def test_ensemble_is_no_worse_than_its_best_member(data):
    (X, y, _), (Xv, yv, _) = data
    members = {"logreg": LogisticBaseline().fit(X, y).predict_proba(Xv),
               "gbdt": GBDTBaseline(n_estimators=100).fit(X, y).predict_proba(Xv),
               "transformer": np.clip(yv * 0.3 + np.random.default_rng(0).random(len(yv)) * 0.7, 0, 1)}
    ens = EnsembleModel(step=0.1).fit(members, yv)
    assert sum(ens.weights_.values()) == pytest.approx(1.0)
    assert min(ens.weights_.values()) >= 0
    p = ens.predict_proba(members)
    best_member = max(average_precision_score(yv, v) for v in members.values())
    assert average_precision_score(yv, p) >= best_member - 1e-12
    assert ens.valid_pr_auc_ == pytest.approx(average_precision_score(yv, p))
    again = EnsembleModel.from_dict(json.loads(json.dumps(ens.to_dict())))
    np.testing.assert_array_equal(again.predict_proba(members), p)
    with pytest.raises(ModelError, match="gbdt"):
        ens.predict_proba({"logreg": members["logreg"], "transformer": members["transformer"]})


def test_estimator_contract_params_clone_and_learned_state(data):
    (X, y, _), _ = data
    model = GBDTBaseline(n_estimators=25, learning_rate=0.1, pos_weight=3.0, n_jobs=1)
    params = model.get_params(deep=True)
    assert params == model.get_params(deep=False)
    assert params["n_estimators"] == 25 and params["pos_weight"] == 3.0 and params["n_jobs"] == 1
    assert set(params) == {"n_estimators", "learning_rate", "num_leaves", "min_child_samples", "subsample",
                           "colsample_bytree", "reg_lambda", "early_stopping_rounds", "pos_weight",
                           "prior_correction", "n_jobs", "random_state"}
    assert model.set_params(num_leaves=7, random_state=3) is model
    assert (model.num_leaves, model.random_state) == (7, 3)
    with pytest.raises(ValueError, match="num_trees"):
        model.set_params(num_trees=3)
    model.fit(X, y)
    learned = set(vars(model)) - set(params)
    assert learned == {"feature_names_in_", "booster_", "n_iter_", "pos_weight_", "logit_offset_"}
    assert model.pos_weight_ == 3.0
    twin = clone(model)                               # same parameters, nothing learned
    assert twin.get_params() == model.get_params() and twin is not model
    assert not hasattr(twin, "booster_")
    with pytest.raises(NotFittedError, match="not fitted"):
        twin.predict_proba(X)
    np.testing.assert_array_equal(twin.fit(X, y).predict_proba(X), model.predict_proba(X))

    logreg = clone(LogisticBaseline(C=0.5, class_weight=None)).fit(X, y)
    assert logreg.get_params() == {"C": 0.5, "max_iter": 1000, "class_weight": None, "prior_correction": True}
    assert set(vars(logreg)) - set(logreg.get_params()) == {"feature_names_in_", "fill_", "mean_", "scale_",
                                                           "coef_", "intercept_"}
    ens = clone(EnsembleModel(step=0.25))
    assert ens.get_params(deep=True) == {"step": 0.25}
    with pytest.raises(NotFittedError, match="not fitted"):
        ens.predict_proba({"logreg": np.zeros(3)})


@pytest.mark.parametrize(("cls", "param", "value", "message"), [
    (LogisticBaseline, "C", 0, "LogisticBaseline.C must be a float > 0; got 0."),
    (LogisticBaseline, "C", float("nan"), "LogisticBaseline.C must be a float > 0; got nan."),
    (LogisticBaseline, "max_iter", 0.5, "LogisticBaseline.max_iter must be an int >= 1; got 0.5."),
    (LogisticBaseline, "class_weight", "auto", "LogisticBaseline.class_weight must be 'balanced' or None; "
                                               "got 'auto'."),
    (LogisticBaseline, "prior_correction", "yes", "LogisticBaseline.prior_correction must be a bool; got 'yes'."),
    (GBDTBaseline, "n_estimators", 0, "GBDTBaseline.n_estimators must be an int >= 1; got 0."),
    (GBDTBaseline, "learning_rate", 1.5, "GBDTBaseline.learning_rate must be a float in (0, 1]; got 1.5."),
    (GBDTBaseline, "num_leaves", 1, "GBDTBaseline.num_leaves must be an int >= 2; got 1."),
    (GBDTBaseline, "min_child_samples", True, "GBDTBaseline.min_child_samples must be an int >= 1; got True."),
    (GBDTBaseline, "subsample", 0, "GBDTBaseline.subsample must be a float in (0, 1]; got 0."),
    (GBDTBaseline, "colsample_bytree", -1.0, "GBDTBaseline.colsample_bytree must be a float in (0, 1]; "
                                             "got -1.0."),
    (GBDTBaseline, "reg_lambda", -0.1, "GBDTBaseline.reg_lambda must be a float >= 0; got -0.1."),
    (GBDTBaseline, "early_stopping_rounds", 0, "GBDTBaseline.early_stopping_rounds must be an int >= 1; got 0."),
    (GBDTBaseline, "pos_weight", 0.0, "GBDTBaseline.pos_weight must be 'auto' or a float > 0; got 0.0."),
    (GBDTBaseline, "pos_weight", "balanced", "GBDTBaseline.pos_weight must be 'auto' or a float > 0; "
                                             "got 'balanced'."),
    (GBDTBaseline, "prior_correction", 1, "GBDTBaseline.prior_correction must be a bool; got 1."),
    (GBDTBaseline, "n_jobs", 0, "GBDTBaseline.n_jobs must be None or an int >= 1; got 0."),
    (GBDTBaseline, "random_state", -1, "GBDTBaseline.random_state must be an int >= 0; got -1."),
    (EnsembleModel, "step", 0.3, "EnsembleModel.step must be a float in (0, 1] that divides 1 evenly; got 0.3."),
    (EnsembleModel, "step", 0, "EnsembleModel.step must be a float in (0, 1] that divides 1 evenly; got 0."),
])
def test_fit_checks_every_parameter_with_rule_and_value(data, cls, param, value, message):
    (X, y, _), _ = data
    model = cls(**{param: value})                    # __init__ only stores: no error yet
    assert model.get_params()[param] is value
    args = ({"logreg": np.linspace(0, 1, len(y))}, y) if cls is EnsembleModel else (X, y)
    with pytest.raises(ValueError) as info:
        model.fit(*args)
    assert str(info.value) == message
    assert not any(name.endswith("_") and not name.startswith("_") for name in vars(model))   # not fitted


def test_load_refuses_stored_parameters_that_break_a_rule(data, tmp_path):
    (X, y, _), _ = data
    LogisticBaseline().fit(X, y).save(tmp_path)
    stored = json.loads((tmp_path / LOGREG_FILE).read_text())
    stored["params"]["C"] = -1
    (tmp_path / LOGREG_FILE).write_text(json.dumps(stored))
    with pytest.raises(ModelError, match=r"LogisticBaseline\.C must be a float > 0; got -1"):
        LogisticBaseline.load(tmp_path)
