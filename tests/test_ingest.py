"""Ingest of every layout on the real samples, replace/atomicity, samples catalogue and the CLI."""
from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.data.ingest import ingest_file, preview_file, validate_dataset_name
from core.errors import ConflictError, DataError

ROOT = Path(__file__).resolve().parents[1]
DIGINETICA_MAP = {"user_id": "session_id", "session_id": "session_id", "item_id": "item_id",
                  "ts": "eventdate", "ts_offset_ms": "timeframe"}


def _event(store, dataset, where, params):
    return store.fetchone(
        "SELECT user_id, item_id, category, CAST(behavior AS VARCHAR), ts, session_id, price, brand "
        f"FROM events WHERE dataset = ? AND {where} ORDER BY ts LIMIT 1", [dataset, *params])


def test_taobao_head_counts_behaviours_and_utc(store, samples):
    path = samples / "taobao/UserBehavior_head.csv"
    rep = ingest_file(store, path, dataset="th")
    assert (rep.layout, rep.rows_read, rep.rows_stored, rep.duplicates_dropped, rep.quarantined) == \
        ("taobao", 4321, 4321, 0, {})
    assert rep.source_tz == "UTC+08:00"
    with open(path, newline="") as fh:
        want = Counter({"pv": "view"}.get(r[3], r[3]) for r in csv.reader(fh))
    got = dict(store.fetchall("SELECT CAST(behavior AS VARCHAR), count(*) FROM events "
                              "WHERE dataset = 'th' GROUP BY ALL"))
    assert got == dict(want)
    # first line: 1,2268318,2520377,pv,1511544070 -> 2017-11-24 17:21:10 UTC (01:21:10 +08:00)
    row = _event(store, "th", "item_id = ? AND user_id = ?", ["2268318", "1"])
    assert row[:5] == ("1", "2268318", "2520377", "view", datetime(2017, 11, 24, 17, 21, 10))
    meta = store.dataset("th")
    assert meta["n_users"] == 43 and meta["rows_stored"] == 4321 and meta["source_tz"] == "UTC+08:00"
    assert meta["sha256"] == rep.sha256 and len(rep.sha256) == 64
    assert json.loads(meta["options"])["layout"] == "taobao"


@pytest.mark.parametrize("rel, stored", [("taobao/UserBehavior_tail.csv", 10000),
                                         ("taobao/UserBehavior_slice_2h.csv", 55068)])
def test_other_taobao_samples(store, samples, rel, stored):
    rep = ingest_file(store, samples / rel, dataset="t")
    assert rep.rows_read == rep.rows_stored == stored and rep.rows_quarantined == 0


def test_tianchi_duplicates_behaviour_codes_and_china_time(store, samples):
    rep = ingest_file(store, samples / "tianchi_mobile/train_user_sample.csv", dataset="tm")
    assert rep.layout == "tianchi_mobile"
    assert (rep.rows_read, rep.rows_stored, rep.duplicates_dropped) == (1999, 1895, 104)
    # 98047837,232431562,1,,4245,2014-12-06 02 (China time) -> 2014-12-05 18:00 UTC, a view
    row = _event(store, "tm", "user_id = ? AND item_id = ?", ["98047837", "232431562"])
    assert row[2:5] == ("4245", "view", datetime(2014, 12, 5, 18, 0))
    codes = dict(store.fetchall("SELECT CAST(behavior AS VARCHAR), count(*) FROM events "
                                "WHERE dataset = 'tm' GROUP BY ALL"))
    assert set(codes) <= {"view", "fav", "cart", "buy"} and codes["buy"] > 0


