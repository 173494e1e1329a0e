"""Monitor page: realized accuracy of scoring runs (did the predicted buyers buy?) and the CPU and
memory of the app, the scoring service and background jobs over time."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from core.charts.base import ACCENT, NEUTRAL, SHARE_FORMAT, base_figure, empty_figure, require_columns

REALIZED_COLOR = ACCENT        # what happened
PROMISE_COLOR = NEUTRAL        # what the test window promised
FLAG_COLOR = "#E15759"         # a run below its promise
SOURCE_COLORS = {"app": "#4C78A8", "service": "#F58518"}
JOB_COLOR = "#54A24B"


def realized_precision(runs: pd.DataFrame, top_percent: float) -> go.Figure:
    """Per scoring run (x = its cutoff): realized precision of the top X % with its 95 % interval,
    and the model's promise (test-window precision +- the range a run of that size lands in),
    flagged runs in red. Columns: cutoff, precision, precision_low, precision_high, promised,
    promised_margin, flagged."""
    title = f"Did the top {top_percent:g} % buy? Realized precision per scoring run"
    cols = ["cutoff", "precision", "precision_low", "precision_high", "promised", "promised_margin", "flagged"]
    if not require_columns(runs, cols, "realized_precision"):
        return empty_figure("No scoring run has reached the end of its horizon yet.", title)
    fig = base_figure(title, x_title="scoring cutoff (UTC)", y_title="share that bought")
    if runs["promised"].notna().any():
        fig.add_scatter(x=runs["cutoff"], y=runs["promised"] + runs["promised_margin"], mode="lines",
                        line=dict(width=0), showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=runs["cutoff"], y=runs["promised"] - runs["promised_margin"], mode="lines",
                        line=dict(width=0), fill="tonexty", fillcolor="rgba(154,165,206,0.25)",
                        name="promised range", hoverinfo="skip")
        fig.add_scatter(x=runs["cutoff"], y=runs["promised"], mode="lines+markers", name="promised (test window)",
                        line=dict(color=PROMISE_COLOR, dash="dash"),
                        hovertemplate="promised %{y:.1%}<extra></extra>")
    fig.add_scatter(x=runs["cutoff"], y=runs["precision"], mode="markers+lines", name="realized",
                    line=dict(color=REALIZED_COLOR),
                    marker=dict(size=10, color=[FLAG_COLOR if f else REALIZED_COLOR for f in runs["flagged"]]),
                    error_y=dict(type="data", symmetric=False, array=runs["precision_high"] - runs["precision"],
                                 arrayminus=runs["precision"] - runs["precision_low"]),
                    hovertemplate="%{x}<br>realized %{y:.1%}<extra></extra>")
    fig.update_yaxes(tickformat=SHARE_FORMAT, rangemode="tozero")
    return fig


def predicted_vs_actual(runs: pd.DataFrame) -> go.Figure:
    """Per scoring run: predicted buyers (the sum of the scores, with its Poisson-binomial 95 %
    range) beside the buyers that happened. Columns: cutoff, predicted_buyers, predicted_low,
    predicted_high, buyers."""
    title = "Calibration: predicted vs actual buyers per run"
    cols = ["cutoff", "predicted_buyers", "predicted_low", "predicted_high", "buyers"]
    if not require_columns(runs, cols, "predicted_vs_actual"):
        return empty_figure("No scoring run has reached the end of its horizon yet.", title)
    labels = pd.to_datetime(runs["cutoff"]).dt.strftime("%Y-%m-%d %H:%M")
    fig = base_figure(title, x_title="scoring cutoff (UTC)", y_title="buyers")
    fig.add_bar(x=labels, y=runs["predicted_buyers"], name="predicted (sum of scores)", marker_color=PROMISE_COLOR,
                error_y=dict(type="data", symmetric=False, array=runs["predicted_high"] - runs["predicted_buyers"],
                             arrayminus=runs["predicted_buyers"] - runs["predicted_low"]))
    fig.add_scatter(x=labels, y=runs["buyers"], mode="markers", name="actual", marker=dict(size=12,
                    color=REALIZED_COLOR, symbol="diamond"))
    return fig


def _source_color(source: str) -> str:
    return SOURCE_COLORS.get(source, JOB_COLOR if source.startswith("job:") else NEUTRAL)


def resource_usage(samples: pd.DataFrame, measure: str) -> go.Figure:
    """CPU % (``measure`` = cpu_percent) or resident memory (rss_mb) over time, one line per
    source (app, service, job:<kind>). Columns: time, source, cpu_percent, rss_mb."""
    if measure not in ("cpu_percent", "rss_mb"):
        raise ValueError(f"resource_usage: measure must be cpu_percent or rss_mb; got {measure!r}")
    title, y_title = (("CPU by process (100 % = one core)", "CPU %") if measure == "cpu_percent"
                      else ("Memory by process (resident)", "MiB"))
    if not require_columns(samples, ["time", "source", "cpu_percent", "rss_mb"], "resource_usage"):
        return empty_figure("No resource samples yet.", title)
    fig = base_figure(title, x_title="time (UTC)", y_title=y_title, height=300)
    for source, part in samples.groupby("source", sort=True):
        fig.add_scatter(x=part["time"], y=part[measure], mode="lines", name=str(source),
                        line=dict(color=_source_color(str(source))),
                        hovertemplate=f"{source}<br>%{{x}}<br>%{{y:.1f}}<extra></extra>")
    fig.update_yaxes(rangemode="tozero")
    return fig
