"""Page speed at scale, measured in Debian's Chromium through Playwright.

    python bench/pages.py                         # 1,000,000 scored users, 5 cold starts, 10 sessions
    python bench/pages.py --users 200000 --skip-concurrency

1. Builds a database with a synthetic dataset ``bench`` of N users (events generated in DuckDB SQL)
   plus the shipped demo log, and scores every ``bench`` user with the shipped demo models
   (random but fixed probabilities are written straight into ``scores``, then ``user_stats``).
2. First loads, judged: ``--cold-starts`` times (at least 5) it starts ``streamlit run app.py`` on
   a loopback port, opens the app's URL in a new browser session (the landing page's first load,
   timed from the navigation) and clicks every other page once. That is each page's first open on
   a server whose caches are cold: what the first visitor after a deploy or restart waits (goal
   ``--cold-goal``, 5 s). Time = from the navigation to the page's script run finished (the
   server's ``script_finished`` message on the websocket) and to its plotly charts drawn.
3. Later loads, judged: on the last server the same session clicks through every page
   ``--rounds`` more times (at least 5; goal ``--goal``, 2 s). Each figure is the median with the
   fastest and slowest load; ratios are against the landing page's later loads.
4. Samples the app's peak RSS (server process and children) throughout, over every server.
5. Concurrency: starts a training job on the demo dataset from the Train page, then ``--sessions``
   browser sessions click through every page twice at the same time; reports errors, median and
   p95 page times, and how much CPU the app used against the whole machine (the browsers share it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import MIN_REPEATS, PeakRSS, Stat  # noqa: E402
from core.data.ingest import ingest_file  # noqa: E402
from core.data.store import Store  # noqa: E402
from core.insight.cohorts import refresh_user_stats  # noqa: E402
from models.artifact import load_card  # noqa: E402
from tests.browser_util import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    exceptions,
    finished_runs,
    nav_links,
    open_page,
    start_server,
    stop_server,
    wait_for_app,
    wait_for_run,
    watch_runs,
)

UNSEEN_RUNS = 0   # page opens that started no script run (see timed_open)

EVENTS_SQL = """
SELECT 'bench', 'u' || u, 'i' || (hash(u, k, 1) % 50000), 'c' || (hash(u, 2) % 300 + (k % 3)),
       CASE WHEN hash(u, k, 3) % 1000 < 890 THEN 'view' WHEN hash(u, k, 3) % 1000 < 945 THEN 'cart'
            WHEN hash(u, k, 3) % 1000 < 975 THEN 'fav' ELSE 'buy' END::behavior_t,
       TIMESTAMP '2017-11-25' + to_seconds((hash(u, k, 4) % (9 * 86400))::BIGINT)
