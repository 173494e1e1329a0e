"""Train, evaluate and register models: labels -> inputs -> fit -> metrics -> saved directory.

The CLI's ``train`` and the Train page both call :func:`train_model`. It is model-agnostic: each
kind says which inputs it needs (sequences for the Transformer, aggregate features for the
baselines, both for the ensemble), the inputs are built once inside DuckDB, and every kind is
evaluated on the same time-split validation rows with the same metrics.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.errors import DataError, ModelError
from core.modeling.labels import CutoffPlan, LabelSpec, build_examples, check_eligibility, plan_cutoffs
from core.modeling.model_store import default_model_dir
from core.progress import CancelToken, ProgressFn, report
from models.artifact import MODEL_KINDS, VALIDATION_FILE, load_card, save_model

if TYPE_CHECKING:
    from core.data.store import Store
    from core.modeling.sequences import SequenceBatch, Vocab
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
    max_train_rows: int       # training rows kept (a seeded sample beyond; validation rows all kept)
    gbdt_trees: int           # boosting rounds of the gbdt model (early stopping may end sooner)
    lr: float = 3e-4          # the Transformer's peak learning rate (AdamW)
    dropout: float = 0.1      # dropout in the Transformer (TransformerConfig.dropout)
    weight_decay: float = 0.05   # AdamW decay (TrainConfig.weight_decay)
    min_item_count: int = 100    # events an item needs for its own embedding (rarer items share buckets)
    batch_size: int = 256     # rows per optimisation step
    patience: int = 3         # epochs without a better validation PR-AUC before stopping
    augment_crop: float = 0.1     # chance a training row keeps only its newest events (TrainConfig)
    event_dropout: float = 0.05   # chance each event is hidden in a training row (TrainConfig)

    def describe(self) -> str:
        """One line for people: what this size trains (the Train page's caption)."""
        layers = "layer" if self.n_layers == 1 else "layers"
        return (f"{self.epochs} epochs at most · Transformer width {self.d_model}, {self.n_heads} heads, "
                f"{self.n_layers} {layers}, feed-forward {self.d_ff}, dropout {self.dropout:g} · "
                f"batch {self.batch_size} · up to {self.max_train_cutoffs} training cutoffs and "
                f"{self.max_train_rows:,} training rows · {self.gbdt_trees:,} boosted trees")


# Size presets for the Train page and `--preset`, smallest first.
PRESETS: dict[str, Preset] = {
    "fast": Preset(epochs=10, d_model=64, n_heads=4, n_layers=1, d_ff=128, max_train_cutoffs=3,
                   max_train_rows=50_000, gbdt_trees=200),
    "balanced": Preset(epochs=10, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_train_cutoffs=6,
                       max_train_rows=200_000, gbdt_trees=400),
    "thorough": Preset(epochs=20, d_model=96, n_heads=4, n_layers=2, d_ff=192, max_train_cutoffs=10,
                       max_train_rows=500_000, gbdt_trees=800, dropout=0.2, weight_decay=0.1,
                       min_item_count=50),
}

GAP_STEPS = 4        # time-gap buckets per doubling of the gap (core.modeling.sequences)
GAP_BUCKETS = 96     # 4 per doubling up to 2^24 s (about 194 days); older events share the last

LogFn = Callable[[str], None]


@dataclass
class Inputs:
    """Everything the model kinds train and validate on, built once per training run."""

    plan: CutoffPlan
    examples: pd.DataFrame                 # user_id, cutoff, [category], label, split
    vocab: Vocab | None = None             # when a sequence model is trained
    sequences: SequenceBatch | None = None   # aligned with examples, when a sequence model is trained
    features: pd.DataFrame | None = None   # aggregate features aligned with examples

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.examples["split"].to_numpy() == split)

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.examples["label"].to_numpy()[self.split_index(split)], dtype=np.float32)


@dataclass
class TrainResult:
    model_dir: Path
    card: dict[str, Any]
    metrics: dict[str, Any]
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> metrics (ensemble)

    def summary(self) -> str:
        lines = [f"Saved {self.card['kind']} model to {self.model_dir}",
                 f"  dataset {self.card['dataset']}, horizon {self.card['label']['horizon']}, "
                 f"scope {self.card['label']['scope']}",
                 f"  validation rows {self.metrics.get('n', 0):,} "
                 f"({self.metrics.get('positives', 0):,} positive)"]
        rows = dict(self.members) if self.members else {}
        rows[self.card["kind"]] = self.metrics
        for kind, metrics in rows.items():
            lines.append("  " + kind.ljust(12) + "  ".join(
                f"{name} {_fmt_interval(metrics.get(name))}" for name in ("roc_auc", "pr_auc", "log_loss")))
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
    return kind in ("transformer", "ensemble"), kind in ("gbdt", "logreg", "ensemble")


