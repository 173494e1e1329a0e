"""Overview queries on hand-made rows (exact expectations) and on a real shipped sample."""
from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
import pytest

from core.data import overview
from core.data.ingest import ingest_file
from core.errors import NotFoundError

# (user, item, category, behavior, ts UTC)
ROWS = [
    ("u1", "i1", "c1", "view", "2017-11-25 00:30:00"),   # 08:30 at UTC+8
    ("u1", "i2", "c1", "view", "2017-11-25 01:00:00"),
    ("u1", "i1", "c1", "cart", "2017-11-25 02:00:00"),
    ("u1", "i1", "c1", "buy", "2017-11-26 03:00:00"),
    ("u2", "i3", "c2", "view", "2017-11-25 16:30:00"),   # 00:30 on Nov 26 at UTC+8
    ("u2", "i3", "c2", "fav", "2017-11-25 16:40:00"),
    ("u3", "i4", None, "view", "2017-11-25 17:00:00"),
    ("u3", "i5", "c2", "view", "2017-11-25 17:05:00"),
    ("u3", "i6", "c2", "view", "2017-11-25 17:10:00"),
    ("u3", "i7", "c2", "view", "2017-11-25 17:15:00"),
]


def add_dataset(store, name, rows, *, source_tz="+08:00", quarantine=()):
    with store.write(name, "test dataset") as w:
        for user, item, cat, behavior, ts in rows:
            w.add("events", "SELECT ?, ?, ?, ?, ?, ?", [name, user, item, cat, behavior, ts],
                  columns=("dataset", "user_id", "item_id", "category", "behavior", "ts"))
        for line, reason, raw in quarantine:
            w.add("quarantine", "SELECT ?, ?, ?, ?", [name, line, reason, raw])
        w.add("datasets", "SELECT ?, 'taobao', count(*), count(DISTINCT user_id), min(ts), max(ts), ?, now() "
              "FROM events WHERE dataset = ?", [name, source_tz, name],
              columns=("name", "layout", "rows_stored", "n_users", "ts_min", "ts_max", "source_tz", "ingested_at"))


@pytest.fixture
def filled(store):
    add_dataset(store, "d", ROWS, quarantine=[
        (3, "bad timestamp", "1,2,3,pv,abc"), (7, "bad timestamp", "x" * 2000),
        (9, "unknown behaviour", "1,2,3,jump,1511544070")])
    add_dataset(store, "other", [("z", "i9", "c9", "buy", "2017-11-25 05:00:00")], source_tz="UTC")
    return store


@pytest.mark.parametrize("text,seconds,label", [
    (None, 0, "UTC"), ("UTC", 0, "UTC"), ("+08:00", 28800, "UTC+08:00"), ("UTC+8", 28800, "UTC+08:00"),
    ("GMT-0530", -19800, "UTC-05:30"), ("Asia/Shanghai", 28800, "UTC+08:00"),
])
def test_parse_offset(text, seconds, label):
    off = overview.parse_offset(text, datetime(2017, 11, 25))
    assert (off.seconds, off.label) == (seconds, label)


def test_parse_offset_unknown_zone_falls_back_to_utc_and_says_so():
    off = overview.parse_offset("Mars/Olympus")
    assert off.seconds == 0 and "unknown zone" in off.label


def test_events_per_day_uses_source_time(filled):
    frame = overview.events_per_day(filled, "d")
    got = {(str(r.day.date()), r.behavior): r.events for r in frame.itertuples()}
    # u2's and u3's evening events (UTC) fall on Nov 26 in UTC+8; other datasets are not counted.
    assert got == {("2017-11-25", "view"): 2, ("2017-11-25", "cart"): 1,
                   ("2017-11-26", "view"): 5, ("2017-11-26", "fav"): 1,
                   ("2017-11-26", "buy"): 1}
    assert set(frame["bucket"]) == {"day"}


def test_events_per_day_switches_to_coarser_buckets(store):
    rows = [("u", "i", "c", "view", f"{2000 + y}-0{m}-15 12:00:00") for y in range(3) for m in range(1, 10)]
    add_dataset(store, "long", rows, source_tz="UTC")
    frame = overview.events_per_day(store, "long")
    assert set(frame["bucket"]) == {"week"}
    assert frame["events"].sum() == len(rows)


def test_hour_of_day_complete_grid_and_shares(filled):
    frame = overview.hour_of_day(filled, "d")
    assert len(frame) == 24 * 4                       # view, cart, fav, buy x 24 hours
    shares = frame.groupby("behavior")["share"].sum()
    assert shares.round(9).eq(1.0).all()
    views = frame[frame["behavior"] == "view"].set_index("hour")["events"]
    assert views[8] == 1 and views[9] == 1 and views[0] == 1 and views[1] == 4


def test_funnel_counts_users_per_stage(filled):
    frame = overview.funnel(filled, "d")
    assert frame["stage"].tolist() == ["view", "cart", "fav", "buy"]
    assert frame["users"].tolist() == [3, 1, 1, 1]
    assert frame["share_of_users"].tolist() == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3])
    assert math.isnan(frame["step_conversion"][0])
    assert frame["step_conversion"][1] == pytest.approx(1 / 3)


