"""Cohorts: the score distribution of the current scoring run, a cohort built from a score cut and
filters, what sets it apart, the value of contacting it, its users (one page at a time) and an
export with an audit stamp.

Reads: widgets -> a ``core.insight.cohorts`` query (cached on the scoring run) -> a ``core.charts`` figure.
The cohort lives in ``st.session_state`` (the Explain page reads it for its global drivers) and in
``st.query_params`` (a link reopens the same cohort).
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from core import charts
from core.errors import IntentLensError
from core.insight import cohorts as C
from core.insight.outlook import OutlookFrame, outlook
from core.modeling.model_store import card_stamp
from core.runtime.jobs import JobContext
from pages.shared import cached, display, feedback, registry, session

# session_state keys of the cohort's widgets, and the query parameter each one is mirrored to
K_MODE, K_TOP, K_THRESHOLD, K_BAND = "cohort_mode", "cohort_top", "cohort_threshold", "cohort_band"
K_CATS, K_DAYS, K_CART, K_ACTIVITY = "cohort_categories", "cohort_days", "cohort_cart", "cohort_activity"
K_SORT, K_DESC, K_PAGE_SIZE, K_PAGE = "cohort_sort", "cohort_desc", "cohort_page_size", "cohort_page"
K_FMT, K_EXPORT, K_SCORE_JOB = "cohort_export_fmt", "cohort_export", "cohort_score_job"
SPEC_KEY, SPEC_MODEL_KEY = "cohort_spec", "cohort_model"   # read by the Explain page
SAVED_KEY = "_cohort_saved"                                  # the cohort widgets' last values
K_LIKELY = "cohort_likely"
COHORT_KEYS = (K_MODE, K_TOP, K_THRESHOLD, K_BAND, K_CATS, K_DAYS, K_CART, K_ACTIVITY, K_LIKELY)
MODES = {"top": "Top X %", "threshold": "Above a threshold", "band": "Score band"}
CART_CHOICES = {"any": "Any", "yes": "Has an open cart", "no": "No open cart"}
PAGE_SIZES = (25, 50, 100, 250)
SORT_LABELS = {"score": "score", "user_id": "user id", "n_events": "events",
               "days_since_last": "days since last visit", "open_carts": "open carts"}
EDGES = C.DEFAULT_BAND_EDGES


# -- cached queries: keyed on the database, the model, the dataset and the scoring run ---------
@st.cache_data(show_spinner=False, max_entries=32)
def _histogram(db: str, model_id: str, dataset: str, run: str) -> pd.DataFrame:
    return C.score_histogram(cached.get_store(), model_id, dataset)


@st.cache_data(show_spinner=False, max_entries=64)
def _summary(db: str, model_id: str, dataset: str, run: str, spec_json: str, model_dir: str,
             stamp: int) -> C.CohortSummary:
    return C.cohort_summary(cached.get_store(), model_id, dataset, C.CohortSpec.from_json(spec_json),
                            held_out=_held_out(model_dir))


@st.cache_data(show_spinner=False, max_entries=32)
def _contrast(db: str, model_id: str, dataset: str, run: str, spec_json: str) -> dict[str, pd.DataFrame]:
    return C.cohort_contrast(cached.get_store(), model_id, dataset, C.CohortSpec.from_json(spec_json))


@st.cache_data(show_spinner=False, max_entries=32)
def _value(db: str, model_id: str, dataset: str, run: str, spec_json: str, margin: float, cost: float,
           budget: int | None) -> tuple[pd.DataFrame, dict]:
    return C.value_curve(cached.get_store(), model_id, dataset, C.CohortSpec.from_json(spec_json),
                         margin=margin, cost=cost, budget=budget)


@st.cache_data(show_spinner=False, max_entries=128)
def _users(db: str, model_id: str, dataset: str, run: str, spec_json: str, order_by: str,
           descending: bool, limit: int, offset: int) -> pd.DataFrame:
    return C.cohort_users(cached.get_store(), model_id, dataset, C.CohortSpec.from_json(spec_json),
                          order_by=order_by, descending=descending, limit=limit, offset=offset)


@st.cache_data(show_spinner=False, max_entries=16)
def _outlook(db: str, model_id: str, dataset: str, run: str, model_dir: str, stamp: int, top: int) -> OutlookFrame:
    return outlook(cached.get_store(), model_dir, dataset, top=top)


@st.cache_data(show_spinner=False, max_entries=16)
def _categories(db: str, dataset: str, run: str) -> list[str]:
    return C.cohort_categories(cached.get_store(), dataset)["category"].astype(str).tolist()


@st.cache_data(show_spinner=False, max_entries=16)
def _days_range(db: str, dataset: str, run: str) -> tuple[float, float]:
    return C.days_since_last_range(cached.get_store(), dataset)


def _held_out(model_dir: str) -> pd.DataFrame | None:
    """The model's test-window rows (validation rows for models older than the test window), or
    None when it has none (hand-made models)."""
    try:
        return cached.evaluation_rows(model_dir)
    except (IntentLensError, OSError):
        return None


# -- state: session_state <-> query parameters ------------------------------------------------
def _seed(max_days: int) -> None:
    """Give every cohort widget its value before it is drawn: the session's last value (kept in
    SAVED_KEY, since Streamlit drops a widget's key on runs that do not draw it: another mode,
    another page), else the URL's (a shared link), else the default."""
    state, q = st.session_state, st.query_params

    def number(name: str, default: float, low: float, high: float) -> float:
        try:
            return min(max(float(q.get(name, default)), low), high)
        except ValueError:
            return default

    low, high = number("dmin", 0, 0, max_days), number("dmax", max_days, 0, max_days)
    from_url = {
        K_MODE: q.get("cut") if q.get("cut") in MODES else "top",
        K_TOP: number("top", 5.0, 0.1, 100.0),
        K_THRESHOLD: number("threshold", 0.5, 0.0, 1.0),
        K_BAND: q.get("band") if q.get("band") in C.BANDS else "high",
        K_CATS: [c for c in q.get("cats", "").split(",") if c],
        K_DAYS: (int(min(low, high)), int(max(low, high))),
        K_CART: q.get("cart") if q.get("cart") in CART_CHOICES else "any",
        K_ACTIVITY: [a for a in q.get("activity", "").split(",") if a in C.ACTIVITY_LEVELS],
        K_LIKELY: [c for c in q.get("likely", "").split(",") if c],
    }
    saved = state.get(SAVED_KEY, {})
    for key, value in from_url.items():
        if key not in state:
            state[key] = saved.get(key, value)
    days = state[K_DAYS]
    if days[1] > max_days or days[0] > max_days:        # another dataset with a shorter span
        state[K_DAYS] = (min(days[0], max_days), max_days)