def prepare_inputs(store: Store, dataset: str, spec: LabelSpec, *, sequences: bool, features: bool,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   log: LogFn | None = None, vocab_options: dict[str, Any] | None = None,
                   max_train_rows: int | None = None, seed: int = 0,
                   plan: CutoffPlan | None = None) -> Inputs:
    """Cutoffs, eligibility, example rows, and the model inputs the kinds need.

    ``plan``: explicit cutoffs (e.g. a synthetic log's truth grid); default :func:`plan_cutoffs`.
    """
    from core.modeling.features import build_features
    from core.modeling.sequences import build_sequences, build_vocab

    store.dataset(dataset)  # NotFoundError with the list of datasets
    plan = plan or plan_cutoffs(store, dataset, spec)
    check_eligibility(store, dataset, spec, plan).require()
    _log(log, f"cutoffs: train {', '.join(str(t) for t in plan.train_cutoffs)}; "
              f"validation {plan.valid_cutoff} (labels up to {plan.valid_cutoff + spec.horizon_td})")
    report(progress, 0, None, "building example rows")
    examples = build_examples(store, dataset, spec, plan)
    if max_train_rows is not None:
        examples = _cap_training_rows(examples, max_train_rows, seed)
    inputs = Inputs(plan=plan, examples=examples)
    if sequences:
        if cancel:
            cancel.check()
        inputs.vocab = build_vocab(store, dataset, plan.valid_cutoff, **(vocab_options or {}))
        inputs.sequences = build_sequences(store, dataset, examples, inputs.vocab, spec,
                                           progress=progress, cancel=cancel)
    if features:
        if cancel:
            cancel.check()
        report(progress, 0, None, "building aggregate features")
        inputs.features = build_features(store, dataset, examples, spec, progress=progress)
    _log(log, f"rows: train {len(inputs.split_index('train')):,}, valid {len(inputs.split_index('valid')):,}")
    return inputs


def _log(log: LogFn | None, line: str) -> None:
    if log is not None:
        log(line)


