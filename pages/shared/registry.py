"""The pages of the app, in navigation order. ``app.py`` registers every entry whose file exists.

Adding a page: write ``pages/views/<name>.py`` and add one line to :data:`PAGES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PageSpec:
    """One page of the app. ``path`` is relative to the repository root."""

    path: str        # "pages/views/data.py"
    title: str       # navigation label
    icon: str        # material icon shown in the navigation
    blurb: str       # one line on the Home page
    url_path: str    # the page's address (shared links use it, so keep it stable)


# The first page is the default one (served at "/").
PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/views/home.py", "Home", ":material/home:",
             "What IntentLens does; the current dataset and model.", "start"),
    PageSpec("pages/views/data.py", "Data", ":material/database:",
             "Ingest logs, check their quality, look at the overview.", "datasets"),
    PageSpec("pages/views/train.py", "Train", ":material/model_training:",
             "Train intent models and compare them on a leaderboard.", "training"),
    PageSpec("pages/views/performance.py", "Performance", ":material/monitoring:",
             "How well a model ranks buyers: curves, lift, calibration.", "evaluation"),
    PageSpec("pages/views/cohorts.py", "Cohorts", ":material/groups:",
             "Pick high-intent users, see what sets them apart, export them.", "cohort-builder"),
    PageSpec("pages/views/explain.py", "Explain", ":material/psychology:",
             "Why the model scores one user the way it does.", "explanations"),
    PageSpec("pages/views/monitor.py", "Monitor", ":material/vital_signs:",
             "Drift since training, cohort stability across runs, the scoring service's health.",
             "monitoring"),
)


def available_pages() -> list[PageSpec]:
    """The entries of PAGES whose file exists, in order."""
    return [p for p in PAGES if (ROOT / p.path).is_file()]


def page_path(stem: str) -> str:
    """The registered script path of page ``stem`` (``"data"`` -> ``"pages/views/data.py"``)."""
    for spec in PAGES:
        if Path(spec.path).stem == stem:
            return spec.path
    raise KeyError(f"no page {stem!r}; known: {[Path(p.path).stem for p in PAGES]}")