def _save() -> None:
    st.session_state[SAVED_KEY] = {k: st.session_state[k] for k in COHORT_KEYS}


def _to_query(max_days: int) -> None:
    state, q = st.session_state, st.query_params
    q["cut"] = state[K_MODE]
    q["top"] = f"{state[K_TOP]:g}"
    q["threshold"] = f"{state[K_THRESHOLD]:g}"
    q["band"] = state[K_BAND]
    for name, value in (("cats", ",".join(state[K_CATS])), ("activity", ",".join(state[K_ACTIVITY])),
                        ("likely", ",".join(state[K_LIKELY])),
                        ("cart", "" if state[K_CART] == "any" else state[K_CART])):
        if value:
            q[name] = value
        else:
            q.pop(name, None)
    low, high = state[K_DAYS]
    if (low, high) != (0, max_days):
        q["dmin"], q["dmax"] = str(low), str(high)
    else:
        q.pop("dmin", None)
        q.pop("dmax", None)


def _current_spec(max_days: int) -> C.CohortSpec:
    state = st.session_state
    low, high = state[K_DAYS]
    return C.CohortSpec(
        mode=state[K_MODE], top_percent=float(state[K_TOP]), threshold=float(state[K_THRESHOLD]),
        band=state[K_BAND], band_edges=EDGES, categories=tuple(state[K_CATS]),
        min_days_since_last=float(low) if low > 0 else None,
        max_days_since_last=float(high) if high < max_days else None,
        open_cart={"any": None, "yes": True, "no": False}[state[K_CART]],
        activity=tuple(state[K_ACTIVITY]), likely_categories=tuple(state[K_LIKELY]))


