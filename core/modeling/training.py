"""Training loop for the IntentTransformer: fit, predict, resume, search.

``fit_transformer`` is the whole recipe:

* AdamW (weight decay on matrices and embeddings, none on biases and LayerNorm), linear warm-up then
  a cosine (or linear) decay of the learning rate, gradient clipping.
* Class imbalance: ``pos_weight`` in ``BCEWithLogitsLoss`` (or balanced sampling). Either one skews
  the logit by log(weight); the model's ``logit_offset`` buffer removes that skew again, so the
  probabilities it returns stay calibrated (a prior correction).
* Distillation (``distill`` > 0): each training row's target is (1 - distill) * its label + distill *
  a teacher's probability for it (``core.modeling.pipeline`` passes an out-of-fold GBDT's). The
  loss is linear in the target, so this is the label loss and the teacher's soft-label loss mixed
  at that weight, both under the same class weight, and the prior correction still holds. A few
  hundred buyers give the label loss little to learn from; the teacher's probabilities grade every
  row.
* Multi-task (``aux_cart`` > 0): a second head, beside the buy head and reading the same vector
  (the [CLS] read-out and the event statistics), predicts whether the user carts in the same horizon
  (the training rows' ``carted`` column, ``core.modeling.labels.carted_in_horizon``); its loss,
  class-weighted like the buy loss, is added at that weight. Carts outnumber buys, so the shared
  encoder gets a denser signal. The head lives only in training: the saved model, its explanations
  and its ONNX export are the buy head's alone.
* Early stopping on validation PR-AUC (``average_precision_score``); the best epoch's weights are kept.
  When the validation labels hold one class, the lowest validation loss picks the epoch instead.
* Reproducible: the model is initialised from ``seed`` and every epoch draws its shuffling,
  augmentation and dropout from a generator seeded by (seed, epoch), inside ``torch.random.fork_rng``
  so the caller's random state is untouched. Same seed -> same weights on CPU.
* A checkpoint per epoch in ``checkpoint_dir`` (model, optimizer, scheduler, RNG state, history and the
  best weights so far), written atomically, so even ``kill -9`` leaves the last finished epoch's.
  Called again with the same directory, a cancelled or killed run resumes after its last finished
  epoch, says so through ``log`` ("resumed from the checkpoint at epoch 3 of 8") and ends exactly
  where an uninterrupted run would (same weights on CPU). A checkpoint of another run (other data,
  model size or settings; ``epochs`` and ``patience`` may change) is ignored, said so, and
  overwritten; an unreadable one raises ModelError. Deleting the directory after a finished run is
  the caller's job (``core.modeling.pipeline.train_model`` does it once the model is saved).
* Data-parallel when ``torch.distributed`` is initialised (``torchrun --nproc_per_node N -m core train``,
  gloo on CPU, NCCL on GPUs): every process draws the same global batch order, takes every N-th row
  of each global batch, and DistributedDataParallel averages the gradients, so N processes follow the
  one-process recipe (the same batches, learning-rate schedule and early stopping; a last batch
  with fewer rows than processes is skipped). Every process evaluates the whole validation window
  with the same weights, so all stop at the same epoch.
* Callbacks: ``progress(done, total, message)`` per batch, ``on_epoch(record)`` per epoch (on resume,
  the restored epochs first, so a live chart shows the whole run), ``log(line)`` for what a person
  should read, ``cancel.check()`` before every step (raises ``core.progress.Cancelled``).

``search_transformer`` runs an Optuna TPE search over a small space and records every trial.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from core.errors import EligibilityError, ModelError
from core.modeling.sequences import SequenceBatch
from core.progress import CancelToken, ProgressFn, report
from models.transformer import IntentTransformer, TransformerConfig, model_inputs

if TYPE_CHECKING:
    import pandas as pd

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 1

LogFn = Callable[[str], None]


class _Best(TypedDict):
    """The best epoch so far (a plain dict at run time, so a weights-only checkpoint can hold it)."""

    score: float                      # validation PR-AUC (or -loss when it has one class)
    epoch: int                        # 1-based; 0 before the first epoch
    bad_epochs: int                   # epochs since the last improvement
    state: dict[str, torch.Tensor]    # the model's weights at that epoch (CPU copies)


@dataclass
class TrainConfig:
    """How to train. Every field has a safe default for a few thousand to a million rows."""

    epochs: int = 10                 # int >= 1: passes over the training rows
    batch_size: int = 256            # int >= 1: rows per optimisation step
    lr: float = 1e-3                 # float > 0: peak learning rate of AdamW
    weight_decay: float = 0.01       # float >= 0: AdamW decay on matrices and embeddings
    warmup: float = 0.05             # float in [0, 1): share of all steps spent warming up linearly
    schedule: str = "cosine"         # "cosine" | "linear" | "constant": decay after warm-up
    min_lr_ratio: float = 0.05       # float in [0, 1]: final lr as a share of the peak
    patience: int = 3                # int >= 1: epochs without a better valid PR-AUC before stopping
    seed: int = 0                    # int: initialisation, shuffling, augmentation and dropout
    pos_weight: str | float = "auto" # "auto" (n_neg / n_pos, capped) | float >= 1: weight of positives
    max_pos_weight: float = 50.0     # float >= 1: cap of the "auto" weight
    balanced_sampling: bool = False  # bool: draw epochs half positives, half negatives (pos_weight 1)
    augment_crop: float = 0.0        # float in [0, 1]: chance a row keeps only its newest k events
    event_dropout: float = 0.0       # float in [0, 1): chance each event is hidden in a training row
    grad_clip: float = 1.0           # float > 0: max gradient norm (0 = no clipping)
    threads: int | None = None       # int >= 1: torch CPU threads while training; None = leave as is
    device: str = "cpu"              # "cpu" | "cuda" | "auto" (cuda when available)
    eval_batch_size: int = 1024      # int >= 1: rows per validation forward pass
    stats_lr_scale: float = 3.0      # float > 0: learning rate of the event-statistics path (if the model
                                     # has one) as a multiple of lr: a small MLP over counts that lr,
                                     # tuned for the attention blocks, trains too slowly
    keep: str = "best"               # "best" (the epoch with the best valid PR-AUC) | "last" (a refit
                                     # with a fixed epoch count: nothing is selected)
    ema_half_life: float = 0.0       # float >= 0: validate and keep an exponential moving average of the
                                     # weights whose half-life is this many epochs (0 = the raw weights);
                                     # per step the decay is 0.5 ** (1 / (half_life * steps per epoch))
    distill: float = 0.0             # float in [0, 1): weight of a teacher's probability in each training
                                     # row's target, (1 - distill) * label + distill * teacher (needs the
                                     # ``teacher`` probabilities of fit_transformer)
    aux_cart: float = 0.0            # float >= 0: weight of the auxiliary "carts within the horizon" loss
                                     # (a training-only second head; needs a ``carted`` column in the
                                     # training rows' keys); 0 = the buy label alone

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                  ("lr", self.lr > 0), ("weight_decay", self.weight_decay >= 0),
                  ("warmup", 0 <= self.warmup < 1), ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1),
                  ("patience", self.patience >= 1), ("max_pos_weight", self.max_pos_weight >= 1),
                  ("augment_crop", 0 <= self.augment_crop <= 1),
                  ("event_dropout", 0 <= self.event_dropout < 1), ("grad_clip", self.grad_clip >= 0),
                  ("schedule", self.schedule in ("cosine", "linear", "constant")),
                  ("pos_weight", self.pos_weight == "auto"
                   or (isinstance(self.pos_weight, (int, float)) and self.pos_weight >= 1)),
                  ("device", self.device in ("cpu", "cuda", "auto")),
                  ("keep", self.keep in ("best", "last")),
                  ("threads", self.threads is None or self.threads >= 1),
                  ("stats_lr_scale", self.stats_lr_scale > 0),
                  ("ema_half_life", self.ema_half_life >= 0),
                  ("distill", 0 <= self.distill < 1), ("aux_cart", self.aux_cart >= 0)]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} has an invalid value: {getattr(self, name)!r} "
                                 f"(see the field comment in core/training.py).")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """What fit_transformer returns: the best model (eval mode) and how it got there."""

    model: IntentTransformer
    history: list[dict[str, float]]  # one record per epoch (see on_epoch)
    best_epoch: int                  # 1-based epoch whose weights the model holds
    seconds: float                   # wall time of this call (resumed epochs are not re-counted)
    best_valid_pr_auc: float = float("nan")
    resumed_from: int = 0            # epochs already done in the checkpoint when this call began
    init: dict[str, Any] | None = None   # what ``init`` reported (a pre-trained encoder's record)
    valid_pred: np.ndarray | None = field(default=None, repr=False)  # best model's valid probabilities


# -- helpers --------------------------------------------------------------------------------
@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("TrainConfig.device is 'cuda' but no CUDA device is available.",
                         hint="Use device='cpu' or 'auto'.")
    return torch.device(name)


def _labels(batch: SequenceBatch, what: str) -> np.ndarray:
    if "label" not in batch.keys.columns:
        raise ModelError(f"the {what} rows carry no 'label' column.")
    y = batch.keys["label"].to_numpy(dtype=float)
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise ModelError(f"the {what} labels must be 0 or 1 (found NaN or other values).")
    return y


def _aux_labels(batch: SequenceBatch) -> np.ndarray:
    """The training rows' auxiliary target (``keys['carted']``, 0/1) for ``TrainConfig.aux_cart``."""
    if "carted" not in batch.keys.columns:
        raise ModelError("TrainConfig.aux_cart needs the training rows' 'carted' column "
                         "(core.modeling.labels.carted_in_horizon).")
    y = batch.keys["carted"].to_numpy(dtype=float)
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise ModelError("the training rows' 'carted' targets must be 0 or 1 (found NaN or other values).")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise EligibilityError(f"the auxiliary cart target holds one class only ({n_pos} of {len(y):,} "
                               "training rows cart within the horizon), so there is nothing to learn from it.",
                               hint="Train without the cart head (aux_cart 0).")
    return y