def test_rees46_category_price_brand_session(store, samples):
    rep = ingest_file(store, samples / "rees46/2019-Oct_head2000.csv", dataset="r")
    assert (rep.layout, rep.rows_stored, rep.source_tz) == ("rees46", 2000, "UTC")
    # no category_code: the category_id is used
    row = _event(store, "r", "item_id = ? AND user_id = ?", ["44600062", "541312140"])
    assert row[2:] == ("2103807459595387724", "view", datetime(2019, 10, 1),
                       "72d76fde-8bb3-4e00-8c23-a032dfed738c", 35.79, "shiseido")
    row = _event(store, "r", "item_id = ? AND user_id = ?", ["3900821", "554748717"])
    assert row[2] == "appliances.environment.water_heater"
    with open(samples / "rees46/2019-Oct_head2000.csv", newline="") as fh:
        purchases = sum(r["event_type"] == "purchase" for r in csv.DictReader(fh))
    assert store.fetchone("SELECT count(*) FROM events WHERE dataset = 'r' AND behavior = 'buy'")[0] \
        == purchases > 0


def test_retailrocket_milliseconds(store, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("timestamp,visitorid,event,itemid,transactionid\n"
                    "1433221332117,257597,view,355908,\n"
                    "1433224214164,992329,addtocart,248676,\n"
                    "1433221999827,111016,transaction,171878,4000\n")
    rep = ingest_file(store, path, dataset="rr")
    assert rep.layout == "retailrocket" and rep.rows_stored == 3
    got = store.fetchall("SELECT user_id, CAST(behavior AS VARCHAR), ts FROM events ORDER BY ts")
    assert got[0] == ("257597", "view", datetime(2015, 6, 2, 5, 2, 12, 117000))
    assert {g[1] for g in got} == {"view", "cart", "buy"}


def test_generic_diginetica_with_constant_behaviour(store, samples):
    rep = ingest_file(store, samples / "diginetica/train-item-views_sample.csv", dataset="dg",
                      layout="generic", column_map=DIGINETICA_MAP, behavior_map={"*": "view"})
    assert (rep.layout, rep.rows_read, rep.rows_stored) == ("generic", 12391, 12391)
    # 1;NA;81766;526309;2016-05-09 -> 2016-05-09 00:08:46.309, session 1 is the user
    row = _event(store, "dg", "item_id = ? AND session_id = ?", ["81766", "1"])
    assert row[0] == "1" and row[3:5] == ("view", datetime(2016, 5, 9, 0, 8, 46, 309000))


def test_generic_parquet_with_search_events(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({
        "visitor": ["a", "a", "b", "b"],
        "sku": [None, "i1", "i2", "i2"],
        "action": ["query", "click", "order", "teleport"],
        "text": ["red shoes", None, None, None],
        "at": pa.array([datetime(2020, 1, 1, 10), datetime(2020, 1, 1, 10, 1),
                        datetime(2020, 1, 2), datetime(2020, 1, 3)], type=pa.timestamp("ms")),
    }), path)
    rep = ingest_file(store, path, dataset="pq", layout="generic",
                      column_map={"user_id": "visitor", "item_id": "sku", "behavior": "action",
                                  "ts": "at", "query": "text"},
                      behavior_map={"query": "search"})
    assert rep.rows_stored == 3 and rep.quarantined == {"unknown behavior": 1}
    assert store.fetchone("SELECT query, item_id FROM events WHERE behavior = 'search'") == \
        ("red shoes", None)
    assert store.fetchone("SELECT line, raw FROM quarantine")[0] == 4


def test_existing_name_refused_then_replaced(store, samples):
    path = samples / "taobao/UserBehavior_head.csv"
    ingest_file(store, path, dataset="d")
    before = store.fingerprint()
    with pytest.raises(ConflictError, match=r"exists already.*--replace"):
        ingest_file(store, path, dataset="d")
    assert store.fingerprint() == before
    rep = ingest_file(store, samples / "taobao/UserBehavior_tail.csv", dataset="d", replace=True)
    assert rep.rows_stored == 10000
    assert store.fetchone("SELECT count(*) FROM events WHERE dataset = 'd'")[0] == 10000


@pytest.mark.parametrize("stop_at", [1, 2, 3, 4])
def test_interrupt_midway_leaves_database_unchanged(store, samples, stop_at):
    ingest_file(store, samples / "taobao/UserBehavior_head.csv", dataset="keep")
    before = store.fingerprint()

    def progress(done, total, message):
        if done >= stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_file(store, samples / "taobao/UserBehavior_tail.csv", dataset="keep", replace=True,
                    progress=progress)
    assert store.fingerprint() == before
    assert store.dataset("keep")["rows_stored"] == 4321


def test_progress_reports_the_four_steps(store, samples):
    seen = []
    ingest_file(store, samples / "taobao/UserBehavior_head.csv", progress=lambda d, t, m: seen.append((d, t, m)))
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4] and all(s[1] == 4 for s in seen)
    assert "reading" in seen[0][2] and "duplicates" in seen[2][2]


