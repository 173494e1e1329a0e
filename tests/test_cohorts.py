"""Cohort queries on a hand-built scoring run: cuts, filters, contrast, value curve, export."""
import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.errors import DataError, NotFoundError
from core.insight.cohorts import (
    CohortSpec,
    cohort_contrast,
    cohort_summary,
    cohort_users,
    export_cohort,
    measured_at_cut,
    refresh_user_stats,
    score_histogram,
    value_curve,
)
from tests.event_rows import insert_events

T = datetime(2017, 12, 3, 12)


@pytest.fixture
def scored(store):
    """100 users: user k has k+1 views; users 0-9 also carted an item (users 0-4 bought it)."""
    rows = []
    for k in range(100):
        for j in range(k % 40 + 1):
            rows.append(("d", f"u{k}", f"i{j}", f"c{k % 3}", "view", T - timedelta(hours=k + j)))
        if k < 10:
            rows.append(("d", f"u{k}", "icart", "c9", "cart", T - timedelta(hours=k + 1)))
        if k < 5:
            rows.append(("d", f"u{k}", "icart", "c9", "buy", T - timedelta(minutes=30)))
    events = pd.DataFrame(rows, columns=["dataset", "user_id", "item_id", "category", "behavior", "ts"])
    assert events.ts.max() == T                         # the dataset's range is its events' range
    with store.write("d", "test: scored") as w:
        w.cur.register("ev", events)
        insert_events(w, "SELECT dataset, user_id, item_id, category, behavior, ts FROM ev",
                      columns=("dataset", "user_id", "item_id", "category", "behavior", "ts"),
                      layout="taobao", sha256="abc")
        scores = pd.DataFrame({"user_id": [f"u{k}" for k in range(100)],
                               "p": np.linspace(0.99, 0.0, 100)})
        w.cur.register("sc", scores)
        w.add("scores", "SELECT 'm1', 'd', user_id, NULL, p, ?, ? FROM sc", [T, T], key="m1")
        refresh_user_stats(w)
    return store


def test_user_stats_counts_open_carts(scored):
    stats = scored.df("SELECT user_id, n_events, open_carts FROM user_stats ORDER BY user_id")
    by_user = stats.set_index("user_id")
    assert by_user.loc["u7", "open_carts"] == 1      # carted, never bought
    assert by_user.loc["u2", "open_carts"] == 0      # carted then bought
    assert by_user.loc["u50", "n_events"] == 50 % 40 + 1


def test_user_stats_top_category_breaks_ties_by_name(scored):
    """u1: two views in c1 and a cart and a buy in c9, a tie that goes to the smaller name whichever
    order DuckDB reads the rows in; u0: one view in c0 against two events in c9."""
    stats = scored.df("SELECT user_id, top_category, categories FROM user_stats").set_index("user_id")
    assert stats.loc["u1", "top_category"] == "c1" and list(stats.loc["u1", "categories"]) == ["c1", "c9"]
    assert stats.loc["u0", "top_category"] == "c9" and list(stats.loc["u0", "categories"]) == ["c9", "c0"]


def test_top_percent_threshold_and_band(scored):
    assert cohort_summary(scored, "m1", "d", CohortSpec(mode="top", top_percent=10)).size == 10
    s = cohort_summary(scored, "m1", "d", CohortSpec(mode="threshold", threshold=0.5))
    assert s.size == int((np.linspace(0.99, 0, 100) >= 0.5).sum())
    assert s.expected_buyers == pytest.approx(np.linspace(0.99, 0, 100)[:s.size].sum())
    bands = [cohort_summary(scored, "m1", "d", CohortSpec(mode="band", band=b)).size
             for b in ("high", "medium", "low")]
    p = np.linspace(0.99, 0, 100)                    # default edges: low < 0.2 <= medium < 0.5 <= high
    assert bands == [int((p >= 0.5).sum()), int(((p >= 0.2) & (p < 0.5)).sum()), int((p < 0.2).sum())]
    assert sum(bands) == 100


