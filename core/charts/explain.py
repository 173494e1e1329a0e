"""Explain page: event timelines, attributions, attention, faithfulness, drivers, SHAP plots.

Pure plotly: a tidy frame in, a ``go.Figure`` out (see :mod:`core.charts`)."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts.base import (
    ACCENT,
    NEUTRAL,
    TEXT,
    base_figure,
    behavior_color,
    empty_figure,
    ordered_behaviors,
    require_columns,
    template,
)
from core.charts.cohorts import COHORT_COLOR, EVERYONE_COLOR

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


def attribution_timeline(events: pd.DataFrame, method: str, *, cutoff: datetime | str | None = None,
                         by_order: bool = False) -> go.Figure:
    """A user's events at their time, one row per behaviour, coloured by their attribution.

    ``events``: ``position``, ``ts``, ``behavior``, ``item_id``, ``category``, ``gap_seconds`` and a
    column named ``method`` (core.insight.explain.Explanation.events). The colour scale is diverging and
    centred at 0; a marker's size grows with |attribution| and its outline is the behaviour's
    colour. ``cutoff`` (T) is drawn as a dashed line. ``by_order``: events evenly spaced in their
    order (1 = oldest) instead of at their time, so a burst of events in one session stays readable.
    """
    label = _method_label(method)
    title = f"Timeline coloured by {label}"
    if not require_columns(events, ("position", "ts", "behavior", "item_id", "category", "gap_seconds", method),
                    "attribution_timeline"):
        return empty_figure("This user has no events before the cutoff, so there is nothing to explain.",
                            title)
    values = events[method].astype(float).fillna(0.0)
    scale = float(values.abs().max()) or 1.0
    order = ordered_behaviors(events["behavior"].astype(str))
    fig = base_figure(title, x_title="event (1 = oldest)" if by_order else "time (UTC)", y_title="behaviour",
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
    if not require_columns(events, ("position", "ts", "behavior", "category", method), "attribution_bars"):
        return empty_figure("No events to rank.", title, height=260)
    part = events.assign(_v=events[method].astype(float)).sort_values(
        "_v", key=lambda s: s.abs(), ascending=False).head(top)
    names = [f"#{p} {b} · cat {c} · {pd.Timestamp(t):%m-%d %H:%M}" for p, b, c, t in
             zip(part["position"], part["behavior"].astype(str), part["category"].astype(str), part["ts"],
                 strict=True)]
    fig = base_figure(title, x_title=f"{label} (logit units)", height=max(260, 90 + 26 * len(part)))
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

    ``attention``: ``layer``, ``head``, ``position``, ``weight`` (core.insight.explain.attention_weights);
    ``events``: ``position``, ``behavior``, ``category``, ``ts`` for the hover. ``layer`` / ``head``
    None = all of them.
    """
    title = "Attention from [CLS] to each event"
    if not require_columns(attention, ("layer", "head", "position", "weight"), "attention_heatmap"):
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
                      for b, c, t in zip(info["behavior"].astype(str), info["category"].astype(str), info["ts"],
                                          strict=True)],
                     dtype=object)
    rows = [f"layer {la + 1} · head {h + 1}" for la, h in grid.index]
    x = np.arange(1, len(positions) + 1)
    step = max(1, int(np.ceil(len(x) / MAX_TICKS)))
    fig = base_figure(title, x_title="event (1 = oldest)", height=max(220, 150 + 30 * len(rows)))
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

    ``frame``: ``method``, ``k``, ``drop``, ``drop_std`` (core.insight.explain.faithfulness). A method
    whose line sits above the random one finds events the model really relies on.
    """
    title = "Faithfulness: score drop when the top-k events are removed"
    if not require_columns(frame, ("method", "k", "drop", "drop_std"), "faithfulness_curves"):
        return empty_figure("Nothing to check: the user has no events.", title)
    fig = base_figure(title, x_title="events removed (k)", y_title="score drop (probability)")
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
    (core.insight.explain.compare_drivers; a plain global_drivers frame is one population). Groups with no
    events are left out. Behaviour groups keep their colour on the cohort's bars' outline.
    """
    if not require_columns(frame, ("group", "mean_attribution", "events"), "driver_bars") \
            or frame["events"].fillna(0).sum() == 0:
        return empty_figure("No events to aggregate: pick a larger cohort.", title, height=280)
    part = frame[frame["events"].fillna(0) > 0].assign(group=lambda f: f["group"].astype(str))
    if "population" not in part:
        part = part.assign(population="everyone")
    groups = list(dict.fromkeys(part["group"]))
    if order is not None:
        groups = [g for g in order if g in groups] + [g for g in groups if g not in order]
    fig = base_figure(title, x_title=group_title, y_title="mean attribution per event",
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
    """A figure built elsewhere (core.insight.explain's SHAP plots) in the IntentLens template."""
    fig.update_layout(template=template())
    return fig


def shap_bar(values: pd.DataFrame, *, top: int = 20) -> go.Figure:
    """Mean |SHAP value| per feature of the tree baseline (SHAP's bar plot) in this template.
    ``values``: one column per feature, one row per user (core.insight.explain.tree_shap)."""
    if values.empty:
        return empty_figure("No users to explain with tree SHAP.", "Feature importance (mean |SHAP value|)")
    from core.insight.explain import tree_shap_bar_figure

    fig = _styled(tree_shap_bar_figure(values, top=top))
    fig.update_traces(marker=dict(color=ACCENT))
    return fig


def shap_beeswarm(values: pd.DataFrame, features: pd.DataFrame, *, top: int = 20) -> go.Figure:
    """SHAP's beeswarm (one dot per user and feature, coloured by the feature's value) in this
    template. ``values`` as in :func:`shap_bar`; ``features``: the feature frame they explain."""
    if values.empty:
        return empty_figure("No users to explain with tree SHAP.", "SHAP values per feature")
    from core.insight.explain import tree_shap_beeswarm_figure

    fig = _styled(tree_shap_beeswarm_figure(values, features, top=top))
    fig.add_vline(x=0, line=dict(color=NEUTRAL, width=1))
    return fig