def test_default_name_and_source_name(store, samples, tmp_path):
    tmp = tmp_path / "upload-1234.tmp"
    tmp.write_bytes((samples / "taobao/UserBehavior_head.csv").read_bytes())
    rep = ingest_file(store, tmp, source_name="my log.csv.gz")
    assert rep.dataset == "my log" and store.dataset("my log")["source_file"] == "my log.csv.gz"


@pytest.mark.parametrize("name, ok", [("x'); DROP TABLE events; --", True), ("a" * 64, True),
                                      ("a" * 65, False), ("a/b", False), ("tab\there", False),
                                      ("  ", False)])
def test_dataset_names(store, samples, name, ok):
    before = store.fingerprint()
    path = samples / "taobao/UserBehavior_head.csv"
    if ok:
        rep = ingest_file(store, path, dataset=name)
        assert store.dataset_names() == [name] and rep.dataset == name
        assert store.fetchone("SELECT count(*) FROM events WHERE dataset = ?", [name])[0] == 4321
    else:
        with pytest.raises(DataError, match="Invalid dataset name"):
            ingest_file(store, path, dataset=name)
        assert store.fingerprint() == before


def test_validate_dataset_name_strips():
    assert validate_dataset_name("  demo ") == "demo"


def test_ensure_default_data_loads_missing_samples_once(store, samples):
    from core.runtime.samples import SAMPLES, ensure_default_data

    present = {s.name for s in SAMPLES if s.file().is_file()}
    loaded = ensure_default_data(store)
    assert set(loaded) == present and {"taobao_head", "tianchi_mobile", "diginetica"} <= present
    assert set(store.dataset_names()) == present
    assert ensure_default_data(store) == []


# -- CLI ----------------------------------------------------------------------------------
def _cli(*args, db):
    env = {**os.environ, "INTENTLENS_DB": str(db)}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_ingest_datasets_quality(tmp_path, samples):
    db = tmp_path / "cli.duckdb"
    out = _cli("ingest", str(samples / "tianchi_mobile/train_user_sample.csv"), "--dataset", "tm", db=db)
    assert out.returncode == 0, out.stderr
    assert re.search(r"rows stored +1,895", out.stdout) and re.search(r"duplicates dropped +104", out.stdout)
    out = _cli("ingest", str(samples / "diginetica/train-item-views_sample.csv"), "--dataset", "dg",
               "--format", "generic", "--map", "user_id=session_id", "--map", "item_id=item_id",
               "--map", "ts=eventdate", "--behavior-map", "*=view", db=db)
    assert out.returncode == 0, out.stderr
    out = _cli("datasets", "--json", db=db)
    assert out.returncode == 0
    assert {d["name"]: d["rows_stored"] for d in json.loads(out.stdout)} == {"tm": 1895, "dg": 12391}
    out = _cli("quality", "--dataset", "tm", "--json", db=db)
    assert out.returncode == 0 and json.loads(out.stdout)["dataset"] == "tm"


def test_cli_bad_file_exits_2_with_message(tmp_path, samples):
    db = tmp_path / "cli.duckdb"
    out = _cli("ingest", str(samples / "diginetica/train-item-views_sample.csv"), db=db)
    assert out.returncode == 2
    assert "expected one of: taobao" in out.stderr and "--format generic --map" in out.stderr
    assert "Traceback" not in out.stderr
    bad = tmp_path / "empty.csv"
    bad.write_bytes(b"")
    out = _cli("ingest", str(bad), db=db)
    assert out.returncode == 2 and "empty.csv is empty" in out.stderr