def _use_threshold(value: float) -> None:
    """Callback of "Use this cut": switch the cohort to score >= the best cut's lowest score."""
    st.session_state[K_MODE] = "threshold"
    st.session_state[K_THRESHOLD] = round(float(value), 4)


def _reset_page() -> None:
    st.session_state[K_PAGE] = 1


# -- re-scoring through the job registry ------------------------------------------------------
def _start_scoring(model_dir: str, dataset: str) -> None:
    session.require_writable("Re-scoring")
    store = cached.get_store()                     # captured here: the worker never calls st.*

    def job(ctx: JobContext) -> int:
        frame = C.score_dataset(store, model_dir, dataset, progress=ctx.progress, cancel=ctx.cancel)
        return len(frame)

    st.session_state[K_SCORE_JOB] = cached.get_jobs().submit(
        "score", job, {"model_dir": model_dir, "dataset": dataset})


@st.fragment(run_every=1.0)
def _scoring_progress() -> None:
    job_id = st.session_state.get(K_SCORE_JOB)
    if job_id is None:
        return
    with feedback.guard():
        job = cached.get_jobs().snapshot(job_id)
        if not job.finished:
            st.progress(job.fraction or 0.0, text=f"Scoring users… {job.message}")
            if st.button("Cancel scoring", key="cohort_cancel_scoring", help="Stop the scoring job."):
                cached.get_jobs().cancel(job_id)
            return
        st.session_state.pop(K_SCORE_JOB, None)
        if job.status == "done":
            feedback.flash("success", f"Scored {display.fmt_int(job.result)} users.")
        elif job.status == "cancelled":
            feedback.flash("info", "Scoring was cancelled; the previous run is unchanged.")
        else:
            feedback.flash("warning", f"Scoring failed: {job.error}")
        st.rerun(scope="app")


def _rescore_controls(model_dir: str, dataset: str) -> None:
    if session.is_demo():
        return
    if st.session_state.get(K_SCORE_JOB):
        _scoring_progress()
        return
    if st.button("Re-score", icon=":material/refresh:", key="cohort_rescore",
                 help="Score every user of this dataset with the current model at T = the last "
                      "event (replaces this model's previous run). Runs in the background."):
        with feedback.guard():
            _start_scoring(model_dir, dataset)
            st.rerun()


# -- page -------------------------------------------------------------------------------------
st.title("Cohorts")
st.caption("Pick high-intent users: a score cut plus filters, what sets them apart, what they are "
           "worth, and a file to hand to a campaign tool.")
feedback.show_flash()

dataset, model_dir = session.require_dataset_and_model(
    "No trained model yet. Train one on the **Train** page, then score this dataset here.")

db = cached.db_path()
model_id = None
with feedback.guard():
    model_id = cached.model_id(model_dir)
if model_id is None:
    st.stop()
run = cached.run_stamp(model_id, dataset)

head_left, head_right = st.columns([4, 1], vertical_alignment="bottom")
with head_right:
    _rescore_controls(model_dir, dataset)
if run is None:
    with head_left:
        st.info(f"Model **{model_id}** has not scored dataset **{dataset}** yet. "
                + ("Press **Re-score** to score every user (it runs in the background)."
                   if not session.is_demo() else "Scoring is switched off in this read-only demo session."))
    st.stop()

runs = C.scoring_runs(cached.get_store(), dataset)
run_row = runs[runs["model_id"] == model_id].iloc[0]
with head_left:
    st.caption(f"Scoring run of **{model_id}** on **{dataset}**: {display.fmt_int(run_row['rows'])} users "
               f"scored at T = {display.fmt_ts(run_row['cutoff'])} (UTC) · run made "
               f"{display.fmt_ts(run_row['scored_at'])} · mean score {run_row['mean_score']:.3f}")

