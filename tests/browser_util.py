"""Real-browser helpers: a `streamlit run app.py` server on a loopback port and Debian's Chromium
driven through Playwright. Page tests import the fixtures from here::

    from tests.browser_util import app_server, browser, page   # noqa: F401  (pytest fixtures)

``app_server`` takes the database to serve from the ``browser_db`` fixture, which a test module may
override to prepare data; by default it is an empty database in a temp folder, so the app loads the
shipped data itself on its first start.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
STARTUP_TIMEOUT_S = 90      # server start (imports, first-start data) until /_stcore/health says ok
RENDER_TIMEOUT_MS = 60_000  # one page: until its expected elements are visible
NO_RUN_S = 10.0             # a click after which no script run starts within this did nothing

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason=f"Debian's Chromium is not installed at {CHROMIUM} "
                                           "(apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A running `streamlit run app.py`."""

    url: str
    db: Path
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def start_server(db: Path, log: Path, *, env: dict[str, str] | None = None) -> AppServer:
    """Start the app on a free loopback port and wait until its health endpoint answers."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("INTENTLENS_DEMO", "INTENTLENS_MODELS")}
    full_env = {**base, "INTENTLENS_DB": str(db), "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    out = log.open("wb")
    process = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    server = AppServer(url=f"http://127.0.0.1:{port}", db=db, process=process, log=log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass   # not listening yet
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"streamlit did not answer within {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


def stop_server(server: AppServer) -> None:
    """Terminate the server we started (and only it), then wait for it."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser_db(tmp_path_factory) -> Path:
    """The database the app serves: empty, so the app's first start loads the shipped data."""
    return tmp_path_factory.mktemp("browser") / "app.duckdb"


@pytest.fixture(scope="module")
def app_server(browser_db, tmp_path_factory) -> Iterator[AppServer]:
    log = tmp_path_factory.mktemp("browser-log") / "streamlit.log"
    server = start_server(browser_db, log)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                      headless=True)
        try:
            yield instance
        finally:
            instance.close()


@contextlib.contextmanager
def new_tab(browser) -> Iterator[object]:
    """A fresh browser context and page (closed afterwards) with the render timeout set."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(RENDER_TIMEOUT_MS)
    watch_runs(tab)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def page(browser, app_server) -> Iterator[object]:
    with new_tab(browser) as tab:
        yield tab


# -- page helpers ---------------------------------------------------------------------------------
def forward_msg(payload):
    """A websocket frame decoded as Streamlit's ForwardMsg protobuf, or None for a text frame or a
    frame of some other protocol."""
    if not isinstance(payload, (bytes, bytearray)):
        return None
    from google.protobuf.message import DecodeError
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    msg = ForwardMsg()
    try:
        msg.ParseFromString(bytes(payload))
    except DecodeError:
        return None
    return msg


class RunWatcher:
    """Counts the script runs the server starts and finishes for one page, from the messages on
    its websocket (Streamlit's ForwardMsg protobufs: ``new_session`` when a run starts,
    ``script_finished`` when it ends). Attach it before the page loads the app."""

    def __init__(self, page):
        self.started = 0
        self.finished = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        msg = forward_msg(payload)
        if msg is None:
            return
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self.started += 1
        elif kind == "script_finished" and msg.script_finished in (
                msg.FINISHED_SUCCESSFULLY, msg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
            self.finished += 1


_WATCHERS: dict[int, RunWatcher] = {}


def watch_runs(page) -> RunWatcher:
    """Start counting ``page``'s script runs (call right after creating the page)."""
    _WATCHERS[id(page)] = RunWatcher(page)
    return _WATCHERS[id(page)]


def finished_runs(page) -> int:
    """How many script runs of ``page`` have finished (pages made by :func:`new_tab` are watched)."""
    return _WATCHERS[id(page)].finished


