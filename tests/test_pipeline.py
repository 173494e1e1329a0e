"""End to end: a synthetic log -> train every model kind -> save -> load -> score; no leakage."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import DataError, EligibilityError
from core.insight.cohorts import predict_at, score_dataset
from core.modeling.labels import LabelSpec
from core.modeling.model_store import list_models
from core.modeling.pipeline import PRESETS, load_evaluation, train_model
from core.modeling.sequences import BEHAVIOR_STRIDE
from core.modeling.synth import SynthConfig, generate
from models.artifact import load_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = SynthConfig(users=400, days=6, seed=3, n_items=2000, n_categories=40)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store holding a small synthetic log, and one trained model directory per kind."""
    tmp = tmp_path_factory.mktemp("pipeline")
    generate(SMALL, tmp / "events.csv")
    store = Store(tmp / "db.duckdb")
    ingest_file(store, tmp / "events.csv", dataset="syn")
    models = {}
    for kind in ("transformer", "gbdt", "logreg", "ensemble"):
        models[kind] = train_model(store, "syn", kind=kind, spec=LabelSpec(horizon="1d"), preset="fast",
                                   epochs=2, seed=0, out=tmp / "models" / kind,
                                   models_root=tmp / "models")
    yield store, models, tmp
    store.close()


@pytest.mark.parametrize("kind", ["transformer", "gbdt", "logreg", "ensemble"])
def test_each_kind_trains_saves_and_scores(world, kind):
    store, models, tmp = world
    result = models[kind]
    assert result.card["kind"] == kind and result.card["dataset"] == "syn"
    assert 0.5 < result.metrics["roc_auc"]["value"] <= 1
    assert result.metrics["roc_auc"]["low"] <= result.metrics["roc_auc"]["value"] <= result.metrics["roc_auc"]["high"]
    test = load_evaluation(result.model_dir)
    assert {"user_id", "cutoff", "label", "score", "score_raw", "n_events"} <= set(test.columns)
    assert test.attrs["split"] == "test" and len(test) == result.card["rows"]["test"]
    assert len(load_evaluation(result.model_dir, "valid")) == result.card["rows"]["valid"]
    # the reported figures are the test window's, with the validation window's beside them
    assert result.card["metrics_split"] == "test"
    assert result.card["metrics"]["n"] == len(test)
    assert result.card["valid_metrics"]["n"] == result.card["rows"]["valid"]
    cutoffs = result.card["cutoffs"]
    assert cutoffs["train_cutoffs"][-1] < cutoffs["valid_cutoff"] < cutoffs["test_cutoff"]
    scores = score_dataset(store, result.model_dir, "syn")
    n_users = store.fetchone("SELECT count(DISTINCT user_id) FROM events WHERE dataset = 'syn'")[0]
    assert len(scores) == n_users and scores["score"].between(0, 1).all()
    stored = store.fetchone("SELECT count(*) FROM scores WHERE model_id = ?", [result.card["model_id"]])[0]
    assert stored == n_users
    if kind == "ensemble":
        assert set(result.card["members"]) == {"transformer", "gbdt", "logreg"}
    board = list_models(tmp / "models", dataset="syn")
    assert kind in set(board["kind"])


def test_the_presets_train_with_cls_dropout_and_the_saved_model_records_it(world):
    """Every preset hides [CLS] from the head in most training rows (see Preset.seq_dropout); the
    saved configuration carries it, and a loaded model predicts without it (eval mode)."""
    _, models, _ = world
    assert all(0 < preset.seq_dropout < 1 for preset in PRESETS.values())
    saved = models["transformer"].card["members"]["transformer"]["config"]
    assert saved["seq_dropout"] == PRESETS["fast"].seq_dropout and saved["event_stats"] == PRESETS["fast"].event_stats
    assert saved["stat_totals"] == BEHAVIOR_STRIDE          # per-behaviour totals beside the per-id counts
    model = load_model(models["transformer"].model_dir)
    assert model.transformer is not None and model.transformer.config.seq_dropout == PRESETS["fast"].seq_dropout
    assert not model.transformer.training


