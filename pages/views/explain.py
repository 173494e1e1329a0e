"""Explain: why the model scores one user the way it does, and what drives scores in a cohort.

The page opens on a user at once: the one a link names (``?user=``), else the one this session
last looked at, else the top-scored user of the model's scoring run; type an id (with prefix
suggestions), draw a random user from a score band, or open one from the Cohorts page to change
it. For that user: the score, its rank and a one-sentence summary; the timeline coloured by each
method's attribution; attention per layer and head; the faithfulness check; a what-if editor.
Below, global drivers for the cohort built on the Cohorts page (or everyone), and the tree
baseline's SHAP plots when the model has one.

Each section is one ``core.insight.drivers`` call, cached here per model (directory + card
stamp), dataset version and user, or per cohort and sample size.
"""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core import charts
from core.data.schema import BEHAVIORS
from core.errors import IntentLensError
from core.insight import cohorts as C
from core.insight import drivers as D
from core.insight import explain as E
from core.modeling.model_store import card_stamp
from pages.shared import cached, display, feedback, session

USER_KEY, SUGGEST_KEY, LAST_PARAM = "explain_user", "explain_suggestion", "_explain_last_user_param"
SAVED_USER_KEY = "_explain_saved_user"      # the session's last user (kept while the page is closed)
BAND_KEY, SEED_KEY, METHOD_KEY = "explain_band", "_explain_seed", "explain_method"
COHORT_SPEC_KEY, COHORT_MODEL_KEY = "cohort_spec", "cohort_model"       # written by the Cohorts page
EDGES = C.DEFAULT_BAND_EDGES
SAMPLE_SIZES = (100, 250, 500, 1000)
Added = tuple[tuple[str, str | None, float], ...]   # what-if events: behaviour, category, seconds before T


# -- cached computations ------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=32)
def _explanation(db: str, model_dir: str, stamp: int, dataset: str, version: str,
                 user: str, methods: tuple[str, ...]) -> E.Explanation:
    """``methods`` for one user. A resource (not data): it holds the model and the user's
    sequence for the what-if and faithfulness checks; pages read it and never change it."""
    return D.explain(cached.get_store(), model_dir, dataset, user, methods)


@st.cache_data(show_spinner=False, max_entries=64)
def _faithfulness(db: str, model_dir: str, stamp: int, dataset: str, version: str,
                  user: str, methods: tuple[str, ...]) -> pd.DataFrame:
    return D.faithfulness_of(_explanation(db, model_dir, stamp, dataset, version, user, methods))


@st.cache_data(show_spinner=False, max_entries=256)
def _what_if(db: str, model_dir: str, stamp: int, dataset: str, version: str, user: str,
             methods: tuple[str, ...], removed: tuple[int, ...], added: Added) -> dict[str, float]:
    return D.what_if_of(_explanation(db, model_dir, stamp, dataset, version, user, methods), removed, added)


@st.cache_data(show_spinner=False, max_entries=64)
def _suggestions(db: str, dataset: str, version: str, prefix: str) -> list[str]:
    return C.search_users(cached.get_store(), dataset, prefix)


@st.cache_data(show_spinner=False, max_entries=32)
def _first_user(db: str, model_id: str, dataset: str, run: str) -> str | None:
    return D.first_user(cached.get_store(), model_id, dataset)


def _cohort(cohort_json: str | None) -> C.CohortSpec | None:
    return None if cohort_json is None else C.CohortSpec.from_json(cohort_json)


@st.cache_data(show_spinner=False, max_entries=32)
def _drivers(db: str, model_dir: str, stamp: int, dataset: str, version: str, run: str | None,
             cohort_json: str | None, n_users: int, method: str) -> dict[str, pd.DataFrame]:
    """Global drivers of everyone (``cohort_json`` None) or of a cohort sample of ``n_users``."""
    return D.cohort_drivers(cached.get_store(), model_dir, dataset, _cohort(cohort_json), n_users, method)