def test_funnel_of_unknown_dataset_is_zero(store):
    frame = overview.funnel(store, "nope")
    assert frame["users"].tolist() == [0, 0, 0, 0]


def test_top_categories_rank_and_missing(filled):
    frame = overview.top_categories(filled, "d", limit=2)
    assert frame.drop_duplicates("category")["category"].tolist() == ["c2", "c1"]
    assert frame.groupby("category")["events"].sum().to_dict() == {"c1": 4, "c2": 5}
    all_cats = overview.top_categories(filled, "d", limit=10)
    assert "(missing)" in set(all_cats["category"])
    capped = overview.top_categories(filled, "d", limit=10_000)   # capped, not an error
    assert capped["rank"].max() == 3


def test_events_per_user_buckets(filled):
    frame = overview.events_per_user(filled, "d")
    assert frame["bucket"].tolist() == ["2–3", "4–7"]
    assert frame["users"].tolist() == [1, 2]        # u2: 2 events; u1: 4, u3: 5
    assert frame["events"].sum() == len(ROWS)


def test_quarantine_queries(filled):
    reasons = overview.quarantine_reasons(filled, "d")
    assert reasons.to_dict("records")[0] == {"reason": "bad timestamp", "rows": 2, "first_line": 3}
    rows = overview.quarantine_rows(filled, "d", reason="bad timestamp")
    assert rows["line"].tolist() == [3, 7]
    assert rows["raw"].str.len().max() == overview.RAW_TEXT_CHARS
    assert len(overview.quarantine_rows(filled, "d", limit=1)) == 1
    assert overview.quarantine_reasons(filled, "other").empty


def test_preview_rows_order_limit_and_columns(filled):
    frame = overview.preview_rows(filled, "d", limit=3)
    # the three earliest rows of "d", oldest first; the optional columns this source never fills
    # (session, price, brand, query) are left out
    assert list(frame.columns) == ["user_id", "item_id", "category", "behavior", "ts"]
    assert frame.assign(ts=frame["ts"].astype(str)).values.tolist() == [list(r) for r in ROWS[:3]]
    assert len(overview.preview_rows(filled, "d", limit=100)) == len(ROWS)


def test_behavior_counts_and_datasets_table(filled):
    counts = overview.behavior_counts(filled, "d")
    assert counts["behavior"].tolist() == ["view", "cart", "fav", "buy"]
    assert counts["share"].sum() == pytest.approx(1.0)
    table = overview.datasets_table(filled)
    assert table["name"].tolist() == ["d", "other"]
    assert table.set_index("name").loc["d", "rows_stored"] == len(ROWS)


def test_sql_text_in_dataset_name_is_just_a_value(filled):
    evil = "d' OR '1'='1"
    assert overview.events_per_user(filled, evil).empty
    with pytest.raises(NotFoundError):
        overview.events_per_day(filled, evil)


def test_real_sample_overview(store, samples):
    """Every query on a shipped Taobao sample against the same numbers counted by pandas from the file."""
    path = samples / "taobao" / "UserBehavior_head.csv"
    raw = pd.read_csv(path, header=None, names=["user_id", "item_id", "category", "behavior", "ts"],
                      dtype={"category": str})
    raw["behavior"] = raw["behavior"].replace({"pv": "view"})
    local = pd.to_datetime(raw["ts"], unit="s") + pd.Timedelta(hours=8)     # Taobao's source time
    report = ingest_file(store, path, dataset="head")
    assert report.rows_stored == len(raw) == 4321
    funnel = overview.funnel(store, "head").set_index("stage")["users"]
    assert funnel.to_dict() == {stage: raw.loc[raw.behavior == stage, "user_id"].nunique()
                                for stage in ("view", "cart", "fav", "buy")}
    per_user = overview.events_per_user(store, "head")
    assert per_user["users"].sum() == raw["user_id"].nunique() == 43
    assert per_user["events"].sum() == len(raw)
    per_day = overview.events_per_day(store, "head")
    got = per_day.groupby(per_day["day"].dt.date)["events"].sum().to_dict()
    assert got == local.dt.date.value_counts().to_dict()
    hours = overview.hour_of_day(store, "head")
    views = hours[hours["behavior"] == "view"].set_index("hour")["events"]
    expected = local[raw.behavior == "view"].dt.hour.value_counts().reindex(range(24), fill_value=0)
    assert views.sort_index().tolist() == expected.tolist()
    # Taobao is recorded in UTC+8: the quiet hours of the night fall around 02:00-06:00 local.
    assert views.loc[2:6].sum() < views.loc[18:22].sum()
    top = overview.top_categories(store, "head", limit=5)
    totals = raw.groupby("category").size().reset_index(name="total")
    best = totals.sort_values(["total", "category"], ascending=[False, True]).head(5)
    assert top.drop_duplicates("category")[["category", "total"]].values.tolist() == best.values.tolist()
    assert top["rank"].drop_duplicates().tolist() == [1, 2, 3, 4, 5]
    first = best["category"].iloc[0]
    assert top[top.category == first].set_index("behavior")["events"].to_dict() == \
        raw[raw.category == first]["behavior"].value_counts().to_dict()
