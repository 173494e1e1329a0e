"""The running app in a real browser: `streamlit run app.py` on a loopback port, Debian's Chromium
through Playwright. The database starts empty, so this also checks the first start loads the
shipped data without any user action; a fresh server's first paint lists only the pages' titles."""
from __future__ import annotations

from pathlib import Path

import pytest

from pages.shared import registry
from tests.browser_util import (
    ROOT,
    app_server,
    browser,
    browser_db,
    exceptions,
    nav_links,
    needs_chromium,
    new_tab,
    open_page,
    open_tab,
    page,
    plotly_count,
    record_navigation,
    start_server,
    stop_server,
    truncated_metrics,
    wait_for_app,
)

pytestmark = [pytest.mark.browser, needs_chromium]
FIXTURES = (app_server, browser, browser_db, page)     # pytest finds these by name in this module

OVERVIEW_CHARTS = 5   # events per day, hour of day, funnel, events per user, top categories
TITLES = [spec.title for spec in registry.available_pages()]
# What Streamlit's legacy pages/ router would list: the entry script and every file's stem.
RAW_NAMES = {"app", "common", "__init__", *(Path(spec.path).stem for spec in registry.PAGES)}


@pytest.fixture(scope="module")
def small_db(tmp_path_factory) -> Path:
    """A database with one small dataset (no first-start ingest to wait for)."""
    from core.data.ingest import ingest_file
    from core.data.store import Store

    db = tmp_path_factory.mktemp("browser-fresh") / "app.duckdb"
    with Store(db) as store:
        ingest_file(store, ROOT / "sample_data" / "taobao" / "UserBehavior_head.csv", dataset="head")
    return db


@pytest.mark.parametrize("address", ["", "/data"])
def test_a_fresh_server_lists_only_the_page_titles(browser, small_db, tmp_path, address):
    """The first load of a new server process (the one Streamlit routes through its legacy pages/
    router) never shows a file name in the sidebar, not even for a moment; an address that names a
    page file (/data) is not served without app.py either."""
    server = start_server(small_db, tmp_path / "streamlit.log")
    try:
        with new_tab(browser) as tab:
            sent = record_navigation(tab)
            tab.goto(server.url + address)
            wait_for_app(tab)                          # app.py's sidebar, not a page on its own
            seen = tab.evaluate("window.__navSeen")
            assert seen == [TITLES], (seen, sent)
            assert nav_links(tab) == TITLES
            # every navigation the server sent offers the real pages only (the legacy router's
            # list holds app.py alone, which the sidebar does not draw)
            assert [names for names in sent if len(names) > 1] == [TITLES] * len(
                [names for names in sent if len(names) > 1]), sent
            assert not RAW_NAMES & {name for names in sent if len(names) > 1 for name in names}, sent
            assert exceptions(tab) == [], server.log_tail()
    finally:
        stop_server(server)


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
            # The other views run when their tab opens, and the open tab goes into the link.
            open_tab(page, "Quality")
            page.get_by_text("pass", exact=False).first.wait_for()
            assert "data_tab=Quality" in page.url
            open_tab(page, "Quarantine")
            page.get_by_text("Quarantined rows by reason").first.wait_for()
            open_tab(page, "Overview")
        assert exceptions(page) == [], f"{title}: {exceptions(page)}\n{app_server.log_tail()}"

    # A link with ?dataset= reopens the same view.
    open_page(page, "Data")
    assert "dataset=" in page.url
    page.goto(page.url)
    wait_for_app(page)
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {OVERVIEW_CHARTS}")
    assert exceptions(page) == []


# -- Cohorts and Explain pages, on a database and a models folder of their own --------------------
# A tiny Transformer trained on the demo log and its scoring run; INTENTLENS_MODELS points the app
# at the temp folder (tests never write models/saved).
@pytest.fixture(scope="module")
def scored_server(tmp_path_factory):
    from core.data.ingest import ingest_file
    from core.data.store import Store
    from core.insight.cohorts import score_dataset
    from core.modeling.labels import LabelSpec
    from core.modeling.pipeline import train_model

    folder = tmp_path_factory.mktemp("browser-cohorts")
    db, saved = folder / "app.duckdb", folder / "saved"
    with Store(db) as store:
        ingest_file(store, ROOT / "sample_data" / "demo" / "events.csv.gz", dataset="demo")
        result = train_model(store, "demo", kind="transformer", epochs=1, preset="fast",
                             spec=LabelSpec(horizon="1d", max_len=30, max_train_cutoffs=1),
                             out=saved / "demo-tiny")
        score_dataset(store, result.model_dir, "demo")
    server = start_server(db, folder / "streamlit.log", env={"INTENTLENS_MODELS": str(saved)})
    try:
        yield server
    finally:
        stop_server(server)


def _wait_for_charts(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}")


