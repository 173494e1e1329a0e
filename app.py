"""IntentLens: purchase-intent analytics on e-commerce behaviour logs.

Run with ``streamlit run app.py``. This entry script only sets the page up, loads the shipped data
on a first start, draws the sidebar (dataset and model pickers) and hands over to the page the
navigation selects. Page scripts live in ``pages/views/`` and are listed in
``pages.shared.registry.PAGES``; ``pages/__init__.py`` says why no script sits in ``pages/`` itself.
"""
import streamlit as st

from pages.shared import actions, cached, registry, session

st.set_page_config(page_title="IntentLens", page_icon=":material/travel_explore:", layout="wide",
                   initial_sidebar_state="expanded")

page = st.navigation([
    st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=(i == 0))
    for i, spec in enumerate(registry.available_pages())
])
actions.ensure_first_start_data()
cached.sample_app_resources()
session.sidebar()
page.run()
