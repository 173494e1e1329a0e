"""IntentTransformer: a small Behavior-Sequence-Transformer that reads a user's recent events.

Reads top to bottom (in the spirit of nanoGPT's ``model.py``):

1. ``TransformerConfig``: every size and switch, one comment per field.
2. ``SelfAttention``: multi-head attention with two paths that agree numerically:
   ``F.scaled_dot_product_attention`` (fast, used when nobody asks for the weights) and a manual
   softmax(q k^T / sqrt(d)) path that also returns the attention matrix.
3. ``Block``: a pre-norm encoder block (attention + MLP, each with a residual).
4. ``IntentTransformer``: token embeddings -> [CLS] (+ target-category token) -> blocks -> MLP head.
   Only the [CLS] output is read, so on the fast path the last block updates [CLS] alone (its
   query attends over every key as usual): the same logit for a fraction of the last block's work.
   Beside [CLS] the head reads a second vector (the Behavior Sequence Transformer's "other
   features", computed here from the same event tensors): with ``event_stats`` = W > 0 the *event
   statistics*, the counts of every behaviour id (for scope ``category`` also split by "in the target
   category") in W learned soft time windows, asinh-squashed and projected (``stat_totals``: also per
   behaviour over all its context ids; ``stat_latest``: also each behaviour's newest unresolved
   event, split by "in the category viewed most", as its weight in every window); with W = 0 (models
   saved before it existed) a masked sum of the event token vectors.

Inputs (see ``core.modeling.sequences.SequenceBatch``): per example the last L events, LEFT-padded with 0 so
the newest event sits at position L-1. An event token is the sum of the embeddings of its behaviour,
item, category, time-gap bucket, hour of day, the mean of its search-query tokens and a position
embedding. Positions are counted FROM THE RIGHT (the newest event is position 0, the one before it 1,
...), so adding more left padding changes nothing: padded keys are masked out of every softmax and
the real events keep their position ids. That is what makes a score independent of the padded length.

Token order inside the model: index 0 is [CLS]; for scope ``category`` index 1 is the target-category
token (its category embedding + a type embedding); then the L events. ``n_special`` says how many
special tokens precede the events, so attention matrices are (B, heads, n_special + L, n_special + L).

``forward`` takes tensors only and never converts, moves or reads values back to Python, so Captum's
``LayerIntegratedGradients`` can attach to the embedding layers ``behavior_emb``, ``item_emb``,
``category_emb``, ``gap_emb``, ``hour_emb``, ``query_emb`` and (with event statistics) ``window_emb``,
whose per-event output is each event's weight in every window: the counts are sums of it, so the
score they carry is attributed to the events that make them. Padding id 0 of every embedding is a
zero vector (``padding_idx=0``), a natural integrated-gradients baseline.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SCOPES = ("any", "category")
# forward's tensor arguments, in order (the sequence builder's SequenceBatch.tensors() keys)
INPUTS = ("behavior", "item", "category", "gap", "hour", "query", "mask")


# Upper bounds on every size. They keep a configuration read from a user's card.json from
# allocating gigabytes; each is far above what this project trains (see core.modeling.pipeline's
# presets: d_model <= 96, a vocabulary of some 20k items, max_len 100).
MAX_VOCAB = 2_000_000       # rows of one embedding table (items, categories, query buckets)
MAX_SMALL_VOCAB = 4096      # rows of the behaviour, gap and hour tables
MAX_LEN = 4096              # position embeddings
MAX_D_MODEL = 1024
MAX_HEADS = 64
MAX_LAYERS = 4
MAX_D_FF = 8192
MAX_PARAMETERS = 100_000_000   # the whole model (400 MB of float32 weights)
MAX_EVENT_STATS = 64        # time windows of the event-statistics path
# core.modeling.sequences' context bits that the newest-event statistics read (tests check they agree):
BOUGHT_LATER_BIT = 1        # the event's item is bought by a newer event (its cart is resolved)
TOP_CATEGORY_BIT = 8        # the event's category is the one the user viewed most in the last H


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; ValueError naming the field, the rule and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"TransformerConfig.{name} must be an int in [{low}, {high}]; got {value!r}.")
    return int(value)


@dataclass
class TransformerConfig:
    """Sizes of the model. Every ``n_*`` counts embedding rows INCLUDING the padding id 0.

    ``__post_init__`` checks every field (ValueError naming the field, its rule and the value), so
    a configuration read from a file is bounded before anything is allocated.
    """

    n_behaviors: int        # int in [2, MAX_SMALL_VOCAB]: behaviour ids 1..n-1 (core.modeling.sequences), 0 pad
    n_items: int            # int in [2, MAX_VOCAB]: item vocabulary rows (Vocab.n_items)
    n_categories: int       # int in [2, MAX_VOCAB]: category vocabulary rows (Vocab.n_categories)
    n_gaps: int             # int in [2, MAX_SMALL_VOCAB]: time-gap buckets + 1 (Vocab.gap_buckets + 1)
    n_hours: int            # int in [2, MAX_SMALL_VOCAB]: hours of day + 1, normally 25 (ids 1..24)
    n_query_buckets: int    # int in [2, MAX_VOCAB]: hashed query-token rows (Vocab.query_buckets + 1)
    max_len: int            # int in [1, MAX_LEN]: position embeddings; events further back share the last
    d_model: int = 64       # int in [8, MAX_D_MODEL], divisible by n_heads: width of every token vector
    n_heads: int = 4        # int in [1, MAX_HEADS]: attention heads per block
    n_layers: int = 2       # int in [1, MAX_LAYERS] (1-2 recommended): encoder blocks
    d_ff: int = 128         # int in [d_model / 2, MAX_D_FF]: hidden width of each block's MLP
    dropout: float = 0.1    # float in [0, 0.5): dropout on embeddings, attention, MLPs and the head
    scope: str = "any"      # "any" | "category": "category" adds a target-category token
    event_stats: int = 0    # int in [0, MAX_EVENT_STATS]: time windows of the event-statistics path (0 = none,
                            # the architecture of models saved before the field existed)
    stat_totals: int = 0    # int in [0, n_behaviors): with event statistics, also count each behaviour whatever
                            # its context bits, ids grouped by id % stat_totals (the behaviour-id stride of
                            # core.modeling.sequences); 0 = no totals (models saved before the field existed)
    stat_latest: bool = False  # with stat_totals: also each behaviour's newest event whose item no newer
                               # event bought, split by "in the category viewed most in the last H", as
                               # its weight in every window ("the latest open cart is in the aisle the
                               # user browses now"); False = models saved before the field existed
    id_dropout: float = 0.0  # float in [0, 1): in training, the share of events whose item, category and
                             # query embeddings are hidden (their behaviour, time and relations stay)
    seq_dropout: float = 0.0  # float in [0, 1): in training, the share of rows whose [CLS] vector the head
                              # does not see (the rest scaled up), so the second read-out learns to stand alone

    def __post_init__(self) -> None:
        for name in ("n_items", "n_categories", "n_query_buckets"):
            setattr(self, name, _check_int(name, getattr(self, name), 2, MAX_VOCAB))
        for name in ("n_behaviors", "n_gaps", "n_hours"):
            setattr(self, name, _check_int(name, getattr(self, name), 2, MAX_SMALL_VOCAB))
        self.max_len = _check_int("max_len", self.max_len, 1, MAX_LEN)
        self.n_heads = _check_int("n_heads", self.n_heads, 1, MAX_HEADS)
        self.d_model = _check_int("d_model", self.d_model, 8, MAX_D_MODEL)
        if self.d_model % self.n_heads:
            raise ValueError(f"TransformerConfig.d_model must be divisible by n_heads ({self.n_heads}); "
                             f"got {self.d_model}.")
        self.n_layers = _check_int("n_layers", self.n_layers, 1, MAX_LAYERS)
        self.d_ff = _check_int("d_ff", self.d_ff, (self.d_model + 1) // 2, MAX_D_FF)
        dropout: object = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) \
                or not 0.0 <= dropout < 0.5:
            raise ValueError(f"TransformerConfig.dropout must be a float in [0, 0.5); got {dropout!r}.")
        self.dropout = float(dropout)
        if self.scope not in SCOPES:
            raise ValueError(f"TransformerConfig.scope must be one of {SCOPES}; got {self.scope!r}.")
        self.event_stats = _check_int("event_stats", self.event_stats, 0, MAX_EVENT_STATS)
        self.stat_totals = _check_int("stat_totals", self.stat_totals, 0, self.n_behaviors - 1)
        stat_latest: object = self.stat_latest
        if not isinstance(stat_latest, (bool, np.bool_)) or (stat_latest and not self.stat_totals):
            raise ValueError("TransformerConfig.stat_latest must be a bool, and True only with stat_totals "
                             f"> 0; got {stat_latest!r} with stat_totals {self.stat_totals}.")
        self.stat_latest = bool(stat_latest)
        id_dropout: object = self.id_dropout
        if isinstance(id_dropout, bool) or not isinstance(id_dropout, (int, float, np.floating)) \
                or not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"TransformerConfig.id_dropout must be a float in [0, 1); got {id_dropout!r}.")
        self.id_dropout = float(id_dropout)
        seq_dropout: object = self.seq_dropout
        if isinstance(seq_dropout, bool) or not isinstance(seq_dropout, (int, float, np.floating)) \
                or not 0.0 <= seq_dropout < 1.0:
            raise ValueError(f"TransformerConfig.seq_dropout must be a float in [0, 1); got {seq_dropout!r}.")
        self.seq_dropout = float(seq_dropout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """The configuration ``to_dict`` wrote (unknown keys are ignored); TypeError when ``data`` is
        not a dict, ValueError when a required field is missing or any field breaks its rule."""
        if not isinstance(data, dict):
            raise TypeError(f"TransformerConfig needs a dict of fields; got {type(data).__name__}.")
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"TransformerConfig needs {', '.join(missing)} (missing).")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def from_vocab(cls, vocab: Any, max_len: int, *, scope: str = "any", n_behaviors: int = 7,
                   **sizes: Any) -> TransformerConfig:
        """Embedding sizes that match a ``core.modeling.sequences.Vocab``; ``sizes`` override d_model etc."""
        return cls(n_behaviors=n_behaviors, n_items=vocab.n_items, n_categories=vocab.n_categories,
                   n_gaps=vocab.gap_buckets + 1, n_hours=25, n_query_buckets=vocab.query_buckets + 1,
                   max_len=int(max_len), scope=scope, **sizes)


class SelfAttention(nn.Module):
    """Multi-head self-attention over keys that the boolean ``key_mask`` allows."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.attn_drop = nn.Dropout(config.dropout)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor,
                return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Queries from ``x`` (B, Tq, C) attend over keys/values from ``kv`` (B, T, C)."""
        B, Tq, C = x.shape
        T = kv.size(1)
        hs = C // self.n_heads
        if x is kv:
            q, k, v = self.qkv(x).split(C, dim=2)                         # 3 x (B, T, C)
        else:
            w_q, w_kv = self.qkv.weight.split([C, 2 * C])
            b_q, b_kv = self.qkv.bias.split([C, 2 * C])
            q = F.linear(x, w_q, b_q)                                      # (B, Tq, C)
            k, v = F.linear(kv, w_kv, b_kv).split(C, dim=2)                # 2 x (B, T, C)
        q = q.view(B, Tq, self.n_heads, hs).transpose(1, 2)                # (B, h, Tq, hs)
        k = k.view(B, T, self.n_heads, hs).transpose(1, 2)                 # (B, h, T, hs)
        v = v.view(B, T, self.n_heads, hs).transpose(1, 2)                 # (B, h, T, hs)
        allowed = key_mask[:, None, None, :]                               # (B, 1, 1, T)
        if return_attention:
            # manual path: the attention matrix itself is wanted (explanations, tests)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))        # (B, h, Tq, T)
            att = att.masked_fill(~allowed, float("-inf"))
            att = F.softmax(att, dim=-1)          # every row has >= 1 allowed key ([CLS]): no NaN
            weights = att
            y = self.attn_drop(att) @ v                                    # (B, h, Tq, hs)
        else:
            # fast path: fused kernel, same maths
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, Tq, C)                  # (B, Tq, C)
        return self.resid_drop(self.proj(y)), weights


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, return_attention: bool = False,
                n_queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n_queries``: update only the first n tokens (all keys still attend); None = all."""
        h = self.ln1(x)                                                    # (B, T, C)
        hq = h if n_queries is None else h[:, :n_queries]                  # (B, Tq, C)
        a, weights = self.attn(hq, h, key_mask, return_attention)
        x = (x if n_queries is None else x[:, :n_queries]) + a             # (B, Tq, C)
        x = x + self.mlp(self.ln2(x))                                      # (B, Tq, C)
        return x, weights


