"""Pure plotly: a tidy frame in, a ``go.Figure`` out.

Every chart the app shows is drawn here, so that all pages share one look:

* one plotly template, ``"intentlens"`` (fonts, margins, gridlines, legend, number separators),
  registered on first use by :func:`template`;
* one fixed colour per behaviour, :data:`BEHAVIOR_COLORS`, used by every chart that splits by
  behaviour;
* readable axes: counts with thousands separators (:data:`COUNT_FORMAT`), shares as percentages
  (:data:`SHARE_FORMAT`).

A chart function takes the frame a ``core`` query returns, checks that the columns it needs are
there (a missing column is a programming error: ``ValueError``) and, when the frame has no rows,
returns :func:`empty_figure` with a sentence saying why, never an exception. Functions are grouped
by the page that uses them; a new chart is one more function in its section, built on
:func:`_figure`, :func:`_require` and the colour and format constants. Pages show figures with
``st.plotly_chart(fig, theme=None)`` so that this template, not Streamlit's, applies.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from core.schema import BEHAVIORS

TEMPLATE_NAME = "intentlens"

# One colour per behaviour across every page. Views are the bulk of any log and carry the least
# signal, so they get the quietest colour; buys get the strongest.
BEHAVIOR_COLORS: dict[str, str] = {
    "view": "#9AA5CE",
    "cart": "#F28E2B",
    "fav": "#B07AA1",
    "buy": "#2E9E5B",
    "remove_from_cart": "#E15759",
    "search": "#3BA3A8",
}
ACCENT = "#4C5FD5"        # the theme's primary colour (.streamlit/config.toml): single-series charts
NEUTRAL = "#8A8FA3"       # reference lines, "everyone else", baselines
WARNING = "#D9822B"       # quarantine and other data problems
TEXT = "#1B1F3B"
GRID = "#E6E8F0"

COUNT_FORMAT = ",d"       # 1,234,567
SHARE_FORMAT = ".0%"      # 12%
SHARE_FORMAT_FINE = ".1%"  # 12.3%


# -- look -------------------------------------------------------------------------------------
@functools.cache
def template() -> str:
    """Register the IntentLens plotly template (once per process) and return its name."""
    axis = dict(
        showgrid=True, gridcolor=GRID, gridwidth=1, zeroline=False,
        showline=True, linecolor="#C9CDDA", ticks="outside", tickcolor="#C9CDDA", ticklen=4,
        title=dict(font=dict(size=12, color="#4A4F6A")), automargin=True,
    )
    pio.templates[TEMPLATE_NAME] = go.layout.Template(layout=go.Layout(
        font=dict(family="Source Sans Pro, Inter, Helvetica Neue, Arial, sans-serif", size=13,
                  color=TEXT),
        title=dict(font=dict(size=15), x=0.0, xanchor="left", y=0.97, yanchor="top"),
        colorway=[ACCENT, *BEHAVIOR_COLORS.values(), NEUTRAL],
        paper_bgcolor="white", plot_bgcolor="white",
        margin=dict(l=56, r=20, t=56, b=48),
        xaxis=axis, yaxis=axis,
        legend=dict(orientation="h", x=0.0, xanchor="left", y=1.02, yanchor="bottom",
                    title=dict(text=""), bgcolor="rgba(0,0,0,0)"),
        hoverlabel=dict(font=dict(size=12), bgcolor="white"),
        hovermode="closest",
        separators=".,",
        bargap=0.18,
    ))
    return TEMPLATE_NAME


def behavior_color(behavior: str) -> str:
    """The fixed colour of a behaviour (NEUTRAL for anything unknown)."""
    return BEHAVIOR_COLORS.get(str(behavior), NEUTRAL)


def ordered_behaviors(values: Iterable[str]) -> list[str]:
    """Behaviours present in ``values``, in the canonical order of :data:`core.schema.BEHAVIORS`."""
    present = {str(v) for v in values}
    known = [b for b in BEHAVIORS if b in present]
    return known + sorted(present - set(known))


def _figure(title: str, *, x_title: str | None = None, y_title: str | None = None,
            height: int = 360) -> go.Figure:
    """A blank figure in the IntentLens template with a title and axis titles."""
    fig = go.Figure()
    fig.update_layout(template=template(), title=dict(text=title), height=height)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def empty_figure(message: str, title: str = "", *, height: int = 360) -> go.Figure:
    """A figure with no data and ``message`` written in its middle (what to do next)."""
    fig = _figure(title, height=height)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#6B7089"))
    return fig


def is_empty_figure(fig: go.Figure) -> bool:
    """True for figures made by :func:`empty_figure` (no traces, one annotation)."""
    return len(fig.data) == 0 and len(fig.layout.annotations) > 0


def _require(frame: pd.DataFrame, columns: Iterable[str], chart: str) -> bool:
    """Check ``frame`` has ``columns``; return True when it has rows to draw."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{chart}: the frame lacks columns {missing}; it has {list(frame.columns)}")
    return not frame.empty


# -- data overview (Data page) ----------------------------------------------------------------
def events_per_day(frame: pd.DataFrame, *, log_y: bool = True, tz_label: str = "UTC") -> go.Figure:
    """Lines of events per day (or per week/month bucket), one per behaviour.

    ``frame``: ``day`` (date, start of the bucket), ``behavior``, ``events``. Views dwarf every
    other behaviour, so the y axis is logarithmic by default.
    """
    title = "Events per day by behaviour"
    if not _require(frame, ("day", "behavior", "events"), "events_per_day"):
        return empty_figure("No events in this dataset yet. Ingest a file on the Data page.", title)
    fig = _figure(title, x_title=f"day ({tz_label})", y_title="events")
    for behavior in ordered_behaviors(frame["behavior"]):
        part = frame[frame["behavior"].astype(str) == behavior].sort_values("day")
        fig.add_trace(go.Scatter(
            x=part["day"], y=part["events"], name=behavior, mode="lines+markers",
            line=dict(color=behavior_color(behavior), width=2),
            marker=dict(size=5, color=behavior_color(behavior)),
            hovertemplate=f"{behavior}<br>%{{x|%Y-%m-%d}}<br>%{{y:,d}} events<extra></extra>",
        ))
    fig.update_yaxes(type="log" if log_y else "linear", tickformat=COUNT_FORMAT,
                     rangemode="tozero" if not log_y else None)
    fig.update_xaxes(tickformat="%b %d")
    return fig


