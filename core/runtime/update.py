"""Keeping a dataset's model current (``python -m core update``), run nightly by a scheduler.

:func:`update_dataset` does, in order:

1. finds the current model (``--model``, else the newest model trained on the dataset in the models
   root: :func:`core.modeling.update.current_model`) and loads it, so a bad model stops the update
   before anything changes;
2. appends the new file's events to the dataset (:func:`core.data.ingest.ingest_file` with
   ``append=True``: the same validation and quarantine as ingest; a row equal to a stored event in
   (user_id, item_id, category, behavior, ts) is dropped; one transaction, so a refused file leaves the
   dataset as it was). The file is read as the dataset was first read (its recorded layout, column
   and behaviour maps, time format and zone) unless other reading options are given;
3. warm-starts a candidate of the same kind, label and preset on the updated dataset's windows
   (:func:`core.modeling.pipeline.train_model` with ``parent``: the Transformer from the current
   weights and vocabulary, gbdt adding trees, the other kinds fitting afresh). The Transformer is
   fitted once, with the teacher weight and cart-head weight the parent's validation window chose
   (:func:`parent_settings`), not once per choice of the preset;
4. scores both models on exactly the same rows of the newest test window and applies the
   :class:`~core.modeling.update.PromotionRule` (ROC-AUC not lower, PR-AUC not lower by more than
   0.002);
5. writes the lineage on the candidate's card (parent, data range, events added, duplicates dropped,
   both models' metrics on that window, promoted or not and why) and moves it into the models root
   when promoted, else into ``<models root>/rejected/`` where it never serves;
6. re-scores the dataset with the model that serves now (the candidate, or the current model when the
   candidate was rejected: the scores then cover the new events either way).

When training fails after the append (too few buyers in the new windows, say), the events stay
appended and no model changes; running the same command again is safe: every row of the file is then
a duplicate of a stored event and nothing is appended twice.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ModelError
from core.modeling.update import (
    REJECTED_DIR,
    Comparison,
    PromotionRule,
    compare_on_newest_window,
    current_model,
    next_model_name,
    write_lineage,
)
from core.progress import CancelToken, ProgressFn
from core.settings import get_settings

if TYPE_CHECKING:
    from core.data.ingest import IngestReport
    from core.data.store import Store
    from core.modeling.pipeline import LogFn


@dataclass
class UpdateResult:
    """What one update appended, trained, decided and scored."""

    dataset: str
    ingest: IngestReport
    parent: Path                   # the model that served before
    candidate: Path                # where the candidate was saved (models root, or its rejected folder)
    serving: Path                  # the model that serves now (and scored the dataset)
    comparison: Comparison
    events_before: int
    events_after: int
    scored_rows: int
    seconds: float

    @property
    def promoted(self) -> bool:
        return self.comparison.promoted

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "ingest": self.ingest.to_dict(), "parent": str(self.parent),
                "candidate": str(self.candidate), "serving": str(self.serving), "promoted": self.promoted,
                "reason": self.comparison.reason, "comparison": self.comparison.to_dict(),
                "events_before": self.events_before, "events_after": self.events_after,
                "scored_rows": self.scored_rows, "seconds": self.seconds}

    def summary(self) -> str:
        c = self.comparison
        return "\n".join([
            f"Updated dataset {self.dataset!r} in {self.seconds:.1f} s",
            f"  events            {self.events_before:,} -> {self.events_after:,} "
            f"(+{self.ingest.rows_stored:,} from {self.ingest.source_file}; "
            f"{self.ingest.duplicates_dropped:,} duplicates dropped, "
            f"{self.ingest.rows_quarantined:,} rows quarantined)",
            f"  newest test window {c.test_cutoff} ({c.rows:,} rows, {c.positives:,} buyers)",
            f"  current   {self.parent.name:<32} ROC-AUC {c.current['roc_auc']['value']:.4f}  "
            f"PR-AUC {c.current['pr_auc']['value']:.4f}",
            f"  candidate {self.candidate.name:<32} ROC-AUC {c.candidate['roc_auc']['value']:.4f}  "
            f"PR-AUC {c.candidate['pr_auc']['value']:.4f}",
            f"  {c.reason}",
            f"  serving {self.serving} ({self.scored_rows:,} rows scored); rule: {c.rule}",
        ])


def reading_options(info: dict[str, Any]) -> dict[str, Any]:
    """How the dataset was first read (its ``datasets`` row's ``options``): layout, and for the
    generic layout the column and behaviour maps, time format, zone and year."""
    try:
        options = json.loads(info.get("options") or "{}")
    except ValueError:
        options = {}
    layout = options.get("layout") or info.get("layout") or "auto"
    out: dict[str, Any] = {"layout": layout}
    if layout == "generic":
        out.update(column_map=options.get("column_map") or None, behavior_map=options.get("behavior_map") or None,
                   ts_format=options.get("ts_format"), year=options.get("year"),
                   tz=options.get("source_tz") if options.get("source_tz") not in (None, "UTC") else None)
    return out


def _events(store: Store, dataset: str) -> int:
    row = store.fetchone("SELECT count(*) FROM events WHERE dataset = ?", [dataset])
    return int(row[0]) if row else 0


def parent_settings(card: dict[str, Any]) -> dict[str, float]:
    """The training settings a warm start keeps from its parent: the teacher weight (``distill``) and the
    cart-head weight (``aux_cart``) its Transformer was fitted with, i.e. the ones its validation window
    chose. A card from before a setting existed trained without it (TrainConfig's default, 0). Empty for
    a kind without a Transformer, or a card without its training settings: the preset's then apply."""
    from core.modeling.training import TrainConfig

    recorded = card.get("train_config")
    if card.get("kind") not in ("transformer", "ensemble") or not isinstance(recorded, dict):
        return {}
    default = TrainConfig()
    return {name: float(recorded.get(name, getattr(default, name))) for name in ("distill", "aux_cart")}


def update_dataset(store: Store, dataset: str, path: str | Path, *, model: str | Path | None = None,
                   models_root: str | Path | None = None, layout: str | None = None,
                   column_map: dict[str, str] | None = None, behavior_map: dict[str, str] | None = None,
                   ts_format: str | None = None, tz: str | None = None, year: int | str | None = None,
                   duplicates: str | None = None, epochs: int | None = None, seed: int = 0,
                   threads: int | None = None, rule: PromotionRule | None = None,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   log: LogFn | None = None) -> UpdateResult:
    """Append ``path`` to ``dataset``, warm-start, compare, promote or set aside, re-score; see the
    module docstring. ``model``: the current model's directory (default: the newest model trained on
    the dataset in ``models_root``, default the configured models root). Reading options left None
    are the dataset's recorded ones. ``epochs`` overrides the parent's preset (tests, quick runs).
    Raises NotFoundError (dataset or model), ModelError (a model of another dataset), DataError (the
    file), EligibilityError (too few buyers in the new windows) — the first three before anything
    is stored."""
    from core.data.ingest import ingest_file
    from core.insight.cohorts import score_dataset
    from core.modeling.pipeline import train_model
    from models.artifact import load_model

    started = time.perf_counter()
    root = Path(models_root) if models_root is not None else get_settings().models_root
    info = store.dataset(dataset)                        # NotFoundError names the datasets
    parent_dir = Path(model) if model is not None else current_model(dataset, root)
    parent = load_model(parent_dir)                      # ModelError says what is wrong
    if parent.card.get("dataset") != dataset:
        raise ModelError(f"{parent_dir} was trained on dataset {parent.card.get('dataset')!r}, not {dataset!r}.",
                         title="Model of another dataset", hint="Pass --model with a model of this dataset.")
    read = reading_options(info)
    given = {"layout": layout, "column_map": column_map, "behavior_map": behavior_map, "ts_format": ts_format,
             "tz": tz, "year": year}
    read.update({key: value for key, value in given.items() if value is not None})
    events_before = _events(store, dataset)
    report = ingest_file(store, path, dataset=dataset, append=True, duplicates=duplicates, progress=progress,
                         **read)
    events_after = _events(store, dataset)

    name = next_model_name(parent_dir, root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".update-", dir=root))   # hidden: never listed
    kept = parent_settings(parent.card)
    try:
        result = train_model(store, dataset, kind=parent.kind, spec=parent.spec,
                             preset=str(parent.card.get("preset") or "balanced"), epochs=epochs, seed=seed,
                             out=staging / name, parent=parent_dir, threads=threads, progress=progress,
                             cancel=cancel, log=log,
                             distill=kept.get("distill"), aux_cart=kept.get("aux_cart"))
        candidate = load_model(result.model_dir)
        comparison = compare_on_newest_window(store, dataset, parent, candidate, rule, seed=seed)
        updated = store.dataset(dataset)
        write_lineage(result.model_dir, {
            "parent_id": parent.card.get("model_id"), "parent_path": str(parent_dir),
            "data": {"dataset": dataset, "file": report.source_file, "file_sha256": report.sha256,
                     "ts_min": updated.get("ts_min"), "ts_max": updated.get("ts_max"),
                     "file_ts_min": report.ts_min, "file_ts_max": report.ts_max,
                     "events_before": events_before, "events_added": report.rows_stored,
                     "events_after": events_after, "duplicates_dropped": report.duplicates_dropped,
                     "duplicates_across": report.duplicates_across,
                     "rows_quarantined": report.rows_quarantined},
            "window": {"test_cutoff": comparison.test_cutoff, "rows": comparison.rows,
                       "positives": comparison.positives},
            "metrics": {"candidate": comparison.candidate, "current": comparison.current},
            "promoted": comparison.promoted, "reason": comparison.reason, "rule": comparison.rule,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds")})
        target = root / name if comparison.promoted else root / REJECTED_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(result.model_dir, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)      # an unfinished candidate and its checkpoint
    serving = target if comparison.promoted else parent_dir
    scored = score_dataset(store, serving, dataset, progress=progress, cancel=cancel)
    return UpdateResult(dataset=dataset, ingest=report, parent=parent_dir, candidate=target, serving=serving,
                        comparison=comparison, events_before=events_before, events_after=events_after,
                        scored_rows=len(scored), seconds=time.perf_counter() - started)
