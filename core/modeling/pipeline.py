"""Train, evaluate and register models: labels -> inputs -> fit -> metrics -> saved directory.

The CLI's ``train`` and the Train page both call :func:`train_model`. It is model-agnostic: each
kind says which inputs it needs (sequences for the Transformer, aggregate features for the
baselines, both for the ensemble; a distilled Transformer's training also reads the features, for
its out-of-fold GBDT teacher), the inputs are built once inside DuckDB, and every kind is
evaluated on the same time-split rows with the same metrics.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.errors import DataError, ModelError
from core.modeling.labels import (
    CutoffPlan,
    LabelSpec,
    build_examples,
    carted_in_horizon,
    check_eligibility,
    plan_cutoffs,
    time_range,
)
from core.modeling.model_store import default_model_dir
from core.progress import CancelToken, ProgressFn, report
from models.artifact import (
    EVALUATION_FILE,
    FEATURE_COMPONENTS,
    MODEL_KINDS,
    VALIDATION_FILE,
    LoadedModel,
    load_card,
    load_model,
    save_model,
)

if TYPE_CHECKING:
    from datetime import datetime

    from core.data.store import Store
    from core.modeling.sequences import SequenceBatch, Vocab
    from core.modeling.training import TrainConfig
    from models.calibration import Calibrator
    from models.transformer import TransformerConfig


@dataclass(frozen=True)
class Preset:
    """A model size and training budget: the Train page's "Size" and the CLI's ``--preset``."""

    epochs: int               # Transformer passes at most (early stopping may end sooner)
    d_model: int              # Transformer width (TransformerConfig.d_model)
    n_heads: int              # attention heads per block
    n_layers: int             # encoder blocks
    d_ff: int                 # hidden width of each block's MLP
    max_train_cutoffs: int    # training windows (cutoffs) at most; fewer when LabelSpec asks
    max_train_rows: int       # training rows kept (a seeded sample beyond; evaluation windows: MAX_EVAL_ROWS)
    gbdt_trees: int           # boosting rounds of the gbdt model (early stopping may end sooner)
    lr: float = 1e-3          # the Transformer's peak learning rate (AdamW); 3e-4 trained the event-
                              # statistics path too slowly (test ratio 0.81 against 0.90 at 1e-3)
    event_stats: int = 16     # soft time windows of the event-statistics path (TransformerConfig.event_stats)
    dropout: float = 0.1      # dropout in the Transformer (TransformerConfig.dropout)
    weight_decay: float = 0.05   # AdamW decay (TrainConfig.weight_decay)
    min_item_count: int = 100    # events an item needs for its own embedding (rarer items share buckets)
    batch_size: int = 256     # rows per optimisation step
    patience: int = 5         # epochs without a better validation PR-AUC before stopping
    augment_crop: float = 0.1     # chance a training row keeps only its newest events (TrainConfig)
    event_dropout: float = 0.05   # chance each event is hidden in a training row (TrainConfig)
    ema_half_life: float = 0.0    # epochs: validate and keep a moving average of the weights (TrainConfig)
    distill: float = 0.5          # weight of an out-of-fold GBDT's probability in the Transformer's
                                  # training targets (TrainConfig.distill; 0 = the labels alone; train
                                  # --distill overrides it). What it gave: bench/quality.py's docstring
    distill_choices: tuple[float, ...] = ()   # other teacher weights fitted beside ``distill``: the
                                  # Transformer is fitted once per weight (one teacher for all) and the fit
                                  # with the best validation PR-AUC is kept (ties: ``distill``), so the
                                  # weight follows the log at one more fit per weight. balanced and thorough
                                  # try 0.7 too: 0.7 led on syn-B and lost on syn-A, and validation PR-AUC
                                  # picked the test window's better weight on 3 seeds of 3 on syn-A, syn-B
                                  # and the two-hour slice (bench/quality.py; transformer+oneweight is
                                  # the model before)
    teacher_density: int = 1      # the teacher's training cutoffs per training step of the Transformer: 1 = the
                                  # Transformer's own rows; N > 1 adds cutoffs every step / N over the same
                                  # span (same users, windows still end by the validation cutoff), rows the
                                  # tree learns from and the Transformer does not. Measured, not adopted:
                                  # bench/quality.py's docstring (transformer+denseteacher)
    aux_cart: float = 0.0         # weight of a second, training-only head that predicts "carts within the
                                  # horizon" from the same vector as the buy head (TrainConfig.aux_cart;
                                  # train --aux-cart overrides it); 0 = the buy label alone. What it gave:
                                  # bench/quality.py's docstring (transformer+cart)
    aux_cart_choices: tuple[float, ...] = ()   # other cart-head weights: once the teacher weight is chosen,
                                  # the Transformer is fitted again at each, and the best validation PR-AUC
                                  # is kept (ties: ``aux_cart``); train --aux-cart 0,0.5. balanced and
                                  # thorough try 0.5: on the Taobao two-hour slice (30-minute horizon, 56
                                  # training buyers) validation took the head on 3 seeds of 3 and test ROC-AUC
                                  # rose 0.021, 0.077 and 0.056 (two beyond noise); elsewhere it kept the
                                  # plain fit or one within 0.001 on test (bench/quality.py; transformer+nocart
                                  # is the model before)
    seq_dropout: float = 0.8      # share of training rows whose [CLS] vector the head does not see
                                  # (TransformerConfig.seq_dropout). At 0 the attention path fits the
                                  # training rows within 2-4 epochs, early stopping ends the fit there and
                                  # the event-statistics read-out stays under-trained. Test ROC-AUC, median
                                  # of 3 seeds (bench/quality.py, fast): syn-A 0.8831 at 0 (10 epochs,
                                  # patience 3), 0.8976 at 0.8 (25 epochs, patience 5), the tree 0.8949;
                                  # syn-B 0.8216, 0.8264, the tree 0.8400

    @property
    def teacher_weights(self) -> tuple[float, ...]:
        """The teacher weights the Transformer is fitted with: ``distill`` first, then the choices."""
        return tuple(dict.fromkeys((self.distill, *self.distill_choices)))

    @property
    def cart_weights(self) -> tuple[float, ...]:
        """The cart-head weights the Transformer is fitted with: ``aux_cart`` first, then the choices."""
        return tuple(dict.fromkeys((self.aux_cart, *self.aux_cart_choices)))

    def describe(self) -> str:
        """One line for people: what this size trains (the Train page's caption)."""
        layers = "layer" if self.n_layers == 1 else "layers"
        return (f"{self.epochs} epochs at most · Transformer width {self.d_model}, {self.n_heads} heads, "
                f"{self.n_layers} {layers}, feed-forward {self.d_ff}, dropout {self.dropout:g}, [CLS] hidden "
                f"from the head in {self.seq_dropout:.0%} of training rows · "
                f"batch {self.batch_size} · up to {self.max_train_cutoffs} training cutoffs and "
                f"{self.max_train_rows:,} training rows · {self.gbdt_trees:,} boosted trees"
                + (f" · Transformer targets {_weights_text(self.teacher_weights)} from an out-of-fold GBDT"
                   if any(self.teacher_weights) else "")
                + (" · a cart head beside the buy head " + ("tried, kept when the validation window prefers it"
                                                            if len(self.cart_weights) > 1
                                                            else f"(loss weight {self.aux_cart:g})")
                   if any(self.cart_weights) else ""))


def _weights_text(weights: tuple[float, ...]) -> str:
    """'50%' for one teacher weight, '50% or 70% (chosen on the validation window)' for several."""
    text = " or ".join(f"{w:.0%}" for w in weights)
    return text + (" (chosen on the validation window)" if len(weights) > 1 else "")


# Size presets for the Train page and `--preset`, smallest first.
PRESETS: dict[str, Preset] = {
    "fast": Preset(epochs=25, d_model=64, n_heads=4, n_layers=1, d_ff=128, max_train_cutoffs=3,
                   max_train_rows=50_000, gbdt_trees=200),
    "balanced": Preset(epochs=20, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_train_cutoffs=6,
                       max_train_rows=200_000, gbdt_trees=400, distill_choices=(0.7,), aux_cart_choices=(0.5,)),
    "thorough": Preset(epochs=20, d_model=96, n_heads=4, n_layers=2, d_ff=192, max_train_cutoffs=10,
                       max_train_rows=500_000, gbdt_trees=800, dropout=0.2, weight_decay=0.1,
                       min_item_count=50, distill_choices=(0.7,), aux_cart_choices=(0.5,)),
}

# The kinds an ensemble is made of: the sequence model and the two cheapest strong feature models
# (the zoo's other kinds stand on the leaderboard on their own).
ENSEMBLE_MEMBERS = ("transformer", "gbdt", "logreg")

GAP_STEPS = 4        # time-gap buckets per doubling of the gap (core.modeling.sequences)
GAP_BUCKETS = 96     # 4 per doubling up to 2^24 s (about 194 days); older events share the last
MAX_EVAL_ROWS = 200_000   # rows kept per evaluation window (validation, test): a seeded sample beyond

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Pretrained:
    """A pre-trained encoder directory a fine-tune starts from (core.modeling.pretrain)."""

    path: Path
    freeze: str = "none"      # none | embeddings | all

    def vocab(self) -> Vocab:
        from core.modeling.pretrain import load_pretrained

        return load_pretrained(self.path)[1]

    def check_no_test_leak(self, dataset: str, dataset_sha256: str | None, plan: CutoffPlan) -> None:
        """Refuse an encoder pre-trained on this dataset's events past the test window's cutoff.

        Pre-training reads no labels, but events after the test cutoff include the purchases the
        test window asks about: an encoder that saw them makes the reported test figures optimistic.
        """
        from core.modeling.pretrain import load_pretrained

        card = load_pretrained(self.path)[2]
        same = card.get("dataset") == dataset or (
            dataset_sha256 is not None and card.get("dataset_sha256") == dataset_sha256)
        until = (card.get("settings") or {}).get("until")
        if not same or plan.test_cutoff is None or until is None:
            return
        if pd.Timestamp(until) > pd.Timestamp(plan.test_cutoff):
            raise DataError(
                f"the encoder in {self.path} was pre-trained on {dataset!r} up to {until}, after this "
                f"model's test window starts ({plan.test_cutoff}): it has seen the behaviour the test "
                "window asks about, so the test figures would be optimistic.",
                title="Pre-training saw the test window",
                hint=f"Pre-train again with --until {pd.Timestamp(plan.test_cutoff).isoformat()} "
                     "(or on another dataset), then train with --init.")

    def initialiser(self, vocab: Vocab | None) -> Callable[[Any], dict[str, Any]]:
        """What fit_transformer calls on the new model: copy the encoder in, freeze what is asked."""
        from core.modeling.pretrain import init_from_pretrained

        return lambda model: init_from_pretrained(model, self.path, self.freeze, vocab=vocab)


@dataclass
class Inputs:
    """Everything the model kinds train and validate on, built once per training run."""

    plan: CutoffPlan
    examples: pd.DataFrame                 # user_id, cutoff, [category], label, split
    vocab: Vocab | None = None             # when a sequence model is trained
    sequences: SequenceBatch | None = None   # aligned with examples, when a sequence model is trained
    features: pd.DataFrame | None = None   # aggregate features aligned with examples
    pretrained: Pretrained | None = None   # the encoder the Transformer starts from, if any
    parent: LoadedModel | None = None      # the saved model a warm start continues from, if any
    teacher_rows: tuple[pd.DataFrame, pd.DataFrame] | None = None   # extra training rows of the distilled
                                           # Transformer's teacher: (examples, their features)

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.examples["split"].to_numpy() == split)

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.examples["label"].to_numpy()[self.split_index(split)], dtype=np.float32)