POOL_SCALE = 16.0   # the summed read-out is divided by this (about a typical session's events)


class IntentTransformer(nn.Module):
    """P(purchase within the horizon) from a user's last events; one logit per row."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        C = config.d_model
        # event embeddings (id 0 = padding = zero vector)
        self.behavior_emb = nn.Embedding(config.n_behaviors, C, padding_idx=0)
        self.item_emb = nn.Embedding(config.n_items, C, padding_idx=0)
        self.category_emb = nn.Embedding(config.n_categories, C, padding_idx=0)
        self.gap_emb = nn.Embedding(config.n_gaps, C, padding_idx=0)
        self.hour_emb = nn.Embedding(config.n_hours, C, padding_idx=0)
        self.query_emb = nn.Embedding(config.n_query_buckets, C, padding_idx=0)
        # position from the right: 0 = newest event; older than max_len share the last row
        self.pos_emb = nn.Embedding(config.max_len, C)
        # special tokens: row 0 = [CLS], row 1 = "this is the target category"
        self.special_emb = nn.Embedding(2, C)
        # scope "category": does an event's category equal the target? (0 pad, 1 no, 2 yes)
        self.match_emb = nn.Embedding(3, C, padding_idx=0) if config.scope == "category" else None
        self.n_special = 2 if config.scope == "category" else 1
        # event statistics (config.event_stats = W > 0): counts of every behaviour id (and, for
        # scope "category", whether the event is in the target category) in W soft time windows,
        # "carts in the last 12 hours whose item was not bought since": the aggregates a tree
        # reads, computed from the event tensors so that gradients still reach every event.
        # window_emb maps a time-gap bucket to the event's weight in each window (row 0, padding,
        # is zero); it starts as W nested windows and is learned.
        # With config.stat_totals, also the counts of each behaviour whatever its context bits: a
        # behaviour's events are spread over up to 16 ids, and a total such as "purchases so far"
        # (squashed per row) cannot be rebuilt from the squashed parts. With config.stat_latest, also
        # each behaviour's newest event that no newer buy resolved, in or out of the category viewed
        # most: counts say an open cart in that aisle exists, not that it is the latest one.
        W = config.event_stats
        self.n_stat_rows = (2 if config.scope == "category" else 1) * config.n_behaviors
        n_rows = self.n_stat_rows + config.stat_totals * (3 if config.stat_latest else 1)
        self.window_emb = nn.Embedding(config.n_gaps, W, padding_idx=0) if W else None
        self.stats_proj = nn.Sequential(nn.Linear(n_rows * W, C), nn.GELU()) if W else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(C)
        # without event statistics, a second read-out beside [CLS]: a masked SUM of per-event
        # vectors. Softmax attention averages, so it sees "which" events but loses "how many"; the
        # sum keeps counts (three open carts are not one). The event statistics replace it: they
        # count per behaviour and time window, where this sum of whole token vectors (item and
        # category included) let the model memorise users and over-fit.
        self.pool = None if W else nn.Linear(C, C)
        self.head = nn.Sequential(nn.Linear(2 * C, C), nn.GELU(), nn.Dropout(config.dropout),
                                  nn.Linear(C, 1))
        # a constant added to every logit: training sets it to -log(pos_weight) so that the
        # probabilities stay calibrated after class re-weighting (a prior correction)
        self.register_buffer("logit_offset", torch.zeros(()))
        self.apply(self._init_weights)
        if self.window_emb is not None:
            with torch.no_grad():
                self.window_emb.weight.copy_(soft_windows(config.n_gaps, W))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def param_count(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def init_output_bias(self, logit: float) -> None:
        """Start the head's output (before ``logit_offset``) at ``logit``. Training passes the
        log-odds of its (weighted) labels: the first steps then learn which rows differ instead of
        the base rate, which with non-negative inputs such as counts would pull every weight down
        together and rank busy users last."""
        out = self.head[-1]
        assert isinstance(out, nn.Linear)
        with torch.no_grad():
            out.bias.fill_(float(logit))

    def statistics_parameters(self) -> list[nn.Parameter]:
        """The event-statistics path's parameters (none without it): training may give them a
        larger learning rate (``core.modeling.training.TrainConfig.stats_lr_scale``)."""
        if self.window_emb is None or self.stats_proj is None:
            return []
        return [*self.window_emb.parameters(), *self.stats_proj.parameters()]

    # -- the three stages ----------------------------------------------------------------
    def embed(self, behavior: torch.Tensor, item: torch.Tensor, category: torch.Tensor,
              gap: torch.Tensor, hour: torch.Tensor, query: torch.Tensor, mask: torch.Tensor,
              target_category: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token vectors (B, S+L, C) and the key mask (B, S+L) with S special tokens in front."""
        B, L = behavior.shape
        # search query: mean of its token embeddings, padding tokens ignored
        q = self.query_emb(query)                                          # (B, L, Q, C)
        q_real = (query > 0).unsqueeze(-1).to(q.dtype)                     # (B, L, Q, 1)
        q = (q * q_real).sum(dim=2) / q_real.sum(dim=2).clamp(min=1.0)     # (B, L, C)
        # positions counted from the right so that left padding does not move anything
        pos = torch.arange(L - 1, -1, -1, device=behavior.device).clamp(max=self.config.max_len - 1)
        item_vec, category_vec = self.item_emb(item), self.category_emb(category)  # 2 x (B, L, C)
        if self.training and self.config.id_dropout > 0:
            # which item or category an event had is what lets a small training set be memorised
            # user by user; hiding it for a share of events keeps the model on behaviour and time
            keep = (torch.rand(B, L, 1, device=q.device) >= self.config.id_dropout).to(q.dtype)
            item_vec, category_vec, q = item_vec * keep, category_vec * keep, q * keep
        x = (self.behavior_emb(behavior) + item_vec + category_vec
             + self.gap_emb(gap) + self.hour_emb(hour) + q + self.pos_emb(pos))  # (B, L, C)
        special = [self.special_emb.weight[0].expand(B, 1, -1)]           # [CLS]: (B, 1, C)
        if self.match_emb is not None:
            if target_category is None:
                raise ValueError("this model has scope 'category': pass target_category (B,).")
            x = x + self.match_emb(self._match(category, target_category))  # (B, L, C)
            # the target reads the category table through F.embedding, not the module, so a
            # Captum hook on category_emb sees the events' (B, L) call only
            tgt = F.embedding(target_category, self.category_emb.weight, padding_idx=0)  # (B, C)
            tgt = tgt + self.special_emb.weight[1]                         # (B, C)
            special.append(tgt.unsqueeze(1))                               # (B, 1, C)
        x = torch.cat([*special, x], dim=1)                                # (B, S+L, C)
        key_mask = torch.cat([torch.ones(B, self.n_special, dtype=torch.bool, device=mask.device),
                              mask.bool()], dim=1)                         # (B, S+L)
        return self.drop(x), key_mask

    @staticmethod
    def _match(category: torch.Tensor, target_category: torch.Tensor) -> torch.Tensor:
        """(B, L) 0 for padding, 1 when the event's category is not the target, 2 when it is."""
        return torch.where(category == target_category[:, None], 2, 1) * (category > 0)

    def event_statistics(self, behavior: torch.Tensor, gap: torch.Tensor, category: torch.Tensor,
                         mask: torch.Tensor, target_category: torch.Tensor | None) -> torch.Tensor:
        """The event-statistics read-out (B, C): soft-window counts per behaviour id (and, with
        ``stat_totals``, per behaviour whatever its context bits; with ``stat_latest``, each
        behaviour's newest unresolved event), squashed."""
        assert self.window_emb is not None and self.stats_proj is not None, "config.event_stats > 0"
        row = behavior                                                     # (B, L)
        if target_category is not None and self.n_stat_rows > self.config.n_behaviors:
            row = row + self.config.n_behaviors * (self._match(category, target_category) == 2)
        weight = self.window_emb(gap)                                      # (B, L, W)
        which = F.one_hot(row, self.n_stat_rows).to(weight.dtype)          # (B, L, R)
        if self.config.stat_totals:                                        # (B, L, R + stride)
            totals = F.one_hot(behavior % self.config.stat_totals, self.config.stat_totals).to(weight.dtype)
            which = torch.cat([which, totals], dim=-1)
        if self.config.stat_latest:                                        # (B, L, R + 3 stride)
            which = torch.cat([which, self.latest_events(behavior, mask).to(weight.dtype)], dim=-1)
        which = which * mask.unsqueeze(-1).to(weight.dtype)                # padding counts nothing
        counts = which.transpose(1, 2) @ weight                            # (B, R (+ stride), W)
        # asinh: about the count for a few events, its log for many (a tree's splits see both)
        out: torch.Tensor = self.stats_proj(torch.asinh(counts).flatten(1))  # (B, C)
        return out

    def latest_events(self, behavior: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, 2 * stride) one-hot: per behaviour code, its newest real event whose item no newer
        event bought (context bit ``BOUGHT_LATER_BIT`` clear), in row ``code`` when its category is
        not the one viewed most and ``code + stride`` when it is (bit ``TOP_CATEGORY_BIT``); every
        other event is all zeros. Computed from the ids alone, so it is no input of its own."""
        stride = self.config.stat_totals
        code = behavior % stride                                           # (B, L)
        context = torch.div(behavior, stride, rounding_mode="floor")       # (B, L)
        open_ = mask.bool() & (code > 0) & (_bit(context, BOUGHT_LATER_BIT) == 0)
        # positions grow to the right (the newest event is last): rank = position + 1, 0 = not open
        rank = torch.where(open_, torch.arange(1, behavior.shape[1] + 1, device=behavior.device), 0)
        newest = (F.one_hot(code, stride) * rank.unsqueeze(-1)).amax(dim=1)   # (B, stride)
        is_newest = open_ & (rank == newest.gather(1, code))               # (B, L)
        in_top = _bit(context, TOP_CATEGORY_BIT)
        return F.one_hot(code + stride * in_top, 2 * stride) * is_newest.unsqueeze(-1)

    def encode(self, x: torch.Tensor, key_mask: torch.Tensor,
               return_attention: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks; returns the final [CLS] vector (B, C) and the attention per layer."""
        attentions = []
        for i, block in enumerate(self.blocks):
            # only [CLS] is read after the last block: unless the full attention matrices are
            # wanted, the last block updates [CLS] alone (same result, a fraction of the work)
            last = i == len(self.blocks) - 1 and not return_attention
            x, weights = block(x, key_mask, return_attention, 1 if last else None)  # (B, T', C)
            if return_attention:
                attentions.append(weights)                                 # (B, h, S+L, S+L)
        return self.ln_f(x[:, 0]), attentions                              # (B, C)

    def forward(self, behavior: torch.Tensor, item: torch.Tensor, category: torch.Tensor,
                gap: torch.Tensor, hour: torch.Tensor, query: torch.Tensor, mask: torch.Tensor,
                target_category: torch.Tensor | None = None,
                return_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B,); with ``return_attention`` also a list of (B, heads, S+L, S+L) per layer."""
        x, key_mask = self.embed(behavior, item, category, gap, hour, query, mask, target_category)
        if self.pool is not None:
            events = x[:, self.n_special:]                                 # (B, L, C)
            real = mask.unsqueeze(-1).to(events.dtype)                     # (B, L, 1)
            counts = (self.pool(events) * real).sum(dim=1) / POOL_SCALE    # (B, C)
        else:
            counts = self.event_statistics(behavior, gap, category, mask, target_category)  # (B, C)
        cls, attentions = self.encode(x, key_mask, return_attention)
        if self.training and self.config.seq_dropout > 0:
            # the attention path fits a few thousand rows within an epoch or two, long before the
            # counts have been learned; hiding it for a share of rows keeps both read-outs learning
            keep = (torch.rand(cls.shape[0], 1, device=cls.device) >= self.config.seq_dropout).to(cls.dtype)
            cls = cls * keep / (1.0 - self.config.seq_dropout)            # (B, C)
        logits: torch.Tensor = self.head(torch.cat([cls, counts], dim=-1)).squeeze(-1) + self.logit_offset  # (B,)
        if return_attention:
            return logits, attentions
        return logits

    def predict_proba(self, tensors: dict[str, torch.Tensor], batch_size: int = 1024) -> np.ndarray:
        """P(purchase) per row, float64 (N,), from compact tensors keyed like ``forward``'s
        arguments (``SequenceBatch.tensors(widen=False)``), scored ``batch_size`` rows at a time on
        the model's device. Leaves the model in eval mode."""
        if self.config.scope == "category" and "target_category" not in tensors:
            raise ValueError("this model scores (user, category) rows but the batch has no "
                             "target_category.")
        n = len(tensors["mask"])
        if n == 0:
            return np.zeros(0)
        device = next(self.parameters()).device
        self.eval()
        parts = []
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                inputs = model_inputs(tensors, slice(start, start + batch_size), device)
                parts.append(self(**inputs).float().cpu())
        return torch.sigmoid(torch.cat(parts).double()).numpy()