def wait_for_app(page, *, timeout_ms: int = RENDER_TIMEOUT_MS) -> None:
    """Wait until app.py's shell is drawn (its sidebar title, so not Streamlit's legacy pages/
    router), the script is not running, and the status widget stays away for 0.6 s."""
    page.wait_for_selector('[data-testid="stSidebar"] h3:has-text("IntentLens")', timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    quiet = 0
    while time.monotonic() < deadline:
        quiet = quiet + 1 if page.locator('[data-testid="stStatusWidget"]').count() == 0 else 0
        if quiet >= 3:
            return
        page.wait_for_timeout(200)
    raise AssertionError("the app was still running its script after the timeout")


def wait_for_run(page, before: int, *, timeout_ms: int = RENDER_TIMEOUT_MS,
                 no_run_s: float = NO_RUN_S) -> bool:
    """After an action that reruns the script: wait until a run has finished since ``before``
    (from :func:`finished_runs`); returns whether one did. If no run has even started after
    ``no_run_s`` seconds (a click that changed nothing) it returns False. Follow with
    :func:`wait_for_app` to be sure the app is idle."""
    watcher = _WATCHERS[id(page)]
    started_before = watcher.started
    t0 = time.monotonic()
    deadline = t0 + timeout_ms / 1000
    while time.monotonic() < deadline:
        if watcher.finished > before:
            return True
        if watcher.started == started_before and time.monotonic() - t0 > no_run_s:
            return False
        page.wait_for_timeout(25)
    raise AssertionError(f"no script run finished within {timeout_ms} ms")


def exceptions(page) -> list[str]:
    """Texts of the exception boxes on the page (a page must never show one)."""
    return [e.inner_text() for e in page.locator('[data-testid="stException"]').all()]


# Installed before a page loads (``page.add_init_script``): records every distinct list of sidebar
# navigation labels the page ever shows, in window.__navSeen, however briefly it was there.
NAV_RECORDER = """
window.__navSeen = [];
const recordNav = () => {
  const nav = document.querySelector('[data-testid="stSidebarNav"]');
  const labels = nav ? Array.from(nav.querySelectorAll('a'))
      .map(a => a.innerText.trim().split('\\n').pop().trim()) : [];
  const last = window.__navSeen[window.__navSeen.length - 1];
  if (labels.length && JSON.stringify(labels) !== JSON.stringify(last)) window.__navSeen.push(labels);
};
new MutationObserver(recordNav).observe(document, {subtree: true, childList: true, characterData: true});
"""


def record_navigation(page) -> list[list[str]]:
    """Watch ``page``'s websocket for navigation messages (call before it loads the app); the list
    returned fills with each message's page names as the server sends them."""
    sent: list[list[str]] = []

    def frame(payload) -> None:
        msg = forward_msg(payload)
        if msg is not None and msg.WhichOneof("type") == "navigation":
            sent.append([p.page_name for p in msg.navigation.app_pages])

    page.add_init_script(NAV_RECORDER)
    page.on("websocket", lambda ws: ws.on("framereceived", frame))
    return sent


def truncated_metrics(page) -> list[str]:
    """Labels of the metrics whose value does not fit its box (drawn cut, with an ellipsis)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
        .filter(m => Array.from(m.querySelectorAll('[data-testid="stMetricValue"], [data-testid="stMetricValue"] *'))
                          .some(e => e.scrollWidth > e.clientWidth + 1))
        .map(m => m.querySelector('[data-testid="stMetricLabel"]').innerText.trim())""")


def nav_links(page) -> list[str]:
    """The labels of the sidebar navigation, in order."""
    links = page.locator('[data-testid="stSidebarNav"] a')
    # The text holds the material icon's name first, then the label.
    return [links.nth(i).inner_text().strip().splitlines()[-1].strip() for i in range(links.count())]


def open_page(page, title: str) -> None:
    """Click a page in the sidebar navigation and wait until its script run has finished."""
    link = page.locator('[data-testid="stSidebarNav"] a', has_text=title).first
    target = urlparse(link.get_attribute("href") or "").path
    before = finished_runs(page)
    link.click()
    page.wait_for_url(lambda url: urlparse(url).path == target)
    wait_for_run(page, before)
    wait_for_app(page)


def open_tab(page, name: str) -> None:
    """Click a tab (one whose content runs only while it is open) and wait for the rerun."""
    before = finished_runs(page)
    page.get_by_role("tab", name=name).click()
    wait_for_run(page, before)
    wait_for_app(page)


def plotly_count(page) -> int:
    return page.locator(".js-plotly-plot").count()


def take_screenshot(out: Path, *, title: str = "Data", charts: int = 5, db: Path | None = None,
                    env: dict[str, str] | None = None) -> Path:
    """Start the app (on a fresh database unless ``db`` is given), open a page and save a
    screenshot once ``charts`` plotly charts are drawn (the README's image)::

        python -c "from pathlib import Path; from tests.browser_util import take_screenshot as t; \\
                   t(Path('docs/screenshot.png'))"
    """
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="intentlens-shot-") as tmp:
        server = start_server(db or Path(tmp) / "app.duckdb", Path(tmp) / "streamlit.log", env=env)
        try:
            with sync_playwright() as pw:
                instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                tab = instance.new_page(viewport={"width": 1440, "height": 1100})
                tab.set_default_timeout(RENDER_TIMEOUT_MS)
                watch_runs(tab)
                tab.goto(server.url)
                wait_for_app(tab)
                open_page(tab, title)
                tab.wait_for_function(
                    f"document.querySelectorAll('.js-plotly-plot').length >= {charts}")
                tab.wait_for_timeout(1500)   # let plotly finish its transitions
                out.parent.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(out))
                instance.close()
        finally:
            stop_server(server)
    return out