@dataclass
class TrainResult:
    model_dir: Path
    card: dict[str, Any]
    metrics: dict[str, Any]                    # on the test window (validation for explicit plans without one)
    valid_metrics: dict[str, Any] = field(default_factory=dict)   # on the validation window
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> metrics (ensemble)

    def summary(self) -> str:
        split = self.card.get("metrics_split", "valid")
        window = "test window (nothing was selected on it)" if split == "test" else "validation window"
        lines = [f"Saved {self.card['kind']} model to {self.model_dir}",
                 f"  dataset {self.card['dataset']}, horizon {self.card['label']['horizon']}, "
                 f"scope {self.card['label']['scope']}",
                 f"  {window}: {self.metrics.get('n', 0):,} rows "
                 f"({self.metrics.get('positives', 0):,} positive)"]
        rows = dict(self.members) if self.members else {}
        rows[self.card["kind"]] = self.metrics
        for kind, metrics in rows.items():
            lines.append("  " + kind.ljust(12) + "  ".join(
                f"{name} {_fmt_interval(metrics.get(name))}" for name in ("roc_auc", "pr_auc", "log_loss", "ece")))
        if self.valid_metrics and split == "test":
            lines.append("  validation (selected on): " + "  ".join(
                f"{name} {_fmt_interval(self.valid_metrics.get(name))}" for name in ("roc_auc", "pr_auc")))
        if self.card.get("calibration"):
            from models.calibration import Calibrator

            lines.append(f"  calibration: {Calibrator.from_dict(self.card['calibration']).describe()}")
        if self.card.get("teacher"):
            lines.append(f"  transformer distilled: {describe_teacher(self.card['teacher'])}")
        if self.card.get("teacher_weights"):
            lines.append("  " + describe_choices("teacher weight", self.card["teacher_weights"],
                                                 self.card["train_config"]["distill"]))
        if (self.card.get("train_config") or {}).get("aux_cart"):
            lines.append("  " + describe_cart_head(self.card["train_config"]["aux_cart"]))
        if self.card.get("cart_weights"):
            lines.append("  " + describe_choices("cart-head weight", self.card["cart_weights"],
                                                 self.card["train_config"]["aux_cart"]))
        if self.card.get("refit"):
            lines.append(f"  refitted on every labelled window ({self.card['refit']['rows']:,} rows); "
                         f"the figures above are the evaluated fit's")
        return "\n".join(lines)


