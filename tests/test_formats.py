"""Layout detection and read plans on the real samples and on small hand-written files."""
from __future__ import annotations

from datetime import datetime

import pytest

from core.data.formats import (
    BINARY_SHARE_LIMIT,
    TimeOptions,
    binary_share,
    detect_from_info,
    detect_layout,
    directives,
    format_has_year,
    inspect_file,
    plan_read,
)
from core.errors import DataError

REAL = [
    ("taobao/UserBehavior_head.csv", "taobao"),
    ("taobao/UserBehavior_tail.csv", "taobao"),
    ("taobao/UserBehavior_slice_2h.csv", "taobao"),
    ("tianchi_mobile/train_user_sample.csv", "tianchi_mobile"),
    ("rees46/2019-Oct_head2000.csv", "rees46"),
]


@pytest.mark.parametrize("rel, layout", REAL)
def test_detects_real_samples(samples, rel, layout):
    assert detect_layout(samples / rel) == layout


def test_detects_retailrocket_and_gzip(tmp_path):
    import gzip

    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(b"timestamp,visitorid,event,itemid,transactionid\n"
                                   b"1433221332117,257597,view,355908,\n"))
    info = inspect_file(path)
    assert info.compression == "gzip"
    assert detect_layout(path) == "retailrocket"


def test_unknown_layout_message_says_expected_found_and_how(samples):
    with pytest.raises(DataError) as err:
        detect_layout(samples / "diginetica/train-item-views_sample.csv")
    text = str(err.value)
    assert "expected one of: taobao" in text
    assert "found first line 'session_id;user_id;item_id;timeframe;eventdate'" in text
    assert "--format generic --map user_id=" in text and "--map ts=" in text


def test_item_table_is_not_a_behaviour_log(samples):
    with pytest.raises(DataError, match="item_id,item_geohash,item_category"):
        detect_layout(samples / "tianchi_mobile/train_item_sample.csv")


def test_semicolon_delimiter_is_sniffed(samples):
    info = inspect_file(samples / "diginetica/train-item-views_sample.csv")
    assert info.delimiter == ";"
    assert info.first_fields == ["session_id", "user_id", "item_id", "timeframe", "eventdate"]


def test_generic_plan_requires_user_ts_and_behavior(samples):
    info = inspect_file(samples / "diginetica/train-item-views_sample.csv")
    with pytest.raises(DataError, match="needs a column for: ts, behavior"):
        plan_read(info, "generic", {"user_id": "session_id"})
    plan = plan_read(info, "generic", {"user_id": "session_id", "ts": "eventdate"}, {"*": "view"})
    assert plan.header and plan.n_columns == 5
    assert plan.behavior_map["*"] == "view"


def test_generic_plan_rejects_unknown_field_and_behaviour(samples):
    info = inspect_file(samples / "diginetica/train-item-views_sample.csv")
    with pytest.raises(DataError, match=r"unknown field.*colour"):
        plan_read(info, "generic", {"user_id": "session_id", "ts": "eventdate", "colour": "x"})
    with pytest.raises(DataError, match="'wish' is not a behaviour"):
        plan_read(info, "generic", {"user_id": "session_id", "ts": "eventdate"}, {"*": "wish"})


def test_map_needs_generic_layout(samples):
    info = inspect_file(samples / "taobao/UserBehavior_head.csv")
    with pytest.raises(DataError, match="--map only applies to the generic layout"):
        plan_read(info, "taobao", {"user_id": "1"})


def test_headerless_generic_uses_column_numbers(samples):
    info = inspect_file(samples / "taobao/UserBehavior_head.csv")
    plan = plan_read(info, "generic", {"user_id": "1", "item_id": "2", "behavior": "4", "ts": "5"})
    assert plan.header is False
    assert plan.behavior_map["pv"] == "view"


def test_detects_parquet_by_header(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rr.parquet"
    pq.write_table(pa.table({"timestamp": [1433221332117], "visitorid": [1], "event": ["view"],
                             "itemid": [2], "transactionid": [None]}), path)
    assert detect_layout(path) == "retailrocket"
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="cannot be read"):
        detect_layout(bad)


