"""core.insight.drivers on a tiny synthetic dataset with a tiny Transformer and a GBDT: the first user
shown is the top of the scoring run (a planted top score moves it), the cohort sample is the
cohort, tree SHAP adds up to the booster's scores for exactly the sampled users, a one-user cohort
gives one user's drivers, and the what-if and faithfulness checks run on one explanation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data.store import Store
from core.errors import DataError, ModelError, NotFoundError
from core.insight import cohorts as C
from core.insight import drivers as D
from core.insight import explain as E
from tests.app_util import tiny_app_data
from tests.event_rows import copy_store

TOP_5 = C.CohortSpec(mode="top", top_percent=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(database copy, transformer dir, gbdt dir): the shared tiny data plus a GBDT scored on it."""
    from core.insight.cohorts import score_dataset
    from core.modeling.labels import LabelSpec
    from core.modeling.pipeline import train_model

    db, saved = tiny_app_data(tmp_path_factory)
    folder = tmp_path_factory.mktemp("drivers")
    mine = folder / "db.duckdb"
    copy_store(db, mine)
    with Store(mine) as store:
        gbdt = train_model(store, "synth", kind="gbdt", preset="fast", out=folder / "gbdt",
                           spec=LabelSpec(horizon="1d", max_len=30, max_train_cutoffs=2))
        score_dataset(store, gbdt.model_dir, "synth")
    return mine, saved / "tiny", Path(gbdt.model_dir)


def model_id(model_dir: Path) -> str:
    return str(E.load_model_cached(model_dir).card.get("model_id") or model_dir.name)


def test_first_user_is_the_top_of_the_scoring_run(tiny):
    db, transformer, _ = tiny
    mid = model_id(transformer)
    with Store(db) as store:
        top = D.first_user(store, mid, "synth")
        best = store.fetchone("SELECT max(probability) FROM scores WHERE model_id = ?", [mid])[0]
        assert store.fetchone("SELECT probability FROM scores WHERE model_id = ? AND user_id = ?",
                              [mid, top])[0] == best
        # plant a new top score on the lowest-scored user: the first user follows it
        low = store.fetchone("SELECT user_id FROM scores WHERE model_id = ? ORDER BY probability, user_id "
                             "LIMIT 1", [mid])[0]
        assert low != top
        with store.write("synth", "test: planted top score") as w:
            w.replace("scores", "SELECT * REPLACE (CASE WHEN user_id = ? THEN 0.999999 ELSE probability END "
                      "AS probability) FROM scores WHERE model_id = ? AND dataset = 'synth'", [low, mid], key=mid)
        assert D.first_user(store, mid, "synth") == low
        assert D.first_user(store, "never-scored", "synth") is None


def test_population_is_the_cohort_or_everyone(tiny):
    db, transformer, _ = tiny
    mid = model_id(transformer)
    with Store(db) as store:
        scored = store.fetchone("SELECT count(DISTINCT user_id) FROM scores WHERE model_id = ?", [mid])[0]
        cohort = set(C.cohort_users(store, mid, "synth", TOP_5, limit=10_000)["user_id"])
        assert 0 < len(cohort) < scored
        assert set(D.population(store, mid, "synth", TOP_5, 10_000)) == cohort
        assert len(D.population(store, mid, "synth", None, 10_000)) == scored
        sample = D.population(store, mid, "synth", None, 7)
        assert len(sample) == 7 and sample == D.population(store, mid, "synth", None, 7)   # fixed order
        with pytest.raises(NotFoundError):
            D.population(store, "never-scored", "synth", None, 5)


