"""Data: ingest logs, check their quality, look at the overview, inspect quarantined rows.

The upload form offers what ``python -m core ingest`` does: the layout, the generic layout's
column and behaviour maps and how to read its timestamps (strptime format, source time zone, the
year of dates without one), and the duplicate policy (auto / drop / keep). The first rows of the
upload are previewed as ingest would read them, with why a row would be quarantined, before
anything is stored.
"""
from datetime import date

import streamlit as st

from core import charts
from core.data.formats import LAYOUTS
from core.data.ingest import EARLIEST
from core.data.schema import BEHAVIORS, MAPPABLE_FIELDS
from pages.shared import actions, cached, display, feedback, session

DUPLICATE_CHOICES = {"auto": "auto (from the timestamps)", "drop": "drop", "keep": "keep"}
VIEW_SETTINGS = {"per_day_log": True, "top_n": 15, "preview_n": 100}   # widget key -> default

st.title("Data")
st.caption("Behaviour logs in the database: add one, check its quality, see what is in it.")
feedback.show_flash()
demo = session.is_demo()
dataset = session.current_dataset()

# -- datasets -------------------------------------------------------------------------------------
with feedback.guard():
    table = cached.datasets_frame()
    if table.empty:
        st.info("No dataset yet. Use the **Add data** tab to ingest a shipped sample or your own file.")
    else:
        st.dataframe(
            table, hide_index=True,
            column_config={
                **display.count_columns(["rows_read", "rows_stored", "rows_quarantined",
                                        "duplicates_dropped", "n_users", "n_items"]),
                "ts_min": st.column_config.DatetimeColumn("first event (UTC)"),
                "ts_max": st.column_config.DatetimeColumn("last event (UTC)"),
                "ingested_at": st.column_config.DatetimeColumn("ingested"),
            })

tab_names = ["Overview", "Quality", "Quarantine", "Preview"] + ([] if demo else ["Add data", "Delete"])
# The open tab is kept in the URL (?data_tab=Quality reopens it). The four views of the data run
# only while their tab is open, so a big dataset's quality scan never delays the overview.
tabs = dict(zip(tab_names, st.tabs(tab_names, key="data_tab", bind="query-params"), strict=True))


def showing(name: str) -> bool:
    """Whether the view in tab ``name`` should be computed in this run (its tab is open)."""
    return bool(tabs[name].open)


# Settings of the views keep their values while their tab is closed (Streamlit forgets the state
# of a widget on a run that does not draw it, unless the script sets it itself).
for _key, _default in VIEW_SETTINGS.items():
    st.session_state[_key] = st.session_state.get(_key, _default)


# -- overview -------------------------------------------------------------------------------------
with tabs["Overview"]:
    if dataset is None:
        st.info("Pick or ingest a dataset to see its overview.")
    elif showing("Overview"):
        with feedback.guard():
            info = cached.dataset_info(dataset)
            offset = cached.local_offset(dataset)
            mix = cached.overview_frame("behavior_counts", dataset)
            buys = int(mix.loc[mix["behavior"] == "buy", "events"].sum())
            cols = st.columns(5)
            cols[0].metric("Events", display.fmt_int(info["rows_stored"]))
            cols[1].metric("Users", display.fmt_int(info["n_users"]))
            cols[2].metric("Items", display.fmt_int(info["n_items"]))
            cols[3].metric("Buys", display.fmt_int(buys),
                           help="Share of all events: " + display.fmt_pct(buys / max(info["rows_stored"] or 1, 1)))
            cols[4].metric("Quarantined", display.fmt_int(info["rows_quarantined"]))
            note, switch = st.columns([4, 1], vertical_alignment="center")
            note.caption(f"{display.fmt_span(info['ts_min'], info['ts_max'])} · days and hours "
                         f"below are in the source's time, {offset.label}.")
            log_y = switch.toggle("Log scale", key="per_day_log",
                                  help="Events per day on a log axis: views usually outnumber "
                                       "buys 50 to 1, and a log axis shows both.")

            left, right = st.columns(2, gap="medium")
            with left:
                display.chart(charts.events_per_day(cached.overview_frame("events_per_day", dataset),
                                                   log_y=log_y, tz_label=offset.label),
                             key="chart_events_per_day")
            with right:
                display.chart(charts.hour_of_day(cached.overview_frame("hour_of_day", dataset),
                                                tz_label=offset.label), key="chart_hour_of_day")
            left, right = st.columns(2, gap="medium")
            with left:
                display.chart(charts.funnel(cached.overview_frame("funnel", dataset)),
                             key="chart_funnel")
            with right:
                display.chart(charts.events_per_user(cached.overview_frame("events_per_user", dataset)),
                             key="chart_events_per_user")
            n_top = st.slider("Categories shown", 5, 50, step=5, key="top_n",
                              help="The busiest categories by number of events.")
            display.chart(charts.top_categories(cached.overview_frame("top_categories", dataset,
                                                                     limit=n_top)),
                         key="chart_top_categories")

