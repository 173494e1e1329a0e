"""Self-supervised pre-training of the IntentTransformer's encoder on every user's events.

Labels are scarce (a new shop, a short log, a cohort nobody has bought from yet) but events are
not: every user's history, labelled or not, says which behaviours, categories and items follow
which. :func:`pretrain` teaches the encoder (embeddings, blocks, final LayerNorm) that structure with
two objectives, summed:

* **masked event modelling**: a share of the events in each sequence has its behaviour, item,
  category and search text hidden, and the encoder's output at that position must name them again
  (three cross-entropies: behaviour ids, categories, items). The event's time gap, hour and
  position stay visible, so the question is "what did the user do then?".
* **next-event prediction** (``next_event``, a window such as "1d"): the [CLS] output, the vector
  the fine-tune's head reads, must name the user's first event after the cutoff (its behaviour, or
  "none" within the window, and its category). Without it [CLS] is never a target and a frozen
  encoder hands the head an untrained summary. Targets read events after each cutoff, never after
  ``until``.

A fine-tune then starts from these weights (:func:`init_from_pretrained`), frozen, partly frozen
or free.

Examples
--------
Every user at several cutoffs: the grid ``end, end - step, end - 2 step, ...`` back to the first
event (``end`` = ``until`` or the dataset's last event), or an explicit list. A user is an example
at a cutoff when they have at least one event since the previous grid point (a user who did nothing
in between would repeat the same sequence), built with :func:`core.modeling.sequences.build_sequences`
exactly as training does. No event after ``until`` is read: to report a fine-tuned model on a test
window honestly, pass the test window's cutoff there (its labels then stay unseen; the next-event
targets do read the windows before it, validation included).

Masking (as in BERT): each real event is chosen with probability ``mask_prob`` (at least one per
sequence); of the chosen, 80 % have their behaviour, item, category and query ids set to 0 (the
zero padding vectors: "hidden"), 10 % take those of a random event of the batch, 10 % stay as
they are. Categories are predicted over the whole table and items over the whole table too when it
has at most :data:`FULL_SOFTMAX_ITEMS` rows, else over a sampled softmax (the batch's target items
plus :data:`ITEM_NEGATIVES` uniform ids); both output layers share weights with the input
embeddings, so the prediction task shapes the very vectors a fine-tune starts from.

Memory is bounded: users are split once, by a seeded permutation, into chunks of ``chunk_users``;
each epoch visits the chunks in a fresh order and builds each chunk's sequences when it comes
(one chunk alone is built once and kept). A held-out share of users (:data:`HOLDOUT_SHARE`, at most
:data:`MAX_HOLDOUT_USERS`) is never trained on; its masked loss, with fixed masks, is reported per
epoch, so "the loss went down" means the encoder generalises, not that it memorised.

Resumable like :func:`core.modeling.training.fit_transformer`: a checkpoint per epoch in
``<out_dir>.checkpoint`` (model, optimiser, schedule, RNG state, history), written atomically;
the same call after a kill resumes after the last finished epoch and ends with the same weights
as an uninterrupted run (every epoch draws its order, masks and dropout from (seed, epoch)).

Saved directory (written atomically, like a model directory)::

    pretrain.json   the card: format, config (TransformerConfig), dataset, events, examples,
                    cutoffs, epochs, history (losses per epoch), seconds, libraries
    encoder.pt      the encoder's state dict (tensors only: torch.load(weights_only=True))
    vocab.json      the core.modeling.sequences.Vocab; a fine-tune must build its sequences with it

``hashed_vocab=True`` gives every item and category a stable-hash bucket only (no top-K ids), so
two datasets map a value to the same row and an encoder pre-trained on one transfers to the other.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from core.data.schema import BEHAVIOR_CODE, BEHAVIORS, behavior_code_sql
from core.errors import DataError, EligibilityError, ModelError
from core.modeling.labels import LabelSpec, TimeLike, _to_datetime, parse_duration
from core.modeling.sequences import OOV, Vocab, build_sequences, build_vocab, map_ids
from core.modeling.training import (
    CHECKPOINT_VERSION,
    TrainConfig,
    _device,
    _load_checkpoint,
    _lr_lambda,
    _save_checkpoint,
    _threads,
)
from core.progress import CancelToken, ProgressFn, report
from models.transformer import (
    INPUTS,
    MAX_PARAMETERS,
    IntentTransformer,
    SelfAttention,
    TransformerConfig,
    model_inputs,
    state_shapes,
)

if TYPE_CHECKING:
    from core.data.store import Store

FORMAT = "intentlens-pretrain/1"
CARD_FILE = "pretrain.json"
ENCODER_FILE = "encoder.pt"
VOCAB_FILE = "vocab.json"
MAX_CARD_BYTES = 16 * 2**20

# The encoder: what pre-training trains and init_from_pretrained copies (state-dict name prefixes).
# The event-content embeddings first; the freeze mode "embeddings" freezes those.
CONTENT_EMBEDDINGS = ("behavior_emb.", "item_emb.", "category_emb.", "gap_emb.", "hour_emb.", "query_emb.",
                      "pos_emb.")
ENCODER_PREFIXES = (*CONTENT_EMBEDDINGS, "special_emb.", "blocks.", "ln_f.")
FREEZE_MODES = ("none", "embeddings", "all")

HASH_ITEM_BUCKETS = 1 << 16      # hashed vocabulary: item rows (ids 2..65537), shared by every dataset
HASH_CATEGORY_BUCKETS = 1 << 12  # ... and category rows
FULL_SOFTMAX_ITEMS = 8192        # item tables up to this size get a full softmax; larger ones a sampled one
ITEM_NEGATIVES = 2048            # uniform negatives of the sampled item softmax (beside the batch's targets)
HOLDOUT_SHARE = 0.05             # users never trained on, whose masked loss is reported per epoch
MAX_HOLDOUT_USERS = 1000
HOLDOUT_ROWS = 4096              # held-out examples evaluated at most (the newest cutoffs first)
BUCKET_BATCHES = 32              # mini-batches sorted by length together (see _length_batches)
KEEP_SHARE, RANDOM_SHARE = 0.1, 0.1   # of the chosen events: kept as they are / replaced by a random event's
NEXT_CLASSES = 1 + len(BEHAVIORS)     # next event: 0 = none within the window, else its BEHAVIOR_CODE
NEXT_TARGETS = ("next_behavior", "next_category")
LOSS_PARTS = ("behavior", "category", "item", *NEXT_TARGETS)   # the cross-entropies, in the order reported

LogFn = Callable[[str], None]

# Name of the cutoff table registered on a cursor (a code constant, never user input).
_CUTOFFS_VIEW = "il_pretrain_cutoffs"
# (user, cutoff) for every user with an event in (previous cutoff, cutoff]: each event is matched to
# the first cutoff at or after it (ASOF), the pairs are made distinct and come back as integer codes
# (the user's rank in _USERS_SQL's order, the cutoff's index), so a million users cost no strings here.
_EXAMPLES_SQL = f"""
WITH pairs AS (
    SELECT DISTINCT e.user_id, c.idx
    FROM (SELECT user_id, ts FROM events WHERE dataset = ? AND ts <= ?) e
    ASOF JOIN {_CUTOFFS_VIEW} c ON e.ts <= c.cutoff)