def test_tree_shap_of_the_sampled_users_adds_up_to_the_booster(tiny):
    db, transformer, gbdt = tiny
    with Store(db) as store:
        values, features = D.tree_shap_drivers(store, gbdt, "synth", TOP_5, 1000)
        users = D.population(store, model_id(gbdt), "synth", TOP_5, 1000)
        assert features.index.tolist() == users
        assert values.shape == (len(users), len(values.columns)) and values.index.equals(features.index)
        booster = E._booster_of(E.load_model_cached(gbdt).gbdt)
        raw = booster.predict(features[list(values.columns)].astype(np.float64), raw_score=True)
        _, base = E.tree_shap(E.load_model_cached(gbdt).gbdt, features)
        np.testing.assert_allclose(values.sum(axis=1).to_numpy() + base, raw, atol=1e-6)
        with pytest.raises(ModelError, match="no gradient-boosted member"):
            D.tree_shap_drivers(store, transformer, "synth", None, 10)


def test_a_one_user_cohort_gets_that_users_drivers(tiny):
    db, transformer, _ = tiny
    mid = model_id(transformer)
    with Store(db) as store:
        top = D.first_user(store, mid, "synth")
        spec = C.CohortSpec(mode="top", top_percent=0.5)          # 1 of 200 users
        assert D.population(store, mid, "synth", spec, 100) == [top]
        mine = D.cohort_drivers(store, transformer, "synth", spec, 100, "attention")
        exp = E.explain_user(store, transformer, "synth", top, methods=("attention",))
        assert mine["behavior"].attrs["users"] == 1
        assert mine["behavior"]["events"].sum() == len(exp.events)
        everyone = D.cohort_drivers(store, transformer, "synth", None, 40, "attention")
        assert everyone["behavior"].attrs["users"] == 40
        both = D.contrast_drivers(mine, everyone)
        assert set(both) == {"behavior", "gap", "category"}
        assert set(both["behavior"]["population"]) == {"cohort", "everyone"}


def test_explanation_checks(tiny):
    db, transformer, gbdt = tiny
    assert D.user_methods(transformer) == ("ig", "shap", "attention")
    with Store(db) as store:
        # the top-scored user with at least two events, so that removing the newest leaves one to score
        top = C.cohort_users(store, model_id(transformer), "synth", D.EVERYONE, order_by="score",
                             descending=True, limit=20)["user_id"].astype(str)
        events = "SELECT count(*) FROM events WHERE dataset = 'synth' AND user_id = ?"
        user = next(u for u in top if store.fetchone(events, [u])[0] >= 2)
        exp = D.explain(store, transformer, "synth", user)
        assert exp.methods == ("ig", "shap", "attention")
        same = D.what_if_of(exp)
        assert same["delta"] == pytest.approx(0.0, abs=1e-6)
        assert same["before"] == pytest.approx(exp.score, abs=1e-4)
        newest = int(exp.events["position"].max())
        gone = D.what_if_of(exp, removed=[newest])
        direct = exp.what_if(remove_positions=[newest])      # the raw probability
        calibration = exp.model.calibration
        assert calibration is not None                       # what-if reads like the score: calibrated
        assert gone["after"] == pytest.approx(float(calibration.apply([direct["after"]])[0]))
        # the what-if rebuilds the sequence from the explanation's own events: unedited, byte-equal
        assert exp.source_events is not None and exp.model.vocab is not None
        rebuilt = E.edited_sequence(exp.source_events, exp.cutoff, exp.model.spec, exp.model.vocab)
        for name in rebuilt.ARRAYS:
            np.testing.assert_array_equal(getattr(rebuilt, name), getattr(exp.sequence, name))
        later = D.what_if_of(exp, added=[("cart", None, 3600.0)])
        assert later["after"] != pytest.approx(later["before"]) and later["before"] == pytest.approx(same["before"])
        with pytest.raises(DataError, match="hold none"):
            D.what_if_of(exp, removed=[-1])
        curves = D.faithfulness_of(exp)
        assert set(curves["method"]) == {"ig", "shap", "attention", "random"}
        flat = D.explain(store, gbdt, "synth", D.first_user(store, model_id(gbdt), "synth"))
        assert list(flat.features.columns) == ["feature", "value", "shap"] and flat.methods == ()
        with pytest.raises(ModelError, match="no per-event attribution"):
            D.faithfulness_of(flat)
