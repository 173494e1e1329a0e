"""Figures checked without a UI: traces, colours, axis titles and formats, empty frames."""
from __future__ import annotations

import pandas as pd
import plotly.io as pio
import pytest

from core import charts
from core.data.schema import BEHAVIORS


def test_every_behaviour_has_one_distinct_colour():
    assert set(charts.BEHAVIOR_COLORS) == set(BEHAVIORS)
    assert len(set(charts.BEHAVIOR_COLORS.values())) == len(BEHAVIORS)
    assert charts.behavior_color("nonsense") == charts.NEUTRAL


def test_template_registered_and_used():
    name = charts.template()
    assert name in pio.templates
    tpl = pio.templates[name]
    assert tpl.layout.xaxis.gridcolor == charts.GRID
    assert tpl.layout.margin.l == 56
    fig = charts.events_per_user(pd.DataFrame({"bucket": ["1"], "low": [1], "users": [3]}))
    assert fig.layout.template.layout.xaxis.gridcolor == charts.GRID


def per_day():
    return pd.DataFrame({
        "day": pd.to_datetime(["2017-11-25", "2017-11-25", "2017-11-26", "2017-11-26"]),
        "behavior": ["buy", "view", "view", "cart"], "events": [1, 1000, 2000, 30]})


def test_events_per_day_one_trace_per_behaviour_in_canonical_order():
    fig = charts.events_per_day(per_day(), tz_label="UTC+08:00")
    assert [t.name for t in fig.data] == ["view", "cart", "buy"]
    for trace in fig.data:
        assert trace.line.color == charts.BEHAVIOR_COLORS[trace.name]
    assert fig.layout.xaxis.title.text == "day (UTC+08:00)"
    assert fig.layout.yaxis.title.text == "events"
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.tickformat == ",d"
    assert list(fig.data[0].y) == [1000, 2000]
    assert charts.events_per_day(per_day(), log_y=False).layout.yaxis.type == "linear"


def test_hour_of_day_shares_and_axis():
    frame = pd.DataFrame({"hour": [0, 1, 0, 1], "behavior": ["view", "view", "buy", "buy"],
                          "events": [3, 1, 1, 1], "share": [0.75, 0.25, 0.5, 0.5]})
    fig = charts.hour_of_day(frame)
    assert [t.name for t in fig.data] == ["view", "buy"]
    assert fig.layout.yaxis.tickformat == ".0%"
    assert list(fig.data[0].y) == [0.75, 0.25]
    assert fig.data[1].marker.color == charts.BEHAVIOR_COLORS["buy"]
    assert fig.layout.xaxis.title.text.startswith("hour of day")


def test_funnel_colours_follow_stages():
    frame = pd.DataFrame({"stage": ["view", "cart", "fav", "buy"], "users": [100, 40, 10, 5],
                          "share_of_users": [1.0, 0.4, 0.1, 0.05]})
    fig = charts.funnel(frame)
    (trace,) = fig.data
    assert trace.type == "funnel"
    assert list(trace.marker.color) == [charts.BEHAVIOR_COLORS[s] for s in frame["stage"]]
    assert list(trace.x) == [100, 40, 10, 5]
    assert fig.layout.xaxis.tickformat == ",d"


def test_top_categories_categorical_axis_busiest_on_top():
    frame = pd.DataFrame({"category": ["200", "200", "35"], "behavior": ["view", "buy", "view"],
                          "events": [50, 5, 20], "rank": [1, 1, 2]})
    fig = charts.top_categories(frame)
    assert fig.layout.barmode == "stack"
    assert fig.layout.yaxis.type == "category"           # digits stay labels, not numbers
    assert list(fig.layout.yaxis.categoryarray) == ["35", "200"]
    assert {t.name for t in fig.data} == {"view", "buy"}
    assert fig.layout.xaxis.title.text == "events"


def test_events_per_user_and_quarantine_and_mix():
    fig = charts.events_per_user(pd.DataFrame({"bucket": ["4–7", "1"], "low": [4, 1], "users": [2, 9]}))
    assert list(fig.data[0].x) == ["1", "4–7"] and list(fig.data[0].y) == [9, 2]
    assert fig.layout.yaxis.title.text == "users"
    fig = charts.quarantine_reasons(pd.DataFrame({"reason": ["bad ts", "unknown behaviour"],
                                                  "rows": [5, 2]}))
    assert list(fig.data[0].x) == [2, 5]
    mix = charts.behavior_mix(pd.DataFrame({"behavior": ["buy", "view"], "events": [1, 9],
                                            "share": [0.1, 0.9]}))
    assert list(mix.data[0].y) == ["view", "buy"]
    assert list(mix.data[0].marker.color) == [charts.BEHAVIOR_COLORS["view"], charts.BEHAVIOR_COLORS["buy"]]


EMPTY_CASES = [
    (charts.events_per_day, ["day", "behavior", "events"]),
    (charts.hour_of_day, ["hour", "behavior", "events", "share"]),
    (charts.funnel, ["stage", "users", "share_of_users"]),
    (charts.top_categories, ["category", "behavior", "events", "rank"]),
    (charts.events_per_user, ["bucket", "low", "users"]),
    (charts.quarantine_reasons, ["reason", "rows"]),
    (charts.behavior_mix, ["behavior", "events", "share"]),
]


@pytest.mark.parametrize("fn,columns", EMPTY_CASES, ids=[f.__name__ for f, _ in EMPTY_CASES])
def test_empty_frame_gives_annotated_empty_figure(fn, columns):
    fig = fn(pd.DataFrame(columns=columns))
    assert charts.is_empty_figure(fig)
    assert fig.layout.annotations[0].text
    assert fig.layout.title.text                       # still says what the chart is
    fig.to_json()                                      # and serialises for the browser


@pytest.mark.parametrize("fn,columns", EMPTY_CASES, ids=[f.__name__ for f, _ in EMPTY_CASES])
def test_missing_columns_are_a_programming_error(fn, columns):
    with pytest.raises(ValueError, match="lacks columns"):
        fn(pd.DataFrame({"unrelated": [1]}))


def test_funnel_with_zero_users_is_empty():
    frame = pd.DataFrame({"stage": ["view", "buy"], "users": [0, 0], "share_of_users": [0.0, 0.0]})
    assert charts.is_empty_figure(charts.funnel(frame))
