"""Monitoring: PSI against hand-computed values, drift that flags a shifted synthetic log and not an
unshifted one (and the `drift` CLI's exit codes), score history written by every scoring run,
cohort stability against hand-counted overlaps, and request-log summaries against numpy."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import charts
from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import DataError, NotFoundError
from core.insight.cohorts import score_dataset
from core.modeling.labels import LabelSpec
from core.modeling.pipeline import train_model
from core.modeling.synth import SynthConfig, generate
from core.serving.monitor import (
    ACT_PSI,
    PSI_EPSILON,
    cohort_stability,
    describe_psi,
    drift_report,
    feature_label,
    population_stability,
    score_runs,
    service_summary,
    service_totals,
    status_of,
)
from core.serving.requestlog import read_request_log
from tests.event_rows import add_events, copy_store

BASE = {"users": 500, "days": 6, "n_items": 2000, "n_categories": 40}


def test_psi_matches_hand_computation(tmp_path):
    """Reference 1..10: deciles 1.9, 2.8, ..., 9.1 give one value per bin. Latest: half its values
    in the first bin, one in each of the next five, none in the last four (empty -> epsilon)."""
    with Store(":memory:") as store:
        ref = pd.DataFrame({"x": np.arange(1.0, 11.0)})
        latest = pd.DataFrame({"x": [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
        summary, bins = population_stability(store, ref, latest)
    eps = PSI_EPSILON
    expected = (0.5 - 0.1) * math.log(0.5 / 0.1) + 4 * (eps - 0.1) * math.log(eps / 0.1)
    assert summary.loc[0, "psi"] == pytest.approx(expected, rel=1e-9)
    assert list(bins["reference"]) == pytest.approx([0.1] * 10)
    assert list(bins["latest"]) == pytest.approx([0.5] + [0.1] * 5 + [0.0] * 4)
    assert bins.loc[1, "lower"] == pytest.approx(1.9) and bins.loc[1, "upper"] == pytest.approx(2.8)


def test_psi_identical_is_zero_and_merges_equal_edges():
    with Store(":memory:") as store:
        # a count that is mostly 0: the deciles collapse to 0, 0, ..., 3 -> bins (-inf, 0], (0, 3], (3, inf)
        ref = pd.DataFrame({"n": [0.0] * 8 + [3.0, 9.0], "m": np.arange(10.0)})
        summary, bins = population_stability(store, ref, ref.copy())
        assert summary["psi"].tolist() == pytest.approx([0.0, 0.0])
        assert len(bins[bins["measure"] == "n"]) == len(set(np.quantile(ref["n"], np.arange(1, 10) / 10))) + 1
        with pytest.raises(DataError):
            population_stability(store, ref[["n"]], pd.DataFrame({"other": [1.0]}))


def test_status_words():
    assert [status_of(p) for p in (0.05, 0.1, 0.2, 0.25, 0.9)] == ["ok", "watch", "watch", "drift", "drift"]
    assert describe_psi("carts per user", 0.31) == "carts per user moved: PSI 0.31, over the 0.25 action threshold"
    assert "watch threshold" in describe_psi("x", 0.12) and "stable" in describe_psi("x", 0.01)
    assert feature_label("n_cart_all") == "carts per user (whole window)"
    assert feature_label("log_secs_since_buy") == "time since the last buy (log)"


# -- drift on synthetic logs -------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three small synthetic logs: 'train' (seed 1), 'same' (the same generator, seed 2) and
    'busy' (seed 3, sessions twice as long: more events per user, a different activity profile),
    and a fast GBDT trained on 'train'."""
    tmp = tmp_path_factory.mktemp("monitor")
    configs = {"train": SynthConfig(seed=1, **BASE), "same": SynthConfig(seed=2, **BASE),
               "busy": SynthConfig(seed=3, events_per_session=9.0, **BASE)}
    db = tmp / "db.duckdb"
    with Store(db) as store:
        for name, config in configs.items():
            generate(config, tmp / f"{name}.csv")
            ingest_file(store, tmp / f"{name}.csv", dataset=name)
        result = train_model(store, "train", kind="gbdt", spec=LabelSpec(horizon="1d", max_train_cutoffs=2),
                             preset="fast", seed=0, out=tmp / "models" / "gbdt", models_root=tmp / "models")
    return db, result.model_dir


