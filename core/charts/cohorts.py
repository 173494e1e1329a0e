"""Cohorts page: score distribution, value against the cut, a cohort against everyone.

Pure plotly: a tidy frame in, a ``go.Figure`` out (see :mod:`core.charts`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts.base import (
    ACCENT,
    BEHAVIOR_COLORS,
    COUNT_FORMAT,
    NEUTRAL,
    SHARE_FORMAT,
    TEXT,
    WARNING,
    base_figure,
    empty_figure,
    require_columns,
)
from core.charts.performance import _cutoff_vline

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

    ``frame``: ``bin_left``, ``bin_right``, ``users`` (core.insight.cohorts.score_histogram). ``cut``: the
    lowest score in the cohort (a dashed line); ``band_edges``: (low, high), shaded low / medium /
    high regions with their names.
    """
    title = "Score distribution of the scoring run"
    if not require_columns(frame, ("bin_left", "bin_right", "users"), "cohort_score_histogram") \
            or frame["users"].sum() == 0:
        return empty_figure("No scores yet. Press Re-score to score every user with this model.", title)
    centers = (frame["bin_left"] + frame["bin_right"]) / 2
    width = float((frame["bin_right"] - frame["bin_left"]).iloc[0])
    fig = base_figure(title, x_title="predicted probability of buying", y_title="users")
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

    ``frame``: ``key``, ``cohort``, ``everyone``, ``ratio`` (core.insight.cohorts.cohort_contrast). Keys
    are drawn in ``order`` when given (e.g. behaviours, recency buckets), else in the frame's order
    (most over-represented first), top to bottom; hover says how over-represented a key is.
    """
    if not require_columns(frame, ("key", "cohort", "everyone", "ratio"), "cohort_contrast"):
        return empty_figure("Nothing to compare: the cohort is empty. Loosen the cut or the filters.",
                            title, height=260)
    part = frame.assign(key=frame["key"].astype(str))
    if order is not None:
        known = [k for k in order if k in set(part["key"])]
        part = part.set_index("key").loc[known + [k for k in part["key"] if k not in known]].reset_index()
    keys = part["key"].tolist()
    fig = base_figure(title, x_title="share", y_title=key_title, height=max(260, 110 + 44 * len(keys)))
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
    (core.insight.cohorts.value_curve); ``best``: its best cut (``k``, ``expected_value``); the current
    cohort size and the budget are drawn as vertical lines.
    """
    title = "Expected value against the cut"
    if not require_columns(frame, ("k", "share", "expected_buyers", "expected_value", "min_score"), "value_curve"):
        return empty_figure("No users to rank: the filters leave nobody. Loosen them.", title)
    part = frame.sort_values("k")
    fig = base_figure(title, x_title="users contacted (highest scores first)", y_title="expected value")
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
