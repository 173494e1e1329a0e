"""The samples shipped in ``sample_data/`` and the default datasets loaded on first start.

Each :class:`Sample` names a file, the layout (and for the generic layout the column map) it is
ingested with, and the dataset name it gets. :func:`ensure_default_data` ingests whichever default
samples are not in the store yet, so a fresh installation shows data without any user action.
Provenance of the real samples: ``sample_data/PROVENANCE.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConflictError
from core.progress import ProgressFn, report
from core.settings import DEFAULT_MODELS_ROOT, SAMPLE_DIR

if TYPE_CHECKING:
    from core.data.ingest import IngestReport
    from core.data.store import Store


@dataclass(frozen=True)
class Sample:
    """One shipped file and how it is ingested."""

    name: str                       # dataset name it is stored under
    path: str                       # relative to sample_data/
    layout: str                     # core.data.formats layout
    description: str                # one line for the Data page
    column_map: dict[str, str] = field(default_factory=dict)     # generic layout only
    behavior_map: dict[str, str] = field(default_factory=dict)   # generic layout only
    default: bool = True            # ingested on first start

    def file(self, root: Path | None = None) -> Path:
        return (root or SAMPLE_DIR) / self.path


SAMPLES: tuple[Sample, ...] = (
    Sample("demo", "demo/events.csv.gz", "taobao",
           "Synthetic demo log with planted, known purchase intent (core.modeling.synth, seed 7)."),
    Sample("taobao_head", "taobao/UserBehavior_head.csv", "taobao",
           "Taobao UserBehavior, first 4,321 rows: 43 users with full histories, 2017-11-25 .. 12-03."),
    Sample("taobao_tail", "taobao/UserBehavior_tail.csv", "taobao",
           "Taobao UserBehavior, last 10,000 rows: 114 users with full histories."),
    Sample("taobao_2h", "taobao/UserBehavior_slice_2h.csv", "taobao",
           "Taobao UserBehavior, every event of 2017-11-26 09:00-11:10 (+08:00) of 33,251 users."),
    Sample("tianchi_mobile", "tianchi_mobile/train_user_sample.csv", "tianchi_mobile",
           "Tianchi mobile recommendation user log, 34 users, 2014-11-18 .. 12-18 (104 duplicates)."),
    Sample("rees46", "rees46/2019-Oct_head2000.csv", "rees46",
           "REES46 multi-category store, first 2,000 events of October 2019, with prices and brands."),
    Sample("diginetica", "diginetica/train-item-views_sample.csv", "generic",
           "CIKM Cup 2016 (Diginetica) item views; sessions as users, views only (generic map).",
           column_map={"user_id": "session_id", "session_id": "session_id", "item_id": "item_id",
                       "ts": "eventdate", "ts_offset_ms": "timeframe"},
           behavior_map={"*": "view"}),
)


def samples(root: Path | None = None, *, available_only: bool = False) -> list[Sample]:
    """The catalogue; with ``available_only`` just those whose file exists under ``root``."""
    return [s for s in SAMPLES if not available_only or s.file(root).is_file()]


def get_sample(name: str) -> Sample:
    for sample in SAMPLES:
        if sample.name == name:
            return sample
    raise KeyError(name)


def ingest_sample(store: Store, sample: Sample, *, root: Path | None = None, replace: bool = False,
                  progress: ProgressFn | None = None) -> IngestReport:
    """Ingest one sample under its own name; returns the IngestReport."""
    from core.data.ingest import ingest_file

    return ingest_file(store, sample.file(root), dataset=sample.name, layout=sample.layout,
                       column_map=dict(sample.column_map) or None,
                       behavior_map=dict(sample.behavior_map) or None, replace=replace,
                       progress=progress)


def ensure_default_data(store: Store, progress: ProgressFn | None = None, *,
                        root: Path | None = None) -> list[str]:
    """Ingest every default sample that exists on disk but not in the store; returns their names.

    A sample whose file is absent (e.g. the demo log before it is generated) is skipped. A name
    another process stored meanwhile is left as it is.
    """
    existing = set(store.dataset_names())
    todo = [s for s in SAMPLES if s.default and s.name not in existing and s.file(root).is_file()]
    done: list[str] = []
    for i, sample in enumerate(todo):
        report(progress, i, len(todo), f"loading sample {sample.name}")
        try:
            ingest_sample(store, sample, root=root)
        except ConflictError:
            continue   # stored by a concurrent first start; nothing to do
        done.append(sample.name)
    report(progress, len(todo), len(todo), "samples loaded")
    return done


# The shipped demo models (committed under models/saved/) and the dataset they score on first start.
DEMO_MODELS_ROOT = DEFAULT_MODELS_ROOT
DEMO_MODEL_DIRS: tuple[str, ...] = ("demo", "demo-gbdt", "demo-ensemble")
DEMO_DATASET = "demo"


def ensure_demo_scores(store: Store, progress: ProgressFn | None = None, *,
                       models_root: Path | None = None) -> list[str]:
    """Score the shipped demo models on the demo dataset when they have no scoring run yet, so
    the Cohorts and Explain pages work on a fresh machine. Returns the model ids scored."""
    from core.insight.cohorts import score_dataset
    from models.artifact import load_card

    root = models_root or DEMO_MODELS_ROOT
    if DEMO_DATASET not in store.dataset_names():
        return []
    scored: list[str] = []
    for name in DEMO_MODEL_DIRS:
        model_dir = root / name
        if not (model_dir / "card.json").is_file():
            continue
        model_id = load_card(model_dir)["model_id"]
        if store.fetchone("SELECT 1 FROM scores WHERE model_id = ? AND dataset = ? LIMIT 1",
                          [model_id, DEMO_DATASET]):
            continue
        report(progress, 0, None, f"scoring the demo model {name}")
        score_dataset(store, model_dir, DEMO_DATASET, progress=progress)
        scored.append(model_id)
    return scored
