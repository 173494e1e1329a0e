"""Realized accuracy: figures against hand-computed ones on a tiny log, the export's stamp linked to
its realized row, a synthetic log scored at day 7 and realized at day 8 against the generator's true
probabilities (and a log whose behaviour shifts after day 7 flagged), the `realized` CLI's exit codes,
and the top-category hit rate against hand counts."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from core import charts
from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import DataError, NotFoundError
from core.insight.cohorts import CohortSpec, export_cohort, refresh_user_stats, score_dataset
from core.insight.realized import Z95, offer_hit_rate, predicted_range, realized_runs, wilson_interval
from core.modeling.labels import LabelSpec
from core.modeling.pipeline import load_evaluation, train_model
from core.modeling.synth import SynthConfig, generate
from tests.event_rows import insert_events

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "saved" / "demo-gbdt"           # horizon 1d, scope any; its id scores the tiny log
DEMO_ID = json.loads((DEMO / "card.json").read_text())["model_id"]
T = datetime(2024, 3, 1, 12)
H = timedelta(days=1)
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]      # u0 .. u9


def _insert_events(store: Store, rows: list[tuple]) -> None:
    frame = pd.DataFrame(rows, columns=["user_id", "category", "behavior", "ts"]).assign(dataset="d", item_id="i")
    with store.write("d", "test events") as w:
        w.cur.register("ev", frame)
        insert_events(w, "SELECT dataset, user_id, item_id, category, behavior, ts FROM ev",
                      columns=("dataset", "user_id", "item_id", "category", "behavior", "ts"),
                      layout="taobao", sha256="abc")


@pytest.fixture
def tiny(store):
    """Ten users viewed at T - 1h. In (T, T + H]: u0, u1 and u5 buy. u2 bought before T, u9 after
    T + H (neither counts). Run r1 at T (its horizon has passed); run r2 at T + H + 1h (pending)."""
    rows = [(f"u{k}", "c1", "view", T - timedelta(hours=1)) for k in range(10)]
    rows += [(u, "c1", "buy", T + timedelta(hours=2)) for u in ("u0", "u1", "u5")]
    rows += [("u2", "c1", "buy", T - timedelta(minutes=30)), ("u9", "c1", "buy", T + H + timedelta(hours=1)),
             ("u3", "c1", "view", T + H + timedelta(hours=2))]
    _insert_events(store, rows)
    scored_at = datetime(2024, 3, 1, 13)
    history = pd.DataFrame({"user_id": [f"u{k}" for k in range(10)], "score": SCORES})
    with store.write("d", "test runs") as w:
        w.cur.register("h", history)
        w.add("score_runs", "SELECT 'r1', ?, 'd', ?, ?, 10", [DEMO_ID, T, scored_at], key="r1")
        w.add("score_history", "SELECT 'r1', user_id, NULL, score FROM h", key="r1")
        w.add("scores", "SELECT ?, 'd', user_id, NULL, score, ?, ? FROM h", [DEMO_ID, T, scored_at], key=DEMO_ID)
        w.add("score_runs", "SELECT 'r2', ?, 'd', ?, ?, 10", [DEMO_ID, T + H + timedelta(hours=1), scored_at + H + H],
              key="r2")
        w.add("score_history", "SELECT 'r2', user_id, NULL, score FROM h", key="r2")
        refresh_user_stats(w)
    return store


def test_realized_figures_match_hand_computation(tiny, tmp_path):
    stamp = export_cohort(tiny, DEMO_ID, "d", CohortSpec(mode="top", top_percent=30), tmp_path / "top.csv")
    report = realized_runs(tiny, DEMO, "d", top_percent=20)
    assert report.runs["run_id"].tolist() == ["r1"]
    assert report.pending["run_id"].tolist() == ["r2"]
    run = report.runs.iloc[0]
    # labels: u0, u1, u5 bought in (T, T + H]; u2 (before T) and u9 (after T + H) did not
    assert (run["n_users"], run["rows"], run["buyers"]) == (10, 10, 3)
    assert run["base_rate"] == pytest.approx(0.3)
    # top 20 % = u0, u1: both bought
    assert run["top_rows"] == 2 and run["precision"] == 1.0
    assert run["recall"] == pytest.approx(2 / 3) and run["lift"] == pytest.approx(1 / 0.3)
    ci = binomtest(2, 2).proportion_ci(0.95, method="wilson")
    assert (run["precision_low"], run["precision_high"]) == pytest.approx((ci.low, ci.high))
    p = np.array(SCORES)
    sd = math.sqrt(float((p * (1 - p)).sum()))
    assert run["predicted_buyers"] == pytest.approx(p.sum())
    assert (run["predicted_low"], run["predicted_high"]) == pytest.approx((p.sum() - Z95 * sd, p.sum() + Z95 * sd))
    assert bool(run["calibrated"])                                   # 3 buyers inside 4.55 +- 2.4
    # positives .9 .8 .4 against seven negatives: 7 + 7 + 4 of 21 pairs; AP = (1 + 1 + 3/6) / 3
    assert run["roc_auc"] == pytest.approx(18 / 21)
    assert run["pr_auc"] == pytest.approx(2.5 / 3)
    # the promise: the demo model's test-window top 20 %, and the range a 2-row top lands in
    rows = load_evaluation(DEMO, "test").sort_values(["score"], ascending=False, kind="stable")
    k0 = math.ceil(len(rows) * 0.2)
    p0 = rows["label"].to_numpy()[:k0].mean()
    assert run["promised"] == pytest.approx(p0)
    assert run["promised_margin"] == pytest.approx(Z95 * math.sqrt(p0 * (1 - p0) * (1 / k0 + 1 / 2)))
    assert not run["flagged"] and not report.flagged
    # the export: u0 u1 u2 -> two of the three bought; its stamp links back to this run's row
    assert stamp["run_id"] == "r1" and stamp["cutoff"] == pd.Timestamp(T).isoformat()
    exported = report.exports.set_index("export_id").loc[stamp["export_id"]]
    assert exported["run_id"] == run["run_id"] and exported["cut"] == stamp["cut"]
    assert (exported["rows"], exported["buyers"]) == (3, 2)
    assert exported["precision"] == pytest.approx(2 / 3) and exported["recall"] == pytest.approx(2 / 3)
    sidecar = json.loads((tmp_path / "top.csv.audit.json").read_text())
    assert sidecar["export_id"] == stamp["export_id"] and sidecar["run_id"] == "r1"
    assert "# run_id: r1" in (tmp_path / "top.csv").read_text()
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["runs"][0]["run_id"] == "r1" and payload["exports"][0]["export_id"] == stamp["export_id"]
    fig = charts.realized_precision(report.runs, 20)
    assert list(fig.data[-1].y) == [1.0]
    assert list(charts.predicted_vs_actual(report.runs).data[1].y) == [3]


def test_interval_helpers_and_bad_inputs(tiny):
    assert wilson_interval(0, 0) != wilson_interval(0, 0)          # NaN for an empty cut
    low, high = wilson_interval(31, 100)
    ci = binomtest(31, 100).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high))
    mean, lo, hi = predicted_range(np.array([1.0, 0.0, 0.5]))
    assert mean == 1.5 and (lo, hi) == pytest.approx((1.5 - Z95 * 0.5, 1.5 + Z95 * 0.5))
    with pytest.raises(DataError):
        realized_runs(tiny, DEMO, "d", top_percent=0)
    with pytest.raises(NotFoundError):
        realized_runs(tiny, DEMO, "nope")
    with pytest.raises(NotFoundError):
        realized_runs(tiny, "no-such-model", "d")


def test_offer_hit_rate_against_hand_counts(store):
    """At T: u0 viewed c1 x3, c2 x1; u1 viewed c3 x2; u2 viewed c1. In (T, T + H]: u0 buys c2, u1
    buys c9, u2 buys nothing. The model ranks u0: c2 > c1, u1: c3 only."""
    rows = [("u0", "c1", "view", T - timedelta(hours=h)) for h in (1, 2, 3)]
    rows += [("u0", "c2", "view", T - timedelta(hours=4)), ("u1", "c3", "view", T - timedelta(hours=1)),
             ("u1", "c3", "view", T - timedelta(hours=2)), ("u2", "c1", "view", T - timedelta(hours=1)),
             ("u0", "c2", "buy", T + timedelta(hours=1)), ("u1", "c9", "buy", T + timedelta(hours=1))]
    _insert_events(store, rows)
    scored = pd.DataFrame({"user_id": ["u0", "u0", "u1", "u2"], "cutoff": [T] * 4,
                           "category": ["c2", "c1", "c3", "c1"], "score": [0.6, 0.3, 0.5, 0.2]})
    top1 = offer_hit_rate(store, "d", scored, "1d", k=1)
    # two buyers; model top-1: u0 c2 (hit), u1 c3 (miss); most viewed: u0 c1 (miss), u1 c3 (miss)
    assert top1 == {"users": 2.0, "model": 0.5, "baseline": 0.0, "k": 1.0}
    top2 = offer_hit_rate(store, "d", scored, "1d", k=2)
    assert (top2["model"], top2["baseline"]) == (0.5, 0.5)           # u0's two most viewed: c1, c2
    with pytest.raises(DataError):
        offer_hit_rate(store, "d", scored, "1d", k=0)


# -- a synthetic log with known truth ----------------------------------------------------------------
SYNTH = {"users": 2000, "days": 10, "n_items": 3000, "n_categories": 30, "start": "2017-11-25"}
DAY7 = pd.Timestamp("2017-12-02")


def _split(src: Path, before: Path, after: Path) -> None:
    events = pd.read_csv(src, header=None)
    cut = DAY7.timestamp()
    events[events[4] < cut].to_csv(before, header=False, index=False)
    events[events[4] >= cut].to_csv(after, header=False, index=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One log (seed 3, truth written): its first 7 days are datasets 'steady' and 'shifted'. A fast
    GBDT trains on them, scores both at day 7 (T = the last event) and exports the steady top 10 %.
    Then 'steady' gains the same log's later days, 'shifted' those of a log without planted intent
    (intent_strength 0: buying no longer follows the history)."""
    tmp = tmp_path_factory.mktemp("realized")
    generate(SynthConfig(seed=3, **SYNTH), tmp / "log.csv", truth_out=tmp / "truth.parquet")
    generate(SynthConfig(seed=3, intent_strength=0.0, **SYNTH), tmp / "flat.csv")
    _split(tmp / "log.csv", tmp / "first7.csv", tmp / "later.csv")
    _split(tmp / "flat.csv", tmp / "flat7.csv", tmp / "flat_later.csv")
    db = tmp / "db.duckdb"
    with Store(db) as store:
        for name in ("steady", "shifted"):
            ingest_file(store, tmp / "first7.csv", dataset=name)
        result = train_model(store, "steady", kind="gbdt", spec=LabelSpec(horizon="1d", max_train_cutoffs=2),
                             preset="fast", seed=0, out=tmp / "models" / "gbdt", models_root=tmp / "models")
        for name in ("steady", "shifted"):
            score_dataset(store, result.model_dir, name)
        model_id = json.loads((Path(result.model_dir) / "card.json").read_text())["model_id"]
        stamp = export_cohort(store, model_id, "steady", CohortSpec(mode="top", top_percent=10), tmp / "top.parquet")
        before = realized_runs(store, result.model_dir, "steady", top_percent=10)
        ingest_file(store, tmp / "later.csv", dataset="steady", append=True)
        ingest_file(store, tmp / "flat_later.csv", dataset="shifted", append=True)
    return {"db": db, "model_dir": result.model_dir, "truth": pd.read_parquet(tmp / "truth.parquet"),
            "stamp": stamp, "before": before}


