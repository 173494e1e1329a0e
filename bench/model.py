"""Benchmark: IntentTransformer against torch's own encoder layers doing the same work.

The reference is our class with its blocks swapped for ``nn.TransformerEncoderLayer``
(``batch_first=True, norm_first=True``, GELU): the same summed input embeddings, [CLS] token,
summed read-out, MLP head, d_model / heads / layers / d_ff / dropout.

The same work, not the same code: after the last block only [CLS] is read, so ours updates [CLS]
alone in its last block (its attention has one query row against every key, and the feed-forward
runs on one token). A stock ``nn.TransformerEncoder`` would update every token there and throw all
but one away, and a ratio against it would mostly measure that waste. The reference therefore runs
its first n-1 layers as torch's layer modules over every token and its last layer for the [CLS]
query alone, through that layer's own ``nn.MultiheadAttention`` (query = [CLS], keys and values =
every token) and feed-forward. Before timing, ours' weights are copied into the reference and the
logits are compared: both compute the same function (printed as the largest difference).

Both models take the same prebuilt tensors (widened int64 ids and the bool mask, built once before
any clock starts), so neither timed loop converts data. Runs are interleaved (ours, reference, ours,
...) so both see the same machine load; every figure is the median of at least 5 runs with the
fastest and slowest beside it, and ratios are ours / reference (> 1 means ours is faster).

  python bench/model.py                 # defaults: batch 256, L 100, d_model 64, 2 threads
  python bench/model.py --quick         # fewer steps and rows per run (still 5 runs each)

Measures: training sequences/s (forward + backward + AdamW step); batch scoring users/s (an
``inference_mode`` loop over the prebuilt tensors, the same loop for both; ours also through its
library path ``IntentTransformer.predict_proba``, which widens compact ids per batch); single-user
latency p50/p99 (ours' fused attention, ours returning attention weights, the reference).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import MIN_REPEATS, rates
from core.modeling.sequences import SequenceBatch
from models.transformer import IntentTransformer, TransformerConfig

Tensors = dict[str, torch.Tensor]


class ReferenceEncoder(IntentTransformer):
    """Our embeddings, read-outs and head around torch's encoder layers; the last layer updates
    [CLS] only (see the module docstring)."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.d_ff,
                                           config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)

    def encode(self, x: torch.Tensor, key_mask: torch.Tensor,
               return_attention: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pad = ~key_mask                                                    # (B, S+L) True = ignore
        *body, last = self.blocks.layers
        for layer in body:
            x = layer(x, src_key_padding_mask=pad)                         # (B, S+L, C)
        h = last.norm1(x)                                                  # (B, S+L, C)
        a, _ = last.self_attn(h[:, :1], h, h, key_padding_mask=pad, need_weights=False)  # (B, 1, C)
        cls = x[:, :1] + last.dropout1(a)                                  # (B, 1, C)
        ff = last.linear2(last.dropout(last.activation(last.linear1(last.norm2(cls)))))
        cls = cls + last.dropout2(ff)                                      # (B, 1, C)
        return self.ln_f(cls[:, 0]), []                                    # (B, C)


@torch.no_grad()
def copy_weights(ours: IntentTransformer, ref: ReferenceEncoder) -> None:
    """Give the reference ours' parameters: everything outside the blocks by name, each block's
    layer norms, fused q/k/v projection, output projection and feed-forward into torch's layer."""
    outside = {k: v for k, v in ours.state_dict().items() if not k.startswith("blocks.")}
    missing, unexpected = ref.load_state_dict(outside, strict=False)
    assert not unexpected and all(k.startswith("blocks.") for k in missing), (missing, unexpected)
    for block, layer in zip(ours.blocks, ref.blocks.layers, strict=True):
        layer.norm1.load_state_dict(block.ln1.state_dict())
        layer.norm2.load_state_dict(block.ln2.state_dict())
        layer.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)      # rows: q, k, v in both
        layer.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        layer.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
        layer.linear1.load_state_dict(block.mlp[0].state_dict())
        layer.linear2.load_state_dict(block.mlp[2].state_dict())


def random_batch(n: int, L: int, config: TransformerConfig, q: int, seed: int) -> SequenceBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L + 1, size=n)
    mask = np.arange(L)[None, :] >= (L - lengths)[:, None]

    def ids(high: int, shape: tuple[int, ...] = (n, L)) -> np.ndarray:
        return np.where(mask.reshape(mask.shape + (1,) * (len(shape) - 2)),
                        rng.integers(1, high, size=shape), 0).astype(np.int64)

    query = ids(config.n_query_buckets, (n, L, q))
    query[rng.random((n, L)) > 0.1] = 0
    keys = pd.DataFrame({"user_id": np.arange(n).astype(str), "label": rng.integers(0, 2, n)})
    return SequenceBatch(keys=keys, behavior=ids(config.n_behaviors), item=ids(config.n_items),
                         category=ids(config.n_categories), gap=ids(config.n_gaps),
                         hour=ids(config.n_hours), query=query, mask=mask)


