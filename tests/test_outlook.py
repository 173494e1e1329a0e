"""Demand outlook: the Poisson-binomial interval against enumeration and simulated truth, the
outlook of a category-scope model end to end (on a synthetic store whose purchase probabilities are
known), the chart, and the CLI."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import charts
from core.cli import main
from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import DataError, ModelError
from core.insight.cohorts import score_dataset
from core.insight.outlook import (
    EXACT_MAX_ROWS,
    category_buyers,
    category_outlook,
    outlook,
    poisson_binomial_interval,
    poisson_binomial_pmf,
)
from core.modeling.labels import LabelSpec
from core.modeling.pipeline import train_model
from core.modeling.synth import SynthConfig, generate


# -- the distribution ---------------------------------------------------------------------------
def enumerate_pmf(p: list[float]) -> np.ndarray:
    """P(K = k) by summing over all 2^n outcomes."""
    out = np.zeros(len(p) + 1)
    for outcome in itertools.product((0, 1), repeat=len(p)):
        out[sum(outcome)] += math.prod(q if o else 1 - q for q, o in zip(p, outcome, strict=True))
    return out


def test_pmf_equals_enumeration():
    for p in ([0.1, 0.5, 0.8], [0.3, 0.3, 0.9, 0.05, 0.6, 0.0, 1.0], [0.02] * 9):
        assert np.allclose(poisson_binomial_pmf(p), enumerate_pmf(p), atol=1e-14)
    assert poisson_binomial_pmf([]).tolist() == [1.0]


def test_interval_on_a_hand_case():
    # p = (0.1, 0.5, 0.8): pmf 0.09, 0.46, 0.41, 0.04; cdf 0.09, 0.55, 0.96, 1.0
    p = [0.1, 0.5, 0.8]
    assert np.allclose(poisson_binomial_pmf(p), [0.09, 0.46, 0.41, 0.04])
    assert poisson_binomial_interval(p, 0.9) == (0, 2, "exact")     # 0.09 >= 0.05; 0.96 >= 0.95
    assert poisson_binomial_interval(p, 0.8) == (1, 2, "exact")     # 0.09 < 0.10 <= 0.55; 0.96 >= 0.90
    assert poisson_binomial_interval(p, 0.99) == (0, 3, "exact")
    assert poisson_binomial_interval([1.0, 1.0, 0.0], 0.9) == (2, 2, "exact")


@pytest.mark.parametrize("n", [400, EXACT_MAX_ROWS + 1000])
def test_interval_covers_simulated_counts_at_its_stated_rate(n):
    """Known probabilities, 2,000 seeded Bernoulli draws of every user: the 90 % interval holds the
    realised count in about 90 % of draws, exact (n <= EXACT_MAX_ROWS) and normal (beyond)."""
    rng = np.random.default_rng(n)
    p = rng.beta(2, 8, n)                    # mean 0.2: sd of the count about sqrt(0.15 n)
    low, high, method = poisson_binomial_interval(p, 0.9)
    assert method == ("exact" if n <= EXACT_MAX_ROWS else "normal")
    counts = np.stack([(rng.random(n) < p).sum() for _ in range(2000)])
    covered = float(((counts >= low) & (counts <= high)).mean())
    assert 0.85 <= covered <= 0.95, (low, high, covered)


def test_normal_approximation_agrees_with_the_exact_interval():
    p = np.random.default_rng(1).uniform(0.05, 0.6, EXACT_MAX_ROWS + 1)
    low, high, method = poisson_binomial_interval(p, 0.9)
    pmf = poisson_binomial_pmf(p)
    cdf = np.cumsum(pmf)
    exact = (int(np.searchsorted(cdf, 0.05)), int(np.searchsorted(cdf, 0.95)))
    assert method == "normal" and abs(low - exact[0]) <= 1 and abs(high - exact[1]) <= 1


@pytest.mark.parametrize("p, level", [([0.2, 1.5], 0.9), ([0.2, np.nan], 0.9), ([0.2], 1.0), ([0.2], 0.0)])
def test_bad_inputs_are_refused(p, level):
    with pytest.raises(DataError):
        poisson_binomial_interval(p, level)


def test_category_outlook_sums_probabilities_per_category():
    scores = pd.DataFrame({"user_id": ["a", "b", "c", "a", "d"], "category": ["x", "x", "x", "y", None],
                           "score": [0.5, 0.25, 0.25, 0.9, 0.3]})
    frame = category_outlook(scores, 0.9).set_index("category")
    assert list(frame.index) == ["x", "y"]                     # most expected first; no category dropped
    assert frame.loc["x", "expected"] == pytest.approx(1.0) and frame.loc["x", "users"] == 3
    assert (frame.loc["y", "low"], frame.loc["y", "high"]) == (0, 1)
    assert (frame.loc["x", "low"], frame.loc["x", "high"]) == poisson_binomial_interval([0.5, 0.25, 0.25])[:2]


# -- a category-scope model end to end -----------------------------------------------------------
TRUTH_CUTOFFS = 3


@pytest.fixture(scope="module")
def truth_world(tmp_path_factory):
    """A synthetic store of the users whose purchase category is decided at each of three truth
    cutoffs (an open cart or a focus category: the generator buys there, with probability p_buy,
    and nowhere else), so P(user buys in category c in (T, T + 1d]) = p_buy if c is their intent
    category, else 0, exactly; plus a small category-scope GBDT trained on it."""
    tmp = tmp_path_factory.mktemp("outlook")
    generate(SynthConfig(users=3000, days=6, seed=5, n_categories=30, n_items=3000), tmp / "all.csv",
             truth_out=tmp / "truth.parquet")
    truth = pd.read_parquet(tmp / "truth.parquet")
    cutoffs = sorted(truth["cutoff"].unique())[1:1 + TRUTH_CUTOFFS]
    truth = truth[truth["cutoff"].isin(cutoffs)]
    decided = truth[truth["intent_kind"] != "none"].groupby("user_id")["cutoff"].nunique()
    users = set(decided[decided == TRUTH_CUTOFFS].index.astype(str))
    events = pd.read_csv(tmp / "all.csv", header=None, dtype=str)
    events[events[0].isin(users)].to_csv(tmp / "decided.csv", header=False, index=False)
    store = Store(tmp / "db.duckdb")
    ingest_file(store, tmp / "decided.csv", dataset="syn", layout="taobao")
    spec = LabelSpec(horizon="1d", scope="category", max_len=30, max_train_cutoffs=2)
    result = train_model(store, "syn", kind="gbdt", spec=spec, preset="fast", out=tmp / "models" / "cat")
    yield store, result, truth[truth["user_id"].astype(str).isin(users)], [pd.Timestamp(t) for t in cutoffs]
    store.close()


def plant_scores(store: Store, model_id: str, rows: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    """Replace the model's scoring run with ``rows`` (user_id, category, score) made at ``cutoff``."""
    with store.write("syn", "test: planted scores") as w:
        w.cur.register("planted", rows)
        w.replace("scores", "SELECT ?, 'syn', user_id, category, score, ?, ? FROM planted",
                  [model_id, cutoff.to_pydatetime(), cutoff.to_pydatetime()], key=model_id)
        w.cur.unregister("planted")