# -- quality --------------------------------------------------------------------------------------
with tabs["Quality"]:
    if dataset is None:
        st.info("Pick or ingest a dataset to see its quality report.")
    elif showing("Quality"):
        with feedback.guard():
            checks = cached.quality(dataset).checks
            counts = checks["status"].value_counts()
            st.markdown(" ".join([
                f":green-badge[:material/check_circle: {counts.get('pass', 0)} pass]",
                f":orange-badge[:material/warning: {counts.get('warn', 0)} warn]",
                f":red-badge[:material/cancel: {counts.get('fail', 0)} fail]"]))
            st.dataframe(display.quality_table(checks), hide_index=True,
                         column_config={"reason": st.column_config.TextColumn("reason", width="large")})

# -- quarantine -----------------------------------------------------------------------------------
with tabs["Quarantine"]:
    if dataset is None:
        st.info("Pick or ingest a dataset to see the rows set aside at ingest.")
    elif showing("Quarantine"):
        with feedback.guard():
            reasons = cached.overview_frame("quarantine_reasons", dataset)
            display.chart(charts.quarantine_reasons(reasons), key="chart_quarantine")
            if not reasons.empty:
                choice = st.selectbox("Reason", ["all reasons", *reasons["reason"].tolist()],
                                      key="quarantine_reason",
                                      help="Show sample rows set aside for this reason.")
                rows = cached.overview_frame("quarantine_rows", dataset, limit=100,
                                             reason=None if choice == "all reasons" else choice)
                st.caption(f"First {len(rows)} quarantined rows by source line (raw text cut to "
                           "500 characters).")
                st.dataframe(rows, hide_index=True,
                             column_config={"line": st.column_config.NumberColumn("line", format="localized")})

# -- preview --------------------------------------------------------------------------------------
with tabs["Preview"]:
    if dataset is None:
        st.info("Pick or ingest a dataset to see its rows.")
    elif showing("Preview"):
        with feedback.guard():
            n = st.number_input("Rows", min_value=10, max_value=1000, step=10,
                                key="preview_n", help="The earliest events of the dataset, by time (UTC).")
            st.dataframe(cached.overview_frame("preview_rows", dataset, limit=int(n)), hide_index=True)