def test_drift_flags_a_shifted_log_and_not_an_unshifted_one(world):
    db, model_dir = world
    with Store(db, read_only=True) as store:
        same = drift_report(store, model_dir, "same")
        busy = drift_report(store, model_dir, "busy")
    assert same.windows.reference_dataset == "train" and same.windows.length == timedelta(days=2)
    assert same.status != "drift", same.headline()
    assert (same.measures["psi"] < ACT_PSI).all()
    flagged = busy.measures.set_index("measure")
    assert busy.status == "drift" and busy.drifted
    # longer sessions: more events per user and per session; the scores move more than without a shift
    for measure in ("events_per_user", "events_per_session"):
        assert flagged.loc[measure, "status"] == "drift", flagged.loc[measure, "message"]
    unshifted = same.measures.set_index("measure")
    assert flagged.loc["events_per_user", "psi"] > 3 * unshifted.loc["events_per_user", "psi"]
    assert flagged.loc["score", "psi"] > unshifted.loc["score", "psi"]
    assert busy.ks["pvalue"] < 1e-4 < same.ks["pvalue"]
    assert "over the 0.25 action threshold" in flagged.loc["events_per_user", "message"]
    # the same event counts as SQL computes them
    with Store(db, read_only=True) as store:
        w = busy.windows
        n = store.fetchone("SELECT count(*), count(DISTINCT user_id) FROM events WHERE dataset = 'busy' "
                           "AND ts > ? AND ts <= ?", [w.latest_start, w.latest_end])
    assert (busy.counts["latest_events"], busy.counts["latest_users"]) == n
    assert busy.behaviors["reference_share"].sum() == pytest.approx(1.0)
    payload = json.loads(json.dumps(busy.to_dict(), default=str))
    assert payload["status"] == "drift" and payload["measures"][0]["status"] == "drift"
    assert set(busy.features["status"]) <= {"ok", "watch", "drift"}
    fig = charts.feature_psi(busy.features, busy.watch, busy.threshold)
    assert max(fig.data[0].x) == pytest.approx(busy.features["psi"].max())