def hour_of_day(frame: pd.DataFrame, *, tz_label: str = "UTC") -> go.Figure:
    """Each behaviour's share of its events by hour of day (shapes comparable across volumes).

    ``frame``: ``hour`` (0-23), ``behavior``, ``events``, ``share`` (of that behaviour's events).
    """
    title = "Hour-of-day pattern"
    if not _require(frame, ("hour", "behavior", "events", "share"), "hour_of_day"):
        return empty_figure("No events in this dataset yet. Ingest a file on the Data page.", title)
    fig = _figure(title, x_title=f"hour of day ({tz_label})", y_title="share of the behaviour's events")
    for behavior in ordered_behaviors(frame["behavior"]):
        part = frame[frame["behavior"].astype(str) == behavior].sort_values("hour")
        fig.add_trace(go.Scatter(
            x=part["hour"], y=part["share"], name=behavior, mode="lines+markers",
            line=dict(color=behavior_color(behavior), width=2, shape="spline", smoothing=0.4),
            marker=dict(size=5, color=behavior_color(behavior)),
            customdata=part[["events"]].to_numpy(),
            hovertemplate=(f"{behavior} at %{{x}}:00<br>%{{y:.1%}} of its events"
                           "<br>%{customdata[0]:,d} events<extra></extra>"),
        ))
    fig.update_xaxes(range=[-0.5, 23.5], tickmode="array", tickvals=list(range(0, 24, 3)),
                     ticktext=[f"{h:02d}:00" for h in range(0, 24, 3)])
    fig.update_yaxes(tickformat=SHARE_FORMAT, rangemode="tozero")
    return fig


def funnel(frame: pd.DataFrame) -> go.Figure:
    """Users reaching each stage of view -> cart -> fav -> buy.

    ``frame``: ``stage``, ``users``, ``share_of_users`` (of every user in the dataset).
    """
    title = "Funnel: users reaching each stage"
    if not _require(frame, ("stage", "users", "share_of_users"), "funnel") or frame["users"].sum() == 0:
        return empty_figure("No users in this dataset yet. Ingest a file on the Data page.", title)
    stages = [str(s) for s in frame["stage"]]
    fig = _figure(title)
    fig.add_trace(go.Funnel(
        y=stages, x=frame["users"],
        marker=dict(color=[behavior_color(s) for s in stages]),
        customdata=frame[["share_of_users"]].to_numpy(),
        texttemplate="%{x:,d} users · %{customdata[0]:.1%}",
        textposition="inside",
        connector=dict(fillcolor="#EEF0F6", line=dict(color=GRID, width=1)),
        hovertemplate="%{y}: %{x:,d} users<br>%{customdata[0]:.1%} of all users<extra></extra>",
    ))
    fig.update_yaxes(title_text="stage", type="category", showgrid=False)
    fig.update_xaxes(title_text="users", tickformat=COUNT_FORMAT)
    fig.update_layout(showlegend=False)
    return fig


def top_categories(frame: pd.DataFrame) -> go.Figure:
    """Horizontal stacked bars of the busiest categories, split by behaviour.

    ``frame``: ``category``, ``behavior``, ``events``, ``rank`` (1 = busiest).
    """
    title = "Top categories by events"
    if not _require(frame, ("category", "behavior", "events", "rank"), "top_categories"):
        return empty_figure("No categories to show: this dataset has no events.", title)
    order = (frame[["category", "rank"]].drop_duplicates().sort_values("rank")["category"]
             .astype(str).tolist())
    height = max(320, 80 + 24 * len(order))
    fig = _figure(title, x_title="events", y_title="category", height=height)
    for behavior in ordered_behaviors(frame["behavior"]):
        part = frame[frame["behavior"].astype(str) == behavior]
        fig.add_trace(go.Bar(
            y=part["category"].astype(str), x=part["events"], name=behavior, orientation="h",
            marker=dict(color=behavior_color(behavior)),
            hovertemplate=f"category %{{y}}<br>{behavior}: %{{x:,d}} events<extra></extra>",
        ))
    fig.update_layout(barmode="stack", legend=dict(traceorder="normal"))
    # Category ids are often digits: force a categorical axis, busiest at the top.
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=order[::-1],
                     showgrid=False)
    fig.update_xaxes(tickformat=COUNT_FORMAT)
    return fig


def events_per_user(frame: pd.DataFrame) -> go.Figure:
    """Distribution of events per user on doubling buckets (1, 2-3, 4-7, ...).

    ``frame``: ``bucket`` (label), ``low``, ``users``.
    """
    title = "Events per user"
    if not _require(frame, ("bucket", "low", "users"), "events_per_user"):
        return empty_figure("No users in this dataset yet. Ingest a file on the Data page.", title)
    part = frame.sort_values("low")
    fig = _figure(title, x_title="events per user", y_title="users")
    fig.add_trace(go.Bar(
        x=part["bucket"].astype(str), y=part["users"], marker=dict(color=ACCENT), name="users",
        hovertemplate="%{x} events: %{y:,d} users<extra></extra>",
    ))
    fig.update_xaxes(type="category", showgrid=False)
    fig.update_yaxes(tickformat=COUNT_FORMAT, rangemode="tozero")
    fig.update_layout(showlegend=False)
    return fig


def quarantine_reasons(frame: pd.DataFrame) -> go.Figure:
    """Rows set aside at ingest, per reason. ``frame``: ``reason``, ``rows``."""
    title = "Quarantined rows by reason"
    if not _require(frame, ("reason", "rows"), "quarantine_reasons"):
        return empty_figure("Nothing was quarantined: every row of the source was usable.", title,
                            height=240)
    part = frame.sort_values("rows")
    fig = _figure(title, x_title="rows", height=max(240, 100 + 32 * len(part)))
    fig.add_trace(go.Bar(
        y=part["reason"].astype(str), x=part["rows"], orientation="h", marker=dict(color=WARNING),
        hovertemplate="%{y}: %{x:,d} rows<extra></extra>", name="rows",
    ))
    fig.update_yaxes(type="category", showgrid=False)
    fig.update_xaxes(tickformat=COUNT_FORMAT, rangemode="tozero")
    fig.update_layout(showlegend=False)
    return fig


def behavior_mix(frame: pd.DataFrame) -> go.Figure:
    """One horizontal bar per behaviour with its share of events. ``frame``: ``behavior``,
    ``events``, ``share``."""
    title = "Behaviour mix"
    if not _require(frame, ("behavior", "events", "share"), "behavior_mix"):
        return empty_figure("No events in this dataset yet.", title, height=240)
    order = ordered_behaviors(frame["behavior"])
    part = frame.set_index(frame["behavior"].astype(str)).loc[order].reset_index(drop=True)
    fig = _figure(title, x_title="share of events", height=max(220, 90 + 30 * len(order)))
    fig.add_trace(go.Bar(
        y=order, x=part["share"], orientation="h",
        marker=dict(color=[behavior_color(b) for b in order]),
        customdata=part[["events"]].to_numpy(),
        texttemplate="%{x:.1%}", textposition="outside",
        hovertemplate="%{y}: %{customdata[0]:,d} events (%{x:.1%})<extra></extra>",
    ))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=order[::-1],
                     showgrid=False)
    fig.update_xaxes(tickformat=SHARE_FORMAT, rangemode="tozero")
    fig.update_layout(showlegend=False)
    return fig


# -- model quality (Train / Performance pages) ------------------------------------------------
# PR and ROC curves, confusion matrix, lift and gains, calibration, score histograms: one function
# each, drawn on _figure() with ACCENT for the model, NEUTRAL for baselines and chance lines,
# SHARE_FORMAT on probability axes.

