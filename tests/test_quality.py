"""Quality report on real samples: statuses follow what is known about each file."""
from __future__ import annotations

import pytest

from core.data.ingest import ingest_file
from core.data.quality import COLUMNS, quality_report
from core.errors import NotFoundError


def _status(report, check):
    row = report.checks.set_index("check").loc[check]
    return row["status"], row["value"], row["reason"]


def test_taobao_head_report(store, samples):
    ingest_file(store, samples / "taobao/UserBehavior_head.csv", dataset="th")
    rep = quality_report(store, "th")
    assert list(rep.checks.columns) == COLUMNS
    assert set(rep.checks["group"]) == {"completeness", "consistency", "accuracy"}
    assert set(rep.checks["status"]) <= {"pass", "warn", "fail"}
    # the one stray 2017-09-11 timestamp (PROVENANCE.md) is flagged
    status, value, reason = _status(rep, "timestamps outside the main window")
    assert (status, value) == ("warn", 1.0) and "clock errors" in reason
    assert _status(rep, "quarantined rows")[:2] == ("pass", 0.0)
    assert _status(rep, "duplicate rows")[0] == "pass"
    assert _status(rep, "missing price")[2] == "price is not provided by this source (optional)."
    assert _status(rep, "users with one event")[:2] == ("pass", 0.0)
    assert rep.status == "warn"
    text = rep.summary()
    assert text.splitlines()[0] == "Data quality of 'th': warn" and "[warn] timestamps outside" in text
    assert rep.to_dict()["checks"][0]["check"] == "missing item_id"


def test_tianchi_duplicates_and_short_slice(store, samples):
    ingest_file(store, samples / "tianchi_mobile/train_user_sample.csv", dataset="tm")
    status, value, reason = _status(quality_report(store, "tm"), "duplicate rows")
    assert status == "warn" and value == pytest.approx(104 / 1999)
    assert reason == ("104 exact duplicate rows (5.20% of rows read) were dropped at ingest; policy drop, "
                      "auto: timestamps are finer than a day, so an identical line is a repeated record.")
    ingest_file(store, samples / "taobao/UserBehavior_slice_2h.csv", dataset="t2")
    rep = quality_report(store, "t2")
    assert _status(rep, "time range")[0] == "warn"          # 2 hours
    assert _status(rep, "buys without an earlier view")[0] == "fail"   # views before 09:00 cut off
    assert _status(rep, "users with one event")[0] == "warn"


def test_rees46_prices_and_diginetica_without_buys(store, samples):
    ingest_file(store, samples / "rees46/2019-Oct_head2000.csv", dataset="r")
    rep = quality_report(store, "r")
    assert _status(rep, "non-positive prices")[:2] == ("pass", 0.0)
    assert _status(rep, "unknown categories")[0] == "pass"
    ingest_file(store, samples / "diginetica/train-item-views_sample.csv", dataset="dg",
                layout="generic", column_map={"user_id": "session_id", "item_id": "item_id",
                                              "ts": "eventdate"}, behavior_map={"*": "view"})
    rep = quality_report(store, "dg")
    assert _status(rep, "buys without an earlier view")[0] == "warn"
    assert _status(rep, "unknown categories")[:2] == ("fail", 1.0)
    assert rep.status == "fail"


def test_quarantine_share_and_non_positive_price(store, tmp_path):
    path = tmp_path / "r.csv"
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
    rows = [f"2019-10-0{1 + i % 3} 0{i % 9}:00:00 UTC,view,{i},7,,b,{0 if i < 5 else 9.5},{i % 4},s"
            for i in range(40)] + ["2019-10-01 00:00:00 UTC,teleport,1,7,,b,1,1,s"] * 3
    path.write_text("\n".join([header, *rows]) + "\n")
    ingest_file(store, path, dataset="q")
    rep = quality_report(store, "q")
    assert _status(rep, "quarantined rows")[:2] == ("fail", pytest.approx(3 / 43))
    assert _status(rep, "non-positive prices")[:2] == ("warn", pytest.approx(5 / 40))


def test_unknown_dataset(store):
    with pytest.raises(NotFoundError):
        quality_report(store, "nope")


def test_user_count_comes_from_the_record_or_the_events(store, samples):
    ingest_file(store, samples / "taobao/UserBehavior_head.csv", dataset="th")
    from_record = _status(quality_report(store, "th"), "users with one event")[2]
    assert "of 43 users" in from_record
    # A dataset record written by something other than ingest may lack the count.
    with store.write("th", "test: no user count") as w:
        w.replace("datasets", "SELECT * REPLACE (NULL AS n_users) FROM datasets WHERE name = ?", ["th"])
    assert _status(quality_report(store, "th"), "users with one event")[2] == from_record


def _day_log(path, repeats):
    """Ten distinct view events on two days (dates only) plus ``repeats`` copies of the first."""
    rows = [f"u{i % 3},i{i},view,2016-05-0{1 + i % 2}" for i in range(10)] + ["u0,i0,view,2016-05-01"] * repeats
    path.write_text("user,item,action,day\n" + "\n".join(rows) + "\n")
    return {"layout": "generic", "column_map": {"user_id": "user", "item_id": "item", "behavior": "action",
                                                "ts": "day"}}


def test_repeats_kept_at_day_resolution_pass_and_say_why(store, tmp_path):
    kw = _day_log(tmp_path / "d.csv", repeats=10)
    ingest_file(store, tmp_path / "d.csv", dataset="d", **kw)
    status, value, reason = _status(quality_report(store, "d"), "duplicate rows")
    assert (status, value) == ("pass", pytest.approx(10 / 20))
    assert reason == ("10 rows identical to another (50.00% of rows read) were kept; policy keep, auto: day "
                      "resolution (every timestamp is at midnight (UTC)), so identical lines are legitimate "
                      "repeats (e.g. two clicks on one item in one day).")


def test_repeats_kept_on_request_at_finer_resolution_are_judged(store, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("user,item,action,t\n" + "\n".join([f"u{i},i{i},view,{1462060800 + 60 * i}" for i in range(8)]
                                                        + ["u0,i0,view,1462060800"] * 2) + "\n")
    ingest_file(store, path, dataset="s", duplicates="keep", layout="generic",
                column_map={"user_id": "user", "item_id": "item", "behavior": "action", "ts": "t"})
    status, value, reason = _status(quality_report(store, "s"), "duplicate rows")
    assert (status, value) == ("fail", pytest.approx(2 / 10))
    assert reason.startswith("2 rows identical to another (20.00% of rows read) were kept; policy keep, asked for "
                             "(--duplicates keep); timestamps finer than a day")
