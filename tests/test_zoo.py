"""The model zoo on aggregate features: linear SVM, random forest, MLP beside logistic regression and GBDT.

Each new kind learns a planted signal, keeps its probabilities near the base rate despite class
re-weighting, round-trips through its code-free saved format (and through a model directory),
refuses tampered or foreign files, and checks its parameters; the search gives every kind the
same number of trials and returns the best one.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import optuna
import pytest
import skops.io as sio
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import FunctionTransformer

from core.errors import ModelError
from core.modeling.labels import LabelSpec
from core.modeling.tuning import SEARCH_SPACES, _model_params, _suggest, search_feature_model
from models.artifact import (
    COMPONENTS,
    FEATURE_COMPONENTS,
    FOREST_META_FILE,
    FOREST_MODEL_FILE,
    KIND_LABELS,
    MLP_FILE,
    MODEL_FILES,
    MODEL_KINDS,
    SVM_FILE,
    load_model,
    save_model,
)
from models.baselines import (
    FEATURE_KINDS,
    EnsembleModel,
    ForestBaseline,
    LogisticBaseline,
    MLPBaseline,
    SVMBaseline,
    fit_feature_model,
)
from tests.test_baselines import planted_features

NEW_KINDS = {"svm": SVMBaseline, "forest": ForestBaseline, "mlp": MLPBaseline}
FILES = {"svm": {SVM_FILE}, "forest": {FOREST_MODEL_FILE, FOREST_META_FILE}, "mlp": {MLP_FILE}}
SMALL = {"svm": {}, "forest": {"n_estimators": 40}, "mlp": {"hidden_layer_sizes": (16,), "max_epochs": 40}}
LEARNED = {"svm": {"feature_names_in_", "fill_", "mean_", "scale_", "coef_", "intercept_", "platt_a_", "platt_c_"},
           "forest": {"feature_names_in_", "forest_", "logit_offset_"},
           "mlp": {"feature_names_in_", "fill_", "mean_", "scale_", "coefs_", "intercepts_", "n_iter_",
                   "valid_score_"}}


@pytest.fixture(scope="module")
def data():
    """Training, validation and held-out test rows of the same planted model (about 12 % positives)."""
    return planted_features(4000, 0), planted_features(1500, 1), planted_features(3000, 2)


@pytest.fixture(scope="module")
def fitted(data):
    (X, y, _), (Xv, yv, _), _ = data
    return {kind: fit_feature_model(kind, X, y, Xv, yv, seed=0, params=SMALL[kind]) for kind in NEW_KINDS}


def test_kind_lists_agree_everywhere():
    assert set(FEATURE_KINDS) == set(FEATURE_COMPONENTS) == set(SEARCH_SPACES) == {
        "gbdt", "logreg", "svm", "forest", "mlp"}
    assert tuple(COMPONENTS) == ("transformer", *FEATURE_COMPONENTS)
    assert MODEL_KINDS == ("transformer", "gbdt", "logreg", "svm", "forest", "mlp", "ensemble")
    assert set(KIND_LABELS) == set(MODEL_KINDS)
    assert set().union(*FILES.values()) <= MODEL_FILES


@pytest.mark.parametrize("kind", list(NEW_KINDS))
def test_learns_the_planted_signal_with_calibrated_probabilities(kind, data, fitted):
    _, _, (Xt, yt, pt) = data
    model = fitted[kind]
    assert type(model) is NEW_KINDS[kind]
    p = model.predict_proba(Xt)
    assert p.shape == (len(Xt),) and np.all((p > 0) & (p < 1))
    bayes = roc_auc_score(yt, pt)
    # held-out rows: well above chance, most of the achievable lift over it
    assert roc_auc_score(yt, p) - 0.5 > 0.85 * (bayes - 0.5), (kind, roc_auc_score(yt, p), bayes)
    assert average_precision_score(yt, p) > 2 * yt.mean()
    # balanced class weights would put the mean near 0.5: the correction brings it to the base rate
    assert abs(p.mean() - yt.mean()) < 0.025, (kind, p.mean(), yt.mean())
    # ... and per decile, roughly (expected calibration error over 10 equal-count bins)
    order = np.argsort(p)
    ece = np.mean([abs(p[b].mean() - yt[b].mean()) for b in np.array_split(order, 10)])
    assert ece < 0.04, (kind, ece)


@pytest.mark.parametrize("kind", list(NEW_KINDS))
def test_contract_and_code_free_round_trip(kind, data, fitted, tmp_path):
    (X, y, _), _, (Xt, _, _) = data
    cls, model = NEW_KINDS[kind], fitted[kind]
    fresh = clone(model)
    assert fresh.get_params() == model.get_params() and not hasattr(fresh, "feature_names_in_")
    with pytest.raises(NotFittedError, match="not fitted"):
        fresh.predict_proba(Xt)
    assert set(vars(model)) - set(model.get_params()) == LEARNED[kind]
    p = model.predict_proba(Xt)
    shuffled = Xt[list(reversed(Xt.columns))].assign(extra=1.0)
    np.testing.assert_array_equal(model.predict_proba(shuffled), p)
    with pytest.raises(ModelError, match="views_1d"):
        model.predict_proba(Xt.drop(columns=["views_1d"]))
    model.save(tmp_path)
    assert {f.name for f in tmp_path.iterdir()} == FILES[kind]
    loaded = cls.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(Xt), p)
    assert loaded.get_params() == model.get_params()
    # same seed, same model
    again = fit_feature_model(kind, X, y, *data[1][:2], seed=0, params=SMALL[kind])
    np.testing.assert_array_equal(again.predict_proba(Xt), p)


def test_svm_probabilities_are_platt_scaled_margins(fitted, data):
    _, _, (Xt, _, _) = data
    svm = fitted["svm"]
    margin = svm.margin(Xt)
    assert svm.platt_a_ > 0                                    # a larger margin means likelier to buy
    np.testing.assert_allclose(svm.predict_proba(Xt), 1 / (1 + np.exp(-(svm.platt_a_ * margin + svm.platt_c_))))
    assert np.corrcoef(margin, Xt["carts_1d"])[0, 1] > 0.5     # the planted main effect


def test_mlp_stops_early_on_the_validation_rows(data):
    (X, y, _), (Xv, yv, _), _ = data
    model = MLPBaseline(hidden_layer_sizes=(16,), max_epochs=200, patience=3).fit(X, y, Xv, yv)
    assert 1 <= model.n_iter_ < 200
    assert model.valid_score_ == pytest.approx(average_precision_score(yv, model.predict_proba(Xv)), abs=1e-9)
    held_out = MLPBaseline(hidden_layer_sizes=(16,), max_epochs=30, validation_fraction=0.2).fit(X, y)
    assert held_out.n_iter_ >= 1 and np.isfinite(held_out.valid_score_)


def test_forest_reads_missing_values_and_ranks_the_planted_features(fitted, data):
    _, _, (Xt, _, _) = data
    assert Xt["recency_cart_h"].isna().any()
    assert np.isfinite(fitted["forest"].predict_proba(Xt)).all()
    imp = fitted["forest"].feature_importances()
    assert imp["feature"].iloc[0] in ("carts_1d", "recency_cart_h")
    assert "noise" not in list(imp["feature"].iloc[:2])


def test_tampered_and_foreign_files_are_refused(fitted, tmp_path):
    for kind, model in fitted.items():
        (tmp_path / kind).mkdir()
        model.save(tmp_path / kind)
    # plain JSON states: garbage, another format, arrays that do not fit the features
    with pytest.raises(ModelError, match="missing"):
        SVMBaseline.load(tmp_path)
    (tmp_path / "svm" / SVM_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="is not a linear-SVM file"):
        SVMBaseline.load(tmp_path / "svm")
    mlp_path = tmp_path / "mlp" / MLP_FILE
    stored = json.loads(mlp_path.read_text())
    (tmp_path / "svm" / SVM_FILE).write_text(json.dumps(stored))          # an MLP file under the SVM's name
    with pytest.raises(ModelError, match=r"format 'intentlens-mlp/1', expected 'intentlens-svm/1'"):
        SVMBaseline.load(tmp_path / "svm")
    stored["coefs"][0] = stored["coefs"][0][:-1]                           # one input row short
    mlp_path.write_text(json.dumps(stored))
    with pytest.raises(ModelError, match="do not have the shapes"):
        MLPBaseline.load(tmp_path / "mlp")
    # the forest: not a zip, a foreign object that names a function, a trusted but wrong estimator
    forest_dir, forest_path = tmp_path / "forest", tmp_path / "forest" / FOREST_MODEL_FILE
    ForestBaseline.load(forest_dir)                                        # intact: it loads
    forest_path.write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match="is not a random forest this version reads"):
        ForestBaseline.load(forest_dir)
    sio.dump(FunctionTransformer(func=os.system, kw_args={"command": "touch pwned"}), forest_path)
    with pytest.raises(ModelError, match=r"names types a random forest does not hold \(.*system.*could run code"):
        ForestBaseline.load(forest_dir)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")
    sio.dump(LogisticRegression().fit(np.eye(4), [0, 1, 0, 1]), forest_path)
    with pytest.raises(ModelError, match="does not hold a fitted 0/1 random forest"):
        ForestBaseline.load(forest_dir)
    with zipfile.ZipFile(forest_path, "w") as archive:                     # a zip without skops' schema
        archive.writestr("other.txt", "hello")
    with pytest.raises(ModelError, match="is not a random forest this version reads"):
        ForestBaseline.load(forest_dir)
    meta = json.loads((forest_dir / FOREST_META_FILE).read_text())
    meta["params"]["n_estimators"] = 0
    (forest_dir / FOREST_META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"ForestBaseline\.n_estimators must be an int >= 1; got 0"):
        ForestBaseline.load(forest_dir)


@pytest.mark.parametrize(("cls", "param", "value", "message"), [
    (SVMBaseline, "C", 0, "SVMBaseline.C must be a float > 0; got 0."),
    (SVMBaseline, "class_weight", "auto", "SVMBaseline.class_weight must be 'balanced' or None; got 'auto'."),
    (SVMBaseline, "calibration_folds", 1, "SVMBaseline.calibration_folds must be an int >= 2; got 1."),
    (SVMBaseline, "calibration_folds", 5000, "SVMBaseline.calibration_folds must be at most the rows of the "
                                             "smaller class ({minority}); got 5000."),
    (SVMBaseline, "max_iter", 1.0, "SVMBaseline.max_iter must be an int >= 1; got 1.0."),
    (ForestBaseline, "n_estimators", 0, "ForestBaseline.n_estimators must be an int >= 1; got 0."),
    (ForestBaseline, "max_depth", 0, "ForestBaseline.max_depth must be None or an int >= 1; got 0."),
    (ForestBaseline, "max_features", 1.5, "ForestBaseline.max_features must be 'sqrt' or a float in (0, 1]; "
                                          "got 1.5."),
    (ForestBaseline, "max_samples", 0, "ForestBaseline.max_samples must be an int >= 1 (rows) or a float in "
                                       "(0, 1] (a share); got 0."),
    (ForestBaseline, "max_samples", 1.5, "ForestBaseline.max_samples must be an int >= 1 (rows) or a float in "
                                         "(0, 1] (a share); got 1.5."),
    (ForestBaseline, "class_weight", "auto", "ForestBaseline.class_weight must be 'balanced', "
                                             "'balanced_subsample' or None; got 'auto'."),
    (ForestBaseline, "n_jobs", None, "ForestBaseline.n_jobs must be an int >= 1; got None."),
    (MLPBaseline, "hidden_layer_sizes", (), "MLPBaseline.hidden_layer_sizes must be 1 to 3 ints in [1, 512]; "
                                            "got ()."),
    (MLPBaseline, "hidden_layer_sizes", (64, 0), "MLPBaseline.hidden_layer_sizes must be 1 to 3 ints in "
                                                 "[1, 512]; got (64, 0)."),
    (MLPBaseline, "activation", "sigmoid", "MLPBaseline.activation must be 'relu' or 'tanh'; got 'sigmoid'."),
    (MLPBaseline, "alpha", -1.0, "MLPBaseline.alpha must be a float >= 0; got -1.0."),
    (MLPBaseline, "learning_rate_init", 0, "MLPBaseline.learning_rate_init must be a float in (0, 1]; got 0."),
    (MLPBaseline, "patience", 0, "MLPBaseline.patience must be an int >= 1; got 0."),
    (MLPBaseline, "validation_fraction", 0.9, "MLPBaseline.validation_fraction must be a float in (0, 0.5]; "
                                              "got 0.9."),
])
def test_fit_checks_every_parameter_with_rule_and_value(data, cls, param, value, message):
    (X, y, _), _, _ = data
    model = cls(**{param: value})                    # __init__ only stores: no error yet
    with pytest.raises(ValueError) as info:
        model.fit(X, y)
    assert str(info.value) == message.replace("{minority}", str(int(min(y.sum(), len(y) - y.sum()))))
    assert not any(name.endswith("_") and not name.startswith("_") for name in vars(model))   # not fitted


def test_fit_feature_model_dispatches_by_kind(data):
    (X, y, _), (Xv, yv, _), _ = data
    with pytest.raises(ValueError, match="kind must be one of gbdt, logreg, svm, forest, mlp; got 'knn'"):
        fit_feature_model("knn", X, y, Xv, yv, seed=0)
    with pytest.raises(ValueError, match=r"SVMBaseline has no parameter\(s\) n_estimators"):
        fit_feature_model("svm", X, y, Xv, yv, seed=0, params={"n_estimators": 5})
    gbdt = fit_feature_model("gbdt", X, y, Xv, yv, seed=3, n_estimators=15)
    assert (gbdt.n_estimators, gbdt.random_state) == (15, 3) and gbdt.n_iter_ <= 15
    logreg = fit_feature_model("logreg", X, y, seed=3, params={"C": 0.5}, n_estimators=15)
    assert isinstance(logreg, LogisticBaseline) and logreg.C == 0.5   # no random_state, no trees: both ignored


@pytest.mark.parametrize("kind", list(SEARCH_SPACES))
def test_every_search_space_gives_valid_parameters_at_its_ends(kind):
    for end in (0, -1):
        values = {name: (space[1][end] if space[0] == "cat" else space[1 if end == 0 else 2])
                  for name, space in SEARCH_SPACES[kind].items()}
        trial = optuna.trial.FixedTrial(values)
        params = _model_params(kind, {name: _suggest(trial, name, space)
                                      for name, space in SEARCH_SPACES[kind].items()})
        FEATURE_KINDS[kind](**params)._check_params()         # no ValueError


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_search_returns_the_best_trial_and_respects_the_budget(kind, data):
    (X, y, _), (Xv, yv, _), _ = data
    calls: list[tuple[float, float | None, str]] = []
    model, params, trials = search_feature_model(kind, X, y, Xv, yv, n_trials=4, seed=1,
                                                 progress=lambda d, t, m: calls.append((d, t, m)))
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    best = max(trials, key=lambda t: t["valid_pr_auc"])
    assert params == best["params"] and set(params) == set(SEARCH_SPACES[kind])
    assert average_precision_score(yv, model.predict_proba(Xv)) == pytest.approx(best["valid_pr_auc"])
    assert model.get_params() == {**model.get_params(), **params}
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) > 1     # it really searched
    assert calls[-1][:2] == (4, 4) and all(t == 4 for _, t, _ in calls)
    again = search_feature_model(kind, X, y, Xv, yv, n_trials=4, seed=1)[2]
    assert [t["params"] for t in again] == [t["params"] for t in trials]           # seeded
    with pytest.raises(ValueError, match="n_trials must be an int >= 1; got 0"):
        search_feature_model(kind, X, y, Xv, yv, n_trials=0, seed=1)
    with pytest.raises(ValueError, match="need both classes"):
        search_feature_model(kind, X, y, Xv, np.zeros(len(Xv)), n_trials=1, seed=1)


def test_model_directories_hold_the_new_kinds_and_ensembles_of_them(data, fitted, tmp_path):
    _, _, (Xt, _, _) = data
    card = {"dataset": "tiny", "label": LabelSpec(horizon="6h", max_len=20).to_dict()}
    for kind, model in fitted.items():
        path = save_model(tmp_path / kind, kind=kind, card=card, **{kind: model})
        assert {f.name for f in path.iterdir()} == FILES[kind] | {"card.json"}
        loaded = load_model(path)
        assert loaded.needs_features and not loaded.needs_sequences and loaded.components == [kind]
        assert loaded.feature_names == list(Xt.columns)
        np.testing.assert_array_equal(loaded.predict(feats=Xt), model.predict_proba(Xt))
    ensemble = EnsembleModel.from_dict({"weights": {"svm": 0.5, "forest": 0.25, "mlp": 0.25}})
    path = save_model(tmp_path / "ens", kind="ensemble", card=card, ensemble=ensemble, **fitted)
    loaded = load_model(path)
    expected = sum(w * fitted[k].predict_proba(Xt) for k, w in ensemble.weights_.items())
    np.testing.assert_allclose(loaded.predict(feats=Xt), expected, rtol=1e-12)
    with pytest.raises(ModelError, match="needs its fitted component"):
        save_model(tmp_path / "bad", kind="mlp", card=card, svm=fitted["svm"])