# Model colours: the first (or only) model is ACCENT, a second one compared with it is MODEL_COLORS[1].
MODEL_COLORS: tuple[str, ...] = (ACCENT, "#C2497E", "#2E9E5B", "#F28E2B")
BUYER_COLOR = BEHAVIOR_COLORS["buy"]    # rows whose true label is 1 (they bought in the horizon)
NON_BUYER_COLOR = NEUTRAL               # rows whose true label is 0
CURVE_POINTS = 600                      # at most this many points of a curve are drawn
METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "log_loss": "log-loss", "brier": "Brier",
    "ece": "ECE", "accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1",
}


def model_color(index: int) -> str:
    """The colour of the ``index``-th model on a chart (0 = the model being looked at)."""
    return MODEL_COLORS[index % len(MODEL_COLORS)]


def _models(frame: pd.DataFrame) -> list[str]:
    """Model names in the order they first appear (the page lists its main model first)."""
    return [str(m) for m in pd.unique(frame["model"].astype(str))]


def _thin(frame: pd.DataFrame, points: int = CURVE_POINTS) -> pd.DataFrame:
    """At most ``points`` evenly spaced rows, always keeping the first and the last one: a curve
    over a million validation rows draws the same with 600 points and stays light in the browser."""
    if len(frame) <= points:
        return frame
    index = np.unique(np.linspace(0, len(frame) - 1, points).round().astype(int))
    return frame.iloc[index]


def _unit_axes(fig: go.Figure) -> None:
    """Both axes on [0, 1] shown as percentages (rates, shares, probabilities)."""
    fig.update_xaxes(range=[-0.02, 1.02], tickformat=SHARE_FORMAT)
    fig.update_yaxes(range=[-0.02, 1.02], tickformat=SHARE_FORMAT)


def _cutoff_markers(fig: go.Figure, points: pd.DataFrame | None, x: str, y: str, order: list[str],
                    hover: str) -> None:
    """One diamond per model where the cutoff sits on its curve (columns model, x, y, threshold)."""
    if points is None or points.empty:
        return
    for model in order:
        row = points[points["model"].astype(str) == model]
        if row.empty:
            continue
        color = model_color(order.index(model))
        fig.add_trace(go.Scatter(
            x=row[x], y=row[y], mode="markers", name=f"cutoff · {model}", showlegend=False,
            marker=dict(symbol="diamond", size=13, color=color, line=dict(color="white", width=1.5)),
            customdata=row[["threshold"]].to_numpy(),
            hovertemplate=f"{model} at cutoff %{{customdata[0]:.3f}}<br>{hover}<extra></extra>",
        ))


def training_curves(frame: pd.DataFrame, *,
                    empty_message: str = "No epoch has finished yet: the curves appear after "
                                         "the first one.") -> go.Figure:
    """Loss per epoch (train and validation, left axis) and validation PR-AUC (right axis).

    ``frame``: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_pr_auc`` (JobState.epochs or a
    card's ``history``).
    """
    title = "Training curves"
    if not _require(frame, ("epoch", "train_loss", "valid_loss", "valid_pr_auc"), "training_curves"):
        return empty_figure(empty_message, title, height=320)
    part = frame.sort_values("epoch")
    fig = _figure(title, x_title="epoch", y_title="loss", height=320)
    fig.add_trace(go.Scatter(x=part["epoch"], y=part["train_loss"], name="train loss",
                             mode="lines+markers", line=dict(color=ACCENT, width=2, dash="dot"),
                             hovertemplate="epoch %{x}: train loss %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=part["epoch"], y=part["valid_loss"], name="validation loss",
                             mode="lines+markers", line=dict(color=ACCENT, width=2),
                             hovertemplate="epoch %{x}: validation loss %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=part["epoch"], y=part["valid_pr_auc"], name="validation PR-AUC",
                             mode="lines+markers", yaxis="y2", line=dict(color=BUYER_COLOR, width=2),
                             hovertemplate="epoch %{x}: validation PR-AUC %{y:.3f}<extra></extra>"))
    fig.update_layout(yaxis2=dict(title=dict(text="validation PR-AUC"), overlaying="y",
                                  side="right", showgrid=False, tickformat=".2f",
                                  rangemode="tozero"))
    fig.update_xaxes(tickmode="linear" if len(part) <= 20 else "auto", dtick=1 if len(part) <= 20 else None,
                     tickformat=",d")
    fig.layout.yaxis.rangemode = "tozero"
    return fig


def leaderboard(frame: pd.DataFrame, *, metric: str = "pr_auc") -> go.Figure:
    """Each model's validation ``metric`` with its 95 % interval, best at the top.

    ``frame``: ``model_id``, ``kind``, ``<metric>`` and optionally ``<metric>_low``/``_high``
    (core.pipeline.list_models).
    """
    label = METRIC_LABELS.get(metric, metric)
    title = f"Validation {label} with 95 % intervals"
    if not _require(frame, ("model_id", "kind", metric), "leaderboard") or frame[metric].isna().all():
        return empty_figure("No model trained on this dataset yet: train one above.", title,
                            height=240)
    part = frame.dropna(subset=[metric]).sort_values(metric, ascending=(metric in ("log_loss", "brier", "ece")))
    low = part[f"{metric}_low"] if f"{metric}_low" in part else part[metric]
    high = part[f"{metric}_high"] if f"{metric}_high" in part else part[metric]
    names = [f"{k} · {m}" for k, m in zip(part["kind"].astype(str), part["model_id"].astype(str))]
    fig = _figure(title, x_title=label, height=max(220, 90 + 34 * len(part)))
    fig.add_trace(go.Scatter(
        x=part[metric], y=names, mode="markers", name=label,
        marker=dict(size=11, color=ACCENT),
        error_x=dict(type="data", symmetric=False, array=(high - part[metric]).fillna(0),
                     arrayminus=(part[metric] - low).fillna(0), color=ACCENT, thickness=1.5),
        customdata=np.column_stack([low, high]),
        hovertemplate="%{y}<br>" + label + " %{x:.3f} [%{customdata[0]:.3f}, "
                      "%{customdata[1]:.3f}]<extra></extra>",
    ))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=names[::-1],
                     showgrid=False)
    fig.update_xaxes(tickformat=".2f")
    fig.update_layout(showlegend=False)
    return fig


def pr_curves(frame: pd.DataFrame, *, points: pd.DataFrame | None = None,
              base_rate: float | None = None) -> go.Figure:
    """Precision against recall, one line per model, the cutoff marked on each.

    ``frame``: ``model``, ``recall``, ``precision`` (core.metrics.pr_curve plus a model column);
    ``points``: ``model``, ``recall``, ``precision``, ``threshold`` (where the cutoff sits);
    ``base_rate``: the share of positives, drawn as the line a random ranking would give.
    """
    title = "Precision-recall curve"
    if not _require(frame, ("model", "recall", "precision"), "pr_curves"):
        return empty_figure("No positive label in the validation rows: precision and recall "
                            "are undefined. Train on a longer horizon or another dataset.", title)
    order = _models(frame)
    fig = _figure(title, x_title="recall (share of buyers found)",
                  y_title="precision (share of flagged who buy)")
    for i, model in enumerate(order):
        part = _thin(frame[frame["model"].astype(str) == model].sort_values("recall"))
        fig.add_trace(go.Scatter(x=part["recall"], y=part["precision"], name=model, mode="lines",
                                 line=dict(color=model_color(i), width=2.5),
                                 hovertemplate=f"{model}<br>recall %{{x:.1%}}, precision "
                                               f"%{{y:.1%}}<extra></extra>"))
    if base_rate is not None and np.isfinite(base_rate):
        fig.add_hline(y=float(base_rate), line=dict(color=NEUTRAL, dash="dot", width=1.5),
                      annotation_text=f"random: {base_rate:.1%}", annotation_position="top right")
    _cutoff_markers(fig, points, "recall", "precision", order,
                    "recall %{x:.1%}, precision %{y:.1%}")
    _unit_axes(fig)
    return fig


