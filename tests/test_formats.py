"""Layout detection and read plans on the real samples and on small hand-written files."""
from __future__ import annotations

import pytest

from core.errors import DataError
from core.data.formats import detect_layout, inspect_file, plan_read

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
    with pytest.raises(DataError, match="unknown field.*colour"):
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
