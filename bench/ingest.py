"""Ingest throughput against a bare DuckDB ``read_csv`` into a table or a Parquet file, in the same process.

    python bench/ingest.py [--events 10000000] [--repeats 5] [--threads N]
    python bench/ingest.py --scale [--events 100000000] [--memory-limit 2GB]

Default mode writes two Taobao-layout CSVs of ``--events`` lines each:
  * clean:  every line a valid, distinct event;
  * dirty:  the same generator with 5% exact duplicate lines (each repeats the line 7 above it) and
            0.6% bad lines: unparsable timestamps, unknown behaviours, missing user ids, NUL bytes
            inside a field (a corrupted line) and lines with an extra column (the CSV reader rejects them).
For each file it times, ``--repeats`` times (at least 5) in a rotating order, on one connection with
the same DuckDB threads:
  * bare:          CREATE TABLE t AS SELECT * FROM read_csv(path, ignore_errors=true)
                   (DuckDB sniffs the types, infers BIGINT ids, skips lines it cannot split)
  * bare_varchar:  the same with every column read as VARCHAR (what `events` stores for ids)
  * bare_parquet:  the VARCHAR read written to one zstd Parquet file, as the store's segments are
                   (the like-for-like reference since the store is Parquet segments + a catalog)
  * ingest:        core.data.ingest.ingest_file (validation, quarantine with line numbers,
                   duplicate policy, dataset record, one atomic write)
and prints the median seconds and rows/s of each, the ratio ingest / bare (goal >= 0.7),
ingest / bare_varchar and ingest / bare_parquet, and, for the dirty file, the rows stored, dropped
and quarantined against the planted numbers. The previous dataset is deleted before each ingest, outside the timing.

``--scale`` generates a ``core.modeling.synth`` log of about ``--events`` events and ingests it once under
a DuckDB memory limit with a temp directory, printing wall time and the peak RSS of the process.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.ingest import IngestReport, ingest_file
from core.data.store import Store

MIN_REPEATS = 5
DATASET = "bench"

# One line of a deterministic Taobao-like log; ``j`` is the line whose content line ``i`` carries.
_LINE = """(hash(j) % 1000000)::VARCHAR || ',' || (hash(j * 7) % 4000000)::VARCHAR || ',' ||
           (hash(j * 13) % 9000)::VARCHAR || ',' ||
           CASE WHEN j % 50 = 0 THEN 'buy' WHEN j % 18 = 0 THEN 'cart' WHEN j % 35 = 0 THEN 'fav' ELSE 'pv' END
           || ',' || (1511539200 + (j * 7919) % 777600)::VARCHAR"""
# The dirty file: line i % 20 = 7 repeats line i - 7; six lines in every 1,000 are bad.
_DIRTY_LINE = f"""
    CASE i % 1000
        WHEN 13 THEN '1,100,10,pv,not-a-time'
        WHEN 513 THEN '2,100,10,pv,yesterday'
        WHEN 29 THEN '3,100,10,teleport,1511544070'
        WHEN 41 THEN ',100,10,pv,1511544070'
        WHEN 97 THEN '4,10' || chr(0) || '0,10,pv,1511544070'
        WHEN 151 THEN '5,100,10,pv,1511544070,extra'
        ELSE {_LINE.replace("j", "(CASE WHEN i % 20 = 7 THEN i - 7 ELSE i END)")}
    END"""
DIRTY_PER_1000 = 6
DUPLICATE_EVERY = 20
_WRITE = "COPY (SELECT {line} AS line FROM range(?) t(i)) TO '{path}' (FORMAT csv, HEADER false, QUOTE '', " \
         "DELIMITER '\t')"
_VARCHAR = "{'u': 'VARCHAR', 'i': 'VARCHAR', 'c': 'VARCHAR', 'b': 'VARCHAR', 't': 'VARCHAR'}"
_BARE = {
    "bare": "CREATE TABLE bench_bare AS SELECT * FROM read_csv(?, ignore_errors=true)",
    "bare_varchar": ("CREATE TABLE bench_bare AS SELECT * FROM read_csv(?, header=false, ignore_errors=true, "
                     f"columns={_VARCHAR})"),
    # {out}: a temp path made by the bench (COPY ... TO takes no parameter)
    "bare_parquet": ("COPY (SELECT * FROM read_csv(?, header=false, ignore_errors=true, "
                     f"columns={_VARCHAR})) TO '{{out}}' (FORMAT parquet, COMPRESSION zstd)"),
}


def write_csv(store: Store, path: Path, events: int, dirty: bool) -> None:
    """Write ``events`` lines (one text column, written verbatim) with DuckDB."""
    line = _DIRTY_LINE if dirty else _LINE.replace("j", "i")
    # COPY ... TO needs a literal path; it is a temp path made here, never user input
    store.execute(_WRITE.format(line=line, path=str(path).replace("'", "''")), [events])


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _bench_file(store: Store, path: Path, events: int, repeats: int) -> tuple[dict[str, float], IngestReport]:
    """Median seconds per method over ``repeats`` rounds; the order of the methods rotates per round."""
    times: dict[str, list[float]] = {name: [] for name in (*_BARE, "ingest")}
    out = str(path.with_suffix(".bare.parquet")).replace("'", "''")
    last: list[IngestReport] = []
    steps: list[tuple[str, float]] = []

    def bare(sql: str) -> Callable[[], None]:
        def run() -> None:
            store.execute(sql, [str(path)])
        return run

    def ingest() -> None:
        steps.clear()
        last.append(ingest_file(store, path, dataset=DATASET,
                                progress=lambda done, total, msg: steps.append((msg, time.perf_counter()))))

    methods: dict[str, Callable[[], object]] = {name: bare(sql.replace("{out}", out)) for name, sql in _BARE.items()}
    methods["ingest"] = ingest
    names = list(methods)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            store.execute("DROP TABLE IF EXISTS bench_bare")           # clean-up outside the timing
            if DATASET in store.dataset_names():
                store.delete_dataset(DATASET)
            times[name].append(_time(methods[name]))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for key, sec in med.items():
        spread = f"{min(times[key]):.2f}..{max(times[key]):.2f}"
        print(f"  {key:>13}: median {sec:6.2f} s ({spread})  {events / sec:>12,.0f} rows/s")
    print(f"  ratio ingest / bare          = {med['bare'] / med['ingest']:.2f}  (goal >= 0.70)")
    print(f"  ratio ingest / bare_varchar  = {med['bare_varchar'] / med['ingest']:.2f}")
    print(f"  ratio ingest / bare_parquet  = {med['bare_parquet'] / med['ingest']:.2f}")
    print("  ingest steps (last round): " + ", ".join(
        f"{msg} {t1 - t0:.2f}s" for (msg, t0), (_, t1) in itertools.pairwise(steps)))
    return med, last[-1]


def throughput(events: int, repeats: int, threads: int) -> None:
    repeats = max(repeats, MIN_REPEATS)
    with tempfile.TemporaryDirectory(prefix="intentlens-bench-") as tmp:
        folder = Path(tmp)
        with Store(folder / "bench.duckdb", threads=threads) as store:
            print(f"{events:,} lines per file, {repeats} rounds, median; DuckDB threads {threads}")
            for label, dirty in (("clean", False), ("dirty", True)):
                path = folder / f"taobao_{label}.csv"
                write_csv(store, path, events, dirty)
                print(f"{label}: {path.stat().st_size / 2 ** 20:,.0f} MB")
                store.execute("DROP TABLE IF EXISTS bench_bare")
                store.execute(_BARE["bare_varchar"], [str(path)])      # warm the page cache, untimed
                _, rep = _bench_file(store, path, events, repeats)
                bad = events // 1000 * DIRTY_PER_1000 if dirty else 0
                dups = sum(1 for i in range(events) if i % DUPLICATE_EVERY == 7) if dirty else 0
                print(f"  stored {rep.rows_stored:,} (planted {events - bad - dups:,}), duplicates dropped "
                      f"{rep.duplicates_dropped:,} (planted {dups:,}), quarantined {rep.rows_quarantined:,} "
                      f"(planted {bad:,}: {', '.join(f'{r} {n:,}' for r, n in sorted(rep.quarantined.items()))})")
                path.unlink()


class _PeakRSS(threading.Thread):
    """Samples this process's resident memory every 0.2 s."""

    def __init__(self) -> None:
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
        folder = Path(tmp)
        pilot = generate(SynthConfig(users=2000, days=9, seed=1), folder / "pilot.csv", fmt="taobao")
        users = max(1, int(events / (pilot.events / 2000)))
        print(f"pilot: {pilot.events / 2000:.1f} events/user -> {users:,} users for ~{events:,} events")
        t0 = time.perf_counter()
        summary = generate(SynthConfig(users=users, days=9, seed=1), folder / "big.csv.gz", fmt="taobao")
        print(f"synth: {summary.events:,} events in {time.perf_counter() - t0:.0f} s")
        watcher = _PeakRSS()
        watcher.start()
        with Store(folder / "scale.duckdb", memory_limit=memory_limit,
                   temp_directory=str(folder / "spill")) as store:
            t0 = time.perf_counter()
            rep = ingest_file(store, folder / "big.csv.gz", dataset="scale")
            wall = time.perf_counter() - t0
        watcher.stop.set()
        watcher.join()
        print(f"ingest: {rep.rows_stored:,} events stored in {wall:.0f} s "
              f"({rep.rows_stored / wall:,.0f} rows/s); peak RSS {watcher.peak / 2 ** 30:.2f} GiB "
              f"(memory_limit {memory_limit}; goal <= 4 GB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None, help="lines per file (default 10M; --scale 100M)")
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"rounds (at least {MIN_REPEATS})")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DuckDB threads for every method")
    ap.add_argument("--scale", action="store_true", help="100M-event synth file, wall time and peak RSS")
    ap.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit for --scale")
    ap.add_argument("--workdir", default=None, help="where --scale writes its files (default /tmp)")
    args = ap.parse_args()
    if args.scale:
        scale(args.events or 100_000_000, args.memory_limit, args.workdir)
    else:
        throughput(args.events or 10_000_000, args.repeats, args.threads)


if __name__ == "__main__":
    main()
