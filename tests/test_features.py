"""Aggregate features for the baselines (core/features.py)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.errors import DataError
from core.modeling.features import CATEGORY_FEATURE_NAMES, FEATURE_NAMES, NEVER_SECONDS, build_features, feature_names
from core.modeling.labels import LabelSpec, build_examples, plan_cutoffs, scoring_examples
from tests.event_rows import add_events, insert_events

T = datetime(2024, 1, 10, 12)
H1 = LabelSpec(horizon="1h")


def add_random_events(store, dataset, users=100, seed=5):
    sql = """
        WITH e AS (
            SELECT u.range AS u, x.range AS k,
                   (hash(u.range, x.range, ?) % 1000) / 1000.0 AS r1,
                   (hash(x.range, u.range, ?) % 1000) / 1000.0 AS r2
            FROM range(?) u JOIN range(50) x ON x.range < 1 + hash(u.range, ?) % 50)
        SELECT ?, 'user' || u, 'it' || floor(200 * r1 * r1)::INT, 'cat' || floor(200 * r1 * r1)::INT % 11,
               CASE WHEN r2 < 0.7 THEN 'view' WHEN r2 < 0.82 THEN 'cart' WHEN r2 < 0.88 THEN 'fav'
                    WHEN r2 < 0.95 THEN 'buy' ELSE 'remove_from_cart' END,
               TIMESTAMP '2024-01-01' + to_seconds((u * 7919 + k * 13007) % (10 * 86400)),
               CASE WHEN u % 3 = 0 THEN 's' || (k // 4) END
        FROM e"""
    with store.write(dataset, "test events") as w:
        insert_events(w, sql, [seed, seed + 1, users, seed, dataset],
                      columns=("dataset", "user_id", "item_id", "category", "behavior", "ts", "session_id"))


def ago(**kw) -> datetime:
    return T - timedelta(**kw)


@pytest.fixture
def hand(store):
    add_events(store, "h", [
        ("f", "i1", "c1", "view", ago(hours=20)),
        ("f", "i1", "c1", "view", ago(hours=3)),
        ("f", "i1", "c1", "cart", ago(hours=2, minutes=50)),
        ("f", "i2", "c2", "view", ago(hours=2, minutes=40)),
        ("f", "i2", "c2", "cart", ago(minutes=30)),
        ("f", "i1", "c1", "buy", ago(minutes=20)),
        ("f", "i3", "c1", "fav", ago(minutes=10)),
        ("f", "i4", "c3", "view", T),                              # at T: history
        ("f", "i2", "c2", "buy", T + timedelta(minutes=10)),       # after T: never read
        ("s", "i1", "c1", "view", ago(hours=3), None, "s1"),
        ("s", "i1", "c1", "view", ago(hours=1), None, "s1"),       # same session despite 2h
        ("s", "i1", "c1", "view", ago(minutes=59), None, "s2"),
        ("s", "i1", "c1", "view", ago(minutes=58), None, "s3"),
    ])
    return store


def rows(*users, category=None) -> pd.DataFrame:
    frame = pd.DataFrame({"user_id": list(users), "cutoff": [T] * len(users)})
    if category is not None:
        frame["category"] = category
    return frame


def test_hand_computed_features(hand):
    got = build_features(hand, "h", rows("f"), H1).iloc[0]
    expected = {
        "n_view_h1": 1, "n_view_h4": 3, "n_view_h16": 3, "n_view_all": 4,
        "n_cart_h1": 1, "n_cart_h4": 2, "n_cart_all": 2, "n_fav_h1": 1, "n_buy_all": 1,
        "n_remove_from_cart_all": 0, "n_search_all": 0,
        "n_events_h1": 4, "n_events_h4": 7, "n_events_h16": 7, "n_events_all": 8,
        "log_secs_since_view": 0.0, "log_secs_since_cart": math.log1p(1800),
        "log_secs_since_fav": math.log1p(600), "log_secs_since_buy": math.log1p(1200),
        "log_secs_since_search": math.log1p(NEVER_SECONDS),
        "log_secs_since_first": math.log1p(72000),
        "log_secs_since_session_start": math.log1p(1800),
        "n_items": 4, "n_categories": 3,
        "open_carts": 1,                     # i2 carted, bought only after T; i1 bought
        "open_carts_top_category_h1": 0,     # the last hour's views are all in c3, the cart in c2
        "cart_per_view": 2 / 5, "buy_per_cart": 1 / 3,
        "n_sessions": 3, "events_per_session": 8 / 3,
        "share_hours_00_06": 0, "share_hours_06_12": 6 / 8, "share_hours_12_18": 2 / 8,
        "share_hours_18_24": 0,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-6), name


def test_open_carts_in_the_most_viewed_category(store):
    add_events(store, "m", [
        ("g", "a1", "c1", "cart", ago(hours=5)),
        ("g", "b1", "c2", "cart", ago(hours=4)),
        ("g", "b2", "c2", "cart", ago(hours=3)),
        ("g", "b2", "c2", "buy", ago(hours=2)),                     # closed: not counted
        ("g", "a2", "c1", "view", ago(hours=2)),                    # before the last hour
        ("g", "a3", "c1", "view", ago(hours=2)),
        ("g", "a4", "c1", "view", ago(hours=2)),
        ("g", "b3", "c2", "view", ago(minutes=40)),
        ("g", "b4", "c2", "view", ago(minutes=30)),
        ("g", "a5", "c1", "view", ago(minutes=10)),
        ("t", "a1", "c1", "cart", ago(hours=3)),
        ("t", "a1", "c1", "view", ago(minutes=50)),
        ("t", "b1", "c2", "view", ago(minutes=20)),                 # a tie: the later view wins
        ("n", "a1", "c1", "cart", ago(hours=3)),                    # no view in the last hour
    ])
    got = build_features(store, "m", rows("g", "t", "n"), H1)
    assert got["open_carts_top_category_h1"].tolist() == [1, 0, 0]
    assert got["open_carts"].tolist() == [2, 1, 1]
    # over the last 4 hours, c1 leads with four views and holds one open cart
    assert build_features(store, "m", rows("g"), LabelSpec(horizon="4h"))["open_carts_top_category_h1"].iloc[0] == 1


def test_sessions_follow_session_id_when_present(hand):
    got = build_features(hand, "h", rows("s"), H1).iloc[0]
    assert got["n_sessions"] == 3 and got["events_per_session"] == pytest.approx(4 / 3)


def test_columns_dtype_and_alignment_with_examples(hand):
    examples = rows("s", "f", "s", "nobody")
    examples.index = [10, 7, 3, 99]
    frame = build_features(hand, "h", examples, H1)
    assert list(frame.columns) == FEATURE_NAMES == feature_names(H1)
    assert list(frame.index) == [10, 7, 3, 99]
    assert (frame.dtypes == np.float32).all()
    assert frame.loc[10].equals(frame.loc[3])
    assert frame.loc[7, "n_events_all"] == 8 and frame.loc[10, "n_events_all"] == 4
    assert frame.loc[99, "n_events_all"] == 0          # a row without history: zeros, "never"
    assert frame.loc[99, "log_secs_since_view"] == pytest.approx(math.log1p(NEVER_SECONDS))
    with pytest.raises(DataError, match="lack column"):
        build_features(hand, "h", examples[["user_id"]], H1)


def test_category_features_are_restricted_to_the_candidate(hand):
    spec = LabelSpec(horizon="1h", scope="category")
    frame = build_features(hand, "h", rows("f", "f", category=["c1", "c2"]), spec)
    assert list(frame.columns) == FEATURE_NAMES + CATEGORY_FEATURE_NAMES
    c1, c2 = frame.iloc[0], frame.iloc[1]
    assert (c1["n_cat_view_all"], c1["n_cat_cart_all"], c1["n_cat_fav_all"], c1["n_cat_buy_all"]) \
        == (2, 1, 1, 1)
    assert (c2["n_cat_view_all"], c2["n_cat_cart_all"], c2["n_cat_buy_all"]) == (1, 1, 0)
    assert c1["cat_share"] == pytest.approx(5 / 8) and c2["cat_share"] == pytest.approx(2 / 8)
    assert (c1["cat_open_carts"], c2["cat_open_carts"]) == (0, 1)
    assert c2["log_secs_since_cat_touch"] == pytest.approx(math.log1p(1800))
    assert c2["log_secs_since_cat_buy"] == pytest.approx(math.log1p(NEVER_SECONDS))
    assert c1["n_cat_view_h1"] == 0 and c1["n_cat_view_h4"] == 1
    # the user-level columns do not depend on the candidate
    assert (frame.iloc[0][FEATURE_NAMES] == frame.iloc[1][FEATURE_NAMES]).all()


def test_lookback_limits_the_history(hand):
    got = build_features(hand, "h", rows("f"), LabelSpec(horizon="1h", lookback="1h")).iloc[0]
    assert got["n_events_all"] == 4 and got["n_sessions"] == 1


def top_category_carts(store, examples: pd.DataFrame, spec: LabelSpec) -> list[int]:
    """open_carts_top_category_h1 per example row, counted by pandas from the events table."""
    events = store.df("SELECT user_id, item_id, category, behavior, ts FROM events WHERE dataset = 'r'")
    by_user = dict(tuple(events.groupby("user_id")))
    horizon = spec.horizon_td
    out = []
    for user, cutoff in zip(examples["user_id"], examples["cutoff"], strict=True):
        seen = by_user[user][by_user[user].ts <= cutoff]
        views = seen[(seen.behavior == "view") & (seen.ts >= cutoff - horizon)]
        if views.empty:
            out.append(0)
            continue
        per_category = views.groupby("category").ts.agg(["size", "max"]).reset_index()
        top = max(per_category.itertuples(), key=lambda r: (r.size, r.max, r.category)).category
        last_cart = seen[seen.behavior == "cart"].groupby("item_id").ts.max()
        last_close = seen[seen.behavior.isin(["buy", "remove_from_cart"])].groupby("item_id").ts.max()
        category = seen.groupby("item_id").category.first()
        out.append(sum(category[item] == top for item, ts in last_cart.items()
                       if item not in last_close or last_close[item] < ts))
    return out


@pytest.mark.parametrize("scope", ["any", "category"])
def test_no_leakage_and_chunking(store, scope):
    add_random_events(store, "r", users=70)
    spec = LabelSpec(horizon="1d", scope=scope)
    plan = plan_cutoffs(store, "r", spec)
    examples = build_examples(store, "r", spec, plan)
    before = build_features(store, "r", examples, spec)
    events = store.df("SELECT user_id, ts FROM events WHERE dataset = 'r'")

    def history(frame: pd.DataFrame) -> list[int]:
        """Events at or before each row's cutoff, counted by pandas from the table."""
        joined = examples[["user_id", "cutoff"]].reset_index().merge(frame, on="user_id")
        return (joined[joined.ts <= joined.cutoff].groupby("index").size()
                .reindex(examples.index, fill_value=0).tolist())

    assert before["n_events_all"].tolist() == history(events)
    if scope == "any":   # the user-level columns do not depend on the scope
        assert before["open_carts_top_category_h1"].tolist() == top_category_carts(store, examples, spec)
        assert before["open_carts_top_category_h1"].sum() > 5
    chunked = build_features(store, "r", examples, spec, chunk_users=6)
    assert np.array_equal(before.to_numpy(), chunked.to_numpy())
    # append events one second and more after the first cutoff: rows at that cutoff must not
    # move; rows at later cutoffs see them (which shows the appended events are really read)
    first = min(plan.train_cutoffs)
    future = []
    for user in examples["user_id"].unique()[:30]:
        future += [(user, "it1", "cat1", "cart", first + timedelta(seconds=1), None, "zz"),
                   (user, "it1", "cat1", "buy", first + timedelta(minutes=5), None, "zz"),
                   (user, "it3", "cat3", "remove_from_cart", first + timedelta(hours=3))]
    add_events(store, "r", future)
    after = build_features(store, "r", examples, spec, chunk_users=6)
    at_first = (examples["cutoff"] == first).to_numpy()
    assert at_first.sum() > 10
    assert np.array_equal(before.to_numpy()[at_first], after.to_numpy()[at_first])
    # later rows of the 30 users see exactly their three new events; everyone else is unchanged
    touched = examples["user_id"].isin(examples["user_id"].unique()[:30]).to_numpy() & ~at_first
    assert touched.sum() > 10
    grown = after["n_events_all"].to_numpy() - before["n_events_all"].to_numpy()
    assert (grown[touched] == 3).all() and (grown[~touched] == 0).all()
    assert after["n_events_all"].tolist() == history(store.df("SELECT user_id, ts FROM events WHERE dataset = 'r'"))
    untouched = ~touched
    assert np.array_equal(before.to_numpy()[untouched], after.to_numpy()[untouched])


def test_scoring_rows_get_features(store):
    add_random_events(store, "r", users=12)
    cutoff = store.fetchone("SELECT max(ts) FROM events")[0]
    examples = scoring_examples(store, "r", H1, cutoff)
    frame = build_features(store, "r", examples, H1)
    assert len(frame) == len(examples) == 12
    total = store.fetchone("SELECT count(*) FROM events WHERE dataset = 'r'")[0]
    assert frame["n_events_all"].sum() == total
