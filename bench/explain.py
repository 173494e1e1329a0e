"""Benchmark: how long explanations take, against one plain forward pass in the same process.

Goals (issue 5, this 2-core machine): per-user integrated gradients + attention <= 250 ms,
per-user SHAP <= 1 s, global drivers for 1,000 users <= 10 s.

  python bench/explain.py                       # synthetic log, a freshly trained model
  python bench/explain.py --quick               # fewer users; global drivers over 300 users
  python bench/explain.py --db F --model DIR --dataset NAME   # an existing store and model

Without --model it generates a synthetic log (core.modeling.synth), ingests it into a temporary store, trains
a ``balanced``-size Transformer for a couple of epochs (L = 100, d_model 64, 2 layers, 4 heads) and
scores it, so the figures are for the app's default model size.

Every figure is a median with the fastest and slowest beside it, over at least 5 samples: per-user
costs over the explained users (the ones with the longest histories, each explained once), the
references and the whole-store calls over 5 repeats. Also printed: IG's convergence delta and the
steps step-doubling used, and ratios to the reference (one user's plain forward pass; one batched
forward over the same 1,000 users for global drivers). The references run on tensors built before
the clock starts; the explainers are timed as a caller uses them, building their own inputs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import MIN_REPEATS, Stat, repeat
from core.data.store import Store
from core.insight import explain as E
from core.modeling.labels import LabelSpec
from core.modeling.model_store import load_model_cached
from core.modeling.sequences import build_sequences


def once(fn):
    """Seconds of one call and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def ms(stat: Stat) -> str:
    return stat.scaled(1000).text(",.1f", " ms")


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[Store, Path, str]:
    if args.model:
        return Store(args.db), Path(args.model), args.dataset
    from core.data.ingest import ingest_file
    from core.insight.cohorts import score_dataset
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
    parser.add_argument("--global-users", type=int, default=None,
                        help=f"users for global drivers (default {E.GLOBAL_MAX_USERS:,}; 300 with --quick)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    n_users = 10 if args.quick else 25
    n_shap = MIN_REPEATS if args.quick else 10
    n_global = args.global_users or (300 if args.quick else E.GLOBAL_MAX_USERS)

    with tempfile.TemporaryDirectory() as tmp_dir:
        store, model_dir, dataset = prepare(args, Path(tmp_dir))
        loaded = load_model_cached(model_dir)
        net, spec = loaded.transformer, loaded.spec
        cfg = net.config
        cutoff = E._dataset_cutoff(store, dataset)
        users = E._sample_users(store, dataset, 1000)
        examples = pd.DataFrame({"user_id": users, "cutoff": pd.Series([cutoff] * len(users), dtype="datetime64[us]"),
                                 "label": np.nan, "split": "score"})
        batch = build_sequences(store, dataset, examples, loaded.vocab, spec)
        lengths = batch.mask.sum(axis=1)
        # explain the users with the longest histories (worst case for per-user cost)
        rows = np.argsort(-lengths, kind="stable")[:n_users]
        print(f"model: L={cfg.max_len} d_model={cfg.d_model} layers={cfg.n_layers} heads={cfg.n_heads}; "
              f"{len(users):,} users, median events {int(np.median(lengths))}, "
              f"explained users have {int(np.median(lengths[rows]))} events; torch threads {args.threads}")
        print("figures: median (fastest–slowest, n = samples)")

        # warm-up (imports, first-call allocations)
        one = batch.subset([int(rows[0])])
        E.integrated_gradients(net, one)
        E.shap_values(net, one)
        net.eval()

        def forward(tensors):
            with torch.no_grad():
                return net(**tensors)

        ref, ig_att, ig_only, att_only, deltas, steps, shap_t = [], [], [], [], [], [], []
        for i in rows:
            row = batch.subset([int(i)])
            tensors = row.tensors()
            ref.append(Stat.of(repeat(lambda t=tensors: forward(t), MIN_REPEATS, warmup=1)[0]).median)
            t_ig, (frame, delta) = once(lambda r=row: E.integrated_gradients(net, r))
            t_att, _ = once(lambda r=row: (E.attention_weights(net, r), E.attention_rollout(net, r)))
            ig_only.append(t_ig)
            att_only.append(t_att)
            ig_att.append(t_ig + t_att)
            gap = frame["attribution"].sum() - delta
            deltas.append(abs(delta) / max(abs(gap), 1e-9))
            steps.append(frame.attrs["n_steps"])
        for i in rows[:n_shap]:
            row = batch.subset([int(i)])
            shap_t.append(once(lambda r=row: E.shap_values(net, r))[0])
        t_ref, t_ig_att, t_shap = Stat.of(ref), Stat.of(ig_att), Stat.of(shap_t)
        print(f"reference: one user's forward pass (median of {MIN_REPEATS} per user, over users)  {ms(t_ref)}")
        print(f"per-user IG + attention, {len(rows)} users   {ms(t_ig_att)}"
              f"  = {t_ig_att.median / t_ref.median:6.1f} x forward   (goal <= 250 ms)")
        print(f"  of which IG {ms(Stat.of(ig_only))} "
              f"(steps {E.IG_STEPS} first, used median {int(np.median(steps))}, max {max(steps)}; "
              f"|delta| / |f(x)-f(b)| median {np.median(deltas):.4f}, max {max(deltas):.4f}), "
              f"attention {ms(Stat.of(att_only))}")
        print(f"per-user SHAP, max_evals {E.SHAP_MAX_EVALS}, {len(shap_t)} users   {ms(t_shap)}"
              f"  = {t_shap.median / t_ref.median:6.1f} x forward   (goal <= 1000 ms)")
        user = users[int(rows[0])]
        sec, result = repeat(lambda: E.explain_user(store, model_dir, dataset, user), MIN_REPEATS)
        print(f"explain_user, all methods, one user   {ms(Stat.of(sec))}   summary: {result.summary}")

        # global drivers sample users in the same deterministic order as ``users``: the first n_global
        sampled = batch.subset(np.arange(min(n_global, len(batch)))).tensors()
        t_fwd_all = Stat.of(repeat(lambda: forward(sampled), MIN_REPEATS, warmup=1)[0])
        sec, frames = repeat(lambda: E.global_drivers(store, model_dir, dataset, max_users=n_global), MIN_REPEATS)
        t_global = Stat.of(sec)
        goal = "(goal <= 10 s)" if n_global == 1000 else "(the 10 s goal is for 1,000 users)"
        print(f"reference: forward over the {n_global:,} users   {ms(t_fwd_all)}")
        print(f"global drivers, {n_global:,} users, IG   {t_global.text('.2f', ' s')}"
              f"   = {t_global.median / t_fwd_all.median:6.1f} x forward   {goal}")
        sec, _ = repeat(lambda: E.global_drivers(store, model_dir, dataset, max_users=n_global, method="attention"),
                        MIN_REPEATS)
        print(f"global drivers, {n_global:,} users, attention   {Stat.of(sec).text('.2f', ' s')}")
        print(frames["behavior"].to_string(index=False))
        store.close()


if __name__ == "__main__":
    main()