@pytest.mark.parametrize("kind", ["transformer", "gbdt"])
def test_saved_model_reproduces_its_validation_scores(world, kind):
    """save -> load -> the same probabilities as at training time, on the same rows."""
    store, models, _ = world
    result = models[kind]
    model = load_model(result.model_dir)
    valid = load_evaluation(result.model_dir)
    cutoff = valid["cutoff"].iloc[0]
    again = predict_at(store, model, "syn", cutoff)
    merged = valid[["user_id", "score"]].merge(again, on="user_id", suffixes=("_saved", "_loaded"))
    assert len(merged) == len(valid)
    np.testing.assert_allclose(merged["score_saved"], merged["score_loaded"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["transformer", "gbdt"])
def test_events_after_the_cutoff_do_not_move_scores(world, tmp_path, kind):
    """No leakage: append buys after T; every score at T stays exactly the same."""
    store, models, _ = world
    model = load_model(models[kind].model_dir)
    T = pd.Timestamp(store.dataset("syn")["ts_max"]) - timedelta(days=1)
    before = predict_at(store, model, "syn", T)
    users = before["user_id"].head(50).tolist()
    future = pd.DataFrame({"dataset": "syn", "user_id": users, "item_id": "future-item",
                           "category": "future-cat", "behavior": "buy",
                           "ts": [T + timedelta(minutes=5 + i) for i in range(len(users))]})
    with store.write("syn", "test: future events") as w:
        w.cur.register("future", future)
        w.add("events", "SELECT dataset, user_id, item_id, category, behavior::behavior_t, ts FROM future",
              columns=("dataset", "user_id", "item_id", "category", "behavior", "ts"))
    try:
        after = predict_at(store, model, "syn", T)
    finally:
        with store.write("syn", "test: drop future events") as w:
            w.replace("events", "SELECT * FROM events WHERE dataset = 'syn' "
                      "AND item_id IS DISTINCT FROM 'future-item'")
    pd.testing.assert_frame_equal(before, after)


def test_too_few_positives_is_refused_with_counts(tmp_path):
    rows = "\n".join(f"u{u},i{u},c1,pv,{1511500000 + 3600 * h}" for u in range(30) for h in range(60))
    (tmp_path / "nobuys.csv").write_text(rows + "\n")
    with Store(tmp_path / "db.duckdb") as store:
        ingest_file(store, tmp_path / "nobuys.csv", dataset="nobuys")
        before = store.fingerprint()
        with pytest.raises(EligibilityError) as info:
            train_model(store, "nobuys", kind="gbdt", spec=LabelSpec(horizon="6h"), out=tmp_path / "m")
        assert "0" in info.value.message and store.fingerprint() == before
    assert not (tmp_path / "m").exists()


def test_short_horizon_on_the_real_two_hour_slice(tmp_path):
    """Real-time intent: history up to 10:40 (+08:00), label = a buy by 11:10."""
    with Store(tmp_path / "db.duckdb") as store:
        ingest_file(store, ROOT / "sample_data/taobao/UserBehavior_slice_2h.csv", dataset="t2h")
        result = train_model(store, "t2h", kind="gbdt", spec=LabelSpec(horizon="30min"),
                             preset="fast", out=tmp_path / "m")
    cutoffs = result.card["cutoffs"]
    assert str(cutoffs["test_cutoff"]).startswith("2017-11-26T02:40")
    assert str(cutoffs["valid_cutoff"]).startswith("2017-11-26T02:10")
    assert result.card["rows"]["test_positives"] >= 20
    assert result.metrics["roc_auc"]["value"] > 0.6


def test_cli_train_evaluate_score(world, tmp_path):
    _, _, tmp = world
    db = tmp / "cli.duckdb"
    store_path = tmp / "events.csv"
    run = lambda *args: subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True, timeout=600)
    assert run("ingest", str(store_path), "--dataset", "syn", "--db", str(db)).returncode == 0
    out = run("train", "--dataset", "syn", "--model", "logreg", "--horizon", "1d", "--db", str(db),
              "--out", str(tmp_path / "m"), "--refit", "--compare-random-split")
    assert out.returncode == 0, out.stderr
    assert "logreg" in out.stdout and "roc_auc" in out.stdout and "test window" in out.stdout
    assert "random 80/20 split" in out.stdout and "refitted on every labelled window" in out.stdout
    report = json.loads(run("evaluate", "--model", str(tmp_path / "m"), "--json").stdout)
    assert report["split"] == "test" and 0 < report["metrics"]["roc_auc"]["value"] <= 1
    assert 0 < report["valid_metrics"]["roc_auc"]["value"] <= 1
    assert 0 < report["random_split"]["metrics"]["roc_auc"]["value"] <= 1
    assert report["ensemble_vs_members"] is None          # only an ensemble has members to beat
    text = run("evaluate", "--model", str(tmp_path / "m"), "--compare-random-split").stdout
    assert "test window (reported; nothing was selected on it)" in text and "overstatement" in text
    scored = run("score", "--model", str(tmp_path / "m"), "--dataset", "syn", "--db", str(db),
                 "--out", str(tmp_path / "s.csv"))
    assert scored.returncode == 0, scored.stderr
    frame = pd.read_csv(tmp_path / "s.csv")
    assert list(frame.columns) == ["user_id", "score"] and frame["score"].between(0, 1).all()
    bad = run("score", "--model", str(tmp_path), "--dataset", "syn", "--db", str(db))
    assert bad.returncode == 2 and "card.json" in bad.stderr
    bad = run("train", "--dataset", "syn", "--db", str(db), "--out", str(tmp_path / "t"), "--distill", "0.5,1")
    assert bad.returncode == 2 and "teacher weight (distill) must be at least 0 and below 1; got 0.5, 1" in bad.stderr
    assert not (tmp_path / "t").exists()
    bad = run("train", "--dataset", "syn", "--db", str(db), "--out", str(tmp_path / "t"), "--distill", "0.5,x")
    assert bad.returncode == 2 and "several such as 0.5,0.7; got '0.5,x'" in bad.stderr
    assert not (tmp_path / "t").exists()
    bad = run("train", "--dataset", "syn", "--db", str(db), "--out", str(tmp_path / "t"), "--aux-cart", "-1")
    assert bad.returncode == 2 and "each cart head's weight (aux_cart) must be at least 0; got -1" in bad.stderr
    assert not (tmp_path / "t").exists()


