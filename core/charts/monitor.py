"""Monitor page: drift (PSI per feature, behaviour mix, binned distributions), cohort stability
across scoring runs, and the scoring service's traffic and latency."""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from core.charts.base import (
    ACCENT,
    NEUTRAL,
    SHARE_FORMAT,
    WARNING,
    base_figure,
    behavior_color,
    empty_figure,
    require_columns,
)

STATUS_COLORS = {"ok": "#2E9E5B", "watch": "#D9822B", "drift": "#E15759"}
REFERENCE_COLOR = NEUTRAL      # the training window
LATEST_COLOR = ACCENT          # the latest window
LATENCY_COLORS = {"p50_ms": "#9AA5CE", "p95_ms": ACCENT, "p99_ms": "#E15759"}
MAX_FEATURES = 20              # bars in the feature PSI chart


def _threshold_lines(fig: go.Figure, watch: float, act: float, *, axis: str = "x") -> None:
    for value, text, color in ((watch, f"watch {watch:g}", WARNING), (act, f"act {act:g}", STATUS_COLORS["drift"])):
        if axis == "x":
            fig.add_vline(x=value, line=dict(color=color, dash="dash", width=1),
                          annotation_text=text, annotation_position="top")
        else:
            fig.add_hline(y=value, line=dict(color=color, dash="dash", width=1),
                          annotation_text=text, annotation_position="top left")


def feature_psi(features: pd.DataFrame, watch: float, act: float, *, top: int = MAX_FEATURES) -> go.Figure:
    """Horizontal bars: the ``top`` features with the highest PSI, coloured by status, with the
    watch and action thresholds as dashed lines. Columns: label, psi, status."""
    title = "Feature drift (PSI, training window → latest)"
    if not require_columns(features, ["label", "psi", "status"], "feature_psi"):
        return empty_figure("No features to compare.", title)
    shown = features.nlargest(top, "psi").iloc[::-1]
    fig = base_figure(title, x_title="population stability index", height=max(300, 26 * len(shown) + 120))
    fig.add_bar(x=shown["psi"], y=shown["label"], orientation="h",
                marker_color=[STATUS_COLORS.get(s, NEUTRAL) for s in shown["status"]],
                customdata=shown["status"], hovertemplate="%{y}<br>PSI %{x:.3f} (%{customdata})<extra></extra>")
    _threshold_lines(fig, watch, act)
    fig.update_xaxes(range=[0, max(act * 1.2, float(shown["psi"].max()) * 1.1)])
    return fig


def _bin_label(lower: float, upper: float) -> str:
    """``≤ 3``, ``3 – 7.5``, ``> 7.5`` (a missing edge is NaN: the open end)."""
    def fmt(v: float) -> str:
        return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"

    if math.isnan(lower):
        return "all" if math.isnan(upper) else f"≤ {fmt(upper)}"
    if math.isnan(upper):
        return f"> {fmt(lower)}"
    return f"{fmt(lower)} – {fmt(upper)}"