# -- timestamps as people have them, and the duplicate policy --------------------------------
SHANGHAI = ZoneInfo("Asia/Shanghai")
TMALL_MAP = {"user_id": "user_id", "item_id": "brand_id", "behavior": "type", "ts": "visit_datetime"}
TMALL_BEHAVIORS = {"0": "view", "1": "buy", "2": "fav", "3": "cart"}
TMALL_OPTIONS = {"layout": "generic", "column_map": TMALL_MAP, "behavior_map": TMALL_BEHAVIORS,
                 "ts_format": "%m-%d", "year": 2015, "tz": "Asia/Shanghai"}


def _tmall_log(path, rows=3000, seed=5):
    """A Tmall-style log (dates like 6-4, no year, China time) where about half the lines repeat
    an earlier line exactly; returns the rows as (user, brand, behaviour, UTC time) tuples."""
    rng = random.Random(seed)
    lines, truth = [], []
    for _ in range(rows):
        if lines and rng.random() < 0.5:
            k = rng.randrange(len(lines))
            lines.append(lines[k])
            truth.append(truth[k])
            continue
        user, brand, kind = rng.randrange(1, 80), rng.randrange(1, 40), rng.choice("0000000123")
        month, day = rng.randrange(4, 9), rng.randrange(1, 29)
        lines.append(f"{user},{brand},{kind},{month}-{day}")
        utc = datetime(2015, month, day, tzinfo=SHANGHAI).astimezone(UTC).replace(tzinfo=None)
        truth.append((str(user), str(brand), TMALL_BEHAVIORS[kind], utc))
    path.write_text("user_id,brand_id,type,visit_datetime\n" + "\n".join(lines) + "\n")
    return truth


def _stored(store, dataset):
    return Counter(store.fetchall("SELECT user_id, item_id, CAST(behavior AS VARCHAR), ts FROM events "
                                  "WHERE dataset = ?", [dataset]))


def test_tmall_month_day_dates_with_year_and_zone_keep_every_row(store, tmp_path):
    truth = _tmall_log(tmp_path / "tmall.csv")
    identical = len(truth) - len(set(truth))
    assert identical > 1000                                  # the planted repeats

    rep = ingest_file(store, tmp_path / "tmall.csv", dataset="tm", **TMALL_OPTIONS)

    assert (rep.rows_read, rep.rows_stored, rep.rows_quarantined) == (3000, 3000, 0)
    assert (rep.duplicates, rep.duplicates_kept, rep.duplicates_dropped) == ("keep", identical, 0)
    assert rep.duplicates_reason.startswith("auto: day resolution (the timestamp format '%m-%d' has no time "
                                            "of day), so identical lines are legitimate repeats")
    assert _stored(store, "tm") == Counter(truth)
    # 6-4 in China time is 2015-06-03 16:00 UTC
    assert store.fetchone("SELECT min(ts) FROM events WHERE ts >= '2015-06-03' AND ts < '2015-06-04 12:00'")[0] \
        == datetime(2015, 6, 3, 16, 0)
    assert rep.source_tz == "Asia/Shanghai"
    meta = store.dataset("tm")
    assert (meta["source_tz"], meta["rows_stored"], meta["duplicates_dropped"]) == ("Asia/Shanghai", 3000, 0)
    options = json.loads(meta["options"])
    assert (options["ts_format"], options["year"]) == ("%m-%d", 2015)
    assert options["duplicates"] == {"policy": "keep", "asked": None, "day_resolution": True,
                                     "identical_rows": identical, "reason": rep.duplicates_reason}
    text = rep.summary()
    assert re.search(rf"identical rows kept +{identical:,}", text)
    assert "  duplicates         keep (auto: day resolution" in text
    d = rep.to_dict()
    assert (d["duplicates"], d["duplicates_kept"], d["duplicates_reason"]) == ("keep", identical,
                                                                             rep.duplicates_reason)