def test_default_model_directory_is_under_the_models_root(tmp_path, monkeypatch):
    from core.modeling.model_store import default_model_dir

    monkeypatch.setenv("INTENTLENS_MODELS", str(tmp_path))
    assert default_model_dir("demo", "gbdt", LabelSpec(horizon="1d")) == tmp_path / "demo-gbdt-1d"
    scoped = default_model_dir("../x y", "transformer", LabelSpec(horizon="6h", scope="category"))
    assert scoped == tmp_path / "x_y-transformer-6h-category"


def test_refit_keeps_the_evaluated_figures_and_learns_from_every_window(world, tmp_path):
    store, _, _ = world
    spec = LabelSpec(horizon="1d")
    evaluated = train_model(store, "syn", kind="gbdt", spec=spec, preset="fast", seed=0, out=tmp_path / "a")
    refitted = train_model(store, "syn", kind="gbdt", spec=spec, preset="fast", seed=0, out=tmp_path / "b",
                           refit=True)
    assert refitted.card["metrics"] == evaluated.card["metrics"]          # the evaluated fit's test figures
    rows = evaluated.card["rows"]
    assert refitted.card["refit"]["rows"] == rows["train"] + rows["valid"] + rows["test"]
    assert refitted.card["refit"]["cutoffs"][-1] == evaluated.card["cutoffs"]["test_cutoff"]
    # the refitted trees keep the evaluated fit's budget but learn from the newer windows too
    a, b = load_model(evaluated.model_dir), load_model(refitted.model_dir)
    assert b.gbdt.n_iter_ == a.gbdt.n_iter_
    T = pd.Timestamp(store.dataset("syn")["ts_max"])
    pa_, pb = predict_at(store, a, "syn", T)["score"], predict_at(store, b, "syn", T)["score"]
    assert not np.allclose(pa_.to_numpy(), pb.to_numpy())


