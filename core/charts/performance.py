"""Train and Performance pages: model quality (curves, confusion, lift, calibration, leaderboard).

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
    SHARE_FORMAT_FINE,
    TEXT,
    base_figure,
    empty_figure,
    require_columns,
)

# -- model quality (Train / Performance pages) ------------------------------------------------
# PR and ROC curves, confusion matrix, lift and gains, calibration, score histograms: one function
# each, drawn on base_figure() with ACCENT for the model, NEUTRAL for baselines and chance lines,
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
    if not require_columns(frame, ("epoch", "train_loss", "valid_loss", "valid_pr_auc"), "training_curves"):
        return empty_figure(empty_message, title, height=320)
    part = frame.sort_values("epoch")
    fig = base_figure(title, x_title="epoch", y_title="loss", height=320)
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
    """Each model's test-window ``metric`` with its 95 % interval, best at the top.

    ``frame``: ``model_id``, ``kind``, ``<metric>`` and optionally ``<metric>_low``/``_high``
    (core.modeling.model_store.list_models).
    """
    label = METRIC_LABELS.get(metric, metric)
    title = f"{label} on the test window, with 95 % intervals"
    if not require_columns(frame, ("model_id", "kind", metric), "leaderboard") or frame[metric].isna().all():
        return empty_figure("No model trained on this dataset yet: train one above.", title,
                            height=240)
    part = frame.dropna(subset=[metric]).sort_values(metric, ascending=(metric in ("log_loss", "brier", "ece")))
    low = part[f"{metric}_low"] if f"{metric}_low" in part else part[metric]
    high = part[f"{metric}_high"] if f"{metric}_high" in part else part[metric]
    names = [f"{k} · {m}" for k, m in zip(part["kind"].astype(str), part["model_id"].astype(str), strict=True)]
    fig = base_figure(title, x_title=label, height=max(220, 90 + 34 * len(part)))
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

    ``frame``: ``model``, ``recall``, ``precision`` (core.modeling.metrics.pr_curve plus a model column);
    ``points``: ``model``, ``recall``, ``precision``, ``threshold`` (where the cutoff sits);
    ``base_rate``: the share of positives, drawn as the line a random ranking would give.
    """
    title = "Precision-recall curve"
    if not require_columns(frame, ("model", "recall", "precision"), "pr_curves"):
        return empty_figure("No positive label in the validation rows: precision and recall "
                            "are undefined. Train on a longer horizon or another dataset.", title)
    order = _models(frame)
    fig = base_figure(title, x_title="recall (share of buyers found)",
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

    ``frame``: ``model``, ``fpr``, ``tpr`` (core.modeling.metrics.roc_curve plus a model column);
    ``points``: ``model``, ``fpr``, ``tpr``, ``threshold``.
    """
    title = "ROC curve"
    if not require_columns(frame, ("model", "fpr", "tpr"), "roc_curves"):
        return empty_figure("The validation rows hold one class only: the ROC curve is "
                            "undefined. Train on a longer horizon or another dataset.", title)
    order = _models(frame)
    fig = base_figure(title, x_title="false-positive rate (non-buyers flagged)",
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
    ``share`` (core.modeling.metrics.confusion). ``shares``: colour and label by share of all rows.
    """
    if not require_columns(frame, ("actual", "predicted", "outcome", "count", "share"), "confusion_matrix") \
            or frame["count"].sum() == 0:
        return empty_figure("No validation rows to count.", title, height=height)
    cells = {(int(r["actual"]), int(r["predicted"])): r for r in frame.to_dict("records")}
    rows, cols = [1, 0], [1, 0]                       # buyers first, flagged first
    z, text = [], []
    for a in rows:
        z_row, t_row = [], []
        for p in cols:
            cell = cells[(a, p)]
            z_row.append(float(cell["share"] if shares else cell["count"]))
            count, share = f"{int(cell['count']):,}", f"{float(cell['share']):.1%}"
            main, second = (share, count) if shares else (count, share)
            t_row.append(f"<b>{cell['outcome']}</b><br>{main}<br><span style='font-size:11px'>"
                         f"{second}</span>")
        z.append(z_row)
        text.append(t_row)
    fig = base_figure(title, x_title="predicted (score ≥ cutoff)", y_title="actual", height=height)
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

    ``frame``: ``model``, ``top_fraction``, ``lift`` (core.modeling.metrics.lift_table plus a model column);
    ``cutoff_fraction``: the share of rows the cutoff flags (a vertical line).
    """
    title = "Lift by top share of users"
    if not require_columns(frame, ("model", "top_fraction", "lift"), "lift_chart") or frame["lift"].isna().all():
        return empty_figure("No buyer in the validation rows: lift is undefined.", title)
    order = _models(frame)
    fig = base_figure(title, x_title="top share of users by score", y_title="lift (× base rate)")
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

    ``frame``: ``model``, ``top_fraction``, ``gain`` (core.modeling.metrics.lift_table plus a model column).
    """
    title = "Cumulative gains"
    if not require_columns(frame, ("model", "top_fraction", "gain"), "gains_chart") or frame["gain"].isna().all():
        return empty_figure("No buyer in the validation rows: gains are undefined.", title)
    order = _models(frame)
    fig = base_figure(title, x_title="top share of users by score", y_title="share of buyers found")
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
    (core.modeling.metrics.calibration_bins plus a model column); empty bins are left out."""
    title = "Reliability diagram"
    if not require_columns(frame, ("model", "mean_p", "frac_pos", "n"), "calibration_chart") \
            or (frame["n"] > 0).sum() == 0:
        return empty_figure("No rows to bin.", title)
    order = _models(frame)
    fig = base_figure(title, x_title="mean predicted probability", y_title="observed share of buyers")
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
    if not require_columns(frame, ("score", "label"), "score_histogram"):
        return empty_figure("No validation rows to draw.", title)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / int(bins)
    fig = base_figure(title, x_title="predicted probability",
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
    if not require_columns(frame, ("segment_type", "segment", "rows", *metrics), "segment_quality"):
        return empty_figure("No validation rows to split into segments.", title)
    names = [f"{t} · {s}" for t, s in zip(frame["segment_type"].astype(str),
                                          frame["segment"].astype(str), strict=True)]
    fig = base_figure(title, x_title="value", height=max(320, 110 + 22 * len(names) * len(metrics) // 2))
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
    """An ensemble and its members side by side on one test-window metric with 95 % intervals.

    ``frame``: ``member``, ``value``, ``low``, ``high`` (and optionally ``weight``, the member's
    share of the ensemble score).
    """
    label = METRIC_LABELS.get(metric, metric)
    title = f"Ensemble and members: test-window {label}"
    if not require_columns(frame, ("member", "value", "low", "high"), "member_scores"):
        return empty_figure("This model is not an ensemble: it has no members to compare.", title,
                            height=280)
    names = frame["member"].astype(str).tolist()
    weights = frame["weight"] if "weight" in frame else pd.Series([np.nan] * len(frame))
    text = [f"{v:.3f}" + ("" if pd.isna(w) else f" · weight {w:.0%}")
            for v, w in zip(frame["value"], weights, strict=True)]
    fig = base_figure(title, y_title=label, height=300)
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


def split_comparison_chart(frame: pd.DataFrame) -> go.Figure:
    """Time split (test window) beside a random 80/20 split of the same rows, per rank metric.

    ``frame``: ``metric``, ``time_split``, ``random_split`` (core.modeling.pipeline.split_comparison);
    only ROC-AUC and PR-AUC are drawn (the loss metrics are in the table beside it)."""
    title = "Time split vs random 80/20 split"
    if not require_columns(frame, ("metric", "time_split", "random_split"), "split_comparison_chart"):
        return empty_figure("No random-split figures for this model.", title, height=300)
    part = frame[frame["metric"].isin(["roc_auc", "pr_auc"])]
    names = [METRIC_LABELS.get(m, m) for m in part["metric"]]
    fig = base_figure(title, y_title="value", height=320)
    for column, text, color in (("time_split", "time split (test window, honest)", ACCENT),
                                ("random_split", "random 80/20 split (leaky)", NEUTRAL)):
        fig.add_trace(go.Bar(x=names, y=part[column], name=text, marker=dict(color=color),
                             text=[f"{v:.3f}" for v in part[column]], textposition="outside",
                             hovertemplate="%{x}: %{y:.3f}<extra>" + text + "</extra>"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.05], tickformat=".2f")
    return fig


def label_efficiency_chart(frame: pd.DataFrame, *, metric: str = "roc_auc") -> go.Figure:
    """Test ``metric`` against the share of labelled training users, from scratch and pre-trained,
    with each point's interval. ``frame``: core.modeling.experiments.summarise (share, pretrained,
    ``<metric>``, ``<metric>_low``, ``<metric>_high``)."""
    label = METRIC_LABELS.get(metric, metric)
    title = f"Label efficiency: test {label} by share of labelled users"
    need = ("share", "pretrained", metric, f"{metric}_low", f"{metric}_high")
    if not require_columns(frame, need, "label_efficiency_chart") or frame.empty:
        return empty_figure("No label-efficiency run yet.", title, height=320)
    fig = base_figure(title, x_title="share of training users labelled", y_title=f"test {label}", height=340)
    for i, (pre, name) in enumerate(((False, "from scratch"), (True, "pre-trained encoder"))):
        part = frame[frame["pretrained"] == pre].sort_values("share")
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["share"], y=part[metric], mode="lines+markers", name=name,
            line=dict(color=model_color(i), width=2.5), marker=dict(size=9),
            error_y=dict(type="data", symmetric=False, array=(part[f"{metric}_high"] - part[metric]).fillna(0),
                         arrayminus=(part[metric] - part[f"{metric}_low"]).fillna(0), thickness=1.2),
            hovertemplate="%{x:.0%} labelled: %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_xaxes(type="log", tickformat=".0%")
    return fig