FROM range(?) r(u), range(?) s(k)
WHERE k < 1 + hash(u, 5) % (2 * ?)
"""


def build_database(db: Path, users: int, events_per_user: int) -> dict:
    started = time.perf_counter()
    with Store(db) as store:
        ingest_file(store, ROOT / "sample_data/demo/events.csv.gz", dataset="demo")
        with store.write("bench", "bench data") as w:
            w.add("events", EVENTS_SQL, [users, 2 * events_per_user, events_per_user],
                  columns=("dataset", "user_id", "item_id", "category", "behavior", "ts"))
            w.add("datasets", """SELECT 'bench', 'synthetic', 'bench/pages.py', 'bench', count(*), count(*), 0, 0,
                                        count(DISTINCT user_id), count(DISTINCT item_id), min(ts), max(ts),
                                        '+00:00', now()::TIMESTAMP
                                 FROM events WHERE dataset = 'bench'""",
                  columns=("name", "layout", "source_file", "sha256", "rows_read", "rows_stored", "rows_quarantined",
                           "duplicates_dropped", "n_users", "n_items", "ts_min", "ts_max", "source_tz", "ingested_at"))
            ts_max = w.cur.execute("SELECT ts_max FROM datasets WHERE name = 'bench'").fetchone()[0]
            for name in ("demo", "demo-gbdt"):
                card_dir = ROOT / "models" / "saved" / name
                if not (card_dir / "card.json").exists():
                    continue
                model_id = load_card(card_dir)["model_id"]
                w.add("scores", """SELECT ?, 'bench', user_id, NULL,
                                      pow((hash(user_id, ?) % 100000) / 100000.0, 4), ?, now()::TIMESTAMP
                                   FROM (SELECT DISTINCT user_id FROM events WHERE dataset = 'bench')""",
                      [model_id, name, ts_max], key=model_id)
            refresh_user_stats(w)
        events = store.fetchone("SELECT rows_stored FROM datasets WHERE name = 'bench'")[0]
    return {"events": events, "seconds": time.perf_counter() - started}


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass    # a child ended between listing and reading
    return total


def settle_charts(page, timeout_s: float = 60.0) -> float:
    """Wait until the number of drawn plotly charts stops changing for 0.3 s; returns the
    ``time.perf_counter()`` at which it last changed (when the last chart appeared)."""
    deadline = time.monotonic() + timeout_s
    last, changed_at, stable = -1, time.perf_counter(), 0
    while time.monotonic() < deadline:
        count = page.locator(".js-plotly-plot").count()
        if count != last:
            last, changed_at, stable = count, time.perf_counter(), 0
        else:
            stable += 1
            if stable >= 2:
                break
        page.wait_for_timeout(150)
    return changed_at


def timed_open(page, title: str) -> tuple[float, float]:
    """Open ``title`` from the sidebar; returns (seconds until its script run finished on the
    server, seconds until its charts were drawn). The waits that confirm the page is idle
    afterwards are not counted."""
    global UNSEEN_RUNS
    link = page.locator('[data-testid="stSidebarNav"] a', has_text=title).first
    before = finished_runs(page)
    started = time.perf_counter()
    link.click()
    # On a saturated machine a run may start many seconds after the click: wait as long as the
    # page timeout allows before calling it a click that did nothing.
    if not wait_for_run(page, before, timeout_ms=180_000, no_run_s=170.0):
        UNSEEN_RUNS += 1     # no run started at all: not a page load (counted, reported)
    ran = time.perf_counter() - started
    drawn = settle_charts(page) - started
    wait_for_app(page)      # confirms the page is idle; not counted
    return ran, max(ran, drawn)


def click_through(page, titles: list[str], runs: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds from navigation to charts drawn per page; ``runs`` gets the script-run seconds."""
    times = {}
    for title in titles:
        ran, times[title] = timed_open(page, title)
        if runs is not None:
            runs[title] = ran
        errors = exceptions(page)
        if errors:
            raise RuntimeError(f"{title} showed an exception: {errors[0][:300]}")
    return times


def concurrency(url: str, sessions: int) -> dict:
    from playwright.sync_api import sync_playwright

    results: list[float] = []
    run_times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def session(i: int) -> None:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            watch_runs(page)
            page.set_default_timeout(180_000)
            try:
                page.goto(url + "/?dataset=bench&model=demo")
                wait_for_app(page, timeout_ms=180_000)
                for _ in range(2):
                    runs: dict[str, float] = {}
                    times = click_through(page, nav_links(page), runs)
                    with lock:
                        results.extend(times.values())
                        run_times.extend(runs.values())
            except Exception as err:  # a benchmark records every failure and goes on
                with lock:
                    errors.append(f"session {i}: {type(err).__name__}: {str(err)[:200]}")
            finally:
                browser.close()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    def p95(values: list[float]) -> float:
        return sorted(values)[int(0.95 * (len(values) - 1))] if values else float("nan")

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    return {"page_loads": len(results), "errors": errors, "median_s": median(results), "p95_s": p95(results),
            "run_median_s": median(run_times), "run_p95_s": p95(run_times)}


def start_training(page) -> bool:
    """Open the Train page on the demo dataset and press its Train button (defaults)."""
    open_page(page, "Train")
    button = page.locator('[data-testid="stButton"] button', has_text="Train").first
    if button.count() == 0 or button.is_disabled():
        return False
    button.click()
    page.wait_for_timeout(1500)
    return True


def timed_landing(page, url: str) -> tuple[float, float]:
    """Open the app at ``url`` in a fresh tab; returns (seconds until the landing page's script run
    finished, seconds until its charts were drawn), measured from the navigation."""
    global UNSEEN_RUNS
    before = finished_runs(page)
    started = time.perf_counter()
    page.goto(url)
    if not wait_for_run(page, before, timeout_ms=180_000, no_run_s=170.0):
        UNSEEN_RUNS += 1
    ran = time.perf_counter() - started
    drawn = settle_charts(page) - started
    wait_for_app(page, timeout_ms=180_000)
    return ran, max(ran, drawn)


