"""ONNX export: ONNX Runtime agrees with torch (batch sizes, sequence lengths, both scopes), the card
records the file, scoring uses it, and a missing, changed or failing export is handled plainly."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import main
from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import ModelError
from core.insight.cohorts import predict_at, score_dataset
from core.modeling.labels import CutoffPlan, LabelSpec, build_examples
from core.modeling.pipeline import train_model
from core.modeling.sequences import QUERY_TOKENS, SequenceBatch, build_sequences
from core.modeling.synth import SynthConfig, generate
from core.serving.export import TOLERANCE, export_model
from models.artifact import CARD_FILE, ONNX_FILE, LoadedModel, load_model
from models.onnx import OnnxSession, export_onnx, file_sha256, input_names
from models.transformer import IntentTransformer, TransformerConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "saved" / "demo"
DEMO_USERS = 200          # users of the shipped demo log kept for the tests (the first ones in the file)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """A small synthetic log (with search queries) and a tiny transformer trained on it for one epoch."""
    tmp = tmp_path_factory.mktemp("export-syn")
    generate(SynthConfig(users=200, days=5, seed=5, n_items=300, n_categories=12), tmp / "events.parquet")
    db = tmp / "db.duckdb"
    with Store(db) as store:
        ingest_file(store, tmp / "events.parquet", dataset="syn", layout="generic",
                    column_map={name: name for name in ("user_id", "item_id", "category", "behavior", "ts", "query")})
        train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d", max_len=30), preset="fast",
                    epochs=1, seed=0, out=tmp / "tiny", models_root=tmp)
    return db, tmp / "tiny"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The shipped demo log cut to its first DEMO_USERS users, ingested as ``demo``."""
    tmp = tmp_path_factory.mktemp("export-demo")
    with gzip.open(ROOT / "sample_data" / "demo" / "events.csv.gz", "rt") as source:
        lines = source.read().splitlines()
    users = list(dict.fromkeys(line.split(",", 1)[0] for line in lines))[:DEMO_USERS]
    keep = set(users)
    (tmp / "demo.csv").write_text("\n".join(line for line in lines if line.split(",", 1)[0] in keep) + "\n")
    db = tmp / "db.duckdb"
    with Store(db) as store:
        ingest_file(store, tmp / "demo.csv", dataset="demo")
    return db


def _copy_demo(tmp_path: Path) -> Path:
    """A private copy of the shipped demo model (tests never write into models/saved)."""
    return Path(shutil.copytree(DEMO_MODEL, tmp_path / "demo"))


def _window(db: Path, model: LoadedModel, dataset: str) -> SequenceBatch:
    """The sequences of the model's reported window (the test window; validation for cards older than it)."""
    assert model.vocab is not None
    plan = CutoffPlan.from_dict(model.card["cutoffs"])
    with Store(db, read_only=True) as store:
        examples = build_examples(store, dataset, model.spec, plan, splits=(plan.report_split,))
        return build_sequences(store, dataset, examples, model.vocab, model.spec)