def test_tmall_duplicates_drop_when_asked(store, tmp_path):
    truth = _tmall_log(tmp_path / "tmall.csv")
    rep = ingest_file(store, tmp_path / "tmall.csv", dataset="tm", duplicates="drop", **TMALL_OPTIONS)
    assert (rep.rows_stored, rep.duplicates_dropped) == (len(set(truth)), len(truth) - len(set(truth)))
    assert rep.duplicates == "drop" and rep.duplicates_kept == 0
    assert rep.duplicates_reason == ("asked for (--duplicates drop); day resolution: the timestamp format "
                                     "'%m-%d' has no time of day")
    assert _stored(store, "tm") == Counter(set(truth))


def test_tmall_dates_without_options_are_refused_with_a_hint(store, tmp_path):
    _tmall_log(tmp_path / "tmall.csv", rows=50)
    before = store.fingerprint()
    with pytest.raises(DataError) as err:
        ingest_file(store, tmp_path / "tmall.csv", layout="generic", column_map=TMALL_MAP,
                    behavior_map=TMALL_BEHAVIORS)
    assert err.value.title == "No valid events" and "(unparsable timestamp: 50)" in err.value.message
    assert "--ts-format (e.g." in err.value.hint and "--year" in err.value.hint
    assert store.fingerprint() == before