def test_the_distilled_transformer_learns_from_an_out_of_fold_teacher(world, tmp_path):
    """Preset.distill: the Transformer's targets mix in an out-of-fold GBDT; the card records the
    teacher, the refit builds its own teacher over every window, and the saved model is the
    Transformer alone (the teacher only trains it)."""
    store, _, _ = world
    lines: list[str] = []
    result = train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d"), preset="fast",
                         epochs=2, seed=0, out=tmp_path / "m", refit=True, log=lines.append, distill=0.5)
    teacher = result.card["teacher"]
    assert teacher["kind"] == "gbdt" and teacher["folds"] == 5 and teacher["weight"] == 0.5
    assert teacher["trees"] >= 1 and result.card["train_config"]["distill"] == 0.5
    assert sum("out-of-fold GBDT teacher" in line for line in lines) == 2      # evaluated fit + refit
    assert "transformer distilled: training targets 50% the labels, 50% an out-of-fold GBDT" in result.summary()
    from core.insight.report import _card_section

    assert "an out-of-fold GBDT&#x27;s probability" in _card_section(result.card, "m")
    model = load_model(result.model_dir)
    assert model.transformer is not None and model.gbdt is None and model.feature_names == []
    assert 0.5 < result.metrics["roc_auc"]["value"] <= 1


def test_the_teacher_weight_is_a_training_setting(world, tmp_path):
    """``distill=0`` trains on the labels alone whatever the preset says; a weight outside [0, 1) is
    refused before anything is read or written."""
    store, _, _ = world
    assert PRESETS["fast"].distill > 0
    result = train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d"), preset="fast",
                         epochs=1, seed=0, out=tmp_path / "m", distill=0.0)
    assert "teacher" not in result.card and result.card["train_config"]["distill"] == 0.0
    assert "distilled" not in result.summary()
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(DataError, match="must be at least 0 and below 1") as err:
            train_model(store, "syn", kind="transformer", preset="fast", out=tmp_path / "bad", distill=bad)
        assert "0 trains on the labels alone" in (err.value.hint or "")
        assert not (tmp_path / "bad").exists()
    for bad_list in ([], [0.5, 1.0]):
        with pytest.raises(DataError, match="must be at least 0 and below 1") as err:
            train_model(store, "syn", kind="transformer", preset="fast", out=tmp_path / "bad", distill=bad_list)
        assert "0 trains on the labels alone" in (err.value.hint or "")
        assert not (tmp_path / "bad").exists()


