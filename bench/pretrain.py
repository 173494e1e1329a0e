"""Benchmark: self-supervised pre-training (core.modeling.pretrain) throughput and peak memory.

For each ``--users N`` a synthetic log (core.modeling.synth, ``--days`` days) is generated, ingested
into a throw-away DuckDB file and pre-trained for one epoch by the real ``pretrain`` call, with
chunks of ``--chunk-users`` users so an epoch has several chunks. Each chunk is one timed run (its
sequences are built in DuckDB, then trained on): the figures are the median of those runs with the
fastest and slowest beside it (``bench.timing.Stat``). ``--max-chunks`` cancels the epoch after that
many chunks to bound the time on large logs (every chunk does the same work, so the rate and the
peak memory are those of the whole epoch; the epoch time is then projected from the chunks).

Measures, per size: events/s (real events inside the training sequences, per second of building +
training, and of training alone), sequences/s, the time to find the examples and the vocabulary,
and the peak resident memory of the whole process (DuckDB included) during the run. The peak
is taken in a run of its own, after the repeated example/vocabulary timings.

Below 1M users the 1M-user figures are an EXTRAPOLATION, printed as such: the epoch time scales with the number of
sequences (sequences per user and the events/s as measured at the largest size); the peak memory is
split into what does not grow with the log (torch, the model, one chunk, a batch's activations),
the example index (16 bytes per example and a user id each) and DuckDB's working memory (which
grows with the events read, up to the store's memory limit): a straight line through the measured
sizes (an upper bound) and the capped estimate are both printed.

  python bench/pretrain.py                                  # 20k users, one thread
  python bench/pretrain.py --users 20000 --users 50000 --users 100000 --max-chunks 6
  python bench/pretrain.py --users 1000000 --max-chunks 6   # measured at the target size

Measured at 1M users (``--users 1000000 --max-chunks 6``, one torch thread, this 2-core machine, stop 28):
56.4M log events, 5.48M pre-training sequences (37.4 events each); 27,650 events/s building and
training (26,266-29,171 over the 6 chunks), 32,730 training alone, 741.8 sequences/s; examples and
vocabulary 16.7 s (median of 5); peak RSS 3,527 MiB for the whole process, DuckDB included (the
example index 141 MiB of it); one whole epoch projected at 2.1 h (2.0-2.2 h). The pre-training run's
wall time was 242 s; the whole command, generating and ingesting the log included, about 9 minutes.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import MIN_REPEATS, PeakRSS, Stat, repeat
from core.data.store import Store
from core.modeling.pipeline import PRESETS, checkpoint_dir_for
from core.modeling.pretrain import cutoff_grid, pretrain, pretrain_examples
from core.modeling.sequences import build_vocab
from core.progress import Cancelled, CancelToken
from core.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
TARGET_USERS = 1_000_000
USER_ID_BYTES = 60        # one user id as a Python str in the example index (about, for ids of 6-10 digits)


def measure(users: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Generate, ingest and pre-train one log; per-chunk rates, peak RSS and sizes."""
    log_path, db = root / f"synth-{users}.csv", root / f"db-{users}.duckdb"
    # the log is written and ingested by the CLI in child processes, so their memory is not in our peak
    core = [sys.executable, "-m", "core"]
    subprocess.run([*core, "synth", "--users", str(users), "--days", str(args.days), "--seed", str(args.seed),
                    "--out", str(log_path)], check=True, cwd=ROOT, capture_output=True)
    subprocess.run([*core, "ingest", str(log_path), "--dataset", "bench", "--db", str(db)], check=True, cwd=ROOT,
                   capture_output=True)
    log_path.unlink()
    chunks: list[dict[str, float]] = []
    lines: list[str] = []
    token = CancelToken()

    def on_chunk(record: dict[str, float]) -> None:
        chunks.append(record)
        if args.max_chunks and len(chunks) >= args.max_chunks:
            token.cancel()                       # checked before the next step

    out = root / f"enc-{users}"
    begin = time.perf_counter()
    finished = True
    with Store(db, read_only=True) as store:
        # the steps before the first chunk: cutoffs, examples and vocabulary (repeated, untimed by the chunks)
        prepare, _ = repeat(lambda: build_vocab(store, "bench", pretrain_examples(
            store, "bench", cutoff_grid(store, "bench")).cutoffs[-1], min_count=PRESETS["balanced"].min_item_count),
            MIN_REPEATS)
    with Store(db, read_only=True) as store, PeakRSS() as rss:
        try:
            result = pretrain(store, "bench", out, epochs=1, max_len=args.max_len, threads=args.threads,
                              chunk_users=args.chunk_users, seed=args.seed, log=lines.append,
                              cancel=token, on_chunk=on_chunk)
            n_events, n_seq = int(result.card["events"]), int(result.card["examples"]["train"])
        except Cancelled:
            finished = False
            n_events = n_seq = 0
        n_events = n_events or int((store.fetchone("SELECT count(*) FROM events WHERE dataset = 'bench'")
                                    or (0,))[0])
    wall = time.perf_counter() - begin
    shutil.rmtree(checkpoint_dir_for(out), ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    if db.is_dir():                  # the store is a folder of segments
        shutil.rmtree(db)
    else:
        db.unlink()
    if not chunks:
        raise SystemExit(f"no chunk finished at {users:,} users; lower --chunk-users")
    if not n_seq:   # cancelled: the total from the log line "pre-training on bench: N sequences of ..."
        n_seq = int(next(line for line in lines if line.startswith("pre-training on"))
                    .split(": ", 1)[1].split(" sequences", 1)[0].replace(",", ""))
    events = np.array([c["events"] for c in chunks], dtype=float)
    build = np.array([c["build_seconds"] for c in chunks])
    train = np.array([c["train_seconds"] for c in chunks])
    seqs = np.array([c["sequences"] for c in chunks], dtype=float)
    return {"users": users, "log_events": n_events, "sequences": n_seq, "finished": finished,
            "chunks": len(chunks), "wall": wall, "prepare": Stat.of(prepare), "peak_rss": rss.peak,
            "index_bytes": n_seq * 16 + users * USER_ID_BYTES,
            "events_per_seq": float(events.sum() / seqs.sum()),
            "total_rate": Stat.of(list(events / (build + train))), "train_rate": Stat.of(list(events / train)),
            "build_rate": Stat.of(list(events / np.maximum(build, 1e-9))),
            "seq_rate": Stat.of(list(seqs / (build + train)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, action="append", help="users in the log (repeatable; default 20000)")
    parser.add_argument("--days", type=float, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--chunk-users", type=int, default=3000,
                        help=f"users per chunk (each chunk is one timed run; at least {MIN_REPEATS} wanted)")
    parser.add_argument("--max-chunks", type=int, default=0, help="stop the epoch after this many chunks (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    sizes = sorted(args.users or [20_000])
    if sizes[0] < 1000:
        raise SystemExit("--users must be at least 1000")
    torch.set_num_threads(args.threads)
    print(f"pre-training, one epoch, max_len {args.max_len}, 'balanced' sizes, {args.threads} torch thread(s), "
          f"chunks of {args.chunk_users:,} users; torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        for users in sizes:
            r = measure(users, args, Path(tmp))
            rows.append(r)
            note = "" if r["finished"] else f" (stopped after {r['chunks']} chunks)"
            print(f"\n{users:,} users: {r['log_events']:,} log events, {r['sequences']:,} training sequences "
                  f"({r['sequences'] / users:.2f} per user, {r['events_per_seq']:.1f} events each){note}")
            print(f"  events/s, build + train : {r['total_rate'].text(',.0f')}")
            print(f"  events/s, training only : {r['train_rate'].text(',.0f')}")
            print(f"  events/s, sequence build: {r['build_rate'].text(',.0f')}")
            print(f"  sequences/s             : {r['seq_rate'].text(',.1f')}")
            print(f"  examples + vocabulary   : {r['prepare'].text(',.2f', ' s')}; run wall {r['wall']:.0f} s")
            print(f"  peak RSS                : {r['peak_rss'] / 2**20:,.0f} MiB (of which the example index "
                  f"{r['index_bytes'] / 2**20:,.0f} MiB)")
    last = rows[-1]
    if last["users"] >= TARGET_USERS:
        _print_measured_at_target(last, args.threads)
    else:
        _print_extrapolation(rows, args.threads)


def _epoch_hours(r: dict[str, Any], users: float) -> tuple[float, float, float]:
    """One epoch over ``users`` users at ``r``'s rates: (fastest, median, slowest chunk's rate), hours."""
    events = r["sequences"] / r["users"] * users * r["events_per_seq"]
    low, mid, high = (events / rate / 3600 for rate in
                      (r["total_rate"].high, r["total_rate"].median, r["total_rate"].low))
    return low, mid, high


def _print_measured_at_target(last: dict[str, Any], threads: int) -> None:
    """The largest size is the target: the rates and the peak above are measured there; only an
    epoch cut short by --max-chunks is projected (every chunk does the same work)."""
    print(f"\nMEASURED at {last['users']:,} users: the rates and the peak RSS above.")
    if not last["finished"]:
        low, mid, high = _epoch_hours(last, last["users"])
        print(f"One whole epoch (PROJECTED from the {last['chunks']} measured chunks, not run to the end): about "
              f"{mid:.1f} h ({low:.1f}-{high:.1f} h over the chunks' spread) on {threads} thread(s).")


def _print_extrapolation(rows: list[dict[str, Any]], threads: int) -> None:
    """Epoch time and peak memory at TARGET_USERS from sizes below it, printed as an extrapolation."""
    last = rows[-1]
    seq_1m = last["sequences"] / last["users"] * TARGET_USERS
    events_1m = last["log_events"] / last["users"] * TARGET_USERS
    low, mid, high = _epoch_hours(last, TARGET_USERS)
    index_1m = seq_1m * 16 + TARGET_USERS * USER_ID_BYTES
    print(f"\nEXTRAPOLATED to {TARGET_USERS:,} users (not measured): about {events_1m:,.0f} log events and "
          f"{seq_1m:,.0f} sequences; one epoch about {mid:.1f} h ({low:.1f}-{high:.1f} h over "
          f"the chunks' spread) at the measured {last['total_rate'].median:,.0f} events/s on {threads} "
          f"thread(s), linear in the sequences.")
    # memory: torch, the model, one chunk and a batch's activations do not grow with the log; the
    # example index does (16 bytes per example and a user id), and DuckDB's working memory for the
    # example, vocabulary and sequence queries grows with the events up to its memory limit
    limit = _bytes(get_settings().memory_limit)
    capped = rows[0]["peak_rss"] + limit + index_1m
    if len(rows) > 1:
        slope, intercept = np.polyfit([r["users"] for r in rows], [r["peak_rss"] for r in rows], 1)
        print(f"Peak RSS: a straight line through the {len(rows)} sizes ({slope * 1000 / 2**20:,.1f} MiB per 1,000 "
              f"users) gives {(intercept + slope * TARGET_USERS) / 2**30:.1f} GiB at {TARGET_USERS:,} users; that is "
              f"an upper bound, since what grows is DuckDB's working memory (capped by its memory limit, "
              f"{get_settings().memory_limit}) and the example index ({index_1m / 2**30:.2f} GiB at "
              f"{TARGET_USERS:,} users): with the cap, at most about {capped / 2**30:.1f} GiB (the smallest size's "
              f"peak + the limit + the index).")
    else:
        print(f"Peak RSS: at most about {capped / 2**30:.1f} GiB (the measured peak + DuckDB's memory limit "
              f"{get_settings().memory_limit} + the example index, {index_1m / 2**30:.2f} GiB); measure two sizes "
              f"for the growth per user.")


def _bytes(text: str) -> float:
    """``"3GB"`` / ``"512MB"`` / ``"1.5GiB"`` -> bytes (DuckDB's memory-limit notation)."""
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    number = text.strip().upper()
    for unit in sorted(units, key=len, reverse=True):
        if number.endswith(unit):
            return float(number[: -len(unit)]) * units[unit]
    return float(number)


if __name__ == "__main__":
    main()
