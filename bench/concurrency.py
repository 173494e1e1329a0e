"""Many processes on one store: page times while others write, and writers killed with SIGKILL.

    python bench/concurrency.py                       # 10M-event ingest under load, 5 rounds, kill corpus
    python bench/concurrency.py --events 1000000 --rounds 5 --kill-delays 0.2 0.5 0.8 0.95
    python bench/concurrency.py --events 2000000 --skip-pages          # the kill corpus only

1. Loads and scores the shipped data into a new store folder (what the app's first start does),
   starts ``streamlit run app.py`` on it, opens it in Debian's Chromium and clicks through every
   page once to warm it, then ``--rounds`` more times: idle page times (navigation to charts drawn).
2. Load: at the same time, in other processes on the same store, a CLI ingest of a synthetic log of
   ``--events`` events (``core.synth``), a re-score of the demo dataset in a loop, and the scoring
   service (``python -m core serve``) answering a client that scores stored users back to back. The
   browser clicks through every page ``--rounds`` times again. Reported: per-page medians idle and
   under load and their ratio, and every error: page exceptions or error boxes, CLI exit codes,
   service answers other than 200. The baseline alternative (one DuckDB file that the app holds
   open) is measured too: how many of the same CLI and service opens it refuses.
3. Kill corpus: ingest, score, update (append + warm start + promote + re-score) and train, each
   started as a CLI process and killed with SIGKILL at ``--kill-delays`` fractions of its measured
   uninterrupted wall time. After each kill the store is checked: every committed segment whole
   (``check_segments``), nothing of the killed write visible, everything committed before still
   there (fingerprint), the dataset writable again, and after garbage collection no file left that
   the catalog does not name; a killed training leaves no model folder that does not load.

Pages are slower under load on this 2-core machine simply because the writers use the cores: the
ratio says how much, and the errors say whether anything failed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pages import click_through, timed_landing  # noqa: E402
from core.data.store import Store, check_segments  # noqa: E402
from core.modeling.synth import SynthConfig, generate  # noqa: E402
from core.runtime.samples import ensure_default_data, ensure_demo_scores  # noqa: E402
from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, free_port, start_server, stop_server, watch_runs  # noqa: E402

DEMO_MODEL = ROOT / "models" / "saved" / "demo"
EVENTS_PER_USER = 60        # what core.synth's defaults make over 9 days, about


def cli(db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "core", *args, "--db", str(db)]


def run_cli(db: Path, *args: str, timeout: float = 3600) -> tuple[int, float, str]:
    started = time.perf_counter()
    out = subprocess.run(cli(db, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return out.returncode, time.perf_counter() - started, (out.stderr or out.stdout)[-400:]


def page_errors(page) -> list[str]:
    boxes = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').all()
    return [b.inner_text()[:200] for b in boxes]


def rounds_through(page, titles: list[str], rounds: int, errors: list[str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {t: [] for t in titles}
    for _ in range(rounds):
        for title, seconds in click_through(page, titles).items():
            times[title].append(seconds)
            errors.extend(f"{title}: {e}" for e in page_errors(page))
    return times


# -- load ---------------------------------------------------------------------------------------------
class Load:
    """Ingest + re-score loop + scoring service with a client, all in other processes."""

    def __init__(self, db: Path, big_file: Path, tmp: Path):
        self.db, self.big_file, self.tmp = db, big_file, tmp
        self.errors: list[str] = []
        self.scores = 0
        self.requests = 0
        self.done = threading.Event()
        self.ingest_seconds = 0.0

    def _ingest(self) -> None:
        code, seconds, text = run_cli(self.db, "ingest", str(self.big_file), "--dataset", "big")
        self.ingest_seconds = seconds
        if code != 0:
            self.errors.append(f"ingest exit {code}: {text}")
        self.done.set()

    def _rescore(self) -> None:
        while not self.done.is_set():
            code, _, text = run_cli(self.db, "score", "--model", str(DEMO_MODEL), "--dataset", "demo")
            self.scores += 1
            if code != 0:
                self.errors.append(f"score exit {code}: {text}")

    def _serve(self) -> None:
        import httpx

        port = free_port()
        log = (self.tmp / "serve.log").open("wb")
        server = subprocess.Popen(cli(self.db, "serve", "--model", str(DEMO_MODEL), "--dataset", "demo",
                                      "--port", str(port), "--threads", "1"),
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                time.sleep(0.5)
            with Store(self.db, read_only=True) as store:
                users = [r[0] for r in store.fetchall(
                    "SELECT user_id FROM user_stats WHERE dataset = 'demo' ORDER BY user_id LIMIT 200")]
            k = 0
            while not self.done.is_set():
                answer = httpx.post(url + "/v1/score", json={"user_id": users[k % len(users)]}, timeout=60)
                self.requests += 1
                k += 1
                if answer.status_code != 200:
                    self.errors.append(f"service {answer.status_code}: {answer.text[:200]}")
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        threads = [threading.Thread(target=f, daemon=True) for f in (self._ingest, self._rescore, self._serve)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            for t in threads:
                t.join(timeout=3600)


def single_file_alternative(tmp: Path) -> dict[str, int]:
    """The design this replaces: one DuckDB file, held open for writing by the app. How many opens
    of the same file by other processes (a CLI reader, a CLI writer, the service reading) fail."""
    path = tmp / "single.duckdb"
    holder = duckdb.connect(str(path))
    holder.execute("CREATE TABLE IF NOT EXISTS t (x INT)")
    tries = {"cli read": "duckdb.connect(p, read_only=True).execute('SELECT 1')",
             "cli write": "duckdb.connect(p).execute('INSERT INTO t VALUES (1)')",
             "service read": "duckdb.connect(p, read_only=True).execute('SELECT count(*) FROM t')"}
    refused = {}
    for name, statement in tries.items():
        code = f"import duckdb, sys\np = {str(path)!r}\ntry:\n    {statement}\nexcept duckdb.Error:\n    sys.exit(3)\n"
        refused[name] = int(subprocess.run([sys.executable, "-c", code]).returncode == 3)
    holder.close()
    return refused


# -- kill corpus --------------------------------------------------------------------------------------
def unnamed_files(db: Path) -> int:
    """Parquet files under the store that no segment (live, or replaced and in its grace period) names."""
    with Store(db, read_only=True) as store:
        assert store.catalog is not None
        named = store.catalog.named_files()
    on_disk = {str(p.relative_to(db)) for p in (db / "segments").rglob("*.parquet")}
    return len(on_disk - named)


def invariant(db: Path) -> str:
    """What must hold whatever moment a writer died: counts agree with the dataset rows and runs."""
    with Store(db, read_only=True) as store:
        bad = store.fetchall("""
            SELECT d.name FROM datasets d
            WHERE d.rows_stored <> (SELECT count(*) FROM events e WHERE e.dataset = d.name)""")
        runs = store.fetchall("""
            SELECT r.run_id FROM score_runs r
            WHERE r.n_users <> (SELECT count(DISTINCT user_id) FROM score_history h WHERE h.run_id = r.run_id)""")
    problems = []
    if bad:
        problems.append(f"datasets whose events disagree with their row: {bad}")
    if runs:
        problems.append(f"scoring runs with missing history: {runs}")
    return "; ".join(problems)


def kill_corpus(db: Path, tmp: Path, delays: list[float]) -> list[dict]:
    from core.modeling.model_store import list_models

    models = tmp / "kill-models"
    models.mkdir(exist_ok=True)
    current = tmp / "update-model"               # update rewrites its model's card: not the shipped one
    shutil.copytree(DEMO_MODEL.parent / "demo-gbdt", current)
    new_file = tmp / "update.csv"
    subprocess.run([sys.executable, "-m", "core", "synth", "--users", "400", "--days", "2", "--seed", "7",
                    "--out", str(new_file)], cwd=ROOT, check=True, capture_output=True)
    ops = {
        # --replace: every run replaces the dataset, so a killed one must leave the previous one whole
        "ingest": ["ingest", str(tmp / "big.csv.gz"), "--dataset", "killed-ingest", "--replace"],
        "score": ["score", "--model", str(DEMO_MODEL), "--dataset", "demo"],
        "update": ["update", "--dataset", "demo", "--file", str(new_file), "--model", str(current), "--epochs", "1"],
        "train": ["train", "--dataset", "demo", "--model", "gbdt", "--out", str(models / "killed")],
    }
    rows = []
    for op, args in ops.items():
        env = {**os.environ, "INTENTLENS_MODELS": str(models)}
        started = time.perf_counter()
        full = subprocess.run(cli(db, *args), cwd=ROOT, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if full.returncode != 0:
            rows.append({"op": op, "error": f"uninterrupted run failed: {full.stderr[-300:]}"})
            continue
        for fraction in delays:
            with Store(db, read_only=True) as store:
                before = store.fingerprint()
                version = store.version
            victim = subprocess.Popen(cli(db, *args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(wall * fraction)
            finished = victim.poll() is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=60)
            with Store(db, read_only=True) as store:
                assert store.catalog is not None
                problems = check_segments(store.catalog)
                after = store.fingerprint()
                moved = store.version != version
            broken_models = [str(p) for p in models.iterdir() if not p.name.startswith(".")
                             and (p / "card.json").exists() is False]
            dead_files = unnamed_files(db)      # the killed write's files, before anyone collects them
            with Store(db):                     # a writable open collects the garbage of dead writes
                pass
            rows.append({
                "op": op, "uninterrupted_s": round(wall, 1), "killed_at": f"{fraction:.0%}",
                "had_finished": finished, "committed_meanwhile": moved,
                "store_problems": problems, "invariant": invariant(db),
                "unchanged_if_not_committed": moved or after == before,
                "dead_write_files_found": dead_files,
                "files_not_in_catalog_after_gc": unnamed_files(db),
                "models_listed": len(list_models(models)), "model_dirs_without_card": broken_models,
            })
    return rows


# -- main ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events of the ingest under load")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kill-delays", type=float, nargs="+", default=[0.2, 0.5, 0.8, 0.95])
    parser.add_argument("--skip-pages", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from pages.shared import registry

    tmp = Path(tempfile.mkdtemp(prefix="il-concurrency-"))
    db = tmp / "store"
    users = max(args.events // EVENTS_PER_USER, 100)
    big = tmp / "big.csv.gz"
    t0 = time.perf_counter()
    made = generate(SynthConfig(users=users, days=9, seed=1), big)
    args.events = made.events
    print(f"generated {big.name}: {made.events:,} events of {users:,} users in {time.perf_counter() - t0:.0f} s")
    result: dict = {"events": made.events, "alternative_single_file_refused": single_file_alternative(tmp)}
    print("single DuckDB file held by the app: refused opens", result["alternative_single_file_refused"])

    with Store(db) as store:                    # what the app's first start would load and score
        ensure_default_data(store)
        ensure_demo_scores(store)
    titles = [spec.title for spec in registry.available_pages()]
    server = start_server(db, tmp / "streamlit.log")
    try:
        if not args.skip_pages:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                watch_runs(page)
                page.set_default_timeout(180_000)
                timed_landing(page, server.url)
                click_through(page, titles)                 # warm
                idle_errors: list[str] = []
                idle = rounds_through(page, titles, args.rounds, idle_errors)
                load = Load(db, big, tmp)
                loaded_errors: list[str] = []
                with load.running():
                    loaded = rounds_through(page, titles, args.rounds, loaded_errors)
                    while not load.done.is_set():          # keep the browser busy until the ingest ends
                        loaded_extra = rounds_through(page, titles, 1, loaded_errors)
                        for t, v in loaded_extra.items():
                            loaded[t].extend(v)
                page.reload()
                browser.close()
            table = {}
            for t in titles:
                a, b = statistics.median(idle[t]), statistics.median(loaded[t])
                table[t] = {"idle_s": round(a, 2), "loaded_s": round(b, 2), "ratio": round(b / a, 2)}
            result.update(pages=table, idle_errors=idle_errors, loaded_errors=loaded_errors,
                          load_errors=load.errors, ingest_s=round(load.ingest_seconds, 1),
                          ingest_events_per_s=round(args.events / max(load.ingest_seconds, 1e-9)),
                          rescore_runs=load.scores, service_requests=load.requests)
            print(f"\n{'page':<14} {'idle s':>8} {'loaded s':>9} {'ratio':>6}")
            for t, r in table.items():
                print(f"{t:<14} {r['idle_s']:>8.2f} {r['loaded_s']:>9.2f} {r['ratio']:>6.2f}")
            ratios = [r["ratio"] for r in table.values()]
            print(f"median ratio {statistics.median(ratios):.2f}, worst {max(ratios):.2f} (goal <= 1.5)")
            print(f"errors: pages idle {len(idle_errors)}, pages loaded {len(loaded_errors)}, "
                  f"ingest/score/service {len(load.errors)}; ingest {load.ingest_seconds:.0f} s, "
                  f"{load.scores} re-scores, {load.requests} service requests")
            for e in (idle_errors + loaded_errors + load.errors)[:10]:
                print("  ", e)
    finally:
        stop_server(server)

    kills = kill_corpus(db, tmp, args.kill_delays)
    result["kills"] = kills
    print(f"\n{'op':<8} {'at':>4} {'done?':>6} {'commit?':>8} {'problems':>9} {'invariant':>10} "
          f"{'unchanged':>10} {'dead files':>10} {'stray':>6}")
    for k in kills:
        if "error" in k:
            print(f"{k['op']:<8} {k['error']}")
            continue
        print(f"{k['op']:<8} {k['killed_at']:>4} {k['had_finished']!s:>6} {k['committed_meanwhile']!s:>8} "
              f"{len(k['store_problems']):>9} {k['invariant'] or 'ok':>10} {k['unchanged_if_not_committed']!s:>10} "
              f"{k['dead_write_files_found']:>10} {k['files_not_in_catalog_after_gc']:>6}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
