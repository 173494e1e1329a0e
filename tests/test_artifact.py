"""Model directories: save -> load -> identical predictions; every refusal has its message."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.data.schema import SCHEMA_VERSION
from core.errors import ModelError
from core.modeling.labels import LabelSpec
from core.modeling.sequences import Vocab
from core.modeling.training import predict_transformer
from models.artifact import CARD_FILE, FORMAT, MAX_CARD_BYTES, WEIGHTS_FILE, load_card, load_model, save_model
from models.baselines import EnsembleModel, GBDTBaseline, LogisticBaseline
from models.transformer import IntentTransformer, TransformerConfig
from tests.test_baselines import planted_features
from tests.test_transformer import planted_batch

torch.set_num_threads(1)

SPEC = LabelSpec(horizon="6h", max_len=20)


def _vocab() -> Vocab:
    # sizes that match tests.test_transformer's planted batches (50 items, 12 categories, ...)
    return Vocab(items={f"i{k}": k + 2 for k in range(8)}, categories={f"c{k}": k + 2 for k in range(10)},
                 item_buckets=40, category_buckets=0, query_buckets=32, gap_buckets=16)


def _card(**extra) -> dict:
    return {"dataset": "tiny", "dataset_sha256": "ab" * 32, "label": SPEC.to_dict(),
            "cutoffs": {"train": ["2017-11-26T00:00:00"], "valid": "2017-11-27T00:00:00"},
            "metrics": {"roc_auc": {"value": 0.9, "low": 0.8, "high": 0.95}},
            "history": [{"epoch": 1, "train_loss": 0.5}], **extra}


@pytest.fixture(scope="module")
def parts():
    vocab = _vocab()
    torch.manual_seed(0)
    transformer = IntentTransformer(TransformerConfig.from_vocab(
        vocab, 20, d_model=16, n_heads=2, n_layers=1, d_ff=32)).eval()
    seq = planted_batch(300, L=20, seed=3)
    (X, y, _), (Xv, yv, _) = planted_features(1200, 0), planted_features(300, 1)
    logreg = LogisticBaseline().fit(X, y)
    gbdt = GBDTBaseline(n_estimators=30).fit(X, y, Xv, yv)
    return {"vocab": vocab, "transformer": transformer, "seq": seq, "feats": Xv, "y": yv,
            "logreg": logreg, "gbdt": gbdt}


def _save(parts, tmp_path, kind="transformer", name="m", **kw):
    args = {"transformer": parts["transformer"], "vocab": parts["vocab"]} if kind == "transformer" \
        else {kind: parts[kind]}
    args.update(kw)
    return save_model(tmp_path / name, kind=kind, card=_card(), **args)


@pytest.mark.parametrize("kind", ["transformer", "logreg", "gbdt"])
def test_save_load_identical_predictions(parts, tmp_path, kind):
    path = _save(parts, tmp_path, kind)
    loaded = load_model(path)
    assert loaded.kind == kind and loaded.spec == SPEC
    if kind == "transformer":
        want = predict_transformer(parts["transformer"], parts["seq"])
        got = loaded.predict(parts["seq"], None)
        assert loaded.vocab == parts["vocab"] and loaded.feature_names == []
        assert isinstance(loaded.transformer, IntentTransformer) and not loaded.transformer.training
        # the weights are a plain state_dict that loads without executing code
        state = torch.load(path / WEIGHTS_FILE, weights_only=True)
        assert set(state) == set(parts["transformer"].state_dict())
    else:
        want = parts[kind].predict_proba(parts["feats"])
        got = loaded.predict(None, parts["feats"])
        assert loaded.vocab is None and loaded.feature_names == list(parts["feats"].columns)
    np.testing.assert_array_equal(got, want)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m"]
    assert leftovers == []                                   # no temp directories left behind


def test_card_contents(parts, tmp_path):
    card = load_card(_save(parts, tmp_path))
    assert card["format"] == FORMAT and card["schema_version"] == SCHEMA_VERSION
    assert card["kind"] == "transformer" and card["model_id"].startswith("m-")
    assert card["config"]["transformer"] == parts["transformer"].config.to_dict()
    assert card["vocab_file"] == "vocab.json" and card["label"] == SPEC.to_dict()
    assert {"torch", "scikit-learn", "lightgbm", "duckdb", "python"} <= set(card["libraries"])
    for key in ("dataset", "dataset_sha256", "cutoffs", "metrics", "history", "created_at"):
        assert key in card
    assert set(card["files"]) == {"card.json", "weights.pt", "vocab.json"}


def test_ensemble_round_trip_and_zero_weight_member(parts, tmp_path):
    seq = parts["seq"]
    feats = parts["feats"].iloc[:len(seq)].reset_index(drop=True)
    y = parts["y"][:len(seq)]
    members = {"transformer": predict_transformer(parts["transformer"], seq),
               "logreg": parts["logreg"].predict_proba(feats),
               "gbdt": parts["gbdt"].predict_proba(feats)}
    ens = EnsembleModel(step=0.25).fit(members, y)
    path = save_model(tmp_path / "ens", kind="ensemble", card=_card(), ensemble=ens, vocab=parts["vocab"],
                      transformer=parts["transformer"], logreg=parts["logreg"], gbdt=parts["gbdt"])
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict(seq, feats), ens.predict_proba(members), atol=1e-12)
    assert loaded.card["ensemble"]["weights"] == ens.weights_
    # weights given as a dict; a member with weight 0 needs no input
    path = save_model(tmp_path / "ens2", kind="ensemble", card=_card(), vocab=parts["vocab"],
                      weights={"transformer": 0.0, "logreg": 0.5, "gbdt": 0.5},
                      transformer=parts["transformer"], logreg=parts["logreg"], gbdt=parts["gbdt"])
    loaded = load_model(path)
    assert not loaded.needs_sequences and loaded.needs_features
    np.testing.assert_allclose(loaded.predict(None, feats),
                               0.5 * members["logreg"] + 0.5 * members["gbdt"], atol=1e-12)


def test_refuses_non_models(tmp_path):
    with pytest.raises(ModelError, match="not a directory"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelError, match=r"no card.json"):
        load_model(tmp_path)
    (tmp_path / CARD_FILE).write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_card(tmp_path)


def _edit_card(path, **changes):
    card = json.loads((path / CARD_FILE).read_text())
    card.update(changes)
    (path / CARD_FILE).write_text(json.dumps(card))


def test_refuses_other_versions_and_kinds(parts, tmp_path):
    path = _save(parts, tmp_path)
    _edit_card(path, format="intentlens-model/0")
    with pytest.raises(ModelError, match=r"model format 'intentlens-model/0'.*reads 'intentlens-model/1'"
                                         r".*python -m core train --dataset tiny --model transformer "
                                         r"--horizon 6h"):
        load_model(path)
    _edit_card(path, format=FORMAT, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ModelError, match=f"schema version {SCHEMA_VERSION + 1}.*reads {SCHEMA_VERSION}"):
        load_model(path)
    _edit_card(path, schema_version=SCHEMA_VERSION, kind="knn")
    with pytest.raises(ModelError, match="unknown model kind 'knn'"):
        load_model(path)


def test_refuses_missing_files_and_mismatched_weights(parts, tmp_path):
    path = _save(parts, tmp_path)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match=r"missing weights.pt"):
        load_model(path)
    path = _save(parts, tmp_path, name="m2")
    card = json.loads((path / CARD_FILE).read_text())
    card["config"]["transformer"]["d_model"] = 32
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match the configuration"):
        load_model(path)
    (path / WEIGHTS_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="weights file"):
        load_model(path)
    path = _save(parts, tmp_path, kind="gbdt", name="g")
    (path / "gbdt.txt").unlink()
    with pytest.raises(ModelError, match=r"missing gbdt.txt"):
        load_model(path)


def test_predict_input_errors(parts, tmp_path):
    loaded = load_model(_save(parts, tmp_path))
    with pytest.raises(ModelError, match="needs sequences"):
        loaded.predict(None, parts["feats"])
    bad = parts["seq"].subset(np.arange(5))
    bad.item[:, -1] = 10_000
    with pytest.raises(ModelError, match="item ids outside"):
        loaded.predict(bad, None)
    loaded = load_model(_save(parts, tmp_path, kind="logreg", name="lr"))
    with pytest.raises(ModelError, match="needs aggregate features"):
        loaded.predict(parts["seq"], None)


def test_save_replaces_a_model_but_not_other_directories(parts, tmp_path):
    first = load_card(_save(parts, tmp_path, kind="logreg"))
    second = load_card(_save(parts, tmp_path, kind="gbdt"))
    assert first["kind"] == "logreg" and second["kind"] == "gbdt"
    assert not (tmp_path / "m" / "logreg.json").exists()
    other = tmp_path / "important"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not an IntentLens model directory"):
        save_model(other, kind="logreg", card=_card(), logreg=parts["logreg"])
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ModelError, match="vocab"):
        save_model(tmp_path / "x", kind="transformer", card=_card(), transformer=parts["transformer"])
    with pytest.raises(ModelError, match="kind must be one of"):
        save_model(tmp_path / "x", kind="knn", card=_card())


class _Payload:
    """Unpickling this runs code: it writes ``marker`` (what a hostile weights.pt would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_pickle_payload_in_the_weights_is_refused_and_never_runs(parts, tmp_path):
    path = _save(parts, tmp_path)
    marker = tmp_path / "payload-ran"
    state = dict(parts["transformer"].state_dict())
    state["item_emb.weight"] = _Payload(marker)
    torch.save(state, path / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="is not a weights file this version reads") as info:
        load_model(path)
    assert not marker.exists()
    assert "weights_only" in str(info.value.__cause__) or "Unsupported global" in str(info.value.__cause__)
    # the payload is live: an unsafe load (what load_model never does) runs it
    torch.load(path / WEIGHTS_FILE, weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(("n_heads", "message"), [
    (0, "n_heads must be an int in [1, 64]; got 0"), (-2, "n_heads must be an int in [1, 64]; got -2")])
def test_card_with_zero_or_negative_heads_is_refused(parts, tmp_path, n_heads, message):
    path = _save(parts, tmp_path)
    card = json.loads((path / CARD_FILE).read_text())
    card["config"]["transformer"]["n_heads"] = n_heads
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="no usable transformer configuration") as info:
        load_model(path)
    assert message in str(info.value)


@pytest.fixture
def allocations(monkeypatch):
    """Configurations for which a real (not meta-device) IntentTransformer was built."""
    import models.transformer as T

    built = []

    class Spy(T.IntentTransformer):
        def __init__(self, config):
            if torch.empty(0).device.type != "meta":
                built.append(config)
            super().__init__(config)

    monkeypatch.setattr(T, "IntentTransformer", Spy)
    return built


def test_card_sizes_are_bounded_and_checked_against_the_weights_before_allocating(parts, tmp_path,
                                                                                 allocations):
    path = _save(parts, tmp_path)
    load_model(path)
    assert len(allocations) == 1                      # the spy sees a real load
    allocations.clear()
    good = json.loads((path / CARD_FILE).read_text())

    def with_config(**changes):
        card = json.loads(json.dumps(good))
        card["config"]["transformer"].update(changes)
        (path / CARD_FILE).write_text(json.dumps(card))

    with_config(n_items=10**12)                       # beyond any table this version builds
    with pytest.raises(ModelError, match=r"n_items must be an int in \[2, 2000000\]; got 1000000000000"):
        load_model(path)
    with_config(n_items=1_900_000, n_categories=1_900_000, d_model=512, d_ff=512)   # 2e9 weights
    with pytest.raises(ModelError, match=r"would hold [\d,]+ weights; this version loads at most 100,000,000"):
        load_model(path)
    with_config(n_items=1_000_000)                    # 16M weights: allowed, but not what the file holds
    with pytest.raises(ModelError, match=r"do not match the configuration in card.json \(item_emb.weight: "
                                         r"\(50, 16\) in the file, \(1000000, 16\) in the card"):
        load_model(path)
    assert allocations == []                          # refused before any model was built

    with_config()
    state = dict(parts["transformer"].state_dict())
    state["extra"] = torch.zeros(1_000_000)           # 4 MB the configuration has no room for
    torch.save(state, path / WEIGHTS_FILE)
    with pytest.raises(ModelError, match=r"more than the [\d,]+ its configuration in card.json can need"):
        load_model(path)
    state["extra"] = torch.zeros(3)
    torch.save(state, path / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="unexpected extra"):
        load_model(path)
    state.pop("extra")
    state["item_emb.weight"] = state["item_emb.weight"].long()
    torch.save(state, path / WEIGHTS_FILE)
    with pytest.raises(ModelError, match=r"item_emb.weight is torch.int64"):
        load_model(path)
    assert allocations == []


def test_vocab_and_card_size_must_fit(parts, tmp_path):
    path = _save(parts, tmp_path)
    vocab = json.loads((path / "vocab.json").read_text())
    vocab["item_buckets"] = 41                        # one row more than the weights have
    (path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ModelError, match=r"does not match the transformer configuration .*items 51 != 50"):
        load_model(path)
    (path / CARD_FILE).write_text(" " * (MAX_CARD_BYTES + 1))
    with pytest.raises(ModelError, match="a model card has at most"):
        load_card(path)


def test_json_default_and_kinds_have_one_home():
    from datetime import datetime
    from decimal import Decimal
    from pathlib import Path

    import pandas as pd

    from core.modeling import pipeline
    from models.artifact import KIND_LABELS, MODEL_KINDS, json_default

    values = {"ts": pd.Timestamp("2017-11-25 08:00"), "dt": datetime(2017, 11, 25), "i": np.int64(3),
              "f": np.float32(0.5), "a": np.arange(3), "p": Path("/x/y"), "d": Decimal("1.5"),
              "na": pd.NA, "nat": pd.NaT, "s": {"b", "a"}}
    assert json.loads(json.dumps(values, default=json_default)) == {
        "ts": "2017-11-25T08:00:00", "dt": "2017-11-25T00:00:00", "i": 3, "f": 0.5, "a": [0, 1, 2],
        "p": "/x/y", "d": 1.5, "na": None, "nat": None, "s": ["a", "b"]}
    with pytest.raises(TypeError, match="JSON cannot hold a object"):
        json.dumps({"x": object()}, default=json_default)
    assert pipeline.MODEL_KINDS is MODEL_KINDS and set(KIND_LABELS) == set(MODEL_KINDS)