@st.cache_data(show_spinner=False, max_entries=16)
def _tree_shap(db: str, model_dir: str, stamp: int, dataset: str, version: str, run: str | None,
               cohort_json: str | None, n_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tree SHAP values of the model's GBDT member for a sample of users (the cohort or everyone)."""
    return D.tree_shap_drivers(cached.get_store(), model_dir, dataset, _cohort(cohort_json), n_users)


# -- user selection -------------------------------------------------------------------------------
def _take_suggestion() -> None:
    chosen = st.session_state.get(SUGGEST_KEY)
    if chosen:
        st.session_state[USER_KEY] = chosen


def _random_user(model_id: str, dataset: str) -> None:
    """Callback of "Random user": a user drawn from the chosen band (a new draw each press)."""
    seed = st.session_state.get(SEED_KEY, 0) + 1
    st.session_state[SEED_KEY] = seed
    try:
        st.session_state[USER_KEY] = C.random_user(cached.get_store(), model_id, dataset,
                                                   st.session_state[BAND_KEY], EDGES, seed=seed)
    except IntentLensError as err:
        feedback.flash("warning", f"**{err.title}.** {err.message} {err.hint or ''}")


def _seed_user(first: str | None) -> None:
    """The user shown before the box is drawn: a new ``?user=`` link wins (once per distinct
    link; typing another id afterwards wins), else the box keeps its value, else the session's
    last user (Streamlit drops the box's value while the page is closed), else ``first``."""
    state = st.session_state
    wanted = session.query_param("user")
    if wanted and wanted != state.get(LAST_PARAM):
        state[USER_KEY] = wanted
    elif USER_KEY not in state:
        state[USER_KEY] = state.get(SAVED_USER_KEY, first or "")


def _event_labels(events: pd.DataFrame) -> dict[int, str]:
    """'#3 cart · cat 42 · 06-04 13:05' per event position, oldest first."""
    ordered = events.sort_values("position")
    return {int(pos): f"#{int(pos)} {beh} · cat {cat} · {pd.Timestamp(ts):%m-%d %H:%M}"
            for pos, beh, cat, ts in zip(ordered["position"], ordered["behavior"], ordered["category"],
                                         ordered["ts"], strict=True)}


# -- page ---------------------------------------------------------------------------------------
st.title("Explain")
st.caption("Why does the model think this user will buy? Attributions on the user's own timeline, "
           "checked for faithfulness, and what drives scores across a cohort.")
feedback.show_flash()

dataset, model_dir = session.require_dataset_and_model(
    "No trained model yet. Train one on the **Train** page to explain its scores.")
model_id = None
with feedback.guard():
    model_id = cached.model_id(model_dir)
if model_id is None:
    st.stop()
db, version, mtime = cached.db_path(), cached.data_version(dataset), card_stamp(model_dir)
run = cached.run_stamp(model_id, dataset)
first = None if run is None else _first_user(db, model_id, dataset, run)

_seed_user(first)
pick, rand = st.columns([3, 2], gap="large")
with pick:
    st.text_input("User id", key=USER_KEY, placeholder="type a user id (or its first characters)",
                  help="The id as the source file wrote it. Suggestions below match what you typed "
                       "at the start of the id (20 at most).")
    typed = st.session_state[USER_KEY].strip()
    if typed:
        matches = _suggestions(db, dataset, version, typed)
        if matches and matches != [typed]:
            st.selectbox("Suggestions", matches, index=None, key=SUGGEST_KEY, on_change=_take_suggestion,
                         placeholder=f"{len(matches)} ids start with “{typed}”",
                         help="Pick one to explain that user.")
with rand:
    a, b = st.columns([3, 2], vertical_alignment="bottom")
    a.selectbox("Score band", list(C.BANDS), key=BAND_KEY,
                format_func=lambda x: {"high": f"high (≥ {EDGES[1]:g})",
                                       "medium": f"medium ({EDGES[0]:g}–{EDGES[1]:g})",
                                       "low": f"low (< {EDGES[0]:g})"}[x],
                help="Draw a user whose score falls in this band of the model's scoring run.")
    b.button("Random user", icon=":material/casino:", key="explain_random", on_click=_random_user,
             args=(model_id, dataset), disabled=run is None,
             help="Explain a random user of the chosen band." if run is not None
             else "Needs a scoring run: press Re-score on the Cohorts page first.")

user = st.session_state[USER_KEY].strip()
st.session_state[LAST_PARAM] = user or st.query_params.get("user")
st.session_state[SAVED_USER_KEY] = user
if user:
    st.query_params["user"] = user
else:
    st.query_params.pop("user", None)

exp = None
if not user:
    st.info("Type a user id above, pick a random user from a score band, or open a user from the "
            "**Cohorts** page's user table."
            + (" Once this model has scored the dataset (Re-score on the **Cohorts** page), its "
               "top-scored user is shown here first." if run is None else ""))
else:
    if user == first:
        st.caption(":material/star: The top-scored user of this model's scoring run; type another id "
                   "or draw one to change it.")
    with feedback.guard(), st.spinner(f"Explaining user {user}…"):
        all_methods, quick = D.user_methods(model_dir), D.quick_methods(model_dir)
        if st.session_state.get(METHOD_KEY) not in all_methods:
            st.session_state[METHOD_KEY] = quick[0]
        # SHAP only once it is picked: its first run in a server compiles kernels (seconds)
        methods = all_methods if st.session_state[METHOD_KEY] not in quick else quick
        exp = _explanation(db, model_dir, mtime, dataset, version, user, methods)

if exp is not None:
    m = st.columns(4)
    m[0].metric("Score", f"{exp.score:.3f}", help="Predicted probability that the user buys within the "
                                                  "model's horizon after T.")
    pct = exp.top_percent
    m[1].metric("Rank", "–" if pct is None else f"top {pct:.1f} %" if pct >= 0.1 else f"top {pct:.2f} %",
                help="Share of users in the model's scoring run scoring at least as high."
                     if exp.rank is not None else "This model has not scored the dataset yet (Cohorts page).")
    m[2].metric("Position", "–" if exp.rank is None else f"#{exp.rank:,} of {exp.n_scored:,}",
                help="1 = the highest score in the scoring run.")
    m[3].metric("Events", display.fmt_int(len(exp.events)), help="Events the model reads for this user, up to T.")
    st.markdown(f"> {exp.summary}")
    st.caption(f"T = {display.fmt_ts(exp.cutoff)} (UTC), the dataset's last event · model `{exp.model_id}`"
               + (f" · target category {exp.category}" if exp.category else ""))
    if run is not None and model_id is not None:
        with feedback.guard():
            offers = C.user_offers(cached.get_store(), model_id, dataset, user)
        if not offers.empty and (offers["source"] == "model").all():
            st.markdown("**What to offer**: " + ", ".join(
                f"category {c} ({100 * p:.0f} % likely to buy)" for c, p in zip(offers["category"],
                                                                                offers["probability"], strict=True)))
        elif not offers.empty:
            st.markdown("**What to offer** (from recent events, not a model probability): " + ", ".join(
                f"category {c} ({n} of the last {C.RECENT_EVENTS} events)"
                for c, n in zip(offers["category"], offers["events"], strict=True)))

    if not exp.methods:
        st.info("This model has no Transformer, so there is no per-event attribution; below is tree SHAP "
                "on its aggregate features.")
        if exp.features is not None:
            st.dataframe(exp.features, hide_index=True,
                         column_config={"shap": st.column_config.NumberColumn("SHAP (log-odds)", format="%+.4f")})
    else:
        st.radio("Attribution method", list(all_methods), key=METHOD_KEY, horizontal=True,
                 format_func=charts.METHOD_LABELS.get,
                 help="Integrated gradients: what each event's content adds to the logit against a "
                      "blank event. SHAP: each event's Shapley value for being present. Attention "
                      "rollout: how much [CLS] reads each event (not a signed effect). SHAP is computed when "
                      "picked; its first run on a server compiles its kernels (about 10 s).")
        method = st.session_state[METHOD_KEY]
        if method == "ig" and exp.ig_delta is not None:
            st.caption(f"Integrated gradients: completeness error {exp.ig_delta:+.4f} logit units.")
        elif method == "shap" and exp.shap_base_value is not None:
            st.caption(f"SHAP: base value (no events) {exp.shap_base_value:+.3f} logit; values sum to the "
                       "user's logit.")
        by_order = st.toggle("Space events evenly", key="explain_by_order",
                             help="Draw events in their order (1 = oldest) instead of at their time, so a "
                                  "burst of events within minutes does not pile up.")
        display.chart(charts.attribution_timeline(exp.events, method, cutoff=exp.cutoff, by_order=by_order),
                     key="explain_timeline")
        left, right = st.columns(2)
        with left:
            display.chart(charts.attribution_bars(exp.events, method), key="explain_bars")
        with right:
            with feedback.guard():
                display.chart(charts.faithfulness_curves(
                    _faithfulness(db, model_dir, mtime, dataset, version, user, methods)), key="explain_faithfulness")
            st.caption("Remove the k events each method ranks highest and re-score; a faithful method "
                       "lowers the score more than removing k random events (grey band: ± 1 sd).")

        if exp.attention is not None and not exp.attention.empty:
            st.subheader("Attention")
            layers = sorted(exp.attention["layer"].unique())
            heads = sorted(exp.attention["head"].unique())
            a, b = st.columns(2)
            layer = a.selectbox("Layer", [None] + [int(x) for x in layers], key="explain_layer",
                                format_func=lambda x: "all layers" if x is None else f"layer {x + 1}",
                                help="Which Transformer layer's attention to show.")
            head = b.selectbox("Head", [None] + [int(x) for x in heads], key="explain_head",
                               format_func=lambda x: "all heads" if x is None else f"head {x + 1}",
                               help="Which attention head to show.")
            display.chart(charts.attention_heatmap(exp.attention, exp.events, layer=layer, head=head),
                         key="explain_attention")

        st.subheader("What if")
        events = exp.events.sort_values("position")
        labels = _event_labels(events)
        a, b = st.columns([3, 2], gap="large")
        removed = a.multiselect("Remove events", list(labels), format_func=lambda p: labels[p], key="explain_remove",
                                help="Re-score the user as if these events had not happened.")
        with b:
            add = st.toggle("Add a hypothetical event", key="explain_add",
                            help="Add one event at a chosen time before T and re-score; the user's "
                                 "sequence is rebuilt as the data path would build it.")
            added: Added = ()
            if add:
                cats = list(dict.fromkeys(events["category"].dropna().astype(str).tolist()[::-1]))
                behavior = st.selectbox("Behaviour", list(BEHAVIORS), index=BEHAVIORS.index("cart"),
                                        key="explain_add_behavior", help="What the user does.")
                category = st.selectbox("Category", cats or ["(unknown)"], key="explain_add_category",
                                        accept_new_options=True,
                                        help="Categories of this user's events (newest first); type another id.")
                lookback = exp.model.spec.lookback_td          # an event before it is outside the model's window
                longest = 24.0 * 30 if lookback is None else min(24.0 * 30, lookback.total_seconds() / 3600 - 0.5)
                hours = st.number_input("Hours before T", min_value=0.0, max_value=max(longest, 0.0),
                                        value=min(1.0, max(longest, 0.0)), step=0.5, key="explain_add_hours",
                                        help="How long before T the event happens (within the model's lookback).")
                added = ((behavior, None if category == "(unknown)" else str(category), float(hours) * 3600.0),)
        if removed or added:
            with feedback.guard():
                result = _what_if(db, model_dir, mtime, dataset, version, user, methods,
                                  tuple(sorted(removed)), added)
                c1, c2 = st.columns(2)
                c1.metric("Score now", f"{result['before']:.4f}")
                c2.metric("What-if score", f"{result['after']:.4f}", delta=f"{result['delta']:+.4f}",
                          help="The model's score with the edits above.")
        else:
            st.caption("Remove events or add a hypothetical one to see how the score would change.")

# -- global drivers --------------------------------------------------------------------------------
st.divider()
st.subheader("Global drivers")
cohort = st.session_state.get(COHORT_SPEC_KEY)
use_cohort = cohort is not None and st.session_state.get(COHORT_MODEL_KEY) == model_dir and run is not None
cohort_json = json.dumps(cohort, sort_keys=True) if use_cohort else None
if cohort_json is not None:
    st.caption(f"Cohort from the Cohorts page: **{C.CohortSpec.from_json(cohort_json).describe()}**, "
               "against everyone.")
else:
    st.caption("Everyone (build a cohort on the **Cohorts** page to compare it with everyone).")
DRIVER_KEYS = {"explain_drivers_users": 250, "explain_drivers_method": "ig", "explain_drivers_on": False}
saved = st.session_state.setdefault("_explain_drivers_saved", dict(DRIVER_KEYS))
for key in DRIVER_KEYS:                  # survive a visit to another page (Streamlit drops the keys)
    st.session_state.setdefault(key, saved[key])
a, b, c = st.columns([2, 2, 1], vertical_alignment="bottom")
n_users = a.select_slider("Users sampled", SAMPLE_SIZES, key="explain_drivers_users",
                          help="Users explained per population (a fixed sample); more is steadier and slower.")
driver_method = b.radio("Method", ["ig", "attention"], key="explain_drivers_method", horizontal=True,
                        format_func=charts.METHOD_LABELS.get,
                        help="Integrated gradients (signed effect) or attention rollout, averaged per event.")
show = c.toggle("Compute", key="explain_drivers_on",
                help="Explain the sampled users (a few seconds per hundred; cached per model and cohort).")
saved.update({key: st.session_state[key] for key in DRIVER_KEYS})
if not show:
    st.info("Switch **Compute** on to see mean attribution by behaviour, time before T and category.")
else:
    with feedback.guard(), st.spinner("Explaining the sampled users…"):
        everyone = _drivers(db, model_dir, mtime, dataset, version, run, None, n_users, driver_method)
        frames = everyone
        if cohort_json is not None:
            mine = _drivers(db, model_dir, mtime, dataset, version, run, cohort_json, n_users, driver_method)
            frames = D.contrast_drivers(mine, everyone)
        left, right = st.columns(2)
        with left:
            display.chart(charts.driver_bars(frames["behavior"], title="By behaviour", group_title="behaviour",
                                            order=list(BEHAVIORS)), key="drivers_behavior")
        with right:
            display.chart(charts.driver_bars(frames["gap"], title="By time before T", group_title="time before T",
                                            order=list(E.GAP_LABELS)), key="drivers_gap")
        display.chart(charts.driver_bars(frames["category"], title="By category (busiest)",
                                        group_title="category"), key="drivers_category")

    loaded = None
    with feedback.guard():
        loaded = cached.loaded_model(model_dir)
    if loaded is not None and getattr(loaded, "gbdt", None) is not None:
        if run is None:
            st.info("Tree SHAP needs a scoring run: press Re-score on the Cohorts page first.")
        else:
            with feedback.guard(), st.spinner("Tree SHAP on the baseline's features…"):
                values, feats = _tree_shap(db, model_dir, mtime, dataset, version, run, cohort_json, n_users)
                left, right = st.columns(2)
                with left:
                    display.chart(charts.shap_beeswarm(values, feats), key="drivers_beeswarm")
                with right:
                    display.chart(charts.shap_bar(values), key="drivers_shap_bar")
    elif loaded is not None:
        st.caption("This model has no gradient-boosted member, so there are no tree SHAP plots; train a "
                   "'gbdt' or 'ensemble' model to see them.")
