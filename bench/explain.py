"""Benchmark: how long explanations take, against one plain forward pass in the same process.

Goals (issue 5, this 2-core machine): per-user integrated gradients + attention <= 250 ms,
per-user SHAP <= 1 s, global drivers for 1,000 users <= 10 s.

  python bench/explain.py                       # synthetic log, a freshly trained model
  python bench/explain.py --quick               # fewer users and repeats
  python bench/explain.py --db F --model DIR --dataset NAME   # an existing store and model

Without --model it generates a synthetic log (core.modeling.synth), ingests it into a temporary store, trains
a ``balanced``-size Transformer for a couple of epochs (L = 100, d_model 64, 2 layers, 4 heads) and
scores it, so the figures are for the app's default model size. Printed: medians over users /
repeats, IG's convergence delta and the steps step-doubling used, and ratios to the reference (one
user's plain forward pass; one batched forward over the same 1,000 users for global drivers).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.insight import explain as E  # noqa: E402
from core.modeling.labels import LabelSpec  # noqa: E402
from core.modeling.sequences import build_sequences  # noqa: E402
from core.data.store import Store  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[Store, Path, str]:
    if args.model:
        return Store(args.db), Path(args.model), args.dataset
    from core.insight.cohorts import score_dataset
    from core.data.ingest import ingest_file
    from core.modeling.pipeline import train_model
    from core.modeling.synth import SynthConfig, generate

    users = 1500 if args.quick else 3000
    print(f"preparing: synthetic log of {users:,} users x 14 days, balanced Transformer, 2 epochs ...",
          flush=True)
    generate(SynthConfig(users=users, days=14, seed=7), tmp / "synth.csv")
    store = Store(tmp / "bench.duckdb")
    ingest_file(store, tmp / "synth.csv", dataset="synth")
    spec = LabelSpec(horizon="1d", max_len=100, max_train_cutoffs=3)
    result = train_model(store, "synth", kind="transformer", spec=spec, epochs=2, preset="balanced",
                         out=tmp / "model")
    score_dataset(store, result.model_dir, "synth")
    return store, Path(result.model_dir), "synth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db")
    parser.add_argument("--model")
    parser.add_argument("--dataset")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    n_users = 10 if args.quick else 25
    n_shap = 5 if args.quick else 10
    global_repeats = 1 if args.quick else 3

    with tempfile.TemporaryDirectory() as tmp_dir:
        store, model_dir, dataset = prepare(args, Path(tmp_dir))
        loaded = E.load_model_cached(model_dir)
        net, spec = loaded.transformer, loaded.spec
        cfg = net.config
        cutoff = E._dataset_cutoff(store, dataset)
        users = E._sample_users(store, dataset, 1000)
        import pandas as pd
        examples = pd.DataFrame({"user_id": users, "cutoff": pd.Series([cutoff] * len(users), dtype="datetime64[us]"),
                                 "label": np.nan, "split": "score"})
        batch = build_sequences(store, dataset, examples, loaded.vocab, spec)
        lengths = batch.mask.sum(axis=1)
        # explain the users with the longest histories (worst case for per-user cost)
        rows = np.argsort(-lengths, kind="stable")[:n_users]
        print(f"model: L={cfg.max_len} d_model={cfg.d_model} layers={cfg.n_layers} heads={cfg.n_heads}; "
              f"{len(users):,} users, median events {int(np.median(lengths))}, "
              f"explained users have {int(np.median(lengths[rows]))} events; torch threads {args.threads}")

        # warm-up (imports, first-call allocations)
        one = batch.subset([int(rows[0])])
        E.integrated_gradients(net, one)
        E.shap_values(net, one)

        def forward(row):
            with torch.no_grad():
                return net(**row.tensors())

        ref, ig_att, ig_only, att_only, deltas, steps, shap_t = [], [], [], [], [], [], []
        for i in rows:
            row = batch.subset([int(i)])
            ref.append(timed(lambda: forward(row), 5)[0])
            t_ig, (frame, delta) = timed(lambda: E.integrated_gradients(net, row), 1)
            t_att, _ = timed(lambda: (E.attention_weights(net, row), E.attention_rollout(net, row)), 1)
            ig_only.append(t_ig)
            att_only.append(t_att)
            ig_att.append(t_ig + t_att)
            gap = frame["attribution"].sum() - delta
            deltas.append(abs(delta) / max(abs(gap), 1e-9))
            steps.append(frame.attrs["n_steps"])
        for i in rows[:n_shap]:
            row = batch.subset([int(i)])
            shap_t.append(timed(lambda: E.shap_values(net, row), 1)[0])
        t_ref = statistics.median(ref)
        print(f"reference: one user's forward pass            {1000 * t_ref:8.1f} ms")
        print(f"per-user IG + attention (median of {len(rows)})     {1000 * statistics.median(ig_att):8.1f} ms"
              f"  = {statistics.median(ig_att) / t_ref:6.1f} x forward   (goal <= 250 ms)")
        print(f"  of which IG {1000 * statistics.median(ig_only):.1f} ms "
              f"(steps {E.IG_STEPS} first, used median {int(np.median(steps))}, max {max(steps)}; "
              f"|delta| / |f(x)-f(b)| median {np.median(deltas):.4f}, max {max(deltas):.4f}), "
              f"attention {1000 * statistics.median(att_only):.1f} ms")
        print(f"per-user SHAP, max_evals {E.SHAP_MAX_EVALS} (median of {len(shap_t)})    "
              f"{1000 * statistics.median(shap_t):8.1f} ms  = {statistics.median(shap_t) / t_ref:6.1f} x forward"
              f"   (goal <= 1000 ms)")
        user = users[int(rows[0])]
        t_user, result = timed(lambda: E.explain_user(store, model_dir, dataset, user), 3)
        print(f"explain_user, all methods (median of 3)      {1000 * t_user:8.1f} ms   "
              f"summary: {result.summary}")

        t_fwd_all, _ = timed(lambda: forward(batch), global_repeats)
        t_global, frames = timed(lambda: E.global_drivers(store, model_dir, dataset), global_repeats)
        print(f"reference: forward over the {len(users):,} users   {1000 * t_fwd_all:8.1f} ms")
        print(f"global drivers, {len(users):,} users, IG (median of {global_repeats})  {t_global:8.2f} s"
              f"   = {t_global / t_fwd_all:6.1f} x forward   (goal <= 10 s)")
        t_global_att, _ = timed(lambda: E.global_drivers(store, model_dir, dataset, method="attention"),
                                global_repeats)
        print(f"global drivers, {len(users):,} users, attention      {t_global_att:8.2f} s")
        print(frames["behavior"].to_string(index=False))
        store.close()


if __name__ == "__main__":
    main()