def train_seconds(model: IntentTransformer, batches: list[Tensors], labels: list[torch.Tensor]) -> float:
    """Seconds for one AdamW step on each of the prebuilt batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    start = time.perf_counter()
    for inputs, y in zip(batches, labels, strict=True):
        loss = loss_fn(model(**inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def score(model: IntentTransformer, tensors: Tensors, batch_size: int) -> torch.Tensor:
    """Probabilities for every row of prebuilt (widened) tensors: eval, inference_mode, slices."""
    model.eval()
    n = len(tensors["mask"])
    with torch.inference_mode():
        return torch.cat([torch.sigmoid(model(**{k: v[s:s + batch_size] for k, v in tensors.items()}))
                          for s in range(0, n, batch_size)])


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each function per round, the functions taking turns within a round."""
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(repeats, MIN_REPEATS)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def latency_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--len", type=int, default=100, dest="length")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-ff", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"timed runs (at least {MIN_REPEATS})")
    ap.add_argument("--score-rows", type=int, default=8192)
    ap.add_argument("--latency-calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 steps, 1,024 scoring rows, 50 latency calls")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.score_rows, args.latency_calls = 2, 1024, 50
    repeats = max(args.repeats, MIN_REPEATS)
    torch.set_num_threads(args.threads)
    config = TransformerConfig(n_behaviors=7, n_items=20_000, n_categories=2_000, n_gaps=33,
                               n_hours=25, n_query_buckets=1025, max_len=args.length,
                               d_model=args.d_model, n_heads=args.heads, n_layers=args.layers,
                               d_ff=args.d_ff, dropout=0.1)
    torch.manual_seed(0)
    ours, ref = IntentTransformer(config), ReferenceEncoder(config)
    copy_weights(ours, ref)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"L {args.length}, d_model {args.d_model}, heads {args.heads}, layers {args.layers}, "
          f"d_ff {args.d_ff}; params ours {ours.param_count():,}, reference {ref.param_count():,}; "
          f"{repeats} runs each, median (min–max)")

    check = random_batch(64, args.length, config, 4, seed=3).tensors()
    with torch.inference_mode():
        ours.eval()
        ref.eval()
        logits = ours(**check)
        diff = (logits - ref(**check)).abs().max().item()
    print(f"same function: with ours' weights the reference's logits differ by at most {diff:.1e} "
          f"(logits spread {logits.std().item():.1e})")
    if diff > 1e-4:
        raise SystemExit("the reference does not compute what ours computes: the comparison would be unfair")

    data = random_batch(args.batch * args.steps, args.length, config, 4, seed=1)
    tensors = data.tensors()
    batches = [{k: v[i * args.batch:(i + 1) * args.batch] for k, v in tensors.items()}
               for i in range(args.steps)]
    y_all = torch.tensor(data.keys["label"].to_numpy(), dtype=torch.float32)
    labels = [y_all[i * args.batch:(i + 1) * args.batch] for i in range(args.steps)]
    for model in (ours, ref):                                             # warm-up
        train_seconds(model, batches[:2], labels[:2])
    sec = interleaved({"ours": lambda: train_seconds(ours, batches, labels),
                       "reference": lambda: train_seconds(ref, batches, labels)}, repeats)
    t_ours, t_ref = rates(len(data), sec["ours"]), rates(len(data), sec["reference"])
    print(f"training   seq/s    ours {t_ours.text(',.0f')}   reference {t_ref.text(',.0f')}   "
          f"ratio {t_ours.median / t_ref.median:.2f}x")

    scoring = random_batch(args.score_rows, args.length, config, 4, seed=2)
    wide, compact = scoring.tensors(), scoring.tensors(widen=False)
    head = {k: v[:256] for k, v in wide.items()}
    for model in (ours, ref):                                             # warm-up
        score(model, head, 256)
    ours.predict_proba({k: v[:256] for k, v in compact.items()})
    sec = interleaved({"ours": lambda: score(ours, wide, 1024), "reference": lambda: score(ref, wide, 1024),
                       "library": lambda: ours.predict_proba(compact, 1024)}, repeats)
    s_ours, s_ref, s_lib = (rates(len(scoring), sec[k]) for k in ("ours", "reference", "library"))
    print(f"scoring    users/s  ours {s_ours.text(',.0f')}   reference {s_ref.text(',.0f')}   "
          f"ratio {s_ours.median / s_ref.median:.2f}x")
    print(f"           ours via predict_proba (compact ids widened per batch) {s_lib.text(',.0f')}")

    one = {k: v[:1] for k, v in wide.items()}
    ours.eval()
    ref.eval()

    def fast() -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(ours(**one))

    def with_attention() -> object:
        with torch.inference_mode():
            return ours(**one, return_attention=True)

    def reference() -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(ref(**one))

    p50, p99 = latency_ms(fast, args.latency_calls)
    a50, a99 = latency_ms(with_attention, args.latency_calls)
    r50, r99 = latency_ms(reference, args.latency_calls)
    print(f"one user   ms over {args.latency_calls} calls: ours p50 {p50:.2f} p99 {p99:.2f} | "
          f"ours with attention weights p50 {a50:.2f} p99 {a99:.2f} | reference p50 {r50:.2f} p99 {r99:.2f} "
          f"| p50 ratio {r50 / p50:.2f}x")


if __name__ == "__main__":
    main()