def test_realized_precision_matches_the_truth(world):
    before = world["before"]
    assert before.runs.empty and len(before.pending) == 1 and "has reached the end" in before.headline()
    with Store(world["db"], read_only=True) as store:
        report = realized_runs(store, world["model_dir"], "steady", top_percent=10)
        run = report.runs.iloc[0]
        history = store.df("SELECT user_id, score FROM score_history WHERE run_id = ?", [run["run_id"]])
    assert pd.Timestamp(run["cutoff"]) < DAY7 <= pd.Timestamp(run["cutoff"]) + timedelta(minutes=5)
    # the truth's expectation at the cut: the mean true probability of the same top rows at day 7
    top = history.sort_values(["score", "user_id"], ascending=[False, True]).head(int(run["top_rows"]))
    truth = world["truth"]
    truth = truth[pd.to_datetime(truth["cutoff"]).dt.tz_localize(None) == DAY7]
    p = top.merge(truth.assign(user_id=truth["user_id"].astype(str)), on="user_id")["p_buy"].to_numpy()
    assert len(p) == run["top_rows"]
    assert run["precision_low"] <= p.mean() <= run["precision_high"], (run["precision"], p.mean())
    assert abs(run["precision"] - p.mean()) <= Z95 * math.sqrt((p * (1 - p)).sum()) / len(p)
    assert not report.flagged and "as the model promised" in report.headline()
    # the exported top 10 % is the run's top 10 %: the same figures, linked by ids
    exported = report.exports.set_index("export_id").loc[world["stamp"]["export_id"]]
    assert exported["run_id"] == run["run_id"] == world["stamp"]["run_id"]
    assert exported["rows"] == run["top_rows"] and exported["precision"] == pytest.approx(run["precision"])


def test_a_behaviour_shift_is_flagged(world):
    with Store(world["db"], read_only=True) as store:
        report = realized_runs(store, world["model_dir"], "shifted", top_percent=10)
    run = report.runs.iloc[0]
    assert report.flagged and run["precision"] < run["promised"] - run["promised_margin"]
    assert report.headline().startswith("Realized precision dropped: the top 10 % of the run of 2017-12-01")
    assert "the model promised" in report.headline() and "±" in report.headline()
    assert not run["calibrated"] and run["buyers"] < run["predicted_low"]


def test_realized_cli_exit_codes(world, capsys):
    from core.cli import main

    common = ["realized", "--db", str(world["db"]), "--model", str(world["model_dir"]), "--top", "10"]
    assert main([*common, "--dataset", "steady", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["flagged"] is False and payload["exports"][0]["export_id"] == world["stamp"]["export_id"]
    assert main([*common, "--dataset", "shifted"]) == 3
    assert "Realized precision dropped" in capsys.readouterr().out
    assert main([*common, "--dataset", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