def test_filters_change_the_cohort(scored):
    everyone = CohortSpec(mode="top", top_percent=100)
    with_cart = CohortSpec(mode="top", top_percent=100, open_cart=True)
    assert cohort_summary(scored, "m1", "d", everyone).size == 100
    assert cohort_summary(scored, "m1", "d", with_cart).size == 5
    # user k has k % 40 + 1 views, plus a cart when k < 10 and a buy when k < 5: heavy (>= 30 events)
    # are k % 40 in 29..39 (22 users); light (< 5) are u0, u1, u40-u43 and u80-u83
    sizes = {level: cohort_summary(scored, "m1", "d",
                                   CohortSpec(mode="top", top_percent=100, activity=(level,))).size
             for level in ("light", "regular", "heavy")}
    assert sizes == {"light": 10, "regular": 68, "heavy": 22}
    cat = cohort_summary(scored, "m1", "d", CohortSpec(mode="top", top_percent=100, categories=("c9",)))
    assert cat.size == 10


def test_sql_text_in_filters_is_bound(scored):
    evil = CohortSpec(mode="top", top_percent=100, categories=("c0'); DROP TABLE scores; --",))
    assert cohort_summary(scored, "m1", "d", evil).size == 0
    assert scored.fetchone("SELECT count(*) FROM scores")[0] == 100


def test_user_table_pages_and_sorts(scored):
    spec = CohortSpec(mode="top", top_percent=100)
    first = cohort_users(scored, "m1", "d", spec, limit=10)
    second = cohort_users(scored, "m1", "d", spec, limit=10, offset=10)
    assert first.user_id.tolist() == [f"u{k}" for k in range(10)]
    assert second.user_id.tolist() == [f"u{k}" for k in range(10, 20)]
    by_events = cohort_users(scored, "m1", "d", spec, order_by="n_events", descending=True, limit=1)
    assert by_events.n_events.iloc[0] == 40
    with pytest.raises(DataError, match="cannot sort by"):
        cohort_users(scored, "m1", "d", spec, order_by="score; DROP TABLE scores")


def test_contrast_finds_the_cart_pattern(scored):
    parts = cohort_contrast(scored, "m1", "d", CohortSpec(mode="top", top_percent=10))
    cats = parts["categories"].set_index("key")
    assert cats["cohort"].sum() == pytest.approx(1.0)
    # the top 10 % (u0-u9): 55 views, 10 carts, 5 buys; everyone: 1850 views, the same carts and buys
    behaviors = parts["behaviors"].set_index("key")
    assert behaviors.index.tolist() == ["view", "cart", "fav", "buy"]
    assert behaviors["cohort"].tolist() == pytest.approx([55 / 70, 10 / 70, 0, 5 / 70])
    assert behaviors["everyone"].tolist() == pytest.approx([1850 / 1865, 10 / 1865, 0, 5 / 1865])
    assert behaviors.loc["cart", "ratio"] == pytest.approx(1865 / 70)   # all carts are in the top 10 %
    # last events: u0 at T, u1-u4 bought 30 min before T, u_k (k >= 5) viewed k hours before T
    recency = parts["recency"].set_index("key")                 # no one is away for 7+ days
    assert recency.index.tolist() == ["< 1 hour", "1-24 hours", "1-3 days", "3-7 days"]
    assert recency["cohort"].tolist() == pytest.approx([0.5, 0.5, 0, 0])
    assert recency["everyone"].tolist() == pytest.approx([0.05, 0.19, 0.48, 0.28])
    activity = parts["activity"].set_index("key")
    assert activity["cohort"].tolist() == pytest.approx([0.2, 0.8, 0])          # u0, u1 are light
    assert activity["everyone"].tolist() == pytest.approx([0.10, 0.68, 0.22])
    # last three behaviours, oldest first (at one instant the later funnel step counts as newer):
    # u0 cart>buy>view; u1-u4 cart>view>buy (the cart ties a view at T-(k+1) h); u5-u9
    # view>cart>view. No one outside the cohort has a cart, so each pattern is 10x over-represented.
    patterns = parts["patterns"]
    assert patterns["key"].tolist() == ["view>cart>view", "cart>view>buy", "cart>buy>view"]
    assert patterns["cohort"].tolist() == pytest.approx([0.5, 0.4, 0.1])
    assert patterns["everyone"].tolist() == pytest.approx([0.05, 0.04, 0.01])
    assert patterns["ratio"].tolist() == pytest.approx([10.0, 10.0, 10.0])


