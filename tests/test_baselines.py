"""Logistic and GBDT baselines: estimator contract, learning, code-free save/load; the ensemble."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score, roc_auc_score

from core.errors import ModelError
from models.baselines import (GBDT_META_FILE, GBDT_MODEL_FILE, LOGREG_FILE, EnsembleModel,
                              GBDTBaseline, LogisticBaseline)


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
    (X, y, _), _ = data
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