def _fmt_interval(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
    if isinstance(value, (int, float)):
        return f"{value:.3f}"
    return "n/a"


def checkpoint_dir_for(out_dir: Path) -> Path:
    """``<out_dir>.checkpoint``: where a Transformer fit saving to ``out_dir`` keeps its per-epoch
    checkpoint, so the same command (or the Train page's same job) finds it after a kill and resumes;
    deleted once the model is saved."""
    return out_dir.parent / (out_dir.name + ".checkpoint")


def _needs(kind: str) -> tuple[bool, bool]:
    """(needs sequences, needs features) for a model kind."""
    if kind not in MODEL_KINDS:
        raise DataError(f"model kind must be one of {', '.join(MODEL_KINDS)}; got {kind!r}.",
                        title="Unknown model kind")
    if kind == "ensemble":
        return "transformer" in ENSEMBLE_MEMBERS, any(m in FEATURE_COMPONENTS for m in ENSEMBLE_MEMBERS)
    return kind == "transformer", kind in FEATURE_COMPONENTS


def prepare_inputs(store: Store, dataset: str, spec: LabelSpec, *, sequences: bool, features: bool,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   log: LogFn | None = None, vocab_options: dict[str, Any] | None = None,
                   max_train_rows: int | None = None, max_eval_rows: int = MAX_EVAL_ROWS, seed: int = 0,
                   plan: CutoffPlan | None = None, label_share: float = 1.0,
                   vocab: Vocab | None = None, spark_master: str | None = None) -> Inputs:
    """Cutoffs, eligibility, example rows, and the model inputs the kinds need.

    ``plan``: explicit cutoffs (e.g. a synthetic log's truth grid); default :func:`plan_cutoffs`.
    ``max_train_rows`` / ``max_eval_rows``: seeded samples of the training rows and of each evaluation
    window beyond these counts. ``spark_master``: build the sequences and features on Apache Spark
    (``core.modeling.spark``: ``local[N]``, ``local-cluster[W,C,MB]``, ``spark://HOST:7077``) from the
    store's files, instead of DuckDB in this process; the result is the same.
    """
    from core.modeling.features import build_features
    from core.modeling.sequences import build_sequences, build_vocab

    store.dataset(dataset)  # NotFoundError with the list of datasets
    plan = plan or plan_cutoffs(store, dataset, spec)
    check_eligibility(store, dataset, spec, plan).require()
    _log(log, f"cutoffs: train {', '.join(str(t) for t in plan.train_cutoffs)}; "
              f"validation {plan.valid_cutoff}"
              + (f"; test {plan.test_cutoff} (labels up to {plan.test_cutoff + spec.horizon_td})"
                 if plan.test_cutoff else ""))
    report(progress, 0, None, "building example rows")
    examples = build_examples(store, dataset, spec, plan)
    if label_share < 1:
        examples = _keep_labelled_users(examples, label_share, seed)
    limits = {"valid": max_eval_rows, "test": max_eval_rows}
    if max_train_rows is not None:
        limits["train"] = max_train_rows
    examples = _cap_rows(examples, limits, seed)
    inputs = Inputs(plan=plan, examples=examples)
    if sequences:
        if cancel:
            cancel.check()
        inputs.vocab = vocab or build_vocab(store, dataset, plan.valid_cutoff, **(vocab_options or {}))
    if spark_master is not None and (sequences or features):
        from core.modeling.spark import build_on_spark, event_files, spark_session

        report(progress, 0, None, f"building sequences and features on Spark ({spark_master})")
        session = spark_session(spark_master)
        inputs.sequences, inputs.features = build_on_spark(
            session, event_files(store, dataset), dataset, examples, spec,
            vocab=inputs.vocab if sequences else None, features=features)
        _log(log, f"sequences and features built on Spark ({spark_master}, "
                  f"{session.sparkContext.defaultParallelism} cores)")
        return _rows_logged(inputs, log)
    if sequences:
        assert inputs.vocab is not None
        inputs.sequences = build_sequences(store, dataset, examples, inputs.vocab, spec,
                                           progress=progress, cancel=cancel)
    if features:
        if cancel:
            cancel.check()
        report(progress, 0, None, "building aggregate features")
        inputs.features = build_features(store, dataset, examples, spec, progress=progress)
    return _rows_logged(inputs, log)


def _rows_logged(inputs: Inputs, log: LogFn | None) -> Inputs:
    _log(log, "rows: " + ", ".join(f"{split} {len(inputs.split_index(split)):,}" for split in inputs.plan.splits))
    return inputs


def _add_cart_target(store: Store, dataset: str, spec: LabelSpec, inputs: Inputs, log: LogFn | None) -> None:
    """The ``carted`` column (the auxiliary head's label) of the sequences' keys, which the
    Transformer's training reads (not of the examples, which the saved evaluation rows copy);
    refuses a dataset whose training rows never cart, or always do."""
    assert inputs.sequences is not None
    carted = carted_in_horizon(store, dataset, spec, inputs.examples)
    inputs.sequences.keys["carted"] = carted       # the keys are the examples, in the same order
    train = carted[inputs.split_index("train")]
    if train.min(initial=1) == train.max(initial=0):
        raise DataError(f"the cart head needs training rows that cart within the horizon and rows that do not; "
                        f"{int(train.sum()):,} of {len(train):,} do.", title="Nothing for the cart head",
                        hint="Train without it (--aux-cart 0): this dataset's training windows hold "
                             "no cart events, or only rows with them.")
    _log(log, f"transformer: cart head beside the buy head, {int(train.sum()):,} of {len(train):,} "
              f"training rows cart within the horizon")


def _log(log: LogFn | None, line: str) -> None:
    if log is not None:
        log(line)


# -- fitting ------------------------------------------------------------------------------
def _keep_labelled_users(examples: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """Keep the training rows of a seeded ``share`` of the training users (at least one user);
    validation and test rows stay whole."""
    train = examples["split"].to_numpy() == "train"
    users = np.unique(examples.loc[train, "user_id"].astype(str).to_numpy())
    rng = np.random.default_rng([seed, 7919])
    chosen = rng.choice(users, size=max(1, round(share * len(users))), replace=False)
    keep = ~train | examples["user_id"].astype(str).isin(set(chosen)).to_numpy()
    kept: pd.DataFrame = examples[keep].reset_index(drop=True)
    return kept


def _cap_rows(examples: pd.DataFrame, limits: dict[str, int], seed: int) -> pd.DataFrame:
    """At most ``limits[split]`` rows of each split named there (a seeded sample of each), every row of
    the others. At a million users the validation and test windows hold a million rows each: their
    sequences alone would pass the memory goal, while 200,000 rows already measure an AUC to about
    +-0.002."""
    split = examples["split"].to_numpy()
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(~np.isin(split, list(limits)))]
    for name, limit in limits.items():
        rows = np.flatnonzero(split == name)
        keep.append(rows if len(rows) <= limit else rng.choice(rows, size=limit, replace=False))
    if sum(len(k) for k in keep) == len(examples):
        return examples
    return examples.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def _transformer_config(inputs: Inputs, spec: LabelSpec, preset: Preset) -> TransformerConfig:
    from core.modeling.sequences import BEHAVIOR_STRIDE
    from models.transformer import TransformerConfig

    if inputs.parent is not None and inputs.parent.transformer is not None:   # a warm start: the parent's
        return inputs.parent.transformer.config
    # per-behaviour totals and newest unresolved events beside the per-id counts
    totals = BEHAVIOR_STRIDE if preset.event_stats else 0
    if inputs.pretrained is not None:       # the encoder's sizes and vocabulary rows, our own head
        from core.modeling.pretrain import pretrained_config

        return pretrained_config(inputs.pretrained.path, max_len=spec.max_len, dropout=preset.dropout,
                                 scope=spec.scope, event_stats=preset.event_stats, seq_dropout=preset.seq_dropout,
                                 stat_totals=totals, stat_latest=bool(totals))
    vocab = inputs.vocab
    assert vocab is not None, "prepare_inputs(sequences=True) builds it"
    return TransformerConfig(
        n_behaviors=vocab.n_behavior_ids, n_items=vocab.n_items, n_categories=vocab.n_categories,
        n_gaps=vocab.gap_buckets + 1, n_hours=25, n_query_buckets=vocab.query_buckets + 1,
        max_len=spec.max_len, d_model=preset.d_model, n_heads=preset.n_heads,
        n_layers=preset.n_layers, d_ff=preset.d_ff, dropout=preset.dropout, scope=spec.scope,
        event_stats=preset.event_stats, seq_dropout=preset.seq_dropout, stat_totals=totals,
        stat_latest=bool(totals))


MIN_STEPS_PER_EPOCH = 16   # a small training set (a low label share) gets smaller batches, not fewer steps
MIN_BATCH = 32


def _train_config(preset: Preset, seed: int, threads: int | None, n_train: int | None = None) -> TrainConfig:
    """The preset's optimiser settings; with ``n_train`` rows, the batch shrinks (down to MIN_BATCH)
    so an epoch still takes MIN_STEPS_PER_EPOCH steps: 5 % of the labels otherwise trains on a
    handful of steps and the label-efficiency chart would measure under-training."""
    from core.modeling.training import TrainConfig

    batch = preset.batch_size
    if n_train is not None:
        batch = min(batch, max(MIN_BATCH, n_train // MIN_STEPS_PER_EPOCH))
    return TrainConfig(epochs=preset.epochs, batch_size=batch, seed=seed,
                       weight_decay=preset.weight_decay, lr=preset.lr, patience=preset.patience,
                       augment_crop=preset.augment_crop, event_dropout=preset.event_dropout,
                       ema_half_life=preset.ema_half_life, distill=preset.distill, aux_cart=preset.aux_cart,
                       threads=threads)


def _fit_transformer(inputs: Inputs, spec: LabelSpec, preset: Preset, *, seed: int,
                     search: int, checkpoint_dir: Path | None, progress: ProgressFn | None,
                     cancel: CancelToken | None, on_epoch: Callable[[dict], None] | None,
                     log: LogFn | None, threads: int | None = None) -> dict[str, Any]:
    from core.modeling.training import fit_transformer, search_transformer

    assert inputs.sequences is not None, "prepare_inputs(sequences=True) builds them"
    train = inputs.sequences.subset(inputs.split_index("train"), share=True)
    valid = inputs.sequences.subset(inputs.split_index("valid"), share=True)
    config = _transformer_config(inputs, spec, preset)
    tc = _train_config(preset, seed, threads, n_train=len(train))
    trials: list[dict[str, Any]] = []
    weights, cart_weights = preset.teacher_weights, preset.cart_weights
    chosen: dict[str, float] = {}
    carts: dict[str, float] = {}
    teacher, taught = (_teacher(inputs, preset, inputs.split_index("train"), seed=seed, log=log)
                       if any(weights) else (None, None))
    if search > 0:
        _log(log, f"transformer: hyper-parameter search, {search} trials"
                  + (f" at the teacher weight {tc.distill:g}" if len(weights) > 1 else ""))
        result = search_transformer(train, valid, config, n_trials=search, seed=seed, tc=tc,
                                    progress=progress, cancel=cancel,
                                    on_trial=lambda t: _log(log, f"  trial {t['number']}: "
                                                                 f"PR-AUC {t['valid_pr_auc']:.4f} {t['params']}"),
                                    teacher=teacher)
        fit, config, tc, trials = result.best_fit, result.best_config, result.best_train_config, result.trials
    elif len(weights) == 1 and len(cart_weights) == 1:
        fit = fit_transformer(config, train, valid, tc, progress=progress, cancel=cancel,
                              on_epoch=on_epoch, checkpoint_dir=checkpoint_dir, log=log,
                              init=_initialiser(inputs), teacher=teacher)
    else:
        fits = _fit_each(config, train, valid, [replace(tc, distill=w) for w in weights], "distill",
                         teacher, inputs=inputs, checkpoint_dir=checkpoint_dir, progress=progress,
                         cancel=cancel, on_epoch=on_epoch, log=log, total=len(weights) + len(cart_weights) - 1)
        fit, tc, chosen = _keep_best(fits, "distill", log)
        chosen = chosen if len(weights) > 1 else {}
    if search == 0 and len(cart_weights) > 1:
        # the cart head's weight, at the kept teacher weight: the fit above is the first weight's
        others = [replace(tc, aux_cart=c) for c in cart_weights if c != tc.aux_cart]
        fits = [(tc, fit), *_fit_each(config, train, valid, others, "aux_cart", teacher, inputs=inputs,
                                      checkpoint_dir=checkpoint_dir, progress=progress, cancel=cancel,
                                      on_epoch=on_epoch, log=log, total=len(weights) + len(others),
                                      done=len(weights))]
        fit, tc, carts = _keep_best(fits, "aux_cart", log)
    if taught is not None:       # the card's teacher: the weight the kept fit trained at (none at 0)
        taught = {**taught, "weight": tc.distill} if tc.distill > 0 else None
    _log(log, f"transformer: best epoch {fit.best_epoch}, valid PR-AUC {fit.best_valid_pr_auc:.4f}, "
              f"{fit.seconds:.1f}s")
    return {"model": fit.model, "config": config.to_dict(), "train_config": tc.to_dict(),
            "history": fit.history, "trials": trials, "valid_pred": np.asarray(fit.valid_pred),
            "seconds": fit.seconds, "best_epoch": fit.best_epoch, "init": fit.init, "teacher": taught,
            "teacher_weights": chosen or None, "cart_weights": carts or None}


# the training settings chosen on the validation window: TrainConfig field -> its name in the log
_SETTING_NAMES = {"distill": "teacher weight", "aux_cart": "cart-head weight"}


def _fit_each(config: TransformerConfig, train: SequenceBatch, valid: SequenceBatch,
              settings: list[TrainConfig], field_name: str, teacher: np.ndarray | None, *, inputs: Inputs,
              checkpoint_dir: Path | None, progress: ProgressFn | None, cancel: CancelToken | None,
              on_epoch: Callable[[dict], None] | None, log: LogFn | None, total: int,
              done: int = 0) -> list[tuple[TrainConfig, Any]]:
    """One Transformer fit per training setting (the same teacher, seed and rows; each in its own
    checkpoint folder, so a resumed job picks up where each stood). ``field_name`` is the
    ``TrainConfig`` field that differs (a key of ``_SETTING_NAMES``); the progress bar spans ``total``
    fits, ``done`` of them already finished."""
    from core.modeling.training import fit_transformer

    fits = []
    for i, tc in enumerate(settings, start=done):
        label = f"{_SETTING_NAMES[field_name]} {getattr(tc, field_name):g}"

        def step(pos: float, size: float | None, message: str, i: int = i, label: str = label) -> None:
            assert progress is not None
            progress(i * size + pos if size else pos, total * size if size else None,
                     f"{label} ({i + 1} of {total}): {message}")

        def epoch(record: dict, tc: TrainConfig = tc) -> None:
            assert on_epoch is not None
            on_epoch({**record, "teacher_weight": tc.distill, "cart_weight": tc.aux_cart})

        folder = f"teacher-{tc.distill:g}" + (f"-cart-{tc.aux_cart:g}" if field_name == "aux_cart" else "")
        fit = fit_transformer(
            config, train, valid, tc, progress=step if progress else None, cancel=cancel,
            on_epoch=epoch if on_epoch else None, log=log, init=_initialiser(inputs),
            checkpoint_dir=checkpoint_dir / folder if checkpoint_dir is not None else None,
            teacher=teacher if tc.distill > 0 else None)
        _log(log, f"transformer at the {label}: valid PR-AUC {fit.best_valid_pr_auc:.4f}")
        fits.append((tc, fit))
    return fits


def _keep_best(fits: list[tuple[TrainConfig, Any]], field_name: str,
               log: LogFn | None) -> tuple[Any, TrainConfig, dict[str, float]]:
    """The fit with the best validation PR-AUC (the first wins ties and windows without a positive):
    (that fit, its training settings, each setting's validation PR-AUC keyed by its value)."""
    scores = [float(fit.best_valid_pr_auc) for _, fit in fits]
    best = max(range(len(fits)), key=lambda i: scores[i] if np.isfinite(scores[i]) else -np.inf)
    tc, fit = fits[best]
    if len(fits) > 1:
        _log(log, f"transformer: kept the {_SETTING_NAMES[field_name]} {getattr(tc, field_name):g} "
                  "(best validation PR-AUC)")
    return fit, tc, {f"{getattr(t, field_name):g}": score for (t, _), score in zip(fits, scores, strict=True)}


DISTILL_FOLDS = 5   # the Transformer's teacher: GBDTs over five folds of the training users


def _teacher(inputs: Inputs, preset: Preset, rows: np.ndarray, *, seed: int, log: LogFn | None,
             trees: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-fold GBDT probabilities for the example rows at ``rows``: each fold's users are scored by
    a tree fitted on the other folds' users, so no row's teacher has seen its label. The trees also
    learn from ``inputs.teacher_rows`` (denser training cutoffs of the same users, folded with them).
    ``trees``: None early-stops each fold on the validation window (the evaluated fit); a number fixes
    the rounds (a refit, where the validation rows are training rows). Returns (probabilities, a
    record for the card)."""
    from sklearn.model_selection import GroupKFold

    from models.baselines import fit_feature_model

    assert inputs.features is not None, "a distilled Transformer needs the aggregate features"
    started = time.perf_counter()
    X = inputs.features.iloc[rows].reset_index(drop=True)
    y = np.asarray(inputs.examples["label"].to_numpy()[rows], dtype=np.float32)
    users = inputs.examples["user_id"].to_numpy()[rows]
    n_own = len(rows)
    if inputs.teacher_rows is not None:
        extra, extra_X = inputs.teacher_rows
        X = pd.concat([X, extra_X.reset_index(drop=True)], ignore_index=True)
        y = np.concatenate([y, extra["label"].to_numpy(dtype=np.float32)])
        users = np.concatenate([users, extra["user_id"].to_numpy()])
    folds = min(DISTILL_FOLDS, len(np.unique(users[:n_own])))
    stop_on = ((inputs.features.iloc[inputs.split_index("valid")].reset_index(drop=True), inputs.labels("valid"))
               if trees is None else (None, None))
    out = np.empty(n_own, dtype=float)
    rounds = []
    for fitted_rows, held in GroupKFold(n_splits=folds).split(X, y, users):
        held = held[held < n_own]                   # the extra rows are learnt from, never scored
        if not len(held):
            continue
        if np.unique(y[fitted_rows]).size < 2:      # the other folds' users hold one class (few buyers):
            out[held] = float(y[fitted_rows].mean())   # their base rate is all they can teach
            continue
        model = fit_feature_model("gbdt", X.iloc[fitted_rows].reset_index(drop=True), y[fitted_rows], *stop_on,
                                  seed=seed, n_estimators=trees or preset.gbdt_trees)
        out[held] = model.predict_proba(X.iloc[held].reset_index(drop=True))
        rounds.append(int(model.n_iter_))
    record = {"kind": "gbdt", "folds": folds, "weight": preset.distill, "trees": int(np.median(rounds or [1])),
              "rows": len(X), "seconds": time.perf_counter() - started}
    _log(log, f"transformer: out-of-fold GBDT teacher over {folds} folds of users, {len(X):,} rows "
              f"({record['trees']} trees, {record['seconds']:.1f}s)")
    return out, record


def teacher_cutoffs(plan: CutoffPlan, spec: LabelSpec, density: int, first_event: datetime) -> list[datetime]:
    """The cutoffs the teacher adds for ``density`` > 1: the training cutoffs that :func:`plan_cutoffs`
    would lay out at a step of ``step / density``, over the same span (from one step before the first
    training cutoff, and at least one new step after ``first_event``, up to the last window (T, T + H]
    that ends by the validation cutoff), leaving out the Transformer's own training cutoffs."""
    if density <= 1 or not plan.train_cutoffs:
        return []
    spacing, horizon = spec.step_td / density, spec.horizon_td
    earliest = max(min(plan.train_cutoffs) - spec.step_td + spacing, first_event + spacing)
    own = set(plan.train_cutoffs)
    out: list[datetime] = []
    cutoff = plan.valid_cutoff - horizon
    while cutoff >= earliest:
        if cutoff not in own:
            out.append(cutoff)
        cutoff -= spacing
    return sorted(out)


def _teacher_rows(store: Store, dataset: str, spec: LabelSpec, inputs: Inputs, density: int, *,
                  max_rows: int, seed: int, log: LogFn | None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(examples, features) at :func:`teacher_cutoffs` for the users with training rows (a seeded sample
    of at most ``max_rows``); None when there are none."""
    from core.modeling.features import build_features

    cutoffs = teacher_cutoffs(inputs.plan, spec, density, time_range(store, dataset)[0])
    if not cutoffs:
        return None
    plan = CutoffPlan(train_cutoffs=cutoffs, valid_cutoff=inputs.plan.valid_cutoff,
                      score_cutoff=inputs.plan.score_cutoff, test_cutoff=inputs.plan.test_cutoff)
    examples = build_examples(store, dataset, spec, plan, splits=("train",))
    own_users = inputs.examples.loc[inputs.examples["split"] == "train", "user_id"].unique()
    examples = examples[examples["user_id"].isin(own_users).to_numpy()].reset_index(drop=True)
    examples = _cap_rows(examples, {"train": max_rows}, seed)
    if examples.empty:
        return None
    _log(log, f"transformer: the teacher also learns from {len(examples):,} rows at {len(cutoffs)} more cutoffs "
              f"(every {spec.step_td / density} over the training span)")
    return examples, build_features(store, dataset, examples, spec)


def describe_teacher(record: dict[str, Any]) -> str:
    """One line for people: what a distilled Transformer's training targets were (the card's ``teacher``)."""
    return (f"training targets {1 - record['weight']:.0%} the labels, {record['weight']:.0%} an out-of-fold "
            f"GBDT's probability ({record['folds']} folds of users, {record['trees']} trees"
            + (f", {record['rows']:,} rows" if record.get("rows") else "") + ")")


def describe_cart_head(weight: float) -> str:
    """One line for people: the training-only cart head of a multi-task Transformer."""
    return (f"transformer multi-task: a second head learnt \"carts within the horizon\" beside the buy head "
            f"(loss weight {weight:g}); only the buy head scores")


def describe_choices(what: str, choices: dict[str, float], kept: float) -> str:
    """One line for people: the values of one training setting a Transformer was fitted with (the
    card's ``teacher_weights`` or ``cart_weights``: value -> validation PR-AUC) and the one kept."""
    return (f"{what} {kept:g} kept of " + ", ".join(f"{w} (validation PR-AUC {pr:.4f})"
                                                   for w, pr in choices.items()))


def _initialiser(inputs: Inputs) -> Callable[[Any], dict[str, Any]] | None:
    """What the Transformer's fit starts from: a pre-trained encoder, the parent's weights (a warm
    start: every tensor copied; the fit then sets the output offset and bias for its own rows' base
    rate, as any fit does), or nothing (a fresh initialisation)."""
    if inputs.pretrained is not None:
        return inputs.pretrained.initialiser(inputs.vocab)
    if inputs.parent is None or inputs.parent.transformer is None:
        return None
    state = {name: value.detach().clone() for name, value in inputs.parent.transformer.state_dict().items()}

    def warm(model: Any) -> dict[str, Any]:
        model.load_state_dict(state)
        return {}
    return warm


def _fit_baseline(kind: str, inputs: Inputs, preset: Preset, *, seed: int, search: int = 0,
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                  log: LogFn | None = None) -> dict[str, Any]:
    """A feature model of ``kind`` (models.baselines.FEATURE_KINDS); with ``search`` > 0 the same
    Optuna budget the Transformer gets (core.modeling.tuning), selected on validation PR-AUC."""
    from core.modeling.tuning import search_feature_model
    from models.baselines import GBDTBaseline, fit_feature_model

    assert inputs.features is not None, "prepare_inputs(features=True) builds them"
    started = time.perf_counter()
    train_idx, valid_idx = inputs.split_index("train"), inputs.split_index("valid")
    X_train = inputs.features.iloc[train_idx].reset_index(drop=True)
    X_valid = inputs.features.iloc[valid_idx].reset_index(drop=True)
    y_train, y_valid = inputs.labels("train"), inputs.labels("valid")
    trials: list[dict[str, Any]] = []
    if search > 0:
        _log(log, f"{kind}: hyper-parameter search, {search} trials")
        model, _, trials = search_feature_model(kind, X_train, y_train, X_valid, y_valid, n_trials=search,
                                                seed=seed, progress=progress, cancel=cancel,
                                                n_estimators=preset.gbdt_trees)
    elif kind == "gbdt" and inputs.parent is not None and inputs.parent.gbdt is not None:
        # a warm start: up to gbdt_trees more trees on top of the parent's
        params = {**inputs.parent.gbdt.get_params(), "n_estimators": preset.gbdt_trees}
        model = GBDTBaseline(**params).fit(X_train, y_train, X_valid, y_valid, init_model=inputs.parent.gbdt)
    else:
        model = fit_feature_model(kind, X_train, y_train, X_valid, y_valid, seed=seed,
                                  n_estimators=preset.gbdt_trees)
    seconds = time.perf_counter() - started
    _log(log, f"{kind}: fitted in {seconds:.1f}s")
    return {"model": model, "config": model.get_params(), "valid_pred": model.predict_proba(X_valid),
            "seconds": seconds, "trials": trials}


def _predict(kind: str, model: Any, inputs: Inputs, index: np.ndarray) -> np.ndarray:
    """One member's raw probabilities for the example rows at ``index``."""
    if kind == "transformer":
        assert inputs.sequences is not None
        rows = inputs.sequences.subset(index, share=True)
        return np.asarray(model.predict_proba(rows.tensors(widen=False)), dtype=float)
    assert inputs.features is not None
    return np.asarray(model.predict_proba(inputs.features.iloc[index].reset_index(drop=True)), dtype=float)


def _refit(kind: str, fitted: dict[str, Any], inputs: Inputs, spec: LabelSpec, preset: Preset, *,
           seed: int, threads: int | None, progress: ProgressFn | None, cancel: CancelToken | None,
           log: LogFn | None) -> Any:
    """``kind`` fitted again on every labelled window (train, validation and test), with the budget
    the evaluated fit chose (its best epoch count, its number of trees) and nothing selected on the
    data: the model that scores today has seen today's behaviour."""
    from sklearn.base import clone

    from core.modeling.training import fit_transformer
    from models.baselines import GBDTBaseline

    every = np.flatnonzero(inputs.examples["split"].isin(["train", "valid", "test"]).to_numpy())
    y = np.asarray(inputs.examples["label"].to_numpy()[every], dtype=float)
    if kind == "transformer":
        from models.transformer import TransformerConfig

        assert inputs.sequences is not None
        epochs = max(1, int(fitted["best_epoch"]))
        # the evaluated fit's batch size: its best epoch count is a number of passes at that size
        tc = replace(_train_config(preset, seed, threads), epochs=epochs, patience=epochs + 1, keep="last",
                     batch_size=int(fitted["train_config"]["batch_size"]),
                     distill=float(fitted["train_config"]["distill"]),    # the weights the evaluated fit kept
                     aux_cart=float(fitted["train_config"].get("aux_cart", 0.0)))
        config = TransformerConfig.from_dict(fitted["config"])
        rows = inputs.sequences.subset(every, share=True)
        recent = inputs.sequences.subset(inputs.split_index(inputs.plan.report_split), share=True)
        teacher = (_teacher(inputs, preset, every, seed=seed, log=log, trees=fitted["teacher"]["trees"])[0]
                   if fitted.get("teacher") else None)
        _log(log, f"refit transformer: {epochs} epoch(s) on {len(every):,} rows")
        return fit_transformer(config, rows, recent, tc, progress=progress, cancel=cancel, log=log,
                               init=_initialiser(inputs), teacher=teacher).model
    assert inputs.features is not None
    X = inputs.features.iloc[every].reset_index(drop=True)
    model = fitted["model"]
    _log(log, f"refit {kind} on {len(every):,} rows")
    if kind == "gbdt":
        params = {**model.get_params(), "n_estimators": int(model.n_iter_)}
        return GBDTBaseline(**params).fit(X, y)
    return clone(model).fit(X, y)


def _segments(store: Store, dataset: str, valid_rows: pd.DataFrame) -> pd.DataFrame:
    """Per validation row: events before its cutoff and the user's top category then (the category
    with most of those events; a tie goes to the name that sorts first, so a retrained model's saved rows
    are the same, where ``mode()`` picked any of the tied ones)."""
    keys = valid_rows[["user_id", "cutoff"]].drop_duplicates().reset_index(drop=True)
    with store.cursor() as cur:
        cur.register("valid_keys", keys)
        frame = cur.execute(
            "WITH per_category AS (SELECT k.user_id, k.cutoff, e.category, count(*) AS n "
            "FROM valid_keys k JOIN events e ON e.dataset = ? AND e.user_id = k.user_id "
            "AND e.ts <= k.cutoff GROUP BY ALL) "
            "SELECT k.user_id, k.cutoff, CAST(coalesce(sum(c.n), 0) AS BIGINT) AS n_events, "
            "first(c.category ORDER BY c.category IS NULL, c.n DESC, c.category) AS top_category "
            "FROM valid_keys k LEFT JOIN per_category c ON c.user_id = k.user_id AND c.cutoff = k.cutoff "
            "GROUP BY k.user_id, k.cutoff", [dataset]).df()
        cur.unregister("valid_keys")
    return valid_rows.merge(frame, on=["user_id", "cutoff"], how="left")


@dataclass
class _Fit:
    """One kind fitted on an Inputs' training rows and measured: what train_model saves."""

    members: dict[str, dict[str, Any]]      # kind -> model, config, valid_pred, report_pred, metrics, ...
    ensemble: Any                           # a fitted EnsembleModel, or None
    calibrator: Calibrator
    report_split: str                       # test (validation for explicit plans without one)
    valid: tuple[np.ndarray, np.ndarray]    # validation probabilities: raw, calibrated
    report: tuple[np.ndarray, np.ndarray]   # report-window probabilities: raw, calibrated
    metrics: dict[str, Any]                 # summary_metrics on the report window (calibrated)
    valid_metrics: dict[str, Any]           # ... on the validation window


def _fit_and_measure(inputs: Inputs, kind: str, spec: LabelSpec, settings: Preset, *, seed: int,
                     search: int = 0, checkpoint_dir: Path | None = None, progress: ProgressFn | None = None,
                     cancel: CancelToken | None = None, on_epoch: Callable[[dict], None] | None = None,
                     log: LogFn | None = None, threads: int | None = None) -> _Fit:
    """Fit ``kind`` (every member of an ensemble) on the ``train`` rows, select on ``valid`` (early
    stopping, search, ensemble weights, the calibration map), and measure on the report window."""
    from core.modeling.metrics import summary_metrics
    from models.calibration import Calibrator

    report_split = inputs.plan.report_split
    y_valid, y_report = inputs.labels("valid"), inputs.labels(report_split)
    report_idx = inputs.split_index(report_split)
    members: dict[str, dict[str, Any]] = {}
    for member in (ENSEMBLE_MEMBERS if kind == "ensemble" else (kind,)):
        if cancel is not None:
            cancel.check()
        if member == "transformer":
            fitted = _fit_transformer(inputs, spec, settings, seed=seed, search=search,
                                      checkpoint_dir=checkpoint_dir, progress=progress, cancel=cancel,
                                      on_epoch=on_epoch, log=log, threads=threads)
        else:
            fitted = _fit_baseline(member, inputs, settings, seed=seed, search=search, progress=progress,
                                   cancel=cancel, log=log)
        fitted["report_pred"] = _predict(member, fitted["model"], inputs, report_idx)
        fitted["valid_metrics"] = summary_metrics(y_valid, fitted["valid_pred"], seed=seed)
        fitted["metrics"] = summary_metrics(y_report, fitted["report_pred"], seed=seed)
        members[member] = fitted
    ensemble = None
    if kind == "ensemble":
        from models.baselines import EnsembleModel

        ensemble = EnsembleModel().fit({k: m["valid_pred"] for k, m in members.items()}, y_valid)
        valid_raw = ensemble.predict_proba({k: m["valid_pred"] for k, m in members.items()})
        report_raw = ensemble.predict_proba({k: m["report_pred"] for k, m in members.items()})
        _log(log, f"ensemble weights: {ensemble.weights_}")
    else:
        valid_raw, report_raw = members[kind]["valid_pred"], members[kind]["report_pred"]
    calibrator = Calibrator.fit(valid_raw, y_valid, seed=seed)
    _log(log, f"calibration: {calibrator.describe()}")
    valid_pred, report_pred = calibrator.apply(valid_raw), calibrator.apply(report_raw)
    return _Fit(members=members, ensemble=ensemble, calibrator=calibrator, report_split=report_split,
                valid=(valid_raw, valid_pred), report=(report_raw, report_pred),
                metrics=summary_metrics(y_report, report_pred, seed=seed),
                valid_metrics=summary_metrics(y_valid, valid_pred, seed=seed))


RANDOM_TEST_SHARE = 0.2     # the seed's random split: 20 % of the rows test ...
RANDOM_VALID_SHARE = 0.1    # ... and 10 % of the rest validate (early stopping, calibration)


def random_split_metrics(inputs: Inputs, kind: str, spec: LabelSpec, settings: Preset, *, seed: int,
                         log: LogFn | None = None, threads: int | None = None,
                         cancel: CancelToken | None = None) -> dict[str, Any]:
    """The same kind measured the way the seed measured it: every labelled row (all cutoffs) shuffled
    into a random 80/20 split. A user's rows at neighbouring cutoffs then land on both sides, and so
    do rows from the very days being predicted, so the test rows are not the future: the figure is
    optimistic. Returns {"metrics": summary_metrics on the random 20 %, "rows", "positives", "why"}."""
    labelled = inputs.examples["split"].isin(inputs.plan.splits).to_numpy()
    rng = np.random.default_rng([seed, 8020])
    draw = rng.random(len(inputs.examples))
    split = np.where(draw < RANDOM_TEST_SHARE, inputs.plan.report_split,
                     np.where(draw < RANDOM_TEST_SHARE + (1 - RANDOM_TEST_SHARE) * RANDOM_VALID_SHARE,
                              "valid", "train"))
    shuffled = replace(inputs, examples=inputs.examples.assign(split=np.where(labelled, split, "unused")))
    _log(log, f"random 80/20 split of the same {int(labelled.sum()):,} rows, for comparison")
    fit = _fit_and_measure(shuffled, kind, spec, settings, seed=seed, log=log, threads=threads, cancel=cancel)
    return {"metrics": fit.metrics, "rows": int(fit.metrics["n"]), "positives": int(fit.metrics["positives"]),
            "why": RANDOM_SPLIT_WHY}


RANDOM_SPLIT_WHY = ("A random split mixes every window: the model trains on rows from the very days it is "
                    "tested on (and on later ones), so it learns that period's mood — a sale, a holiday, a "
                    "trend — before it is asked about it, and its test rows are not the future. Where "
                    "behaviour drifts this over-states quality; where it is steady the two agree, or the "
                    "random split even reads lower because its test rows include early cutoffs with short "
                    "histories. Only the time split answers the question a shop asks: trained on the past, "
                    "how well does the model predict the next horizon, on a window nothing was chosen on?")


def train_model(store: Store, dataset: str, *, kind: str = "transformer", spec: LabelSpec | None = None,
                epochs: int | None = None, search: int = 0, seed: int = 0,
                out: str | Path | None = None, preset: str = "balanced",
                progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                log: LogFn | None = None, on_epoch: Callable[[dict], None] | None = None,
                models_root: Path | None = None, plan: CutoffPlan | None = None,
                threads: int | None = None, refit: bool = False,
                label_share: float = 1.0, compare_random_split: bool = False,
                init: str | Path | None = None, freeze: str = "none",
                parent: str | Path | None = None, spark_master: str | None = None,
                distill: float | Sequence[float] | None = None,
                aux_cart: float | Sequence[float] | None = None) -> TrainResult:
    """Train ``kind`` on ``dataset`` with a time split, evaluate it, save it; see the module doc.

    Selection (early stopping, search, ensemble weights, calibration) uses the validation window
    only; the reported metrics come from the test window after it. ``refit``: after evaluating,
    fit the model again on every labelled window up to the latest (same budget, nothing selected)
    and save that one; its card keeps the test figures of the evaluated fit. ``label_share``: the
    share of training users whose rows are kept (the label-efficiency experiment; the validation
    and test windows are kept whole). ``compare_random_split``: also measure the same kind on a
    random 80/20 split of the same rows (:func:`random_split_metrics`), saved as the card's
    ``random_split``: how much a random split over-states quality.

    ``init``: a pre-trained encoder directory (``python -m core pretrain``) the Transformer starts
    from, with its vocabulary and sizes; ``freeze``: none | embeddings | all (what stays fixed).

    ``parent``: a saved model of the same ``kind`` and label to warm-start from (``python -m core
    update``): the Transformer starts from its weights with its configuration and vocabulary (items
    it has not seen share the hashed buckets, as in any vocabulary), gbdt adds trees to its trees,
    the other feature kinds fit afresh; the card records it under ``warm_start``.

    ``spark_master``: build the sequences and features on Apache Spark (:func:`prepare_inputs`).

    ``distill``: the teacher's weight in the Transformer's training targets, in [0, 1) (None: the
    preset's, :attr:`Preset.distill`; 0: the labels alone, no GBDT is fitted for it); several weights:
    one fit each, the best validation PR-AUC kept (:attr:`Preset.distill_choices`).

    ``aux_cart``: the weight of the Transformer's auxiliary "carts within the horizon" loss, >= 0 (None:
    the preset's, :attr:`Preset.aux_cart`; 0: none); several weights: after the teacher weight is
    chosen, one fit each, the best validation PR-AUC kept (:attr:`Preset.aux_cart_choices`).

    ``threads`` caps the torch CPU threads of the Transformer's fit (LightGBM already keeps to
    half the cores); the app passes one fewer than the machine has so pages stay responsive while
    a job runs. None: torch's default.
    """
    spec = spec or LabelSpec()
    if preset not in PRESETS:
        raise DataError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}.",
                        title="Unknown preset")
    if not 0 < float(label_share) <= 1:
        raise DataError(f"label_share must be in (0, 1]; got {label_share}.", title="Bad label share")
    settings = PRESETS[preset]
    if epochs is not None:
        if int(epochs) < 1:
            raise DataError(f"epochs must be >= 1; got {epochs}.", title="Bad epochs")
        settings = replace(settings, epochs=int(epochs))
    if distill is not None:
        weights = [float(w) for w in ([distill] if isinstance(distill, (int, float)) else distill)]
        if not weights or not all(0 <= w < 1 for w in weights):
            raise DataError("each teacher weight (distill) must be at least 0 and below 1; got "
                            f"{', '.join(f'{w:g}' for w in weights) or 'none'}.",
                            title="Bad teacher weight",
                            hint="0 trains on the labels alone; 0.5 is half label, half teacher; several "
                                 "weights are each fitted and the validation window chooses (balanced "
                                 "tries " + " and ".join(f"{w:g}" for w in PRESETS["balanced"].teacher_weights) + ").")
        settings = replace(settings, distill=weights[0], distill_choices=tuple(weights[1:]))
    if aux_cart is not None:
        carts = [float(w) for w in ([aux_cart] if isinstance(aux_cart, (int, float)) else aux_cart)]
        if not carts or not all(w >= 0 for w in carts):
            raise DataError("each cart head's weight (aux_cart) must be at least 0; got "
                            f"{', '.join(f'{w:g}' for w in carts) or 'none'}.", title="Bad cart-head weight",
                            hint="0 trains on the buy label alone; 0.5 adds the cart loss at half weight; "
                                 "several weights (0,0.5) are each fitted and the validation window chooses.")
        settings = replace(settings, aux_cart=carts[0], aux_cart_choices=tuple(carts[1:]))
    if spec.max_train_cutoffs > settings.max_train_cutoffs:
        spec = LabelSpec.from_dict({**spec.to_dict(), "max_train_cutoffs": settings.max_train_cutoffs})
    need_seq, need_feat = _needs(kind)
    own_features = need_feat
    distilled = need_seq and any(settings.teacher_weights)
    need_feat = need_feat or distilled   # the distilled Transformer's teacher
    pretrained: Pretrained | None = None
    if init is not None:
        if not need_seq:
            raise DataError(f"a pre-trained encoder initialises the Transformer; a {kind} model has none.",
                            title="Nothing to initialise", hint="Train --model transformer or ensemble.")
        pretrained = Pretrained(Path(init), freeze)
    parent_model = _parent_model(parent, kind, spec) if parent is not None else None
    if parent_model is not None and pretrained is not None:
        raise DataError("a warm start (parent) and a pre-trained encoder (init) exclude each other.",
                        title="Two starting points", hint="Pass one of them.")
    started = time.perf_counter()
    info = store.dataset(dataset)
    if pretrained is not None:
        plan = plan or plan_cutoffs(store, dataset, spec)
        pretrained.check_no_test_leak(dataset, info.get("sha256"), plan)
    out_dir = Path(out) if out else default_model_dir(dataset, kind, spec, models_root)
    inputs = prepare_inputs(store, dataset, spec, sequences=need_seq, features=need_feat,
                            progress=progress, cancel=cancel, log=log,
                            vocab_options={"min_count": settings.min_item_count,
                                           "gap_steps": GAP_STEPS, "gap_buckets": GAP_BUCKETS},
                            max_train_rows=settings.max_train_rows, seed=seed, plan=plan,
                            label_share=float(label_share),
                            vocab=pretrained.vocab() if pretrained is not None
                            else parent_model.vocab if parent_model is not None else None,
                            spark_master=spark_master)
    inputs.pretrained = pretrained
    inputs.parent = parent_model
    if need_seq and any(settings.cart_weights):
        _add_cart_target(store, dataset, spec, inputs, log)
    if distilled and settings.teacher_density > 1:
        inputs.teacher_rows = _teacher_rows(store, dataset, spec, inputs, settings.teacher_density,
                                            max_rows=settings.max_train_rows, seed=seed, log=log)
    fit = _fit_and_measure(inputs, kind, spec, settings, seed=seed, search=search,
                           checkpoint_dir=checkpoint_dir_for(out_dir), progress=progress, cancel=cancel,
                           on_epoch=on_epoch, log=log, threads=threads)
    members, ensemble, calibrator = fit.members, fit.ensemble, fit.calibrator
    metrics, valid_metrics, report_split = fit.metrics, fit.valid_metrics, fit.report_split
    if report_split == "test":
        _log(log, f"test window: ROC-AUC {metrics['roc_auc']['value']:.4f}, PR-AUC "
                  f"{metrics['pr_auc']['value']:.4f}, ECE {metrics['ece']['value']:.4f} "
                  f"(validation ROC-AUC {valid_metrics['roc_auc']['value']:.4f})")
    rows = _evaluation_rows(store, dataset, inputs, members, {"valid": fit.valid, report_split: fit.report})
    card = {
        "kind": kind,
        "dataset": dataset,
        "dataset_sha256": info.get("sha256"),
        "dataset_rows": int(info.get("rows_stored") or 0),
        "label": spec.to_dict(),
        "cutoffs": inputs.plan.to_dict(),
        "preset": preset,
        "seed": seed,
        "rows": {split: len(inputs.split_index(split)) for split in inputs.plan.splits}
        | {f"{split}_positives": int(inputs.labels(split).sum()) for split in inputs.plan.splits},
        "metrics": metrics,
        "metrics_split": report_split,
        "valid_metrics": valid_metrics,
        "calibration": calibrator.to_dict(),
        "label_share": float(label_share),
        "members": {name: {"metrics": m["metrics"], "valid_metrics": m["valid_metrics"],
                           "seconds": m["seconds"], "config": m["config"], "search_trials": m["trials"]}
                    for name, m in members.items()},
        "search": int(search),
        "train_seconds": time.perf_counter() - started,
    }
    from core.modeling.training import data_parallel

    world = data_parallel()[1]
    if world > 1:                   # trained by `torchrun ... -m core train`
        import torch

        card["data_parallel"] = {"processes": world, "backend": str(torch.distributed.get_backend())}
    if compare_random_split:
        card["random_split"] = random_split_metrics(inputs, kind, spec, settings, seed=seed, log=log,
                                                    threads=threads, cancel=cancel)
    if "transformer" in members:
        card["history"] = members["transformer"]["history"]
        card["train_config"] = members["transformer"]["train_config"]
        if members["transformer"].get("init"):
            card["pretrained"] = members["transformer"]["init"]
        if members["transformer"].get("teacher"):
            card["teacher"] = members["transformer"]["teacher"]
        for field in ("teacher_weights", "cart_weights"):
            if members["transformer"].get(field):
                card[field] = members["transformer"][field]
    if parent_model is not None:
        card["warm_start"] = {"parent_id": parent_model.card.get("model_id"), "parent_path": str(parent)}
    models = {name: m["model"] for name, m in members.items()}
    if refit:
        refit_started = time.perf_counter()
        for name in members:
            if cancel is not None:
                cancel.check()
            models[name] = _refit(name, members[name], inputs, spec, settings, seed=seed, threads=threads,
                                  progress=progress, cancel=cancel, log=log)
        card["refit"] = {"cutoffs": [t.isoformat() for t in inputs.plan.train_cutoffs]
                         + [inputs.plan.valid_cutoff.isoformat()]
                         + ([inputs.plan.test_cutoff.isoformat()] if inputs.plan.test_cutoff else []),
                         "rows": int(sum(len(inputs.split_index(s)) for s in inputs.plan.splits)),
                         "seconds": time.perf_counter() - refit_started,
                         "note": "refitted on every labelled window with the evaluated fit's budget; "
                                 "the metrics are those of the evaluated fit on the test window"}
    model_dir = save_model(
        out_dir, kind=kind, card=card, **models, ensemble=ensemble, vocab=inputs.vocab,
        feature_names=list(inputs.features.columns) if own_features and inputs.features is not None else None)
    rows.to_parquet(Path(model_dir) / EVALUATION_FILE, index=False)
    if checkpoint_dir_for(out_dir).is_dir():
        shutil.rmtree(checkpoint_dir_for(out_dir))       # the run finished: nothing left to resume
    saved = load_card(model_dir)
    return TrainResult(model_dir=Path(model_dir), card=saved, metrics=metrics, valid_metrics=valid_metrics,
                       members={k: m["metrics"] for k, m in members.items()} if kind == "ensemble" else {})


def _parent_model(path: str | Path, kind: str, spec: LabelSpec) -> LoadedModel:
    """The saved model a warm start continues from; ModelError unless it is a ``kind`` model with
    ``spec``'s label (horizon, scope, lookback, events per sequence)."""
    model = load_model(path)
    if model.kind != kind:
        raise ModelError(f"{path} holds a {model.kind} model; a {kind} model cannot continue from it.",
                         title="Other model kind", hint=f"Warm-start with --model {model.kind}, or train afresh.")
    fields = ("horizon", "scope", "lookback", "max_len")
    theirs, ours = model.spec.to_dict(), spec.to_dict()
    differ = [f"{name} {theirs[name]!r} there, {ours[name]!r} here" for name in fields if theirs[name] != ours[name]]
    if differ:
        raise ModelError(f"{path} predicts another label ({'; '.join(differ)}).", title="Other label",
                         hint="Warm-start with the parent's own label definition (its card's `label`).")
    return model


def _evaluation_rows(store: Store, dataset: str, inputs: Inputs, members: dict[str, dict[str, Any]],
                     scored: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """The validation and test rows with their scores: keys, label, split, score (calibrated),
    score_raw, score_<member> (raw), and the segments (n_events, top_category)."""
    parts = []
    for split, (raw, calibrated) in scored.items():
        part = inputs.examples.iloc[inputs.split_index(split)].reset_index(drop=True).copy()
        part["score"] = calibrated
        part["score_raw"] = raw
        for name, fitted in members.items():
            part[f"score_{name}"] = fitted["valid_pred" if split == "valid" else "report_pred"]
        parts.append(part)
    return _segments(store, dataset, pd.concat(parts, ignore_index=True))


def load_evaluation(model_dir: str | Path, split: str | None = None) -> pd.DataFrame:
    """A model's saved evaluation rows of one window: keys, label, score (+ raw, per member),
    segments. ``split``: ``test`` or ``valid``; None = the window its figures are reported on
    (test; validation for models trained before the test window existed). ``attrs["split"]`` says
    which window the rows come from."""
    model_dir = Path(model_dir)
    path = model_dir / EVALUATION_FILE
    if path.exists():
        rows = pd.read_parquet(path)
        available = list(dict.fromkeys(rows["split"].astype(str)))
        want = split or ("test" if "test" in available else "valid")
        if want not in available:
            raise ModelError(f"{model_dir} has no {want!r} rows (it has {', '.join(available)}).",
                             hint="Ask for one of those, or retrain the model with this version.")
        out = rows[rows["split"] == want].reset_index(drop=True)
    elif (model_dir / VALIDATION_FILE).exists() and split in (None, "valid"):
        out, want = pd.read_parquet(model_dir / VALIDATION_FILE), "valid"   # before the test window
    else:
        raise ModelError(f"{model_dir} has no {EVALUATION_FILE}, so its quality cannot be shown.",
                         hint="Retrain it with this version of IntentLens.")
    out.attrs["split"] = want
    return out


def split_comparison(card: dict[str, Any]) -> pd.DataFrame:
    """A card's time-split figures (test window) beside its random 80/20 split's: metric,
    time_split, random_split, overstatement (random - time; positive = the random split flatters).
    Empty when the card has no ``random_split``."""
    random = (card.get("random_split") or {}).get("metrics")
    if not random:
        return pd.DataFrame(columns=["metric", "time_split", "random_split", "overstatement"])
    timed = card.get("metrics", {})
    rows = []
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ece"):
        if isinstance(timed.get(name), dict) and isinstance(random.get(name), dict):
            t, r = float(timed[name]["value"]), float(random[name]["value"])
            better_high = name in ("roc_auc", "pr_auc")
            rows.append({"metric": name, "time_split": t, "random_split": r,
                         "overstatement": (r - t) if better_high else (t - r)})
    return pd.DataFrame(rows)
