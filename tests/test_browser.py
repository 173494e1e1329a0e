"""The running app in a real browser: `streamlit run app.py` on a loopback port, Debian's Chromium
through Playwright. The database starts empty, so this also checks the first start loads the
shipped data without any user action."""
from __future__ import annotations

import pytest

from tests.browser_util import (app_server, browser, browser_db, exceptions, nav_links,  # noqa: F401
                                needs_chromium, open_page, page, plotly_count, wait_for_app)

pytestmark = [pytest.mark.browser, needs_chromium]

OVERVIEW_CHARTS = 5   # events per day, hour of day, funnel, events per user, top categories


def test_every_page_renders_and_data_page_draws_its_charts(page, app_server):
    page.goto(app_server.url)
    wait_for_app(page)
    # First start: the shipped data is there without anyone clicking anything.
    page.get_by_text("Current dataset").wait_for()
    assert not page.get_by_text("No dataset yet").count(), app_server.log_tail()
    titles = nav_links(page)
    assert titles[:2] == ["Home", "Data"], titles

    for title in titles:
        open_page(page, title)
        page.locator("h1").first.wait_for()
        if title == "Data":
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length >= {OVERVIEW_CHARTS}")
            assert plotly_count(page) >= OVERVIEW_CHARTS
            assert page.locator('[data-testid="stDataFrame"]').count() >= 1
        assert exceptions(page) == [], f"{title}: {exceptions(page)}\n{app_server.log_tail()}"

    # A link with ?dataset= reopens the same view.
    open_page(page, "Data")
    assert "dataset=" in page.url
    page.goto(page.url)
    wait_for_app(page)
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {OVERVIEW_CHARTS}")
    assert exceptions(page) == []
