"""AppTest helpers shared by the page tests: every page runs through the real entry script
(app.py with st.navigation), opened the way a user or a shared link opens it."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def run_app(timeout: float, **query: str) -> AppTest:
    """app.py run once with ``query`` as the URL's query parameters; no exception shown."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def open_app_page(page: str, timeout: float, **query: str) -> AppTest:
    """app.py run with ``query``, then switched to ``page`` (e.g. ``pages/data.py``)."""
    at = run_app(timeout, **query)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def open_app_tab(at: AppTest, key: str, label: str, *, in_url: bool = False) -> AppTest:
    """Open tab ``label`` of the stateful ``st.tabs`` with ``key`` (only the open tab runs) and
    rerun. ``in_url``: the tabs are bound to the URL, so set ``?key=label`` too, as a shared link
    does (the default tab is left out of the URL, so the link alone cannot reopen that one)."""
    if in_url:
        at.query_params[key] = label
    at.session_state[key] = label
    at.run()
    assert not at.exception, at.exception
    return at
