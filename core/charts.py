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

# -- cohorts (Cohorts page) ---------------------------------------------------------------------
# Score distribution, value against the cut, contrast of a cohort with everyone else.

# -- explanations (Explain page) ------------------------------------------------------------------
# Event timelines coloured with BEHAVIOR_COLORS, attribution bars, attention heatmaps.
