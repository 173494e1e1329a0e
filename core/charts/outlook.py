"""Cohorts page, Demand outlook tab: expected purchasers per category against the last horizon.

Pure plotly: a tidy frame in, a ``go.Figure`` out (see :mod:`core.charts`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts.base import ACCENT, COUNT_FORMAT, NEUTRAL, TEXT, base_figure, empty_figure, require_columns

EXPECTED_COLOR = ACCENT      # expected purchasers (bars) and their interval (error bars)
LAST_COLOR = NEUTRAL         # the last complete horizon's actual buyers (markers)
REALIZED_COLOR = TEXT        # buyers who did follow, for a cutoff in the past (markers)


def demand_outlook(frame: pd.DataFrame, *, level: float = 0.9, horizon: str = "") -> go.Figure:
    """Expected purchasers per category as bars with their interval as error bars, the last
    complete horizon's actual buyers as markers beside them (and the realised buyers, when the
    frame has a ``realized`` column with values: a backtest).

    ``frame``: ``category``, ``expected``, ``low``, ``high``, ``last_actual``[, ``realized``]
    (core.insight.outlook.OutlookFrame.frame), drawn in its order (most expected first).
    """
    span = f" in the next {horizon}" if horizon else ""
    title = f"Expected purchasers per category{span}, with {level:.0%} intervals"
    if not require_columns(frame, ("category", "expected", "low", "high", "last_actual"), "demand_outlook"):
        return empty_figure("No category has a score: score the dataset with a category-scope model.", title)
    cats = frame["category"].astype(str).tolist()
    expected = frame["expected"].to_numpy(dtype=float)
    low, high = frame["low"].to_numpy(dtype=float), frame["high"].to_numpy(dtype=float)
    fig = base_figure(title, x_title="category", y_title="purchasers", height=400)
    fig.add_trace(go.Bar(
        x=cats, y=expected, name="expected (sum of probabilities)", marker=dict(color=EXPECTED_COLOR),
        error_y=dict(type="data", symmetric=False, array=np.maximum(high - expected, 0),
                     arrayminus=np.maximum(expected - low, 0), color=TEXT, thickness=1.2, width=4),
        customdata=np.column_stack([low, high]),
        hovertemplate=("category %{x}<br>expected %{y:,.1f}<br>"
                       f"{level:.0%} interval " "%{customdata[0]:,.0f}–%{customdata[1]:,.0f}<extra></extra>"),
    ))
    fig.add_trace(go.Scatter(
        x=cats, y=frame["last_actual"], mode="markers", name="last horizon's actual buyers",
        marker=dict(symbol="diamond", size=10, color=LAST_COLOR, line=dict(color="white", width=1)),
        hovertemplate="category %{x}<br>last horizon: %{y:,d} buyers<extra></extra>",
    ))
    if "realized" in frame and frame["realized"].notna().any():
        fig.add_trace(go.Scatter(
            x=cats, y=frame["realized"], mode="markers", name="buyers that followed",
            marker=dict(symbol="x", size=10, color=REALIZED_COLOR),
            hovertemplate="category %{x}<br>bought after T: %{y:,.0f}<extra></extra>",
        ))
    fig.update_xaxes(type="category", showgrid=False)
    fig.update_yaxes(tickformat=COUNT_FORMAT, rangemode="tozero")
    return fig