def test_drift_cli_exit_codes(world, capsys):
    from core.cli import main

    db, model_dir = world
    common = ["drift", "--db", str(db), "--model", str(model_dir)]
    assert main([*common, "--dataset", "same", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] in ("ok", "watch")
    assert main([*common, "--dataset", "busy"]) == 3
    assert "Drift:" in capsys.readouterr().out
    assert main([*common, "--dataset", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


# -- score history and cohort stability --------------------------------------------------------
def test_scoring_appends_to_the_history(world, tmp_path):
    db, model_dir = world
    copy = copy_store(Path(db), tmp_path / "db.duckdb")
    with Store(copy) as store:
        first = score_dataset(store, model_dir, "same")
        score_dataset(store, model_dir, "same")
        model_id = json.loads((Path(model_dir) / "card.json").read_text())["model_id"]
        runs = score_runs(store, model_id, "same")
        assert len(runs) == 2 and (runs["n_users"] == len(first)).all()
        assert store.fetchone("SELECT count(*) FROM scores")[0] == len(first)        # latest run only
        history = store.df("SELECT run_id, user_id, score FROM score_history WHERE run_id = ?",
                           [runs["run_id"].iloc[0]])
        merged = history.merge(first, on="user_id", suffixes=("", "_returned"))
        assert len(merged) == len(first) and np.allclose(merged["score"], merged["score_returned"])
        same = cohort_stability(store, model_id, "same", top_percent=10)
        assert len(same) == 1 and same.loc[0, "kept"] == 1.0 and same.loc[0, "jaccard"] == 1.0


def test_cohort_stability_against_hand_counts(store):
    """Three runs of 10 users. Top 30 % = 3 rows. Run 1: u0 u1 u2; run 2: u0 u1 u5; run 3: u7 u8 u9."""
    t0 = datetime(2024, 1, 1)
    ranking = {"r1": ["u0", "u1", "u2"], "r2": ["u0", "u1", "u5"], "r3": ["u7", "u8", "u9"]}
    with store.write("d", "test runs") as w:
        for k, (run, top) in enumerate(ranking.items()):
            w.add("score_runs", "SELECT ?, 'm', 'd', ?, ?, 10", [run, t0, t0 + timedelta(days=k)], key=run)
            rows = []
            for u in range(10):
                user = f"u{u}"
                rows.append((run, user, 0.9 - 0.01 * top.index(user) if user in top else 0.1 + 0.01 * u))
            w.add("score_history", "SELECT * FROM (VALUES " + ", ".join(["(?, ?, NULL, ?)"] * len(rows)) + ")",
                  [v for row in rows for v in row], key=run)
    frame = cohort_stability(store, "m", "d", top_percent=30)
    assert frame["earlier_run"].tolist() == ["r1", "r2"] and frame["later_run"].tolist() == ["r2", "r3"]
    assert frame["common"].tolist() == [2, 0]
    assert frame["kept"].tolist() == pytest.approx([2 / 3, 0.0])
    assert frame["jaccard"].tolist() == pytest.approx([2 / 4, 0.0])
    pair = cohort_stability(store, "m", "d", top_percent=30, runs=("r1", "r3"))
    assert pair["common"].tolist() == [0] and pair["earlier_size"].tolist() == [3]
    # top 50 % = 5 rows: run 1 adds u9 u8 (0.19, 0.18), run 2 adds u9 u8 too -> 4 common of 5
    half = cohort_stability(store, "m", "d", top_percent=50, runs=("r1", "r2"))
    assert half.loc[0, "common"] == 4 and half.loc[0, "jaccard"] == pytest.approx(4 / 6)
    with pytest.raises(NotFoundError):
        cohort_stability(store, "m", "d", runs=("r1", "nope"))
    with pytest.raises(DataError):
        cohort_stability(store, "m", "d", top_percent=0)
    fig = charts.cohort_overlap(frame, 30)
    assert list(fig.data[0].y) == pytest.approx([2 / 3, 0.0])


def test_a_store_without_runs_has_empty_history_tables(tmp_path):
    """(Was: an old single-file database without the history tables. A store folder always has every
    table, so the closest case is a store whose data was never scored: no run segments at all.)"""
    path = tmp_path / "old.duckdb"
    with Store(path) as store:
        add_events(store, "d", [("u1", "i1", "c1", "view", datetime(2024, 1, 1))])
    with Store(path, read_only=True) as store:
        assert score_runs(store, "m", "d").empty and cohort_stability(store, "m", "d").empty
    with Store(path) as store:
        assert store.fetchone("SELECT count(*) FROM score_history")[0] == 0


# -- the request log ---------------------------------------------------------------------------
def _write_log(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_service_summary_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    t0 = datetime(2024, 5, 1, 12, 0, 0)
    records = []
    for i in range(300):
        minute = i // 100                                   # 100 requests in each of 3 minutes
        status = 500 if i % 50 == 0 else (422 if i % 10 == 3 else 200)
        records.append({"time": (t0 + timedelta(minutes=minute, seconds=i % 60)).isoformat() + "Z",
                        "route": "/v1/score", "method": "POST", "status": status,
                        "latency_ms": float(rng.gamma(2.0, 3.0)), "model_id": "m", "n_users": 1,
                        "n_events": 10, "error": None if status == 200 else "validation"})
    log_path = tmp_path / "logs" / "service.log"
    _write_log(log_path.with_name("service.log.1"), records[:120])     # a rotated backup: older lines
    _write_log(log_path, records[120:])
    log = read_request_log(log_path)
    assert len(log) == 300
    summary = service_summary(log, "1min")
    assert summary["requests"].tolist() == [100, 100, 100]
    assert summary["rate"].tolist() == pytest.approx([100 / 60] * 3)
    latency = np.array([r["latency_ms"] for r in records])
    status = np.array([r["status"] for r in records])
    for k in range(3):
        part = latency[k * 100:(k + 1) * 100]
        assert summary.loc[k, "p50_ms"] == pytest.approx(np.percentile(part, 50))
        assert summary.loc[k, "p95_ms"] == pytest.approx(np.percentile(part, 95))
        assert summary.loc[k, "p99_ms"] == pytest.approx(np.percentile(part, 99))
        errors = status[k * 100:(k + 1) * 100] >= 400
        assert summary.loc[k, "error_rate"] == pytest.approx(errors.mean())
    totals = service_totals(log)
    assert totals["p99_ms"] == pytest.approx(np.percentile(latency, 99))
    assert totals["server_errors"] == int((status >= 500).sum())
    assert totals["client_errors"] == int(((status >= 400) & (status < 500)).sum())
    fig = charts.service_latency(summary)
    assert [t.name for t in fig.data] == ["p50", "p95", "p99"]
    assert list(fig.data[2].y) == pytest.approx(summary["p99_ms"].tolist())


def test_empty_log_summaries(tmp_path):
    log = read_request_log(tmp_path / "logs" / "service.log")
    assert log.empty and service_summary(log).empty and service_totals(log) == {"requests": 0}
    assert charts.is_empty_figure(charts.service_traffic(service_summary(log)))