def roc_curves(frame: pd.DataFrame, *, points: pd.DataFrame | None = None) -> go.Figure:
    """True-positive rate against false-positive rate, one line per model, the cutoff marked.

    ``frame``: ``model``, ``fpr``, ``tpr`` (core.metrics.roc_curve plus a model column);
    ``points``: ``model``, ``fpr``, ``tpr``, ``threshold``.
    """
    title = "ROC curve"
    if not _require(frame, ("model", "fpr", "tpr"), "roc_curves"):
        return empty_figure("The validation rows hold one class only: the ROC curve is "
                            "undefined. Train on a longer horizon or another dataset.", title)
    order = _models(frame)
    fig = _figure(title, x_title="false-positive rate (non-buyers flagged)",
                  y_title="true-positive rate (buyers flagged)")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random", showlegend=False,
                             line=dict(color=NEUTRAL, dash="dot", width=1.5), hoverinfo="skip"))
    for i, model in enumerate(order):
        part = _thin(frame[frame["model"].astype(str) == model].sort_values(["fpr", "tpr"]))
        fig.add_trace(go.Scatter(x=part["fpr"], y=part["tpr"], name=model, mode="lines",
                                 line=dict(color=model_color(i), width=2.5),
                                 hovertemplate=f"{model}<br>FPR %{{x:.1%}}, TPR %{{y:.1%}}"
                                               f"<extra></extra>"))
    _cutoff_markers(fig, points, "fpr", "tpr", order, "FPR %{x:.1%}, TPR %{y:.1%}")
    _unit_axes(fig)
    return fig


CONFUSION_NAMES = {1: "buyer", 0: "not a buyer"}


def confusion_matrix(frame: pd.DataFrame, *, shares: bool = False, title: str = "Confusion matrix",
                     height: int = 320) -> go.Figure:
    """The 2 x 2 table of actual against predicted at the cutoff, as a heatmap with its numbers.

    ``frame``: ``actual`` (0/1), ``predicted`` (0/1), ``outcome`` (TP/FP/FN/TN), ``count``,
    ``share`` (core.metrics.confusion). ``shares``: colour and label by share of all rows.
    """
    if not _require(frame, ("actual", "predicted", "outcome", "count", "share"), "confusion_matrix") \
            or frame["count"].sum() == 0:
        return empty_figure("No validation rows to count.", title, height=height)
    cells = frame.set_index(["actual", "predicted"])
    rows, cols = [1, 0], [1, 0]                       # buyers first, flagged first
    z, text = [], []
    for a in rows:
        z_row, t_row = [], []
        for p in cols:
            cell = cells.loc[(a, p)]
            z_row.append(float(cell["share"] if shares else cell["count"]))
            count, share = f"{int(cell['count']):,}", f"{float(cell['share']):.1%}"
            main, second = (share, count) if shares else (count, share)
            t_row.append(f"<b>{cell['outcome']}</b><br>{main}<br><span style='font-size:11px'>"
                         f"{second}</span>")
        z.append(z_row)
        text.append(t_row)
    fig = _figure(title, x_title="predicted (score ≥ cutoff)", y_title="actual", height=height)
    fig.add_trace(go.Heatmap(
        z=z, x=[f"flagged: {CONFUSION_NAMES[p]}" for p in cols],
        y=[CONFUSION_NAMES[a] for a in rows], text=text, texttemplate="%{text}",
        textfont=dict(size=14), colorscale=[[0.0, "#F4F5FA"], [1.0, ACCENT]], showscale=False,
        hovertemplate="actual %{y}, %{x}<br>%{z:" + (SHARE_FORMAT_FINE if shares else COUNT_FORMAT)
                      + "}<extra></extra>", xgap=3, ygap=3,
    ))
    fig.update_xaxes(type="category", showgrid=False, side="bottom")
    fig.update_yaxes(type="category", showgrid=False, autorange="reversed")
    fig.update_layout(showlegend=False)
    return fig


def _cutoff_vline(fig: go.Figure, x: float | None, text: str) -> None:
    if x is not None and np.isfinite(x):
        fig.add_vline(x=float(x), line=dict(color=TEXT, dash="dash", width=1.5),
                      annotation_text=text, annotation_position="top right",
                      annotation_font=dict(size=11, color=TEXT))


def lift_chart(frame: pd.DataFrame, *, cutoff_fraction: float | None = None) -> go.Figure:
    """Lift (precision in the top k % / base rate) against k, one line per model.

    ``frame``: ``model``, ``top_fraction``, ``lift`` (core.metrics.lift_table plus a model column);
    ``cutoff_fraction``: the share of rows the cutoff flags (a vertical line).
    """
    title = "Lift by top share of users"
    if not _require(frame, ("model", "top_fraction", "lift"), "lift_chart") or frame["lift"].isna().all():
        return empty_figure("No buyer in the validation rows: lift is undefined.", title)
    order = _models(frame)
    fig = _figure(title, x_title="top share of users by score", y_title="lift (× base rate)")
    fig.add_hline(y=1.0, line=dict(color=NEUTRAL, dash="dot", width=1.5),
                  annotation_text="random", annotation_position="bottom right")
    for i, model in enumerate(order):
        part = frame[frame["model"].astype(str) == model].sort_values("top_fraction")
        fig.add_trace(go.Scatter(x=part["top_fraction"], y=part["lift"], name=model,
                                 mode="lines+markers", line=dict(color=model_color(i), width=2.5),
                                 marker=dict(size=5),
                                 hovertemplate=f"{model}<br>top %{{x:.0%}}: lift %{{y:.2f}}×"
                                               f"<extra></extra>"))
    _cutoff_vline(fig, cutoff_fraction, "cutoff")
    fig.update_xaxes(range=[0, 1.02], tickformat=SHARE_FORMAT)
    fig.update_yaxes(rangemode="tozero", tickformat=".1f")
    return fig


