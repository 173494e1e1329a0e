"""The Train page's Models timeline: a dataset's models over time, parent -> child, promoted or not."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts.base import ACCENT, NEUTRAL, WARNING, base_figure, empty_figure, require_columns

# How each status is drawn: a model trained from scratch, a promoted update, a rejected candidate.
STATUS_STYLES: dict[str, dict[str, str]] = {
    "trained": {"label": "trained from scratch", "color": NEUTRAL, "symbol": "circle"},
    "promoted": {"label": "update, promoted", "color": ACCENT, "symbol": "circle"},
    "rejected": {"label": "update, not promoted", "color": WARNING, "symbol": "x"},
}
LINEAGE_NAME = "parent → child"
_METRIC_LABELS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}


def models_timeline(frame: pd.DataFrame, *, metric: str = "roc_auc") -> go.Figure:
    """Each model at the time it was trained, at its test-window ``metric`` (its own test window),
    one trace per status (:data:`STATUS_STYLES`), and a line with an arrow from each parent to its
    child (the trace :data:`LINEAGE_NAME`; one arrow annotation per edge).

    ``frame``: ``model_id``, ``trained_at``, ``<metric>``, ``parent_id``, ``status``
    (core.modeling.update.model_timeline); optional ``reason`` shows on hover.
    """
    label = _METRIC_LABELS.get(metric, metric)
    title = f"Models over time: {label} on each model's test window"
    needed = ("model_id", "trained_at", metric, "parent_id", "status")
    if not require_columns(frame, needed, "models_timeline") or frame[metric].isna().all():
        return empty_figure("No model trained on this dataset yet: train one above, then keep it current "
                            "with `python -m core update`.", title, height=260)
    part = frame.dropna(subset=[metric, "trained_at"]).reset_index(drop=True)
    fig = base_figure(title, x_title="trained at (UTC)", y_title=label, height=380)
    where = {str(m): (t, v) for m, t, v in zip(part["model_id"], part["trained_at"], part[metric], strict=True)}
    edges = [(where[str(p)], where[str(c)]) for p, c in zip(part["parent_id"], part["model_id"], strict=True)
             if p is not None and not pd.isna(p) and str(p) in where]
    if edges:
        xs: list[object] = []
        ys: list[object] = []
        for (x0, y0), (x1, y1) in edges:
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=LINEAGE_NAME, hoverinfo="skip",
                                 line=dict(color=NEUTRAL, width=1.5)))
        for (x0, y0), (x1, y1) in edges:
            fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                               showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.5, arrowcolor=NEUTRAL,
                               standoff=7)
    reasons = part["reason"] if "reason" in part else pd.Series([None] * len(part))
    for status, style in STATUS_STYLES.items():
        rows = part.index[part["status"] == status]
        if len(rows) == 0:
            continue
        fig.add_trace(go.Scatter(
            x=part.loc[rows, "trained_at"], y=part.loc[rows, metric], mode="markers", name=style["label"],
            marker=dict(size=12, color=style["color"], symbol=style["symbol"], line=dict(width=1, color="white")),
            customdata=np.column_stack([part.loc[rows, "model_id"].astype(str),
                                        reasons.loc[rows].fillna("").astype(str)]),
            hovertemplate="%{customdata[0]}<br>%{x|%Y-%m-%d %H:%M}<br>" + label
                          + " %{y:.3f}<br>%{customdata[1]}<extra></extra>"))
    fig.update_yaxes(tickformat=".2f")
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return fig