def test_outlook_intervals_cover_the_realised_buyers_of_known_probabilities(truth_world):
    """The true probabilities as the model's scoring run at each truth cutoff: outlook's intervals
    hold the buyers that followed (counted by its SQL on the events) at the rate they state. Small
    counts make a discrete interval cover more than its level, so the target is each interval's
    exact coverage under the truth, summed: the hits must lie within 3 sd of it."""
    store, result, truth, cutoffs = truth_world
    model_id = result.card["model_id"]
    hits, stated, variance, intervals = 0, 0.0, 0.0, 0
    for cutoff in cutoffs:
        at = truth[truth["cutoff"] == cutoff]
        plant_scores(store, model_id, pd.DataFrame({"user_id": at["user_id"].astype(str),
                                                    "category": at["intent_category"].astype(str),
                                                    "score": at["p_buy"]}), cutoff)
        view = outlook(store, result.model_dir, "syn", cutoff=cutoff, level=0.9)
        assert view.source == "scoring run" and view.cutoff == cutoff.to_pydatetime()
        frame = view.frame
        # every buy of these users in the window is in their intent category: the SQL must see them all
        assert frame["realized"].sum() == at["bought"].sum()
        for category, row in frame.set_index("category").iterrows():
            p = at.loc[at["intent_category"].astype(str) == category, "p_buy"].to_numpy()
            assert row["expected"] == pytest.approx(p.sum())
            pmf = poisson_binomial_pmf(p)
            cover = float(pmf[int(row["low"]):int(row["high"]) + 1].sum())
            assert cover >= 0.9 - 1e-9
            stated += cover
            variance += cover * (1 - cover)
            hits += int(row["low"] <= row["realized"] <= row["high"])
            intervals += 1
    assert intervals >= 60
    assert abs(hits - stated) <= 3 * math.sqrt(variance) + 1, (hits, stated, intervals)
    assert hits / intervals >= 0.85