low_days, high_days = _days_range(db, dataset, run)
max_days = max(1, math.ceil(high_days))
_seed(max_days)

st.subheader("Build a cohort")
cut_col, filter_col = st.columns([1, 2], gap="large")
with cut_col:
    st.radio("Score cut", list(MODES), key=K_MODE, format_func=MODES.get, on_change=_reset_page,
             help="Top X % of users by score, every user at or above a score, or a fixed band.")
    mode = st.session_state[K_MODE]
    if mode == "top":
        st.number_input("Top %", min_value=0.1, max_value=100.0, step=0.5, key=K_TOP, on_change=_reset_page,
                        help="The share of scored users, highest scores first.")
    elif mode == "threshold":
        st.number_input("Minimum score", min_value=0.0, max_value=1.0, step=0.01, format="%.3f",
                        key=K_THRESHOLD, on_change=_reset_page,
                        help="Users whose predicted probability of buying is at least this.")
    else:
        st.selectbox("Band", list(C.BANDS), key=K_BAND, on_change=_reset_page,
                     format_func=lambda b: {"high": f"high (score ≥ {EDGES[1]:g})",
                                            "medium": f"medium ({EDGES[0]:g} ≤ score < {EDGES[1]:g})",
                                            "low": f"low (score < {EDGES[0]:g})"}[b],
                     help=f"Fixed score bands: low < {EDGES[0]:g} ≤ medium < {EDGES[1]:g} ≤ high.")
with filter_col:
    a, b = st.columns(2)
    with a:
        st.multiselect("Category interest", _categories(db, dataset, run), key=K_CATS, on_change=_reset_page,
                       accept_new_options=True, placeholder="any category",
                       help="Keep users who touched any of these categories (most common first; "
                            "type an id to add one that is not listed).")
        st.multiselect("Likely to buy in", _categories(db, dataset, run), key=K_LIKELY, on_change=_reset_page,
                       accept_new_options=True, placeholder="any category",
                       help=f"Keep users offered any of these categories: among a category model's "
                            f"{C.OFFER_COUNT} highest-probability categories for the user (for a model "
                            f"of any purchase: the user's {C.OFFER_COUNT} most-touched categories).")
        st.slider("Days since last visit", min_value=0, max_value=max_days, key=K_DAYS, on_change=_reset_page,
                  help="Days between the user's last event and T (the dataset's last event).")
    with b:
        st.radio("Open cart", list(CART_CHOICES), key=K_CART, format_func=CART_CHOICES.get,
                 horizontal=True, on_change=_reset_page,
                 help="An open cart: an item put in the cart and not bought afterwards.")
        lo, hi = C.ACTIVITY_EDGES
        st.multiselect("Activity level", list(C.ACTIVITY_LEVELS), key=K_ACTIVITY, on_change=_reset_page,
                       placeholder="any activity",
                       format_func=lambda v: {"light": f"light (< {lo} events)",
                                              "regular": f"regular ({lo}–{hi - 1} events)",
                                              "heavy": f"heavy (≥ {hi} events)"}[v],
                       help="Events the user has in the dataset up to T.")

_save()
_to_query(max_days)
spec = None
with feedback.guard():
    spec = _current_spec(max_days)
if spec is None:
    st.stop()
spec_json = json.dumps(spec.to_dict(), sort_keys=True)
st.session_state[SPEC_KEY] = spec.to_dict()
st.session_state[SPEC_MODEL_KEY] = model_dir

summary = _summary(db, model_id, dataset, run, spec_json, model_dir, card_stamp(model_dir))
st.markdown(f"**Cohort:** {summary.description}")
m = st.columns(5)
m[0].metric("Users", display.fmt_int(summary.size), help="Scored users in the cohort.")
m[1].metric("Share of users", display.fmt_pct(summary.share), help="Cohort size / users scored.")
m[2].metric("Expected buyers", f"{summary.expected_buyers:,.1f}",
            help="Sum of the cohort's predicted probabilities: buyers expected within the horizon.")
