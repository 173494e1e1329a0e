"""Export a saved model's Transformer to ONNX, checked against torch on its test window.

:func:`export_model` is ``python -m core export``. It rebuilds the sequences of the model's test
window (the cutoffs on its card, ``core.modeling.labels.CutoffPlan``; the validation window for models
trained before the test window existed) from ``dataset``, exports the Transformer with
``models.onnx.export_onnx`` into a temporary file beside the model, and scores those sequences with
torch and with ONNX Runtime. Only when every probability agrees within :data:`TOLERANCE` is the file
renamed to ``model.onnx`` and recorded on the card (``card["onnx"]``: sha256, opset, exporter,
created_at and the check); otherwise the file is removed and ModelError says by how much they
differed. A previous export stays as it was until a new one passes. From then on
``LoadedModel.predict`` (engine ``auto``) runs the Transformer with ONNX Runtime, so ``score``, the
app's scoring and the service use it.

Feature models (gbdt, logreg, svm, forest, mlp) have nothing to export: they already score in their
own libraries (no maintained converter is installed).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import DataError, ModelError
from core.progress import ProgressFn

if TYPE_CHECKING:
    from core.data.store import Store

TOLERANCE = 1e-5    # the largest |p_onnx - p_torch| accepted on any test-window row


def export_model(model_dir: str | Path, *, store: Store, dataset: str,
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Write ``model.onnx`` beside the model in ``model_dir`` after checking it on ``dataset``'s test
    window (see the module doc); returns model_dir, file, sha256, opset, split, cutoff, rows,
    max_abs_diff (largest |Δp| of the Transformer's probabilities), tolerance, torch_seconds and
    onnx_seconds (scoring those rows once each, at torch's thread count) and seconds (the whole
    export). ModelError: not a model, no Transformer inside, or ONNX Runtime disagrees; NotFoundError:
    no such dataset; DataError: no user has events at the test cutoff."""
    import torch

    from core.modeling.labels import CutoffPlan, build_examples
    from core.modeling.sequences import build_sequences
    from models.artifact import CARD_FILE, ONNX_FILE, json_default, load_card, load_model
    from models.onnx import OnnxSession, export_onnx

    started = time.perf_counter()
    model_dir = Path(model_dir)
    model = load_model(model_dir)
    if model.transformer is None or model.vocab is None:
        raise ModelError(f"nothing to export: a {model.kind} model scores aggregate features with its own "
                         f"library, and only the Transformer is exported to ONNX.",
                         title="Nothing to export",
                         hint="Export a transformer or ensemble model; this one already scores without torch.")
    store.dataset(dataset)                                   # NotFoundError naming the datasets there are
    try:
        plan = CutoffPlan.from_dict(model.card["cutoffs"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{model_dir / CARD_FILE} has no usable cutoffs ({err}), so its test window is unknown.",
                         hint="Retrain it with this version of IntentLens.") from err
    split = plan.report_split
    examples = build_examples(store, dataset, model.spec, plan, splits=(split,))
    cutoff = plan.test_cutoff if split == "test" else plan.valid_cutoff
    if examples.empty:
        raise DataError(f"dataset {dataset!r} has no user with events at the model's {split} cutoff {cutoff}, "
                        f"so the export cannot be checked.", title="Nothing to check the export on",
                        hint=f"Pass the dataset the model was trained on ({model.card.get('dataset')!r}).")
    seq = build_sequences(store, dataset, examples, model.vocab, model.spec, progress=progress)
    tensors = seq.tensors(widen=False)

    tmp = model_dir / f".{ONNX_FILE}.{os.getpid()}.tmp"
    card_tmp = model_dir / f".{CARD_FILE}.{os.getpid()}.tmp"
    try:
        info = export_onnx(model.transformer, tmp)
        threads = torch.get_num_threads()
        clock = time.perf_counter()
        p_torch = model.transformer.predict_proba(tensors)
        torch_seconds, clock = time.perf_counter() - clock, time.perf_counter()
        p_onnx = OnnxSession(tmp.read_bytes(), threads=threads).predict_proba(tensors)
        onnx_seconds = time.perf_counter() - clock
        diff = float(np.max(np.abs(p_onnx - p_torch)))
        if not diff <= TOLERANCE:                            # NaN fails too
            raise ModelError(f"ONNX Runtime and torch disagree on the {split} window of {dataset!r}: "
                             f"max |Δp| = {diff:.3g} over {len(p_torch):,} rows (at most {TOLERANCE:g} "
                             f"allowed); {ONNX_FILE} was not written.", title="Export failed its check",
                             hint="Keep scoring with torch (engine 'torch'); report the model's card.json.")
        check = {"dataset": dataset, "split": split, "cutoff": cutoff, "rows": len(p_torch),
                 "max_abs_diff": diff, "tolerance": TOLERANCE}
        card = load_card(model_dir)
        card["onnx"] = {**info, "file": ONNX_FILE, "check": check}
        card_tmp.write_text(json.dumps(card, indent=1, default=json_default))
        # the file first, then the card: a crash in between leaves a file whose hash the card does
        # not hold, which LoadedModel never runs
        os.replace(tmp, model_dir / ONNX_FILE)
        os.replace(card_tmp, model_dir / CARD_FILE)
    finally:
        tmp.unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
    return {"model_dir": str(model_dir), "file": str(model_dir / ONNX_FILE), "sha256": info["sha256"],
            "opset": info["opset"], "threads": threads, **check, "torch_seconds": torch_seconds,
            "onnx_seconds": onnx_seconds, "seconds": time.perf_counter() - started}