def _resized(arrays: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """Every row cut to its newest ``length`` events, or left-padded with 0 to ``length``."""
    out = {}
    for name, a in arrays.items():
        if a.ndim == 1:                   # target_category
            out[name] = a
            continue
        width = a.shape[1]
        if length <= width:
            out[name] = a[:, width - length:]
        else:
            pad = [(0, 0), (length - width, 0)] + [(0, 0)] * (a.ndim - 2)
            out[name] = np.pad(a, pad)
    return out


def _assert_agrees(transformer: IntentTransformer, session: OnnxSession, arrays: dict[str, np.ndarray],
                   lengths: tuple[int, int]) -> None:
    """ONNX Runtime's probabilities equal torch's within TOLERANCE for batches of 1 and 37 rows at
    two sequence lengths."""
    n = len(arrays["mask"])
    assert n >= 37
    for length in lengths:
        resized = _resized(arrays, length)
        assert resized["mask"].shape[1] == length
        for batch in (1, 37):
            rows = {name: a[n - batch:] for name, a in resized.items()}
            with torch.inference_mode():
                logits = transformer(**{name: torch.from_numpy(np.asarray(
                    a, dtype=bool if name == "mask" else np.int64)) for name, a in rows.items()})
            expected = torch.sigmoid(logits.double()).numpy()
            got = session.predict_proba(rows)
            assert got.shape == (batch,)
            assert np.max(np.abs(got - expected)) <= TOLERANCE


def _arrays(seq: SequenceBatch) -> dict[str, np.ndarray]:
    out = {name: getattr(seq, name) for name in SequenceBatch.ARRAYS}
    if seq.target_category is not None:
        out["target_category"] = seq.target_category
    return out


def test_tiny_trained_transformer_exports_and_agrees(syn):
    db, model_dir = syn
    with Store(db, read_only=True) as store:
        result = export_model(model_dir, store=store, dataset="syn")
    card = json.loads((model_dir / CARD_FILE).read_text())
    assert result["split"] == "test" and result["rows"] == card["rows"]["test"] > 0
    assert 0 <= result["max_abs_diff"] <= TOLERANCE and result["seconds"] > 0
    assert card["onnx"]["sha256"] == file_sha256(model_dir / ONNX_FILE) == result["sha256"]
    assert card["onnx"]["opset"] == result["opset"] == 17 and card["onnx"]["created_at"]
    assert card["onnx"]["check"]["rows"] == result["rows"]
    assert not [p.name for p in model_dir.iterdir() if p.name.endswith(".tmp")]
    model = load_model(model_dir)
    assert model.transformer is not None and model.transformer.config.event_stats > 0
    assert model.transformer.config.stat_totals > 0                 # the per-behaviour totals export too
    seq = _window(db, model, "syn")
    session = model.onnx_session(threads=1)
    assert session is not None and session.threads == 1
    assert session.inputs == input_names(model.transformer.config)
    _assert_agrees(model.transformer, session, _arrays(seq), lengths=(9, 45))   # max_len is 30
    # engine auto runs ONNX Runtime; torch stays available and agrees, calibration applied to both
    auto, onnx, eager = (model.predict(seq, engine=e) for e in ("auto", "onnx", "torch"))
    np.testing.assert_array_equal(auto, onnx)
    assert np.max(np.abs(onnx - eager)) <= TOLERANCE


def test_category_scope_graph_takes_the_target_category(tmp_path):
    torch.manual_seed(0)
    config = TransformerConfig(n_behaviors=8, n_items=50, n_categories=12, n_gaps=20, n_hours=25,
                               n_query_buckets=30, max_len=16, d_model=16, n_heads=2, n_layers=2, d_ff=32,
                               scope="category", event_stats=4)
    model = IntentTransformer(config).eval()
    with torch.no_grad():                       # move every weight off its initial value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    info = export_onnx(model, tmp_path / ONNX_FILE)
    assert not any(m.training for m in model.modules())     # the exporter must not switch dropout on
    assert info["inputs"][-1] == "target_category" and info["nan_guards_removed"] == config.n_layers
    rng = np.random.default_rng(1)
    n, length = 40, 16
    mask = np.arange(length)[None, :] >= rng.integers(0, length, size=n)[:, None]   # left padding
    arrays = {name: rng.integers(1, size, (n, length)) * mask
              for name, size in (("behavior", 8), ("item", 50), ("category", 12), ("gap", 20), ("hour", 25))}
    arrays["query"] = rng.integers(0, 30, (n, length, QUERY_TOKENS)) * mask[..., None]
    arrays["mask"] = mask
    arrays["target_category"] = rng.integers(1, 12, n)
    session = OnnxSession(tmp_path / ONNX_FILE, threads=1)
    _assert_agrees(model, session, arrays, lengths=(5, 24))
    with pytest.raises(ModelError, match="target_category"):
        session.run({k: v for k, v in arrays.items() if k != "target_category"})


def test_demo_model_exports_and_scoring_uses_onnx(demo, tmp_path, monkeypatch):
    model_dir = _copy_demo(tmp_path)
    with Store(demo, read_only=True) as store:
        result = export_model(model_dir, store=store, dataset="demo")
    assert result["split"] == "test"            # the window nothing was selected on
    assert result["max_abs_diff"] <= TOLERANCE and result["rows"] > 37
    model = load_model(model_dir)
    assert model.transformer is not None
    seq = _window(demo, model, "demo")
    session = model.onnx_session()
    assert session is not None and session.threads == torch.get_num_threads()
    _assert_agrees(model.transformer, session, _arrays(seq), lengths=(100, 20))
    eager = model.predict(seq, engine="torch")

    def no_torch(*args, **kwargs):
        raise AssertionError("the transformer ran in torch although model.onnx exists")

    monkeypatch.setattr(IntentTransformer, "predict_proba", no_torch)
    assert np.max(np.abs(model.predict(seq) - eager)) <= TOLERANCE
    with Store(demo) as store:           # what `score` and the app's re-score do
        scored = score_dataset(store, model_dir, "demo")
        again = predict_at(store, load_model(model_dir), "demo", store.dataset("demo")["ts_max"])
    assert len(scored) == len(again) == DEMO_USERS and scored["score"].between(0, 1).all()


def test_onnx_engine_without_an_export_says_how_to_make_one(tmp_path):
    model = load_model(_copy_demo(tmp_path))
    assert model.onnx_session() is None and "has no ONNX export" in str(model.onnx_refused)
    with pytest.raises(ModelError, match=r"has no ONNX export.*python -m core export"):
        model.predict(None, engine="onnx")
    with pytest.raises(ModelError, match="engine must be one of auto, torch, onnx"):
        model.predict(None, engine="tensorrt")


def test_changed_export_falls_back_to_torch_and_onnx_engine_refuses(demo, tmp_path):
    """Choice: engine auto never runs a model.onnx whose sha256 differs from the card's record; it
    scores with torch (``onnx_refused`` says why); engine onnx raises ModelError."""
    model_dir = _copy_demo(tmp_path)
    with Store(demo, read_only=True) as store:
        export_model(model_dir, store=store, dataset="demo")
    path = model_dir / ONNX_FILE
    path.write_bytes(path.read_bytes() + b"\0")        # still a loadable file, but not the one exported
    model = load_model(model_dir)
    seq = _window(demo, model, "demo").subset(np.arange(20))
    np.testing.assert_array_equal(model.predict(seq), model.predict(seq, engine="torch"))
    assert "changed or replaced after export" in str(model.onnx_refused)
    with pytest.raises(ModelError, match=r"not the file exported for this model.*Export it again"):
        model.predict(seq, engine="onnx")


def test_export_that_disagrees_is_refused_and_leaves_nothing(demo, tmp_path, monkeypatch):
    model_dir = _copy_demo(tmp_path)
    before = sorted(p.name for p in model_dir.iterdir())
    card = (model_dir / CARD_FILE).read_text()
    real = OnnxSession.predict_proba
    monkeypatch.setattr(OnnxSession, "predict_proba", lambda self, t, batch_size=1024: real(self, t) + 3e-5)
    with Store(demo, read_only=True) as store, pytest.raises(ModelError, match=r"disagree.*max \|Δp\| = 3(\.0\d)?e-05"):
        export_model(model_dir, store=store, dataset="demo")
    assert sorted(p.name for p in model_dir.iterdir()) == before
    assert (model_dir / CARD_FILE).read_text() == card


def test_feature_model_has_nothing_to_export(store):
    with pytest.raises(ModelError, match="nothing to export: a gbdt model"):
        export_model(ROOT / "models" / "saved" / "demo-gbdt", store=store, dataset="demo")


def test_cli_export(demo, tmp_path, capsys):
    model_dir = _copy_demo(tmp_path)
    assert main(["export", "--model", str(model_dir), "--dataset", "demo", "--db", str(demo)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= TOLERANCE and Path(report["file"]) == model_dir / ONNX_FILE
    assert main(["export", "--model", str(DEMO_MODEL.parent / "demo-gbdt"), "--dataset", "demo",
                 "--db", str(demo)]) == 2
    assert "nothing to export" in capsys.readouterr().err
