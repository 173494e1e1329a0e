"""Data page: the overview of a dataset (events over time, funnel, categories, quarantine).

Pure plotly: a tidy frame in, a ``go.Figure`` out (see :mod:`core.charts`)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from core.charts.base import (
    ACCENT,
    COUNT_FORMAT,
    GRID,
    SHARE_FORMAT,
    WARNING,
    base_figure,
    behavior_color,
    empty_figure,
    ordered_behaviors,
    require_columns,
)


# -- data overview (Data page) ----------------------------------------------------------------
def events_per_day(frame: pd.DataFrame, *, log_y: bool = True, tz_label: str = "UTC") -> go.Figure:
    """Lines of events per day (or per week/month bucket), one per behaviour.

    ``frame``: ``day`` (date, start of the bucket), ``behavior``, ``events``. Views dwarf every
    other behaviour, so the y axis is logarithmic by default.
    """
    title = "Events per day by behaviour"
    if not require_columns(frame, ("day", "behavior", "events"), "events_per_day"):
        return empty_figure("No events in this dataset yet. Ingest a file on the Data page.", title)
    fig = base_figure(title, x_title=f"day ({tz_label})", y_title="events")
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
    if not require_columns(frame, ("hour", "behavior", "events", "share"), "hour_of_day"):
        return empty_figure("No events in this dataset yet. Ingest a file on the Data page.", title)
    fig = base_figure(title, x_title=f"hour of day ({tz_label})", y_title="share of the behaviour's events")
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
    if not require_columns(frame, ("stage", "users", "share_of_users"), "funnel") or frame["users"].sum() == 0:
        return empty_figure("No users in this dataset yet. Ingest a file on the Data page.", title)
    stages = [str(s) for s in frame["stage"]]
    fig = base_figure(title)
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
    if not require_columns(frame, ("category", "behavior", "events", "rank"), "top_categories"):
        return empty_figure("No categories to show: this dataset has no events.", title)
    order = (frame[["category", "rank"]].drop_duplicates().sort_values("rank")["category"]
             .astype(str).tolist())
    height = max(320, 80 + 24 * len(order))
    fig = base_figure(title, x_title="events", y_title="category", height=height)
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
    if not require_columns(frame, ("bucket", "low", "users"), "events_per_user"):
        return empty_figure("No users in this dataset yet. Ingest a file on the Data page.", title)
    part = frame.sort_values("low")
    fig = base_figure(title, x_title="events per user", y_title="users")
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
    if not require_columns(frame, ("reason", "rows"), "quarantine_reasons"):
        return empty_figure("Nothing was quarantined: every row of the source was usable.", title,
                            height=240)
    part = frame.sort_values("rows")
    fig = base_figure(title, x_title="rows", height=max(240, 100 + 32 * len(part)))
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
    if not require_columns(frame, ("behavior", "events", "share"), "behavior_mix"):
        return empty_figure("No events in this dataset yet.", title, height=240)
    order = ordered_behaviors(frame["behavior"])
    part = frame.set_index(frame["behavior"].astype(str)).loc[order].reset_index(drop=True)
    fig = base_figure(title, x_title="share of events", height=max(220, 90 + 30 * len(order)))
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
