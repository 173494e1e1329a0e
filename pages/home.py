"""Home: what IntentLens does, the current dataset and model at a glance, links to every page."""
import streamlit as st

from pages import common

st.title("IntentLens")
st.markdown(
    "IntentLens reads e-commerce behaviour logs (views, carts, favourites, buys) and predicts which "
    "shoppers are about to buy. Merchandisers pick high-intent cohorts from those scores, analysts "
    "see why the model ranks a user the way it does, and everyone can check how good it is.")
common.show_flash()

dataset = common.current_dataset()
left, right = st.columns(2, gap="large")
with left:
    st.subheader("Current dataset")
    if dataset is None:
        st.info("No dataset yet. Open the **Data** page to ingest a sample or your own log.")
    else:
        with common.guard():
            info = common.dataset_info(dataset)
            st.markdown(f"**{dataset}** · layout `{info['layout']}` · from `{info['source_file']}`")
            a, b, c = st.columns(3)
            a.metric("Users", common.fmt_int(info["n_users"]))
            b.metric("Events", common.fmt_int(info["rows_stored"]))
            c.metric("Items", common.fmt_int(info["n_items"]))
            st.caption(f"Time range (UTC): {common.fmt_span(info['ts_min'], info['ts_max'])} · "
                       f"source time zone {info['source_tz'] or 'UTC'}")

with right:
    st.subheader("Current model")
    models = common.saved_models()
    chosen = common.current_model()
    row = models[models["path"] == chosen] if chosen and not models.empty else models.iloc[0:0]
    if row.empty:
        st.info("No trained model yet. Train one on the **Train** page, or run "
                "`python -m core train --dataset NAME`.")
    else:
        card = row.iloc[0]
        a, b, c = st.columns(3)
        a.metric("Model kind", str(card["kind"] or "–"))
        b.metric("Validation PR-AUC", "–" if card["pr_auc"] is None else f"{card['pr_auc']:.3f}",
                 help="Area under the precision-recall curve on the last complete time window.")
        c.metric("Horizon", str(card["horizon"] or "–"))
        st.caption(f"`{card['model_id']}` · trained on dataset **{card['dataset'] or '–'}**")
        if dataset is not None and card["dataset"] not in (None, dataset):
            st.warning(f"This model was trained on **{card['dataset']}**, not on the current "
                       f"dataset **{dataset}**.")

st.subheader("Pages")
link_params = {"dataset": dataset} if dataset else None
columns = st.columns(3)
links = [spec for spec in common.available_pages() if spec.path != "pages/home.py"]
for i, spec in enumerate(links):
    with columns[i % 3]:
        st.page_link(spec.path, label=spec.title, icon=spec.icon, query_params=link_params)
        st.caption(spec.blurb)
if common.is_demo():
    st.caption(":material/lock: Demo mode: this session is read-only (no uploads, training or deletes).")