def gains_chart(frame: pd.DataFrame, *, cutoff_fraction: float | None = None) -> go.Figure:
    """Cumulative gains: the share of all buyers found in the top k % of users, per model.

    ``frame``: ``model``, ``top_fraction``, ``gain`` (core.metrics.lift_table plus a model column).
    """
    title = "Cumulative gains"
    if not _require(frame, ("model", "top_fraction", "gain"), "gains_chart") or frame["gain"].isna().all():
        return empty_figure("No buyer in the validation rows: gains are undefined.", title)
    order = _models(frame)
    fig = _figure(title, x_title="top share of users by score", y_title="share of buyers found")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random", showlegend=False,
                             line=dict(color=NEUTRAL, dash="dot", width=1.5), hoverinfo="skip"))
    for i, model in enumerate(order):
        part = frame[frame["model"].astype(str) == model].sort_values("top_fraction")
        x = np.r_[0.0, part["top_fraction"].to_numpy(dtype=float)]
        y = np.r_[0.0, part["gain"].to_numpy(dtype=float)]
        fig.add_trace(go.Scatter(x=x, y=y, name=model, mode="lines+markers",
                                 line=dict(color=model_color(i), width=2.5), marker=dict(size=5),
                                 hovertemplate=f"{model}<br>top %{{x:.0%}} finds %{{y:.1%}} of "
                                               f"buyers<extra></extra>"))
    _cutoff_vline(fig, cutoff_fraction, "cutoff")
    _unit_axes(fig)
    return fig


def calibration_chart(frame: pd.DataFrame) -> go.Figure:
    """Observed buyer share against mean predicted probability per bin, with the diagonal a
    perfectly calibrated model follows. ``frame``: ``model``, ``mean_p``, ``frac_pos``, ``n``
    (core.metrics.calibration_bins plus a model column); empty bins are left out."""
    title = "Calibration"
    if not _require(frame, ("model", "mean_p", "frac_pos", "n"), "calibration_chart") \
            or (frame["n"] > 0).sum() == 0:
        return empty_figure("No validation rows to bin.", title)
    order = _models(frame)
    fig = _figure(title, x_title="mean predicted probability", y_title="observed share of buyers")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(color=NEUTRAL, dash="dot", width=1.5), hoverinfo="skip"))
    for i, model in enumerate(order):
        part = frame[(frame["model"].astype(str) == model) & (frame["n"] > 0)].sort_values("mean_p")
        fig.add_trace(go.Scatter(
            x=part["mean_p"], y=part["frac_pos"], name=model, mode="lines+markers",
            line=dict(color=model_color(i), width=2.5), marker=dict(size=8),
            customdata=part[["n"]].to_numpy(),
            hovertemplate=f"{model}<br>predicted %{{x:.1%}}, observed %{{y:.1%}}"
                          f"<br>%{{customdata[0]:,d}} rows<extra></extra>"))
    _unit_axes(fig)
    return fig


def score_histogram(frame: pd.DataFrame, *, threshold: float | None = None, bins: int = 40,
                    shares: bool = True) -> go.Figure:
    """Scores of buyers and non-buyers on the same ``bins`` equal-width bins over [0, 1], with
    the cutoff as a vertical line. ``frame``: ``score``, ``label`` (0/1). ``shares``: bar heights
    as the share of each class's rows (buyers are few, so shapes stay comparable); else rows.
    Binned here with numpy, so a million rows send 2 x ``bins`` bars to the browser."""
    title = "Scores by true label"
    if not _require(frame, ("score", "label"), "score_histogram"):
        return empty_figure("No validation rows to draw.", title)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / int(bins)
    fig = _figure(title, x_title="predicted probability",
                  y_title="share of the class's rows" if shares else "rows")
    scores = frame["score"].to_numpy(dtype=float)
    labels = frame["label"].to_numpy(dtype=float)
    for value, name, color in ((0, "did not buy", NON_BUYER_COLOR), (1, "bought", BUYER_COLOR)):
        counts, _ = np.histogram(np.clip(scores[labels == value], 0.0, 1.0), bins=edges)
        total = max(int(counts.sum()), 1)
        heights = counts / total if shares else counts
        fig.add_trace(go.Bar(
            x=centers, y=heights, width=width, name=f"{name} ({int(counts.sum()):,})",
            marker=dict(color=color, line=dict(width=0)), opacity=0.65,
            customdata=np.column_stack([edges[:-1], edges[1:], counts]),
            hovertemplate=(f"{name}<br>score %{{customdata[0]:.3f}}–%{{customdata[1]:.3f}}"
                           "<br>%{customdata[2]:,d} rows<extra></extra>"),
        ))
    fig.update_layout(barmode="overlay", bargap=0)
    _cutoff_vline(fig, threshold, "cutoff")
    fig.update_xaxes(range=[0, 1], tickformat=SHARE_FORMAT)
    fig.update_yaxes(tickformat=SHARE_FORMAT if shares else COUNT_FORMAT, rangemode="tozero")
    return fig


