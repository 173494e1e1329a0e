"""Benchmark core/synth.py: events/s, wall time and peak RSS of generating N events to disk.

    python bench/synth.py                          # 10M events, Taobao CSV in a temp dir
    python bench/synth.py --events 100000000       # the 100M run (about 3.5 GB of CSV; deleted after)
    python bench/synth.py --fmt parquet --dir /tmp

Reference figures measured in the same process: the RSS of the bare interpreter with numpy and
pyarrow loaded, and the RSS added by allocating one chunk's worth of event columns as plain numpy
arrays (what holding a chunk in memory costs at the least). Peak RSS is sampled every 20 ms by a thread.
The log is generated ``--repeats`` times (at least 5, each file deleted before the next); wall time and
throughput are the median with the fastest and slowest run, peak RSS the highest of all runs.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import MIN_REPEATS, PeakRSS, Stat
from core.modeling.synth import SynthConfig, generate

EVENTS_PER_USER_DAY = 6.3      # measured mean of the default config (pv+cart+fav+buy)


def chunk_reference(chunk_events: int) -> int:
    """RSS added by one chunk of events as bare numpy columns (user, ts, item, cat, beh, sess, query)."""
    proc = psutil.Process()
    before = proc.memory_info().rss
    cols = [np.ones(chunk_events, np.int64) for _ in range(7)]
    after = proc.memory_info().rss
    del cols
    return after - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="target number of events")
    parser.add_argument("--days", type=float, default=9)
    parser.add_argument("--fmt", choices=("taobao", "parquet"), default="taobao")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir, deleted)")
    parser.add_argument("--chunk-users", type=int, default=SynthConfig(1, 1).chunk_users)
    parser.add_argument("--truth", action="store_true", help="also write the truth file")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"runs (at least {MIN_REPEATS})")
    args = parser.parse_args()

    users = max(1, round(args.events / (EVENTS_PER_USER_DAY * args.days)))
    config = SynthConfig(users=users, days=args.days, seed=0, chunk_users=args.chunk_users)
    base_rss = psutil.Process().memory_info().rss
    chunk_events = int(config.chunk_users * EVENTS_PER_USER_DAY * args.days)
    ref = chunk_reference(chunk_events)
    seconds = []
    with PeakRSS() as rss:
        for _ in range(max(args.repeats, MIN_REPEATS)):
            workdir = Path(tempfile.mkdtemp(prefix="synth-bench-", dir=args.dir))
            out = workdir / ("events.csv" if args.fmt == "taobao" else "events.parquet")
            try:
                summary = generate(config, out, fmt=args.fmt,
                                   truth_out=workdir / "truth.parquet" if args.truth else None)
                size = out.stat().st_size
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            seconds.append(summary.seconds)
    wall = Stat.of(seconds)

    gib = 1024 ** 3
    print(f"synth {args.fmt}: {summary.events:,} events, {users:,} users, {args.days:g} days "
          f"(chunk {config.chunk_users:,} users), file {size / gib:.2f} GiB")
    print(f"  wall time          {wall.text('.1f', ' s')}")
    print(f"  throughput         {Stat.of([summary.events / s for s in seconds]).text(',.0f', ' events/s')}")
    print(f"  peak RSS           {rss.peak / gib:8.2f} GiB (highest over the {wall.n} runs)")
    print(f"  reference: process RSS before generating     {base_rss / gib:6.2f} GiB")
    print(f"  reference: one chunk as bare numpy columns   {ref / gib:6.2f} GiB "
          f"({chunk_events:,} events x 7 int64)")
    print(f"  peak RSS above the bare process = {(rss.peak - base_rss) / max(ref, 1):.1f} x one bare chunk")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
