"""Experiments that train several models to answer one question, on the test window.

:func:`label_efficiency`: how test quality grows with the share of labelled training users (1 %, 5 %,
20 %, 100 %), with and without a pre-trained encoder (``python -m core pretrain``). Each point trains
the Transformer on that share of the training users' rows (validation and test windows stay whole, so
every point is measured on the same rows) and records the test ROC-AUC and PR-AUC with their bootstrap
95 % intervals; several seeds draw other users and other initialisations. The models are thrown away.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.errors import DataError
from core.modeling.labels import CutoffPlan, LabelSpec
from core.progress import CancelToken, ProgressFn, report

if TYPE_CHECKING:
    from core.data.store import Store

SHARES = (0.01, 0.05, 0.2, 1.0)
COLUMNS = ["share", "pretrained", "seed", "train_rows", "roc_auc", "roc_auc_low", "roc_auc_high",
           "pr_auc", "pr_auc_low", "pr_auc_high"]


def label_efficiency(store: Store, dataset: str, *, spec: LabelSpec | None = None,
                     shares: Sequence[float] = SHARES, seeds: Sequence[int] = (0,), preset: str = "fast",
                     pretrained: str | Path | None = None, freeze: str = "none", epochs: int | None = None,
                     plan: CutoffPlan | None = None, threads: int | None = None,
                     progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> pd.DataFrame:
    """One row per (share, with/without pre-training, seed): ``COLUMNS``. ``pretrained``: an encoder
    directory; None = only the rows without pre-training."""
    from core.modeling.pipeline import train_model

    shares = sorted({float(s) for s in shares})
    if not shares or shares[0] <= 0 or shares[-1] > 1:
        raise DataError(f"label shares must lie in (0, 1]; got {list(shares)}.", title="Bad label shares")
    variants: list[str | Path | None] = [None] + ([pretrained] if pretrained is not None else [])
    runs = [(share, init, seed) for share in shares for init in variants for seed in seeds]
    rows = []
    with tempfile.TemporaryDirectory(prefix="intentlens-label-efficiency-") as tmp:
        for done, (share, init, seed) in enumerate(runs):
            report(progress, done, len(runs), f"share {share:.0%}, {'pre-trained' if init else 'from scratch'}, "
                                              f"seed {seed}")
            result = train_model(store, dataset, kind="transformer", spec=spec, preset=preset, seed=seed,
                                 epochs=epochs, out=Path(tmp) / f"m{done}", plan=plan, threads=threads,
                                 label_share=share, init=init, freeze=freeze, cancel=cancel)
            m = result.metrics
            rows.append({"share": share, "pretrained": init is not None, "seed": seed,
                         "train_rows": int(result.card["rows"]["train"]),
                         **{f"{name}{end}": m[name][key] for name in ("roc_auc", "pr_auc")
                            for end, key in (("", "value"), ("_low", "low"), ("_high", "high"))}})
    report(progress, len(runs), len(runs), "done")
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per share and variant: the median over seeds of each metric, the lowest interval bound and
    the highest (so the band holds every seed's bootstrap interval), and the number of seeds."""
    if frame.empty:
        return pd.DataFrame(columns=["share", "pretrained", "seeds", "roc_auc", "roc_auc_low", "roc_auc_high",
                                     "pr_auc", "pr_auc_low", "pr_auc_high"])
    out = frame.groupby(["share", "pretrained"], as_index=False).agg(
        seeds=("seed", "nunique"), roc_auc=("roc_auc", "median"), roc_auc_low=("roc_auc_low", "min"),
        roc_auc_high=("roc_auc_high", "max"), pr_auc=("pr_auc", "median"), pr_auc_low=("pr_auc_low", "min"),
        pr_auc_high=("pr_auc_high", "max"))
    out["share"] = out["share"].astype(float)
    return out.sort_values(["pretrained", "share"], ignore_index=True)


def lift_from_pretraining(summary: pd.DataFrame, metric: str = "roc_auc") -> pd.DataFrame:
    """share, without, with, lift (with - without) of ``metric``; empty without pre-trained rows."""
    pivot = summary.pivot(index="share", columns="pretrained", values=metric)
    if True not in pivot.columns or False not in pivot.columns:
        return pd.DataFrame(columns=["share", "without", "with", "lift"])
    out = pd.DataFrame({"share": pivot.index.to_numpy(dtype=float), "without": pivot[False].to_numpy(),
                        "with": pivot[True].to_numpy()})
    out["lift"] = out["with"] - out["without"]
    return out.replace([np.inf, -np.inf], np.nan).reset_index(drop=True)
