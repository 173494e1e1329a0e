"""Monitor: is the model still looking at the world it was trained on, and is its service healthy?

Reads: the sidebar's dataset and model -> ``core.serving.monitor.drift_report`` (cached per model
version, data version and threshold), ``cohort_stability`` over the recorded scoring runs, and the
scoring service's request log (``core.serving.requestlog.read_request_log``) summarised per time
bucket by ``service_summary``, realized accuracy (``core.insight.realized.realized_runs``) and the
resource log (``core.serving.resources.read_resource_log``) -> ``core.charts``. Five sections: drift,
cohort stability, realized accuracy, service, resources.
"""
from __future__ import annotations

import streamlit as st

from core import charts
from core.serving import monitor
from core.serving.requestlog import default_log_path, read_request_log
from core.serving.resources import default_resource_path, read_resource_log
from pages.shared import cached, display, feedback, session

THRESHOLD_KEY, TOP_KEY = "monitor_threshold", "monitor_top_percent"
REALIZED_TOP_KEY = "monitor_realized_top"
STATUS_BOX = {"ok": st.success, "watch": st.warning, "drift": st.error}
STATUS_WORDS = {"ok": "stable", "watch": "watch", "drift": "drift"}

st.title("Monitor")
st.caption("Whether the latest data still looks like the data the model learned from, whether its "
           "top cohort holds from one scoring run to the next, and how the scoring service is doing.")
feedback.show_flash()
dataset, model_dir = session.require_dataset_and_model(
    "No trained model yet: train one on the **Train** page or run `python -m core train --dataset NAME`.")
model_id = cached.model_id(model_dir)

# -- drift ----------------------------------------------------------------------------------------
st.subheader("Drift since training")
st.markdown(
    "Each measure is a **population stability index** (PSI) between the model's training window and "
    "the latest window of the same length: the sum over bins of (latest share − training share) × "
    "ln(latest share / training share), with bins cut at the training window's deciles. The "
    f"conventional reading: under **{monitor.WATCH_PSI:g}** the population is stable, from "
    f"{monitor.WATCH_PSI:g} to **{monitor.ACT_PSI:g}** it has shifted enough to watch, and at "
    f"{monitor.ACT_PSI:g} and over it has moved enough to act (check the data, retrain). "
    "`python -m core drift --model DIR --dataset NAME` runs the same check for a scheduler (exit code 3 "
    "on drift).")
threshold = st.number_input("Action threshold (PSI)", min_value=0.05, max_value=2.0, value=monitor.ACT_PSI,
                            step=0.05, key=THRESHOLD_KEY,
                            help="A measure at or over this PSI counts as drift (0.25 is the usual choice).")
with feedback.guard():
    with st.spinner("Comparing the training window with the latest data…"):
        report = cached.drift(model_dir, dataset, float(threshold))
    STATUS_BOX[report.status](report.headline())
    for note in report.notes:
        st.caption(note)
    by_measure = report.measures.set_index("measure")
    cols = st.columns(3)
    for col, (measure, title) in zip(cols, (("behavior_mix", "Behaviour mix"), ("events_per_user", "Events per user"),
                                            ("score", "Score distribution")), strict=True):
        row = by_measure.loc[measure]
        col.metric(title, f"PSI {row['psi']:.3f}", STATUS_WORDS[str(row["status"])], delta_color="off",
                   help=str(row["message"]))
    st.caption(f"Training window: {display.fmt_int(report.counts['reference_users'])} active users, "
               f"{display.fmt_int(report.counts['reference_events'])} events; latest window: "
               f"{display.fmt_int(report.counts['latest_users'])} users, "
               f"{display.fmt_int(report.counts['latest_events'])} events. Features and scores compare up to "
               f"{display.fmt_int(report.sample_users)} users per window. Events per user, two-sample "
               f"Kolmogorov-Smirnov: D = {report.ks['statistic']:.3f}, p = {report.ks['pvalue']:.3g}.")
    display.chart(charts.feature_psi(report.features, report.watch, report.threshold), "monitor_features")
    left, right = st.columns(2)
    with left:
        display.chart(charts.behavior_shift(report.behaviors), "monitor_mix")
    with right:
        display.chart(charts.drift_bins(report.bins[report.bins["measure"] == "events_per_user"],
                                        "Events per user in the window", x_title="events"), "monitor_lengths")
    display.chart(charts.drift_bins(report.bins[report.bins["measure"] == "score"],
                                    "Model scores of the window's users", x_title="score"), "monitor_scores")
    with st.expander("Every measure"):
        st.dataframe(report.measures[["label", "kind", "psi", "status", "message"]], hide_index=True,
                     column_config={"psi": st.column_config.NumberColumn("PSI", format="%.3f")})

# -- cohort stability -----------------------------------------------------------------------------
st.subheader("Cohort stability")
top_percent = st.slider("Top X % of users", min_value=1, max_value=50, value=10, key=TOP_KEY,
                        help="The cohort compared between scoring runs: each run's highest-scored X %.")