def segment_quality(frame: pd.DataFrame, *, metrics: tuple[str, ...] = ("roc_auc", "pr_auc",
                                                                            "precision")) -> go.Figure:
    """Quality per segment (activity level, sequence length, top categories): one bar per metric
    and segment, rows per segment in the hover. ``frame``: ``segment_type``, ``segment``,
    ``rows``, and the ``metrics`` columns (NaN where a segment has one class only)."""
    title = "Quality by segment"
    if not _require(frame, ("segment_type", "segment", "rows", *metrics), "segment_quality"):
        return empty_figure("No validation rows to split into segments.", title)
    names = [f"{t} · {s}" for t, s in zip(frame["segment_type"].astype(str),
                                          frame["segment"].astype(str))]
    fig = _figure(title, x_title="value", height=max(320, 110 + 22 * len(names) * len(metrics) // 2))
    colors = (ACCENT, MODEL_COLORS[1], BUYER_COLOR, NEUTRAL)
    for i, metric in enumerate(metrics):
        fig.add_trace(go.Bar(
            y=names, x=frame[metric], orientation="h", name=METRIC_LABELS.get(metric, metric),
            marker=dict(color=colors[i % len(colors)]),
            customdata=frame[["rows"]].to_numpy(),
            hovertemplate=("%{y}<br>" + METRIC_LABELS.get(metric, metric)
                           + " %{x:.3f}<br>%{customdata[0]:,d} rows<extra></extra>"),
        ))
    fig.update_layout(barmode="group", legend=dict(traceorder="normal"))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=names[::-1],
                     showgrid=False)
    fig.update_xaxes(range=[0, 1.02], tickformat=".1f")
    return fig


def member_scores(frame: pd.DataFrame, *, metric: str = "pr_auc") -> go.Figure:
    """An ensemble and its members side by side on one validation metric with 95 % intervals.

    ``frame``: ``member``, ``value``, ``low``, ``high`` (and optionally ``weight``, the member's
    share of the ensemble score).
    """
    label = METRIC_LABELS.get(metric, metric)
    title = f"Ensemble and members: validation {label}"
    if not _require(frame, ("member", "value", "low", "high"), "member_scores"):
        return empty_figure("This model is not an ensemble: it has no members to compare.", title,
                            height=280)
    names = frame["member"].astype(str).tolist()
    weights = frame["weight"] if "weight" in frame else pd.Series([np.nan] * len(frame))
    text = [f"{v:.3f}" + ("" if pd.isna(w) else f" · weight {w:.0%}")
            for v, w in zip(frame["value"], weights)]
    fig = _figure(title, y_title=label, height=300)
    fig.add_trace(go.Bar(
        x=names, y=frame["value"], text=text, textposition="outside", name=label,
        marker=dict(color=[ACCENT if n == "ensemble" else NEUTRAL for n in names]),
        error_y=dict(type="data", symmetric=False, array=(frame["high"] - frame["value"]).fillna(0),
                     arrayminus=(frame["value"] - frame["low"]).fillna(0), color=TEXT, thickness=1.2),
        customdata=frame[["low", "high"]].to_numpy(),
        hovertemplate="%{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra></extra>",
    ))
    fig.update_xaxes(type="category", showgrid=False)
    tops = pd.concat([frame["value"], frame["high"]]).to_numpy(dtype=float)
    top = float(np.nanmax(tops)) if np.isfinite(tops).any() else 1.0
    fig.update_yaxes(range=[0, min(1.05, top * 1.2 + 0.02)], tickformat=".2f")
    fig.update_layout(showlegend=False)
    return fig

# -- cohorts (Cohorts page) ---------------------------------------------------------------------
# Score distribution, value against the cut, contrast of a cohort with everyone else.
COHORT_COLOR = ACCENT        # the cohort's bars and lines
EVERYONE_COLOR = NEUTRAL     # everyone scored, the reference the cohort is compared with
BAND_FILLS = {"low": "rgba(138,143,163,0.10)", "medium": "rgba(242,142,43,0.10)",
              "high": "rgba(46,158,91,0.12)"}


def cohort_score_histogram(frame: pd.DataFrame, *, cut: float | None = None,
                           band_edges: tuple[float, float] | None = None,
                           log_y: bool = False) -> go.Figure:
    """Users per score bin of a scoring run, with the cohort's cut and the band edges.

    ``frame``: ``bin_left``, ``bin_right``, ``users`` (core.cohorts.score_histogram). ``cut``: the
    lowest score in the cohort (a dashed line); ``band_edges``: (low, high), shaded low / medium /
    high regions with their names.
    """
    title = "Score distribution of the scoring run"
    if not _require(frame, ("bin_left", "bin_right", "users"), "cohort_score_histogram") \
            or frame["users"].sum() == 0:
        return empty_figure("No scores yet. Press Re-score to score every user with this model.", title)
    centers = (frame["bin_left"] + frame["bin_right"]) / 2
    width = float((frame["bin_right"] - frame["bin_left"]).iloc[0])
    fig = _figure(title, x_title="predicted probability of buying", y_title="users")
    if band_edges is not None:
        low, high = band_edges
        for name, x0, x1 in (("low", 0.0, low), ("medium", low, high), ("high", high, 1.0)):
            fig.add_vrect(x0=x0, x1=x1, fillcolor=BAND_FILLS[name], line_width=0, layer="below",
                          annotation_text=name, annotation_position="top left",
                          annotation_font=dict(size=11, color="#6B7089"))
    fig.add_trace(go.Bar(
        x=centers, y=frame["users"], width=width, name="users",
        marker=dict(color=COHORT_COLOR, line=dict(width=0)),
        customdata=frame[["bin_left", "bin_right"]].to_numpy(),
        hovertemplate="score %{customdata[0]:.2f}–%{customdata[1]:.2f}<br>%{y:,d} users<extra></extra>",
    ))
    if cut is not None and np.isfinite(cut):
        fig.add_vline(x=float(cut), line=dict(color=TEXT, dash="dash", width=1.5),
                      annotation_text=f"cut {cut:.3f}", annotation_position="top right",
                      annotation_font=dict(size=11, color=TEXT))
    fig.update_layout(showlegend=False, bargap=0)
    fig.update_xaxes(range=[0, 1], tickformat=SHARE_FORMAT)
    fig.update_yaxes(type="log" if log_y else "linear", tickformat=COUNT_FORMAT,
                     rangemode=None if log_y else "tozero")
    return fig


def cohort_contrast(frame: pd.DataFrame, *, title: str, key_title: str,
                    order: list[str] | None = None) -> go.Figure:
    """Shares in the cohort against everyone scored, as paired horizontal bars.

    ``frame``: ``key``, ``cohort``, ``everyone``, ``ratio`` (core.cohorts.cohort_contrast). Keys
    are drawn in ``order`` when given (e.g. behaviours, recency buckets), else in the frame's order
    (most over-represented first), top to bottom; hover says how over-represented a key is.
    """
    if not _require(frame, ("key", "cohort", "everyone", "ratio"), "cohort_contrast"):
        return empty_figure("Nothing to compare: the cohort is empty. Loosen the cut or the filters.",
                            title, height=260)
    part = frame.assign(key=frame["key"].astype(str))
    if order is not None:
        known = [k for k in order if k in set(part["key"])]
        part = part.set_index("key").loc[known + [k for k in part["key"] if k not in known]].reset_index()
    keys = part["key"].tolist()
    fig = _figure(title, x_title="share", y_title=key_title, height=max(260, 110 + 44 * len(keys)))
    ratio = part["ratio"].to_numpy(dtype=float)
    for column, name, color in (("everyone", "everyone", EVERYONE_COLOR), ("cohort", "cohort", COHORT_COLOR)):
        fig.add_trace(go.Bar(
            y=keys, x=part[column].fillna(0.0), name=name, orientation="h",
            marker=dict(color=color), customdata=np.column_stack([ratio]),
            hovertemplate=(f"{name}: %{{x:.1%}}<br>%{{y}}<br>cohort / everyone "
                           "%{customdata[0]:.2f}×<extra></extra>"),
        ))
    fig.update_layout(barmode="group", legend=dict(traceorder="reversed"))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=keys[::-1], showgrid=False)
    fig.update_xaxes(tickformat=SHARE_FORMAT, rangemode="tozero")
    return fig


def value_curve(frame: pd.DataFrame, best: dict | None = None, *, cohort_size: int | None = None,
                budget: int | None = None) -> go.Figure:
    """Expected value of contacting the k highest-scored users, against k.

    ``frame``: ``k``, ``share``, ``expected_buyers``, ``expected_value``, ``min_score``
    (core.cohorts.value_curve); ``best``: its best cut (``k``, ``expected_value``); the current
    cohort size and the budget are drawn as vertical lines.
    """
    title = "Expected value against the cut"
    if not _require(frame, ("k", "share", "expected_buyers", "expected_value", "min_score"), "value_curve"):
        return empty_figure("No users to rank: the filters leave nobody. Loosen them.", title)
    part = frame.sort_values("k")
    fig = _figure(title, x_title="users contacted (highest scores first)", y_title="expected value")
    fig.add_trace(go.Scatter(
        x=part["k"], y=part["expected_value"], mode="lines", name="expected value",
        line=dict(color=COHORT_COLOR, width=2.5),
        customdata=part[["share", "expected_buyers", "min_score"]].to_numpy(),
        hovertemplate=("%{x:,d} users (%{customdata[0]:.1%})<br>expected value %{y:,.0f}"
                       "<br>expected buyers %{customdata[1]:,.1f}<br>lowest score %{customdata[2]:.3f}"
                       "<extra></extra>"),
    ))
    fig.add_hline(y=0, line=dict(color=NEUTRAL, width=1))
    if best is not None and best.get("k"):
        fig.add_trace(go.Scatter(
            x=[best["k"]], y=[best["expected_value"]], mode="markers+text", name="best cut",
            marker=dict(symbol="star", size=16, color=BEHAVIOR_COLORS["buy"], line=dict(color="white", width=1)),
            text=[f"best: {int(best['k']):,} users"], textposition="top center",
            hovertemplate="best cut: %{x:,d} users<br>expected value %{y:,.0f}<extra></extra>",
        ))
    if cohort_size:
        _cutoff_vline(fig, float(cohort_size), f"cohort {int(cohort_size):,}")
    if budget:
        fig.add_vline(x=float(budget), line=dict(color=WARNING, dash="dot", width=1.5),
                      annotation_text=f"budget {int(budget):,}", annotation_position="bottom right",
                      annotation_font=dict(size=11, color=WARNING))
    fig.update_xaxes(tickformat=COUNT_FORMAT, rangemode="tozero")
    fig.update_yaxes(tickformat=",.0f")
    return fig


