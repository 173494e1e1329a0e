"""Home: what IntentLens does, the current dataset and model at a glance, links to every page.

Key figures sit in wrapping rows of content-wide metrics, so a value is never cut ("transf…"):
a narrow window moves a figure to the next line instead.
"""
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from models.artifact import KIND_LABELS
from pages.shared import cached, display, feedback, registry, session

st.title("IntentLens")
st.markdown(
    "IntentLens reads e-commerce behaviour logs (views, carts, favourites, buys) and predicts which "
    "shoppers are about to buy. Merchandisers pick high-intent cohorts from those scores, analysts "
    "see why the model ranks a user the way it does, and everyone can check how good it is.")
feedback.show_flash()


def figures() -> DeltaGenerator:
    """A row of metrics that wraps instead of cutting a value."""
    return st.container(horizontal=True, gap="medium")


dataset = session.current_dataset()
left, right = st.columns(2, gap="large")
with left:
    st.subheader("Current dataset")
    if dataset is None:
        st.info("No dataset yet. Open the **Data** page to ingest a sample or your own log.")
    else:
        with feedback.guard():
            info = cached.dataset_info(dataset)
            st.markdown(f"**{dataset}** · layout `{info['layout']}` · from `{info['source_file']}`")
            with figures():
                st.metric("Users", display.fmt_int(info["n_users"]), width="content")
                st.metric("Events", display.fmt_int(info["rows_stored"]), width="content")
                st.metric("Items", display.fmt_int(info["n_items"]), width="content")
            st.caption(f"Time range (UTC): {display.fmt_span(info['ts_min'], info['ts_max'])} · "
                       f"source time zone {info['source_tz'] or 'UTC'}")

with right:
    st.subheader("Current model")
    models = cached.saved_models()
    chosen = session.current_model()
    row = models[models["path"] == chosen] if chosen and not models.empty else models.iloc[0:0]
    if row.empty:
        st.info("No trained model yet. Train one on the **Train** page, or run "
                "`python -m core train --dataset NAME`.")
    else:
        card = row.iloc[0]
        kind = str(card["kind"] or "–")
        with figures():
            st.metric("Model kind", kind, width="content", help=KIND_LABELS.get(kind))
            st.metric("PR-AUC" if card["window"] == "test" else "Validation PR-AUC",
                      "–" if pd.isna(card["pr_auc"]) else f"{card['pr_auc']:.3f}", width="content",
                      help="Area under the precision-recall curve on the test window: the last complete "
                           "time window, which nothing was selected on (a model older than the test "
                           "window: on its validation window).")
            st.metric("Horizon", str(card["horizon"] or "–"), width="content",
                      help="A user counts as a buyer when they buy within this time after the cutoff.")
        st.caption(f"`{card['model_id']}` · {KIND_LABELS.get(kind, kind)} · trained on dataset "
                   f"**{card['dataset'] or '–'}**")
        if dataset is not None and card["dataset"] not in (None, dataset):
            st.warning(f"This model was trained on **{card['dataset']}**, not on the current "
                       f"dataset **{dataset}**.")

st.subheader("Pages")
link_params = {"dataset": dataset} if dataset else None
columns = st.columns(3)
links = [spec for spec in registry.available_pages() if spec.title != "Home"]
for i, spec in enumerate(links):
    with columns[i % 3]:
        st.page_link(spec.path, label=spec.title, icon=spec.icon, query_params=link_params)
        st.caption(spec.blurb)
if session.is_demo():
    st.caption(":material/lock: Demo mode: this session is read-only (no uploads, training or deletes).")