def drift_bins(bins: pd.DataFrame, title: str, *, x_title: str = "") -> go.Figure:
    """Grouped bars: the share of the training window and of the latest window in each PSI bin
    (bins cut at the training window's quantiles). Columns: lower, upper, reference, latest."""
    if not require_columns(bins, ["lower", "upper", "reference", "latest"], "drift_bins"):
        return empty_figure("No values to compare.", title)
    labels = [_bin_label(lo, hi) for lo, hi in zip(bins["lower"].astype(float), bins["upper"].astype(float),
                                                   strict=True)]
    fig = base_figure(title, x_title=x_title, y_title="share")
    fig.add_bar(x=labels, y=bins["reference"], name="training window", marker_color=REFERENCE_COLOR,
                hovertemplate="%{x}: %{y:.1%}<extra>training window</extra>")
    fig.add_bar(x=labels, y=bins["latest"], name="latest window", marker_color=LATEST_COLOR,
                hovertemplate="%{x}: %{y:.1%}<extra>latest window</extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=SHARE_FORMAT)
    fig.update_xaxes(type="category")
    return fig


def behavior_shift(behaviors: pd.DataFrame) -> go.Figure:
    """Grouped bars per behaviour: its share of the events in the training window and in the
    latest window. Columns: behavior, reference_share, latest_share."""
    title = "Behaviour mix (share of events)"
    if not require_columns(behaviors, ["behavior", "reference_share", "latest_share"], "behavior_shift"):
        return empty_figure("No events in the windows.", title)
    fig = base_figure(title, y_title="share of events")
    fig.add_bar(x=behaviors["behavior"], y=behaviors["reference_share"], name="training window",
                marker_color=REFERENCE_COLOR, hovertemplate="%{x}: %{y:.2%}<extra>training window</extra>")
    fig.add_bar(x=behaviors["behavior"], y=behaviors["latest_share"], name="latest window",
                marker_color=[behavior_color(b) for b in behaviors["behavior"]],
                hovertemplate="%{x}: %{y:.2%}<extra>latest window</extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=SHARE_FORMAT, type="log" if behaviors["latest_share"].max() > 0.5 else "linear")
    return fig


def cohort_overlap(stability: pd.DataFrame, top_percent: float) -> go.Figure:
    """Lines over scoring runs: the share of the earlier top kept and the Jaccard overlap of the
    top ``top_percent`` % between each run and the one before it. Columns: later_at, kept, jaccard."""
    title = f"Top {top_percent:g} % from one scoring run to the next"
    if not require_columns(stability, ["later_at", "kept", "jaccard"], "cohort_overlap"):
        return empty_figure("Score the dataset twice with this model to compare runs.", title)
    fig = base_figure(title, x_title="scoring run (UTC)", y_title="overlap")
    fig.add_scatter(x=stability["later_at"], y=stability["kept"], mode="lines+markers",
                    name="share of the earlier top kept", line=dict(color=ACCENT),
                    hovertemplate="%{x}: %{y:.1%} kept<extra></extra>")
    fig.add_scatter(x=stability["later_at"], y=stability["jaccard"], mode="lines+markers",
                    name="Jaccard overlap", line=dict(color=NEUTRAL, dash="dot"),
                    hovertemplate="%{x}: Jaccard %{y:.2f}<extra></extra>")
    fig.update_yaxes(range=[0, 1.05], tickformat=SHARE_FORMAT)
    return fig


def service_traffic(summary: pd.DataFrame) -> go.Figure:
    """Requests per second (bars) and the error rate (line, right axis) per time bucket.
    Columns: time, rate, error_rate."""
    title = "Requests per second and error rate"
    if not require_columns(summary, ["time", "rate", "error_rate"], "service_traffic"):
        return empty_figure("No requests logged yet.", title)
    fig = base_figure(title, x_title="time (UTC)", y_title="requests / s")
    fig.add_bar(x=summary["time"], y=summary["rate"], name="requests / s", marker_color=ACCENT,
                hovertemplate="%{x}: %{y:.2f} req/s<extra></extra>")
    fig.add_scatter(x=summary["time"], y=summary["error_rate"], name="error rate (4xx + 5xx)", yaxis="y2",
                    mode="lines+markers", line=dict(color=STATUS_COLORS["drift"]),
                    hovertemplate="%{x}: %{y:.1%} errors<extra></extra>")
    fig.update_layout(yaxis2=dict(title="error rate", overlaying="y", side="right", range=[0, 1.05],
                                  tickformat=SHARE_FORMAT, showgrid=False))
    return fig


def service_latency(summary: pd.DataFrame) -> go.Figure:
    """p50, p95 and p99 latency (ms) per time bucket. Columns: time, p50_ms, p95_ms, p99_ms."""
    title = "Latency percentiles (ms)"
    if not require_columns(summary, ["time", "p50_ms", "p95_ms", "p99_ms"], "service_latency"):
        return empty_figure("No requests logged yet.", title)
    fig = base_figure(title, x_title="time (UTC)", y_title="latency (ms)")
    for column, color in LATENCY_COLORS.items():
        name = column.split("_")[0]
        fig.add_scatter(x=summary["time"], y=summary[column], name=name, mode="lines+markers",
                        line=dict(color=color), connectgaps=False,
                        hovertemplate="%{x}: %{y:.1f} ms<extra>" + name + "</extra>")
    return fig