def _generic(path, rows, header="user,item,action,t"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return {"layout": "generic", "column_map": {"user_id": "user", "item_id": "item", "behavior": "action",
                                                "ts": "t"}}


def test_epoch_units_are_told_apart_by_size(store, tmp_path):
    # 2015-06-02 05:02:12.117 UTC in seconds (text with a fraction), ms, us and ns
    kw = _generic(tmp_path / "e.csv", ["a,1,view,1433221332.117", "b,1,view,1433221332117",
                                       "c,1,view,1433221332117000", "d,1,view,1433221332117000000",
                                       "e,1,view,1433221332"])
    rep = ingest_file(store, tmp_path / "e.csv", dataset="e", **kw)
    assert rep.rows_stored == 5 and rep.duplicates == "drop"
    got = dict(store.fetchall("SELECT user_id, ts FROM events"))
    want = datetime(2015, 6, 2, 5, 2, 12, 117000)
    assert got == {"a": want, "b": want, "c": want, "d": want, "e": want.replace(microsecond=0)}


@pytest.mark.parametrize("tz, first", [(None, datetime(2016, 5, 9)),
                                       ("Asia/Shanghai", datetime(2016, 5, 8, 16)),
                                       ("america/new_york", datetime(2016, 5, 9, 4))])
def test_dates_at_midnight_keep_repeats_by_default(store, tmp_path, tz, first):
    rows = ["a,1,view,2016-05-09", "a,1,view,2016-05-09", "b,2,buy,2016-05-10", "a,1,view,2016-05-09"]
    kw = _generic(tmp_path / "d.csv", rows)
    rep = ingest_file(store, tmp_path / "d.csv", dataset="d", tz=tz, **kw)
    zone = {"america/new_york": "America/New_York"}.get(tz, tz) or "UTC"
    assert (rep.rows_stored, rep.duplicates, rep.duplicates_kept, rep.source_tz) == (4, "keep", 2, zone)
    assert rep.duplicates_reason.startswith(f"auto: day resolution (every timestamp is at midnight ({zone}))")
    assert store.fetchone("SELECT min(ts) FROM events")[0] == first


def test_finer_timestamps_drop_repeats_by_default_and_keep_when_asked(store, tmp_path):
    rows = ["a,1,view,2016-05-09 10:00:00", "a,1,view,2016-05-09 10:00:00", "b,2,buy,2016-05-09"]
    kw = _generic(tmp_path / "s.csv", rows)
    rep = ingest_file(store, tmp_path / "s.csv", dataset="s", **kw)
    assert (rep.rows_stored, rep.duplicates_dropped, rep.duplicates) == (2, 1, "drop")
    assert rep.duplicates_reason == ("auto: timestamps are finer than a day, so an identical line is a "
                                     "repeated record")
    rep = ingest_file(store, tmp_path / "s.csv", dataset="s", replace=True, duplicates="keep", **kw)
    assert (rep.rows_stored, rep.duplicates_dropped, rep.duplicates_kept) == (3, 0, 1)
    assert rep.duplicates_reason == "asked for (--duplicates keep); timestamps finer than a day"
    assert store.dataset("s")["rows_stored"] == 3


def test_ts_format_reads_day_first_dates_with_time(store, tmp_path):
    kw = _generic(tmp_path / "f.csv", ["a,1,view,04/06/2015 23:30", "b,1,cart,31/12/2015 00:05",
                                       "c,1,view,2015-06-04 10:00"])
    rep = ingest_file(store, tmp_path / "f.csv", dataset="f", ts_format="%d/%m/%Y %H:%M", tz="Europe/Berlin",
                      **kw)
    assert rep.quarantined == {"unparsable timestamp": 1}
    assert dict(store.fetchall("SELECT user_id, ts FROM events")) == {
        "a": datetime(2015, 6, 4, 21, 30), "b": datetime(2015, 12, 30, 23, 5)}   # CEST +2, CET +1
    assert store.fetchone("SELECT line, raw FROM quarantine") == (4, "c,1,view,2015-06-04 10:00")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"tz": "Mars/Base"}, "--tz 'Mars/Base' is not a time zone name DuckDB knows."),
    ({"ts_format": "%Y-%m-%d", "year": 2015}, "--year 2015 was given but --ts-format '%Y-%m-%d' reads a year"),
    ({"ts_format": "%m-%d", "year": "20x5"}, "--year '20x5' is not a year."),
    ({"ts_format": "%m-%d", "year": 1970}, "--year 1970 is outside 2000.."),
    ({"ts_format": "day-month"}, "--ts-format 'day-month' has no strptime directive"),
    ({"ts_format": "%m-%d %Q", "year": 2015}, "--ts-format '%m-%d %Q' is not a strptime format DuckDB can read"),
    ({"duplicates": "some"}, "--duplicates 'some' is not a duplicate policy."),
])
def test_invalid_time_and_duplicate_options_name_the_option(store, tmp_path, kwargs, fragment):
    _tmall_log(tmp_path / "tmall.csv", rows=20)
    before = store.fingerprint()
    with pytest.raises(DataError) as err:
        ingest_file(store, tmp_path / "tmall.csv", layout="generic", column_map=TMALL_MAP,
                    behavior_map=TMALL_BEHAVIORS, **kwargs)
    assert fragment in err.value.message
    assert err.value.title == ("Invalid option" if "duplicates" in kwargs else "Invalid time option")
    assert store.fingerprint() == before


# -- preview ---------------------------------------------------------------------------------
def test_preview_parses_the_first_rows_without_storing(tmp_path, monkeypatch):
    db = tmp_path / "never.duckdb"
    monkeypatch.setenv("INTENTLENS_DB", str(db))
    truth = _tmall_log(tmp_path / "tmall.csv")
    frame = preview_file(tmp_path / "tmall.csv", rows=7, **TMALL_OPTIONS)
    assert list(frame.columns) == ["user_id", "item_id", "category", "behavior", "ts", "session_id", "price",
                                   "brand", "query", "ts_raw", "reason"]
    assert len(frame) == 7 and frame["reason"].isna().all()
    got = list(zip(frame["user_id"], frame["item_id"], frame["behavior"], frame["ts"].dt.to_pydatetime(),
                   strict=True))
    assert got == truth[:7]
    lines = (tmp_path / "tmall.csv").read_text().splitlines()[1:8]
    assert list(frame["ts_raw"]) == [line.rsplit(",", 1)[1] for line in lines]
    assert not db.exists()


