"""Beyond one machine, measured on this one: Spark with 1 and 2 workers, torchrun with 1 and 2 processes.

    python bench/distributed.py                        # 10,000 synthetic users (~1M events), 5 runs each
    python bench/distributed.py --users 20000 --repeats 5 --epochs 2

1. Sequence and feature building for every training, validation and test example of a synthetic
   log (``core.synth``, ingested into a store folder), three ways on the same examples and vocabulary:
   the single-machine path (DuckDB in this process, 2 threads: the reference), Spark on a local
   cluster of 1 worker (1 core) and of 2 workers (1 core each), reading the store's Parquet files in
   place (``core.modeling.spark``). Reported: events/s (the dataset's events over the wall time),
   the 2-worker / 1-worker scaling ratio, that Spark's arrays equal the reference's, and the peak
   RSS of each worker process (executor JVMs and their Python workers).
2. Data-parallel training: ``python -m core train`` (1 process) against ``torchrun --nproc_per_node 2
   -m core train`` (2 processes, gloo), the Transformer on the fast preset, one torch thread per
   process. Reported: training sequences/s (training rows x epochs over the fit's seconds), the test
   window's ROC-AUC and PR-AUC with their 95 % intervals, and the peak RSS per process.

On this 2-core machine 2 workers can at best halve the time; the Spark figures include its task
start-up and the Arrow transfer of the arrays to the driver, which a cluster pays too.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import MIN_REPEATS, PeakRSS, Stat  # noqa: E402
from core.data.ingest import ingest_file  # noqa: E402
from core.data.store import Store  # noqa: E402
from core.modeling.features import build_features  # noqa: E402
from core.modeling.labels import LabelSpec, build_examples, plan_cutoffs  # noqa: E402
from core.modeling.sequences import SequenceBatch, build_sequences, build_vocab  # noqa: E402
from core.modeling.synth import SynthConfig, generate  # noqa: E402

COLUMNS = ("user_id", "item_id", "category", "behavior", "ts", "session_id", "query")


def prepare(folder: Path, users: int, seed: int) -> tuple[Store, int]:
    path = folder / "events.parquet"
    generate(SynthConfig(users=users, days=9, seed=seed), path)
    store = Store(folder / "store", threads=2)
    report = ingest_file(store, path, dataset="syn", layout="generic", column_map={c: c for c in COLUMNS})
    return store, report.rows_stored


def workers_rss(rss: PeakRSS) -> str:
    heavy = sorted(((name, peak) for name, peak in rss.each.values() if peak > 50 << 20), key=lambda x: -x[1])
    return ", ".join(f"{name} {peak / 2 ** 20:,.0f} MiB" for name, peak in heavy[:6])


def building(store: Store, events: int, repeats: int) -> dict:
    from core.modeling.spark import build_on_spark, event_files, spark_session

    spec = LabelSpec(horizon="1d", max_len=50)
    plan = plan_cutoffs(store, "syn", spec)
    examples = build_examples(store, "syn", spec, plan)
    vocab = build_vocab(store, "syn", plan.valid_cutoff)
    print(f"{len(examples):,} examples, {events:,} events")

    def local() -> tuple[SequenceBatch, object]:
        return build_sequences(store, "syn", examples, vocab, spec), build_features(store, "syn", examples, spec)

    results: dict[str, dict] = {}
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        reference = local()
        seconds.append(time.perf_counter() - started)
    results["one machine (DuckDB, 2 threads)"] = {"seconds": Stat.of(seconds), "rss": ""}
    files = event_files(store, "syn")
    for workers in (1, 2):
        spark = spark_session(f"local-cluster[{workers},1,{2048 // workers}]", app=f"bench-{workers}")
        spark.sparkContext.setLogLevel("ERROR")
        seconds = []
        with PeakRSS(children=True, interval=0.2) as rss:
            for _ in range(repeats):
                started = time.perf_counter()
                seq, feats = build_on_spark(spark, files, "syn", examples, spec, vocab=vocab,
                                            partitions=4 * workers)
                seconds.append(time.perf_counter() - started)
        spark.stop()
        assert seq is not None and feats is not None
        same = all(np.array_equal(getattr(seq, n), getattr(reference[0], n)) for n in SequenceBatch.ARRAYS)
        same = same and np.array_equal(feats.to_numpy(), reference[1].to_numpy())
        results[f"Spark, {workers} worker(s) x 1 core"] = {"seconds": Stat.of(seconds), "rss": workers_rss(rss),
                                                           "equal": same}
    print(f"\n{'':<34} {'seconds':>26} {'events/s':>12}  identical  peak RSS per process")
    for name, r in results.items():
        print(f"{name:<34} {r['seconds'].text():>26} {events / r['seconds'].median:>12,.0f}  "
              f"{r.get('equal', '-')!s:>9}  {r['rss']}")
    one, two = (results[f"Spark, {w} worker(s) x 1 core"]["seconds"].median for w in (1, 2))
    print(f"Spark scaling, 2 workers / 1 worker: {one / two:.2f}x faster (ideal 2.0)")
    return {k: {"seconds": v["seconds"].median, "equal": v.get("equal"), "rss": v["rss"]} for k, v in results.items()}


def training(store: Store, epochs: int, folder: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["train", "--dataset", "syn", "--model", "transformer", "--preset", "fast", "--epochs", str(epochs),
              "--seed", "1", "--threads", "1", "--db", str(store.path)]
    runs = {"1 process": [sys.executable, "-m", "core"],
            "2 processes (torchrun, gloo)": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                             "--nproc_per_node", "2", "-m", "core"]}
    out = {}
    for name, launcher in runs.items():
        target = folder / name.split()[0]
        log = folder / f"{target.name}.log"
        with log.open("w") as sink:
            proc = subprocess.Popen([*launcher, *common, "--out", str(target)], cwd=ROOT, env=env,
                                    stdout=sink, stderr=subprocess.STDOUT)
            with PeakRSS(proc.pid, children=True, interval=0.2) as rss:     # the launched processes only
                code = proc.wait()
        if code != 0:
            raise SystemExit(f"{name} failed:\n{log.read_text()[-2000:]}")
        card = json.loads((target / "card.json").read_text())
        fit = card["members"]["transformer"]["seconds"]
        rows = card["rows"]["train"]
        m = card["metrics"]
        out[name] = {"sequences_per_s": rows * epochs / fit, "fit_s": fit,
                     "roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "rss": workers_rss(rss)}
    print(f"\n{'':<30} {'fit s':>7} {'seq/s':>8} {'test ROC-AUC':>22} {'test PR-AUC':>22}  peak RSS per process")
    for name, r in out.items():
        roc, pr = r["roc_auc"], r["pr_auc"]
        print(f"{name:<30} {r['fit_s']:>7.1f} {r['sequences_per_s']:>8,.0f} "
              f"{roc['value']:.3f} [{roc['low']:.3f}, {roc['high']:.3f}] {pr['value']:.3f} "
              f"[{pr['low']:.3f}, {pr['high']:.3f}]  {r['rss']}")
    a, b = (out[k]["sequences_per_s"] for k in runs)
    print(f"DDP scaling, 2 processes / 1: {b / a:.2f}x the sequences/s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="il-distributed-") as tmp:
        store, events = prepare(Path(tmp), args.users, args.seed)
        building(store, events, max(args.repeats, MIN_REPEATS))
        if not args.skip_training:
            training(store, args.epochs, Path(tmp))
        store.close()


if __name__ == "__main__":
    main()