# -- add data -------------------------------------------------------------------------------------
if "Add data" in tabs:
    with tabs["Add data"]:
        st.subheader("A shipped sample")
        samples = {s.name: s for s in actions.sample_catalogue()}
        if not samples:
            st.info("No sample files found in sample_data/.")
        else:
            key = st.selectbox("Sample", list(samples), key="sample_choice",
                               help="Real public logs shipped in sample_data/ (provenance in "
                                    "sample_data/README.md) and the synthetic demo log.")
            sample = samples[key]
            st.caption(f"{sample.description} Layout `{sample.layout}`, file `sample_data/{sample.path}`.")
            name = st.text_input("Dataset name", value=sample.name, key=f"sample_name_{key}",
                                 help="The name it is stored under; an existing name needs "
                                      "'Replace'.")
            replace = st.checkbox("Replace the dataset if it exists", key="sample_replace",
                                  help="Re-ingest: the old rows of this dataset are removed in "
                                       "the same transaction.")
            if st.button("Ingest sample", type="primary", key="ingest_sample",
                         icon=":material/download:"):
                options = actions.ReadOptions(layout=sample.layout, column_map=dict(sample.column_map),
                                              behavior_map=dict(sample.behavior_map))
                if actions.ingest(sample.file(), dataset=name, options=options, replace=replace,
                                  source_name=sample.path.rsplit("/", 1)[-1]):
                    st.rerun()

        st.divider()
        st.subheader("Upload a file")
        limit_mb = st.get_option("server.maxUploadSize")
        uploaded = st.file_uploader(
            f"Behaviour log: CSV, gzip CSV or Parquet, up to {limit_mb} MB",
            type=["csv", "gz", "parquet", "tsv", "txt"], key="upload_file",
            help=f"Files up to {limit_mb} MB (server.maxUploadSize in .streamlit/config.toml). "
                 "Larger logs: `python -m core ingest PATH`.")
        layout = st.selectbox("Layout", ["auto", *LAYOUTS], key="upload_layout",
                              help="auto detects Taobao, Tianchi mobile, REES46 and RetailRocket "
                                   "from the header and the shape; generic needs a column map.")
        column_map = behavior_map = None
        ts_format = tz = None
        year: int | None = None
        if layout == "generic":
            st.caption("Which source column holds each field (user_id, behavior and ts are "
                       "required; leave the others empty when the file lacks them).")
            column_map = actions.mapping_from_editor(st.data_editor(
                actions.column_map_frame(MAPPABLE_FIELDS), key="column_map", hide_index=True,
                disabled=["field"], column_config={
                    "field": st.column_config.TextColumn("field"),
                    "column": st.column_config.TextColumn("source column")}))
            st.caption("How the source writes each behaviour (leave empty if it already uses "
                       "view, cart, fav, buy, remove_from_cart, search).")
            behavior_map = actions.mapping_from_editor(st.data_editor(
                actions.behavior_map_frame(), key="behavior_map", hide_index=True,
                num_rows="dynamic", column_config={
                    "field": st.column_config.TextColumn("source value"),
                    "column": st.column_config.SelectboxColumn("behaviour", options=list(BEHAVIORS))}))
            st.caption("How to read the timestamps (leave empty to detect epoch seconds or "
                       "milliseconds, and ISO text such as 2015-06-04 13:05:00).")
            fmt_col, tz_col, year_col = st.columns(3)
            ts_format = fmt_col.text_input(
                "Timestamp format", key="upload_ts_format", placeholder="detect",
                help="A strptime format, e.g. %Y-%m-%d %H:%M:%S, %d/%m/%Y %H:%M or %m-%d for dates "
                     "like 6-4 (then give the year).") or None
            tz = tz_col.text_input(
                "Source time zone", key="upload_tz", placeholder="UTC",
                help="The IANA zone the source's local times are in, e.g. Asia/Shanghai or "
                     "Europe/Berlin; times are stored in UTC.") or None
            year_value = year_col.number_input(
                "Year", min_value=EARLIEST.year, max_value=date.today().year, value=None, step=1,
                key="upload_year", placeholder="in the dates",
                help="For a format without a year (%m-%d): the year the source's documentation gives.")
            year = None if year_value is None else int(year_value)
        duplicates = st.segmented_control(
            "Identical rows", list(DUPLICATE_CHOICES), default="auto", key="upload_duplicates",
            format_func=lambda k: DUPLICATE_CHOICES[k],
            help="auto: keep them when the timestamps are whole days (two clicks on one item in one "
                 "day are identical lines), drop them when timestamps are finer (a repeated record). "
                 "drop: keep one of each. keep: store them all.")
        options = actions.ReadOptions(layout=layout, column_map=column_map, behavior_map=behavior_map,
                                      ts_format=ts_format, tz=tz, year=year,
                                      duplicates=None if duplicates in (None, "auto") else duplicates)
        if uploaded is not None:
            st.markdown(f"**Preview** · the first {actions.PREVIEW_ROWS} rows as they would be read "
                        "(nothing is stored yet)")
            with feedback.guard():
                preview = actions.preview_upload(uploaded, options)
                bad = int(preview["reason"].notna().sum())
                st.dataframe(preview, hide_index=True, key="upload_preview", column_config={
                    "ts": st.column_config.DatetimeColumn("ts (UTC)"),
                    "ts_raw": st.column_config.TextColumn("ts as written"),
                    "reason": st.column_config.TextColumn("would be quarantined because")})
                (st.caption if bad == 0 else st.warning)(
                    f"{bad} of these {len(preview)} rows would be quarantined." if bad
                    else f"All {len(preview)} rows read cleanly.")
        default_name = actions.default_dataset_name(uploaded.name) if uploaded else ""
        upload_name = st.text_input("Dataset name", key="upload_name", placeholder=default_name,
                                    help="Leave empty to use the file name.") or default_name
        upload_replace = st.checkbox("Replace the dataset if it exists", key="upload_replace")
        if st.button("Ingest upload", type="primary", key="ingest_upload", disabled=uploaded is None,
                     icon=":material/upload:") and uploaded is not None:
            with actions.saved_upload(uploaded) as path:
                report = actions.ingest(path, dataset=upload_name, options=options,
                                        replace=upload_replace, source_name=uploaded.name)
            if report:
                st.rerun()

# -- delete ---------------------------------------------------------------------------------------
if "Delete" in tabs:
    with tabs["Delete"]:
        if dataset is None:
            st.info("There is no dataset to delete.")
        else:
            st.warning(f"Deleting **{dataset}** removes its events, quarantined rows and scores. "
                       "Saved models stay on disk.", icon=":material/delete:")
            typed = st.text_input("Type the dataset name to confirm", key="delete_confirm")
            if st.button("Delete dataset", key="delete_dataset", disabled=typed != dataset,
                         icon=":material/delete_forever:") and actions.delete_dataset(dataset):
                st.rerun()