def test_preview_shows_why_a_row_would_be_quarantined(tmp_path):
    kw = _generic(tmp_path / "p.csv", ["a,1,view,2016-05-09 10:00", "b,1,teleport,2016-05-09 10:00",
                                       "c,2,view,yesterday"])
    frame = preview_file(tmp_path / "p.csv", **kw)
    assert list(frame["reason"].fillna("ok")) == ["ok", "unknown behavior", "unparsable timestamp"]
    assert frame["ts"].iloc[0] == datetime(2016, 5, 9, 10) and frame["ts"].iloc[1:].isna().all()
    assert list(frame["ts_raw"]) == ["2016-05-09 10:00", "2016-05-09 10:00", "yesterday"]


def test_preview_of_a_known_layout(samples):
    frame = preview_file(samples / "taobao/UserBehavior_head.csv", rows=3)
    assert list(frame["ts_raw"]) == ["1511544070", "1511561733", "1511572885"]
    assert frame["ts"].iloc[0] == datetime(2017, 11, 24, 17, 21, 10)
    assert list(frame["behavior"]) == ["view", "view", "view"]


@pytest.mark.parametrize("kwargs, title, fragment", [
    ({"tz": "Nowhere/City"}, "Invalid time option", "--tz 'Nowhere/City'"),
    ({"ts_format": "%m-%d"}, "Invalid time option", "--ts-format '%m-%d' has no year"),
    ({"rows": 0}, "Invalid option", "rows=0"),
])
def test_preview_raises_what_ingest_raises(tmp_path, kwargs, title, fragment):
    _tmall_log(tmp_path / "tmall.csv", rows=5)
    with pytest.raises(DataError) as err:
        preview_file(tmp_path / "tmall.csv", layout="generic", column_map=TMALL_MAP,
                     behavior_map=TMALL_BEHAVIORS, **kwargs)
    assert err.value.title == title and fragment in err.value.message


def test_preview_refuses_a_binary_file(tmp_path):
    (tmp_path / "x.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"Not a text file: x\.bin is not a text CSV"):
        preview_file(tmp_path / "x.bin")


def test_cli_time_options_and_duplicates(tmp_path):
    truth = _tmall_log(tmp_path / "tmall.csv", rows=400)
    db = tmp_path / "cli.duckdb"
    base = ["ingest", str(tmp_path / "tmall.csv"), "--dataset", "tm", "--format", "generic",
            *[a for f, c in TMALL_MAP.items() for a in ("--map", f"{f}={c}")],
            *[a for s, b in TMALL_BEHAVIORS.items() for a in ("--behavior-map", f"{s}={b}")]]
    out = _cli(*base, "--ts-format", "%m-%d", "--year", "2015", "--tz", "Asia/Shanghai", "--duplicates",
               "keep", db=db)
    assert out.returncode == 0, out.stderr
    identical = len(truth) - len(set(truth))
    assert re.search(r"rows stored +400\b", out.stdout) and re.search(rf"identical rows kept +{identical}\b",
                                                                      out.stdout)
    assert "duplicates         keep (asked for (--duplicates keep); day resolution" in out.stdout
    assert "(source time zone Asia/Shanghai)" in out.stdout
    for flag, value, message in (("--tz", "Mars/Base", "Invalid time option: --tz 'Mars/Base'"),
                                 ("--year", "abc", "Invalid time option: --year 'abc' is not a year."),
                                 ("--ts-format", "%m-%d %Q", "--ts-format '%m-%d %Q' is not a strptime")):
        args = {"--ts-format": "%m-%d", "--year": "2015", "--tz": "UTC", flag: value}
        out = _cli(*base, "--replace", *[a for kv in args.items() for a in kv], db=db)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = _cli(*base, "--replace", "--duplicates", "sometimes", db=db)
    assert out.returncode == 2 and "argument --duplicates: invalid choice: 'sometimes'" in out.stderr
    out = _cli("datasets", "--json", db=db)
    assert [(d["name"], d["rows_stored"], d["source_tz"]) for d in json.loads(out.stdout)] == \
        [("tm", 400, "Asia/Shanghai")]
