"""Ingest of every layout on the real samples, replace/atomicity, samples catalogue and the CLI."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from core.errors import ConflictError, DataError
from core.data.ingest import ingest_file, validate_dataset_name

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
    with pytest.raises(ConflictError, match="exists already.*--replace"):
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
