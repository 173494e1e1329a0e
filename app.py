"""IntentLens: purchase-intent analytics on e-commerce behaviour logs.

Run with ``streamlit run app.py``. This entry script only sets the page up, loads the shipped data
on a first start, draws the sidebar (dataset and model pickers) and hands over to the page the
navigation selects. Pages live in ``pages/``; their list is ``pages.common.PAGES``.
"""
import streamlit as st

from pages import common

st.set_page_config(page_title="IntentLens", page_icon=":material/travel_explore:", layout="wide",
                   initial_sidebar_state="expanded")

page = st.navigation([
    st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path,
            default=(i == 0))
    for i, spec in enumerate(common.available_pages())
])
common.ensure_first_start_data()
common.sidebar()
page.run()