def _aux_head(model: IntentTransformer) -> torch.nn.Sequential:
    """A second head shaped like the buy head, reading the same vector (training only)."""
    first = model.head[0]
    assert isinstance(first, torch.nn.Linear)
    width = first.out_features
    head = torch.nn.Sequential(torch.nn.Linear(first.in_features, width), torch.nn.GELU(),
                               torch.nn.Dropout(model.config.dropout), torch.nn.Linear(width, 1))
    head.apply(model._init_weights)
    return head


def _augment(inputs: dict[str, torch.Tensor], tc: TrainConfig, gen: torch.Generator) -> None:
    """Hide older events (crop) and random events (dropout) by clearing their mask bits."""
    mask = inputs["mask"].bool()
    B, L = mask.shape
    if tc.augment_crop > 0:
        n_real = mask.sum(dim=1)                                            # (B,)
        crop = torch.rand(B, generator=gen) < tc.augment_crop
        keep = 1 + (torch.rand(B, generator=gen) * n_real.clamp(min=1)).long()  # 1..n_real
        keep = torch.where(crop, keep.clamp(max=L), torch.full_like(keep, L))
        positions = torch.arange(L)[None, :]                                # (1, L)
        mask = mask & (positions >= (L - keep)[:, None])
    if tc.event_dropout > 0:
        mask = mask & ~(torch.rand(B, L, generator=gen) < tc.event_dropout)
    inputs["mask"] = mask