def test_a_cart_head_trains_beside_the_buy_head_and_leaves_the_saved_model_alone(world, tmp_path):
    """``aux_cart``: the Transformer's training rows get the "carts within the horizon" label and a
    second head learns it; the card, the summary and the report say so, and the saved model and its
    evaluation rows are what a plain fit saves. With several weights, the validation window chooses
    (and the refit trains at the kept one). A bad weight, or a dataset without carts, is refused with
    what to do, and nothing is written."""
    store, _, tmp = world
    lines: list[str] = []
    result = train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d"), preset="fast",
                         epochs=1, seed=0, out=tmp_path / "m", log=lines.append, distill=0.0, aux_cart=0.5,
                         refit=True)
    assert result.card["train_config"]["aux_cart"] == 0.5 and result.card["refit"]["rows"] > 0
    heads = [line for line in lines if "cart head beside the buy head" in line]
    assert len(heads) == 1 and "training rows cart within the horizon" in heads[0]
    assert 'a second head learnt "carts within the horizon" beside the buy head (loss weight 0.5)' \
        in result.summary()
    from core.insight.report import _card_section

    assert "a second head learnt &quot;carts within the horizon&quot; beside the buy head" in \
        _card_section(result.card, "m")
    plain = train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d"), preset="fast",
                        epochs=1, seed=0, out=tmp_path / "plain", distill=0.0)
    assert "multi-task" not in plain.summary() and "cart_weights" not in plain.card
    # several weights: after the teacher weight, one fit per cart-head weight; the validation window chooses
    lines.clear()
    chosen = train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d"), preset="fast",
                         epochs=1, seed=0, out=tmp_path / "chosen", log=lines.append, distill=0.0,
                         aux_cart=[0.0, 0.5], refit=True)
    scores, kept = chosen.card["cart_weights"], chosen.card["train_config"]["aux_cart"]
    assert list(scores) == ["0", "0.5"] and scores[f"{kept:g}"] == max(scores.values())
    assert scores["0"] == pytest.approx(plain.card["history"][0]["valid_pr_auc"])    # the same fit as plain's
    assert scores["0.5"] == pytest.approx(result.card["history"][0]["valid_pr_auc"])
    assert any(line.startswith("transformer at the cart-head weight 0.5: valid PR-AUC") for line in lines)
    assert f"cart-head weight {kept:g} kept of 0 (validation PR-AUC {scores['0']:.4f}), 0.5" in chosen.summary()
    assert list(load_evaluation(result.model_dir).columns) == list(load_evaluation(plain.model_dir).columns)
    model = load_model(result.model_dir)
    assert model.transformer.state_dict().keys() == load_model(plain.model_dir).transformer.state_dict().keys()
    for bad in (-0.5, float("nan"), [], [0.0, -1.0]):
        with pytest.raises(DataError, match="must be at least 0") as err:
            train_model(store, "syn", kind="transformer", preset="fast", out=tmp_path / "bad", aux_cart=bad)
        assert "0 trains on the buy label alone" in (err.value.hint or "")
        assert not (tmp_path / "bad").exists()
    events = pd.read_csv(tmp / "events.csv", header=None)
    no_carts = tmp_path / "no_carts.csv"
    events[events[3] != "cart"].to_csv(no_carts, header=False, index=False)
    with Store(tmp_path / "nocart.duckdb") as other:
        ingest_file(other, no_carts, dataset="nocart")
        before = other.fetchone("SELECT count(*) FROM events")
        with pytest.raises(DataError, match="the cart head needs training rows that cart") as err:
            train_model(other, "nocart", kind="transformer", spec=LabelSpec(horizon="1d"), preset="fast",
                        epochs=1, out=tmp_path / "bad", aux_cart=0.5, distill=0.0)
        assert "--aux-cart 0" in (err.value.hint or "")
        assert not (tmp_path / "bad").exists() and other.fetchone("SELECT count(*) FROM events") == before


def test_several_teacher_weights_are_each_fitted_and_the_validation_window_chooses(world, tmp_path):
    """``distill=[0.5, 0.0, 0.9]``: one Transformer fit per weight (one teacher for all); the card
    records each weight's validation PR-AUC, the kept weight is the best one's, the kept model is the
    one a fit at that weight alone trains, and the refit trains at it too."""
    store, _, _ = world
    spec = LabelSpec(horizon="1d")
    lines: list[str] = []
    result = train_model(store, "syn", kind="transformer", spec=spec, preset="fast", epochs=2, seed=0,
                         out=tmp_path / "m", log=lines.append, distill=[0.5, 0.0, 0.9], refit=True)
    choices = result.card["teacher_weights"]
    assert list(choices) == ["0.5", "0", "0.9"]
    kept = result.card["train_config"]["distill"]
    assert choices[f"{kept:g}"] == max(choices.values())
    assert len(set(choices.values())) > 1                    # the weights trained different models
    assert sum("out-of-fold GBDT teacher" in line for line in lines) == 1 + (kept > 0)   # fit + refit's
    assert (result.card.get("teacher", {}).get("weight") == kept) if kept else ("teacher" not in result.card)
    assert f"teacher weight {kept:g} kept of 0.5 (validation PR-AUC" in result.summary()
    alone = train_model(store, "syn", kind="transformer", spec=spec, preset="fast", epochs=2, seed=0,
                        out=tmp_path / "alone", distill=kept)
    assert alone.card["metrics"] == result.card["metrics"]
    assert "teacher_weights" not in alone.card
    assert not (tmp_path / "m.checkpoint").exists()         # every weight's checkpoint folder is gone