def test_last_three_pattern_is_chronological_and_breaks_ties_by_behaviour(scored):
    # u0 (the top 1 %): a view at T, the buy at T-30 min, and a view and the cart both at T-1 h.
    # The tie goes to the later behaviour in the funnel order (cart after view), every time.
    for _ in range(3):
        patterns = cohort_contrast(scored, "m1", "d", CohortSpec(mode="top", top_percent=1))["patterns"]
        assert patterns["key"].tolist() == ["cart>buy>view"]
        assert patterns["cohort"].tolist() == [pytest.approx(1.0)]


def test_spec_round_trips_through_json():
    spec = CohortSpec(mode="band", band="medium", band_edges=(0.2, 0.6), categories=("c1", "c2"),
                      max_days_since_last=3.0, open_cart=True, activity=("heavy",))
    assert CohortSpec.from_json(json.dumps(spec.to_dict())) == spec


def test_value_curve_marks_the_best_cut(scored):
    curve, best = value_curve(scored, "m1", "d", margin=10, cost=3)
    p = np.sort(np.linspace(0.99, 0, 100))[::-1]
    values = 10 * np.cumsum(p) - 3 * np.arange(1, 101)
    assert best["k"] == int(np.argmax(values)) + 1
    assert best["expected_value"] == pytest.approx(values.max())
    # 100 users <= 200 points: every k is on the curve, with the value computed by hand
    assert curve["k"].tolist() == list(range(1, 101))
    assert curve["expected_value"].tolist() == pytest.approx(values.tolist())
    assert curve["min_score"].tolist() == pytest.approx(p.tolist())
    _, limited = value_curve(scored, "m1", "d", margin=10, cost=3, budget=5)
    assert limited["k"] == 5


def test_measured_at_cut():
    val = pd.DataFrame({"label": [1, 1, 0, 0, 0, 0, 0, 0, 0, 1], "score": np.linspace(1, 0.1, 10)})
    out = measured_at_cut(val, CohortSpec(mode="top", top_percent=20))
    assert out["precision"] == 1.0 and out["lift"] == pytest.approx(1 / 0.3)
    assert out["recall"] == pytest.approx(2 / 3)


def test_histogram_and_missing_run(scored):
    hist = score_histogram(scored, "m1", "d", bins=10)
    p = np.linspace(0.99, 0.0, 100)                   # the fixture's scores; 0.99 is in the last bin
    assert hist.users.tolist() == np.bincount(np.minimum(np.floor(p * 10), 9).astype(int), minlength=10).tolist()
    assert hist.bin_left.tolist() == pytest.approx(np.arange(10) / 10)
    assert hist.bin_right.tolist() == pytest.approx(np.arange(1, 11) / 10)
    with pytest.raises(NotFoundError, match="has not scored"):
        score_histogram(scored, "nope", "d")


def test_export_csv_and_parquet_carry_the_audit_stamp(scored, tmp_path):
    spec = CohortSpec(mode="top", top_percent=10, open_cart=True)
    stamp = export_cohort(scored, "m1", "d", spec, tmp_path / "c.csv")
    text = (tmp_path / "c.csv").read_text()
    assert text.startswith("# model_id: m1")
    frame = pd.read_csv(tmp_path / "c.csv", comment="#")
    assert len(frame) == stamp["rows"] == 5
    assert json.loads((tmp_path / "c.csv.audit.json").read_text())["cut"] == spec.describe()
    export_cohort(scored, "m1", "d", spec, tmp_path / "c.parquet")
    meta = pq.read_schema(tmp_path / "c.parquet").metadata
    assert json.loads(meta[b"intentlens.audit"])["dataset_sha256"] == "abc"


def test_bad_cohort_specs_are_refused():
    with pytest.raises(DataError, match="top_percent"):
        CohortSpec(top_percent=0)
    with pytest.raises(DataError, match="band edges"):
        CohortSpec(mode="band", band_edges=(0.6, 0.2))
    with pytest.raises(DataError, match="activity"):
        CohortSpec(activity=("sleepy",))
