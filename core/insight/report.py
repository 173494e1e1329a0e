"""A model report as one self-contained HTML file: card, test-window performance, a cohort, drivers.

:func:`build_report` gathers what the Performance, Cohorts and Explain pages show about one model
and one dataset and writes it as a single HTML page that opens offline: plotly.js is embedded once,
inline, in front of the first figure, and every later figure uses it; nothing is loaded from
anywhere else (no ``<script src>``, no external link). Every piece of text is escaped with
:func:`html.escape`. Sections:

1. **Model card**: kind, id, dataset, label (horizon, scope, history), the cutoffs of the training,
   validation and test windows, when it was trained, the headline metrics on the test window with
   their 95 % intervals beside the validation window's, and the calibration map.
2. **Test-window performance at a cutoff** (a probability): accuracy, precision, recall and F1 with
   bootstrap intervals, the confusion matrix, the PR and ROC curves with the cutoff marked, and the
   reliability diagram (``core.insight.evaluation``, ``core.charts``); for an ensemble, its lead over
   each member on the same test users with paired bootstrap intervals.
3. **A cohort**: the top X % of the model's scoring run (``core.insight.cohorts.cohort_summary``)
   with precision, recall and lift of the same cut on the test window.
4. **Global drivers**: mean attribution by behaviour, time before T and category for a sample of
   users (a Transformer of scope ``any``), and tree SHAP feature importance (a model with a
   gradient-boosted member and a scoring run) (``core.insight.drivers``).

A section that cannot be filled (no scoring run, no Transformer) says why and what to run.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.errors import DataError, IntentLensError
from core.progress import ProgressFn, report

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from core.data.store import Store

DEFAULT_THRESHOLD = 0.5       # the cutoff probability the performance section is measured at
DEFAULT_COHORT_TOP = 5.0      # the cohort section's top X %
DRIVER_USERS = 200            # users sampled for the global drivers and tree SHAP
FIGURES_META = "intentlens-figures"   # <meta name=...> holding the number of figures in the file
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
SECTIONS = ("model-card", "performance", "cohort", "drivers")
_METRIC_KEYS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece")

_STYLE = """
body { font-family: "Source Sans Pro", Inter, "Helvetica Neue", Arial, sans-serif; color: #1B1F3B;
       max-width: 1180px; margin: 24px auto; padding: 0 16px; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #E6E8F0; }
.meta, .note { color: #4A4F6A; } .note { background: #F4F5FA; padding: 8px 12px; border-radius: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; } th, td { padding: 4px 10px; text-align: left;
  border-bottom: 1px solid #E6E8F0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px; }
.figure { min-height: 320px; }
"""


@dataclass
class Report:
    """A built report: the HTML text and what it holds."""

    html: str
    figures: int                                     # plotly figures drawn in the page
    sections: list[str] = field(default_factory=list)   # SECTIONS, in order
    notes: list[str] = field(default_factory=list)      # why a part is missing, as shown in the page

    def write(self, path: str | Path) -> Path:
        """Write the HTML to ``path`` (parents created) and return the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.html, encoding="utf-8")
        return out


# -- HTML pieces ----------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def _interval(metric: Any) -> str:
    """``value [low, high]`` of a card metric ({"value", "low", "high"}), or the bare number."""
    if isinstance(metric, dict) and "value" in metric:
        low, high = metric.get("low"), metric.get("high")
        text = _num(metric["value"])
        if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
            text += f" [{_num(low)}, {_num(high)}]"
        return text
    return _num(metric) if isinstance(metric, (int, float)) else "–"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped here, so callers pass plain text."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


class _Figures:
    """Turns figures into HTML fragments; the first carries plotly.js inline, the others reuse it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: go.Figure) -> str:
        div = fig.to_html(full_html=False, include_plotlyjs=self.count == 0, config=PLOTLY_CONFIG,
                          div_id=f"figure-{self.count + 1}")
        self.count += 1
        return f'<div class="figure">{div}</div>'


# -- sections ---------------------------------------------------------------------------------------
def _card_section(card: dict[str, Any], name: str) -> str:
    from models.calibration import Calibrator

    label, cutoffs = card.get("label") or {}, card.get("cutoffs") or {}
    rows = card.get("rows") or {}
    facts = [
        ("model", name), ("model id", card.get("model_id", "–")), ("kind", card.get("kind", "–")),
        ("dataset", card.get("dataset", "–")), ("horizon", label.get("horizon", "–")),
        ("scope", label.get("scope", "–")), ("history (lookback)", label.get("lookback") or "all"),
        ("events per sequence", label.get("max_len", "–")),
        ("training cutoffs", ", ".join(str(t) for t in cutoffs.get("train_cutoffs", [])) or "–"),
        ("validation cutoff", cutoffs.get("valid_cutoff", "–")),
        ("test cutoff", cutoffs.get("test_cutoff") or "– (trained before the test window existed)"),
        ("rows (train / validation / test)",
         " / ".join(_num(rows.get(s)) if s in rows else "–" for s in ("train", "valid", "test"))),
        ("trained", card.get("created_at", "–")), ("preset", card.get("preset", "–")),
    ]
    try:
        calibration = Calibrator.from_dict(card.get("calibration")).describe() if card.get("calibration") \
            else "none (raw scores)"
    except ValueError:
        calibration = "unreadable calibration map"
    facts.append(("calibration", calibration))
    if card.get("teacher"):
        from core.modeling.pipeline import describe_teacher

        facts.append(("distilled", describe_teacher(card["teacher"])))
    if (card.get("train_config") or {}).get("aux_cart"):
        from core.modeling.pipeline import describe_cart_head

        facts.append(("training", describe_cart_head(card["train_config"]["aux_cart"])))
    split = card.get("metrics_split", "valid")
    test = card.get("metrics", {}) if split == "test" else {}
    valid = card.get("valid_metrics", {}) if split == "test" else card.get("metrics", {})
    metric_rows = [(key, _interval(test.get(key)), _interval(valid.get(key))) for key in _METRIC_KEYS]
    parts = ['<section id="model-card"><h2>Model card</h2>',
             _table(["", ""], [(k, str(v)) for k, v in facts]),
             "<h3>Headline metrics (95 % bootstrap intervals)</h3>",
             _table(["metric", "test window", "validation window"], metric_rows, numeric=(1, 2))]
    if split != "test":
        parts.append(_note("This model predates the test window: its figures come from the validation "
                           "window it was selected on, so they are optimistic. Retrain it to measure it "
                           "on a window nothing was chosen on."))
    if card.get("refit"):
        parts.append(_note("Refitted on every window up to the latest after it was evaluated; the figures "
                           "are those of the evaluated fit."))
    parts.append("</section>")
    return "".join(parts)


def _performance_section(model_dir: Path, threshold: float, figure: _Figures) -> str:
    from core import charts
    from core.insight.evaluation import at_cutoff, evaluate_model, operating_points

    ev = evaluate_model(model_dir)
    cut = at_cutoff(ev, "probability", threshold)
    rows = [(name, _num(cut.values[name]), f"[{_num(cut.intervals[name][0])}, {_num(cut.intervals[name][1])}]")
            for name in ("accuracy", "precision", "recall", "f1")]
    points = operating_points([ev], [cut])
    flagged, share = cut.values["flagged"], cut.values["flagged_share"]
    intro = (f"{ev.window.capitalize()} of {ev.name}: {len(ev.y):,} rows, {int(ev.y.sum()):,} buyers "
             f"({ev.base_rate:.2%}). Users scoring at least {threshold:.3f} are flagged: {int(flagged):,} "
             f"rows ({share:.2%}).")
    calib = ev.calibration.assign(model=ev.name)
    figures = [
        charts.confusion_matrix(cut.confusion, title=f"Confusion matrix at {threshold:.3f}"),
        charts.pr_curves(ev.pr.assign(model=ev.name), points=points, base_rate=ev.base_rate),
        charts.roc_curves(ev.roc.assign(model=ev.name), points=points),
        charts.calibration_chart(calib),
    ]
    return "".join([
        f'<section id="performance"><h2>Test-window performance at cutoff {_e(f"{threshold:.3f}")}</h2>',
        f'<p>{_e(intro)}</p>',
        _table(["metric", "value", "95 % interval"], rows, numeric=(1, 2)),
        '<div class="grid">', *(figure(f) for f in figures), "</div>",
        f'<p class="meta">Reliability: ECE {_e(_num(ev.summary["ece"]["value"]))}, Brier '
        f'{_e(_num(ev.summary["brier"]["value"]))}.</p>',
        _members_lead(model_dir) if ev.card.get("kind") == "ensemble" else "", "</section>"])


def _members_lead(model_dir: Path) -> str:
    """An ensemble's lead over each member on the same test users (paired bootstrap)."""
    from core.insight.evaluation import ensemble_lead

    lead = ensemble_lead(model_dir)
    if lead.table.empty:
        return _note(f"No comparison with the members: {lead.note}")
    rows = [(str(r["against"]), str(r["metric"]), _num(r["model"]), _num(r["other"]), f"{r['difference']:+.4f}",
             f"[{r['low']:+.4f}, {r['high']:+.4f}]", _num(r["not_ahead"], 3))
            for r in lead.table.to_dict("records")]
    return "".join([
        f"<h3>The ensemble against its members, on the same {lead.rows:,} test users</h3>",
        _table(["member", "metric", "ensemble", "member's", "difference", "paired 95 % interval",
                "share not ahead"], rows, numeric=(2, 3, 4, 5, 6)),
        '<p class="meta">Each bootstrap resample scores the ensemble and the member on the same users, '
        "so the luck of the window cancels: a lead whose interval excludes 0 holds beyond it. Lower is "
        "better for log loss.</p>"])


def _cohort_section(store: Store, model_dir: Path, model_id: str, dataset: str, top: float,
                    notes: list[str]) -> str:
    from core.errors import NotFoundError
    from core.insight.cohorts import CohortSpec, cohort_summary
    from core.modeling.pipeline import load_evaluation

    spec = CohortSpec(mode="top", top_percent=float(top))
    head = f'<section id="cohort"><h2>Cohort: {_e(spec.describe())} of the scoring run</h2>'
    try:
        held_out: pd.DataFrame | None = load_evaluation(model_dir)
    except IntentLensError:
        held_out = None
    try:
        summary = cohort_summary(store, model_id, dataset, spec, held_out=held_out)
    except NotFoundError as err:
        text = f"{err.message} {err.hint or ''}".strip()
        notes.append(text)
        return head + _note(text) + "</section>"
    rows = [("users in the cohort", _num(summary.size)), ("users scored", _num(summary.total)),
            ("share of users", f"{summary.share:.2%}"),
            ("expected buyers (sum of scores)", f"{summary.expected_buyers:,.1f}"),
            ("mean score", _num(summary.mean_score)),
            ("lowest score in the cohort", _num(summary.min_score))]
    measured = summary.measured
    if measured:
        rows += [("precision of the same cut on the test window", _num(measured.get("precision"))),
                 ("recall on the test window", _num(measured.get("recall"))),
                 ("lift on the test window", _num(measured.get("lift"), 2)),
                 ("base rate on the test window", _num(measured.get("base_rate")))]
    return head + _table(["", ""], rows, numeric=(1,)) + "</section>"


def _drivers_section(store: Store, model_dir: Path, model_id: str, dataset: str, users: int,
                     figure: _Figures, notes: list[str]) -> str:
    from core import charts
    from core.data.schema import BEHAVIORS
    from core.errors import NotFoundError
    from core.insight import drivers as D
    from core.insight import explain as E
    from core.modeling.model_store import load_model_cached

    loaded = load_model_cached(model_dir)
    parts = ['<section id="drivers"><h2>Global drivers</h2>']
    if loaded.transformer is not None and loaded.spec.scope == "any":
        frames = E.global_drivers(store, model_dir, dataset, None, "ig", max_users=users)
        sampled = frames["behavior"].attrs.get("users", users)
        parts.append(f"<p>Mean integrated-gradients attribution per event of {_e(sampled)} sampled users"
                     " at T = the dataset's last event: above zero pushes scores up.</p>")
        parts += ['<div class="grid">',
                  figure(charts.driver_bars(frames["behavior"], title="By behaviour", group_title="behaviour",
                                            order=list(BEHAVIORS))),
                  figure(charts.driver_bars(frames["gap"], title="By time before T", group_title="time before T",
                                            order=list(E.GAP_LABELS))),
                  "</div>",
                  figure(charts.driver_bars(frames["category"], title="By category (busiest)",
                                            group_title="category"))]
    else:
        text = ("Per-event drivers need a Transformer of scope 'any'; this model is a "
                f"{loaded.kind} of scope {loaded.spec.scope!r}.")
        notes.append(text)
        parts.append(_note(text))
    if loaded.gbdt is not None and loaded.spec.scope == "any":
        try:
            values, _ = D.tree_shap_drivers(store, model_dir, dataset, None, users)
        except NotFoundError as err:
            text = f"Tree SHAP: {err.message} {err.hint or ''}".strip()
            notes.append(text)
            parts.append(_note(text))
        else:
            parts.append(f"<p>Tree SHAP of the gradient-boosted member on {len(values):,} scored users' "
                         "aggregate features at T.</p>")
            parts.append(figure(charts.shap_bar(values)))
    parts.append("</section>")
    return "".join(parts)


# -- the report ------------------------------------------------------------------------------------
def build_report(store: Store, model_dir: str | Path, dataset: str, *, threshold: float = DEFAULT_THRESHOLD,
                 cohort_top: float = DEFAULT_COHORT_TOP, driver_users: int = DRIVER_USERS,
                 progress: ProgressFn | None = None) -> Report:
    """The model's report on ``dataset`` (see the module doc): performance at the cutoff probability
    ``threshold``, the cohort of the top ``cohort_top`` % of its scoring run, drivers of
    ``driver_users`` sampled users. DataError for a threshold outside [0, 1] or a top share outside
    (0, 100]; ModelError for a folder that is not a model or has no saved evaluation rows;
    NotFoundError for an unknown dataset."""
    from models.artifact import load_card

    if not 0 <= float(threshold) <= 1:
        raise DataError(f"the cutoff probability must be in [0, 1]; got {threshold}.", title="Bad threshold")
    if not 0 < float(cohort_top) <= 100:
        raise DataError(f"the cohort's top share must be in (0, 100] %; got {cohort_top}.", title="Bad cohort")
    if int(driver_users) < 1:
        raise DataError(f"driver_users must be at least 1; got {driver_users}.", title="Bad sample size")
    model_dir = Path(model_dir)
    card = load_card(model_dir)
    store.dataset(dataset)
    name = model_dir.name
    model_id = str(card.get("model_id") or name)
    figure = _Figures()
    notes: list[str] = []
    report(progress, 0, 4, "model card")
    body = [_card_section(card, name)]
    report(progress, 1, 4, "test-window performance")
    body.append(_performance_section(model_dir, float(threshold), figure))
    report(progress, 2, 4, "cohort")
    body.append(_cohort_section(store, model_dir, model_id, dataset, float(cohort_top), notes))
    report(progress, 3, 4, "global drivers")
    body.append(_drivers_section(store, model_dir, model_id, dataset, int(driver_users), figure, notes))
    report(progress, 4, 4, "done")
    made = datetime.now(UTC).isoformat(timespec="seconds")
    title = f"IntentLens report: {name} on {dataset}"
    page = "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f'<meta name="{FIGURES_META}" content="{figure.count}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Made {_e(made)} from model {_e(model_id)} ({_e(card.get("kind", "–"))}) and dataset '
        f'{_e(dataset)}. This file holds {figure.count} figures and opens without a network.</p>',
        *body, "</body></html>"])
    return Report(html=page, figures=figure.count, sections=list(SECTIONS), notes=notes)
