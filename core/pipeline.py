"""Train, evaluate and register models: labels -> inputs -> fit -> metrics -> saved directory.

The CLI's ``train`` and the Train page both call :func:`train_model`. It is model-agnostic: each
kind says which inputs it needs (sequences for the Transformer, aggregate features for the
baselines, both for the ensemble), the inputs are built once inside DuckDB, and every kind is
evaluated on the same time-split validation rows with the same metrics.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import DataError, ModelError
from core.labels import CutoffPlan, LabelSpec, build_examples, check_eligibility, plan_cutoffs
from core.progress import CancelToken, ProgressFn, report

MODEL_KINDS = ("transformer", "gbdt", "logreg", "ensemble")
MODELS_ROOT = Path("models") / "saved"
VALIDATION_FILE = "validation.parquet"

# Size presets for the Train page and `--preset`; each field is what it implies for training.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"epochs": 4, "d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64,
             "batch_size": 256, "max_train_cutoffs": 3, "gbdt_trees": 200},
    "balanced": {"epochs": 12, "d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 128,
                 "batch_size": 256, "max_train_cutoffs": 6, "gbdt_trees": 400},
    "thorough": {"epochs": 30, "d_model": 96, "n_heads": 4, "n_layers": 2, "d_ff": 192,
                 "batch_size": 256, "max_train_cutoffs": 10, "gbdt_trees": 800},
}

LogFn = Callable[[str], None]


@dataclass
class Inputs:
    """Everything the model kinds train and validate on, built once per training run."""

    plan: CutoffPlan
    examples: pd.DataFrame                 # user_id, cutoff, [category], label, split
    vocab: Any = None                      # core.sequences.Vocab when a sequence model is trained
    sequences: Any = None                  # core.sequences.SequenceBatch aligned with examples
    features: pd.DataFrame | None = None   # aggregate features aligned with examples

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.examples["split"].to_numpy() == split)

    def labels(self, split: str) -> np.ndarray:
        return self.examples["label"].to_numpy()[self.split_index(split)].astype(np.float32)


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


def _needs(kind: str) -> tuple[bool, bool]:
    """(needs sequences, needs features) for a model kind."""
    if kind not in MODEL_KINDS:
        raise DataError(f"model kind must be one of {', '.join(MODEL_KINDS)}; got {kind!r}.",
                        title="Unknown model kind")
    return kind in ("transformer", "ensemble"), kind in ("gbdt", "logreg", "ensemble")


def default_model_dir(dataset: str, kind: str, spec: LabelSpec, root: Path = MODELS_ROOT) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_") or "dataset"
    return root / f"{safe}-{kind}-{spec.horizon}" + ("" if spec.scope == "any" else "-category")


def prepare_inputs(store, dataset: str, spec: LabelSpec, *, sequences: bool, features: bool,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   log: LogFn | None = None) -> Inputs:
    """Cutoffs, eligibility, example rows, and the model inputs the kinds need."""
    from core.features import build_features
    from core.sequences import build_sequences, build_vocab

    store.dataset(dataset)  # NotFoundError with the list of datasets
    plan = plan_cutoffs(store, dataset, spec)
    check_eligibility(store, dataset, spec, plan).require()
    _log(log, f"cutoffs: train {', '.join(str(t) for t in plan.train_cutoffs)}; "
              f"validation {plan.valid_cutoff} (labels up to {plan.valid_cutoff + spec.horizon_td})")
    report(progress, 0, None, "building example rows")
    examples = build_examples(store, dataset, spec, plan)
    inputs = Inputs(plan=plan, examples=examples)
    if sequences:
        if cancel:
            cancel.check()
        inputs.vocab = build_vocab(store, dataset, plan.valid_cutoff)
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