def verdict(seconds: float, goal: float) -> str:
    return "ok" if seconds <= goal else f"over {goal:g} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--cold-starts", type=int, default=MIN_REPEATS,
                        help=f"fresh servers whose first page loads are timed (at least {MIN_REPEATS})")
    parser.add_argument("--rounds", type=int, default=MIN_REPEATS,
                        help=f"warm click-throughs on the last server (at least {MIN_REPEATS})")
    parser.add_argument("--goal", type=float, default=2.0, help="seconds a warm page load may take")
    parser.add_argument("--cold-goal", type=float, default=5.0, help="seconds a first page load may take")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--skip-concurrency", action="store_true")
    args = parser.parse_args()
    starts, rounds_n = max(args.cold_starts, MIN_REPEATS), max(args.rounds, MIN_REPEATS)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="intentlens-pages-") as tmp:
        db = Path(tmp) / "bench.duckdb"
        built = build_database(db, args.users, args.events_per_user)
        print(f"database: {args.users:,} users, {built['events']:,} events, scored, in {built['seconds']:.1f} s")
        url = "/?dataset=bench&model=demo"
        cold: dict[str, list[float]] = {}
        cold_run: dict[str, list[float]] = {}
        peak = 0
        for start in range(starts):
            last = start == starts - 1
            server = start_server(db, Path(tmp) / f"streamlit-{start}.log")
            sampler = PeakRSS(server.process.pid, children=True, interval=0.2).start()
            try:
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    watch_runs(page)
                    page.set_default_timeout(180_000)
                    # first loads: the landing page from the URL, then every other page once
                    ran, drawn = timed_landing(page, server.url + url)
                    titles = nav_links(page)
                    runs: dict[str, float] = {titles[0]: ran}
                    firsts = {titles[0]: drawn, **click_through(page, titles[1:], runs)}
                    for title in titles:
                        cold.setdefault(title, []).append(firsts[title])
                        cold_run.setdefault(title, []).append(runs[title])
                    if last:
                        warm_runs: list[dict[str, float]] = [{} for _ in range(rounds_n)]
                        warm = [click_through(page, titles, warm_runs[i]) for i in range(rounds_n)]
                        report_loads(titles, cold, cold_run, warm, warm_runs, args.goal, args.cold_goal)
                        if not args.skip_concurrency:
                            run_concurrency(page, server, args.sessions)
                    browser.close()
            finally:
                sampler.stop()
                stop_server(server)
                peak = max(peak, sampler.peak)
        print(f"\napp peak RSS (server and children, over all {starts} servers): {peak / 2**20:,.0f} MiB")
        print(f"page opens that started no script run (should be 0): {UNSEEN_RUNS}")


def report_loads(titles: list[str], cold: dict[str, list[float]], cold_run: dict[str, list[float]],
                 warm: list[dict[str, float]], warm_runs: list[dict[str, float]], goal: float,
                 cold_goal: float) -> None:
    starts = len(next(iter(cold.values())))
    print(f"\nnavigation -> charts drawn, seconds, median (fastest–slowest, n): first load = the page's first "
          f"open on each of {starts} fresh servers (caches cold; the landing page from its URL); later = "
          f"{len(warm)} click-throughs after that. 'run' = the script run alone (median).")
    home = Stat.of([r[titles[0]] for r in warm]).median
    for title in titles:
        first, later = Stat.of(cold[title]), Stat.of([r[title] for r in warm])
        run_first, run_later = Stat.of(cold_run[title]).median, Stat.of([r[title] for r in warm_runs]).median
        print(f"  {title:<12} first {first.text('.2f')} {verdict(first.median, cold_goal):<12}"
              f" later {later.text('.2f')} {verdict(later.median, goal):<12}"
              f" run {run_first:.2f} / {run_later:.2f}   later x {titles[0]} {later.median / home:5.2f}")


def run_concurrency(page, server, sessions: int) -> None:
    page.goto(server.url + "/?dataset=demo")
    wait_for_app(page, timeout_ms=180_000)
    trained = start_training(page)
    print(f"\nconcurrency: training job started: {trained}; {sessions} sessions x 2 rounds")
    app_cpu0, wall0 = process_cpu(server.process.pid), time.perf_counter()
    machine0 = psutil.cpu_times()
    report = concurrency(server.url, sessions)
    app_cpu = process_cpu(server.process.pid) - app_cpu0
    wall = time.perf_counter() - wall0
    machine1 = psutil.cpu_times()
    busy = ((machine1.user + machine1.system) - (machine0.user + machine0.system))
    print(f"  page loads {report['page_loads']}, errors {len(report['errors'])}")
    print(f"  CPU over the {wall:.0f} s run: the app (with its training job) used "
          f"{app_cpu / wall:.2f} cores, the whole machine {busy / wall:.2f} of "
          f"{psutil.cpu_count()} (the rest is the {sessions} browsers and this script)")
    print(f"  navigation -> charts drawn: median {report['median_s']:.2f} s, "
          f"p95 {report['p95_s']:.2f} s")
    print(f"  navigation -> script run finished (server side): median "
          f"{report['run_median_s']:.2f} s, p95 {report['run_p95_s']:.2f} s")
    for line in report["errors"][:5]:
        print("   ", line)


if __name__ == "__main__":
    main()
