"""Saved models: one directory per model, readable without executing code.

Layout of a model directory::

    card.json      what the model is (below); always present
    weights.pt     IntentTransformer state_dict (torch.save; read with torch.load(weights_only=True))
    vocab.json     the core.modeling.sequences.Vocab the transformer was trained with
    logreg.json    LogisticBaseline coefficients (models/baselines.py)
    gbdt.txt       LightGBM text model + gbdt.json, its feature names and logit offset
    svm.json       SVMBaseline: scaling, linear weights and Platt sigmoid
    forest.skops   ForestBaseline's trees (skops.io, loaded with an explicit trusted-type list) + forest.json
    mlp.json       MLPBaseline: scaling and layer weights
    model.onnx     optional: the transformer exported to ONNX (core.serving.export; the card's ``onnx``
                   records its sha256, opset and time; LoadedModel.predict uses it when they match)

``card.json`` holds: ``format`` ("intentlens-model/1"), ``schema_version`` (core.data.schema), ``model_id``,
``kind`` (transformer | gbdt | logreg | svm | forest | mlp | ensemble), ``components`` (the member models stored here),
``config`` (per component: TransformerConfig as a dict, baseline parameters, ensemble weights),
``ensemble`` (weights and their validation PR-AUC), ``vocab_file``, ``feature_names``, ``label``
(LabelSpec.to_dict()), ``files``, ``created_at``, ``libraries`` (versions) and whatever the caller
put in ``card``: ``dataset``, ``dataset_sha256``, ``cutoffs``, ``metrics``, ``history``, ...

``save_model`` writes into a temporary sibling directory and renames it into place, so a crash never
leaves half a model. ``load_model`` refuses with ``ModelError`` (and says what to do) a directory that
is not a model, a card that is not JSON (or larger than ``MAX_CARD_BYTES``), another format or schema
version, an unknown kind, missing files, a configuration that breaks a rule of ``TransformerConfig``
(every size is bounded), weights larger than their configuration needs, a weights file holding
anything but tensors (read with ``weights_only=True``: a pickled payload never runs), weights whose
names or shapes differ from the configuration (compared before the model is allocated), or a
vocabulary of another size. ``MODEL_KINDS`` and ``KIND_LABELS`` name the model kinds for every
caller (CLI, pipeline, pages).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.data.schema import SCHEMA_VERSION
from core.errors import ModelError

if TYPE_CHECKING:   # types only: modeling sits above models; torch and scikit-learn load when needed
    from core.modeling.labels import LabelSpec
    from core.modeling.sequences import SequenceBatch, Vocab
    from models.baselines import EnsembleModel, ForestBaseline, GBDTBaseline, LogisticBaseline, MLPBaseline, SVMBaseline
    from models.calibration import Calibrator
    from models.onnx import OnnxSession
    from models.transformer import IntentTransformer

# The files of a model directory (see above).
FORMAT = "intentlens-model/1"
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.pt"
VOCAB_FILE = "vocab.json"
LOGREG_FILE = "logreg.json"              # written by models.baselines.LogisticBaseline.save
GBDT_MODEL_FILE = "gbdt.txt"             # written by models.baselines.GBDTBaseline.save
GBDT_META_FILE = "gbdt.json"             # ... beside it
SVM_FILE = "svm.json"                    # written by models.baselines.SVMBaseline.save
FOREST_MODEL_FILE = "forest.skops"       # written by models.baselines.ForestBaseline.save
FOREST_META_FILE = "forest.json"         # ... beside it
MLP_FILE = "mlp.json"                    # written by models.baselines.MLPBaseline.save
EVALUATION_FILE = "evaluation.parquet"   # validation + test rows, written by core.modeling.pipeline
VALIDATION_FILE = "validation.parquet"   # validation rows of models trained before the test window
ONNX_FILE = "model.onnx"                 # the transformer in ONNX, written by core.serving.export
# Every file a model directory may hold: what a zip upload or a copy may bring along.
MODEL_FILES = frozenset({CARD_FILE, WEIGHTS_FILE, VOCAB_FILE, LOGREG_FILE, GBDT_MODEL_FILE,
                         GBDT_META_FILE, SVM_FILE, FOREST_MODEL_FILE, FOREST_META_FILE, MLP_FILE,
                         VALIDATION_FILE, EVALUATION_FILE, ONNX_FILE})
MAX_CARD_BYTES = 16 * 2**20       # a card is some kB (history and search trials included)
WEIGHTS_OVERHEAD_BYTES = 2**20    # torch.save's zip headers and pickled structure beyond the values

# The model kinds, in the order the CLI and the Train page offer them, with their display names.
MODEL_KINDS = ("transformer", "gbdt", "logreg", "svm", "forest", "mlp", "ensemble")
KIND_LABELS = {"transformer": "Transformer (event sequences)", "gbdt": "Gradient-boosted trees",
               "logreg": "Logistic regression", "svm": "Linear SVM (Platt-calibrated)",
               "forest": "Random forest", "mlp": "Multi-layer perceptron",
               "ensemble": "Ensemble (Transformer, trees, logistic)"}
# The models on aggregate features (models.baselines.FEATURE_KINDS holds their classes).
FEATURE_COMPONENTS = ("gbdt", "logreg", "svm", "forest", "mlp")
COMPONENTS = ("transformer", *FEATURE_COMPONENTS)   # what a model directory may hold; an ensemble, several
ENGINES = ("auto", "torch", "onnx")   # LoadedModel.predict: what runs the transformer


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)`` for the values cards and CLI reports hold:
    timestamps and dates (ISO 8601), numpy scalars and arrays, paths, decimals, sets; missing
    values (``pd.NA``, ``NaT``) become null. TypeError for anything else."""
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (datetime, date, pd.Timestamp, pd.Timedelta)):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"JSON cannot hold a {type(value).__name__}: {value!r}")


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model depends on (read from package metadata, not imports)."""
    out = {"python": platform.python_version()}
    for name in ("torch", "scikit-learn", "lightgbm", "skops", "duckdb", "numpy", "pandas"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _retrain_hint(card: dict[str, Any] | None) -> str:
    card = card or {}
    label = card.get("label") or {}
    parts = ["python -m core train", f"--dataset {card.get('dataset', 'NAME')}"]
    if card.get("kind") in MODEL_KINDS:
        parts.append(f"--model {card['kind']}")
    if label.get("horizon"):
        parts.append(f"--horizon {label['horizon']}")
    if label.get("scope") == "category":
        parts.append("--scope category")
    return f"Retrain it with `{' '.join(parts)}`."


def _components(kind: str, ensemble: EnsembleModel | None) -> list[str]:
    if kind == "ensemble":
        return sorted(ensemble.weights_) if ensemble is not None else []
    return [kind]


def save_model(out_dir: str | Path, *, kind: str, card: dict[str, Any],
               transformer: IntentTransformer | None = None, logreg: LogisticBaseline | None = None,
               gbdt: GBDTBaseline | None = None, svm: SVMBaseline | None = None,
               forest: ForestBaseline | None = None, mlp: MLPBaseline | None = None, vocab: Vocab | None = None,
               weights: EnsembleModel | dict[str, float] | None = None,
               ensemble: EnsembleModel | None = None, feature_names: list[str] | None = None) -> Path:
    """Write a model directory atomically and return its path.

    kind: one of MODEL_KINDS; each component is passed by its kind's name (transformer=, gbdt=,
    logreg=, svm=, forest=, mlp=), so ``**{kind: model}`` works. card: the caller's facts (dataset, label, cutoffs,
    metrics, history, ...); this function adds format, schema_version, model_id (unless given),
    components, config, feature_names, files, created_at and libraries. ensemble: a fitted
    ``EnsembleModel`` (``weights``: the same, or a {member: weight} dict). vocab is required
    with a transformer. An existing ``out_dir`` is replaced only when it is an IntentLens model.
    """
    from models.baselines import EnsembleModel

    if kind not in MODEL_KINDS:
        raise ModelError(f"kind must be one of {', '.join(MODEL_KINDS)}; got {kind!r}.")
    if ensemble is None and weights is not None:
        ensemble = weights if isinstance(weights, EnsembleModel) else EnsembleModel.from_dict(
            {"weights": dict(weights)})
    if kind == "ensemble" and ensemble is None:
        raise ModelError("an ensemble needs its weights: pass ensemble= (a fitted EnsembleModel).")
    members = _components(kind, ensemble)
    objects: dict[str, Any] = {"transformer": transformer, "logreg": logreg, "gbdt": gbdt, "svm": svm,
                               "forest": forest, "mlp": mlp}
    missing = [m for m in members if objects.get(m) is None]
    if missing or not members:
        raise ModelError(f"a {kind} model needs its fitted component(s): {', '.join(missing) or kind}.")
    if "transformer" in members and vocab is None:
        raise ModelError("a transformer model needs the vocabulary it was trained with (vocab=).")
    if feature_names is None:
        for name in FEATURE_COMPONENTS:
            if name in members:
                feature_names = list(objects[name].feature_names_in_)
                break

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / CARD_FILE).is_file())):
        raise ModelError(f"{out_dir} exists and is not an IntentLens model directory; "
                         f"refusing to replace it.", hint="Choose another output directory.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    full = dict(card)
    full.update({
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": kind,
        "model_id": card.get("model_id") or f"{out_dir.name}-{created:%Y%m%dT%H%M%S}",
        "components": members,
        "config": {m: (objects[m].config.to_dict() if m == "transformer" else objects[m].get_params())
                   for m in members},
        "feature_names": list(feature_names) if feature_names is not None
        and any(m in members for m in FEATURE_COMPONENTS) else [],
        "vocab_file": VOCAB_FILE if "transformer" in members else None,
        "created_at": card.get("created_at") or created.isoformat(timespec="seconds"),
        "libraries": library_versions(),
    })
    if ensemble is not None and kind == "ensemble":
        full["ensemble"] = ensemble.to_dict()
        full["config"]["ensemble"] = ensemble.get_params()

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if transformer is not None and vocab is not None and "transformer" in members:
            import torch

            state = {k: v.detach().cpu() for k, v in transformer.state_dict().items()}
            torch.save(state, tmp / WEIGHTS_FILE)
            (tmp / VOCAB_FILE).write_text(json.dumps(vocab.to_dict()))
        for name in FEATURE_COMPONENTS:
            if name in members:
                objects[name].save(tmp)
        full["files"] = sorted([p.name for p in tmp.iterdir()] + [CARD_FILE])
        (tmp / CARD_FILE).write_text(json.dumps(full, indent=1, default=json_default))
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def load_card(model_dir: str | Path) -> dict[str, Any]:
    """The card of a compatible IntentLens model; ModelError saying why otherwise."""
    model_dir = Path(model_dir)
    path = model_dir / CARD_FILE
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir} is not a directory.",
                         hint="Pass the model directory (the one holding card.json).")
    if not path.is_file():
        raise ModelError(f"{model_dir} has no {CARD_FILE}: it is not an IntentLens model.",
                         hint="Pass a directory written by `python -m core train`.")
    if path.stat().st_size > MAX_CARD_BYTES:
        raise ModelError(f"{path} holds {path.stat().st_size:,} bytes; a model card has at most "
                         f"{MAX_CARD_BYTES:,}.", hint=_retrain_hint(None))
    try:
        card = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelError(f"{path} is not valid JSON ({err}).", hint=_retrain_hint(None)) from err
    if not isinstance(card, dict):
        raise ModelError(f"{path} does not hold a model card (a JSON object).",
                         hint=_retrain_hint(None))
    if card.get("format") != FORMAT:
        raise ModelError(f"this model was made by IntentLens model format {card.get('format')!r}; "
                         f"this version reads {FORMAT!r}.", hint=_retrain_hint(card))
    if card.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(f"this model was made for IntentLens data schema version "
                         f"{card.get('schema_version')!r}; this version reads {SCHEMA_VERSION}.",
                         hint=_retrain_hint(card))
    if card.get("kind") not in MODEL_KINDS:
        raise ModelError(f"{path} names an unknown model kind {card.get('kind')!r} "
                         f"(known: {', '.join(MODEL_KINDS)}).", hint=_retrain_hint(card))
    return card


@dataclass
class LoadedModel:
    """A model ready to score: ``predict(seq, feats)`` -> P(purchase) per row."""

    path: Path
    card: dict[str, Any]
    kind: str
    spec: LabelSpec
    vocab: Vocab | None = None                      # when a transformer is inside
    feature_names: list[str] = field(default_factory=list)   # [] when no baseline is inside
    transformer: IntentTransformer | None = None    # in eval mode
    logreg: LogisticBaseline | None = None
    gbdt: GBDTBaseline | None = None                # SHAP reads .gbdt.booster_
    svm: SVMBaseline | None = None
    forest: ForestBaseline | None = None
    mlp: MLPBaseline | None = None
    ensemble: EnsembleModel | None = None
    calibration: Calibrator | None = None           # fitted on the validation window; None = raw
    _onnx: OnnxSession | None = field(default=None, init=False, repr=False)   # see onnx_session
    _onnx_refused: str | None = field(default=None, init=False, repr=False)   # why auto uses torch

    @property
    def components(self) -> list[str]:
        return list(self.card["components"])

    def _active(self) -> list[str]:
        """Components whose output is needed (an ensemble member with weight 0 is not)."""
        if self.ensemble is None:
            return self.components
        return [m for m in self.components if self.ensemble.weights_.get(m, 0.0) > 0.0]

    @property
    def needs_sequences(self) -> bool:
        return "transformer" in self._active()

    @property
    def needs_features(self) -> bool:
        return any(m in self._active() for m in FEATURE_COMPONENTS)

    def _check_sequences(self, transformer: IntentTransformer, seq: SequenceBatch) -> None:
        config = transformer.config
        limits = {"behavior": config.n_behaviors, "item": config.n_items,
                  "category": config.n_categories, "gap": config.n_gaps, "hour": config.n_hours,
                  "query": config.n_query_buckets}
        for name, limit in limits.items():
            values = getattr(seq, name)
            if values.size and (values.min() < 0 or values.max() >= limit):
                raise ModelError(f"the sequences hold {name} ids outside this model's vocabulary "
                                 f"(max {int(values.max())}, model has {limit}).",
                                 hint="Build sequences with the model's own vocab (LoadedModel.vocab).")

    def onnx_session(self, threads: int | None = None, *, required: bool = False) -> OnnxSession | None:
        """The ONNX Runtime session of this model's export (``model.onnx`` beside it), or None when
        there is none or its sha256 differs from the one the card recorded at export (a changed or
        replaced file is never run; ``onnx_refused`` says why). ``required``: ModelError instead of
        None. The file is hashed and loaded once and the session kept; ``threads``: intra-op threads
        (None: the kept session, else ``torch.get_num_threads()``; another number opens a new one)."""
        from models.onnx import OnnxSession

        if self._onnx is not None and threads in (None, self._onnx.threads):
            return self._onnx
        info = self.card.get("onnx")
        path = self.path / ONNX_FILE
        hint = f"Export it: `python -m core export --model {self.path} --dataset {self.card.get('dataset', 'NAME')}`."
        if not isinstance(info, dict) or not path.is_file():
            self._onnx_refused = f"{self.path} has no ONNX export ({ONNX_FILE} and its record on the card)."
        else:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != info.get("sha256"):
                self._onnx_refused = (f"{path} is not the file exported for this model (sha256 {digest[:12]}... "
                                      f"on disk, {str(info.get('sha256'))[:12]}... on its card): it was changed "
                                      f"or replaced after export.")
                hint = "Export it again: " + hint.split(": ", 1)[1]
            else:
                self._onnx, self._onnx_refused = OnnxSession(data, threads=threads), None
                return self._onnx
        if required:
            raise ModelError(self._onnx_refused, title="No usable ONNX export", hint=hint)
        return None

    @property
    def onnx_refused(self) -> str | None:
        """Why ``predict(engine="auto")`` last ran torch instead of ONNX Runtime; None when it did not."""
        return self._onnx_refused

    def predict(self, seq: SequenceBatch | None = None, feats: pd.DataFrame | None = None, *,
                batch_size: int = 1024, calibrated: bool = True, engine: str = "auto") -> np.ndarray:
        """P(purchase within the horizon) per row, float64 (N,). ``seq``: a SequenceBatch built
        with ``self.vocab`` (transformer, ensemble); ``feats``: the aggregate features (baselines).
        ``calibrated=False``: the model's own probability before the calibration map (what
        attributions add up to). ``engine`` runs the transformer: ``auto`` = ONNX Runtime when
        ``model.onnx`` exists and matches the card (:meth:`onnx_session`), else torch; ``torch``;
        ``onnx`` (ModelError without a usable export). Feature models always run their own library;
        an ensemble sends only its transformer through ONNX; calibration applies after either."""
        if engine not in ENGINES:
            raise ModelError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}.")
        session = None if engine == "torch" else self.onnx_session(required=engine == "onnx")
        probs: dict[str, np.ndarray] = {}
        for member in self._active():
            if member == "transformer":
                if seq is None or self.transformer is None:
                    raise ModelError(f"this {self.kind} model needs sequences (seq) to score.")
                self._check_sequences(self.transformer, seq)
                if self.transformer.config.scope == "category" and seq.target_category is None:
                    raise ModelError("this model scores (user, category) rows but the batch has "
                                     "no target_category.",
                                     hint="Build sequences with scope 'category'.")
                tensors = seq.tensors(widen=False)
                probs[member] = (session.predict_proba(tensors, batch_size) if session is not None
                                 else self.transformer.predict_proba(tensors, batch_size))
            else:
                if feats is None:
                    raise ModelError(f"this {self.kind} model needs aggregate features (feats) "
                                     f"to score.")
                probs[member] = np.asarray(getattr(self, member).predict_proba(feats), dtype=float)
        lengths = {m: len(p) for m, p in probs.items()}
        if len(set(lengths.values())) > 1:
            raise ModelError(f"the inputs differ in rows: {lengths}.")
        if self.ensemble is not None:
            weights = self.ensemble.weights_
            raw = np.asarray(np.sum([weights[m] * probs[m] for m in probs], axis=0), dtype=float)
        else:
            raw = probs[self.kind]
        return raw if self.calibration is None or not calibrated else self.calibration.apply(raw)


def load_model(model_dir: str | Path) -> LoadedModel:
    """Read a model directory written by ``save_model``; ModelError with what to do otherwise."""
    from core.modeling.labels import LabelSpec
    from core.modeling.sequences import Vocab
    from models.baselines import FEATURE_KINDS, EnsembleModel

    model_dir = Path(model_dir)
    card = load_card(model_dir)
    hint = _retrain_hint(card)
    members = card.get("components")
    if not isinstance(members, list) or not members or any(m not in COMPONENTS for m in members):
        raise ModelError(f"{model_dir / CARD_FILE} lists unknown components {members!r}.", hint=hint)
    missing = [name for name in card.get("files", []) if not (model_dir / name).is_file()]
    if missing:
        raise ModelError(f"{model_dir} is missing {', '.join(missing)}.", hint=hint)
    try:
        spec = LabelSpec.from_dict(card["label"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{model_dir / CARD_FILE} has no usable label definition ({err}).",
                         hint=hint) from err
    loaded = LoadedModel(path=model_dir, card=card, kind=card["kind"], spec=spec,
                         feature_names=list(card.get("feature_names") or []))
    if "transformer" in members:
        loaded.transformer = _load_transformer(model_dir, card, hint)
        try:
            loaded.vocab = Vocab.from_dict(json.loads((model_dir / VOCAB_FILE).read_text()))
        except FileNotFoundError as err:
            raise ModelError(f"{model_dir} is missing {VOCAB_FILE}.", hint=hint) from err
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ModelError(f"{model_dir / VOCAB_FILE} is not a vocabulary ({err}).",
                             hint=hint) from err
        _check_vocab(loaded.transformer, loaded.vocab, model_dir / VOCAB_FILE, hint)
    for name in FEATURE_COMPONENTS:
        if name in members:
            setattr(loaded, name, FEATURE_KINDS[name].load(model_dir))
    if loaded.kind == "ensemble":
        try:
            loaded.ensemble = EnsembleModel.from_dict(card["ensemble"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{model_dir / CARD_FILE} has no usable ensemble weights ({err}).",
                             hint=hint) from err
        if sorted(loaded.ensemble.weights_) != sorted(members) or not math.isclose(
                sum(loaded.ensemble.weights_.values()), 1.0, abs_tol=1e-6):
            raise ModelError(f"{model_dir / CARD_FILE}: the ensemble weights do not match its "
                             f"components.", hint=hint)
    elif members != [loaded.kind]:
        raise ModelError(f"{model_dir / CARD_FILE}: a {loaded.kind} model cannot hold {members}.",
                         hint=hint)
    if card.get("calibration"):
        from models.calibration import Calibrator

        try:
            loaded.calibration = Calibrator.from_dict(card["calibration"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{model_dir / CARD_FILE} has no usable calibration map ({err}).",
                             hint=hint) from err
    return loaded


def _check_vocab(transformer: IntentTransformer, vocab: Vocab, path: Path, hint: str) -> None:
    """The vocabulary must give exactly the embedding rows the configuration has."""
    config = transformer.config
    try:
        pairs = {"items": (vocab.n_items, config.n_items),
                 "categories": (vocab.n_categories, config.n_categories),
                 "query buckets": (int(vocab.query_buckets) + 1, config.n_query_buckets),
                 "gap buckets": (int(vocab.gap_buckets) + 1, config.n_gaps)}
    except (TypeError, ValueError) as err:
        raise ModelError(f"{path} is not a vocabulary ({err}).", hint=hint) from err
    wrong = [f"{name} {got} != {want}" for name, (got, want) in pairs.items() if got != want]
    if wrong:
        raise ModelError(f"{path} does not match the transformer configuration in {CARD_FILE} "
                         f"(rows: {', '.join(wrong)}).", hint=hint)


def _check_state(state: Any, expected: dict[str, tuple[int, ...]], path: Path, hint: str) -> None:
    """``state`` must be a dict of floating tensors with exactly the expected names and shapes."""
    import torch

    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelError(f"{path} does not hold a state dict (names -> tensors).", hint=hint)
    problems = [f"missing {name}" for name in expected if name not in state]
    problems += [f"unexpected {name}" for name in state if name not in expected]
    problems += [f"{name}: {tuple(state[name].shape)} in the file, {shape} in the card"
                 for name, shape in expected.items() if name in state and tuple(state[name].shape) != shape]
    problems += [f"{name} is {state[name].dtype}" for name in expected
                 if name in state and not state[name].is_floating_point()]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ModelError(f"the weights in {path} do not match the configuration in {CARD_FILE} "
                         f"({shown}).", hint=hint)


def _load_transformer(model_dir: Path, card: dict[str, Any], hint: str) -> IntentTransformer:
    """Bounded, code-free loading: the card's configuration is checked (every size has a maximum),
    its tensor shapes are worked out on the meta device, the file's size is compared with them,
    the file is read with ``weights_only=True`` (no pickled code runs) and its tensors are compared
    name by name and shape by shape; only then is the model allocated."""
    from pickle import UnpicklingError  # only the error class torch.load raises on bad files

    import torch

    from models.transformer import MAX_PARAMETERS, IntentTransformer, TransformerConfig, state_shapes

    try:
        config = TransformerConfig.from_dict(card["config"]["transformer"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{model_dir / CARD_FILE} has no usable transformer configuration "
                         f"({err}).", hint=hint) from err
    expected = state_shapes(config)
    n_values = sum(math.prod(shape) for shape in expected.values())
    if n_values > MAX_PARAMETERS:
        raise ModelError(f"the transformer in {model_dir / CARD_FILE} would hold {n_values:,} weights; "
                         f"this version loads at most {MAX_PARAMETERS:,}.", hint=hint)
    path = model_dir / WEIGHTS_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise ModelError(f"{model_dir} is missing {WEIGHTS_FILE}.", hint=hint) from err
    limit = 8 * n_values + WEIGHTS_OVERHEAD_BYTES     # float64 at most, plus the file's structure
    if size > limit:
        raise ModelError(f"{path} holds {size:,} bytes, more than the {limit:,} its configuration "
                         f"in {CARD_FILE} can need.", hint=hint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, UnpicklingError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()
        raise ModelError(f"{path} is not a weights file this version reads "
                         f"({' '.join(first[:2])[:300]}).", hint=hint) from err
    _check_state(state, expected, path, hint)
    model = IntentTransformer(config)
    model.load_state_dict(state)
    return model.eval()