# -- text checks: corrupted lines are read, mostly-binary files refused ----------------------
@pytest.mark.parametrize("chunk, share", [
    (b"1,100,10,pv,1511544070\n", 0.0),
    (b"\x00ab\n", 0.25),                                   # a NUL
    (b"a\tb\r\n", 0.0),                                    # tab, CR and LF are text
    ("caf\u00e9\n".encode(), 0.0),                         # valid UTF-8
    (b"\xff\xfeab", 0.5),                                  # two bytes that are not UTF-8
    (b"\x1b\x7f\x01\x02", 1.0),
])
def test_binary_share(chunk, share):
    assert binary_share(chunk) == pytest.approx(share)


GOOD_LINE = b"1,100,10,pv,1511544070\n"   # 23 bytes


@pytest.mark.parametrize("nuls, refused", [(23, False), (40, True)])   # 25 % and 37 % of the head
def test_refused_only_above_the_binary_share_limit(tmp_path, nuls, refused):
    assert BINARY_SHARE_LIMIT == 0.30
    path = tmp_path / "log.csv"
    path.write_bytes(GOOD_LINE * 3 + b"\x00" * nuls)
    if refused:
        with pytest.raises(DataError, match=r"37% of its first 109 bytes are control bytes or not valid UTF-8"):
            inspect_file(path)
    else:
        assert inspect_file(path).first_fields == ["1", "100", "10", "pv", "1511544070"]


def test_corrupted_first_line_is_skipped_for_detection(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"1,1\x0000,10,pv,15\x01\n" + GOOD_LINE * 5)
    info = inspect_file(path)
    assert (info.first_line_no, info.first_line, info.corrupted_head) == \
        (2, "1,100,10,pv,1511544070", ["1,1\x0000,10,pv,15\x01"])
    assert detect_from_info(info) == "taobao"
    assert info.found() == "line 2 (the first without binary bytes) '1,100,10,pv,1511544070'"


def test_non_utf8_text_is_named_as_such(tmp_path):
    path = tmp_path / "cyrillic.csv"
    path.write_bytes(("пользователь,товар,действие\n" * 50).encode("cp1251"))
    with pytest.raises(DataError, match=r"cyrillic\.csv is not UTF-8 text: \d+% of its first"):
        inspect_file(path)


# -- time options ------------------------------------------------------------------------------
def test_directives_year_and_time_of_day():
    assert directives("%-m-%d %% %H") == {"m", "d", "H"}
    assert TimeOptions(ts_format="%m-%d").date_only and TimeOptions(ts_format="%d/%m/%Y").date_only
    assert not TimeOptions(ts_format="%Y-%m-%d %H").date_only and not TimeOptions().date_only
    assert not format_has_year("%m-%d") and format_has_year("%y%m%d") and format_has_year("%d.%m.%Y")
    assert TimeOptions(ts_format="%m-%d", tz="UTC", year=2015).given() == ["--ts-format", "--tz", "--year"]


def test_time_options_only_for_the_generic_layout(samples):
    info = inspect_file(samples / "taobao/UserBehavior_head.csv")
    with pytest.raises(DataError, match=r"--tz only applies to the generic layout; taobao has its own"):
        plan_read(info, "taobao", time=TimeOptions(tz="Asia/Shanghai"))
    plan = plan_read(info, "generic", {"user_id": "1", "item_id": "2", "behavior": "4", "ts": "5"},
                     time=TimeOptions(ts_format="%m-%d", tz="Asia/Shanghai", year=2015))
    assert (plan.source_tz, plan.session_tz, plan.params["ts_seconds"]) == \
        ("Asia/Shanghai", "Asia/Shanghai", ["2015", "%Y %m-%d"])
    assert plan.options()["ts_format"] == "%m-%d" and plan.options()["year"] == 2015


def test_ts_format_refused_for_a_parquet_timestamp_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"u": ["a"], "at": pa.array([datetime(2020, 1, 1)], type=pa.timestamp("ms"))}), path)
    with pytest.raises(DataError, match=r"Parquet column 'at' \(mapped to ts\) is already timestamp\[ms\]"):
        plan_read(inspect_file(path), "generic", {"user_id": "u", "ts": "at"}, {"*": "view"},
                  TimeOptions(ts_format="%Y-%m-%d"))