def test_no_row_s_teacher_has_seen_its_own_label(world):
    """Out of fold by user: flipping every label of one user leaves that user's teacher
    probabilities exactly as they were (its fold's tree never saw them)."""
    from core.modeling.pipeline import _teacher, prepare_inputs

    store, _, _ = world
    inputs = prepare_inputs(store, "syn", LabelSpec(horizon="1d"), sequences=False, features=True)
    rows = inputs.split_index("train")
    before, _ = _teacher(inputs, PRESETS["fast"], rows, seed=0, log=None)
    users = inputs.examples["user_id"].to_numpy()[rows]
    buyer = users[inputs.labels("train") == 1][0]
    flipped = inputs.examples.copy()
    mine = flipped["user_id"].eq(buyer) & flipped["split"].eq("train")
    flipped.loc[mine, "label"] = 1 - flipped.loc[mine, "label"]
    after, _ = _teacher(replace(inputs, examples=flipped), PRESETS["fast"], rows, seed=0, log=None)
    np.testing.assert_array_equal(before[users == buyer], after[users == buyer])
    assert not np.array_equal(before, after)           # the other folds' trees did see the flip
    # one buyer left: the fold holding that user learns from no buyer and teaches the base rate, 0
    alone = inputs.examples.copy()
    alone.loc[alone["split"].eq("train"), "label"] = (alone["user_id"].eq(buyer) & mine).astype(int)
    lonely, _ = _teacher(replace(inputs, examples=alone), PRESETS["fast"], rows, seed=0, log=None)
    assert (lonely[users == buyer] == 0).all() and np.isfinite(lonely).all() and lonely.max() > 0


def test_a_denser_teacher_learns_from_more_cutoffs_of_the_same_users_and_stays_out_of_fold(world):
    """Preset.teacher_density: the teacher's extra cutoffs lie over the training span, every
    window still ends by the validation cutoff, the rows are the training users' only, and a user's
    teacher probabilities still ignore every label of that user (own rows and extra rows)."""
    from core.modeling.labels import CutoffPlan
    from core.modeling.pipeline import _teacher, _teacher_rows, prepare_inputs, teacher_cutoffs

    day = timedelta(days=1)
    t0 = pd.Timestamp("2024-01-01").to_pydatetime()
    plan = CutoffPlan(train_cutoffs=[t0, t0 + day, t0 + 2 * day], valid_cutoff=t0 + 3 * day,
                      score_cutoff=t0 + 5 * day, test_cutoff=t0 + 4 * day)
    spec = LabelSpec(horizon="1d")
    six = timedelta(hours=6)
    extra = teacher_cutoffs(plan, spec, 4, first_event=t0 - 2 * day)
    # 6-hourly over the training span and one step before it, the own cutoffs left out
    assert extra == [t0 + k * six for k in range(-3, 9) if k % 4]
    assert max(extra) + day <= plan.valid_cutoff
    # a short log: at least one new step of history after the first event
    assert teacher_cutoffs(plan, spec, 4, first_event=t0 - 2 * six)[0] == t0 - six
    assert teacher_cutoffs(plan, spec, 1, first_event=t0 - 2 * day) == []

    store, _, _ = world
    inputs = prepare_inputs(store, "syn", spec, sequences=False, features=True, label_share=0.5, seed=1)
    inputs.teacher_rows = _teacher_rows(store, "syn", spec, inputs, 4, max_rows=10_000, seed=0, log=None)
    assert inputs.teacher_rows is not None
    rows_extra, features_extra = inputs.teacher_rows
    assert len(rows_extra) == len(features_extra) > len(inputs.split_index("train"))
    assert list(features_extra.columns) == list(inputs.features.columns)
    trained = set(inputs.examples.loc[inputs.examples["split"] == "train", "user_id"])
    assert set(rows_extra["user_id"]) <= trained                          # the labelled users only
    assert not set(rows_extra["cutoff"]) & set(inputs.plan.train_cutoffs)
    assert (rows_extra["cutoff"] + day <= pd.Timestamp(inputs.plan.valid_cutoff)).all()
    rows = inputs.split_index("train")
    before, record = _teacher(inputs, PRESETS["fast"], rows, seed=0, log=None)
    assert record["rows"] == len(rows) + len(rows_extra) and len(before) == len(rows)
    users = inputs.examples["user_id"].to_numpy()[rows]
    buyer = users[inputs.labels("train") == 1][0]
    flipped = inputs.examples.copy()
    mine = flipped["user_id"].eq(buyer) & flipped["split"].eq("train")
    flipped.loc[mine, "label"] = 1 - flipped.loc[mine, "label"]
    extra_flipped = rows_extra.copy()
    theirs = extra_flipped["user_id"].eq(buyer)
    assert theirs.any()
    extra_flipped.loc[theirs, "label"] = 1 - extra_flipped.loc[theirs, "label"]
    after, _ = _teacher(replace(inputs, examples=flipped, teacher_rows=(extra_flipped, features_extra)),
                        PRESETS["fast"], rows, seed=0, log=None)
    np.testing.assert_array_equal(before[users == buyer], after[users == buyer])
    assert not np.array_equal(before, after)