# -- fitting ------------------------------------------------------------------------------
def _cap_training_rows(examples: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Keep every validation row and at most ``max_rows`` training rows (a seeded sample)."""
    train = examples["split"].to_numpy() == "train"
    if train.sum() <= max_rows:
        return examples
    rng = np.random.default_rng(seed)
    keep_train = rng.choice(np.flatnonzero(train), size=max_rows, replace=False)
    keep = np.sort(np.concatenate([keep_train, np.flatnonzero(~train)]))
    return examples.iloc[keep].reset_index(drop=True)


def _transformer_config(inputs: Inputs, spec: LabelSpec, preset: Preset) -> TransformerConfig:
    from core.modeling.sequences import N_BEHAVIOR_IDS
    from models.transformer import TransformerConfig

    vocab = inputs.vocab
    assert vocab is not None, "prepare_inputs(sequences=True) builds it"
    return TransformerConfig(
        n_behaviors=N_BEHAVIOR_IDS, n_items=vocab.n_items, n_categories=vocab.n_categories,
        n_gaps=vocab.gap_buckets + 1, n_hours=25, n_query_buckets=vocab.query_buckets + 1,
        max_len=spec.max_len, d_model=preset.d_model, n_heads=preset.n_heads,
        n_layers=preset.n_layers, d_ff=preset.d_ff, dropout=preset.dropout, scope=spec.scope)


def _fit_transformer(inputs: Inputs, spec: LabelSpec, preset: Preset, *, seed: int,
                     search: int, checkpoint_dir: Path | None, progress: ProgressFn | None,
                     cancel: CancelToken | None, on_epoch: Callable[[dict], None] | None,
                     log: LogFn | None, threads: int | None = None) -> dict[str, Any]:
    from core.modeling.training import TrainConfig, fit_transformer, search_transformer

    assert inputs.sequences is not None, "prepare_inputs(sequences=True) builds them"
    train = inputs.sequences.subset(inputs.split_index("train"))
    valid = inputs.sequences.subset(inputs.split_index("valid"))
    config = _transformer_config(inputs, spec, preset)
    tc = TrainConfig(epochs=preset.epochs, batch_size=preset.batch_size, seed=seed,
                     weight_decay=preset.weight_decay, lr=preset.lr, patience=preset.patience,
                     augment_crop=preset.augment_crop, event_dropout=preset.event_dropout, threads=threads)
    trials: list[dict[str, Any]] = []
    if search > 0:
        _log(log, f"transformer: hyper-parameter search, {search} trials")
        result = search_transformer(train, valid, config, n_trials=search, seed=seed, tc=tc,
                                    progress=progress, cancel=cancel,
                                    on_trial=lambda t: _log(log, f"  trial {t['number']}: "
                                                                 f"PR-AUC {t['valid_pr_auc']:.4f} {t['params']}"))
        fit, config, tc, trials = result.best_fit, result.best_config, result.best_train_config, result.trials
    else:
        fit = fit_transformer(config, train, valid, tc, progress=progress, cancel=cancel,
                              on_epoch=on_epoch, checkpoint_dir=checkpoint_dir, log=log)
    _log(log, f"transformer: best epoch {fit.best_epoch}, valid PR-AUC {fit.best_valid_pr_auc:.4f}, "
              f"{fit.seconds:.1f}s")
    return {"model": fit.model, "config": config.to_dict(), "train_config": tc.to_dict(),
            "history": fit.history, "trials": trials, "valid_pred": np.asarray(fit.valid_pred),
            "seconds": fit.seconds}


def _fit_baseline(kind: str, inputs: Inputs, preset: Preset, *, seed: int,
                  log: LogFn | None) -> dict[str, Any]:
    from models.baselines import GBDTBaseline, LogisticBaseline

    assert inputs.features is not None, "prepare_inputs(features=True) builds them"
    started = time.perf_counter()
    train_idx, valid_idx = inputs.split_index("train"), inputs.split_index("valid")
    X_train = inputs.features.iloc[train_idx].reset_index(drop=True)
    X_valid = inputs.features.iloc[valid_idx].reset_index(drop=True)
    y_train, y_valid = inputs.labels("train"), inputs.labels("valid")
    if kind == "gbdt":
        model = GBDTBaseline(n_estimators=preset.gbdt_trees, random_state=seed).fit(
            X_train, y_train, X_valid, y_valid)
    else:
        model = LogisticBaseline().fit(X_train, y_train)
    seconds = time.perf_counter() - started
    _log(log, f"{kind}: fitted in {seconds:.1f}s")
    return {"model": model, "config": model.get_params(), "valid_pred": model.predict_proba(X_valid),
            "seconds": seconds}


def _segments(store: Store, dataset: str, valid_rows: pd.DataFrame) -> pd.DataFrame:
    """Per validation row: events before its cutoff and the user's top category then."""
    keys = valid_rows[["user_id", "cutoff"]].drop_duplicates().reset_index(drop=True)
    with store.cursor() as cur:
        cur.register("valid_keys", keys)
        frame = cur.execute(
            "SELECT k.user_id, k.cutoff, count(e.ts) AS n_events, "
            "mode(e.category) AS top_category "
            "FROM valid_keys k LEFT JOIN events e ON e.dataset = ? AND e.user_id = k.user_id "
            "AND e.ts <= k.cutoff GROUP BY k.user_id, k.cutoff", [dataset]).df()
        cur.unregister("valid_keys")
    return valid_rows.merge(frame, on=["user_id", "cutoff"], how="left")


def train_model(store: Store, dataset: str, *, kind: str = "transformer", spec: LabelSpec | None = None,
                epochs: int | None = None, search: int = 0, seed: int = 0,
                out: str | Path | None = None, preset: str = "balanced",
                progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                log: LogFn | None = None, on_epoch: Callable[[dict], None] | None = None,
                models_root: Path | None = None, plan: CutoffPlan | None = None,
                threads: int | None = None) -> TrainResult:
    """Train ``kind`` on ``dataset`` with a time split, evaluate it, save it; see the module doc.

    ``threads`` caps the torch CPU threads of the Transformer's fit (LightGBM already keeps to
    half the cores); the app passes one fewer than the machine has so pages stay responsive while
    a job runs. None: torch's default.
    """
    from core.modeling.metrics import summary_metrics

    spec = spec or LabelSpec()
    if preset not in PRESETS:
        raise DataError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}.",
                        title="Unknown preset")
    settings = PRESETS[preset]
    if epochs is not None:
        if int(epochs) < 1:
            raise DataError(f"epochs must be >= 1; got {epochs}.", title="Bad epochs")
        settings = replace(settings, epochs=int(epochs))
    if spec.max_train_cutoffs > settings.max_train_cutoffs:
        spec = LabelSpec.from_dict({**spec.to_dict(), "max_train_cutoffs": settings.max_train_cutoffs})
    need_seq, need_feat = _needs(kind)
    started = time.perf_counter()
    info = store.dataset(dataset)
    out_dir = Path(out) if out else default_model_dir(dataset, kind, spec, models_root)
    inputs = prepare_inputs(store, dataset, spec, sequences=need_seq, features=need_feat,
                            progress=progress, cancel=cancel, log=log,
                            vocab_options={"min_count": settings.min_item_count,
                                           "gap_steps": GAP_STEPS, "gap_buckets": GAP_BUCKETS},
                            max_train_rows=settings.max_train_rows, seed=seed, plan=plan)
    y_valid = inputs.labels("valid")
    members: dict[str, dict[str, Any]] = {}
    member_kinds = ("transformer", "gbdt", "logreg") if kind == "ensemble" else (kind,)
    for member in member_kinds:
        if cancel is not None:
            cancel.check()
        if member == "transformer":
            members[member] = _fit_transformer(
                inputs, spec, settings, seed=seed, search=search,
                checkpoint_dir=checkpoint_dir_for(out_dir),
                progress=progress, cancel=cancel, on_epoch=on_epoch, log=log, threads=threads)
        else:
            members[member] = _fit_baseline(member, inputs, settings, seed=seed, log=log)
        members[member]["metrics"] = summary_metrics(y_valid, members[member]["valid_pred"], seed=seed)
    ensemble = None
    if kind == "ensemble":
        from models.baselines import EnsembleModel

        ensemble = EnsembleModel().fit({k: m["valid_pred"] for k, m in members.items()}, y_valid)
        valid_pred = ensemble.predict_proba({k: m["valid_pred"] for k, m in members.items()})
        _log(log, f"ensemble weights: {ensemble.weights_}")
    else:
        valid_pred = members[kind]["valid_pred"]
    metrics = summary_metrics(y_valid, valid_pred, seed=seed)
    valid_rows = inputs.examples.iloc[inputs.split_index("valid")].reset_index(drop=True).copy()
    valid_rows["score"] = valid_pred
    for name, fitted in members.items():
        valid_rows[f"score_{name}"] = fitted["valid_pred"]
    valid_rows = _segments(store, dataset, valid_rows)
    card = {
        "kind": kind,
        "dataset": dataset,
        "dataset_sha256": info.get("sha256"),
        "dataset_rows": int(info.get("rows_stored") or 0),
        "label": spec.to_dict(),
        "cutoffs": inputs.plan.to_dict(),
        "preset": preset,
        "seed": seed,
        "rows": {"train": len(inputs.split_index("train")), "valid": len(y_valid),
                 "train_positives": int(inputs.labels("train").sum()), "valid_positives": int(y_valid.sum())},
        "metrics": metrics,
        "members": {name: {"metrics": m["metrics"], "seconds": m["seconds"], "config": m["config"]}
                    for name, m in members.items()},
        "train_seconds": time.perf_counter() - started,
    }
    if "transformer" in members:
        card["history"] = members["transformer"]["history"]
        card["train_config"] = members["transformer"]["train_config"]
        card["search_trials"] = members["transformer"]["trials"]
    model_dir = save_model(
        out_dir, kind=kind, card=card,
        transformer=members.get("transformer", {}).get("model"),
        logreg=members.get("logreg", {}).get("model"), gbdt=members.get("gbdt", {}).get("model"),
        ensemble=ensemble, vocab=inputs.vocab,
        feature_names=list(inputs.features.columns) if inputs.features is not None else None)
    valid_rows.to_parquet(Path(model_dir) / VALIDATION_FILE, index=False)
    if checkpoint_dir_for(out_dir).is_dir():
        shutil.rmtree(checkpoint_dir_for(out_dir))       # the run finished: nothing left to resume
    saved = load_card(model_dir)
    return TrainResult(model_dir=Path(model_dir), card=saved, metrics=metrics,
                       members={k: m["metrics"] for k, m in members.items()} if kind == "ensemble" else {})


def load_validation(model_dir: str | Path) -> pd.DataFrame:
    """The saved validation rows of a model: keys, label, score (+ per member), segments."""
    path = Path(model_dir) / VALIDATION_FILE
    if not path.exists():
        raise ModelError(f"{model_dir} has no {VALIDATION_FILE}, so its quality cannot be shown.",
                         hint="Retrain it with this version of IntentLens.")
    return pd.read_parquet(path)
