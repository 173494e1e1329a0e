"""Benchmark: building model sequences for many synthetic users, against a bare DuckDB reference.

    python bench/sequences.py                 # 1,000,000 users, ~50 events each
    python bench/sequences.py --users 200000  # a quicker run

Events are generated inside DuckDB (seeded hash arithmetic, so the same data every run) into a
throw-away database file. The script prints, for each step, the median seconds over --repeats
(at least 5) with the fastest and slowest run, users per second at the median and the peak
resident memory of the process (psutil, sampled in a thread), and the ratio of `build_sequences`
to a reference in the same run (their medians): one DuckDB query that groups each
user's events into time-ordered lists and fetches them as Arrow record batches, chunk by chunk
of users like build_sequences (what any sequence builder must at least do, without the last-L
cut, vocabulary mapping or the numpy arrays).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import MIN_REPEATS, PeakRSS, Stat, repeat
from core.data.store import Store
from core.modeling.labels import LabelSpec, scoring_examples
from core.modeling.sequences import build_sequences, build_vocab
from tests.event_rows import insert_events

DATASET = "bench"

# Users get 1..99 events (about 50 on average) spread over nine days; items follow a skewed
# (cubic) popularity so the vocabulary has a head and a long tail; 2% of events are searches.
_GENERATE_SQL = """
WITH u AS (SELECT range AS u, 1 + (hash(range, ?) % 99) AS n FROM range(?)),
e AS (SELECT u.u, x.range AS k,
             (hash(u.u, x.range, ?) % 1000000) / 1000000.0 AS r1,
             (hash(x.range, u.u, ?) % 1000000) / 1000000.0 AS r2
      FROM u JOIN range(99) x ON x.range < u.n)
SELECT ?, 'u' || u, 'i' || floor(1000000 * r1 * r1 * r1)::BIGINT,
       'c' || (floor(1000000 * r1 * r1 * r1)::BIGINT % 5000),
       CASE WHEN r2 < 0.87 THEN 'view' WHEN r2 < 0.925 THEN 'cart' WHEN r2 < 0.955 THEN 'fav'
            WHEN r2 < 0.98 THEN 'buy' ELSE 'search' END,
       TIMESTAMP '2017-11-25' + to_seconds((u * 7919 + k * 15013) % (9 * 86400)),
       NULL,
       CASE WHEN r2 >= 0.98 THEN 'red shoes size ' || (k % 40) END
FROM e
"""

_REFERENCE_SQL = """
SELECT user_id, list(behavior ORDER BY ts) AS behavior, list(item_id ORDER BY ts) AS item,
       list(category ORDER BY ts) AS category, list(ts ORDER BY ts) AS ts
FROM events WHERE dataset = ? AND user_id IN (SELECT user_id FROM bench_users)
GROUP BY user_id
"""


def reference(store: Store, users: np.ndarray, chunk: int) -> int:
    """Each user's events as lists, fetched to Arrow record batches, in the same chunks of
    users as build_sequences (one query over 1M users runs out of DuckDB's 3 GB: list
    aggregates do not spill); returns the user count."""
    n = 0
    with store.cursor() as cur:
        for start in range(0, len(users), chunk):
            store.register_df(cur, "bench_users", pa.table({"user_id": users[start:start + chunk]}))
            for batch in cur.sql(_REFERENCE_SQL, params=[DATASET]).to_arrow_reader(1_000_000):
                n += batch.num_rows
            cur.unregister("bench_users")
    return n


def log_arguments(parser: argparse.ArgumentParser, chunk_users: int) -> argparse.ArgumentParser:
    """The options of a bench over this generated log: --users, --chunk-users, --repeats, --seed,
    --memory-limit."""
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--chunk-users", type=int, default=chunk_users)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"runs per step (at least {MIN_REPEATS})")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory limit, e.g. 4GB")
    return parser


def generate(store: Store, users: int, seed: int):
    """Write the seeded synthetic log of ``users`` users into ``store``, print its size and the time
    it took, and return its last event time."""
    start = time.perf_counter()
    with store.write(DATASET, "bench events") as w:
        insert_events(w, _GENERATE_SQL, [seed, users, seed, seed + 1, DATASET],
                      columns=("dataset", "user_id", "item_id", "category", "behavior", "ts", "session_id",
                               "query"), layout="synthetic")
    n_events, ts_max = store.fetchone("SELECT count(*), max(ts) FROM events WHERE dataset = ?", [DATASET])
    print(f"generated {n_events:,} events for {users:,} users in {time.perf_counter() - start:.1f}s")
    return ts_max


def timed(fn, repeats: int):
    """(seconds per run summarised, peak RSS bytes over the runs, last result)."""
    with PeakRSS() as rss:
        seconds, result = repeat(fn, repeats)
    return Stat.of(seconds), rss.peak, result


def main() -> None:
    parser = log_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), chunk_users=50_000)
    parser.add_argument("--max-len", type=int, default=100, help="L, events per sequence")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb", memory_limit=args.memory_limit)
        ts_max = generate(store, args.users, args.seed)

        spec = LabelSpec(horizon="1d", max_len=args.max_len)
        mib = 1024 * 1024
        print(f"process RSS before the steps: {psutil.Process().memory_info().rss / mib:,.0f} MiB")
        print(f"{'step':<34}{'seconds, median (min–max, n)':>32}{'users/s':>12}{'peak RSS MiB':>14}", flush=True)

        def show(label: str, sec: Stat, peak: int) -> None:
            print(f"{label:<34}{sec.text('.2f'):>32}{args.users / sec.median:>12,.0f}{peak / mib:>14,.0f}",
                  flush=True)

        t_ex, rss_ex, examples = timed(lambda: scoring_examples(store, DATASET, spec, ts_max), args.repeats)
        show("scoring_examples", t_ex, rss_ex)
        t_vocab, rss_vocab, vocab = timed(lambda: build_vocab(store, DATASET, ts_max), args.repeats)
        show("build_vocab", t_vocab, rss_vocab)
        users = examples["user_id"].astype(str).to_numpy()
        t_ref, rss_ref, ref_rows = timed(lambda: reference(store, users, args.chunk_users),
                                         args.repeats)
        show("reference: DuckDB list() -> Arrow", t_ref, rss_ref)
        t_seq, rss_seq, batch = timed(
            lambda: build_sequences(store, DATASET, examples, vocab, spec,
                                    chunk_users=args.chunk_users), args.repeats)
        show("build_sequences", t_seq, rss_seq)
        n = len(batch)
        nbytes = sum(getattr(batch, name).nbytes for name in batch.ARRAYS)
        filled = int(batch.mask.sum())
        store.close()

    print(f"rows: {len(examples):,} examples, {n:,} sequences (reference {ref_rows:,} users), "
          f"{filled:,} events kept, L = {args.max_len}")
    print(f"build_sequences / reference time: {t_seq.median / t_ref.median:.2f}x "
          f"(medians of {t_seq.n} runs); output arrays {nbytes / mib:,.0f} MiB")


if __name__ == "__main__":
    main()