with feedback.guard():
    runs = monitor.score_runs(cached.get_store(), model_id, dataset)
    if len(runs) < 2:
        st.info(f"This model has {len(runs)} recorded scoring run(s) of {dataset!r}; stability needs two. "
                "Re-score on the **Cohorts** page (or run `python -m core score --model DIR --dataset NAME`) "
                "after new data arrives, then come back.", icon=":material/info:")
    else:
        stability = cached.cohort_stability(model_id, dataset, float(top_percent), tuple(runs["run_id"]))
        last = stability.iloc[-1]
        a, b, c = st.columns(3)
        a.metric(f"Earlier top {top_percent} % kept", display.fmt_pct(last["kept"]),
                 help="Share of the earlier run's top that is in the latest run's top.")
        b.metric("Jaccard overlap", f"{last['jaccard']:.2f}", help="Common users / users in either top.")
        c.metric("Users in both tops", display.fmt_int(last["common"]))
        st.caption(f"Latest run {display.fmt_ts(last['later_at'])} against {display.fmt_ts(last['earlier_at'])} "
                   f"(UTC); {display.fmt_int(len(runs))} runs recorded.")
        display.chart(charts.cohort_overlap(stability, float(top_percent)), "monitor_overlap")

# -- realized accuracy ----------------------------------------------------------------------------
st.subheader("Did the predicted buyers buy?")
st.markdown(
    "Every scoring run is kept. Once its horizon has passed in the data (new events appended), each run is "
    "compared with what happened: the share of its top X % that bought (with a 95 % interval) against what the "
    "model's test window promised, the exported cohorts' precision and recall, and predicted against actual "
    "buyers. `python -m core realized --model DIR --dataset NAME` runs the same check (exit code 3 when a run "
    "fell below its promise).")
realized_top = st.slider("Top X % of each run", min_value=1, max_value=50, value=5, key=REALIZED_TOP_KEY,
                         help="The cut measured on every run, and on the model's test window for the promise.")
with feedback.guard():
    realized = cached.realized(model_dir, dataset, float(realized_top))
    (st.error if realized.flagged else st.success if not realized.runs.empty else st.info)(realized.headline())
    for note in realized.notes:
        st.caption(note)
    if not realized.runs.empty:
        latest = realized.runs.iloc[-1]
        a, b, c, d = st.columns(4)
        a.metric(f"Top {realized_top} % bought", display.fmt_pct(latest["precision"]),
                 help=f"95 % interval {display.fmt_pct(latest['precision_low'])} – "
                      f"{display.fmt_pct(latest['precision_high'])}")
        b.metric("Lift", f"{latest['lift']:.1f}×", help="Precision of the top / share of all rows that bought.")
        c.metric("Predicted / actual buyers", f"{latest['predicted_buyers']:,.0f} / {latest['buyers']:,}",
                 help=f"95 % range of the actual count if the scores were true probabilities: "
                      f"{latest['predicted_low']:,.0f} – {latest['predicted_high']:,.0f}")
        d.metric("ROC-AUC / PR-AUC", f"{latest['roc_auc']:.3f} / {latest['pr_auc']:.3f}")
        display.chart(charts.realized_precision(realized.runs, float(realized_top)), "monitor_realized")
        display.chart(charts.predicted_vs_actual(realized.runs), "monitor_calibration")
    if not realized.exports.empty:
        st.markdown("**Exported cohorts**: how the exact users of each export bought.")
        st.dataframe(realized.exports[["exported_at", "cut", "rows", "buyers", "precision", "recall", "lift",
                                       "export_id", "run_id"]], hide_index=True,
                     column_config={"precision": st.column_config.NumberColumn(format="%.3f"),
                                    "recall": st.column_config.NumberColumn(format="%.3f"),
                                    "lift": st.column_config.NumberColumn(format="%.2f")})
    if not realized.pending.empty:
        st.caption(f"{len(realized.pending)} run(s) still inside their horizon; the next is due when the data "
                   f"reaches {display.fmt_ts(realized.pending['due'].min())} UTC.")

# -- service --------------------------------------------------------------------------------------
st.subheader("Scoring service")
log_path = default_log_path(cached.db_path())
log = read_request_log(log_path)
if log.empty:
    st.info(monitor.no_log_message(log_path), icon=":material/info:")
else:
    totals = monitor.service_totals(log)
    a, b, c, d = st.columns(4)
    a.metric("Requests", display.fmt_int(totals["requests"]))
    b.metric("Error rate", display.fmt_pct(totals["error_rate"]),
             help=f"4xx: {totals['client_errors']:,}, 5xx: {totals['server_errors']:,}")
    c.metric("p50 latency", f"{totals['p50_ms']:.1f} ms")
    d.metric("p99 latency", f"{totals['p99_ms']:.1f} ms", help=f"p95: {totals['p95_ms']:.1f} ms")
    summary = monitor.service_summary(log)
    st.caption(f"From {display.fmt_ts(totals['first'])} to {display.fmt_ts(totals['last'])} UTC, read from "
               f"{log_path}.")
    display.chart(charts.service_traffic(summary), "monitor_traffic")
    display.chart(charts.service_latency(summary), "monitor_latency")

# -- resources ------------------------------------------------------------------------------------
st.subheader("Resources")
st.caption("CPU and resident memory of this app, the scoring service and background jobs (training, scoring), "
           "sampled every few seconds with psutil: beside the latency above, it tells load from a slow model.")
resource_path = default_resource_path(cached.db_path())
samples = read_resource_log(resource_path)
if samples.empty:
    st.info(f"No resource samples yet at {resource_path}.", icon=":material/info:")
else:
    left, right = st.columns(2)
    with left:
        display.chart(charts.resource_usage(samples, "cpu_percent"), "monitor_cpu")
    with right:
        display.chart(charts.resource_usage(samples, "rss_mb"), "monitor_memory")
