"""ONNX export of an IntentTransformer, and an ONNX Runtime session that scores like it.

:func:`export_onnx` writes the model's ``forward`` as an ONNX graph: the same inputs (``behavior``,
``item``, ``category``, ``gap``, ``hour``, ``query`` as int64, ``mask`` as bool, and for scope
``category`` ``target_category``), one output ``logits`` (B,), with the batch and sequence axes
dynamic. It uses torch's TorchScript exporter (``dynamo=False``): it traces the eval-mode model in
about a second and keeps every axis symbolic (``Shape`` ops, so the positions counted from the right
and the last block's "update [CLS] only" slice follow the input's length); the dynamo exporter gives
the same graph an order of magnitude slower. ``torch.asinh`` (the event statistics) has no rule in that
exporter, so one is registered that writes ONNX's ``Asinh``. After export one rewrite: PyTorch's attention decomposes
into softmax followed by "replace NaN with 0" over the whole (B, heads, T, T) matrix, a guard for rows
whose every key is masked. This model always lets [CLS] attend, so no row is ever fully masked; the
guard is removed (it was a fifth of the run time at batch 256).

:class:`OnnxSession` runs such a file with ONNX Runtime on the CPU, with a chosen number of threads
(default ``torch.get_num_threads()``, so a comparison with torch runs at equal threads), and returns
the same probabilities as ``IntentTransformer.predict_proba`` (float64 sigmoid of float32 logits).

Nothing here reads or writes a model card: ``core.serving.export`` records the export (file hash,
opset, time) on the card, and ``models.artifact.LoadedModel`` uses the session only when the file's
sha256 matches that record.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from models.transformer import INPUTS, IntentTransformer, TransformerConfig

if TYPE_CHECKING:
    import onnx
    import onnxruntime

ONNX_OPSET = 17                 # LayerNormalization is a single op from opset 17
EXPORTER = "torchscript"        # torch.onnx.export(dynamo=False); recorded on the card
OUTPUT = "logits"               # the graph's one output, (B,) float32
TRACE_SHAPE = (3, 7)            # (batch, length) of the dummy batch traced; sizes no other axis has


def input_names(config: TransformerConfig) -> tuple[str, ...]:
    """The graph's inputs in order: ``forward``'s tensors (plus ``target_category`` for scope category)."""
    return INPUTS + (("target_category",) if config.scope == "category" else ())


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_onnx(model: IntentTransformer, path: str | Path) -> dict[str, Any]:
    """Write ``model`` (in eval mode; it is left so) to ``path`` as ONNX with dynamic batch and
    sequence axes. Returns what a card records: file, sha256, bytes, opset, exporter, inputs, output,
    created_at (ISO 8601 UTC). ModelError when torch or ONNX refuses the graph."""
    import onnx

    path = Path(path)
    names = input_names(model.config)
    model.eval()
    # the TorchScript exporter has no rule for asinh (the event statistics' squashing); ONNX has the op
    torch.onnx.register_custom_op_symbolic("aten::asinh", _asinh, ONNX_OPSET)
    try:
        with warnings.catch_warnings():     # the TorchScript exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(_Logits(model, names).eval(), _trace_inputs(model), str(path), input_names=list(names),
                              output_names=[OUTPUT], dynamic_axes=_dynamic_axes(names),
                              opset_version=ONNX_OPSET, dynamo=False)
        graph = onnx.load(str(path))
        removed = _drop_nan_guards(graph)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(path))
    except (RuntimeError, ValueError, TypeError, onnx.checker.ValidationError) as err:
        path.unlink(missing_ok=True)
        raise ModelError(f"the transformer could not be exported to ONNX ({str(err).splitlines()[0][:300]}).",
                         hint="Score with engine 'torch'; report the model's card.json.") from err
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "opset": ONNX_OPSET, "exporter": EXPORTER, "nan_guards_removed": removed,
            "inputs": list(names), "output": OUTPUT,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}


def _asinh(g: Any, x: Any) -> Any:
    """TorchScript-exporter symbolic of ``torch.asinh``: ONNX ``Asinh`` (opset 9 on)."""
    return g.op("Asinh", x)


class _Logits(nn.Module):
    """The exported module: ``forward``'s tensors as positional inputs (in ``names`` order) -> logits."""

    def __init__(self, model: IntentTransformer, names: tuple[str, ...]):
        # call .eval() on it: the exporter puts the wrapper's own mode back on every submodule after
        # tracing, and a new Module is in training mode (the model would be left with dropout on)
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, tensors, strict=True)))
        assert isinstance(out, torch.Tensor)
        return out