val = summary.measured
m[3].metric("Precision at this cut", display.fmt_pct(val.get("precision")),
            help="On the model's test window (the latest complete horizon, which nothing was selected "
                 "on): the share of users picked by the same cut who did buy. Filters are not applied "
                 "there (they describe users as of T).")
m[4].metric("Lift at this cut", "–" if not val or pd.isna(val.get("lift")) else f"{val['lift']:.2f}×",
            help="Precision at the cut / the base rate on the test window (filters not applied).")
if val:
    st.caption(f"Test window: the same cut picks {display.fmt_int(val['rows'])} rows, recall "
               f"{display.fmt_pct(val['recall'])}, base rate {display.fmt_pct(val['base_rate'])}. "
               "Filters are not applied on the test window.")
else:
    st.caption("This model has no saved test rows, so precision and lift at the cut are unknown.")

display.chart(charts.cohort_score_histogram(_histogram(db, model_id, dataset, run), cut=summary.min_score,
                                           band_edges=EDGES), key="cohort_histogram")

# Stateful tabs: only the open one runs its queries (a contrast over a million users is not free).
apart, value_tab, users_tab, export_tab, outlook_tab = st.tabs(
    ["What sets it apart", "Value", "Users", "Export", "Demand outlook"], key="cohort_tab", on_change="rerun")

with apart:
    if apart.open is False:
        pass
    elif summary.size == 0:
        st.info("The cohort is empty. Loosen the score cut or the filters.")
    else:
        contrast = _contrast(db, model_id, dataset, run, spec_json)
        left, right = st.columns(2)
        with left:
            display.chart(charts.cohort_contrast(contrast["categories"], title="Top categories",
                                                key_title="most-touched category"), key="contrast_categories")
            display.chart(charts.cohort_contrast(contrast["recency"], title="Recency",
                                                key_title="since the last visit",
                                                order=["< 1 hour", "1-24 hours", "1-3 days", "3-7 days", "7+ days"]),
                         key="contrast_recency")
        with right:
            display.chart(charts.cohort_contrast(contrast["behaviors"], title="Behaviour mix",
                                                key_title="behaviour", order=["view", "cart", "fav", "buy"]),
                         key="contrast_behaviors")
            display.chart(charts.cohort_contrast(contrast["patterns"], title="Over-represented last-3 patterns",
                                                key_title="last three behaviours"), key="contrast_patterns")

with value_tab:
    if value_tab.open is not False:
        st.caption("Contacting the k highest-scored users of the filtered population: expected value = "
                   "margin × expected buyers − contact cost × k.")
        a, b, c = st.columns(3)
        margin = a.number_input("Margin per buyer", min_value=0.0, value=10.0, step=1.0, key="cohort_margin",
                                help="What one extra buyer is worth to you.")
        cost = b.number_input("Contact cost per user", min_value=0.0, value=1.0, step=0.1, key="cohort_cost",
                              help="What contacting one user costs (message, discount, ...).")
        budget = c.number_input("Budget (users, 0 = none)", min_value=0, value=0, step=100, key="cohort_budget",
                                help="The most users you can contact; the best cut stays within it.")
        filtered = C.CohortSpec(**{**spec.to_dict(), "mode": "top", "top_percent": 100.0,
                                   "band_edges": EDGES, "categories": spec.categories,
                                   "activity": spec.activity})
        with feedback.guard():
            curve, best = _value(db, model_id, dataset, run, json.dumps(filtered.to_dict(), sort_keys=True),
                                 float(margin), float(cost), int(budget) or None)
            prefix_cut = spec.mode != "band" or spec.band == "high"
            display.chart(charts.value_curve(curve, best, cohort_size=summary.size if prefix_cut else None,
                                            budget=int(budget) or None), key="cohort_value")
            if best["k"]:
                v = st.columns(4)
                v[0].metric("Best cut", f"{display.fmt_int(best['k'])} users")
                v[1].metric("Expected value", f"{best['expected_value']:,.0f}")
                v[2].metric("Expected buyers", f"{best['expected_buyers']:,.1f}")
                v[3].metric("Lowest score", f"{best['min_score']:.3f}")
                st.button("Use this cut", key="cohort_use_best", on_click=_use_threshold, args=(best["min_score"],),
                          help="Make the cohort every user scoring at least the best cut's lowest score.")