# -- explanations (Explain page) ------------------------------------------------------------------
# Event timelines coloured with BEHAVIOR_COLORS, attribution bars, attention heatmaps.
METHOD_LABELS: dict[str, str] = {"ig": "integrated gradients", "shap": "SHAP",
                                 "attention": "attention rollout", "random": "random events"}
METHOD_COLORS: dict[str, str] = {"ig": ACCENT, "shap": "#C2497E", "attention": "#3BA3A8",
                                 "random": NEUTRAL}
ATTRIBUTION_SCALE = "RdBu_r"     # diverging: red pushes the score up, blue pulls it down, white 0
ATTENTION_SCALE = "Blues"        # sequential: attention weights are >= 0
MAX_TICKS = 20                   # event-axis ticks shown at most (long timelines stay readable)


def _method_label(method: str) -> str:
    return METHOD_LABELS.get(str(method), str(method))


def attribution_timeline(events: pd.DataFrame, method: str, *, cutoff=None,
                         by_order: bool = False) -> go.Figure:
    """A user's events at their time, one row per behaviour, coloured by their attribution.

    ``events``: ``position``, ``ts``, ``behavior``, ``item_id``, ``category``, ``gap_seconds`` and a
    column named ``method`` (core.explain.Explanation.events). The colour scale is diverging and
    centred at 0; a marker's size grows with |attribution| and its outline is the behaviour's
    colour. ``cutoff`` (T) is drawn as a dashed line. ``by_order``: events evenly spaced in their
    order (1 = oldest) instead of at their time, so a burst of events in one session stays readable.
    """
    label = _method_label(method)
    title = f"Timeline coloured by {label}"
    if not _require(events, ("position", "ts", "behavior", "item_id", "category", "gap_seconds", method),
                    "attribution_timeline"):
        return empty_figure("This user has no events before the cutoff, so there is nothing to explain.",
                            title)
    values = events[method].astype(float).fillna(0.0)
    scale = float(values.abs().max()) or 1.0
    order = ordered_behaviors(events["behavior"].astype(str))
    fig = _figure(title, x_title="event (1 = oldest)" if by_order else "time (UTC)", y_title="behaviour",
                  height=max(300, 160 + 48 * len(order)))
    rank = events["position"].rank(method="first").astype(int)
    for behavior in order:
        part = events[events["behavior"].astype(str) == behavior]
        attr = values.loc[part.index]
        hours = part["gap_seconds"].astype(float) / 3600.0
        fig.add_trace(go.Scatter(
            x=rank.loc[part.index] if by_order else part["ts"], y=[behavior] * len(part), mode="markers",
            name=behavior, showlegend=False,
            marker=dict(color=attr, coloraxis="coloraxis", size=9 + 15 * attr.abs() / scale,
                        line=dict(color=behavior_color(behavior), width=2), opacity=0.95),
            customdata=np.column_stack([part["item_id"].astype(str), part["category"].astype(str),
                                        hours.round(1), attr, part["position"],
                                        part["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")]),
            hovertemplate=(f"<b>{behavior}</b> · %{{customdata[5]}}"
                           "<br>item %{customdata[0]} · category %{customdata[1]}"
                           "<br>%{customdata[2]:,} h before T"
                           f"<br>{label}: %{{customdata[3]:+.4f}}<extra>event %{{customdata[4]}}</extra>"),
        ))
    fig.update_layout(coloraxis=dict(colorscale=ATTRIBUTION_SCALE, cmid=0.0,
                                     colorbar=dict(title=dict(text=label), thickness=12)))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=order[::-1])
    if cutoff is not None and not by_order:
        fig.add_vline(x=pd.Timestamp(cutoff).to_pydatetime(), line=dict(color=TEXT, dash="dash", width=1))
    return fig


def attribution_bars(events: pd.DataFrame, method: str, *, top: int = 15) -> go.Figure:
    """The ``top`` events with the largest |attribution|, as horizontal bars in the behaviour's
    colour (positive to the right). ``events`` as in :func:`attribution_timeline`."""
    label = _method_label(method)
    title = f"Events that move the score most ({label})"
    if not _require(events, ("position", "ts", "behavior", "category", method), "attribution_bars"):
        return empty_figure("No events to rank.", title, height=260)
    part = events.assign(_v=events[method].astype(float)).sort_values(
        "_v", key=lambda s: s.abs(), ascending=False).head(top)
    names = [f"#{p} {b} · cat {c} · {pd.Timestamp(t):%m-%d %H:%M}" for p, b, c, t in
             zip(part["position"], part["behavior"].astype(str), part["category"].astype(str), part["ts"])]
    fig = _figure(title, x_title=f"{label} (logit units)", height=max(260, 90 + 26 * len(part)))
    fig.add_trace(go.Bar(
        y=names, x=part["_v"], orientation="h",
        marker=dict(color=[behavior_color(b) for b in part["behavior"].astype(str)]),
        hovertemplate="%{y}<br>%{x:+.4f}<extra></extra>", name=label))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=names[::-1], showgrid=False)
    fig.add_vline(x=0, line=dict(color=NEUTRAL, width=1))
    fig.update_layout(showlegend=False)
    return fig


