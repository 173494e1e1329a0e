"""Cohort and explanation charts without a UI: frames in, figures out, empty states, the look."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import charts


def events_frame(n: int = 6) -> pd.DataFrame:
    t = pd.Timestamp("2017-12-03 12:00")
    behaviors = ["view", "view", "cart", "fav", "view", "cart"][:n]
    return pd.DataFrame({
        "position": np.arange(30 - n, 30), "ts": [t - pd.Timedelta(hours=n - i) for i in range(n)],
        "behavior": behaviors, "item_id": [f"i{i}" for i in range(n)], "category": ["c1", "c2"] * (n // 2),
        "gap_seconds": [3600.0 * (n - i) for i in range(n)],
        "ig": np.linspace(-0.5, 1.0, n), "shap": np.linspace(0.2, -0.2, n), "attention": np.full(n, 1 / n),
    })


def test_timeline_rows_per_behaviour_and_diverging_colours_centred_at_zero():
    events = events_frame()
    fig = charts.attribution_timeline(events, "ig", cutoff="2017-12-03 12:00")
    assert fig.layout.title.text == "Timeline coloured by integrated gradients"
    assert [t.name for t in fig.data] == ["view", "cart", "fav"]           # canonical behaviour order
    assert sum(len(t.x) for t in fig.data) == len(events)
    colours = np.concatenate([np.asarray(t.marker.color) for t in fig.data])
    assert sorted(colours) == sorted(events["ig"])
    assert fig.layout.coloraxis.cmid == 0 and fig.layout.template.layout.font.family.startswith("Source")
    # the outline is the behaviour's colour; the biggest |attribution| gets the biggest marker
    cart = fig.data[1]
    assert cart.marker.line.color == charts.BEHAVIOR_COLORS["cart"]
    sizes = np.concatenate([np.asarray(t.marker.size) for t in fig.data])
    assert sizes.argmax() == np.abs(colours).argmax()
    assert "h before T" in cart.hovertemplate and "category" in cart.hovertemplate
    spaced = charts.attribution_timeline(events, "ig", cutoff="2017-12-03 12:00", by_order=True)
    assert sorted(np.concatenate([np.asarray(t.x) for t in spaced.data])) == list(range(1, len(events) + 1))
    assert spaced.layout.xaxis.title.text == "event (1 = oldest)" and not spaced.layout.shapes
    other = charts.attribution_timeline(events, "shap")
    assert list(np.concatenate([np.asarray(t.marker.color) for t in other.data])) != list(colours)


def test_timeline_and_bars_empty_and_bad_input():
    empty = events_frame().iloc[0:0]
    assert charts.is_empty_figure(charts.attribution_timeline(empty, "ig"))
    assert charts.is_empty_figure(charts.attribution_bars(empty, "ig"))
    with pytest.raises(ValueError, match="lacks columns"):
        charts.attribution_timeline(events_frame().drop(columns="ig"), "ig")


def test_attribution_bars_rank_by_absolute_value():
    fig = charts.attribution_bars(events_frame(), "ig", top=3)
    bars = fig.data[0]
    assert list(bars.x) == [1.0, 0.7, -0.5]
    assert bars.marker.color[0] == charts.BEHAVIOR_COLORS["cart"]


def test_attention_heatmap_rows_per_layer_and_head_with_thinned_ticks():
    n = 100
    events = pd.DataFrame({"position": np.arange(n), "behavior": ["view"] * n, "category": ["c"] * n,
                           "ts": pd.date_range("2017-12-01", periods=n, freq="h")})
    attention = pd.DataFrame([(la, h, p, 1.0 / n) for la in range(2) for h in range(4) for p in range(n)],
                             columns=["layer", "head", "position", "weight"])
    fig = charts.attention_heatmap(attention, events)
    heat = fig.data[0]
    assert np.asarray(heat.z).shape == (8, n)
    assert list(heat.y)[:2] == ["layer 1 · head 1", "layer 1 · head 2"]
    assert len(fig.layout.xaxis.tickvals) <= charts.MAX_TICKS
    one = charts.attention_heatmap(attention, events, layer=1, head=2).data[0]
    assert list(one.y) == ["layer 2 · head 3"] and np.asarray(one.z).shape == (1, n)
    assert charts.is_empty_figure(charts.attention_heatmap(attention, events, layer=5))
    assert charts.is_empty_figure(charts.attention_heatmap(attention.iloc[0:0], events))


def test_faithfulness_curves_methods_against_random():
    frame = pd.DataFrame({"method": ["ig"] * 3 + ["random"] * 3, "k": [1, 2, 3] * 2,
                          "drop": [0.1, 0.2, 0.3, 0.01, 0.02, 0.03], "drop_std": [0, 0, 0, 0.01, 0.01, 0.02]})
    fig = charts.faithfulness_curves(frame)
    names = [t.name for t in fig.data]
    assert "integrated gradients" in names and "random events" in names
    ig = fig.data[names.index("integrated gradients")]
    assert list(ig.y) == [0.1, 0.2, 0.3] and ig.line.color == charts.METHOD_COLORS["ig"]
    assert fig.data[names.index("random events")].line.dash == "dash"
    assert fig.layout.yaxis.tickformat == "+.0%"                      # drops up to 30 %
    small = charts.faithfulness_curves(frame.assign(drop=frame["drop"] / 100, drop_std=0.0))
    assert small.layout.yaxis.tickformat == "+.2%"                    # tiny drops stay readable
    assert charts.is_empty_figure(charts.faithfulness_curves(frame.iloc[0:0]))


def test_driver_bars_single_population_and_cohort_vs_everyone():
    single = pd.DataFrame({"group": ["view", "cart", "buy"], "events": [10, 4, 0],
                           "mean_attribution": [0.01, 0.3, np.nan]})
    fig = charts.driver_bars(single, title="By behaviour", group_title="behaviour", order=["view", "cart", "buy"])
    assert [t.name for t in fig.data] == ["everyone"]
    assert list(fig.data[0].x) == ["view", "cart"]                    # groups without events left out
    both = pd.DataFrame({"group": ["cart", "cart", "view", "view"], "population": ["cohort", "everyone"] * 2,
                         "events": [3, 4, 9, 10], "mean_attribution": [0.5, 0.3, 0.0, 0.01]})
    fig = charts.driver_bars(both, title="By behaviour", group_title="behaviour", order=["view", "cart"])
    assert [t.name for t in fig.data] == ["everyone", "cohort"]
    assert list(fig.data[1].y) == [0.0, 0.5] and fig.data[1].marker.color == charts.COHORT_COLOR
    assert charts.is_empty_figure(charts.driver_bars(single.assign(events=0), title="t", group_title="g"))


def test_cohort_histogram_cut_and_bands():
    frame = pd.DataFrame({"bin_left": np.arange(10) / 10, "bin_right": np.arange(1, 11) / 10,
                          "users": [50, 30, 10, 5, 2, 1, 1, 0, 0, 1]})
    fig = charts.cohort_score_histogram(frame, cut=0.45, band_edges=(0.2, 0.5))
    assert list(fig.data[0].y) == list(frame["users"])
    assert list(fig.data[0].x) == pytest.approx(np.arange(10) / 10 + 0.05)    # bin centres
    assert sorted(a.text for a in fig.layout.annotations) == ["cut 0.450", "high", "low", "medium"]
    # three shaded bands over [0, 0.2], [0.2, 0.5], [0.5, 1] and the cut as a vertical line
    spans = sorted((s.x0, s.x1) for s in fig.layout.shapes)
    assert spans == [(0.0, 0.2), (0.2, 0.5), (0.45, 0.45), (0.5, 1.0)]
    assert charts.is_empty_figure(charts.cohort_score_histogram(frame.assign(users=0)))


def test_cohort_contrast_pairs_cohort_and_everyone_in_order():
    frame = pd.DataFrame({"key": ["cart", "view", "buy"], "cohort": [0.3, 0.6, 0.1],
                          "everyone": [0.1, 0.85, 0.05], "ratio": [3.0, 0.7, 2.0]})
    fig = charts.cohort_contrast(frame, title="Behaviour mix", key_title="behaviour",
                                 order=["view", "cart", "fav", "buy"])
    assert [t.name for t in fig.data] == ["everyone", "cohort"]
    assert list(fig.data[1].y) == ["view", "cart", "buy"] and list(fig.data[1].x) == [0.6, 0.3, 0.1]
    assert list(fig.layout.yaxis.categoryarray) == ["buy", "cart", "view"]   # first key on top
    assert fig.layout.xaxis.tickformat == charts.SHARE_FORMAT
    assert charts.is_empty_figure(charts.cohort_contrast(frame.iloc[0:0], title="t", key_title="k"))


def test_value_curve_marks_best_cut_cohort_and_budget():
    k = np.arange(1, 101)
    p = np.linspace(0.9, 0.0, 100)
    frame = pd.DataFrame({"k": k, "share": k / 100, "expected_buyers": np.cumsum(p),
                          "expected_value": 10 * np.cumsum(p) - 1 * k, "min_score": p})
    best = {"k": int(frame["expected_value"].idxmax()) + 1, "expected_value": float(frame["expected_value"].max())}
    fig = charts.value_curve(frame, best, cohort_size=20, budget=50)
    star = next(t for t in fig.data if t.name == "best cut")
    assert list(star.x) == [best["k"]] and star.marker.symbol == "star"
    texts = [a.text for a in fig.layout.annotations]
    assert "cohort 20" in texts and "budget 50" in texts
    assert charts.is_empty_figure(charts.value_curve(frame.iloc[0:0], None))


def test_shap_plots_use_the_template():
    rng = np.random.default_rng(0)
    values = pd.DataFrame(rng.normal(size=(30, 3)), columns=["n_carts", "n_views", "recency"])
    features = pd.DataFrame(rng.uniform(size=(30, 3)), columns=values.columns)
    bar = charts.shap_bar(values)
    assert bar.layout.template.layout.font.family.startswith("Source")
    assert bar.data[0].marker.color == charts.ACCENT
    # one bar per feature, its length the mean |SHAP value|
    drawn = dict(zip(bar.data[0].y, bar.data[0].x, strict=True))
    assert drawn == pytest.approx(values.abs().mean().to_dict())
    swarm = charts.shap_beeswarm(values, features)
    # one dot per user and feature, at the user's SHAP value
    dots = np.asarray(swarm.data[0].x, dtype=float)
    assert len(dots) == 90 and sorted(dots) == pytest.approx(sorted(values.to_numpy().ravel()))
    assert charts.is_empty_figure(charts.shap_bar(values.iloc[0:0]))