with users_tab:
    if users_tab.open is False:
        pass
    elif summary.size == 0:
        st.info("The cohort is empty. Loosen the score cut or the filters.")
    else:
        a, b, c, d = st.columns(4)
        order_by = a.selectbox("Sort by", list(SORT_LABELS), key=K_SORT, format_func=lambda k: SORT_LABELS[k],
                               on_change=_reset_page, help="The column the table is sorted on.") or "score"
        descending = b.toggle("Descending", value=True, key=K_DESC, on_change=_reset_page,
                              help="Highest values first.")
        page_size = c.selectbox("Rows per page", PAGE_SIZES, index=1, key=K_PAGE_SIZE, on_change=_reset_page,
                                help="Only this page is read from the database.")
        pages = max(1, math.ceil(summary.size / page_size))
        st.session_state.setdefault(K_PAGE, 1)
        if st.session_state[K_PAGE] > pages:
            st.session_state[K_PAGE] = pages
        page_no = d.number_input("Page", min_value=1, max_value=pages, step=1, key=K_PAGE,
                                 help=f"Which page of the cohort to show (1–{pages:,}).")
        rows = _users(db, model_id, dataset, run, spec_json, order_by, descending, page_size,
                      (int(page_no) - 1) * page_size)
        link_params = {"dataset": dataset, "model": Path(model_dir).name}
        table = rows.assign(explain=[f"explanations?{urlencode({**link_params, 'user': u})}"
                                     for u in rows["user_id"]])
        table["score_rank"] = table["score_rank"] * 100
        st.dataframe(
            table, hide_index=True, key="cohort_table",
            column_order=["explain", "user_id", "score", "score_rank", "activity", "n_events", "open_carts",
                          "days_since_last", "top_category", "offers"]
                         + (["category"] if rows["category"].notna().any() else []),
            column_config={
                "explain": st.column_config.LinkColumn("Explain", display_text="open ↗",
                                                       help="Open this user on the Explain page."),
                "user_id": st.column_config.TextColumn("user id"),
                "score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0, format="%.3f"),
                "score_rank": st.column_config.NumberColumn("top %", format="%.2f %%",
                                                            help="Share of users scoring higher."),
                "n_events": st.column_config.NumberColumn("events", format="localized"),
                "open_carts": st.column_config.NumberColumn("open carts", format="localized"),
                "days_since_last": st.column_config.NumberColumn("days since last visit", format="%.1f"),
                "top_category": st.column_config.TextColumn("top category"),
                "offers": st.column_config.TextColumn(
                    "offer", help=f"What to offer: the user's {C.OFFER_COUNT} most likely categories with the "
                                  "model's probability of a purchase in each (a category model), or the user's "
                                  "most-touched categories, marked 'from events' (a model of any purchase: "
                                  "not a probability)."),
            })
        first = (int(page_no) - 1) * page_size
        st.caption(f"Page {display.fmt_int(page_no)} of {display.fmt_int(pages)}: rows "
                   f"{display.fmt_int(first + 1)}–{display.fmt_int(first + len(rows))} of "
                   f"{display.fmt_int(summary.size)}.")
        pick, go_col = st.columns([3, 1], vertical_alignment="bottom")
        chosen = pick.selectbox("Explain a user of this page", rows["user_id"].tolist(), key="cohort_explain_user",
                                help="Open the Explain page with this user selected.")
        if go_col.button("Explain", icon=":material/psychology:", key="cohort_explain_go",
                         help="Why does the model score this user the way it does?"):
            st.switch_page(registry.page_path("explain"), query_params={**link_params, "user": chosen})