def attention_heatmap(attention: pd.DataFrame, events: pd.DataFrame, *, layer: int | None = None,
                      head: int | None = None) -> go.Figure:
    """Attention from the [CLS] token to each event: one row per (layer, head), events left to
    right (oldest first), so 100 events stay readable (ticks are thinned to about 20).

    ``attention``: ``layer``, ``head``, ``position``, ``weight`` (core.explain.attention_weights);
    ``events``: ``position``, ``behavior``, ``category``, ``ts`` for the hover. ``layer`` / ``head``
    None = all of them.
    """
    title = "Attention from [CLS] to each event"
    if not _require(attention, ("layer", "head", "position", "weight"), "attention_heatmap"):
        return empty_figure("No attention weights: this model has no Transformer.", title, height=260)
    part = attention
    if layer is not None:
        part = part[part["layer"] == int(layer)]
    if head is not None:
        part = part[part["head"] == int(head)]
    if part.empty:
        return empty_figure("No attention for that layer and head.", title, height=260)
    grid = part.pivot_table(index=["layer", "head"], columns="position", values="weight", aggfunc="first")
    positions = [int(p) for p in grid.columns]
    info = events.set_index("position").reindex(positions)
    hover = np.array([f"{b} · cat {c} · {pd.Timestamp(t):%Y-%m-%d %H:%M}" if pd.notna(t) else ""
                      for b, c, t in zip(info["behavior"].astype(str), info["category"].astype(str), info["ts"])],
                     dtype=object)
    rows = [f"layer {la + 1} · head {h + 1}" for la, h in grid.index]
    x = np.arange(1, len(positions) + 1)
    step = max(1, int(np.ceil(len(x) / MAX_TICKS)))
    fig = _figure(title, x_title="event (1 = oldest)", height=max(220, 150 + 30 * len(rows)))
    fig.add_trace(go.Heatmap(
        z=grid.to_numpy(dtype=float), x=x, y=rows, colorscale=ATTENTION_SCALE, zmin=0,
        customdata=np.tile(hover, (len(rows), 1)), xgap=1 if len(x) <= 60 else 0, ygap=2,
        colorbar=dict(title=dict(text="weight"), thickness=12),
        hovertemplate="%{y}<br>event %{x}: %{customdata}<br>weight %{z:.3f}<extra></extra>",
    ))
    fig.update_xaxes(tickmode="array", tickvals=x[::step], showgrid=False)
    fig.update_yaxes(type="category", autorange="reversed", showgrid=False)
    return fig


def faithfulness_curves(frame: pd.DataFrame) -> go.Figure:
    """Score drop after deleting the top-k events by each method, against k random events.

    ``frame``: ``method``, ``k``, ``drop``, ``drop_std`` (core.explain.faithfulness). A method
    whose line sits above the random one finds events the model really relies on.
    """
    title = "Faithfulness: score drop when the top-k events are removed"
    if not _require(frame, ("method", "k", "drop", "drop_std"), "faithfulness_curves"):
        return empty_figure("Nothing to check: the user has no events.", title)
    fig = _figure(title, x_title="events removed (k)", y_title="score drop (probability)")
    methods = [m for m in ("ig", "shap", "attention") if m in set(frame["method"])]
    methods += [m for m in pd.unique(frame["method"]) if m not in methods and m != "random"]
    random = frame[frame["method"] == "random"].sort_values("k")
    if not random.empty:
        upper = random["drop"] + random["drop_std"]
        lower = random["drop"] - random["drop_std"]
        fig.add_trace(go.Scatter(
            x=pd.concat([random["k"], random["k"][::-1]]), y=pd.concat([upper, lower[::-1]]),
            fill="toself", fillcolor="rgba(138,143,163,0.18)", line=dict(width=0),
            hoverinfo="skip", showlegend=False, name="random ± 1 sd"))
        fig.add_trace(go.Scatter(
            x=random["k"], y=random["drop"], mode="lines+markers", name=METHOD_LABELS["random"],
            line=dict(color=METHOD_COLORS["random"], dash="dash", width=2),
            hovertemplate="random, k=%{x}: drop %{y:+.3f}<extra></extra>"))
    for method in methods:
        part = frame[frame["method"] == method].sort_values("k")
        label = _method_label(method)
        fig.add_trace(go.Scatter(
            x=part["k"], y=part["drop"], mode="lines+markers", name=label,
            line=dict(color=METHOD_COLORS.get(method, TEXT), width=2.5),
            hovertemplate=f"{label}, k=%{{x}}: drop %{{y:+.3f}}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color=NEUTRAL, width=1))
    fig.update_xaxes(tickmode="linear", dtick=1 if frame["k"].max() <= 12 else None)
    span = float(frame["drop"].abs().max() + frame["drop_std"].max())
    fig.update_yaxes(tickformat="+.2%" if span < 0.01 else "+.1%" if span < 0.1 else "+.0%")
    fig.update_layout(margin=dict(t=96))        # room for a two-row legend under the title
    return fig


def driver_bars(frame: pd.DataFrame, *, title: str, group_title: str,
                order: list[str] | None = None) -> go.Figure:
    """Mean attribution per event by group; the cohort and everyone side by side when both are there.

    ``frame``: ``group``, ``mean_attribution``, ``events`` and optionally ``population``
    (core.explain.compare_drivers; a plain global_drivers frame is one population). Groups with no
    events are left out. Behaviour groups keep their colour on the cohort's bars' outline.
    """
    if not _require(frame, ("group", "mean_attribution", "events"), "driver_bars") \
            or frame["events"].fillna(0).sum() == 0:
        return empty_figure("No events to aggregate: pick a larger cohort.", title, height=280)
    part = frame[frame["events"].fillna(0) > 0].assign(group=lambda f: f["group"].astype(str))
    if "population" not in part:
        part = part.assign(population="everyone")
    groups = list(dict.fromkeys(part["group"]))
    if order is not None:
        groups = [g for g in order if g in groups] + [g for g in groups if g not in order]
    fig = _figure(title, x_title=group_title, y_title="mean attribution per event",
                  height=max(300, 300 if len(groups) <= 8 else 120 + 22 * len(groups)))
    for population, color in (("everyone", EVERYONE_COLOR), ("cohort", COHORT_COLOR)):
        rows = part[part["population"] == population].set_index("group").reindex(groups)
        if rows["events"].isna().all():
            continue
        fig.add_trace(go.Bar(
            x=groups, y=rows["mean_attribution"], name=population, marker=dict(color=color),
            customdata=rows[["events"]].fillna(0).to_numpy(),
            hovertemplate=(f"{population}<br>%{{x}}: %{{y:+.4f}} per event"
                           "<br>%{customdata[0]:,.0f} events<extra></extra>"),
        ))
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=groups, showgrid=False)
    fig.add_hline(y=0, line=dict(color=NEUTRAL, width=1))
    return fig


def _styled(fig: go.Figure) -> go.Figure:
    """A figure built elsewhere (core.explain's SHAP plots) in the IntentLens template."""
    fig.update_layout(template=template())
    return fig


def shap_bar(values: pd.DataFrame, *, top: int = 20) -> go.Figure:
    """Mean |SHAP value| per feature of the tree baseline (SHAP's bar plot) in this template.
    ``values``: one column per feature, one row per user (core.explain.tree_shap)."""
    if values.empty:
        return empty_figure("No users to explain with tree SHAP.", "Feature importance (mean |SHAP value|)")
    from core.explain import tree_shap_bar_figure

    fig = _styled(tree_shap_bar_figure(values, top=top))
    fig.update_traces(marker=dict(color=ACCENT))
    return fig


def shap_beeswarm(values: pd.DataFrame, features: pd.DataFrame, *, top: int = 20) -> go.Figure:
    """SHAP's beeswarm (one dot per user and feature, coloured by the feature's value) in this
    template. ``values`` as in :func:`shap_bar`; ``features``: the feature frame they explain."""
    if values.empty:
        return empty_figure("No users to explain with tree SHAP.", "SHAP values per feature")
    from core.explain import tree_shap_beeswarm_figure

    fig = _styled(tree_shap_beeswarm_figure(values, features, top=top))
    fig.add_vline(x=0, line=dict(color=NEUTRAL, width=1))
    return fig