def _trace_inputs(model: IntentTransformer) -> tuple[torch.Tensor, ...]:
    """A small valid batch to trace: every id 1, every event real, one query token each."""
    from core.modeling.sequences import QUERY_TOKENS

    B, L = TRACE_SHAPE
    device = next(model.parameters()).device
    ids = torch.ones(B, L, dtype=torch.long, device=device)
    query = torch.zeros(B, L, QUERY_TOKENS, dtype=torch.long, device=device)
    query[..., 0] = 1
    out = [ids, ids, ids, ids, ids, query, torch.ones(B, L, dtype=torch.bool, device=device)]
    if model.config.scope == "category":
        out.append(torch.ones(B, dtype=torch.long, device=device))
    return tuple(out)


def _dynamic_axes(names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "length"} for name in names}
    if "target_category" in axes:
        axes["target_category"] = {0: "batch"}
    axes[OUTPUT] = {0: "batch"}
    return axes


def _drop_nan_guards(graph: onnx.ModelProto) -> int:
    """Remove ``Where(IsNaN(s), 0, s)`` after each ``Softmax`` s (see the module doc); returns how
    many were removed. Consumers of the guard read the softmax directly."""
    nodes = list(graph.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    for node in nodes:
        if node.op_type != "Where" or len(node.input) != 3:
            continue
        cond, value = producer.get(node.input[0]), node.input[2]
        soft = producer.get(value)
        if (cond is not None and cond.op_type == "IsNaN" and cond.input[0] == value
                and soft is not None and soft.op_type == "Softmax"):
            rename[node.output[0]] = value
            drop.update((id(node), id(cond)))
    if not rename:
        return 0
    kept = [node for node in nodes if id(node) not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    return len(rename)


class OnnxSession:
    """An exported transformer in ONNX Runtime (CPU). ``threads``: intra-op threads (default
    ``torch.get_num_threads()``). ``source``: the file's path or its bytes (pass the bytes that were
    hashed, so the graph that runs is the one that was checked)."""

    def __init__(self, source: str | Path | bytes, *, threads: int | None = None):
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf

        self.threads = int(threads) if threads is not None else torch.get_num_threads()
        if self.threads < 1:
            raise ModelError(f"ONNX Runtime threads must be >= 1; got {threads!r}.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3          # errors only
        model = source if isinstance(source, bytes) else os.fspath(source)
        try:
            self.session: onnxruntime.InferenceSession = ort.InferenceSession(
                model, options, providers=["CPUExecutionProvider"])
        except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, RuntimeError, OSError) as err:
            raise ModelError(f"ONNX Runtime cannot load this export ({str(err).splitlines()[0][:300]}).",
                             hint="Export it again: `python -m core export --model DIR --dataset NAME`.") from err
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def run(self, tensors: Mapping[str, Any]) -> np.ndarray:
        """Logits (B,) float32 for one batch keyed like ``forward``'s arguments (numpy arrays or CPU
        tensors of any integer type; ``mask`` any type, read as bool)."""
        missing = [name for name in self.inputs if name not in tensors]
        if missing:
            raise ModelError(f"the ONNX model needs input(s) {', '.join(missing)}.",
                             hint="Build sequences with the model's scope (target_category for scope 'category').")
        feed = {name: np.asarray(tensors[name], dtype=bool if name == "mask" else np.int64)
                for name in self.inputs}
        out: np.ndarray = self.session.run([OUTPUT], feed)[0]
        return out

    def predict_proba(self, tensors: Mapping[str, Any], batch_size: int = 1024) -> np.ndarray:
        """P(purchase) per row, float64 (N,), ``batch_size`` rows at a time: what
        ``IntentTransformer.predict_proba`` returns for the same tensors."""
        n = len(tensors["mask"])
        if n == 0:
            return np.zeros(0)
        parts = [self.run({name: tensors[name][start:start + batch_size] for name in self.inputs})
                 for start in range(0, n, batch_size)]
        logits = np.concatenate(parts).astype(np.float64)
        probs: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
        return probs