def _lr_lambda(tc: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warm = int(tc.warmup * total_steps)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if tc.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if tc.schedule == "cosine" else 1.0 - progress
        return tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * decay
    return factor


def _optimizer(model: IntentTransformer, tc: TrainConfig,
               extra: torch.nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW: decay on matrices and embeddings only; the event-statistics path at ``stats_lr_scale``
    times the learning rate; ``extra`` (the auxiliary head) with the rest. Empty groups are left out,
    so a model without that path has the two groups it always had."""
    fast = {id(p) for p in model.statistics_parameters()}
    every = [*model.parameters(), *(extra.parameters() if extra is not None else ())]
    groups = []
    for scale, in_group in ((1.0, False), (tc.stats_lr_scale, True)):
        params = [p for p in every if p.requires_grad and (id(p) in fast) == in_group]
        for decayed in (True, False):
            chosen = [p for p in params if (p.dim() >= 2) == decayed]
            if chosen:
                groups.append({"params": chosen, "weight_decay": tc.weight_decay if decayed else 0.0,
                               "lr": tc.lr * scale})
    return torch.optim.AdamW(groups, lr=tc.lr)


def data_parallel() -> tuple[int, int]:
    """(rank, world size) of this process when ``torch.distributed`` is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _logits(model: IntentTransformer, tensors: dict[str, torch.Tensor], n: int,
            batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    model.eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            parts.append(model(**model_inputs(tensors, slice(start, start + batch_size), device)).float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0)


def predict_transformer(model: IntentTransformer, batch: SequenceBatch,
                        batch_size: int = 1024) -> np.ndarray:
    """P(purchase) per row of ``batch``, float64 (N,). Leaves the model in eval mode."""
    if model.config.scope == "category" and batch.target_category is None:
        raise ModelError("this model scores (user, category) rows but the batch has no "
                         "target_category.", hint="Build sequences with scope 'category'.")
    return model.predict_proba(batch.tensors(widen=False), batch_size)


def _signature(config: TransformerConfig, tc: TrainConfig, train: SequenceBatch,
               valid: SequenceBatch, y_train: np.ndarray, aux_train: np.ndarray | None = None) -> str:
    """What must match for a checkpoint to belong to this run (epochs/patience may grow)."""
    relevant = {k: v for k, v in tc.to_dict().items()
                if k not in ("epochs", "patience", "threads", "device", "eval_batch_size")}
    digest = hashlib.sha256(y_train.tobytes())
    if aux_train is not None:
        digest.update(aux_train.tobytes())
    for part in (train, valid):                 # a sample of the inputs tells datasets apart
        for name in ("behavior", "item", "gap"):
            digest.update(np.ascontiguousarray(getattr(part, name)[:5000], dtype=np.int64).tobytes())
    return json.dumps({"config": config.to_dict(), "train": relevant, "n_train": len(train),
                       "n_valid": len(valid), "train_pos": int(y_train.sum()),
                       "max_len": train.max_len, "data": digest.hexdigest()}, sort_keys=True)


def _save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)      # atomic: a kill never leaves half a file


def _load_checkpoint(directory: Path, signature: str, log: LogFn | None = None) -> dict[str, Any] | None:
    """This run's checkpoint in ``directory``; None when there is none or it is another run's."""
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    from pickle import UnpicklingError  # only the error class torch.load raises on bad files

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, UnpicklingError) as err:
        raise ModelError(f"the checkpoint {path} cannot be read ({err}).",
                         hint="Delete it to start training from scratch.") from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION \
            or state.get("signature") != signature:
        # a stale checkpoint of another run: start afresh (the first epoch overwrites it)
        if log is not None:
            log(f"ignored the checkpoint in {directory}: it belongs to another run (other data, model "
                "size or settings); training from the first epoch")
        return None
    return state


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# -- the loop -------------------------------------------------------------------------------
def fit_transformer(config: TransformerConfig, train: SequenceBatch, valid: SequenceBatch,
                    tc: TrainConfig, *, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None,
                    on_epoch: Callable[[dict[str, float]], None] | None = None,
                    checkpoint_dir: str | Path | None = None, log: LogFn | None = None,
                    init: Callable[[IntentTransformer], dict[str, Any]] | None = None,
                    teacher: np.ndarray | None = None) -> FitResult:
    """Train an IntentTransformer on ``train``, early-stopping on ``valid``; see the module doc.

    ``teacher``: another model's P(purchase) per training row (out of fold: it must not have seen the
    row's label), mixed into the targets at ``tc.distill``."""
    started = time.perf_counter()
    y_train, y_valid = _labels(train, "training"), _labels(valid, "validation")
    n_pos = int(y_train.sum())
    if n_pos == 0 or n_pos == len(y_train):
        raise EligibilityError(f"the training rows hold one class only ({n_pos} positives of "
                               f"{len(y_train)}).", hint="Use a longer history or another horizon.")
    if len(valid) == 0:
        raise EligibilityError("there are no validation rows.", hint="Use a longer history.")
    if config.scope == "category" and (train.target_category is None or valid.target_category is None):
        raise ModelError("scope 'category' needs target_category in the training and validation rows.")
    valid_two_classes = 0 < y_valid.sum() < len(y_valid)
    if tc.distill > 0:
        taught = None if teacher is None else np.asarray(teacher, dtype=float)
        if taught is None or taught.shape != y_train.shape or not ((taught >= 0) & (taught <= 1)).all():
            raise ModelError("TrainConfig.distill needs a teacher probability in [0, 1] for every training row.")
        target_train = (1.0 - tc.distill) * y_train + tc.distill * taught
    else:
        target_train = y_train
    device = _device(tc.device)
    ratio = (len(y_train) - n_pos) / n_pos                     # n_neg / n_pos
    if tc.balanced_sampling:
        loss_weight, prior_shift = 1.0, ratio                  # the sample itself is re-weighted
    else:
        loss_weight = min(tc.max_pos_weight, ratio) if tc.pos_weight == "auto" else float(tc.pos_weight)
        prior_shift = loss_weight
    steps_per_epoch = math.ceil(len(train) / tc.batch_size)
    total_steps = tc.epochs * steps_per_epoch
    aux_train = _aux_labels(train) if tc.aux_cart > 0 else None
    signature = _signature(config, tc, train, valid, target_train, aux_train)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    train_t, valid_t = train.tensors(widen=False), valid.tensors(widen=False)   # no int64 copy
    y_train_t = torch.from_numpy(target_train).float()
    y_valid_t = torch.from_numpy(y_valid).float()
    pos_idx, neg_idx = np.flatnonzero(y_train == 1), np.flatnonzero(y_train == 0)
    aux_train_t = torch.from_numpy(aux_train).float() if aux_train is not None else None

    with _threads(tc.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        model = IntentTransformer(config).to(device)
        init_record = init(model) if init is not None else None   # e.g. a pre-trained encoder (frozen parts)
        offset = model.logit_offset
        assert isinstance(offset, torch.Tensor)                 # a registered buffer
        offset.fill_(-math.log(prior_shift))
        # the loss sees positives with weight loss_weight (or half the sample when balanced): start
        # the output at those weighted log-odds (a resumed run loads its own weights below)
        model.init_output_bias(0.0 if tc.balanced_sampling else math.log(loss_weight / ratio))
        # multi-task: the cart head reads the buy head's input, caught by a hook as forward runs (so
        # DistributedDataParallel's forward stays the one that runs); made after the model, so the
        # model's initial weights do not depend on it
        aux = _aux_head(model).to(device) if aux_train is not None else None
        aux_net: torch.nn.Module | None = aux
        head_input: dict[str, torch.Tensor] = {}
        hook = (model.head.register_forward_hook(lambda _m, args, _out: head_input.update(x=args[0]))
                if aux is not None else None)
        aux_loss_fn = None
        if aux_train is not None:
            aux_pos = float(aux_train.sum())
            aux_weight = min(tc.max_pos_weight, (len(aux_train) - aux_pos) / aux_pos)
            aux_loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(aux_weight, device=device))
            with torch.no_grad():               # start at the weighted log-odds, like the buy head
                last = cast(torch.nn.Linear, cast(torch.nn.Sequential, aux)[-1])
                last.bias.fill_(math.log(aux_weight * aux_pos / (len(aux_train) - aux_pos)))
        optimizer = _optimizer(model, tc, aux)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(tc, total_steps))
        # the weights that are validated and kept: the raw ones, or their moving average
        ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(
            0.5 ** (1.0 / (tc.ema_half_life * steps_per_epoch))), use_buffers=True)
            if tc.ema_half_life > 0 else None)
        kept = model if ema is None else cast(IntentTransformer, ema.module)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(loss_weight, device=device))
        history: list[dict[str, float]] = []
        best: _Best = {"score": -math.inf, "epoch": 0, "bad_epochs": 0, "state": _state_copy(model)}
        done_epochs = 0
        state = _load_checkpoint(ckpt_dir, signature, log) if ckpt_dir is not None else None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            if aux is not None:
                aux.load_state_dict(state["aux"])
            history = list(state["history"])
            best = state["best"]
            done_epochs = int(state["epoch"])
            message = f"resumed from the checkpoint at epoch {done_epochs} of {tc.epochs}"
            if log is not None:
                log(message)
            report(progress, min(done_epochs, tc.epochs) * steps_per_epoch, total_steps, message)
            if on_epoch is not None:
                for record in history:
                    on_epoch(dict(record))
        resumed_from = done_epochs
        rank, world = data_parallel()
        net: torch.nn.Module = (model if world == 1 else
                                torch.nn.parallel.DistributedDataParallel(model))
        if aux is not None and world > 1:
            aux_net = torch.nn.parallel.DistributedDataParallel(aux)    # its gradients averaged too

        for epoch in range(done_epochs + 1, tc.epochs + 1):
            if best["bad_epochs"] >= tc.patience:
                break
            epoch_start = time.perf_counter()
            torch.manual_seed(tc.seed * 100_003 + epoch)      # dropout of this epoch
            gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)
            rng = np.random.default_rng([tc.seed, epoch])
            if tc.balanced_sampling:
                half = len(train) // 2
                order = np.concatenate([rng.choice(pos_idx, half), rng.choice(neg_idx, len(train) - half)])
                order = rng.permutation(order)
            else:
                order = rng.permutation(len(train))
            model.train()
            if aux is not None:
                aux.train()
            running, seen = 0.0, 0
            for step in range(steps_per_epoch):
                if cancel is not None:
                    cancel.check()
                index = torch.from_numpy(order[step * tc.batch_size:(step + 1) * tc.batch_size])
                if world > 1:
                    if len(index) < world:
                        continue                # every process skips it alike: no empty shard
                    index = index[rank::world]  # this process's share of the global batch
                inputs = model_inputs(train_t, index, torch.device("cpu"))
                if tc.augment_crop > 0 or tc.event_dropout > 0:
                    _augment(inputs, tc, gen)                          # on CPU, before the move
                inputs = {name: value.to(device) for name, value in inputs.items()}
                target = y_train_t[index].to(device)
                raw = net(**inputs) - model.logit_offset                     # (B,) uncorrected
                loss = loss_fn(raw, target)
                if aux_net is not None and aux_loss_fn is not None and aux_train_t is not None:
                    aux_logit = aux_net(head_input.pop("x")).squeeze(-1)             # (B,)
                    loss = loss + tc.aux_cart * aux_loss_fn(aux_logit, aux_train_t[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                running += float(loss.detach()) * len(index)
                seen += len(index)
                report(progress, (epoch - 1) * steps_per_epoch + step + 1, total_steps,
                       f"epoch {epoch}/{tc.epochs} loss {running / seen:.4f}")

            logits = _logits(kept, valid_t, len(valid), tc.eval_batch_size)
            valid_loss = float(F.binary_cross_entropy_with_logits(logits, y_valid_t))
            probs = torch.sigmoid(logits.double()).numpy()
            pr_auc = float(average_precision_score(y_valid, probs)) if y_valid.sum() > 0 else math.nan
            roc_auc = float(roc_auc_score(y_valid, probs)) if valid_two_classes else math.nan
            record = {"epoch": epoch, "train_loss": running / max(seen, 1), "valid_loss": valid_loss,
                      "valid_pr_auc": pr_auc, "valid_roc_auc": roc_auc,
                      "lr": float(scheduler.get_last_lr()[0]),
                      "seconds": time.perf_counter() - epoch_start}
            history.append(record)
            score = pr_auc if valid_two_classes else -valid_loss
            if score > best["score"] or tc.keep == "last":
                best = _Best(score=score, epoch=epoch, bad_epochs=0, state=_state_copy(kept))
            else:
                best["bad_epochs"] += 1
            if ckpt_dir is not None:
                _save_checkpoint(ckpt_dir, {
                    "version": CHECKPOINT_VERSION, "signature": signature, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "history": history, "best": best,
                    **({"ema": ema.state_dict()} if ema is not None else {}),
                    **({"aux": aux.state_dict()} if aux is not None else {})})
            if on_epoch is not None:
                on_epoch(dict(record))

        if hook is not None:
            hook.remove()
        model.load_state_dict(best["state"])
        model.eval()
        valid_pred = torch.sigmoid(_logits(model, valid_t, len(valid), tc.eval_batch_size).double()).numpy()
    best_pr = next((h["valid_pr_auc"] for h in history if h["epoch"] == best["epoch"]), math.nan)
    return FitResult(model=model, history=history, best_epoch=int(best["epoch"]),
                     seconds=time.perf_counter() - started, best_valid_pr_auc=float(best_pr),
                     resumed_from=resumed_from, valid_pred=valid_pred, init=init_record)


# -- hyper-parameter search -----------------------------------------------------------------
@dataclass
class SearchResult:
    """Every trial of a search and the best one."""

    trials: list[dict[str, Any]]     # number, params, valid_pr_auc, best_epoch, seconds
    best_params: dict[str, Any]
    best_config: TransformerConfig
    best_train_config: TrainConfig
    best_fit: FitResult

    def trials_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [{"trial": t["number"], **t["params"], "valid_pr_auc": t["valid_pr_auc"],
                 "best_epoch": t["best_epoch"], "seconds": t["seconds"]} for t in self.trials]
        return pd.DataFrame(rows)


SEARCH_SPACE = {
    "d_model": (32, 64, 96),           # categorical; n_heads stays, d_ff = 2 * d_model
    "n_layers": (1, 2),                # categorical
    "lr": (3e-4, 3e-3),                # log-uniform
    "dropout": (0.0, 0.3),             # uniform
    "weight_decay": (1e-4, 1e-1),      # log-uniform
}


def search_transformer(train: SequenceBatch, valid: SequenceBatch, base_config: TransformerConfig,
                       n_trials: int, seed: int = 0, tc: TrainConfig | None = None, *,
                       progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                       on_trial: Callable[[dict[str, Any]], None] | None = None,
                       teacher: np.ndarray | None = None) -> SearchResult:
    """Optuna TPE over ``SEARCH_SPACE``; each trial trains with ``tc`` (and ``teacher``, when
    ``tc.distill`` asks for one) and is scored by its best validation PR-AUC. Returns every trial
    and the best fitted model (no retraining needed)."""
    import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}.")
    tc = tc or TrainConfig(seed=seed)
    trials: list[dict[str, Any]] = []
    kept: dict[str, Any] = {}          # the best trial so far: its value, fit and configs

    def objective(trial: optuna.Trial) -> float:
        d_model = int(trial.suggest_categorical("d_model", list(SEARCH_SPACE["d_model"])))
        n_layers = int(trial.suggest_categorical("n_layers", list(SEARCH_SPACE["n_layers"])))
        lr = trial.suggest_float("lr", *SEARCH_SPACE["lr"], log=True)
        dropout = trial.suggest_float("dropout", *SEARCH_SPACE["dropout"])
        weight_decay = trial.suggest_float("weight_decay", *SEARCH_SPACE["weight_decay"], log=True)
        heads = base_config.n_heads if d_model % base_config.n_heads == 0 else 4
        config = replace(base_config, d_model=d_model, n_layers=n_layers, dropout=dropout,
                         d_ff=2 * d_model, n_heads=heads)
        trial_tc = replace(tc, lr=lr, weight_decay=weight_decay)

        def trial_progress(done: float, total: float | None, message: str) -> None:
            report(progress, trial.number + (done / total if total else 0.0), n_trials,
                   f"trial {trial.number + 1}/{n_trials}: {message}")

        fit = fit_transformer(config, train, valid, trial_tc, progress=trial_progress, cancel=cancel,
                              teacher=teacher)
        value = fit.best_valid_pr_auc if math.isfinite(fit.best_valid_pr_auc) else -1.0
        record = {"number": trial.number, "params": dict(trial.params), "valid_pr_auc": value,
                  "best_epoch": fit.best_epoch, "seconds": fit.seconds}
        trials.append(record)
        if not kept or value > kept["value"]:     # keep only the best model in memory
            kept.update(value=value, record=record, fit=fit, config=config, tc=trial_tc)
        if on_trial is not None:
            on_trial(dict(record))
        return value

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(5, n_trials // 2)))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return SearchResult(trials=trials, best_params=dict(kept["record"]["params"]),
                        best_config=kept["config"], best_train_config=kept["tc"],
                        best_fit=kept["fit"])