def test_outlook_of_a_scoring_run_against_the_last_horizon(truth_world):
    store, result, _, _ = truth_world
    scores = score_dataset(store, result.model_dir, "syn")
    view = outlook(store, result.model_dir, "syn", top=5)
    assert view.source == "scoring run" and len(view.frame) == 5 and view.categories > 5
    last_event = pd.Timestamp(store.dataset("syn")["ts_max"])
    assert view.cutoff == last_event.to_pydatetime()
    expected = scores.groupby("category")["score"].sum().sort_values(ascending=False)
    assert np.allclose(view.frame["expected"], expected.head(5).to_numpy())
    assert view.frame["realized"].isna().all()                 # the next horizon has not happened
    events = store.df("SELECT user_id, CAST(category AS VARCHAR) AS category, ts FROM events "
                      "WHERE dataset = 'syn' AND behavior = 'buy'")
    window = events[(events["ts"] > last_event - pd.Timedelta("1d")) & (events["ts"] <= last_event)]
    by_hand = window.groupby("category")["user_id"].nunique()
    for row in view.frame.itertuples():
        assert row.last_actual == by_hand.get(row.category, 0)
    assert category_buyers(store, "syn", last_event - pd.Timedelta("1d"), last_event)["buyers"].sum() \
        == by_hand.sum()
    payload = view.to_dict()
    assert payload["rows"][0]["category"] == view.frame["category"].iloc[0] and payload["level"] == 0.9
    fig = charts.demand_outlook(view.frame, level=view.level, horizon=view.horizon)
    bars = fig.data[0]
    assert list(bars.x) == view.frame["category"].tolist()
    assert np.allclose(np.asarray(bars.y) + np.asarray(bars.error_y.array), view.frame["high"])
    assert np.allclose(np.asarray(bars.y) - np.asarray(bars.error_y.arrayminus), view.frame["low"])
    assert list(fig.data[1].y) == view.frame["last_actual"].tolist() and len(fig.data) == 2


def test_outlook_refuses_a_model_of_scope_any(tmp_path):
    with Store(tmp_path / "db.duckdb") as store, pytest.raises(ModelError, match="scope 'category'") as err:
        outlook(store, Path(__file__).resolve().parents[1] / "models" / "saved" / "demo", "demo")
    assert "--scope category" in str(err.value)


def test_cli_outlook_json(truth_world, capsys, tmp_path):
    store, result, _, _ = truth_world
    db = store.path
    assert main(["outlook", "--model", str(result.model_dir), "--dataset", "syn", "--db", str(db),
                 "--top", "3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["rows"]) == 3 and {"expected", "low", "high", "last_actual"} <= set(payload["rows"][0])
    assert main(["outlook", "--model", str(result.model_dir), "--dataset", "syn", "--db", str(db)]) == 0
    assert "Expected purchasers per category" in capsys.readouterr().out
    assert main(["outlook", "--model", str(result.model_dir), "--dataset", "nope", "--db", str(db)]) == 2
