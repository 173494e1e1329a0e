"""The shared store's read and write speed against DuckDB tables holding the same rows.

    python bench/store.py                  # 1,000,000 users, ~10 events each, 1,000,000 scores
    python bench/store.py --users 200000

The shared store (Parquet segments + catalog, views in each process's in-memory DuckDB) pays for
letting many processes share it: every query reads Parquet and first asks the catalog whether a new
version was committed. The reference is the private store (``Store(":memory:")``): the same
schema as real DuckDB tables in memory, filled through the same ``Store.write`` calls with the same
rows, with the same DuckDB threads. Tables in memory are at least as fast as the single DuckDB file the
shared store replaces (whose pages sit in the same buffer manager once read), so the ratio is an upper
bound of the cost against it.

A third column opens the shared store as the app does (``in_memory=("scores", "user_stats")``: those
two tables loaded into the process's memory and reloaded when they change); its writes reload them.

Timed, each the median of at least 5 runs: the queries the Data, Cohorts and Explain pages run
(dataset row, events per day, funnel, top-5 % cohort rows and summary, score histogram, one user's
timeline, prefix search), and the writes: a scoring run of every user (scores + history +
user_stats), an export record.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import MIN_REPEATS, Stat  # noqa: E402
from core.data import overview  # noqa: E402
from core.data.store import Store  # noqa: E402
from core.insight import cohorts  # noqa: E402

EVENTS_SQL = """
SELECT 'bench', 'u' || u, 'i' || (hash(u, k, 1) % 50000), 'c' || (hash(u, 2) % 300 + (k % 3)),
       CASE WHEN hash(u, k, 3) % 1000 < 890 THEN 'view' WHEN hash(u, k, 3) % 1000 < 945 THEN 'cart'
            WHEN hash(u, k, 3) % 1000 < 975 THEN 'fav' ELSE 'buy' END,
       TIMESTAMP '2017-11-25' + to_seconds((hash(u, k, 4) % (9 * 86400))::BIGINT),
       NULL, NULL, NULL, NULL
FROM range(?) r(u), range(?) s(k)
WHERE k < 1 + hash(u, 5) % (2 * ?)
"""
MODEL = "bench-model"


def fill(store: Store, users: int, per_user: int) -> int:
    with store.write("bench", "bench") as w:
        n = w.add("events", EVENTS_SQL, [users, 2 * per_user, per_user])
        w.add("datasets", "SELECT 'bench', 'taobao', min(ts), max(ts), count(*), count(DISTINCT user_id) "
                          "FROM events WHERE dataset = 'bench'",
              columns=("name", "layout", "ts_min", "ts_max", "rows_stored", "n_users"))
    return n


def score(store: Store) -> None:
    """A scoring run of every user, written as score_dataset writes it (fixed pseudo-random scores)."""
    with store.write("bench", "score") as w:
        w.cur.execute("CREATE OR REPLACE TEMP TABLE staged AS SELECT user_id, NULL::VARCHAR AS category, "
                      "(hash(user_id) % 100000) / 100000.0 AS score FROM events WHERE dataset = 'bench' "
                      "GROUP BY user_id")
        w.replace("scores", "SELECT ?, 'bench', user_id, category, score, TIMESTAMP '2017-12-04', now()::TIMESTAMP "
                            "FROM staged", [MODEL], key=MODEL)
        run = f"run-{time.time_ns()}"
        w.add("score_runs", "SELECT ?, ?, 'bench', TIMESTAMP '2017-12-04', now()::TIMESTAMP, count(*) FROM staged",
              [run, MODEL], key=run)
        w.add("score_history", "SELECT ?, user_id, category, score FROM staged", [run], key=run)
        cohorts.refresh_user_stats(w)
        w.cur.execute("DROP TABLE staged")


def export_record(store: Store) -> None:
    with store.write("bench", "export") as w:
        export = f"x-{time.time_ns()}"
        w.add("exports", "SELECT ?, NULL, ?, 'bench', NULL, 'top 5 %', '{}', 100, NULL, now()::TIMESTAMP",
              [export, MODEL], key=export)
        w.add("export_rows", "SELECT ?, user_id, NULL FROM user_stats WHERE dataset = 'bench' LIMIT 100",
              [export], key=export)


def cases(store: Store) -> dict[str, Callable[[], object]]:
    spec = cohorts.CohortSpec(mode="top", top_percent=5.0)
    user = store.fetchone("SELECT user_id FROM user_stats WHERE dataset = 'bench' ORDER BY user_id LIMIT 1")[0]
    return {
        "dataset row": lambda: store.dataset("bench"),
        "events per day": lambda: overview.events_per_day(store, "bench"),
        "funnel": lambda: overview.funnel(store, "bench"),
        "cohort rows (top 5 %)": lambda: cohorts.cohort_users(store, MODEL, "bench", spec),
        "cohort summary": lambda: cohorts.cohort_summary(store, MODEL, "bench", spec),
        "score histogram": lambda: cohorts.score_histogram(store, MODEL, "bench"),
        "one user's timeline": lambda: store.df("SELECT * FROM events WHERE dataset = 'bench' AND user_id = ? "
                                                "ORDER BY ts", [user]),
        "prefix search": lambda: cohorts.search_users(store, "bench", "u12"),
        "scoring run write": lambda: score(store),
        "export record write": lambda: export_record(store),
    }


def timed(fn: Callable[[], object], repeats: int) -> Stat:
    fn()                                    # warm: first reads of the files and metadata
    values = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        values.append(time.perf_counter() - started)
    return Stat.of(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeats = max(args.repeats, MIN_REPEATS)
    with tempfile.TemporaryDirectory() as tmp:
        shared = Store(Path(tmp) / "store", threads=args.threads)
        private = Store(":memory:", threads=args.threads)
        app = None
        for name, store in (("shared", shared), ("private", private)):
            started = time.perf_counter()
            n = fill(store, args.users, args.events_per_user)
            score(store)
            print(f"{name}: {n:,} events and {args.users:,} scores written in {time.perf_counter() - started:.1f} s")
        # the app's way: the shared store with scores and user_stats kept in memory
        started = time.perf_counter()
        app = Store(Path(tmp) / "store", threads=args.threads, in_memory=("scores", "user_stats"))
        print(f"app's store (scores, user_stats in memory) opened in {time.perf_counter() - started:.1f} s")
        results = {}
        shared_cases, app_cases, private_cases = cases(shared), cases(app), cases(private)
        for label in shared_cases:
            results[label] = (timed(shared_cases[label], repeats), timed(app_cases[label], repeats),
                              timed(private_cases[label], repeats))
        print(f"\n{'':<24} {'shared store':>26} {'as the app opens it':>26} {'DuckDB tables':>26} "
              f"{'ratios':>11}")
        for label, (a, m, b) in results.items():
            print(f"{label:<24} {a.text():>26} {m.text():>26} {b.text():>26} {a.median / b.median:>5.2f} "
                  f"{m.median / b.median:>5.2f}")
        if shared.catalog is not None:
            print(f"\nshared store: version {shared.version}, "
                  f"{len(shared.catalog.snapshot().segments)} live segments")
        shared.close()
        app.close()
        private.close()


if __name__ == "__main__":
    main()
