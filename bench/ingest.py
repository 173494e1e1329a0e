"""Ingest throughput against a bare DuckDB ``read_csv`` into a table, in the same process.

    python bench/ingest.py [--events 10000000] [--repeats 3]
    python bench/ingest.py --scale [--events 100000000] [--memory-limit 2GB]

Default mode writes a Taobao-layout CSV of ``--events`` rows, then times (median of repeats):
  * bare:          CREATE TABLE t AS SELECT * FROM read_csv(path)   (DuckDB infers BIGINT ids)
  * bare_varchar:  the same with every column read as VARCHAR (what `events` stores for ids)
  * typed_pass:    one pass that reads text, casts ids to BIGINT and times to TIMESTAMP and
                   writes them: the least an integer-id store would do before any validation,
                   duplicate check or quarantine (a ceiling for such a design, not a feature)
  * ingest:        core.data.ingest.ingest_file (validation, quarantine, dedup, one transaction)
and prints rows/s, the ratio ingest / bare (goal >= 0.7) and, for the last repeat, the seconds
each ingest step took (read + validate into staging, duplicate check + write, counts + record).

``--scale`` generates a ``core.modeling.synth`` log of about ``--events`` events and ingests it once under
a DuckDB memory limit with a temp directory, printing wall time and the peak RSS of the process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.ingest import ingest_file  # noqa: E402
from core.data.store import Store  # noqa: E402

# A deterministic Taobao-like file written by DuckDB itself (fast, exact row count).
_WRITE_CSV = """
    COPY (SELECT (hash(i) % 1000000)::BIGINT AS user_id, (hash(i * 7) % 4000000)::BIGINT AS item_id,
                 (hash(i * 13) % 9000)::BIGINT AS category_id,
                 CASE WHEN i % 50 = 0 THEN 'buy' WHEN i % 18 = 0 THEN 'cart'
                      WHEN i % 35 = 0 THEN 'fav' ELSE 'pv' END AS behavior,
                 1511539200 + (i * 7919) % 777600 AS ts
          FROM range(?) t(i))
    TO '{path}' (FORMAT csv, HEADER false)"""


def write_taobao_csv(store: Store, path: Path, events: int) -> None:
    # COPY ... TO needs a literal path; it is a temp path made here, never user input
    store.execute(_WRITE_CSV.format(path=str(path).replace("'", "''")), [events])


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(events: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="intentlens-bench-") as tmp:
        tmp = Path(tmp)
        csv_path = tmp / "taobao.csv"
        with Store(tmp / "bench.duckdb") as store:
            write_taobao_csv(store, csv_path, events)
            size_mb = csv_path.stat().st_size / 2 ** 20
            print(f"file: {events:,} events, {size_mb:,.0f} MB ({csv_path.name})")
            times: dict[str, list[float]] = {"bare": [], "bare_varchar": [], "typed_pass": [], "ingest": []}
            cols = "{'u': 'VARCHAR', 'i': 'VARCHAR', 'c': 'VARCHAR', 'b': 'VARCHAR', 't': 'VARCHAR'}"
            for r in range(repeats):
                times["bare"].append(_time(lambda: store.execute(
                    "CREATE TABLE bench_bare AS SELECT * FROM read_csv(?)", [str(csv_path)])))
                store.execute("DROP TABLE bench_bare")
                times["bare_varchar"].append(_time(lambda: store.execute(
                    f"CREATE TABLE bench_bare AS SELECT * FROM read_csv(?, header=false, columns={cols})",
                    [str(csv_path)])))
                store.execute("DROP TABLE bench_bare")
                times["typed_pass"].append(_time(lambda: store.execute(
                    "CREATE TABLE bench_bare AS SELECT TRY_CAST(u AS BIGINT) AS u, TRY_CAST(i AS BIGINT) AS i, "
                    "TRY_CAST(c AS BIGINT) AS c, b, make_timestamp(TRY_CAST(t AS BIGINT) * 1000000) AS t "
                    f"FROM read_csv(?, header=false, columns={cols})", [str(csv_path)])))
                store.execute("DROP TABLE bench_bare")
                rep = None
                steps: list[tuple[str, float]] = []

                def run():
                    nonlocal rep
                    rep = ingest_file(store, csv_path, dataset="bench", replace=True,
                                      progress=lambda done, total, msg: steps.append((msg, time.perf_counter())))
                times["ingest"].append(_time(run))
                print(f"  repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
            med = {k: statistics.median(v) for k, v in times.items()}
            for key, sec in med.items():
                print(f"{key:>13}: median {sec:6.2f} s  {events / sec:>12,.0f} rows/s")
            print(f"ratio ingest / bare          = {med['bare'] / med['ingest']:.2f}  (goal >= 0.70)")
            print(f"ratio ingest / bare_varchar  = {med['bare_varchar'] / med['ingest']:.2f}")
            print(f"ceilings: bare_varchar / bare = {med['bare'] / med['bare_varchar']:.2f} (text ids, nothing "
                  f"else), typed_pass / bare = {med['bare'] / med['typed_pass']:.2f} (integer ids, one pass)")
            print("ingest steps (last repeat): " + ", ".join(
                f"{msg} {t1 - t0:.2f}s" for (msg, t0), (_, t1) in zip(steps, steps[1:])))
            print(f"stored {rep.rows_stored:,}, duplicates {rep.duplicates_dropped:,}, "
                  f"quarantined {rep.rows_quarantined:,}")


class _PeakRSS(threading.Thread):
    """Samples this process's resident memory every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(0.2)


def scale(events: int, memory_limit: str, workdir: str | None) -> None:
    from core.modeling.synth import SynthConfig, generate

    with tempfile.TemporaryDirectory(prefix="intentlens-scale-", dir=workdir) as tmp:
        tmp = Path(tmp)
        pilot = generate(SynthConfig(users=2000, days=9, seed=1), tmp / "pilot.csv", fmt="taobao")
        users = max(1, int(events / (pilot.events / 2000)))
        print(f"pilot: {pilot.events / 2000:.1f} events/user -> {users:,} users for ~{events:,} events")
        t0 = time.perf_counter()
        summary = generate(SynthConfig(users=users, days=9, seed=1), tmp / "big.csv.gz", fmt="taobao")
        print(f"synth: {summary.events:,} events in {time.perf_counter() - t0:.0f} s")
        watcher = _PeakRSS()
        watcher.start()
        with Store(tmp / "scale.duckdb", memory_limit=memory_limit,
                   temp_directory=str(tmp / "spill")) as store:
            t0 = time.perf_counter()
            rep = ingest_file(store, tmp / "big.csv.gz", dataset="scale")
            wall = time.perf_counter() - t0
        watcher.stop.set()
        watcher.join()
        print(f"ingest: {rep.rows_stored:,} events stored in {wall:.0f} s "
              f"({rep.rows_stored / wall:,.0f} rows/s); peak RSS {watcher.peak / 2 ** 30:.2f} GiB "
              f"(memory_limit {memory_limit}; goal <= 4 GB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None, help="rows (default 10M; --scale 100M)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", action="store_true", help="100M-event synth file, wall time and peak RSS")
    ap.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit for --scale")
    ap.add_argument("--workdir", default=None, help="where --scale writes its files (default /tmp)")
    args = ap.parse_args()
    if args.scale:
        scale(args.events or 100_000_000, args.memory_limit, args.workdir)
    else:
        throughput(args.events or 10_000_000, args.repeats)


if __name__ == "__main__":
    main()