with export_tab:
    if export_tab.open is not False:
        fmt = st.radio("Format", ["csv", "parquet"], key=K_FMT, horizontal=True, format_func=str.upper,
                       help="CSV: the audit stamp is in '#' lines before the header. Parquet: in the file's "
                            "metadata. Both also get a .audit.json sidecar.")
        export_key = f"{model_id}|{dataset}|{run}|{spec_json}|{fmt}"
        if st.button("Prepare the export file", icon=":material/description:", key="cohort_prepare_export",
                     help="Write the whole cohort (every user, not only this page) with its audit stamp."):
            with feedback.guard(), st.spinner("Writing the cohort…"), \
                    tempfile.TemporaryDirectory(prefix="intentlens-export-") as tmp:
                path = Path(tmp) / f"cohort-{model_id}.{fmt}"
                stamp = C.export_cohort(cached.get_store(), model_id, dataset, spec, path, fmt=fmt)
                st.session_state[K_EXPORT] = {"key": export_key, "data": path.read_bytes(),
                                              "name": path.name, "stamp": stamp,
                                              "sidecar": Path(str(path) + ".audit.json").read_text()}
        ready = st.session_state.get(K_EXPORT)
        if ready and ready["key"] == export_key:
            a, b = st.columns(2)
            a.download_button(f"Download {ready['name']}", ready["data"], file_name=ready["name"],
                              mime="text/csv" if fmt == "csv" else "application/vnd.apache.parquet",
                              icon=":material/download:", key="cohort_download", on_click="ignore",
                              help=f"{display.fmt_int(ready['stamp']['rows'])} users with the audit stamp.")
            b.download_button("Download the audit sidecar (.json)", ready["sidecar"],
                              file_name=ready["name"] + ".audit.json", mime="application/json",
                              key="cohort_download_sidecar", on_click="ignore",
                              help="The same stamp as a separate JSON file.")
            st.markdown("**Audit stamp**")
            st.json({k: v for k, v in ready["stamp"].items() if k != "cohort"}, expanded=False)
        else:
            st.caption("Press **Prepare the export file** to write this cohort; the download button "
                       "appears here with the file's audit stamp (model id, dataset fingerprint, cut, "
                       "filters, SQL, time).")

with outlook_tab:
    if outlook_tab.open is not False:
        st.caption("Expected purchasers per category over the next horizon: each user's probability of "
                   "buying in each category they touched recently, summed, with a 90 % Poisson-binomial "
                   "interval (the spread chance alone gives if the probabilities are right), beside the "
                   "buyers of the last complete horizon. The whole scoring run, not only the cohort.")
        top_n = st.number_input("Categories shown", min_value=1, max_value=200, value=20, step=5,
                                key="cohort_outlook_top", help="The categories with the most expected purchasers.")
        with feedback.guard():
            view = _outlook(db, model_id, dataset, run, model_dir, card_stamp(model_dir), int(top_n))
            display.chart(charts.demand_outlook(view.frame, level=view.level, horizon=view.horizon),
                          key="cohort_outlook_chart")
            st.dataframe(view.frame.drop(columns=["realized"]), hide_index=True, key="cohort_outlook_table",
                         column_config={"users": st.column_config.NumberColumn("users scored", format="localized"),
                                        "expected": st.column_config.NumberColumn("expected", format="%.1f"),
                                        "low": st.column_config.NumberColumn("90 % low"),
                                        "high": st.column_config.NumberColumn("90 % high"),
                                        "last_actual": st.column_config.NumberColumn("last horizon's buyers")})
            totals = view.totals()
            st.caption(f"{view.describe()} Shown: {totals['expected']:,.1f} expected against "
                       f"{totals['last_actual']:,.0f} buyers last horizon ({len(view.frame)} of {view.categories} "
                       "categories). A user who buys in a category they had not touched before T is not in "
                       "the expected count, and a model that is off shifts every bar: the interval covers "
                       "chance, not model error.")
