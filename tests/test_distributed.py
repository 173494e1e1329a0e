"""Beyond one machine: Spark builds the same sequences and features as the single-machine path, on a
local cluster of 2 workers reading the store's Parquet files in place; `torchrun` with 2 processes
trains a Transformer as good on the test window as 1 process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import DataError
from core.modeling.features import build_features
from core.modeling.labels import LabelSpec, build_examples, plan_cutoffs
from core.modeling.sequences import SequenceBatch, build_sequences, build_vocab
from core.modeling.synth import SynthConfig, generate

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[1]
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime (java on PATH)")


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory) -> Store:
    """A synthetic log with categories, sessions and search queries, ingested from Parquet, then a
    second file appended (two event segments, as a store that grows has)."""
    folder = tmp_path_factory.mktemp("distributed")
    store = Store(folder / "store")
    for k, seed in enumerate((3, 4)):
        path = folder / f"part{k}.parquet"
        generate(SynthConfig(users=150, days=5, seed=seed, n_items=2000, n_categories=20), path)
        ingest_file(store, path, dataset="syn", append=k > 0, layout="generic",
                    column_map={c: c for c in ("user_id", "item_id", "category", "behavior", "ts", "session_id",
                                               "query")})
    yield store
    store.close()


@pytest.fixture(scope="module")
def spark():
    from core.modeling.spark import spark_session

    session = spark_session("local-cluster[2,1,1024]", app="intentlens-test")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@needs_java
@pytest.mark.parametrize("scope", ["any", "category"])
def test_spark_builds_the_single_machine_sequences_and_features(spark, synth_store, scope):
    from core.modeling.spark import build_on_spark, event_files

    spec = LabelSpec(horizon="1d", scope=scope, max_len=30)
    plan = plan_cutoffs(synth_store, "syn", spec)
    examples = build_examples(synth_store, "syn", spec, plan)
    vocab = build_vocab(synth_store, "syn", plan.valid_cutoff, max_items=500)
    local_seq = build_sequences(synth_store, "syn", examples, vocab, spec)
    local_feat = build_features(synth_store, "syn", examples, spec)
    files = event_files(synth_store, "syn")
    assert len(files) == 2                                   # the ingest's segment and the append's
    assert spark.sparkContext.defaultParallelism == 2       # two worker cores
    seq, feat = build_on_spark(spark, files, "syn", examples, spec, vocab=vocab)
    assert seq is not None and feat is not None
    assert len(seq) == len(examples) > 100
    assert int(local_seq.mask.sum()) > 10 * len(examples)   # real histories, not padding
    for name in SequenceBatch.ARRAYS:
        mine, theirs = getattr(local_seq, name), getattr(seq, name)
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), name
    if scope == "category":
        assert np.array_equal(local_seq.target_category, seq.target_category)
    assert list(feat.columns) == list(local_feat.columns)
    assert np.array_equal(feat.to_numpy(), local_feat.to_numpy())


@needs_java
def test_spark_refuses_a_private_store_and_an_empty_request(spark, synth_store):
    from core.modeling.spark import build_on_spark, event_files

    with Store(":memory:") as private, pytest.raises(DataError, match="private"):
        event_files(private, "syn")
    with pytest.raises(DataError, match="nothing to build"):
        build_on_spark(spark, event_files(synth_store, "syn"), "syn", build_examples(
            synth_store, "syn", LabelSpec(), plan_cutoffs(synth_store, "syn", LabelSpec())), LabelSpec(),
            features=False)


def _train(args: list[str], store: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["train", "--dataset", "syn", "--model", "transformer", "--preset", "fast", "--epochs", "2",
              "--seed", "3", "--threads", "1", "--db", str(store), "--out", str(out), *extra]
    done = subprocess.run([*args, *common], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "card.json").read_text())


# the second case: the cart head, which lives outside the model, has its own gradient averaging
@pytest.mark.parametrize("extra", [[], ["--aux-cart", "0.5"]], ids=["buy-head", "cart-head-too"])
def test_two_process_training_reaches_the_one_process_test_quality(synth_store, tmp_path, extra):
    one = _train([sys.executable, "-m", "core"], synth_store.path, tmp_path / "one", extra)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "core"]
    two = _train(torchrun, synth_store.path, tmp_path / "two", extra)
    assert two["train_config"]["aux_cart"] == one["train_config"]["aux_cart"] == (0.5 if extra else 0.0)
    assert two["data_parallel"] == {"processes": 2, "backend": "gloo"}
    assert "data_parallel" not in one
    assert two["rows"] == one["rows"]                       # the same examples in every window
    for metric in ("roc_auc", "pr_auc"):       # each inside the other's 95 % interval on the test window
        a, b = one["metrics"][metric], two["metrics"][metric]
        assert a["low"] <= b["value"] <= a["high"] and b["low"] <= a["value"] <= b["high"], (metric, a, b)
    assert one["metrics"]["roc_auc"]["value"] > 0.6          # both learned something


def test_a_kind_that_is_not_data_parallel_is_refused_under_torchrun(monkeypatch):
    from core.modeling.distributed import process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DataError, match="does not train data-parallel"), process_group("gbdt"):
        pass