def test_train_model_hands_the_denser_rows_to_the_teacher_only(world, tmp_path, monkeypatch):
    """With the preset's teacher_density > 1 the card's teacher counts the extra rows, the log says
    so, and the Transformer's own training rows are the same as without."""
    store, _, _ = world
    monkeypatch.setitem(PRESETS, "fast", replace(PRESETS["fast"], teacher_density=4))
    lines: list[str] = []
    result = train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d"), preset="fast",
                         epochs=1, seed=0, out=tmp_path / "m", log=lines.append, distill=0.5)
    assert any("the teacher also learns from" in line for line in lines)
    assert result.card["teacher"]["rows"] > result.card["rows"]["train"]
    assert f"{result.card['teacher']['rows']:,} rows" in result.summary()


def test_caps_sample_each_window_and_keep_the_others_whole():
    from core.modeling.pipeline import _cap_rows

    examples = pd.DataFrame({"split": ["train"] * 50 + ["valid"] * 30 + ["test"] * 20, "row": range(100)})
    capped = _cap_rows(examples, {"train": 10, "valid": 8, "test": 25}, seed=3)
    assert capped["split"].value_counts().to_dict() == {"train": 10, "valid": 8, "test": 20}
    assert capped["row"].is_monotonic_increasing and capped["row"].is_unique     # time order kept
    assert set(capped.loc[capped["split"] == "test", "row"]) == set(range(80, 100))
    again = _cap_rows(examples, {"train": 10, "valid": 8, "test": 25}, seed=3)
    pd.testing.assert_frame_equal(capped, again)                                 # seeded
    assert _cap_rows(examples, {"valid": 30}, seed=0) is examples                # nothing to cut


def test_each_row_s_top_category_is_its_most_frequent_with_ties_to_the_first_name(tmp_path):
    """The evaluation rows' segments: events up to each row's cutoff and the category with most of
    them; a tie goes to the name that sorts first, so retraining writes the same rows (mode() picked any)."""
    from core.modeling.pipeline import _segments

    events = ["1,10,300,pv,1511740800", "1,11,200,pv,1511740860", "1,12,300,pv,1511740920",
              "1,13,200,pv,1511740980",                                    # 300 and 200 tied at 2
              "1,14,500,pv,1511830800", "1,15,500,pv,1511830860", "1,16,500,pv,1511830920",
              "2,20,700,pv,1511740800"]
    (tmp_path / "log.csv").write_text("\n".join(events) + "\n")
    with Store(tmp_path / "db.duckdb") as store:
        ingest_file(store, tmp_path / "log.csv", dataset="ties")
        rows = pd.DataFrame({"user_id": ["1", "1", "2", "3"],
                             "cutoff": pd.to_datetime(["2017-11-27 00:10", "2017-11-28 02:00",
                                                       "2017-11-27 00:10", "2017-11-27 00:10"]),
                             "label": [0, 1, 0, 0]})
        segments = [_segments(store, "ties", rows) for _ in range(3)]
    for other in segments[1:]:
        pd.testing.assert_frame_equal(segments[0], other)
    first = segments[0]
    assert first["n_events"].tolist() == [4, 7, 1, 0]
    assert first["top_category"].tolist()[:3] == ["200", "500", "700"]   # tie -> "200" < "300"
    assert pd.isna(first["top_category"].iloc[3])                       # no events: no category
