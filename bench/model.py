"""Benchmark: IntentTransformer against a plain ``torch.nn.TransformerEncoder`` of the same shape.

Both models share everything except the encoder blocks: the same summed input embeddings, the same
[CLS] token, the same MLP head, the same d_model / heads / layers / d_ff / dropout (the reference is
our class with its blocks swapped for ``nn.TransformerEncoder(batch_first=True, norm_first=True)``).
They see the same random batches in the same process; runs are interleaved and the medians of the
repeats are printed with ratios (ours / reference; > 1 means ours is faster).

  python bench/model.py                 # defaults: batch 256, L 100, d_model 64, 2 threads
  python bench/model.py --quick         # a smaller, faster run

Measures: training sequences/s (forward + backward + AdamW step); batch scoring users/s
(``core.modeling.training.predict_transformer`` against an eager ``torch.no_grad`` loop over the reference);
single-user latency p50/p99 (fast attention path and the manual path that returns attention).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.modeling.sequences import SequenceBatch  # noqa: E402
from core.modeling.training import predict_transformer  # noqa: E402
from models.transformer import IntentTransformer, TransformerConfig  # noqa: E402


class ReferenceEncoder(IntentTransformer):
    """Our embeddings and head around torch's own TransformerEncoder."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.d_ff,
                                           config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)

    def encode(self, x, key_mask, return_attention=False):
        out = self.blocks(x, src_key_padding_mask=~key_mask)              # (B, S+L, C)
        return self.ln_f(out[:, 0]), []


def random_batch(n: int, L: int, config: TransformerConfig, q: int, seed: int) -> SequenceBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L + 1, size=n)
    mask = np.arange(L)[None, :] >= (L - lengths)[:, None]

    def ids(high: int, shape=(n, L)) -> np.ndarray:
        return np.where(mask.reshape(mask.shape + (1,) * (len(shape) - 2)),
                        rng.integers(1, high, size=shape), 0).astype(np.int64)

    query = ids(config.n_query_buckets, (n, L, q))
    query[rng.random((n, L)) > 0.1] = 0
    keys = pd.DataFrame({"user_id": np.arange(n).astype(str), "label": rng.integers(0, 2, n)})
    return SequenceBatch(keys=keys, behavior=ids(config.n_behaviors), item=ids(config.n_items),
                         category=ids(config.n_categories), gap=ids(config.n_gaps),
                         hour=ids(config.n_hours), query=query, mask=mask)


def train_rate(model: IntentTransformer, batches: list[dict], labels: list[torch.Tensor]) -> float:
    """Sequences per second over the given batches (one optimiser step each)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    start = time.perf_counter()
    for inputs, y in zip(batches, labels):
        loss = loss_fn(model(**inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return sum(len(y) for y in labels) / (time.perf_counter() - start)


def eager_scores(model: IntentTransformer, batch: SequenceBatch, batch_size: int) -> np.ndarray:
    """Plain eager torch: eval mode, no_grad, a loop over slices."""
    model.eval()
    t = batch.tensors()
    out = []
    with torch.no_grad():
        for s in range(0, len(batch), batch_size):
            out.append(torch.sigmoid(model(**{k: v[s:s + batch_size] for k, v in t.items()})))
    return torch.cat(out).numpy()


def latency_ms(fn, repeats: int) -> tuple[float, float]:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--len", type=int, default=100, dest="length")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-ff", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--score-rows", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.score_rows = 4, 3, 2048
    torch.set_num_threads(args.threads)
    config = TransformerConfig(n_behaviors=7, n_items=20_000, n_categories=2_000, n_gaps=33,
                               n_hours=25, n_query_buckets=1025, max_len=args.length,
                               d_model=args.d_model, n_heads=args.heads, n_layers=args.layers,
                               d_ff=args.d_ff, dropout=0.1)
    torch.manual_seed(0)
    ours, ref = IntentTransformer(config), ReferenceEncoder(config)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"L {args.length}, d_model {args.d_model}, heads {args.heads}, layers {args.layers}, "
          f"d_ff {args.d_ff}; params ours {ours.param_count():,}, reference {ref.param_count():,}")

    data = random_batch(args.batch * args.steps, args.length, config, 4, seed=1)
    tensors = data.tensors()
    batches = [{k: v[i * args.batch:(i + 1) * args.batch] for k, v in tensors.items()}
               for i in range(args.steps)]
    labels = [torch.from_numpy(data.keys["label"].to_numpy()[i * args.batch:(i + 1) * args.batch]).float()
              for i in range(args.steps)]
    train_rate(ours, batches[:2], labels[:2])                    # warm-up
    train_rate(ref, batches[:2], labels[:2])
    rates = {"ours": [], "reference": []}
    for _ in range(args.repeats):                                # interleaved: same load for both
        rates["ours"].append(train_rate(ours, batches, labels))
        rates["reference"].append(train_rate(ref, batches, labels))
    t_ours, t_ref = statistics.median(rates["ours"]), statistics.median(rates["reference"])
    print(f"training   ours {t_ours:9,.0f} seq/s   nn.TransformerEncoder {t_ref:9,.0f} seq/s   "
          f"ratio {t_ours / t_ref:.2f}x   (median of {args.repeats})")

    scoring = random_batch(args.score_rows, args.length, config, 4, seed=2)
    predict_transformer(ours, scoring.subset(np.arange(256)))
    eager_scores(ref, scoring.subset(np.arange(256)), 1024)
    s_ours, s_ref = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predict_transformer(ours, scoring, 1024)
        s_ours.append(len(scoring) / (time.perf_counter() - start))
        start = time.perf_counter()
        eager_scores(ref, scoring, 1024)
        s_ref.append(len(scoring) / (time.perf_counter() - start))
    sc_ours, sc_ref = statistics.median(s_ours), statistics.median(s_ref)
    print(f"scoring    ours {sc_ours:9,.0f} users/s nn.TransformerEncoder eager {sc_ref:9,.0f} users/s "
          f"ratio {sc_ours / sc_ref:.2f}x")

    one = scoring.subset(np.arange(1))
    one_t = one.tensors()
    ours.eval()

    def fast():
        with torch.inference_mode():
            return torch.sigmoid(ours(**one_t))

    def with_attention():
        with torch.inference_mode():
            return ours(**one_t, return_attention=True)

    p50, p99 = latency_ms(fast, 200)
    a50, a99 = latency_ms(with_attention, 200)
    r50, r99 = latency_ms(lambda: eager_scores(ref, one, 1), 200)
    print(f"one user   ours p50 {p50:.2f} ms p99 {p99:.2f} ms | with attention weights p50 "
          f"{a50:.2f} ms p99 {a99:.2f} ms | nn.TransformerEncoder p50 {r50:.2f} ms p99 {r99:.2f} ms")


if __name__ == "__main__":
    main()