def test_cohorts_export_and_explain_in_chromium(browser, scored_server, tmp_path):
    """Cohorts: charts render and a cohort exports through the download button with its audit
    stamp; a user of the table opens on the Explain page, whose charts render too."""
    import re

    with new_tab(browser) as page:
        page.goto(scored_server.url)
        wait_for_app(page)
        open_page(page, "Cohorts")
        page.get_by_text("Score distribution").first.wait_for()
        _wait_for_charts(page, 5)   # score distribution and the four contrast charts
        assert exceptions(page) == [], f"{exceptions(page)}\n{scored_server.log_tail()}"

        page.get_by_role("tab", name="Export").click()
        page.get_by_role("button", name="Prepare the export file").click()
        download_button = page.get_by_role("button", name=re.compile(r"Download cohort-"))
        download_button.wait_for()
        with page.expect_download() as info:
            download_button.click()
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        text = saved.read_text()
        assert text.startswith("# model_id: ") and "# sql: " in text and "\nuser_id," in text
        assert exceptions(page) == [], f"{exceptions(page)}\n{scored_server.log_tail()}"

        page.get_by_role("tab", name="Users").click()
        page.locator('[data-testid="stDataFrame"]').first.wait_for()
        page.get_by_role("button", name=re.compile(r"(^|\s)Explain$")).click()
        page.wait_for_url(re.compile(r"/explanations\?.*user="))
        wait_for_app(page)
        page.get_by_text("Timeline coloured by").first.wait_for()
        _wait_for_charts(page, 4)   # timeline, top events, faithfulness, attention
        assert page.get_by_role("textbox", name="User id").input_value()
        assert exceptions(page) == [], f"{exceptions(page)}\n{scored_server.log_tail()}"


def test_home_figures_are_whole_and_explain_opens_on_a_user(browser, scored_server):
    """A stakeholder's first clicks: Home shows every figure in full at any width ("transformer",
    not "transf…"), and Explain opens on the top-scored user with its charts, no typing needed."""
    with new_tab(browser) as tab:
        tab.goto(scored_server.url)
        wait_for_app(tab)
        tab.locator('[data-testid="stMetricValue"]', has_text="transformer").wait_for()
        for width in (1400, 1000, 760):
            tab.set_viewport_size({"width": width, "height": 1000})
            tab.wait_for_timeout(300)
            assert truncated_metrics(tab) == [], width
        tab.set_viewport_size({"width": 1400, "height": 1000})
        open_page(tab, "Explain")
        tab.get_by_text("Timeline coloured by").first.wait_for()
        _wait_for_charts(tab, 4)   # timeline, top events, faithfulness, attention
        user = tab.get_by_role("textbox", name="User id").input_value()
        assert user and f"user={user}" in tab.url
        assert tab.get_by_text("The top-scored user of this model's scoring run").count() == 1
        assert exceptions(tab) == [], f"{exceptions(tab)}\n{scored_server.log_tail()}"


# -- Train and Performance pages, on a database and a models folder of their own ------------------
@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    from core.data.ingest import ingest_file
    from core.data.store import Store
    from core.modeling.labels import LabelSpec
    from core.modeling.pipeline import train_model

    folder = tmp_path_factory.mktemp("browser-models")
    db, saved = folder / "app.duckdb", folder / "saved"
    with Store(db) as store:
        ingest_file(store, ROOT / "sample_data" / "demo" / "events.csv.gz", dataset="demo")
        train_model(store, "demo", kind="gbdt", spec=LabelSpec(horizon="1d", max_train_cutoffs=1),
                    preset="fast", out=saved / "demo-gbdt-1d")
    server = start_server(db, folder / "streamlit.log", env={"INTENTLENS_MODELS": str(saved)})
    try:
        yield server, saved
    finally:
        stop_server(server)


@pytest.fixture
def model_page(browser, model_server):
    with new_tab(browser) as tab:
        yield tab


def test_train_page_runs_and_cancels_jobs_in_the_browser(model_page, model_server):
    server, saved = model_server
    page = model_page
    page.goto(server.url)
    wait_for_app(page)
    open_page(page, "Train")
    page.get_by_text("Eligibility").wait_for()
    page.get_by_text("Enough to train").wait_for()
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 1")  # leaderboard
    assert exceptions(page) == [], server.log_tail()
    # Default kinds (Transformer, GBDT): two jobs; the first runs, the second waits its turn.
    page.get_by_role("button", name="Train 2 models").click()
    cancel = page.get_by_role("button", name="Cancel")
    cancel.first.wait_for()
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2")  # live curves
    for left in (1, 0):                    # the queued job's Cancel first, then the running one's
        cancel.first.click()
        for _ in range(120):
            if cancel.count() == left:
                break
            page.wait_for_timeout(250)
        assert cancel.count() == left, server.log_tail()
    page.get_by_text("Cancelled: training stopped").nth(1).wait_for()
    assert exceptions(page) == [], server.log_tail()
    assert sorted(p.name for p in saved.iterdir() if (p / "card.json").exists()) == ["demo-gbdt-1d"]


def test_performance_page_draws_its_charts_in_the_browser(model_page, model_server):
    server, _ = model_server
    page = model_page
    page.goto(server.url)
    wait_for_app(page)
    open_page(page, "Performance")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 9")
    assert exceptions(page) == [], server.log_tail()
    assert "cutoff=" in page.url
    # The cutoff as the top 10 %: only the fragment reruns; the link then reopens that view.
    page.get_by_text("top X % of users").click()
    page.wait_for_url(lambda url: "cutoff=top10" in url)
    wait_for_app(page)
    assert exceptions(page) == [], server.log_tail()
    page.goto(page.url)
    wait_for_app(page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 9")
    assert page.get_by_text("Top share of users flagged (%)").count() == 1
    assert exceptions(page) == []