SELECT (dense_rank() OVER (ORDER BY user_id) - 1)::BIGINT AS user_code, idx::BIGINT AS cutoff_code
FROM pairs ORDER BY user_code, cutoff_code
"""
_USERS_SQL = "SELECT DISTINCT user_id FROM events WHERE dataset = ? AND ts <= ? ORDER BY user_id"
_NEXT_VIEW = "il_pretrain_next"
# Each example's next event: the first one after its cutoff and at or before hi (ties broken on
# behaviour, item and category, so the target is the same on every run).
_NEXT_SQL = f"""
SELECT k.row, e.behavior::VARCHAR AS behavior, e.category
FROM {_NEXT_VIEW} k JOIN events e ON e.user_id = k.user_id AND e.ts > k.cutoff AND e.ts <= k.hi
WHERE e.dataset = ?
QUALIFY row_number() OVER (PARTITION BY k.row ORDER BY e.ts, {behavior_code_sql('e.behavior')}, e.item_id,
                                                  e.category) = 1
"""


# ---------------------------------------------------------------------------------------------
# The pre-training model: the IntentTransformer's encoder and its output heads
# ---------------------------------------------------------------------------------------------
class MaskedEventModel(nn.Module):
    """An :class:`IntentTransformer` read at every event (not only at [CLS]) plus the heads that name
    a hidden event's behaviour, category and item, and (``next_event``) the heads that read [CLS] and
    name the user's next event: its behaviour, or "none" within the window, and its category.
    Category and item logits are dot products with the input embedding tables (tied weights) plus a
    bias per row."""

    def __init__(self, config: TransformerConfig, next_event: bool = True):
        super().__init__()
        self.encoder = IntentTransformer(config)
        for module in self.encoder.modules():
            if isinstance(module, SelfAttention):
                # no dropout on the attention probabilities: torch's CPU kernel with dropout is some
                # 8x slower than without (the embedding, residual and MLP dropout stay)
                module.dropout = 0.0
        C = config.d_model
        self.transform = nn.Sequential(nn.Linear(C, C), nn.GELU(), nn.LayerNorm(C))
        self.behavior_out = nn.Linear(C, config.n_behaviors)
        self.category_bias = nn.Parameter(torch.zeros(config.n_categories))
        self.item_bias = nn.Parameter(torch.zeros(config.n_items))
        self.next_transform = nn.Sequential(nn.Linear(C, C), nn.GELU(), nn.LayerNorm(C)) if next_event else None
        self.next_behavior_out = nn.Linear(C, NEXT_CLASSES) if next_event else None

    def hidden(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every event's output vector (B, L, C) and the [CLS] output (B, C): embed, all blocks over
        all tokens, final norm."""
        enc = self.encoder
        x, key_mask = enc.embed(*(inputs[name] for name in INPUTS))       # (B, S+L, C)
        for block in enc.blocks:
            x, _ = block(x, key_mask)                                      # (B, S+L, C)
        x = enc.ln_f(x)                                                    # (B, S+L, C)
        events: torch.Tensor = self.transform(x[:, enc.n_special:])        # (B, L, C)
        return events, x[:, 0]

    def losses(self, inputs: dict[str, torch.Tensor], chosen: torch.Tensor, targets: dict[str, torch.Tensor],
               gen: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Cross-entropies at the ``chosen`` (B, L) positions against their original ids (M,) each,
        and of the next event (``next_behavior`` (B,): class, -1 unknown; ``next_category`` (B,)).
        ``gen`` draws the sampled softmax's negatives (on CPU)."""
        events, cls = self.hidden(inputs)
        h = events[chosen]                                                 # (M, C)
        out = {"behavior": F.cross_entropy(self.behavior_out(h), targets["behavior"])}
        out["category"] = self._category_loss(h, targets["category"])
        out["item"] = self._item_loss(h, targets["item"], gen)
        if self.next_transform is not None and self.next_behavior_out is not None and "next_behavior" in targets:
            z = self.next_transform(cls)                                   # (B, C)
            known = targets["next_behavior"] >= 0
            out["next_behavior"] = (F.cross_entropy(self.next_behavior_out(z[known]), targets["next_behavior"][known])
                                    if bool(known.any()) else z.sum() * 0.0)
            out["next_category"] = self._category_loss(z, targets["next_category"])
        return out

    def _category_loss(self, h: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        known = category > OOV                                             # missing values teach nothing
        if not bool(known.any()):
            return h.sum() * 0.0
        return F.cross_entropy(h[known] @ self.encoder.category_emb.weight.T + self.category_bias, category[known])

    def _item_loss(self, h: torch.Tensor, item: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        known = item > OOV
        if not bool(known.any()):
            return h.sum() * 0.0
        h, item = h[known], item[known]
        weight, n_items = self.encoder.item_emb.weight, self.encoder.config.n_items
        if n_items <= FULL_SOFTMAX_ITEMS:
            return F.cross_entropy(h @ weight.T + self.item_bias, item)
        negatives = torch.randint(OOV + 1, n_items, (ITEM_NEGATIVES,), generator=gen).to(item.device)
        candidates = torch.unique(torch.cat([item, negatives]))          # sorted, every target included
        target = torch.searchsorted(candidates, item)
        return F.cross_entropy(h @ weight[candidates].T + self.item_bias[candidates], target)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors (ENCODER_PREFIXES), CPU copies: what ``encoder.pt`` holds."""
        return {name: value.detach().to("cpu", copy=True) for name, value in self.encoder.state_dict().items()
                if name.startswith(ENCODER_PREFIXES)}


def mask_events(inputs: dict[str, torch.Tensor], mask_prob: float,
                gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Hide a share of each sequence's events (see the module doc); returns the masked inputs (a new
    dict; the caller's tensors are untouched), the chosen positions (B, L) and their original
    behaviour, item and category ids (M,) each, all on CPU."""
    real = inputs["mask"]                                                  # (B, L) bool
    B, L = real.shape
    draw = torch.rand(B, L, generator=gen)
    chosen = (draw < mask_prob) & real
    # a sequence with events but none chosen: choose its event with the smallest draw
    lonely = real.any(dim=1) & ~chosen.any(dim=1)                          # (B,)
    first = draw.masked_fill(~real, 2.0).argmin(dim=1)                     # (B,)
    chosen[lonely, first[lonely]] = True
    targets = {name: inputs[name][chosen] for name in ("behavior", "item", "category")}   # (M,) each
    out = {name: value.clone() for name, value in inputs.items()}
    how = torch.rand(int(chosen.sum()), generator=gen)                     # (M,)
    rows, cols = chosen.nonzero(as_tuple=True)
    hide = how < 1.0 - KEEP_SHARE - RANDOM_SHARE
    swap = (how >= 1.0 - KEEP_SHARE - RANDOM_SHARE) & (how < 1.0 - KEEP_SHARE)
    real_rows, real_cols = real.nonzero(as_tuple=True)
    donor = torch.randint(len(real_rows), (int(swap.sum()),), generator=gen)   # a random real event each
    for name in ("behavior", "item", "category", "query"):
        out[name][rows[hide], cols[hide]] = 0
        out[name][rows[swap], cols[swap]] = inputs[name][real_rows[donor], real_cols[donor]]
    return out, chosen, targets


# ---------------------------------------------------------------------------------------------
# Examples: every user at every cutoff where they did something new
# ---------------------------------------------------------------------------------------------
@dataclass
class PretrainExamples:
    """(user, cutoff) pairs held compactly: codes into ``users`` and ``cutoffs``."""

    users: np.ndarray            # (U,) object: user ids as text
    cutoffs: list[datetime]      # the cutoff grid, oldest first (naive UTC)
    user_code: np.ndarray        # (N,) int64 index into users
    cutoff_code: np.ndarray      # (N,) int64 index into cutoffs

    def __len__(self) -> int:
        return len(self.user_code)

    def keys(self, rows: np.ndarray) -> pd.DataFrame:
        """The example rows ``build_sequences`` takes: user_id, cutoff, label 0, split 'pretrain'."""
        return pd.DataFrame({
            "user_id": self.users[self.user_code[rows]],
            "cutoff": pd.Series(np.asarray(self.cutoffs, dtype="datetime64[us]")[self.cutoff_code[rows]],
                                dtype="datetime64[us]"),
            "label": np.zeros(len(rows), dtype=np.int64),
            "split": "pretrain",
        })


def cutoff_grid(store: Store, dataset: str, cutoffs: str | Sequence[TimeLike] = "1d",
                until: TimeLike | None = None) -> list[datetime]:
    """The pre-training cutoffs, oldest first: for a duration text, ``end - k * step`` (k = 0, 1, ...)
    while after the first event, where ``end`` is ``until`` or the last event; for a list, its
    cutoffs at or before ``until``. DataError when none is left."""
    info = store.dataset(dataset)                   # NotFoundError names the datasets that exist
    ts_min, ts_max = info.get("ts_min"), info.get("ts_max")
    if ts_min is None or ts_max is None or pd.isna(ts_min) or pd.isna(ts_max):
        raise DataError(f"dataset {dataset!r} has no events.", title="Empty dataset",
                        hint="Ingest a file with events into it first.")
    first, last = _to_datetime(ts_min), _to_datetime(ts_max)
    end = min(last, _time(until, "until")) if until is not None else last
    if isinstance(cutoffs, str):
        step = parse_duration(cutoffs)
        grid = []
        k = 0
        while end - k * step >= first:
            grid.append(end - k * step)
            k += 1
    else:
        grid = [t for t in (_time(c, "cutoffs") for c in cutoffs) if first <= t <= end]
    if not grid:
        raise DataError(f"no pre-training cutoff falls between the first event of {dataset!r} "
                        f"({first}) and {end}.", title="No pre-training cutoffs",
                        hint="Pass a later --until, or cutoffs inside the dataset's time range.")
    return sorted(set(grid))


def _time(value: TimeLike, name: str) -> datetime:
    try:
        return _to_datetime(value)
    except ValueError as err:
        raise DataError(f"{name}: {value!r} is not a time.", title="Bad pre-training setting",
                        hint="Write an ISO date or date-time in UTC, such as 2017-12-03 or 2017-12-03T12:00.") from err


def pretrain_examples(store: Store, dataset: str, grid: list[datetime]) -> PretrainExamples:
    """Every (user, cutoff) of ``grid`` where the user has an event since the previous cutoff."""
    frame = pd.DataFrame({"cutoff": pd.Series(grid, dtype="datetime64[us]"), "idx": np.arange(len(grid))})
    with store.cursor() as cur:
        store.register_df(cur, _CUTOFFS_VIEW, frame)
        pairs = cur.execute(_EXAMPLES_SQL, [dataset, grid[-1]]).fetchnumpy()
        cur.unregister(_CUTOFFS_VIEW)
        users = cur.execute(_USERS_SQL, [dataset, grid[-1]]).fetchnumpy()["user_id"]
    return PretrainExamples(users=np.asarray(users, dtype=object), cutoffs=list(grid),
                            user_code=np.asarray(pairs["user_code"], dtype=np.int64),
                            cutoff_code=np.asarray(pairs["cutoff_code"], dtype=np.int64))


def next_event_targets(store: Store, dataset: str, keys: pd.DataFrame, window: timedelta, end: datetime,
                       vocab: Vocab) -> dict[str, np.ndarray]:
    """Per example row (user_id, cutoff): ``next_behavior``, the class of the user's first event in
    (cutoff, cutoff + window] (its BEHAVIOR_CODE, 0 when there is none, -1 when the window passes
    ``end`` and no event came before it: unknown), and ``next_category``, that event's category id
    (OOV when there is none). No event after ``end`` is read."""
    cutoff = pd.to_datetime(keys["cutoff"]).to_numpy(dtype="datetime64[us]")
    last = np.datetime64(end, "us")
    reach = cutoff + np.timedelta64(window, "us")                       # (N,) end of each window
    frame = pd.DataFrame({"row": np.arange(len(keys)), "user_id": keys["user_id"].astype(str).to_numpy(),
                          "cutoff": cutoff, "hi": np.minimum(reach, last)})
    with store.cursor() as cur:
        store.register_df(cur, _NEXT_VIEW, frame)
        found = cur.execute(_NEXT_SQL, [dataset]).df()
        cur.unregister(_NEXT_VIEW)
    behavior = np.where(reach <= last, 0, -1).astype(np.int64)          # none seen: none, if the window is whole
    category = np.full(len(keys), OOV, dtype=np.int64)
    rows = found["row"].to_numpy(dtype=np.int64)
    behavior[rows] = found["behavior"].map(BEHAVIOR_CODE).to_numpy(dtype=np.int64)
    category[rows] = map_ids(found["category"], vocab.categories, vocab.category_buckets)
    return {"next_behavior": behavior, "next_category": category}


def hashed_vocabulary() -> Vocab:
    """The dataset-independent vocabulary: hash buckets only, the pipeline's gap buckets."""
    from core.modeling.pipeline import GAP_BUCKETS, GAP_STEPS

    return Vocab(items={}, categories={}, item_buckets=HASH_ITEM_BUCKETS,
                 category_buckets=HASH_CATEGORY_BUCKETS, gap_buckets=GAP_BUCKETS, gap_steps=GAP_STEPS)


def _split_users(examples: PretrainExamples, chunk_users: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(held-out rows, training chunks of rows): users in a seeded order, the first ones held out."""
    n_users = len(examples.users)
    order = np.random.default_rng([seed, 7]).permutation(n_users)
    n_hold = min(MAX_HOLDOUT_USERS, round(HOLDOUT_SHARE * n_users)) if n_users >= 20 else 0
    rank = np.empty(n_users, dtype=np.int64)
    rank[order] = np.arange(n_users)
    user_rank = rank[examples.user_code]                       # (N,) position of each row's user
    held = np.flatnonzero(user_rank < n_hold)
    # the newest cutoffs first: the examples a fine-tune scores look like those
    held = held[np.argsort(-examples.cutoff_code[held], kind="stable")][:HOLDOUT_ROWS]
    train_rank = user_rank - n_hold
    rows = np.flatnonzero(train_rank >= 0)
    chunk_of = train_rank[rows] // max(1, int(chunk_users))
    by_chunk = np.argsort(chunk_of, kind="stable")
    bounds = np.flatnonzero(np.diff(chunk_of[by_chunk])) + 1
    return np.sort(held), [np.sort(part) for part in np.split(rows[by_chunk], bounds) if len(part)]


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    """What :func:`pretrain` returns."""

    out_dir: Path
    card: dict[str, Any]
    history: list[dict[str, float]]
    seconds: float                  # wall time of this call
    resumed_from: int = 0           # epochs already done in the checkpoint when this call began

    def summary(self) -> str:
        card, last = self.card, (self.history[-1] if self.history else {})
        lines = [f"Saved a pre-trained encoder to {self.out_dir}",
                 f"  dataset {card['dataset']}: {card['events']:,} events, {card['examples']['train']:,} "
                 f"training sequences ({card['examples']['users']:,} users at {len(card['cutoffs'])} cutoffs), "
                 f"{card['examples']['holdout']:,} held out",
                 f"  {len(self.history)} epochs in {card['seconds']:.1f} s; vocabulary "
                 f"{'hashed' if card['hashed_vocab'] else 'top-K + hash buckets'}"]
        if last:
            parts = ", ".join(f"{name.replace('_', ' ').replace('behavior', 'behaviour')} "
                              f"{last[f'holdout_{name}']:.3f}" for name in LOSS_PARTS if f"holdout_{name}" in last)
            lines.append(f"  last epoch: train loss {last['train_loss']:.3f}, held-out loss "
                         f"{last.get('holdout_loss', math.nan):.3f} ({parts})")
        lines.append(f"  fine-tune from it: python -m core train --dataset NAME --init {self.out_dir}")
        return "\n".join(lines)


def _signature(config: TransformerConfig, settings: dict[str, Any], info: dict[str, Any], n_examples: int,
               grid: list[datetime]) -> str:
    """What must match for a checkpoint to belong to this run (``epochs`` may grow)."""
    return json.dumps({"config": config.to_dict(), "settings": {k: v for k, v in settings.items() if k != "epochs"},
                       "dataset": info.get("name"), "sha256": info.get("sha256"),
                       "rows": int(info.get("rows_stored") or 0), "examples": n_examples,
                       "cutoffs": [t.isoformat() for t in grid]}, sort_keys=True, default=str)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / CARD_FILE).is_file())):
        raise ModelError(f"{out_dir} exists and is not a pre-trained encoder directory; refusing to replace it.",
                         hint="Choose another --out directory.")


def _evaluate(model: MaskedEventModel, tensors: dict[str, torch.Tensor], n: int, batch_size: int,
              mask_prob: float, seed: int, device: torch.device) -> dict[str, float]:
    """Masked losses on the held-out rows with masks fixed by ``seed`` (the same every epoch)."""
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    by_length = torch.from_numpy(np.argsort(tensors["mask"].sum(dim=1).numpy(), kind="stable"))
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            index = by_length[start:start + batch_size]
            masked, chosen, targets, _ = _step_batch(tensors, index, mask_prob, gen, device)
            for name, value in model.losses(masked, chosen, targets, gen).items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(index)
    out = {f"holdout_{name}": value / max(n, 1) for name, value in sums.items()}
    out["holdout_loss"] = sum(out.values())
    return out


def _step_batch(tensors: dict[str, torch.Tensor], index: torch.Tensor, mask_prob: float, gen: torch.Generator,
                device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor], int]:
    """One mini-batch on ``device``: the masked inputs (padding columns trimmed), the chosen
    positions, the targets (the hidden ids and the next event's, when built) and its real events."""
    inputs = _trim(model_inputs(tensors, index, torch.device("cpu")))
    masked, chosen, targets = mask_events(inputs, mask_prob, gen)
    targets.update({name: tensors[name][index] for name in NEXT_TARGETS if name in tensors})
    return _to(masked, device), chosen.to(device), _to(targets, device), int(inputs["mask"].sum())


def _length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices per mini-batch, in a random order, each batch of similar sequence lengths: the
    rows are shuffled, sorted by length within groups of :data:`BUCKET_BATCHES` batches, cut into
    batches, and the batches shuffled. With :func:`_trim` a batch of short sequences then costs
    what its longest sequence needs, not ``max_len``. ``ceil(len / batch_size)`` batches."""
    order = rng.permutation(len(lengths))
    group = BUCKET_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), group):
        part = order[start:start + group]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _trim(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the padding columns every row of a mini-batch has (sequences are left-padded and
    positions count from the right, so the result is unchanged)."""
    keep = max(1, int(inputs["mask"].sum(dim=1).max()))
    return {name: value[:, -keep:] for name, value in inputs.items()}


def _to(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device) for name, value in tensors.items()}


def pretrain(store: Store, dataset: str, out_dir: str | Path, *, max_len: int = 100, epochs: int = 4,
             d_model: int | None = None, n_heads: int | None = None, n_layers: int | None = None,
             d_ff: int | None = None, dropout: float | None = None, mask_prob: float = 0.15,
             cutoffs: str | Sequence[TimeLike] = "1d", until: TimeLike | None = None,
             next_event: str | None = "1d",
             batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0,
             threads: int | None = None, device: str = "cpu", chunk_users: int = 5000,
             progress: ProgressFn | None = None, cancel: CancelToken | None = None, log: LogFn | None = None,
             on_chunk: Callable[[dict[str, float]], None] | None = None,
             hashed_vocab: bool = False) -> PretrainResult:
    """Pre-train an encoder on ``dataset`` (masked events + next event) and save it to ``out_dir``.

    max_len: events per sequence (a fine-tune with the same max_len also gets the position table).
    d_model, n_heads, n_layers, d_ff, dropout: the encoder's sizes; None = the 'balanced' preset's
    (core.modeling.pipeline.PRESETS), so `train --init` without a preset matches it.
    mask_prob: share of each sequence's events hidden and predicted (at least one per sequence).
    cutoffs: grid step as duration text (from the last event back), or explicit cutoffs.
    next_event: window of the next-event objective ([CLS] names the user's first event after the
    cutoff: its behaviour or "none", and its category), duration text; None = masked events only.
    until: read no event after this time (default: all); a test window's cutoff for an honest test.
    chunk_users: users whose sequences are held in memory at once.
    hashed_vocab: items and categories by stable hash only, so two datasets share ids (transfer).
    threads, device: torch CPU threads (None = leave as is) and "cpu" | "cuda" | "auto".
    Callbacks as in fit_transformer: progress per step, log per line a person should read,
    cancel checked before every step; ``on_chunk`` after each chunk of an epoch with its epoch,
    chunk, sequences, events (real events in them), build_seconds and train_seconds (benches).
    See the module doc for the rest.
    """
    from core.modeling.pipeline import GAP_BUCKETS, GAP_STEPS, PRESETS, checkpoint_dir_for

    started = time.perf_counter()
    preset = PRESETS["balanced"]
    if not 0.0 < mask_prob < 1.0:
        raise DataError(f"mask_prob must be in (0, 1); got {mask_prob}.", title="Bad pre-training setting")
    for name, count in (("epochs", epochs), ("max_len", max_len), ("batch_size", batch_size),
                        ("chunk_users", chunk_users)):
        if count < 1:
            raise DataError(f"{name} must be >= 1; got {count!r}.", title="Bad pre-training setting")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    info = store.dataset(dataset)
    grid = cutoff_grid(store, dataset, cutoffs, until)
    end = grid[-1]
    report(progress, 0, None, "finding pre-training examples")
    examples = pretrain_examples(store, dataset, grid)
    if len(examples) == 0:
        raise EligibilityError(f"dataset {dataset!r} has no events at or before {end}.")
    n_events = int((store.fetchone("SELECT count(*) FROM events WHERE dataset = ? AND ts <= ?",
                                   [dataset, end]) or (0,))[0])
    vocab = (hashed_vocabulary() if hashed_vocab else
             build_vocab(store, dataset, end, min_count=preset.min_item_count, gap_steps=GAP_STEPS,
                         gap_buckets=GAP_BUCKETS))
    try:
        config = TransformerConfig.from_vocab(
            vocab, max_len, n_behaviors=vocab.n_behavior_ids,
            d_model=preset.d_model if d_model is None else d_model,
            n_heads=preset.n_heads if n_heads is None else n_heads,
            n_layers=preset.n_layers if n_layers is None else n_layers,
            d_ff=preset.d_ff if d_ff is None else d_ff,
            dropout=preset.dropout if dropout is None else dropout)
    except ValueError as err:
        raise DataError(str(err), title="Bad pre-training setting") from err
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                     threads=threads, device=device)
    held, chunks = _split_users(examples, chunk_users, seed)
    if not chunks:
        raise EligibilityError(f"dataset {dataset!r} has too few users to pre-train on ({len(examples.users)}).")
    spec = LabelSpec(max_len=max_len)
    window = parse_duration(next_event) if next_event is not None else None
    settings = {"max_len": max_len, "epochs": epochs, "mask_prob": mask_prob, "next_event": next_event,
                "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
                "chunk_users": chunk_users, "hashed_vocab": hashed_vocab, "until": end.isoformat()}
    signature = _signature(config, settings, info, len(examples), grid)
    steps = [math.ceil(len(rows) / batch_size) for rows in chunks]
    steps_per_epoch = sum(steps)
    total_steps = epochs * steps_per_epoch
    ckpt_dir = checkpoint_dir_for(out_dir)
    dev = _device(device)
    n_train = int(sum(len(rows) for rows in chunks))
    _log(log, f"pre-training on {dataset}: {n_train:,} sequences of {len(examples.users) - _users(examples, held):,} "
              f"users at {len(grid)} cutoffs up to {end}; {len(held):,} held-out sequences; "
              f"{len(chunks)} chunk(s) of at most {chunk_users:,} users")

    def build(rows: np.ndarray) -> dict[str, torch.Tensor]:
        """A chunk's compact input tensors and, with the next-event objective, its targets."""
        keys = examples.keys(rows)
        tensors = build_sequences(store, dataset, keys, vocab, spec, cancel=cancel).tensors(widen=False)
        if window is not None:
            targets = next_event_targets(store, dataset, keys, window, end, vocab)
            tensors.update({name: torch.from_numpy(value) for name, value in targets.items()})
        return tensors

    held_t = build(held) if len(held) else None
    cached = build(chunks[0]) if len(chunks) == 1 else None

    with _threads(tc.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MaskedEventModel(config, next_event=window is not None).to(dev)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(tc, total_steps))
        history: list[dict[str, float]] = []
        done_epochs = 0
        state = _load_checkpoint(ckpt_dir, signature, log)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            history = list(state["history"])
            done_epochs = int(state["epoch"])
            message = f"resumed from the checkpoint at epoch {done_epochs} of {epochs}"
            _log(log, message)
            report(progress, min(done_epochs, epochs) * steps_per_epoch, total_steps, message)
        resumed_from = done_epochs

        for epoch in range(done_epochs + 1, epochs + 1):
            epoch_start = time.perf_counter()
            torch.manual_seed(seed * 100_003 + epoch)               # dropout of this epoch
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            rng = np.random.default_rng([seed, epoch])
            sums: dict[str, float] = {}
            seen, events, step_done = 0, 0, (epoch - 1) * steps_per_epoch
            build_seconds = 0.0
            for chunk in rng.permutation(len(chunks)):
                chunk_start, chunk_events = time.perf_counter(), events
                tensors = cached if cached is not None else build(chunks[chunk])
                built = time.perf_counter()
                build_seconds += built - chunk_start
                model.train()
                for index in _length_batches(tensors["mask"].sum(dim=1).numpy(), batch_size, rng):
                    if cancel is not None:
                        cancel.check()
                    masked, chosen, targets, n_real = _step_batch(tensors, torch.from_numpy(index), mask_prob,
                                                                  gen, dev)
                    parts = model.losses(masked, chosen, targets, gen)
                    loss = torch.stack(list(parts.values())).sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    for name, value in parts.items():
                        sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(index)
                    seen += len(index)
                    events += n_real
                    step_done += 1
                    report(progress, step_done, total_steps,
                           f"pre-training epoch {epoch}/{epochs} loss {sum(sums.values()) / seen:.3f}")
                if on_chunk is not None:
                    on_chunk({"epoch": epoch, "chunk": int(chunk), "sequences": len(tensors["mask"]),
                              "events": events - chunk_events, "build_seconds": built - chunk_start,
                              "train_seconds": time.perf_counter() - built})
            record: dict[str, float] = {"epoch": epoch, "train_loss": sum(sums.values()) / max(seen, 1),
                                        **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}
            if held_t is not None:
                record.update(_evaluate(model, held_t, len(held), 1024, mask_prob, seed, dev))
            record.update({"lr": float(scheduler.get_last_lr()[0]), "sequences": seen, "events": events,
                           "build_seconds": build_seconds, "seconds": time.perf_counter() - epoch_start})
            history.append(record)
            _log(log, f"epoch {epoch}/{epochs}: train loss {record['train_loss']:.3f}"
                      + (f", held-out loss {record['holdout_loss']:.3f}" if "holdout_loss" in record else "")
                      + f" ({events / record['seconds']:,.0f} events/s)")
            _save_checkpoint(ckpt_dir, {
                "version": CHECKPOINT_VERSION, "signature": signature, "epoch": epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "history": history})
        model.eval()
        encoder = model.encoder_state()

    seconds = time.perf_counter() - started
    objective = "masked events (behaviour, category, item)" + (
        f" + next event within {next_event} (behaviour or none, category)" if next_event is not None else "")
    card = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset, "dataset_sha256": info.get("sha256"), "events": n_events,
        "config": config.to_dict(), "hashed_vocab": hashed_vocab, "objective": objective, "settings": settings,
        "cutoffs": [t.isoformat() for t in grid],
        "examples": {"train": n_train, "holdout": len(held), "users": len(examples.users), "chunks": len(chunks)},
        "epochs": len(history), "history": history, "seconds": seconds,
        "losses": {k: v for k, v in (history[-1] if history else {}).items()
                   if k.startswith(("train_", "holdout_"))},
    }
    _save_dir(out_dir, encoder, vocab, card)
    if ckpt_dir.is_dir():
        shutil.rmtree(ckpt_dir)                 # the run finished: nothing left to resume
    return PretrainResult(out_dir=out_dir, card=card, history=history, seconds=seconds, resumed_from=resumed_from)


def _users(examples: PretrainExamples, rows: np.ndarray) -> int:
    return len(np.unique(examples.user_code[rows]))


def _log(log: LogFn | None, line: str) -> None:
    if log is not None:
        log(line)


def _save_dir(out_dir: Path, encoder: dict[str, torch.Tensor], vocab: Vocab, card: dict[str, Any]) -> None:
    """Write the three files into a temporary sibling and rename it into place (no half directory)."""
    from models.artifact import json_default, library_versions

    _check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    card = {**card, "files": [CARD_FILE, ENCODER_FILE, VOCAB_FILE], "libraries": library_versions()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        torch.save(encoder, tmp / ENCODER_FILE)
        (tmp / VOCAB_FILE).write_text(json.dumps(vocab.to_dict()))
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=1, default=json_default))
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


# ---------------------------------------------------------------------------------------------
# Loading and initialising a fine-tune
# ---------------------------------------------------------------------------------------------
def load_pretrained(pretrained_dir: str | Path) -> tuple[dict[str, torch.Tensor], Vocab, dict[str, Any]]:
    """(encoder state dict, vocabulary, card) of a directory :func:`pretrain` wrote.

    ModelError, saying what is wrong, for a missing directory, one without ``pretrain.json`` (a model
    directory, say), a card that is not JSON or of another format, a configuration that breaks a
    rule of TransformerConfig, a vocabulary that does not give the configuration's rows, or weights
    that are not tensors of exactly the encoder's names and shapes (read with ``weights_only=True``).
    """
    from pickle import UnpicklingError  # only the error class torch.load raises on bad files

    path = Path(pretrained_dir)
    hint = "Write it again with `python -m core pretrain --dataset NAME --out DIR`."
    if not path.is_dir():
        raise ModelError(f"{path} is not a directory.", hint="Pass the directory `python -m core pretrain` wrote.")
    card_path = path / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"{path} has no {CARD_FILE}: it is not a pre-trained encoder.",
                         hint="Pass a directory written by `python -m core pretrain` (not a model directory).")
    if card_path.stat().st_size > MAX_CARD_BYTES:
        raise ModelError(f"{card_path} is larger than a pre-training card can be.", hint=hint)
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelError(f"{card_path} is not valid JSON ({err}).", hint=hint) from err
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        found = card.get("format") if isinstance(card, dict) else None
        raise ModelError(f"{card_path} is of format {found!r}; this version reads {FORMAT!r}.", hint=hint)
    try:
        config = TransformerConfig.from_dict(card["config"])
        vocab_data = json.loads((path / VOCAB_FILE).read_text())
        vocab = Vocab.from_dict(vocab_data)
        rows = {"items": (vocab.n_items, config.n_items), "categories": (vocab.n_categories, config.n_categories),
                "query buckets": (int(vocab.query_buckets) + 1, config.n_query_buckets),
                "gap buckets": (int(vocab.gap_buckets) + 1, config.n_gaps)}
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as err:
        raise ModelError(f"{path} holds no usable configuration and vocabulary ({err}).", hint=hint) from err
    wrong = [f"{name} {got} != {want}" for name, (got, want) in rows.items() if got != want]
    if wrong:
        raise ModelError(f"{path / VOCAB_FILE} does not match the configuration in {CARD_FILE} "
                         f"({', '.join(wrong)}).", hint=hint)
    expected = {name: shape for name, shape in state_shapes(config).items() if name.startswith(ENCODER_PREFIXES)}
    n_values = sum(math.prod(shape) for shape in expected.values())
    if n_values > MAX_PARAMETERS:
        raise ModelError(f"the encoder in {card_path} would hold {n_values:,} weights; this version loads at most "
                         f"{MAX_PARAMETERS:,}.", hint=hint)
    weights = path / ENCODER_FILE
    try:
        if weights.stat().st_size > 8 * n_values + 2**20:
            raise ModelError(f"{weights} is larger than its configuration can need.", hint=hint)
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, UnpicklingError, EOFError, ValueError, OSError) as err:
        first = " ".join(str(err).strip().splitlines()[:2])[:300]
        raise ModelError(f"{weights} is not an encoder weights file this version reads ({first}).",
                         hint=hint) from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              and v.is_floating_point() for k, v in state.items()):
        raise ModelError(f"{weights} does not hold a state dict (names -> floating tensors).", hint=hint)
    problems = sorted(set(expected) ^ set(state))
    problems += [name for name, shape in expected.items() if name in state and tuple(state[name].shape) != shape]
    if problems:
        raise ModelError(f"the weights in {weights} do not match the configuration in {CARD_FILE} "
                         f"({', '.join(problems[:3])}{' ...' if len(problems) > 3 else ''}).", hint=hint)
    return state, vocab, card


