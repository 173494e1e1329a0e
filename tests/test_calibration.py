"""Calibration maps fitted on a validation window: chosen by cross-validation, applied as numbers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from core.modeling.metrics import expected_calibration_error
from models.calibration import Calibrator


def _window(n: int, seed: int, distort) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True probabilities (a low base rate, like buyers), labels drawn from them, distorted scores."""
    rng = np.random.default_rng(seed)
    p_true = expit(rng.normal(-2.6, 1.2, n))
    y = (rng.random(n) < p_true).astype(float)
    return p_true, y, distort(p_true)


def test_an_overconfident_model_is_mapped_back_to_observed_rates():
    distort = lambda p: expit(2.0 * logit(p) + 1.0)        # noqa: E731  too sharp and too high
    _, y_valid, raw_valid = _window(20_000, 0, distort)
    _, y_test, raw_test = _window(20_000, 1, distort)
    cal = Calibrator.fit(raw_valid, y_valid)
    assert cal.method in ("platt", "isotonic") and set(cal.cv_brier) == {"identity", "platt", "isotonic"}
    assert cal.cv_brier[cal.method] < cal.cv_brier["identity"]
    before = expected_calibration_error(y_test, raw_test)
    after = expected_calibration_error(y_test, cal.apply(raw_test))
    assert before > 0.05 and after < 0.015, (before, after)
    # a Platt map on this distortion recovers its inverse: a ~ 0.5, b ~ -0.5
    platt = _fit("platt", raw_valid, y_valid)
    assert platt["a"] == pytest.approx(0.5, abs=0.05)
    assert platt["b"] == pytest.approx(-0.5, abs=0.15)


def test_a_calibrated_model_keeps_its_scores_and_platt_keeps_the_ranking():
    p_true, y, _ = _window(20_000, 2, lambda p: p)
    cal = Calibrator.fit(p_true, y)
    moved = np.abs(cal.apply(p_true) - p_true).mean()
    assert moved < 0.005, (cal.method, moved)
    platt = Calibrator.from_dict({"method": "platt", "params": {"a": 0.7, "b": -0.3}})
    q = platt.apply(p_true)
    assert (np.argsort(q, kind="stable") == np.argsort(p_true, kind="stable")).all()


def test_too_few_buyers_leaves_the_scores_alone():
    cal = Calibrator.fit([0.1, 0.2, 0.3, 0.9, 0.05, 0.4], [0, 0, 0, 1, 0, 0])
    assert cal.method == "identity" and cal.cv_brier == {}
    assert "too few buyers" in cal.describe()
    np.testing.assert_array_equal(cal.apply([0.25, 0.5]), [0.25, 0.5])


def test_round_trip_and_malformed_maps():
    _, y, raw = _window(5_000, 3, lambda p: expit(1.5 * logit(p)))
    for method in ("platt", "isotonic"):
        cal = Calibrator(method=method, params=_fit(method, raw, y))
        again = Calibrator.from_dict(cal.to_dict())
        np.testing.assert_allclose(again.apply(raw), cal.apply(raw))
    assert Calibrator.from_dict(None).method == "identity"
    with pytest.raises(ValueError, match="method"):
        Calibrator.from_dict({"method": "magic"})
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibrator.from_dict({"method": "isotonic", "params": {"x": [0.1, 0.5], "y": [0.9, 0.2]}})
    with pytest.raises(KeyError):
        Calibrator.from_dict({"method": "platt", "params": {"a": 1.0}})


def _fit(method: str, p: np.ndarray, y: np.ndarray) -> dict:
    from models import calibration

    return calibration._fit(method, p, y)


def test_a_map_never_turns_a_ranking_upside_down():
    rng = np.random.default_rng(5)
    y = (rng.random(4000) < 0.1).astype(float)
    p = np.where(y == 1, 0.05, 0.2) + rng.normal(0, 0.01, 4000)     # scores against the labels
    params = _fit("platt", np.clip(p, 0.01, 0.99), y)
    assert params == {"a": 1.0, "b": 0.0}


def test_every_map_keeps_the_raw_ranking_so_rank_metrics_do_not_move():
    distort = lambda p: expit(1.8 * logit(p) + 0.8)        # noqa: E731
    _, y_valid, raw_valid = _window(3_000, 6, distort)       # a small window: many rows share a step
    _, y_test, raw_test = _window(3_000, 7, distort)
    iso = Calibrator(method="isotonic", params=_fit("isotonic", raw_valid, y_valid))
    # a plain isotonic step function ties most test scores; the map must not
    steps = IsotonicRegression(out_of_bounds="clip").fit(raw_valid, y_valid).predict(raw_test)
    assert len(np.unique(steps)) < len(np.unique(raw_test)) / 10
    assert roc_auc_score(y_test, steps) < roc_auc_score(y_test, raw_test)
    q = iso.apply(raw_test)
    assert (np.diff(q[np.argsort(raw_test)]) > 0).all()
    assert roc_auc_score(y_test, q) == roc_auc_score(y_test, raw_test)
    assert average_precision_score(y_test, q) == average_precision_score(y_test, raw_test)
    # ... and still calibrates: the distortion's ECE falls to a small one
    before, after = expected_calibration_error(y_test, raw_test), expected_calibration_error(y_test, q)
    assert before > 0.04 and after < before / 2, (before, after)
    assert ((q > 0) & (q < 1)).all()
    # a card written with plain step knots (older versions) is applied without ties as well
    stepped = Calibrator.from_dict({"method": "isotonic", "params": {"x": [0.0, 0.3, 0.3, 1.0],
                                                                     "y": [0.01, 0.01, 0.4, 0.4]}})
    r = stepped.apply(np.array([0.05, 0.1, 0.2, 0.5, 0.9]))
    assert (np.diff(r) > 0).all() and np.allclose(r, [0.01, 0.01, 0.01, 0.4, 0.4], atol=2e-6)
