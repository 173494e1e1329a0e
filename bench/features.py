"""Benchmark: building the aggregate features for many synthetic users, against a bare DuckDB reference.

    python bench/features.py                  # 1,000,000 users, ~50 events each
    python bench/features.py --users 200000   # a quicker run

The events are bench/sequences.py's (the same seeded DuckDB generator, so the two benches read the
same log). For one scoring row per user (the cutoff at the log's end, 1-day horizon, the default
lookback) the script prints the median seconds over --repeats (at least 5) with the fastest and
slowest run, rows per second at the median and the peak resident memory of the process, and the
ratio of `build_features` to a reference in the same run (their medians).

The reference is the least any aggregate-feature builder does: in the same chunks of users, join
each row's events in its lookback and count them per behaviour in the same four windows (the last
H, 4H, 16H and the whole lookback), fetched as Arrow. `build_features` does that and more: the
session split (a window function), distinct items and categories, time since each behaviour, open
carts per item and the open carts in the most-viewed category, hour-of-day shares, and the float32
matrix. The ratio says what those cost on top of the unavoidable scan and group-by.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sequences import DATASET, generate, log_arguments, timed
from bench.timing import Stat
from core.data.schema import BEHAVIORS
from core.data.store import Store
from core.modeling.features import CHUNK_USERS, WINDOWS, build_features
from core.modeling.labels import LabelSpec, scoring_examples


def _reference_sql() -> str:
    counts = [f"count(*) FILTER (e.behavior = '{b}'"
              + ("" if multiple is None else f" AND epoch(k.cutoff - e.ts) <= {multiple} * k.h")
              + f") AS n_{b}_{name}"
              for b in BEHAVIORS for name, multiple in WINDOWS]
    return (f"SELECT k.user_id, {', '.join(counts)}\n"
            "FROM bench_keys k JOIN events e ON e.user_id = k.user_id AND e.ts <= k.cutoff\n"
            "WHERE e.dataset = ? AND (k.lo IS NULL OR e.ts > k.lo)\n"
            "GROUP BY k.user_id")


def reference(store: Store, examples: pd.DataFrame, spec: LabelSpec, chunk: int) -> int:
    """Per-behaviour window counts for every row, chunk by chunk of users as build_features
    runs them; returns the row count."""
    sql = _reference_sql()
    users = examples["user_id"].astype(str).to_numpy()
    cutoffs = pd.to_datetime(examples["cutoff"]).to_numpy().astype("datetime64[us]")
    lookback = spec.lookback_td
    lo = cutoffs - np.timedelta64(lookback) if lookback else np.full(len(cutoffs), np.datetime64("NaT", "us"))
    order = np.argsort(users, kind="stable")
    n = 0
    with store.cursor() as cur:
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            store.register_df(cur, "bench_keys", pa.table({
                "user_id": pa.array(users[part], pa.string()),
                "cutoff": pa.array(cutoffs[part], pa.timestamp("us")),
                "lo": pa.array(lo[part], pa.timestamp("us")),
                "h": pa.array(np.full(len(part), spec.horizon_td.total_seconds())),
            }))
            n += cur.sql(sql, params=[DATASET]).to_arrow_table().num_rows
            cur.unregister("bench_keys")
    return n


def main() -> None:
    args = log_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), CHUNK_USERS).parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb", memory_limit=args.memory_limit)
        ts_max = generate(store, args.users, args.seed)

        spec = LabelSpec(horizon="1d")
        examples = scoring_examples(store, DATASET, spec, ts_max)
        mib = 1024 * 1024
        print(f"process RSS before the steps: {psutil.Process().memory_info().rss / mib:,.0f} MiB")
        print(f"{'step':<40}{'seconds, median (min–max, n)':>32}{'rows/s':>12}{'peak RSS MiB':>14}", flush=True)

        def show(label: str, sec: Stat, peak: int) -> None:
            print(f"{label:<40}{sec.text('.2f'):>32}{len(examples) / sec.median:>12,.0f}{peak / mib:>14,.0f}",
                  flush=True)

        t_ref, rss_ref, ref_rows = timed(lambda: reference(store, examples, spec, args.chunk_users), args.repeats)
        show("reference: window counts -> Arrow", t_ref, rss_ref)
        t_feat, rss_feat, feats = timed(
            lambda: build_features(store, DATASET, examples, spec, chunk_users=args.chunk_users), args.repeats)
        show("build_features", t_feat, rss_feat)
        store.close()

    if ref_rows != len(feats):
        raise SystemExit(f"the reference returned {ref_rows:,} rows for {len(feats):,} examples: not the same work")
    print(f"rows: {len(examples):,} examples, {feats.shape[1]} features each (the reference: "
          f"{len(BEHAVIORS) * len(WINDOWS)} counts)")
    print(f"build_features / reference time: {t_feat.median / t_ref.median:.2f}x (medians of {t_feat.n} runs)")


if __name__ == "__main__":
    main()