def _bit(context: torch.Tensor, bit: int) -> torch.Tensor:
    """0/1: is ``bit`` (a power of two) set in each context value (division, not bitwise ops, which
    ONNX opset 17 lacks)."""
    return torch.div(context, bit, rounding_mode="floor") % 2


def soft_windows(n_gaps: int, n_windows: int) -> torch.Tensor:
    """(n_gaps, n_windows) initial window weights: window k holds the events whose gap bucket is
    below an edge spaced evenly over 1..n_gaps-1 (a logistic step two buckets wide), so the
    windows nest from "just now" to "the whole history"; row 0 (padding) is zero."""
    g = torch.arange(n_gaps, dtype=torch.float32)[:, None]                  # (G, 1)
    edge = torch.linspace(1.0, float(n_gaps - 1), n_windows + 1)[1:][None, :]  # (1, W)
    weights = torch.sigmoid((edge + 0.5 - g) / 2.0)                        # (G, W)
    weights[0] = 0.0
    return weights


def state_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in ``IntentTransformer(config).state_dict()``, found on
    PyTorch's meta device: nothing is allocated, however large the configuration."""
    with torch.device("meta"):
        model = IntentTransformer(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def model_inputs(tensors: dict[str, torch.Tensor], index: torch.Tensor | slice,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """One mini-batch of compact tensors, widened to what ``forward`` takes (long ids, bool mask)."""
    out = {name: tensors[name][index].to(device).long() for name in INPUTS if name != "mask"}
    out["mask"] = tensors["mask"][index].to(device).bool()
    if "target_category" in tensors:
        out["target_category"] = tensors["target_category"][index].to(device).long()
    return out
