"""Why does the model score a user the way it does? Per-event attributions as tidy frames.

Four views of one user's sequence, each one number per event position (newest at L-1, as in
``core.modeling.sequences.SequenceBatch``), and the checks that say how far to trust them:

* **Integrated gradients** (Captum ``LayerIntegratedGradients``) attached to all event embedding
  layers at once (behaviour, item, category, time gap, hour, query, and the time-window weights
  of the event-statistics path when the model has one, :data:`EMBEDDINGS`). Baseline: the *padding
  embedding* — every event id replaced by 0 (whose embedding row is the zero vector) while the
  mask, the position embeddings and the [CLS] token stay as they are. The baseline is "the same
  timeline, with events whose content is unknown", so an attribution measures what an event's
  content (what, which item, which category, when) adds to the logit, not its mere existence.
  Attributions are summed over the embedding dimension (and query tokens) and over the layers;
  target: the logit. Completeness: the attributions sum to f(x) - f(baseline) up to ``delta``.
* **Attention**: the weights from the [CLS] token to each event, per layer and head, and attention
  rollout (Abnar & Zuidema 2020: average the heads, add the identity for the residual path,
  renormalise the rows, multiply through the layers; read the [CLS] row).
* **Shapley values** from the ``shap`` library (``shap.PermutationExplainer``) over the *presence*
  of events: a coalition is a 0/1 vector over the user's events; an absent event gets all its ids
  set to 0 and its mask to False (it is removed from the sequence, not only blanked). With the
  ``Independent`` masker over an all-zero background, the base value is the logit of the empty
  sequence and ``sum(values) + base_value == f(x)`` exactly (each permutation telescopes).
* **Tree SHAP** (``shap.TreeExplainer``) for the gradient-boosted baseline's aggregate features,
  with plotly beeswarm and bar figures built from SHAP's values (plotly, not SHAP's matplotlib
  plots, to match the app's charts).

Checks: :func:`faithfulness` deletes the top-k events by each method and k random events (k = 1..10
by default, random averaged over 20 seeded draws) and reports the score drop, the curve the Explain
page draws and ``python -m core explain --json`` returns (:meth:`Explanation.faithfulness`,
:func:`faithfulness_summary`); :func:`what_if` re-scores after removing events or adding a hypothetical
one. :func:`explain_user` puts it together for one user of a dataset (what the CLI and the Explain
page call) and :func:`global_drivers` aggregates attributions over many users, in batches.

Every model argument accepts an ``IntentTransformer`` or a loaded model (``LoadedModel``) that has
one in ``.transformer`` (:data:`ModelLike`); every ``batch_row`` a one-row ``SequenceBatch`` or its
``tensors()`` (:data:`RowLike`).
Explanations run the model in eval mode (no dropout) and restore its previous mode afterwards.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

import numpy as np
import pandas as pd

from core.data.schema import BEHAVIOR_CODE, BEHAVIORS
from core.errors import DataError, ModelError, NotFoundError
from core.modeling.model_store import load_model_cached

if TYPE_CHECKING:
    import lightgbm as lgb
    import plotly.graph_objects as go
    import torch

    from core.data.store import Store
    from core.modeling.labels import LabelSpec
    from core.modeling.sequences import SequenceBatch, Vocab
    from core.progress import CancelToken, ProgressFn
    from models.artifact import LoadedModel
    from models.baselines import GBDTBaseline
    from models.transformer import IntentTransformer

    ModelLike: TypeAlias = IntentTransformer | LoadedModel          # a Transformer, or a model holding one
    RowLike: TypeAlias = SequenceBatch | Mapping[str, torch.Tensor]   # one example: a batch or its tensors
    # per-event attributions: a (position, attribution) frame, a Series by position, or an array
    # (one value per real event, or a full (L,) vector)
    Attribution: TypeAlias = pd.DataFrame | pd.Series | np.ndarray
    # a hypothetical what-if event: JSON-like, keys behavior, item_id, category, gap_seconds, hour
    # (see what_if); values of several types, so read field by field
    WhatIfEvent: TypeAlias = Mapping[str, Any]

METHODS = ("ig", "shap", "attention")
ID_INPUTS = ("behavior", "item", "category", "gap", "hour", "query")   # what IG attributes to
# the model's per-event embedding layers IG attaches to; window_emb exists only in models with an
# event-statistics path (TransformerConfig.event_stats > 0): its per-event output carries the
# soft-window counts, so the score those counts add is attributed to the events that make them
EMBEDDINGS = ("behavior_emb", "item_emb", "category_emb", "gap_emb", "hour_emb", "query_emb", "window_emb")

# Defaults tuned with bench/explain.py to meet the speed goals with a small IG delta.
IG_STEPS = 32                 # integration steps per user (Gauss-Legendre), first try
IG_MAX_STEPS = 256            # steps are doubled up to this while the delta is too large
IG_RTOL = 0.05                # ... too large = above IG_RTOL x |f(x) - f(baseline)| + IG_ATOL
IG_ATOL = 0.02                # (logit units)
IG_INTERNAL_BATCH = 4096      # sequences per forward/backward pass inside Captum
SHAP_MAX_EVALS = 500          # model evaluations per user (raised to 2 * events + 1 when needed)
GLOBAL_MAX_USERS = 1000       # global drivers: users sampled when none are given
GLOBAL_BATCH_USERS = 128      # global drivers: users per batched IG call
GLOBAL_IG_STEPS = 8           # global drivers: IG steps per user, first try
GLOBAL_IG_MAX_STEPS = 16      # global drivers: at most one doubling for rows with a large delta
TOP_CATEGORIES = 15           # global drivers: categories shown (most events first)
FAITHFULNESS_MAX_K = 10       # faithfulness curve: k = 1..this many events removed (capped at the user's)
FAITHFULNESS_DRAWS = 20       # faithfulness curve: random deletions averaged per k

# Time-gap buckets for global drivers: (upper edge in seconds, label); the last is open.
GAP_BUCKETS: tuple[tuple[float, str], ...] = (
    (3600.0, "<1h"), (6 * 3600.0, "1-6h"), (24 * 3600.0, "6-24h"), (3 * 86400.0, "1-3d"),
    (7 * 86400.0, "3-7d"), (math.inf, ">7d"),
)
GAP_LABELS = tuple(label for _, label in GAP_BUCKETS)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def _transformer_of(model: ModelLike) -> IntentTransformer:
    """The IntentTransformer inside ``model`` (itself or a LoadedModel's ``.transformer``)."""
    from models.transformer import IntentTransformer

    if isinstance(model, IntentTransformer):
        return model
    inner = getattr(model, "transformer", None)      # None: a model of aggregate features only
    if isinstance(inner, IntentTransformer):
        return inner
    raise ModelError("per-event explanations need a Transformer model; this one has none.",
                     hint="Train a model of kind 'transformer' or 'ensemble', or use tree SHAP "
                          "on the aggregate features of a 'gbdt' model.")


def _row_tensors(batch_row: RowLike) -> dict[str, torch.Tensor]:
    """Forward keyword tensors for one example (batch size 1)."""
    from core.modeling.sequences import SequenceBatch

    tensors = batch_row.tensors() if isinstance(batch_row, SequenceBatch) else dict(batch_row)
    n = int(tensors["behavior"].shape[0])
    if n != 1:
        raise DataError(f"explain one example at a time; got a batch of {n} rows.",
                        title="Bad explanation input", hint="Pass batch.subset([i]).")
    return tensors


def _trim(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Drop the leading columns that are padding in every row; returns (tensors, offset).

    Exact, not an approximation: positions are counted from the right and padded keys are masked,
    so left padding never changes a score (models/transformer.py). Position p of the trimmed
    tensors is position ``offset + p`` of the original ones.
    """
    mask = tensors["mask"].bool()
    filled = mask.any(dim=0)
    if not bool(filled.any()):
        return dict(tensors), 0
    offset = int(filled.nonzero()[0, 0])
    if offset == 0:
        return dict(tensors), 0
    out = {name: (value[:, offset:] if value.dim() >= 2 else value) for name, value in tensors.items()}
    return out, offset


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout), without parameter gradients (explanations need
    gradients for activations only, which saves the weight-gradient half of each backward pass),
    and restore both afterwards."""
    was_training = model.training
    needs_grad = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for param in needs_grad:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in needs_grad:
            param.requires_grad_(True)
        model.train(was_training)


def _remove(tensors: Mapping[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Copies of ``tensors`` with events removed where ``keep`` (B, L) is False: ids 0, mask False."""
    out = dict(tensors)
    for name in ID_INPUTS:
        value = tensors[name]
        k = keep if value.dim() == 2 else keep.unsqueeze(-1)
        out[name] = value * k.to(value.dtype)
    out["mask"] = tensors["mask"].bool() & keep
    return out


def _repeat(tensors: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Each tensor of a one-row batch repeated ``n`` times along the batch dimension."""
    return {name: value.expand(n, *value.shape[1:]).contiguous() for name, value in tensors.items()}


def _logits(net: IntentTransformer, tensors: Mapping[str, torch.Tensor], chunk: int = 4096) -> np.ndarray:
    """Logits of every row, without gradients, in chunks."""
    import torch

    n = int(tensors["behavior"].shape[0])
    out = np.empty(n, dtype=np.float64)
    with torch.no_grad():
        for start in range(0, n, chunk):
            part = {k: v[start:start + chunk] for k, v in tensors.items()}
            out[start:start + chunk] = net(**part).double().numpy()
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
    return out


def _real_positions(tensors: Mapping[str, torch.Tensor], offset: int = 0) -> np.ndarray:
    return offset + np.flatnonzero(tensors["mask"][0].numpy().astype(bool))


def _attribution_frame(positions: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"position": np.asarray(positions, dtype=np.int64),
                         "attribution": np.asarray(values, dtype=np.float64)})


# ---------------------------------------------------------------------------------------------
# Integrated gradients
# ---------------------------------------------------------------------------------------------

def _ig_batch(net: IntentTransformer, tensors: Mapping[str, torch.Tensor], *, n_steps: int,
              internal_batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integrated gradients for a batch: attributions (B, L) and convergence deltas (B,)."""
    import torch
    from captum.attr import LayerIntegratedGradients

    if getattr(net, "match_emb", None) is not None:
        # the target-category token reads category_emb a second time with a (B,) input, which
        # Captum's layer hook cannot tell apart from the events' (B, L) call
        raise ModelError("integrated gradients are not available for scope 'category' models yet.",
                         hint="Use --method shap or attention for this model.")
    mask = tensors["mask"].bool()
    target = tensors.get("target_category")

    def forward(behavior: torch.Tensor, item: torch.Tensor, category: torch.Tensor, gap: torch.Tensor,
                hour: torch.Tensor, query: torch.Tensor, mask: torch.Tensor,
                target_category: torch.Tensor | None) -> torch.Tensor:
        logits: torch.Tensor = net(behavior, item, category, gap, hour, query, mask, target_category)
        return logits

    layers = [layer for layer in (getattr(net, name, None) for name in EMBEDDINGS) if layer is not None]
    with warnings.catch_warnings():
        # Captum warns that layers must not feed each other; these embeddings are parallel
        warnings.filterwarnings("ignore", message="Multiple layers provided")
        lig = LayerIntegratedGradients(forward, layers)
    inputs = tuple(tensors[name] for name in ID_INPUTS)
    baselines = tuple(torch.zeros_like(t) for t in inputs)    # padding ids -> zero embeddings
    batch = int(inputs[0].shape[0])
    with _eval_mode(net):
        attributions, delta = lig.attribute(
            inputs, baselines=baselines, additional_forward_args=(mask, target),
            n_steps=int(n_steps), internal_batch_size=max(int(internal_batch_size), batch),
            return_convergence_delta=True)
    # one per layer: summed over the embedding dimension (and query tokens), then over the layers
    total = torch.stack([attr.reshape(attr.shape[0], attr.shape[1], -1).sum(dim=-1)
                         for attr in attributions]).sum(dim=0)                      # (B, L)
    total = total * mask.to(total.dtype)                       # exact zeros on padding
    return total.detach().double().numpy(), delta.detach().double().numpy().reshape(-1)


def _ig_converged(attr: np.ndarray, delta: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Rows whose completeness error is within ``rtol`` of the change explained (+ ``atol``)."""
    explained = attr.sum(axis=1) - delta                       # f(x) - f(baseline)
    converged: np.ndarray = np.abs(delta) <= rtol * np.abs(explained) + atol
    return converged


def _ig_adaptive(net: IntentTransformer, tensors: Mapping[str, torch.Tensor], *, n_steps: int, max_steps: int,
                 rtol: float, atol: float, internal_batch_size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IG with step doubling: rows whose delta is too large are recomputed with twice the steps
    (up to ``max_steps``). Returns attributions (B, L), deltas (B,) and steps used (B,)."""
    attr, delta = _ig_batch(net, tensors, n_steps=n_steps, internal_batch_size=internal_batch_size)
    steps = np.full(len(delta), int(n_steps))
    todo = np.flatnonzero(~_ig_converged(attr, delta, rtol, atol))
    current = int(n_steps)
    while len(todo) and current * 2 <= max_steps:
        current *= 2
        index = _torch_index(todo)
        part = {k: v[index] for k, v in tensors.items()}
        a, d = _ig_batch(net, part, n_steps=current, internal_batch_size=internal_batch_size)
        attr[todo], delta[todo], steps[todo] = a, d, current
        todo = todo[~_ig_converged(a, d, rtol, atol)]
    return attr, delta, steps


def _torch_index(rows: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))


def integrated_gradients(model: ModelLike, batch_row: RowLike, *, baseline: str = "pad",
                         n_steps: int = IG_STEPS, max_steps: int = IG_MAX_STEPS,
                         rtol: float = IG_RTOL, atol: float = IG_ATOL,
                         internal_batch_size: int = IG_INTERNAL_BATCH) -> tuple[pd.DataFrame, float]:
    """Integrated gradients of the logit, one number per real event; and the convergence delta.

    ``baseline="pad"`` (the only one): every event id 0 (zero embedding), mask unchanged (see the
    module docstring). Frame columns: position, attribution. ``delta`` is Captum's convergence
    delta, sum(attributions) - (f(x) - f(baseline)), in logit units. When |delta| exceeds
    ``rtol`` x |f(x) - f(baseline)| + ``atol`` the integral is recomputed with twice the steps, up
    to ``max_steps`` (sharp models have steep paths); ``frame.attrs["n_steps"]`` says how many.
    """
    if baseline != "pad":
        raise DataError(f"baseline must be 'pad', got {baseline!r}.", title="Bad IG baseline")
    net = _transformer_of(model)
    tensors, offset = _trim(_row_tensors(batch_row))
    attr, delta, steps = _ig_adaptive(net, tensors, n_steps=n_steps, max_steps=max_steps, rtol=rtol,
                                      atol=atol, internal_batch_size=internal_batch_size)
    positions = _real_positions(tensors, offset)
    frame = _attribution_frame(positions, attr[0, positions - offset])
    frame.attrs.update(n_steps=int(steps[0]), delta=float(delta[0]))
    return frame, float(delta[0])


def ig_baseline_logit(model: ModelLike, batch_row: RowLike) -> float:
    """f(baseline) for :func:`integrated_gradients`: the logit with every event id set to 0."""
    import torch

    net = _transformer_of(model)
    tensors = dict(_row_tensors(batch_row))
    for name in ID_INPUTS:
        tensors[name] = torch.zeros_like(tensors[name])
    with _eval_mode(net):
        return float(_logits(net, tensors)[0])


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------

def _attention_maps(net: IntentTransformer, tensors: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
    import torch

    with _eval_mode(net), torch.no_grad():
        _, maps = net(**tensors, return_attention=True)
    return [m.double().numpy() for m in maps]                  # each (B, h, S+L, S+L)


def attention_weights(model: ModelLike, batch_row: RowLike, *, include_padding: bool = False) -> pd.DataFrame:
    """Weights from the [CLS] token to each event, per layer and head.

    Columns: layer, head, position, weight (tidy; one row per layer x head x event). Padded
    positions are left out unless ``include_padding`` (they get 0: masked keys).
    """
    net = _transformer_of(model)
    tensors, offset = _row_tensors(batch_row), 0
    if not include_padding:
        tensors, offset = _trim(tensors)
    maps = _attention_maps(net, tensors)
    special = net.n_special
    length = int(tensors["behavior"].shape[1])
    local = np.arange(length) if include_padding else _real_positions(tensors)
    positions = local + offset
    frames = []
    for layer, att in enumerate(maps):
        cls_row = att[0, :, 0, special:]                       # (h, L)
        heads = cls_row.shape[0]
        frames.append(pd.DataFrame({
            "layer": np.repeat(layer, heads * len(positions)),
            "head": np.repeat(np.arange(heads), len(positions)),
            "position": np.tile(positions, heads),
            "weight": cls_row[:, local].reshape(-1),
        }))
    return pd.concat(frames, ignore_index=True)


def _rollout(maps: list[np.ndarray], special: int) -> np.ndarray:
    """Attention rollout from [CLS] to every event position: (B, L)."""
    rollout: np.ndarray | None = None
    for att in maps:
        a = att.mean(axis=1)                                   # (B, T, T): heads averaged
        a = a + np.eye(a.shape[-1])[None]                      # residual path
        a = a / a.sum(axis=-1, keepdims=True)                  # rows sum to 1 again
        rollout = a if rollout is None else a @ rollout        # later layers on the left
    if rollout is None:
        raise ModelError("attention rollout needs at least one attention layer.")
    return rollout[:, 0, special:]


def attention_rollout(model: ModelLike, batch_row: RowLike) -> pd.DataFrame:
    """Attention rollout (Abnar & Zuidema) from [CLS] to each real event: position, attribution."""
    net = _transformer_of(model)
    tensors, offset = _trim(_row_tensors(batch_row))
    values = _rollout(_attention_maps(net, tensors), net.n_special)
    local = _real_positions(tensors)
    return _attribution_frame(local + offset, values[0, local])


# ---------------------------------------------------------------------------------------------
# Shapley values over event presence
# ---------------------------------------------------------------------------------------------

def _presence_model(net: IntentTransformer, tensors: Mapping[str, torch.Tensor],
                    positions: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """f(Z): logits for a (n, events) 0/1 matrix; 0 removes the event at that position."""
    import torch

    length = int(tensors["behavior"].shape[1])
    index = torch.as_tensor(positions, dtype=torch.long)

    def f(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z)
        keep = torch.ones(len(z), length, dtype=torch.bool)
        keep[:, index] = torch.from_numpy(z > 0.5)
        return _logits(net, _remove(_repeat(tensors, len(z)), keep))
    return f


def shap_values(model: ModelLike, batch_row: RowLike, *, max_evals: int = SHAP_MAX_EVALS,
                seed: int = 0) -> tuple[pd.DataFrame, float]:
    """Shapley values of each real event's presence for the logit, and the base value.

    ``shap.PermutationExplainer`` over a binary presence vector with ``shap.maskers.Independent``
    on an all-zero background: base value = logit of the sequence with every event removed, and
    ``values.sum() + base_value == logit(x)``. ``max_evals`` is raised to 2 * events + 1 (one
    forward-and-back permutation) when lower. Frame columns: position, attribution.
    """
    import shap

    net = _transformer_of(model)
    tensors, offset = _trim(_row_tensors(batch_row))
    local = _real_positions(tensors)
    positions = local + offset
    n = len(positions)
    if n == 0:
        with _eval_mode(net):
            return _attribution_frame(positions, np.zeros(0)), float(_logits(net, tensors)[0])
    with _eval_mode(net):
        f = _presence_model(net, tensors, local)
        masker = shap.maskers.Independent(np.zeros((1, n)), max_samples=1)
        explainer = shap.PermutationExplainer(f, masker, seed=seed)
        evals = max(int(max_evals), 2 * n + 1)
        result = explainer(np.ones((1, n)), max_evals=evals, batch_size=evals, silent=True)
    values = np.asarray(result.values, dtype=np.float64).reshape(-1)
    base = float(np.asarray(result.base_values, dtype=np.float64).reshape(-1)[0])
    return _attribution_frame(positions, values), base


# ---------------------------------------------------------------------------------------------
# Tree SHAP for the gradient-boosted baseline
# ---------------------------------------------------------------------------------------------

def _booster_of(gbdt_model: GBDTBaseline | LoadedModel | lgb.Booster) -> lgb.Booster:
    """The LightGBM booster of a fitted GBDTBaseline, of a loaded model's ``.gbdt``, or itself."""
    import lightgbm as lgb

    for owner in (gbdt_model, getattr(gbdt_model, "gbdt", None)):
        if isinstance(owner, lgb.Booster):
            return owner
        booster = getattr(owner, "booster_", None)            # a fitted GBDTBaseline
        if isinstance(booster, lgb.Booster):
            return booster
    raise ModelError("tree SHAP needs a gradient-boosted (gbdt) model; this one has none.",
                     hint="Train a model of kind 'gbdt' or 'ensemble'.")


def tree_shap(gbdt_model: GBDTBaseline | LoadedModel | lgb.Booster,
              features_frame: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """``shap.TreeExplainer`` values of the LightGBM booster (raw log-odds), one column per feature.

    Returns (values frame aligned with ``features_frame`` rows and columns, base value). Each row
    sums with the base value to the booster's raw score (before any prior-correction offset).
    """
    import shap

    booster = _booster_of(gbdt_model)
    names = list(booster.feature_name())
    missing = [n for n in names if n not in features_frame.columns]
    if missing:
        raise DataError(f"the feature frame lacks column(s) {missing[:5]}.", title="Bad features",
                        hint="Build it with core.modeling.features.build_features for this model's spec.")
    X = features_frame[names].astype(np.float64)
    explainer = shap.TreeExplainer(booster)
    values = np.asarray(explainer.shap_values(X), dtype=np.float64)
    if values.ndim == 3:                                       # (n, features, classes)
        values = values[..., -1]
    base = np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)[-1]
    return pd.DataFrame(values, columns=names, index=features_frame.index), float(base)


def tree_shap_bar_figure(values: pd.DataFrame, *, top: int = 20) -> go.Figure:
    """Mean |SHAP| per feature (SHAP's bar plot), as a plotly figure; most important on top."""
    import plotly.graph_objects as go

    importance = values.abs().mean().sort_values(ascending=False).head(top)[::-1]
    fig = go.Figure(go.Bar(x=importance.to_numpy(), y=importance.index.astype(str), orientation="h",
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_layout(title="Feature importance (mean |SHAP value|)",
                      xaxis_title="mean |SHAP value| (log-odds)", height=max(300, 24 * len(importance) + 120))
    return fig


def tree_shap_beeswarm_figure(values: pd.DataFrame, features_frame: pd.DataFrame, *,
                              top: int = 20, max_points: int = 2000, seed: int = 0) -> go.Figure:
    """SHAP's beeswarm as plotly: one dot per (row, feature) at its SHAP value, jittered
    vertically, coloured by the feature's value (rank-normalised per feature: low blue, high red)."""
    import plotly.graph_objects as go

    rng = np.random.default_rng(seed)
    if len(values) > max_points:
        values = values.iloc[np.sort(rng.choice(len(values), max_points, replace=False))]
    order = values.abs().mean().sort_values(ascending=False).head(top).index[::-1]
    xs, ys, colours, texts = [], [], [], []
    for row, name in enumerate(order):
        v = values[name].to_numpy()
        raw = features_frame.loc[values.index, name].to_numpy(dtype=np.float64)
        colour = pd.Series(raw).rank(pct=True).fillna(0.5).to_numpy()
        xs.append(v)
        ys.append(row + rng.uniform(-0.3, 0.3, len(v)))
        colours.append(colour)
        texts.append([f"{name} = {r:.4g}" for r in raw])
    fig = go.Figure(go.Scattergl(
        x=np.concatenate(xs) if xs else [], y=np.concatenate(ys) if ys else [], mode="markers",
        marker=dict(size=4, color=np.concatenate(colours) if colours else [],
                    colorscale="RdBu_r", cmin=0, cmax=1,
                    colorbar=dict(title="feature value", tickvals=[0, 1], ticktext=["low", "high"])),
        text=[t for part in texts for t in part], hovertemplate="%{text}<br>SHAP %{x:.4f}<extra></extra>"))
    fig.update_layout(title="SHAP values per feature (each dot one user)",
                      xaxis_title="SHAP value (impact on log-odds)",
                      yaxis=dict(tickvals=list(range(len(order))), ticktext=list(order)),
                      height=max(300, 28 * len(order) + 120))
    return fig


# ---------------------------------------------------------------------------------------------
# Faithfulness and what-if
# ---------------------------------------------------------------------------------------------

def _as_position_series(attribution: Attribution, positions: np.ndarray) -> pd.Series:
    """Attributions indexed by position, from a (position, attribution) frame, Series or array."""
    if isinstance(attribution, pd.DataFrame):
        return attribution.set_index("position")["attribution"].reindex(positions).fillna(0.0)
    if isinstance(attribution, pd.Series):
        return attribution.reindex(positions).fillna(0.0)
    values = np.asarray(attribution, dtype=np.float64).reshape(-1)
    if len(values) == len(positions):
        return pd.Series(values, index=positions)
    return pd.Series(values[positions], index=positions)      # a full (L,) vector


def faithfulness(model: ModelLike, batch_row: RowLike, attributions_by_method: Mapping[str, Attribution], *,
                 ks: Iterable[int] = range(1, FAITHFULNESS_MAX_K + 1), n_random: int = FAITHFULNESS_DRAWS,
                 seed: int = 0) -> pd.DataFrame:
    """Delete the top-k events (highest attribution first) by each method and k random events;
    re-score. Columns: method, k, score (probability after the deletion), drop (score before
    minus after; random: the mean over ``n_random`` draws, seeded by ``seed``), drop_std (random
    only, else 0). ks larger than the number of events are capped at it. ``attrs``: score_before,
    n_random, seed. A removed event is gone from the sequence (ids 0, mask False), as in SHAP."""
    import torch

    net = _transformer_of(model)
    tensors, offset = _trim(_row_tensors(batch_row))
    positions = _real_positions(tensors, offset)
    length = int(tensors["behavior"].shape[1])
    ks = sorted({min(int(k), len(positions)) for k in ks if int(k) > 0} - {0})    # none without events
    rng = np.random.default_rng(seed)
    plans: list[tuple[str, int, np.ndarray]] = []              # (method, k, positions to delete)
    for method, attribution in attributions_by_method.items():
        ranked = _as_position_series(attribution, positions).sort_values(ascending=False, kind="stable")
        for k in ks:
            plans.append((str(method), k, ranked.index.to_numpy()[:k]))
    for k in ks:
        for _ in range(int(n_random)):
            plans.append(("random", k, rng.choice(positions, size=k, replace=False)))
    keep = torch.ones(len(plans) + 1, length, dtype=torch.bool)   # row 0: nothing deleted
    for i, (_, _, drop) in enumerate(plans, start=1):
        keep[i, torch.from_numpy(np.array(drop, dtype=np.int64) - offset)] = False
    with _eval_mode(net):
        scores = _sigmoid(_logits(net, _remove(_repeat(tensors, len(plans) + 1), keep)))
    frame = pd.DataFrame({"method": [p[0] for p in plans], "k": [p[1] for p in plans],
                          "score": scores[1:], "drop": scores[0] - scores[1:]})
    out = (frame.groupby(["method", "k"], sort=False)
           .agg(score=("score", "mean"), drop=("drop", "mean"), drop_std=("drop", "std"))
           .reset_index())
    out["drop_std"] = out["drop_std"].fillna(0.0)
    out.attrs.update(score_before=float(scores[0]), n_random=int(n_random), seed=int(seed))
    return out


class FaithfulnessSummary(TypedDict):
    """The faithfulness curve as JSON (see :func:`faithfulness_summary`)."""

    score_before: float               # the user's score with every event (probability)
    n_random: int                     # random deletions averaged per k
    seed: int                         # their seed
    k: list[int]                      # events removed: 1, 2, ... (at most the user's events)
    drop: dict[str, list[float]]      # method (and "random") -> score drop at each k
    random_drop_std: list[float]      # standard deviation of the random drops at each k


def faithfulness_summary(frame: pd.DataFrame) -> FaithfulnessSummary:
    """A :func:`faithfulness` frame as JSON-ready lists, the form ``python -m core explain --json``
    returns under "faithfulness"::

        {"score_before": 0.83, "n_random": 20, "seed": 0, "k": [1, 2, ...],
         "drop": {"ig": [...], "shap": [...], "attention": [...], "random": [...]},
         "random_drop_std": [...]}

    ``drop[m][i]``: the score (probability) lost when the ``k[i]`` events that method m ranks
    highest are removed; "random": the mean over ``n_random`` draws of ``k[i]`` random events, with
    its standard deviation in ``random_drop_std`` (empty without random draws). Every list has
    one value per k; all empty when the user has no events. A faithful method's drop beats random's.
    """
    ks = sorted(int(k) for k in frame["k"].unique())
    present = [str(m) for m in pd.unique(frame["method"])]
    known = (*METHODS, "random")
    order = [m for m in known if m in present] + [m for m in present if m not in known]

    def curve(method: str, column: str) -> list[float]:
        values = frame[frame["method"] == method].set_index("k")[column].reindex(ks)
        return [float(v) for v in values]

    return {"score_before": float(frame.attrs.get("score_before", math.nan)),
            "n_random": int(frame.attrs.get("n_random", 0)), "seed": int(frame.attrs.get("seed", 0)),
            "k": ks, "drop": {m: curve(m, "drop") for m in order},
            "random_drop_std": curve("random", "drop_std") if "random" in present else []}


def _gap_bucket(seconds: float, gap_buckets: int, gap_steps: int = 1) -> int:
    """The sequence builder's gap id: 1 + min(gap_buckets - 1, floor(steps * log2(1 + seconds)))."""
    octaves = math.log2(1.0 + max(float(seconds), 0.0))
    return 1 + min(gap_buckets - 1, math.floor(gap_steps * octaves))


def _event_ids(event: WhatIfEvent, vocab: Vocab | None, n_query: int, n_behaviors: int = 0,
               top_categories: Iterable[int] = ()) -> dict[str, int | list[int]]:
    """Vocabulary ids of a hypothetical event dict (behavior, item_id, category, gap_seconds, hour).
    ``top_categories``: the category ids the row's events mark "viewed most in the last H"; an event
    in one of them is marked too (when the model's ids have that context bit)."""
    from core.modeling.sequences import BEHAVIOR_STRIDE, NEWEST_CATEGORY, TOP_CATEGORY, map_ids

    behavior = event.get("behavior", "view")
    if behavior not in BEHAVIOR_CODE:
        raise DataError(f"behavior must be one of {', '.join(BEHAVIORS)}, got {behavior!r}.",
                        title="Bad what-if event")
    behavior_id = BEHAVIOR_CODE[behavior]
    if n_behaviors > BEHAVIOR_STRIDE * NEWEST_CATEGORY and event.get("category") is not None:
        # the added event becomes the newest, so it is "in the newest event's category" (see the
        # behaviour x context ids in core.modeling.sequences); the other events keep their context
        behavior_id += BEHAVIOR_STRIDE * NEWEST_CATEGORY
    ids: dict[str, int | list[int]] = {"behavior": behavior_id}
    for key, column, table, buckets in (
            ("item", "item_id", "items", "item_buckets"),
            ("category", "category", "categories", "category_buckets")):
        value = event.get(column)
        if value is None:
            ids[key] = 1                                       # OOV: unknown item / category
        elif vocab is None:
            ids[key] = int(value)                              # already a vocabulary id
        else:
            ids[key] = int(map_ids([value], getattr(vocab, table), getattr(vocab, buckets))[0])
    gap_buckets = vocab.gap_buckets if vocab is not None else 32
    if n_behaviors > BEHAVIOR_STRIDE * TOP_CATEGORY and ids["category"] in set(top_categories):
        ids["behavior"] = behavior_id + BEHAVIOR_STRIDE * TOP_CATEGORY
    ids["gap"] = _gap_bucket(float(event.get("gap_seconds", 0.0)), gap_buckets,
                             vocab.gap_steps if vocab is not None else 1)
    ids["hour"] = 1 + int(event.get("hour", 12)) % 24
    ids["query"] = [0] * n_query
    return ids


def what_if(model: ModelLike, batch_row: RowLike, *, remove_positions: Iterable[int] = (),
            add_events: Iterable[WhatIfEvent] = (), vocab: Vocab | None = None) -> dict[str, float]:
    """Re-score after removing events (by position) and/or appending hypothetical events.

    An added event is a dict: ``behavior`` (view|cart|...), ``item_id`` and ``category`` (source
    text mapped through ``vocab``; vocabulary ids when ``vocab`` is None; missing = unknown),
    ``gap_seconds`` before the cutoff (default 0) and ``hour`` of day (default 12). Added events
    go to the newest position in the order given; older events shift left (the oldest falls off a
    full sequence). Returns probabilities: before, after, delta (= after - before).
    """
    import torch

    from core.modeling.sequences import BEHAVIOR_STRIDE, TOP_CATEGORY

    net = _transformer_of(model)
    tensors = _row_tensors(batch_row)
    length = int(tensors["behavior"].shape[1])
    keep = torch.ones(1, length, dtype=torch.bool)
    remove = [int(p) for p in remove_positions]
    bad = [p for p in remove if not 0 <= p < length]
    if bad:
        raise DataError(f"positions {bad} are outside 0..{length - 1}.", title="Bad what-if event")
    keep[0, remove] = False
    changed = _remove(tensors, keep)
    n_query = int(tensors["query"].shape[-1])
    for event in add_events:
        marked = (changed["behavior"] // BEHAVIOR_STRIDE & TOP_CATEGORY) > 0
        ids = _event_ids(event, vocab, n_query, int(net.config.n_behaviors),
                         top_categories=changed["category"][marked].tolist())
        for name in ID_INPUTS:
            value = changed[name]
            new = torch.as_tensor(ids[name], dtype=value.dtype).reshape(1, 1, *value.shape[2:])
            changed[name] = torch.cat([value[:, 1:], new], dim=1)
        changed["mask"] = torch.cat([changed["mask"][:, 1:], torch.ones(1, 1, dtype=torch.bool)], dim=1)
    with _eval_mode(net):
        before, after = _sigmoid(_logits(net, {k: torch.cat([tensors[k].to(changed[k].dtype),
                                                              changed[k]]) for k in changed}))
    return {"before": float(before), "after": float(after), "delta": float(after - before)}


def edited_sequence(events: pd.DataFrame, cutoff: datetime, spec: LabelSpec, vocab: Vocab, *,
                    remove_positions: Iterable[int] = (),
                    add_events: Iterable[WhatIfEvent] = ()) -> SequenceBatch:
    """One user's sequence rebuilt from edited events (``sequences_from_events``, which equals the
    data path's ``build_sequences`` byte for byte).

    ``events``: the explanation's source events (:func:`core.modeling.sequences.user_events`
    columns: position, ts, behavior, item_id, category, query). The events at ``remove_positions``
    are dropped and the rest close up towards the newest position (events older than the model's
    window are not pulled in). An added event (:func:`what_if`'s dicts: behavior, item_id and
    category as source text, gap_seconds before the cutoff, default 0) happens at cutoff -
    gap_seconds, so its hour of day, its place in time and every event's context bits follow
    from it; a full window drops its oldest event. DataError for a position that holds no event,
    an unknown behaviour, a negative gap or one past the model's lookback, or an edit that leaves
    no event.
    """
    from core.modeling.sequences import sequences_from_events

    remove = {int(p) for p in remove_positions}
    bad = sorted(remove - {int(p) for p in events["position"]})
    if bad:
        raise DataError(f"positions {bad} hold none of this user's events (they are at "
                        f"{int(events['position'].min())}..{int(events['position'].max())}).",
                        title="Bad what-if event", hint="Pick events from the user's timeline.")
    kept = events.loc[~events["position"].isin(remove), ["ts", "behavior", "item_id", "category", "query"]]
    lookback = spec.lookback_td
    added = []
    for event in add_events:
        behavior = event.get("behavior", "view")
        if behavior not in BEHAVIOR_CODE:
            raise DataError(f"behavior must be one of {', '.join(BEHAVIORS)}, got {behavior!r}.",
                            title="Bad what-if event")
        gap = float(event.get("gap_seconds", 0.0))
        limit = lookback.total_seconds() if lookback is not None else math.inf
        if not gap >= 0.0 or gap >= limit:      # (NaN fails the first test)
            raise DataError(f"an added event must happen in the model's window before T: gap_seconds "
                            f"{gap:g} is outside [0, {limit:g}).",
                            title="Bad what-if event", hint="Give a time between T and the lookback's start.")
        added.append({"ts": pd.Timestamp(cutoff) - pd.Timedelta(seconds=gap), "behavior": behavior,
                      "item_id": event.get("item_id"), "category": event.get("category"), "query": None})
    edited = pd.concat([kept, pd.DataFrame(added, columns=kept.columns)], ignore_index=True) if added else kept
    if edited.empty:
        raise DataError("the edit leaves this user without events: there is nothing to score.",
                        title="Bad what-if event", hint="Keep at least one event or add one.")
    edited = edited.assign(user_id="what-if", ts=pd.to_datetime(edited["ts"]).astype("datetime64[us]"))
    return sequences_from_events(edited, cutoff, vocab, spec)


# ---------------------------------------------------------------------------------------------
# One user of a dataset
# ---------------------------------------------------------------------------------------------

@dataclass
class Explanation:
    """Why one user got their score. ``events`` is wide (one row per event, one attribution column
    per method); :meth:`events_long` is the tidy form."""

    user_id: str
    dataset: str
    model_id: str
    cutoff: datetime                    # T: the dataset's last event time (naive UTC)
    score: float                        # what the model predicts for the user (calibrated probability)
    rank: int | None                    # 1 = highest score in the model's scoring run, else None
    n_scored: int | None                # users in that scoring run
    summary: str                        # one sentence
    events: pd.DataFrame                # position, ts, behavior, item_id, category, gap_seconds, <methods>
    model: LoadedModel                  # the model explained
    methods: tuple[str, ...] = ()       # attribution columns present in ``events``
    ig_delta: float | None = None       # IG convergence delta (logit units)
    shap_base_value: float | None = None
    attention: pd.DataFrame | None = None   # layer, head, position, weight ([CLS] row)
    features: pd.DataFrame | None = None    # gbdt models: feature, value, shap (tree SHAP)
    sequence: SequenceBatch | None = None   # the user's one row (None for a model without Transformer)
    category: str | None = None         # scope category: the target category explained
    seconds: float = 0.0                # time spent
    raw_score: float = math.nan         # the model's probability before the calibration map: what the
                                        # attributions (and the faithfulness curve) add up to
    source_events: pd.DataFrame | None = None   # the events ``sequence`` was built from (user_events's
                                                # columns, query included): what the what-if edits

    @property
    def top_percent(self) -> float | None:
        """Rank as the share of scored users at or above this score, in percent."""
        if self.rank is None or not self.n_scored:
            return None
        return 100.0 * self.rank / self.n_scored

    def events_long(self) -> pd.DataFrame:
        """Tidy: position, method, attribution."""
        return (self.events.melt(id_vars=["position"], value_vars=list(self.methods),
                                 var_name="method", value_name="attribution")
                .reset_index(drop=True))

    @property
    def row(self) -> SequenceBatch:
        """The user's one-row sequence, for :func:`what_if` and :func:`faithfulness`; ModelError when
        the model has no Transformer (its explanation has no per-event attribution to check)."""
        if self.sequence is None or not self.methods:
            raise ModelError(f"model {self.model_id!r} has no per-event attribution to check.",
                             hint="The faithfulness and what-if checks need a Transformer model.")
        return self.sequence

    def faithfulness(self, *, max_k: int = FAITHFULNESS_MAX_K, n_random: int = FAITHFULNESS_DRAWS,
                     seed: int = 0) -> pd.DataFrame:
        """The faithfulness curve of every method in ``events``: :func:`faithfulness` for
        k = 1..``max_k`` (capped at the user's events), random deletions averaged over ``n_random``
        seeded draws. What the Explain page draws and ``python -m core explain --json`` returns
        (through :func:`faithfulness_summary`). ModelError for a model without a Transformer."""
        row = self.row
        if max_k < 1 or n_random < 1:
            raise DataError(f"max_k and n_random must be >= 1, got {max_k} and {n_random}.",
                            title="Bad faithfulness check")
        by_method = {m: self.events.set_index("position")[m] for m in self.methods}
        return faithfulness(self.model, row, by_method, ks=range(1, max_k + 1), n_random=n_random, seed=seed)

    def what_if(self, remove_positions: Iterable[int] = (),
                add_events: Iterable[WhatIfEvent] = ()) -> dict[str, float]:
        """Re-score the user with events removed (by position) and hypothetical ones added, the
        sequence rebuilt from the edited events as the data path builds it (:func:`edited_sequence`):
        every context bit (bought later, seen again, the newest event's category, the category viewed
        most in the last H) follows the edit, and an added event takes its place in time. Raw
        probabilities (before the calibration map): before, after, delta. Scope ``category`` models,
        and explanations without their source events, edit the tensors instead (:func:`what_if`).
        ModelError without a Transformer."""
        import torch

        row = self.row
        vocab = self.model.vocab
        if self.source_events is None or vocab is None or self.model.spec.scope != "any":
            return what_if(self.model, row, remove_positions=remove_positions, add_events=add_events,
                           vocab=vocab)
        edited = edited_sequence(self.source_events, self.cutoff, self.model.spec, vocab,
                                 remove_positions=remove_positions, add_events=add_events)
        net = _transformer_of(self.model)
        now, then = row.tensors(), edited.tensors()
        both = {k: torch.cat([now[k], then[k].to(now[k].dtype)]) for k in now}
        with _eval_mode(net):
            before, after = _sigmoid(_logits(net, both))
        return {"before": float(before), "after": float(after), "delta": float(after - before)}


def _dataset_cutoff(store: Store, dataset: str) -> datetime:
    from core.modeling.labels import _to_datetime

    info = store.dataset(dataset)              # NotFoundError naming the datasets
    return _to_datetime(info["ts_max"])


def _user_example(store: Store, dataset: str, user_id: str, cutoff: datetime, spec: LabelSpec,
                  events: pd.DataFrame, category: str | None) -> pd.DataFrame:
    """The scoring example row of one user (and target category for scope ``category``)."""
    row: dict[str, list[object] | pd.Series] = {"user_id": [user_id],
                                                "cutoff": pd.Series([cutoff], dtype="datetime64[us]")}
    chosen = None
    if spec.scope == "category":
        seen = events.sort_values("position", ascending=False)["category"].dropna().astype(str)
        chosen = str(category) if category is not None else (seen.iloc[0] if len(seen) else None)
        if chosen is None:
            raise DataError(f"user {user_id!r} has no event with a category before {cutoff}.",
                            title="Nothing to explain")
        row["category"] = [chosen]
    row["label"] = [np.nan]
    row["split"] = ["score"]
    return pd.DataFrame(row)


def _rank(store: Store, model_id: str, dataset: str, user_id: str,
          category: str | None) -> tuple[int | None, int | None, float | None]:
    """(rank, users scored, stored score) from the model's scoring run, or Nones without one."""
    row = store.fetchone(
        "SELECT probability FROM scores WHERE model_id = ? AND dataset = ? AND user_id = ? "
        "AND (? IS NULL OR category = ?) ORDER BY probability DESC LIMIT 1",
        [model_id, dataset, user_id, category, category])
    if row is None:
        return None, None, None
    counts = store.fetchone(
        "SELECT count(*) FILTER (WHERE probability > ?), count(*) FROM scores "
        "WHERE model_id = ? AND dataset = ?", [row[0], model_id, dataset])
    above, total = counts if counts is not None else (0, 1)    # an aggregate always returns a row
    return int(above) + 1, int(total), float(row[0])


_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_PLURALS = {"search": "searches", "buy": "buys", "remove_from_cart": "cart removals"}


def _count_phrase(n: int, behavior: str) -> str:
    word = _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)
    noun = behavior.replace("_", " ") if n == 1 else _PLURALS.get(behavior, behavior + "s")
    if n == 1:
        return ("an " if noun[0] in "aeiou" else "a ") + noun
    return f"{word} {noun}"


def _span_phrase(seconds: float) -> str:
    """'in the last 6 hours' for the oldest of the events, rounded up."""
    if seconds < 3600:
        minutes = max(1, math.ceil(seconds / 60))
        return f"in the last {minutes} minute{'s' if minutes > 1 else ''}"
    if seconds < 2 * 86400:
        hours = math.ceil(seconds / 3600)
        return f"in the last {hours} hour{'s' if hours > 1 else ''}"
    return f"in the last {math.ceil(seconds / 86400)} days"


def summarize(score: float, top_percent: float | None, events: pd.DataFrame, column: str | None,
              *, share: float = 0.6, max_events: int = 5) -> str:
    """One sentence: the score, its rank, and what the top-attributed events are.

    The top events are the fewest (at most ``max_events``) with positive attribution that make up
    ``share`` of all positive attribution; they are described by behaviour counts, category (or
    the number of categories) and the time span back from the cutoff.
    """
    head = f"{score:.2f}"
    if top_percent is not None:
        pct = top_percent
        head += (f", top {pct:.0f} %" if pct >= 1 else f", top {pct:.1f} %" if pct >= 0.1
                 else f", top {pct:.2g} %")
    if events.empty:
        return f"{head}: the user has no events before the cutoff."
    if column is None:
        return f"{head}: {len(events)} events (no per-event attribution for this model)."
    positive = events[events[column] > 0].sort_values(column, ascending=False, kind="stable")
    if positive.empty:
        return f"{head}: no event pushes the score up; the score is the model's baseline."
    cumulative = positive[column].cumsum() / positive[column].sum()
    n_top = min(max_events, int(np.searchsorted(cumulative.to_numpy(), share)) + 1)
    top = positive.head(n_top)
    counts = top["behavior"].astype(str).value_counts()
    parts = [_count_phrase(int(n), str(b)) for b, n in counts.items()]
    what = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    cats = top["category"].dropna().astype(str).unique()
    where = (f" in category {cats[0]}" if len(cats) == 1
             else f" across {len(cats)} categories" if len(cats) > 1 else "")
    when = ""
    if "gap_seconds" in top and top["gap_seconds"].notna().any():
        when = " " + _span_phrase(float(top["gap_seconds"].max()))
    return f"{head}: mostly {what}{where}{when}."


def explain_user(store: Store, model_dir: str | Path, dataset: str, user_id: str | int, *,
                 methods: Sequence[str] = METHODS, category: str | None = None,
                 ig_steps: int = IG_STEPS, shap_max_evals: int = SHAP_MAX_EVALS) -> Explanation:
    """Explain one user's score at T = the dataset's last event.

    Loads the model (cached per directory), builds the user's sequence, scores it, ranks it in the
    model's scoring run of this dataset (None without one) and attributes the logit to events by
    each of ``methods`` (ig, shap, attention = rollout). ``events`` has one row per event with
    columns position, ts, behavior, item_id, category, gap_seconds and one column per method.
    Scope ``category`` models explain ``category`` (default: the user's most recent category).
    A gbdt model gets tree SHAP on its aggregate features in ``features`` (no per-event columns);
    a logistic-regression model raises ModelError.
    """
    from core.modeling.sequences import build_sequences, user_events

    started = time.perf_counter()
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise DataError(f"methods must be among {', '.join(METHODS)}, got {list(methods)}.",
                        title="Unknown explanation method")
    loaded = load_model_cached(model_dir)
    spec = loaded.spec
    user = str(user_id)
    cutoff = _dataset_cutoff(store, dataset)
    try:
        raw = user_events(store, dataset, user, cutoff, spec)
    except NotFoundError as err:
        raise NotFoundError(f"user {user!r} is not in dataset {dataset!r}.",
                            hint="Check the user id (matched exactly as text, as in the source "
                                 "file) and the dataset name.") from err
    example = _user_example(store, dataset, user, cutoff, spec, raw, category)
    chosen = str(example["category"].iloc[0]) if "category" in example else None
    model_id = str(loaded.card.get("model_id", Path(model_dir).name))
    rank, n_scored, _ = _rank(store, model_id, dataset, user, chosen)
    events = raw[["position", "ts", "behavior", "item_id", "category", "gap_seconds"]].copy()
    events["position"] = events["position"].astype(np.int64)

    from core.modeling.features import build_features

    transformer, gbdt = loaded.transformer, loaded.gbdt
    seq = build_sequences(store, dataset, example, loaded.vocab, spec) if loaded.vocab is not None else None
    feats = build_features(store, dataset, example, spec) if loaded.feature_names else None
    raw_score = float(np.asarray(loaded.predict(seq, feats, calibrated=False)).reshape(-1)[0])
    score = raw_score if loaded.calibration is None else float(loaded.calibration.apply([raw_score])[0])
    if transformer is None:
        if gbdt is None or feats is None:
            raise ModelError(f"model {model_id!r} ({loaded.kind}) has no "
                             "Transformer: per-event explanations need a Transformer model.",
                             hint="Explain a 'transformer' or 'ensemble' model, or a 'gbdt' model "
                                  "with tree SHAP on its features.")
        values, base = tree_shap(gbdt, feats)
        features = pd.DataFrame({"feature": values.columns, "value": feats[values.columns].iloc[0].to_numpy(),
                                 "shap": values.iloc[0].to_numpy()})
        features = features.sort_values("shap", key=np.abs, ascending=False, ignore_index=True)
        features.attrs["base_value"] = base
        result = Explanation(user_id=user, dataset=dataset, model_id=model_id, cutoff=cutoff,
                             score=score, rank=rank, n_scored=n_scored, summary="", raw_score=raw_score,
                             events=events, features=features, model=loaded, category=chosen)
        top = features.head(3)
        result.summary = (summarize(score, result.top_percent, events, None).rstrip(".") + "; top features: "
                          + ", ".join(f"{f} ({s:+.2f})" for f, s in zip(top["feature"], top["shap"], strict=True))
                          + ".")
        result.seconds = time.perf_counter() - started
        return result
    if seq is None:
        raise ModelError(f"model {model_id!r} has a Transformer but no vocabulary.",
                         hint="Its folder is incomplete: retrain it.")

    result = Explanation(user_id=user, dataset=dataset, model_id=model_id, cutoff=cutoff, score=score,
                         raw_score=raw_score, rank=rank, n_scored=n_scored, summary="", events=events,
                         methods=tuple(methods), sequence=seq, model=loaded, category=chosen,
                         source_events=raw)
    for method in methods:
        if method == "ig":
            frame, result.ig_delta = integrated_gradients(transformer, seq, n_steps=ig_steps)
        elif method == "shap":
            frame, result.shap_base_value = shap_values(transformer, seq, max_evals=shap_max_evals)
        else:
            frame = attention_rollout(transformer, seq)
            result.attention = attention_weights(transformer, seq)
        by_position = frame.set_index("position")["attribution"]
        events[method] = events["position"].map(by_position).fillna(0.0).to_numpy(dtype=np.float64)
    primary = next(m for m in ("ig", "shap", "attention") if m in methods)
    result.summary = summarize(score, result.top_percent, events, primary)
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------------------------
# Global drivers
# ---------------------------------------------------------------------------------------------

def gap_bucket_labels(gap_ids: np.ndarray, gap_steps: int = 1) -> np.ndarray:
    """Human time-gap labels ("<1h", "1-6h", ...) for the sequence builder's gap ids.

    Gap id g covers (cutoff - ts) in [2^((g-1)/s) - 1, 2^(g/s) - 1) seconds (s = gap_steps); its
    label is the bucket of the id's geometric midpoint, so an id straddling an edge goes to the
    bucket holding most of it.
    """
    g = np.asarray(gap_ids, dtype=np.float64) / float(gap_steps)
    step = 1.0 / float(gap_steps)
    low = np.maximum(np.exp2(g - step) - 1, 0.0)
    high = np.exp2(g) - 1
    mid = np.sqrt(np.maximum(low, 1.0) * high)
    edges = np.array([edge for edge, _ in GAP_BUCKETS[:-1]])
    labels: np.ndarray = np.asarray(GAP_LABELS, dtype=object)[np.searchsorted(edges, mid, side="right")]
    return labels


def batch_attributions(model: ModelLike, batch: SequenceBatch, *, method: str = "ig",
                       n_steps: int = IG_STEPS, max_steps: int = IG_MAX_STEPS,
                       internal_batch_size: int = IG_INTERNAL_BATCH,
                       batch_users: int = GLOBAL_BATCH_USERS) -> np.ndarray:
    """(N, L) attributions for every row of ``batch`` by ``ig`` or ``attention`` (rollout);
    zeros on padding. IG runs batched through Captum, ``batch_users`` rows per call, with the
    same step doubling as :func:`integrated_gradients` for rows whose delta is too large."""
    if method not in ("ig", "attention"):
        raise DataError(f"global drivers support method 'ig' or 'attention', got {method!r}.",
                        title="Unknown explanation method")
    net = _transformer_of(model)
    out = np.zeros(batch.behavior.shape, dtype=np.float64)
    for start in range(0, len(batch), batch_users):
        part = batch.subset(np.arange(start, min(start + batch_users, len(batch))))
        tensors, offset = _trim(part.tensors())
        if method == "ig":
            attr, _, _ = _ig_adaptive(net, tensors, n_steps=n_steps, max_steps=max_steps, rtol=IG_RTOL,
                                      atol=IG_ATOL, internal_batch_size=internal_batch_size)
        else:
            attr = _rollout(_attention_maps(net, tensors), net.n_special)
            attr = attr * part.mask[:, offset:]
        out[start:start + len(part), offset:] = attr
    return out


def drivers_from_attributions(batch: SequenceBatch, attributions: np.ndarray, vocab: Vocab | None,
                              *, top_categories: int = TOP_CATEGORIES) -> dict[str, pd.DataFrame]:
    """Mean attribution per event by behaviour, time-gap bucket and category (top N by events).

    Each frame: group, events, users, mean_attribution, total_attribution; ``behavior`` and
    ``gap`` list every group in a fixed order (groups without events have events = 0).
    """
    mask = batch.mask.astype(bool)
    rows = np.nonzero(mask)[0]
    attr = attributions[mask]
    from core.modeling.sequences import BEHAVIOR_STRIDE

    # behaviour ids carry their context (core.modeling.sequences): the behaviour is the id modulo the stride
    beh = np.asarray(BEHAVIORS, dtype=object)[batch.behavior[mask].astype(np.int64) % BEHAVIOR_STRIDE - 1]
    gap = gap_bucket_labels(batch.gap[mask], vocab.gap_steps if vocab is not None else 1)
    cat_ids = batch.category[mask].astype(np.int64)
    names = {}
    if vocab is not None:
        names = {i: c for c, i in vocab.categories.items()}
    base = 2 + (len(vocab.categories) if vocab is not None else 0)
    cat = np.array([names.get(i, "(unknown)" if i <= 1 else
                              "(other, hashed)" if i >= base else str(i)) for i in np.unique(cat_ids)],
                   dtype=object)[np.searchsorted(np.unique(cat_ids), cat_ids)]
    events = pd.DataFrame({"row": rows, "attribution": attr, "behavior": beh, "gap": gap, "category": cat})

    def by(column: str, order: Sequence[str] | None, top: int = 0) -> pd.DataFrame:
        """Groups in ``order`` (all of them), or without an order the ``top`` with most events."""
        g = (events.groupby(column, sort=False)
             .agg(events=("attribution", "size"), users=("row", "nunique"),
                  mean_attribution=("attribution", "mean"), total_attribution=("attribution", "sum"))
             .rename_axis("group").reset_index())
        if order is not None:
            g = (g.set_index("group").reindex(list(order))
                 .fillna({"events": 0, "users": 0, "total_attribution": 0.0})
                 .rename_axis("group").reset_index())
            g[["events", "users"]] = g[["events", "users"]].astype(np.int64)
        else:
            g = g.sort_values(["events", "group"], ascending=[False, True], ignore_index=True).head(top)
        return g

    return {"behavior": by("behavior", BEHAVIORS), "gap": by("gap", GAP_LABELS),
            "category": by("category", None, top_categories)}


def _sample_users(store: Store, dataset: str, limit: int) -> list[str]:
    rows = store.fetchall(
        "SELECT user_id FROM (SELECT DISTINCT user_id FROM events WHERE dataset = ?) "
        "ORDER BY md5(user_id), user_id LIMIT ?", [dataset, int(limit)])
    return [r[0] for r in rows]


def global_drivers(store: Store, model_dir: str | Path, dataset: str,
                   user_ids: Sequence[str | int] | None = None, method: str = "ig", *,
                   max_users: int = GLOBAL_MAX_USERS, n_steps: int = GLOBAL_IG_STEPS,
                   max_steps: int = GLOBAL_IG_MAX_STEPS,
                   top_categories: int = TOP_CATEGORIES, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> dict[str, pd.DataFrame]:
    """What drives scores across users: mean attribution by behaviour, time-gap bucket, category.

    ``user_ids`` None = a deterministic sample of everyone (``max_users``); a cohort passes its
    users (also capped at ``max_users``, the first ones). Sequences are built at T = the dataset's
    last event; attributions by ``ig`` (batched Captum; fewer steps than for one user, since
    means over many events tolerate a small per-user delta) or ``attention`` (rollout). Returns
    {"behavior", "gap", "category"} frames (see :func:`drivers_from_attributions`).
    """
    from core.modeling.sequences import build_sequences
    from core.progress import report

    loaded = load_model_cached(model_dir)
    _transformer_of(loaded)
    spec, vocab = loaded.spec, loaded.vocab
    if vocab is None:
        raise ModelError(f"model {str(model_dir)!r} has a Transformer but no vocabulary.",
                         hint="Its folder is incomplete: retrain it.")
    if spec.scope == "category":
        raise ModelError("global drivers are available for scope 'any' models only.",
                         hint="Train a model with scope 'any' to see global drivers.")
    cutoff = _dataset_cutoff(store, dataset)
    users = ([str(u) for u in user_ids][:int(max_users)] if user_ids is not None
             else _sample_users(store, dataset, max_users))
    if not users:
        raise DataError("no users to explain.", title="Empty cohort",
                        hint="Loosen the cohort filters or explain everyone.")
    examples = pd.DataFrame({"user_id": users,
                             "cutoff": pd.Series([cutoff] * len(users), dtype="datetime64[us]"),
                             "label": np.nan, "split": "score"})
    report(progress, 0, len(users), "building sequences")
    batch = build_sequences(store, dataset, examples, vocab, spec)
    # similar lengths share a chunk, so each chunk trims most of its left padding
    batch = batch.subset(np.argsort(batch.mask.sum(axis=1), kind="stable"))
    attributions = np.zeros(batch.behavior.shape, dtype=np.float64)
    for start in range(0, len(batch), GLOBAL_BATCH_USERS):
        if cancel is not None:
            cancel.check()
        part = batch.subset(np.arange(start, min(start + GLOBAL_BATCH_USERS, len(batch))))
        attributions[start:start + len(part)] = batch_attributions(
            loaded, part, method=method, n_steps=n_steps, max_steps=max_steps)
        report(progress, start + len(part), len(batch), f"explaining users ({method})")
    frames = drivers_from_attributions(batch, attributions, vocab, top_categories=top_categories)
    for frame in frames.values():
        frame.attrs.update(method=method, users=len(users))
    return frames


def compare_drivers(cohort_frame: pd.DataFrame, everyone_frame: pd.DataFrame) -> pd.DataFrame:
    """Cohort against everyone, side by side, for one driver frame (same ``group`` values).

    Tidy for a grouped bar chart: group, population (cohort|everyone), events, mean_attribution;
    ``difference`` (cohort minus everyone) is repeated on both rows of a group.
    """
    cohort = cohort_frame[["group", "events", "mean_attribution"]].assign(population="cohort")
    everyone = everyone_frame[["group", "events", "mean_attribution"]].assign(population="everyone")
    diff = (cohort.set_index("group")["mean_attribution"]
            - everyone.set_index("group")["mean_attribution"].reindex(cohort["group"]))
    order = list(dict.fromkeys(list(cohort["group"]) + list(everyone["group"])))
    out = pd.concat([cohort, everyone], ignore_index=True)
    out["difference"] = out["group"].map(diff)
    out["group"] = pd.Categorical(out["group"], categories=order, ordered=True)
    out = out.sort_values(["group", "population"], ignore_index=True)
    out["group"] = out["group"].astype(object)
    return out[["group", "population", "events", "mean_attribution", "difference"]]
