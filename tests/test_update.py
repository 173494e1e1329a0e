"""Keeping a model current: append a second week to a dataset, warm-start, compare on the newest test
window, promote or set aside, re-score, and the lineage on the card and in the Models timeline.

One seeded synthetic log of 8 days is cut by time into "week 1" (5 days) and a "second week" (3 days);
40 rows of week 1's end are planted again at the head of the second file, so the truth of an update
is known: events after = week 1 + second week - 40. A small fast-preset GBDT (and once a Transformer,
one epoch) trained on week 1 is the current model; each test works on a copy of the database and of
the models folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from core import charts
from core.cli import main
from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import ConflictError, DataError, ModelError, NotFoundError
from core.insight.cohorts import predict_at
from core.modeling.labels import LabelSpec, plan_cutoffs
from core.modeling.model_store import list_models
from core.modeling.pipeline import load_evaluation, train_model
from core.modeling.synth import SynthConfig, generate
from core.modeling.update import REJECTED_DIR, PromotionRule, current_model, model_timeline, next_model_name
from core.runtime.update import parent_settings, update_dataset
from models.artifact import load_card, load_model
from models.transformer import IntentTransformer
from tests.event_rows import copy_store

PLANTED = 40                   # rows of week 1 sent again in the second file
SPEC = LabelSpec(horizon="1d")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(folder, week-1 frame, second-week frame): the two files, a database holding week 1 as
    dataset 'shop', and models/shop-gbdt trained on it."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("update")
    generate(SynthConfig(users=500, days=8, seed=5, n_items=2000, n_categories=40), tmp / "all.csv")
    log = pd.read_csv(tmp / "all.csv", header=None, names=["user", "item", "category", "behavior", "ts"])
    cut = log["ts"].min() + 5 * 86400
    week1 = log[log["ts"] < cut]
    week2 = pd.concat([week1.tail(PLANTED), log[log["ts"] >= cut]])
    week1.to_csv(tmp / "week1.csv", header=False, index=False)
    week2.to_csv(tmp / "week2.csv", header=False, index=False)
    with Store(tmp / "db.duckdb") as store:
        ingest_file(store, tmp / "week1.csv", dataset="shop")
        train_model(store, "shop", kind="gbdt", spec=SPEC, preset="fast", out=tmp / "models" / "shop-gbdt")
    return tmp, week1, week2


@pytest.fixture
def env(world, tmp_path, monkeypatch):
    """(store on a private copy of the database, private models folder, the world)."""
    tmp = world[0]
    copy_store(tmp / "db.duckdb", tmp_path / "db.duckdb")
    shutil.copytree(tmp / "models", tmp_path / "models")
    monkeypatch.setenv("INTENTLENS_MODELS", str(tmp_path / "models"))
    store = Store(tmp_path / "db.duckdb")
    yield store, tmp_path / "models", world
    store.close()


def events(store: Store) -> int:
    return store.fetchone("SELECT count(*) FROM events WHERE dataset = 'shop'")[0]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_update_keeps_every_event_and_promotes_a_no_worse_model(env):
    store, models, (tmp, week1, week2) = env
    before = events(store)
    expected = len(pd.concat([week1, week2]).drop_duplicates())
    assert before == len(week1) and expected == len(week1) + len(week2) - PLANTED   # no other duplicates

    result = update_dataset(store, "shop", tmp / "week2.csv", models_root=models)

    assert events(store) == expected == result.events_after
    assert result.ingest.rows_stored == len(week2) - PLANTED
    assert result.ingest.duplicates_dropped == result.ingest.duplicates_across == PLANTED
    info = store.dataset("shop")
    assert info["rows_stored"] == expected and info["duplicates_dropped"] == PLANTED
    assert pd.Timestamp(info["ts_max"]) == pd.to_datetime(week2["ts"].max(), unit="s")
    assert pd.Timestamp(info["ts_min"]) == pd.to_datetime(week1["ts"].min(), unit="s")
    assert info["n_users"] == pd.concat([week1, week2])["user"].nunique()
    assert [a["file"] for a in json.loads(info["options"])["appends"]] == ["week2.csv"]

    # both models on exactly the same rows of the newest window, recomputed here another way
    plan = plan_cutoffs(store, "shop", SPEC)
    assert result.comparison.test_cutoff == plan.test_cutoff.isoformat()
    parent, candidate = load_model(models / "shop-gbdt"), load_model(result.candidate)
    rows = load_evaluation(result.candidate, "test")                   # scored when it was trained
    old = predict_at(store, parent, "shop", plan.test_cutoff).rename(columns={"score": "old"})
    rows = rows.merge(old, on="user_id", how="left")
    assert len(rows) == result.comparison.rows and rows["old"].notna().all()
    y = rows["label"].to_numpy()
    new_auc, old_auc = roc_auc_score(y, rows["score"]), roc_auc_score(y, rows["old"])
    assert result.comparison.candidate["roc_auc"]["value"] == pytest.approx(new_auc)
    assert result.comparison.current["roc_auc"]["value"] == pytest.approx(old_auc)
    assert result.comparison.current["pr_auc"]["value"] == pytest.approx(average_precision_score(y, rows["old"]))
    assert result.promoted and new_auc >= old_auc                # the second week improves (or keeps) it

    # promoted: a new folder in the models root, newest, serving and scoring the updated dataset
    assert result.candidate == models / "shop-gbdt-v2" == result.serving == current_model("shop", models)
    card = load_card(result.candidate)
    assert card["kind"] == "gbdt" and card["preset"] == "fast" and card["label"] == parent.card["label"]
    assert candidate.gbdt.n_iter_ > parent.gbdt.n_iter_                # trees added to the parent's
    X = np.random.default_rng(0).random((50, len(parent.feature_names))) * 10
    np.testing.assert_allclose(                                       # ... which are kept as they were
        candidate.gbdt.booster_.predict(X, raw_score=True, num_iteration=parent.gbdt.n_iter_),
        parent.gbdt.booster_.predict(X, raw_score=True))
    scored = store.fetchone("SELECT count(*), max(cutoff) FROM scores WHERE model_id = ?", [card["model_id"]])
    assert scored[0] == result.scored_rows > 0 and pd.Timestamp(scored[1]) == pd.Timestamp(info["ts_max"])

    lineage = card["lineage"]
    assert lineage["parent_id"] == parent.card["model_id"] and lineage["parent_path"] == str(models / "shop-gbdt")
    data = lineage["data"]
    assert (data["events_before"], data["events_added"], data["events_after"]) == (before, expected - before, expected)
    assert data["duplicates_dropped"] == PLANTED and data["file"] == "week2.csv"
    assert pd.Timestamp(data["ts_max"]) == pd.Timestamp(info["ts_max"])
    assert pd.Timestamp(data["ts_min"]) == pd.Timestamp(info["ts_min"])
    assert lineage["metrics"]["candidate"]["roc_auc"]["value"] == pytest.approx(new_auc)
    assert lineage["metrics"]["current"]["roc_auc"]["value"] == pytest.approx(old_auc)
    assert lineage["window"]["rows"] == len(rows) and lineage["window"]["positives"] == int(y.sum())
    assert lineage["promoted"] is True and lineage["reason"].startswith("promoted")
    assert "ROC-AUC >=" in lineage["rule"]

    # the timeline: parent trained from scratch, child promoted, oldest first
    line = model_timeline("shop", models)
    assert line["model_id"].tolist() == [parent.card["model_id"], card["model_id"]]
    assert line["status"].tolist() == ["trained", "promoted"]
    assert line["parent_id"].iloc[1] == parent.card["model_id"] and line["parent_id"].iloc[0] is None
    assert line["events_added"].iloc[1] == expected - before

    # the same file again: every row is a stored event now, nothing is appended twice
    again = ingest_file(store, tmp / "week2.csv", dataset="shop", append=True)
    assert again.rows_stored == 0 and again.duplicates_across == len(week2)
    assert events(store) == expected


def test_rejected_candidate_is_set_aside_and_the_current_model_keeps_serving(env):
    store, models, (tmp, _, _) = env
    never = PromotionRule(roc_auc_tolerance=-1.0)          # asks for ROC-AUC 1 above the current: impossible
    result = update_dataset(store, "shop", tmp / "week2.csv", models_root=models, rule=never)
    assert not result.promoted and result.comparison.reason.startswith("not promoted: the candidate's ROC-AUC")
    assert result.candidate == models / REJECTED_DIR / "shop-gbdt-v2"
    assert result.serving == models / "shop-gbdt" == current_model("shop", models)
    assert list(list_models(models, "shop")["path"]) == [str(models / "shop-gbdt")]   # never listed to serve
    parent_id = load_card(models / "shop-gbdt")["model_id"]
    cutoff = store.fetchone("SELECT max(cutoff) FROM scores WHERE model_id = ?", [parent_id])[0]
    assert pd.Timestamp(cutoff) == pd.Timestamp(store.dataset("shop")["ts_max"])    # re-scored on the new events
    assert load_card(result.candidate)["lineage"]["promoted"] is False
    assert model_timeline("shop", models)["status"].tolist() == ["trained", "rejected"]
    assert next_model_name(models / "shop-gbdt", models) == "shop-gbdt-v3"           # v2 is taken aside
    assert not [p for p in models.iterdir() if p.name.startswith(".")]               # no staging left


def test_a_failing_file_changes_neither_the_dataset_nor_the_models(env, tmp_path):
    store, models, (tmp, _, week2) = env
    before, files = store.fingerprint(), listing(models)
    bad = tmp_path / "bad.csv"
    week2.drop(columns="category").to_csv(bad, header=False, index=False)   # a column missing
    with pytest.raises(DataError) as err:
        update_dataset(store, "shop", bad, models_root=models)
    assert "taobao" in str(err.value).lower() and "column" in str(err.value).lower()
    junk = tmp_path / "junk.csv"
    week2.assign(behavior="teleport").to_csv(junk, header=False, index=False)  # no valid row
    with pytest.raises(DataError, match="none of the"):
        update_dataset(store, "shop", junk, models_root=models)
    with pytest.raises(NotFoundError):
        update_dataset(store, "nope", tmp / "week2.csv", models_root=models)
    with pytest.raises(ModelError):                                 # not a model directory
        update_dataset(store, "shop", tmp / "week2.csv", model=tmp_path, models_root=models)
    with pytest.raises(DataError, match="exclude each other"):
        ingest_file(store, tmp / "week2.csv", dataset="shop", append=True, replace=True)
    assert store.fingerprint() == before and listing(models) == files


def test_transformer_warm_start_continues_from_the_parent(env):
    store, models, (tmp, _, _) = env
    spec = LabelSpec(horizon="1d", max_len=20)
    # settings the fast preset would not pick (it trains at teacher weight 0.5 without a cart head), as if
    # the parent's validation window had chosen them
    train_model(store, "shop", kind="transformer", spec=spec, preset="fast", epochs=1, threads=1, seed=1,
                out=models / "shop-transformer", distill=0.7, aux_cart=0.5)
    parent = load_model(models / "shop-transformer")
    result = update_dataset(store, "shop", tmp / "week2.csv", model=models / "shop-transformer",
                            models_root=models, epochs=1, threads=1)
    candidate = load_model(result.candidate)
    assert candidate.vocab.to_dict() == parent.vocab.to_dict()           # the same vocabulary and sizes
    assert candidate.transformer.config == parent.transformer.config
    assert candidate.card["warm_start"]["parent_id"] == parent.card["model_id"]
    assert candidate.card["lineage"]["parent_id"] == parent.card["model_id"]
    # fitted once, with the parent's teacher weight and cart head rather than the preset's
    assert (candidate.card["train_config"]["distill"], candidate.card["train_config"]["aux_cart"]) == (0.7, 0.5)
    assert candidate.card["teacher"]["weight"] == 0.7
    assert not candidate.card.get("teacher_weights") and not candidate.card.get("cart_weights")
    # the parent was trained with seed 1, the candidate with seed 0: one epoch from the parent's weights
    # stays near them, while seed 0's own initialisation (where a fresh fit would start) is far away
    torch.manual_seed(0)
    fresh = IntentTransformer(parent.transformer.config).state_dict()
    blocks = [k for k in parent.transformer.state_dict() if k.startswith("blocks.") and k.endswith("weight")]
    moved = np.median([float((candidate.transformer.state_dict()[k] - parent.transformer.state_dict()[k]).abs().max())
                       for k in blocks])
    far = np.median([float((fresh[k] - parent.transformer.state_dict()[k]).abs().max()) for k in blocks])
    assert moved < 0.25 * far
    c = result.comparison
    assert (c.promoted and c.candidate["roc_auc"]["value"] >= c.current["roc_auc"]["value"]) or \
        (not c.promoted and result.serving == models / "shop-transformer")
    with pytest.raises(ModelError, match="gbdt model"):                # a parent of another kind
        train_model(store, "shop", kind="transformer", spec=SPEC, preset="fast", parent=models / "shop-gbdt",
                    out=models / "x")


def test_a_warm_start_keeps_the_settings_its_parent_s_validation_window_chose():
    chosen = {"kind": "ensemble", "train_config": {"distill": 0.7, "aux_cart": 0.5, "lr": 0.001}}
    assert parent_settings(chosen) == {"distill": 0.7, "aux_cart": 0.5}
    # a card from before the cart head trained without one; before distillation, without a teacher
    assert parent_settings({"kind": "transformer", "train_config": {"distill": 0.5}}) == {"distill": 0.5,
                                                                                         "aux_cart": 0.0}
    assert parent_settings({"kind": "transformer", "train_config": {}}) == {"distill": 0.0, "aux_cart": 0.0}
    # no Transformer, or no record of how it was trained: the preset decides
    assert parent_settings({"kind": "gbdt", "train_config": {"distill": 0.7}}) == {}
    assert parent_settings({"kind": "transformer"}) == {}


def test_cli_exit_codes(env, capsys):
    store, _, (tmp, _, _) = env
    db = str(store.path)
    store.close()                                   # the CLI opens the file itself
    assert main(["update", "--db", db, "--dataset", "shop", "--file", str(tmp / "nope.csv")]) == 2
    assert "nope.csv" in capsys.readouterr().err
    assert main(["update", "--db", db, "--dataset", "other", "--file", str(tmp / "week2.csv")]) == 2
    assert "no dataset called 'other'" in capsys.readouterr().err
    assert main(["update", "--db", db, "--dataset", "shop", "--file", str(tmp / "week2.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ingest"]["duplicates_across"] == PLANTED and report["candidate"].endswith("shop-gbdt-v2")
    assert report["promoted"] == (report["serving"] == report["candidate"])
    with pytest.raises(SystemExit) as exit_:
        main(["update", "--dataset", "shop"])       # --file missing: argparse's usage error
    assert exit_.value.code == 2


def test_append_refuses_a_dataset_that_does_not_exist(store, world):
    tmp, _, _ = world
    with pytest.raises(NotFoundError):
        ingest_file(store, tmp / "week2.csv", dataset="shop", append=True)
    ingest_file(store, tmp / "week1.csv", dataset="shop")
    with pytest.raises(ConflictError):
        ingest_file(store, tmp / "week1.csv", dataset="shop")


def test_models_timeline_figure():
    frame = pd.DataFrame({
        "model_id": ["a", "b", "c", "d"],
        "trained_at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
        "roc_auc": [0.80, 0.82, 0.79, 0.83], "pr_auc": [0.4, 0.45, 0.38, 0.5],
        "parent_id": [None, "a", "b", "b"], "status": ["trained", "promoted", "rejected", "promoted"],
        "reason": [None, "promoted: ...", "not promoted: ...", "promoted: ..."]})
    fig = charts.models_timeline(frame)
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {charts.LINEAGE_NAME, *(charts.STATUS_STYLES[s]["label"] for s in
                                                  ("trained", "promoted", "rejected"))}
    promoted = traces[charts.STATUS_STYLES["promoted"]["label"]]
    assert list(promoted.y) == [0.82, 0.83] and [c[0] for c in promoted.customdata] == ["b", "d"]
    assert traces[charts.STATUS_STYLES["rejected"]["label"]].marker.symbol == "x"
    line = traces[charts.LINEAGE_NAME]
    assert list(line.y) == [0.80, 0.82, None, 0.82, 0.79, None, 0.82, 0.83, None]   # a->b, b->c, b->d
    assert len(fig.layout.annotations) == 3 and {a.ay for a in fig.layout.annotations} == {0.80, 0.82}
    assert list(charts.models_timeline(frame, metric="pr_auc").data[1].y) == [0.4]
    empty = charts.models_timeline(frame.iloc[:0])
    assert charts.is_empty_figure(empty)
    with pytest.raises(ValueError, match="status"):
        charts.models_timeline(frame.drop(columns="status"))


def test_append_matches_missing_ids_and_reads_as_the_dataset_was_read(store, tmp_path):
    """A search row has no item or category: it is still recognised as stored; the generic column map
    recorded at the first ingest reads the appended file."""
    from core.runtime.update import reading_options

    head = "user_id,item_id,category,behavior,ts\n"
    (tmp_path / "a.csv").write_text(head + "u1,i1,c1,view,2024-01-01 10:00:00\nu1,,,search,2024-01-01 10:01:00\n"
                                    "u2,i2,c1,buy,2024-01-01 11:00:00\n")
    (tmp_path / "b.csv").write_text(head + "u1,,,search,2024-01-01 10:01:00\nu2,i2,c1,buy,2024-01-01 11:00:00\n"
                                    "u2,i2,c1,buy,2024-01-02 11:00:00\nu3,i3,,view,2024-01-03 09:00:00\n")
    fields = {f: f for f in ("user_id", "item_id", "category", "behavior", "ts")}
    ingest_file(store, tmp_path / "a.csv", dataset="d", layout="generic", column_map=fields)
    options = reading_options(store.dataset("d"))
    assert options["layout"] == "generic" and options["column_map"] == fields
    report = ingest_file(store, tmp_path / "b.csv", dataset="d", append=True, **options)
    assert (report.rows_stored, report.duplicates_across) == (2, 2)
    assert store.fetchone("SELECT count(*), count(*) FILTER (WHERE item_id IS NULL) FROM events")[0:2] == (5, 1)
    info = store.dataset("d")
    assert (info["rows_stored"], info["n_users"], info["duplicates_dropped"]) == (5, 3, 2)
    assert pd.Timestamp(info["ts_max"]) == pd.Timestamp("2024-01-03 09:00:00")