def pretrained_config(pretrained_dir: str | Path, **changes: int | float | str) -> TransformerConfig:
    """A TransformerConfig for a fine-tune from ``pretrained_dir``: the encoder's sizes and vocabulary
    rows, with the fine-tune's own fields in ``changes`` (scope, dropout, max_len, event_stats, ...).
    ModelError when a change breaks a rule of TransformerConfig."""
    _, _, card = load_pretrained(pretrained_dir)
    try:
        return TransformerConfig.from_dict({**card["config"], **changes})
    except (TypeError, ValueError) as err:
        raise ModelError(f"the fine-tune's configuration does not fit the encoder in {pretrained_dir} ({err}).",
                         hint="Change only the scope, dropout, max_len or the head's own fields.") from err


def init_from_pretrained(model: IntentTransformer, pretrained_dir: str | Path, freeze: str = "none", *,
                         vocab: Vocab | None = None) -> dict[str, Any]:
    """Copy a pre-trained encoder into ``model`` and freeze what ``freeze`` says; returns a record for
    the model card: ``loaded``, ``skipped`` (name: why) and ``frozen`` parameter names, ``freeze``,
    ``pretrained`` (the directory) and ``pretrain`` (its dataset, epochs and last losses).

    Only encoder tensors (ENCODER_PREFIXES) whose name and shape match are copied; any other part of
    ``model`` (its head, read-outs, parameters a newer model adds) keeps its initialisation.
    freeze: "none" (everything trains), "embeddings" (the loaded event-content embeddings are fixed),
    "all" (every loaded encoder tensor is fixed: only the rest, the head, trains). Freezing sets
    ``requires_grad=False``, which the training loop's optimiser honours.
    vocab: the vocabulary the fine-tune's sequences are built with; ModelError unless it is the
    encoder's (ids would point at other rows). ModelError too when nothing matches (other sizes).
    """
    if freeze not in FREEZE_MODES:
        raise ModelError(f"freeze must be one of {', '.join(FREEZE_MODES)}; got {freeze!r}.")
    state, pre_vocab, card = load_pretrained(pretrained_dir)
    if vocab is not None and vocab.to_dict() != pre_vocab.to_dict():
        raise ModelError(f"the fine-tune's vocabulary is not the one the encoder in {pretrained_dir} was "
                         "pre-trained with, so item and category ids would point at other rows.",
                         hint=f"Build the sequences with the vocabulary in {Path(pretrained_dir) / VOCAB_FILE}.")
    own = model.state_dict()
    loaded = [name for name, value in state.items() if name in own and tuple(own[name].shape) == tuple(value.shape)]
    skipped = {name: ("not in the model" if name not in own else
                      f"shape {tuple(value.shape)} here, {tuple(own[name].shape)} in the model")
               for name, value in state.items() if name not in loaded}
    if not loaded:
        raise ModelError(f"no tensor of the encoder in {pretrained_dir} fits this model (d_model "
                         f"{card['config'].get('d_model')} there, {model.config.d_model} here).",
                         hint="Fine-tune with the encoder's sizes (pretrained_config).")
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(state[name])
    prefixes = {"none": (), "embeddings": CONTENT_EMBEDDINGS, "all": ENCODER_PREFIXES}[freeze]
    frozen = []
    for name, param in model.named_parameters():
        if name in loaded and name.startswith(prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    last = card["history"][-1] if card.get("history") else {}
    return {"pretrained": str(pretrained_dir), "freeze": freeze, "loaded": loaded, "skipped": skipped,
            "frozen": frozen,
            "pretrain": {"dataset": card.get("dataset"), "epochs": card.get("epochs"),
                         "hashed_vocab": card.get("hashed_vocab"), "events": card.get("events"),
                         "holdout_loss": last.get("holdout_loss"), "train_loss": last.get("train_loss")}}

