"""AppTest of the Data page through the real entry script (app.py + st.navigation), on a temp
database holding two real samples."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.ingest import ingest_file
from core.data.store import Store
from tests.app_util import open_app_page, open_app_tab, point_app_at

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
TIMEOUT = 60


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "app.duckdb"
    point_app_at(monkeypatch, path)
    with Store(path) as store:
        ingest_file(store, SAMPLES / "taobao" / "UserBehavior_head.csv", dataset="head")
        ingest_file(store, SAMPLES / "rees46" / "2019-Oct_head2000.csv", dataset="rees46")
    return path


def data_page(**query) -> AppTest:
    return open_app_page("pages/views/data.py", TIMEOUT, **query)


def fingerprint(path: Path) -> str:
    with Store(path) as store:
        return store.fingerprint()


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def open_tab(at: AppTest, name: str) -> AppTest:
    return open_app_tab(at, "data_tab", name, in_url=True)


def test_data_page_renders_charts_and_tables(db):
    at = data_page()
    assert at.sidebar.selectbox(key="dataset_picker").value == "head"
    assert [t.label for t in at.tabs] == ["Overview", "Quality", "Quarantine", "Preview",
                                         "Add data", "Delete"]
    specs = chart_specs(at)
    titles = [s["layout"]["title"]["text"] for s in specs]
    assert titles == ["Events per day by behaviour", "Hour-of-day pattern",
                      "Funnel: users reaching each stage", "Events per user",
                      "Top categories by events"]
    for spec in specs:
        assert spec["data"], spec["layout"]["title"]["text"]   # real traces, not empty states
    assert metrics(at)["Events"] == "4,321" and metrics(at)["Users"] == "43"
    # The dataset list is a table; the closed tabs computed nothing (no quality table, no preview).
    frames = [d.value for d in at.dataframe]
    assert any(set(f.columns) >= {"name", "rows_stored"} and len(f) == 2 for f in frames)
    assert not any("check" in f.columns or "user_id" in f.columns for f in frames)
    assert not at.error
    # The hour-of-day axis says which clock it uses (Taobao: UTC+8).
    hour = next(s for s in specs if s["layout"]["title"]["text"] == "Hour-of-day pattern")
    assert "UTC+08:00" in hour["layout"]["xaxis"]["title"]["text"]

    open_tab(at, "Quality")
    assert chart_specs(at) == []          # the overview is not recomputed behind the quality tab
    quality = next(d.value for d in at.dataframe if "check" in d.value.columns)
    assert quality["status"].str.contains("pass|warn|fail").all()
    open_tab(at, "Quarantine")
    assert [s["layout"]["title"]["text"] for s in chart_specs(at)] == ["Quarantined rows by reason"]
    open_tab(at, "Preview")
    assert any("user_id" in d.value.columns and len(d.value) == 100 for d in at.dataframe)
    assert not at.error


def test_view_settings_survive_a_closed_tab(db):
    at = data_page()
    at.slider(key="top_n").set_value(5).run()
    top = lambda: next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Top categories"))  # noqa: E731
    assert len(top()["data"][0]["y"]) <= 5
    open_tab(at, "Quality")
    open_tab(at, "Overview")
    assert at.slider(key="top_n").value == 5
    assert len(top()["data"][0]["y"]) <= 5
    assert not at.exception
    assert not [w for w in at.warning if "Session State" in w.value]   # no default-value clash


def test_choosing_another_dataset_changes_the_charts(db):
    at = data_page()
    before = chart_specs(at)
    at.sidebar.selectbox(key="dataset_picker").set_value("rees46").run()
    assert not at.exception
    after = chart_specs(at)
    assert metrics(at)["Events"] == "2,000"
    funnel = lambda specs: next(s for s in specs if s["layout"]["title"]["text"].startswith("Funnel"))  # noqa: E731
    assert funnel(before)["data"][0]["x"] != funnel(after)["data"][0]["x"]
    assert at.query_params["dataset"] == "rees46"


def test_query_parameter_reopens_a_dataset(db):
    at = data_page(dataset="rees46")
    assert at.sidebar.selectbox(key="dataset_picker").value == "rees46"
    assert metrics(at)["Events"] == "2,000"


def test_ingest_a_sample_through_the_ui(db):
    at = data_page()
    at.selectbox(key="sample_choice").set_value("taobao_tail").run()
    assert at.text_input(key="sample_name_taobao_tail").value == "taobao_tail"
    at.button(key="ingest_sample").click().run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="dataset_picker").value == "taobao_tail"
    assert any("Ingested **taobao_tail**" in s.value for s in at.success)
    assert metrics(at)["Events"] == "10,000"
    with Store(db) as store:
        assert store.dataset_names() == ["head", "rees46", "taobao_tail"]


def test_existing_name_is_refused_without_replace_and_replaced_with_it(db):
    at = data_page()
    before = fingerprint(db)
    at.selectbox(key="sample_choice").set_value("taobao_tail").run()
    at.text_input(key="sample_name_taobao_tail").set_value("head").run()
    at.button(key="ingest_sample").click().run()
    assert not at.exception
    assert any("Already exists" in e.value for e in at.error)
    assert fingerprint(db) == before
    at.checkbox(key="sample_replace").check().run()
    at.button(key="ingest_sample").click().run()
    assert not at.error and metrics(at)["Events"] == "10,000"
    assert fingerprint(db) != before


@pytest.mark.parametrize("name,content", [
    ("junk.csv", b"\x00\x01\x02\xff binary junk \x00" * 50),
    ("empty.csv", b""),
    ("header_only.csv", b"user_id,item_id,behavior_type,user_geohash,item_category,time\n"),
    ("truncated.csv.gz", gzip.compress(b"1,2,3,pv,1511544070\n" * 200)[:60]),
], ids=["junk", "empty", "header_only", "truncated_gz"])   # fixed ids: xdist workers must collect the same
def test_bad_upload_shows_the_message_and_changes_nothing(db, name, content):
    at = data_page()
    before = fingerprint(db)
    at.file_uploader(key="upload_file").set_value((name, content, "text/csv")).run()
    at.button(key="ingest_upload").click().run()
    assert not at.exception, at.exception
    assert at.error, "expected the project's error message"
    assert "Traceback" not in at.error[0].value
    assert fingerprint(db) == before
    with Store(db) as store:
        assert store.dataset_names() == ["head", "rees46"]


def test_good_upload_is_ingested_under_its_file_name(db):
    at = data_page()
    content = (SAMPLES / "tianchi_mobile" / "train_user_sample.csv").read_bytes()
    at.file_uploader(key="upload_file").set_value(("mobile log.csv", content, "text/csv")).run()
    assert at.text_input(key="upload_name").placeholder == "mobile log"
    at.button(key="ingest_upload").click().run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="dataset_picker").value == "mobile log"
    with Store(db) as store:
        info = store.dataset("mobile log")
    assert info["layout"] == "tianchi_mobile" and info["source_file"] == "mobile log.csv"
    assert info["duplicates_dropped"] == 104


def test_generic_upload_with_column_and_behaviour_maps(db):
    at = data_page()
    content = (b"visitor,when,action,product\n"
               b"a,2020-01-01 10:00:00,look,p1\n"
               b"a,2020-01-01 10:05:00,bag,p1\n"
               b"b,2020-01-02 11:00:00,look,p2\n")
    at.file_uploader(key="upload_file").set_value(("shop.csv", content, "text/csv")).run()
    at.selectbox(key="upload_layout").set_value("generic").run()
    fields = at.data_editor(key="column_map").value["field"].tolist()
    edits = {fields.index(f): {"column": c}
             for f, c in (("user_id", "visitor"), ("ts", "when"), ("behavior", "action"),
                          ("item_id", "product"))}
    at.session_state["column_map"] = {"edited_rows": edits, "added_rows": [], "deleted_rows": []}
    at.session_state["behavior_map"] = {
        "edited_rows": {}, "deleted_rows": [],
        "added_rows": [{"field": "look", "column": "view"}, {"field": "bag", "column": "cart"}]}
    at.run()
    at.button(key="ingest_upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with Store(db) as store:
        got = store.fetchall("SELECT user_id, behavior::VARCHAR FROM events WHERE dataset = 'shop' "
                             "ORDER BY ts")
    assert got == [("a", "view"), ("a", "cart"), ("b", "view")]


TMALL_LIKE = (b"user_id,brand_id,type,visit_datetime\n"
              b"u1,b7,0,6-4\n"
              b"u1,b7,0,6-4\n"          # a second click on one brand the same day: a real repeat
              b"u1,b7,3,6-4\n"
              b"u2,b8,0,6-5\n"
              b"u2,b8,1,6-5\n")


def set_maps(at: AppTest, columns: dict[str, str], behaviors: dict[str, str]) -> None:
    fields = at.data_editor(key="column_map").value["field"].tolist()
    at.session_state["column_map"] = {
        "edited_rows": {fields.index(f): {"column": c} for f, c in columns.items()},
        "added_rows": [], "deleted_rows": []}
    at.session_state["behavior_map"] = {
        "edited_rows": {}, "deleted_rows": [],
        "added_rows": [{"field": k, "column": v} for k, v in behaviors.items()]}
    at.run()


def preview(at: AppTest):
    return next(d.value for d in at.dataframe if "ts_raw" in d.value.columns)


def test_upload_options_and_preview_before_ingest(db):
    """Month-day dates with the year from the documentation, in the source's time zone, shown
    parsed before anything is stored; day-resolution repeats kept by the automatic policy."""
    before = fingerprint(db)
    at = data_page()
    at.file_uploader(key="upload_file").set_value(("tmall.csv", TMALL_LIKE, "text/csv")).run()
    at.selectbox(key="upload_layout").set_value("generic").run()
    set_maps(at, {"user_id": "user_id", "item_id": "brand_id", "behavior": "type", "ts": "visit_datetime"},
             {"0": "view", "1": "buy", "2": "fav", "3": "cart"})
    # read as the reader guesses, every date is unparsable: the preview says so before any ingest
    rows = preview(at)
    assert len(rows) == 5 and (rows["reason"] == "unparsable timestamp").all()
    assert any("5 of these 5 rows would be quarantined" in w.value for w in at.warning)
    # a format without a year needs the year: the project's message, still nothing stored
    at.text_input(key="upload_ts_format").set_value("%m-%d").run()
    assert any("has no year" in e.value for e in at.error), [e.value for e in at.error]
    at.number_input(key="upload_year").set_value(2015).run()
    at.text_input(key="upload_tz").set_value("Asia/Shanghai").run()
    rows = preview(at)
    assert rows["reason"].isna().all()
    assert rows["ts_raw"].tolist() == ["6-4", "6-4", "6-4", "6-5", "6-5"]
    # midnight in Shanghai is 16:00 UTC the day before
    assert [str(t) for t in rows["ts"]][:1] == ["2015-06-03 16:00:00"]
    assert rows["behavior"].tolist() == ["view", "view", "cart", "view", "buy"]
    assert fingerprint(db) == before                      # previews store nothing
    assert at.segmented_control(key="upload_duplicates").value == "auto"
    at.button(key="ingest_upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Ingested **tmall**" in s.value and "duplicates: keep" in s.value for s in at.success)
    with Store(db) as store:
        info = store.dataset("tmall")
        assert info["rows_stored"] == 5 and info["source_tz"] == "Asia/Shanghai"
        assert store.fetchone("SELECT min(ts)::VARCHAR FROM events WHERE dataset = 'tmall'")[0] == \
            "2015-06-03 16:00:00"


def test_duplicate_policy_drop_is_applied(db):
    at = data_page()
    at.file_uploader(key="upload_file").set_value(("tmall.csv", TMALL_LIKE, "text/csv")).run()
    at.selectbox(key="upload_layout").set_value("generic").run()
    set_maps(at, {"user_id": "user_id", "item_id": "brand_id", "behavior": "type", "ts": "visit_datetime"},
             {"0": "view", "1": "buy", "2": "fav", "3": "cart"})
    at.text_input(key="upload_ts_format").set_value("%m-%d").run()
    at.number_input(key="upload_year").set_value(2015).run()
    at.segmented_control(key="upload_duplicates").set_value("drop").run()
    at.button(key="ingest_upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("1 duplicates dropped" in s.value and "duplicates: drop" in s.value for s in at.success)
    with Store(db) as store:
        assert store.dataset("tmall")["rows_stored"] == 4


def test_delete_needs_the_typed_name(db):
    at = data_page()
    assert at.button(key="delete_dataset").disabled
    at.text_input(key="delete_confirm").set_value("head").run()
    assert not at.button(key="delete_dataset").disabled
    at.button(key="delete_dataset").click().run()
    assert not at.exception and not at.error
    with Store(db) as store:
        assert store.dataset_names() == ["rees46"]
        assert store.fetchone("SELECT count(*) FROM events WHERE dataset = 'head'")[0] == 0
    assert at.sidebar.selectbox(key="dataset_picker").value == "rees46"


def test_demo_mode_hides_upload_ingest_and_delete(db, monkeypatch):
    monkeypatch.setenv("INTENTLENS_DEMO", "1")
    at = data_page()
    assert [t.label for t in at.tabs] == ["Overview", "Quality", "Quarantine", "Preview"]
    assert len(at.file_uploader) == 0
    keys = {b.key for b in at.button}
    assert not keys & {"ingest_sample", "ingest_upload", "delete_dataset"}
    assert len(at.get("plotly_chart")) >= 5          # still a full read-only view
    assert any("Demo mode" in c.value for c in at.sidebar.caption)


def test_quarantine_viewer_lists_reasons_and_rows(tmp_path, monkeypatch):
    path = tmp_path / "q.duckdb"
    monkeypatch.setenv("INTENTLENS_DB", str(path))
    bad = tmp_path / "mixed.csv"
    bad.write_text("1,2,3,pv,1511544070\n1,2,3,teleport,1511544071\n2,5,6,buy,not-a-time\n"
                   "2,5,6,pv,1511544090\n")
    with Store(path) as store:
        report = ingest_file(store, bad, dataset="mixed", layout="taobao")
    assert report.rows_quarantined == 2
    at = open_tab(data_page(), "Quarantine")
    reasons = at.selectbox(key="quarantine_reason")
    assert reasons.options[0] == "all reasons" and len(reasons.options) == 3
    rows = next(d.value for d in at.dataframe if "raw" in d.value.columns)
    assert rows["line"].tolist() == [2, 3]
    reasons.set_value(reasons.options[1]).run()
    rows = next(d.value for d in at.dataframe if "raw" in d.value.columns)
    assert len(rows) == 1
