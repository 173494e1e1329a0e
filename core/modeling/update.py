"""Keeping a model current, the modeling half: which model is current, a candidate compared with it on
the same rows of the newest test window, the promotion rule, the lineage written on the card, and a
dataset's model lineage read back (the Train page's Models timeline).

The whole update (append the new events, warm-start, compare, promote or set aside, re-score) is
:func:`core.runtime.update.update_dataset`; it scores users, which sits above this layer.

Where models live: the current model of a dataset is the newest one trained on it in the models root
(:func:`current_model`). A promoted candidate is saved there under a new folder, so it becomes the
newest; a rejected one goes to ``<models root>/rejected/`` (:data:`REJECTED_DIR`), which the model
listing does not read, so it never serves, and its card keeps the comparison that rejected it.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.errors import DataError, NotFoundError
from core.modeling.model_store import list_models
from core.settings import get_settings
from models.artifact import CARD_FILE, json_default, load_card

if TYPE_CHECKING:
    from core.data.store import Store
    from models.artifact import LoadedModel

REJECTED_DIR = "rejected"          # under the models root: candidates that were not promoted
COMPARE_CHUNK = 50_000             # test rows scored per chunk (bounded memory on large datasets)
_GENERATION = re.compile(r"-v(\d+)$")
TIMELINE_COLUMNS = ("model_id", "path", "kind", "trained_at", "roc_auc", "pr_auc", "parent_id", "status",
                    "reason", "new_window_roc_auc", "new_window_pr_auc", "parent_new_window_roc_auc",
                    "events_added", "duplicates_dropped", "data_ts_max")


# -- the current model ------------------------------------------------------------------------------
def current_model(dataset: str, root: str | Path | None = None) -> Path:
    """The newest model trained on ``dataset`` in the models root (``root``): the one an update
    continues from unless told otherwise. NotFoundError when there is none."""
    board = list_models(root, dataset)
    if board.empty:
        raise NotFoundError(f"no model trained on dataset {dataset!r} in the models folder.",
                            hint=f"Train one first (`python -m core train --dataset {dataset}`), or pass "
                                 "--model DIR.")
    return Path(str(board["path"].iloc[0]))


def next_model_name(parent_dir: str | Path, root: str | Path) -> str:
    """``<parent folder without -vN>-v<N+1>``: the first generation number after the parent's that
    is free in the models root and in its rejected folder."""
    name = Path(parent_dir).name
    match = _GENERATION.search(name)
    base, generation = (name[:match.start()], int(match.group(1))) if match else (name, 1)
    root = Path(root)
    k = generation + 1
    while (root / f"{base}-v{k}").exists() or (root / REJECTED_DIR / f"{base}-v{k}").exists():
        k += 1
    return f"{base}-v{k}"


# -- comparison on the newest test window -----------------------------------------------------------
@dataclass(frozen=True)
class PromotionRule:
    """When a candidate replaces the current model, judged on the same rows of the newest test window:
    its ROC-AUC is not lower than the current model's by more than ``roc_auc_tolerance`` (default 0:
    not lower at all) and its PR-AUC not lower by more than ``pr_auc_tolerance`` (default 0.002)."""

    roc_auc_tolerance: float = 0.0
    pr_auc_tolerance: float = 0.002

    def describe(self) -> str:
        return (f"promote when the candidate's test ROC-AUC >= the current model's - {self.roc_auc_tolerance:g} "
                f"and its PR-AUC >= the current's - {self.pr_auc_tolerance:g}, on the same rows of the "
                "newest test window")

    def decide(self, candidate: dict[str, Any], current: dict[str, Any]) -> tuple[bool, str]:
        """(promote?, the reason in one sentence) from two summary_metrics dicts."""
        c_roc, p_roc = _value(candidate, "roc_auc"), _value(current, "roc_auc")
        c_pr, p_pr = _value(candidate, "pr_auc"), _value(current, "pr_auc")
        figures = (f"ROC-AUC {c_roc:.4f} vs {p_roc:.4f}, PR-AUC {c_pr:.4f} vs {p_pr:.4f} (candidate vs "
                   "current)")
        if any(np.isnan(v) for v in (c_roc, p_roc, c_pr, p_pr)):
            return False, f"not promoted: a metric is undefined on the newest test window ({figures})."
        if c_roc < p_roc - self.roc_auc_tolerance:
            return False, f"not promoted: the candidate's ROC-AUC is lower; {figures}."
        if c_pr < p_pr - self.pr_auc_tolerance:
            return False, (f"not promoted: the candidate's PR-AUC is lower by more than "
                           f"{self.pr_auc_tolerance:g}; {figures}.")
        return True, f"promoted: no worse on the newest test window; {figures}."


def _value(metrics: dict[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(value["value"]) if isinstance(value, dict) else float("nan")


@dataclass
class Comparison:
    """Two models scored on exactly the same rows: the newest test window of a dataset."""

    test_cutoff: str               # ISO, UTC
    rows: int
    positives: int
    current: dict[str, Any]        # summary_metrics of the current model
    candidate: dict[str, Any]      # summary_metrics of the candidate
    promoted: bool
    reason: str
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_scores(store: Store, dataset: str, model: LoadedModel, examples: pd.DataFrame) -> np.ndarray:
    """``model``'s calibrated probabilities for labelled example rows (user_id, cutoff, [category]),
    built from the events at or before each row's cutoff with the model's own vocabulary."""
    from core.modeling.features import build_features
    from core.modeling.sequences import build_sequences

    scores = np.empty(len(examples), dtype=np.float64)
    for start in range(0, len(examples), COMPARE_CHUNK):
        chunk = examples.iloc[start:start + COMPARE_CHUNK].reset_index(drop=True)
        seq = build_sequences(store, dataset, chunk, model.vocab, model.spec) if model.needs_sequences \
            and model.vocab is not None else None
        feats = build_features(store, dataset, chunk, model.spec) if model.needs_features else None
        scores[start:start + len(chunk)] = model.predict(seq, feats)
    return scores


def compare_on_newest_window(store: Store, dataset: str, current: LoadedModel, candidate: LoadedModel,
                             rule: PromotionRule | None = None, *, seed: int = 0) -> Comparison:
    """Score both models on the test window of ``dataset``'s cutoff plan (under the candidate's label)
    — the same rows, labels and metrics — and apply ``rule``. DataError when the two predict
    different labels or the window has no rows."""
    from core.modeling.labels import build_examples, plan_cutoffs
    from core.modeling.metrics import summary_metrics

    rule = rule or PromotionRule()
    if current.spec.to_dict() | {"max_train_cutoffs": 0} != candidate.spec.to_dict() | {"max_train_cutoffs": 0}:
        raise DataError("the two models predict different labels, so one window cannot compare them.",
                        title="Models not comparable", hint="Compare models of the same horizon and scope.")
    plan = plan_cutoffs(store, dataset, candidate.spec)
    examples = build_examples(store, dataset, candidate.spec, plan, splits=("test",))
    if examples.empty or plan.test_cutoff is None:
        raise DataError(f"dataset {dataset!r} has no rows in its newest test window.", title="Nothing to compare",
                        hint="Append events that cover at least one horizon past the last window.")
    y = examples["label"].to_numpy(dtype=float)
    metrics = {name: summary_metrics(y, window_scores(store, dataset, model, examples), seed=seed)
               for name, model in (("current", current), ("candidate", candidate))}
    promoted, reason = rule.decide(metrics["candidate"], metrics["current"])
    return Comparison(test_cutoff=plan.test_cutoff.isoformat(), rows=len(examples), positives=int(y.sum()),
                      current=metrics["current"], candidate=metrics["candidate"], promoted=promoted,
                      reason=reason, rule=rule.describe())


# -- lineage on the card ----------------------------------------------------------------------------
def write_lineage(model_dir: str | Path, lineage: dict[str, Any]) -> dict[str, Any]:
    """Add ``lineage`` to the card of the model in ``model_dir`` (card.json rewritten atomically:
    a temporary file renamed over it) and return the new card."""
    model_dir = Path(model_dir)
    card = load_card(model_dir)
    card["lineage"] = lineage
    fd, tmp = tempfile.mkstemp(prefix=".card.", suffix=".tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(card, indent=1, default=json_default))
        os.replace(tmp, model_dir / CARD_FILE)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return card


def _metric(block: Any, name: str) -> float:
    value = block.get(name) if isinstance(block, dict) else None
    if isinstance(value, dict):
        value = value.get("value")
    return float(value) if isinstance(value, (int, float)) else float("nan")


def model_timeline(dataset: str, root: str | Path | None = None) -> pd.DataFrame:
    """A dataset's models over time, oldest first, from their cards (the models root and its
    rejected folder): model_id, path, kind, trained_at (UTC, tz-naive), roc_auc and pr_auc (each
    model's own test window), parent_id (None for a model trained from scratch), status
    (``trained`` | ``promoted`` | ``rejected``), reason, new_window_roc_auc / new_window_pr_auc (the
    candidate on the window it was compared on), parent_new_window_roc_auc (the parent on the same
    rows), events_added, duplicates_dropped, data_ts_max (the dataset's last event after the update)."""
    base = Path(root) if root is not None else get_settings().models_root
    boards = [list_models(base, dataset), list_models(base / REJECTED_DIR, dataset)]
    rows = []
    for board in boards:
        for path in board["path"]:
            card = load_card(path)
            lineage = card.get("lineage") if isinstance(card.get("lineage"), dict) else {}
            compared = lineage.get("metrics", {}) if lineage else {}
            data = lineage.get("data", {}) if lineage else {}
            status = "trained" if not lineage else ("promoted" if lineage.get("promoted") else "rejected")
            rows.append({
                "model_id": str(card.get("model_id")), "path": str(path), "kind": card.get("kind"),
                "trained_at": card.get("created_at"), "roc_auc": _metric(card.get("metrics"), "roc_auc"),
                "pr_auc": _metric(card.get("metrics"), "pr_auc"),
                "parent_id": lineage.get("parent_id") if lineage else None, "status": status,
                "reason": lineage.get("reason") if lineage else None,
                "new_window_roc_auc": _metric(compared.get("candidate"), "roc_auc"),
                "new_window_pr_auc": _metric(compared.get("candidate"), "pr_auc"),
                "parent_new_window_roc_auc": _metric(compared.get("current"), "roc_auc"),
                "events_added": data.get("events_added"), "duplicates_dropped": data.get("duplicates_dropped"),
                "data_ts_max": data.get("ts_max")})
    frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
    frame["trained_at"] = pd.to_datetime(frame["trained_at"], utc=True, errors="coerce").dt.tz_localize(None)
    frame["data_ts_max"] = pd.to_datetime(frame["data_ts_max"], errors="coerce")
    for name in ("parent_id", "reason"):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    for name in ("events_added", "duplicates_dropped"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    return frame.sort_values(["trained_at", "model_id"], kind="stable").reset_index(drop=True)
