"""Seeded synthetic behaviour logs with planted purchase intent whose true probability is known.

Why
---
Real logs never tell us how predictable a purchase was, so a model's ROC-AUC on them has no ceiling
to compare with. Here the generator *decides* every purchase with a probability it computes from the
user's visible history, and writes that probability out. It is therefore the Bayes-optimal score:
no model that sees the same history can do better on average, and the AUC of the written
probabilities is the best achievable AUC.

How a log is made
-----------------
Time is cut into windows of length ``horizon`` (H) starting at ``start`` (UTC). Users are simulated in
fixed blocks of :data:`BLOCK_USERS`; each block has its own random stream derived from the seed, so the
output does not depend on how many users are written per chunk. For each window (T, T + H]:

1. **Truth.** From the user's events at or before T the generator computes ``p_buy`` (below), then draws
   ``bought ~ Bernoulli(p_buy)`` with fresh randomness. ``p_buy`` uses nothing but that visible history
   (and the fixed window length), so ``P(buy in (T, T+H] | history) = p_buy`` exactly.
2. **Background activity** (never contains a buy): sessions arrive as a Poisson process whose rate is
   the user's activity level times a diurnal curve in local time (UTC+8, like Taobao: quiet at night,
   peak 20:00-22:00). A session has a geometric number of events a minute or two apart and mostly
   stays in one of the user's 3-6 favourite categories (categories are Zipf-popular; items are
   Zipf-popular within their category). Events are ``view`` with a few ``cart`` and ``fav`` of the
   item just viewed. A share of sessions starts with a ``search`` (query text tied to the category);
   searches appear only in Parquet output and never enter the truth.
3. **Planted purchase episode**, only when ``bought``: at a diurnal time in the window, views leading to
   the buy, then the buy (sometimes a second item). If the user had a live open cart at T, the episode
   revisits and buys the most recent open-cart item: carts turn into buys. Otherwise, if recent views
   concentrated on one category, the purchase happens in that category (view, cart, buy); otherwise in
   one of the user's favourite categories.

The planted signals (what ``p_buy`` is made of)
-----------------------------------------------
``logit(p_buy) = BASE_LOGIT + log(H / 1 day) + intent_strength * (c_cart + c_match + c_focus + c_recency + c_buyer)``

* ``c_cart`` -- **open carts, decayed by age**: the sum over the user's last :data:`CART_SLOTS` carts
  that were not bought afterwards of ``exp(-age / 12 h)`` (capped at 2), times ``W_CART``. A cart from
  last night counts several times more than one from two days ago, and a cart *followed* by a buy of
  the same item counts nothing: order and timing matter, not the cart count.
* ``c_match`` -- **the cart's category is where the user is browsing now**: ``W_MATCH`` when the most
  recent open cart (younger than 48 h) is in the modal category of the user's views of the last 24 h
  (at least 2 such views). Only visible by relating the categories of different events in the sequence.
* ``c_focus`` -- **concentrated recent browsing**: among the user's last :data:`VIEW_SLOTS` views,
  those within 24 h before T; when there are at least 3, the share in the most common category, times
  ``W_FOCUS``.
* ``c_recency`` -- **recently active**: ``W_RECENCY * exp(-hours since the last event / 24)``.
* ``c_buyer`` -- **has bought before**: ``W_BUYER * min(past buys, 3) / 3``.

Every term is a function of the last few carts, the last 20 views, the last event time and the buy
count, i.e. of the recent sequence a model sees. The planted events behind a high score are the open
carts (category ``intent_category``, item ``intent_item``) and the recent views in the focus category;
the ``c_*`` columns of the truth file say which terms carried a given user's score.

Outputs
-------
* ``taobao``: the Taobao UserBehavior layout, no header, ``user_id,item_id,category_id,behavior,unix_seconds``
  with behaviours ``pv/cart/fav/buy`` (``.csv`` or gzip ``.csv.gz``), sorted by user then time.
* ``parquet``: canonical columns ``user_id, item_id, category, behavior (view/cart/fav/buy/search),
  ts (UTC, naive), session_id, price, query``; includes the search events.
* truth (``truth_out``, ``.parquet`` / ``.csv`` / ``.csv.gz``): one row per user and cutoff
  T = start + k*H (k = 1 .. windows-1): ``user_id, cutoff (UTC), p_buy, bought, intent_kind
  (cart|focus|none), intent_category, intent_item, n_events (events at or before T, searches excluded),
  c_cart, c_match, c_focus, c_recency, c_buyer``. ``intent_category`` is where the purchase happens if it
  happens (empty when it would fall in a random favourite category). Evaluate models at these cutoffs
  (see :func:`truth_cutoffs`), on rows with ``n_events > 0`` like the label builder does.

Memory is bounded by one chunk of users; the work is vectorised numpy per block of users and window.
"""
from __future__ import annotations

import gzip
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.errors import DataError
from core.modeling.labels import CutoffPlan, parse_duration
from core.progress import ProgressFn, report

# --- fixed design constants (changing any of them changes every generated byte) -----------------
BLOCK_USERS = 2048          # users per random stream; chunks are whole blocks
CART_SLOTS = 6              # carts remembered per user (the last ones), open or closed by a buy
VIEW_SLOTS = 20             # views remembered per user (the last ones) for the focus signal
BASE_LOGIT = -4.85          # logit of a user with no signal, for a one-day window
W_CART = 1.7                # per unit of age-decayed open cart (capped at 2 units)
W_MATCH = 2.1               # most recent open cart in the current browsing category
W_FOCUS = 1.1               # share of the modal category in the last day's views
W_RECENCY = 1.6             # activity in the last hours
W_BUYER = 0.7               # earlier purchases
TERMS = ("c_cart", "c_match", "c_focus", "c_recency", "c_buyer")   # the planted terms of logit(p_buy)
CART_HALF_LIFE_H = 12.0     # e-folding time of a cart's weight, hours
RECENCY_SCALE_H = 24.0      # e-folding time of the recency term, hours
GAP_MEAN_S = 70.0           # mean seconds between events within a session
CART_RATE = 0.072           # background share of events that are carts
FAV_RATE = 0.040            # background share of events that are favs
REVIEW_RATE = 0.2           # a view repeats the previous item of the session
STAY_RATE = 0.85            # an event stays in the session's category
EXTRA_BUY_RATE = 0.25       # a purchase episode buys a second item
ITEM_ZIPF = 1.05            # Zipf exponent of item popularity within a category
CATEGORY_ZIPF = 0.9         # Zipf exponent of category popularity
ZIPF_TABLE = 1 << 16        # resolution of the Zipf inverse-CDF lookup tables
# Activity by local hour (0..23), shaped like Taobao's: night trough, evening peak. Mean-normalised.
DIURNAL = np.array([0.55, 0.30, 0.18, 0.12, 0.10, 0.12, 0.22, 0.40, 0.62, 0.78, 0.88, 0.92,
                    0.90, 0.90, 0.92, 0.92, 0.92, 0.95, 1.00, 1.15, 1.35, 1.45, 1.30, 0.95])
TAOBAO_BEHAVIORS = ("pv", "cart", "fav", "buy")
CANONICAL_BEHAVIORS = ("view", "cart", "fav", "buy", "search")
_VIEW, _CART, _FAV, _BUY, _SEARCH = range(5)
_INTENT_KINDS = ("none", "cart", "focus")
_QUERY_WORDS = ("dress", "phone case", "sneakers", "lipstick", "rice cooker", "backpack", "jacket",
                "charger", "mug", "lamp", "socks", "headphones", "tea", "blanket", "watch",
                "snacks", "toy car", "shampoo", "scarf", "keyboard")
_QUERY_ADJ = ("cheap", "new", "best", "winter", "mini", "pink", "large", "official", "2017", "gift")
_QUERIES_PER_CATEGORY = 4
DEMO_CONFIG_ARGS: dict[str, Any] = {"users": 3000, "days": 9, "seed": 7}


@dataclass
class SynthConfig:
    """What to generate. Same config (seed included) -> same bytes."""

    users: int                        # number of users, >= 1
    days: float                       # length of the log in days, > 0; cut to whole horizons
    seed: int = 0                     # master seed of every random draw, >= 0
    start: str = "2017-11-25"         # first instant of the log, UTC (ISO date or datetime)
    n_items: int = 200_000            # items in the catalogue (split evenly over categories), >= n_categories
    n_categories: int = 400           # categories in the catalogue, >= 6
    sessions_per_day: float = 1.3     # events-per-user scale: mean sessions per user per day (> 0)
    events_per_session: float = 4.5   # events-per-user scale: mean events per session (>= 1)
    activity_sigma: float = 0.9       # lognormal spread of user activity (0 = all users alike)
    horizon: str = "1d"               # H: the truth grid step and purchase window ("30min", "1d", ...)
    chunk_users: int = 32_768         # users held in memory per written chunk (rounded up to blocks)
    search_rate: float = 0.3          # share of sessions opened by a search (Parquet output only)
    intent_strength: float = 1.0      # multiplier of the planted signal weights (0 = pure base rate)
    tz_hours: float = 8.0             # local time zone of the diurnal cycle, hours east of UTC

    def __post_init__(self) -> None:
        checks = [
            ("users", self.users >= 1, ">= 1"), ("days", self.days > 0, "> 0"),
            ("seed", self.seed >= 0, ">= 0"), ("n_categories", self.n_categories >= 6, ">= 6"),
            ("n_items", self.n_items >= self.n_categories, ">= n_categories"),
            ("sessions_per_day", self.sessions_per_day > 0, "> 0"),
            ("events_per_session", self.events_per_session >= 1, ">= 1"),
            ("activity_sigma", self.activity_sigma >= 0, ">= 0"),
            ("chunk_users", self.chunk_users >= 1, ">= 1"),
            ("search_rate", 0 <= self.search_rate <= 1, "in [0, 1]"),
            ("intent_strength", self.intent_strength >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise DataError(f"SynthConfig.{name} must be {rule}, got {getattr(self, name)!r}.",
                                title="Bad synthetic config")
        if self.horizon_seconds % 60 or self.windows < 1:
            raise DataError(f"horizon {self.horizon!r} must be a whole number of minutes and fit in "
                            f"{self.days} days at least once.", title="Bad synthetic config")

    @property
    def start_dt(self) -> datetime:
        try:
            dt = datetime.fromisoformat(self.start)
        except ValueError as err:
            raise DataError(f"start {self.start!r} is not an ISO date such as 2017-11-25.",
                            title="Bad synthetic config") from err
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)

    @property
    def horizon_seconds(self) -> int:
        return round(parse_duration(self.horizon).total_seconds())

    @property
    def windows(self) -> int:
        return int(self.days * 86400 // self.horizon_seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SynthSummary:
    """What :func:`generate` wrote."""

    events: int                       # rows written to ``path``
    users: int                        # users simulated
    buys: int                         # buy events written
    path: Path                        # the event log
    truth_path: Path | None           # the truth file, if asked for
    seconds: float                    # wall time
    fmt: str = "taobao"               # taobao | parquet
    behaviors: dict[str, int] = field(default_factory=dict)   # rows per behaviour
    cutoffs: list[datetime] = field(default_factory=list)     # truth cutoffs, UTC
    mean_p: float = float("nan")      # mean true probability over the truth rows with history

    def summary(self) -> str:
        total = max(self.events, 1)
        mix = ", ".join(f"{b} {n:,} ({100 * n / total:.1f}%)" for b, n in self.behaviors.items())
        lines = [
            f"wrote {self.events:,} events of {self.users:,} users to {self.path} ({self.fmt})",
            f"behaviours: {mix}",
            f"buys: {self.buys:,}; {self.seconds:.1f} s ({self.events / max(self.seconds, 1e-9):,.0f} events/s)",
        ]
        if self.truth_path is not None:
            span = (f"{self.cutoffs[0]:%Y-%m-%d %H:%M} .. {self.cutoffs[-1]:%Y-%m-%d %H:%M} UTC"
                    if self.cutoffs else "none")
            lines.append(f"truth: {self.truth_path}; {len(self.cutoffs)} cutoffs ({span}); "
                         f"mean p_buy {self.mean_p:.3f}")
        return "\n".join(lines)


def truth_cutoffs(config: SynthConfig) -> list[datetime]:
    """The cutoffs T (UTC, aware) at which the truth is written: start + k*H, k = 1 .. windows-1."""
    start = config.start_dt
    step = timedelta(seconds=config.horizon_seconds)
    return [start + k * step for k in range(1, config.windows)]


# --- the catalogue: everything shared by all users -------------------------------------------------
def _next_prime(n: int) -> int:
    def is_prime(x: int) -> bool:
        if x < 2 or x % 2 == 0:
            return x == 2
        return all(x % d for d in range(3, math.isqrt(x) + 1, 2))
    while not is_prime(n):
        n += 1
    return n


def _zipf_table(n: int, exponent: float) -> np.ndarray:
    """Inverse-CDF lookup table of a Zipf law over ranks 0..n-1: ``table[uniform int]`` is a draw."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights) / weights.sum()
    quantiles = (np.arange(ZIPF_TABLE) + 0.5) / ZIPF_TABLE
    return np.minimum(np.searchsorted(cdf, quantiles, side="right"), n - 1).astype(np.int64)


def _zipf(rng: np.random.Generator, table: np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    return table[rng.integers(0, ZIPF_TABLE, size)]


@dataclass
class _Catalog:
    items_per_category: int
    item_table: np.ndarray         # Zipf lookup table of item ranks within a category
    category_table: np.ndarray     # Zipf lookup table of category indexes
    category_id: np.ndarray        # category index -> public category id
    item_prime: int
    item_mult: int
    item_shift: int
    category_price: np.ndarray     # typical price per category
    queries: pa.Array              # query text, _QUERIES_PER_CATEGORY per category
    start_s: int                   # unix seconds of the start
    horizon_s: int
    window_cdf: list[np.ndarray]   # per window: CDF over minutes of the window's activity
    window_factor: np.ndarray      # per window: mean diurnal intensity (1 = average)

    def item_ids(self, item_index: np.ndarray) -> np.ndarray:
        """Bijective scramble of item indexes to 7-digit-ish ids, like Taobao's."""
        x = item_index.astype(np.int64)
        return (x * self.item_mult + self.item_shift) % self.item_prime + 1


def _catalog(config: SynthConfig) -> _Catalog:
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0,)))
    n_cat = config.n_categories
    per_cat = max(config.n_items // n_cat, 1)
    cat_prime = _next_prime(max(10 * n_cat, 5_000_000))
    category_id = (rng.permutation(n_cat).astype(np.int64) * 7919 + rng.integers(1, 10_000)) % cat_prime + 1
    item_prime = _next_prime(max(4 * per_cat * n_cat, 5_000_000))
    item_mult = int(rng.integers(1_000, item_prime - 1))
    item_shift = int(rng.integers(0, item_prime))
    category_price = np.round(np.exp(rng.normal(3.6, 0.9, n_cat)), 2)
    nouns = rng.integers(0, len(_QUERY_WORDS), n_cat)
    adjs = rng.integers(0, len(_QUERY_ADJ), (n_cat, _QUERIES_PER_CATEGORY))
    texts = [f"{_QUERY_ADJ[a]} {_QUERY_WORDS[nouns[c]]}" if q else _QUERY_WORDS[nouns[c]]
             for c in range(n_cat) for q, a in enumerate(adjs[c])]
    # Diurnal curve per minute of each window, in the configured local time zone.
    start_s = int(config.start_dt.timestamp())
    h = config.horizon_seconds
    minutes = np.arange(h // 60, dtype=np.int64)
    cdfs, factors = [], []
    for k in range(config.windows):
        local_hour = ((start_s + k * h + minutes * 60 + config.tz_hours * 3600) // 3600) % 24
        w = DIURNAL[local_hour.astype(np.int64)] / DIURNAL.mean()
        factors.append(w.mean())
        c = np.cumsum(w)
        cdfs.append(c / c[-1])
    return _Catalog(per_cat, _zipf_table(per_cat, ITEM_ZIPF), _zipf_table(n_cat, CATEGORY_ZIPF),
                    category_id, item_prime, item_mult, item_shift, category_price,
                    pa.array(texts, pa.string()), start_s, h, cdfs, np.array(factors))


# --- small vectorised helpers --------------------------------------------------------------------
def _rank_from_end(groups: np.ndarray) -> np.ndarray:
    """For a sorted group array: 0 for the last row of each group, 1 for the one before, ..."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, np.int64)
    ends = np.append(np.flatnonzero(np.diff(groups)), n - 1)
    counts = np.diff(np.concatenate(([-1], ends)))
    return np.repeat(ends, counts) - np.arange(n)


def _push_ring(ring: dict[str, np.ndarray], users: np.ndarray, values: dict[str, np.ndarray],
               n: int, size: int) -> dict[str, np.ndarray]:
    """Append time-ordered new rows (sorted by user) to per-user rings that keep the last ``size``.

    Rings are right-aligned: column size-1 is the newest; empty slots have ts == -1.
    """
    rfe = _rank_from_end(users)
    keep = rfe < size
    u, col = users[keep], size - 1 - rfe[keep]
    added = np.minimum(np.bincount(users, minlength=n), size)
    idx = np.arange(size)[None, :] + added[:, None]          # (n, size) position in the old ring
    from_old = idx < size
    idx = np.minimum(idx, size - 1)
    out = {}
    for key, old in ring.items():
        fresh = np.full_like(old, -1)
        fresh[u, col] = values[key][keep]
        out[key] = np.where(from_old, np.take_along_axis(old, idx, axis=1), fresh)
    return out


def _sample_in_window(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Seconds into the window, distributed like the diurnal curve (minute bins, uniform inside)."""
    minute = np.searchsorted(cdf, rng.random(size), side="right")
    minute = np.minimum(minute, len(cdf) - 1)
    return np.asarray(minute * 60 + rng.integers(0, 60, size), dtype=np.int64)


def _pick_taste(rng: np.random.Generator, cum_w: np.ndarray, fav: np.ndarray,
                users: np.ndarray) -> np.ndarray:
    slot = (rng.random(len(users))[:, None] > cum_w[users]).sum(axis=1)
    picked: np.ndarray = fav[users, np.minimum(slot, fav.shape[1] - 1)]
    return picked


# --- one block of users ----------------------------------------------------------------------------
@dataclass
class _State:
    """What p_buy reads: a summary of each user's events at or before the current cutoff."""

    cart: dict[str, np.ndarray]     # ts, item, cat, open: (n, CART_SLOTS)
    view: dict[str, np.ndarray]     # ts, cat: (n, VIEW_SLOTS)
    last_ts: np.ndarray             # (n,) last event second, -1 = none
    buys: np.ndarray                # (n,) buys so far
    n_events: np.ndarray            # (n,) events so far (no searches)
    sessions: np.ndarray            # (n,) sessions so far (for session ids)

    @classmethod
    def empty(cls, n: int) -> _State:
        def ring(size: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
            return {k: np.full((n, size), -1, np.int64) for k in keys}
        return cls(ring(CART_SLOTS, ("ts", "item", "cat", "open")), ring(VIEW_SLOTS, ("ts", "cat")),
                   np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                   np.zeros(n, np.int64))


def _modal_category(valid: np.ndarray, cats: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (n, slots): the most frequent category among valid slots and its count.

    Ties go to the category seen most recently. Rows without valid slots get (0, -1).
    """
    n = len(valid)
    rows, cols = np.nonzero(valid)
    count = np.zeros(n, np.int64)
    modal = np.full(n, -1, np.int64)
    if len(rows) == 0:
        return count, modal
    key = rows * (int(cats.max()) + 2) + cats[rows, cols]
    t = ts[rows, cols]
    order = np.lexsort((t, key))
    key, t = key[order], t[order]
    ends = np.append(np.flatnonzero(np.diff(key)), len(key) - 1)
    sizes = np.diff(np.concatenate(([-1], ends)))
    g_row, g_cat, g_last = rows[order][ends], cats[rows, cols][order][ends], t[ends]
    best = np.lexsort((g_last, sizes, g_row))            # per row, the best group comes last
    last_of_row = best[np.append(np.flatnonzero(np.diff(g_row[best])), len(best) - 1)]
    count[g_row[last_of_row]] = sizes[last_of_row]
    modal[g_row[last_of_row]] = g_cat[last_of_row]
    return count, modal


def _intent(state: _State, t: int, horizon_s: int, strength: float) -> dict[str, np.ndarray]:
    """p_buy and its parts at cutoff t from the state (history at or before t)."""
    cart = state.cart
    is_open = (cart["open"] == 1) & (cart["ts"] >= 0)
    age_h = (t - cart["ts"]) / 3600.0
    weight = np.where(is_open, np.exp(-age_h / CART_HALF_LIFE_H), 0.0)
    c_cart = W_CART * np.minimum(weight.sum(axis=1), 2.0)
    newest = np.argmax(np.where(is_open, cart["ts"], -2), axis=1)     # most recent open cart
    rows = np.arange(len(newest))
    has_cart = is_open[rows, newest]
    cart_age_h = np.where(has_cart, age_h[rows, newest], np.inf)
    cart_cat = cart["cat"][rows, newest]
    cart_item = cart["item"][rows, newest]

    vcat, vts = state.view["cat"], state.view["ts"]
    recent = (vts >= 0) & (vts > t - 86400)
    n_recent = recent.sum(axis=1)
    modal_count, modal_cat = _modal_category(recent, vcat, vts)
    c_focus = W_FOCUS * np.where(n_recent >= 3, modal_count / np.maximum(n_recent, 1), 0.0)
    c_match = W_MATCH * (has_cart & (cart_age_h < 48) & (modal_count >= 2) & (cart_cat == modal_cat))

    since_h = np.where(state.last_ts >= 0, (t - state.last_ts) / 3600.0, np.inf)
    c_recency = W_RECENCY * np.exp(-since_h / RECENCY_SCALE_H)
    c_buyer = W_BUYER * np.minimum(state.buys, 3) / 3.0

    logit = (BASE_LOGIT + math.log(horizon_s / 86400.0)
             + strength * (c_cart + c_match + c_focus + c_recency + c_buyer))
    live_cart = has_cart & (np.exp(-cart_age_h / CART_HALF_LIFE_H) > 0.1)
    focus = ~live_cart & (modal_count >= 3)
    kind = np.where(live_cart, 1, np.where(focus, 2, 0))
    return {
        "p": 1.0 / (1.0 + np.exp(-logit)), "kind": kind,
        "cat": np.where(live_cart, cart_cat, np.where(focus, modal_cat, -1)),
        "item": np.where(live_cart, cart_item, -1),
        "c_cart": c_cart, "c_match": c_match.astype(np.float64), "c_focus": c_focus,
        "c_recency": c_recency, "c_buyer": c_buyer,
    }


def _background(rng: np.random.Generator, cfg: SynthConfig, cat: _Catalog, k: int, n: int,
                activity: np.ndarray, cum_w: np.ndarray, fav: np.ndarray,
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """One window of sessions (views, carts, favs, searches) for n users; no buys."""
    t, h = cat.start_s + k * cat.horizon_s, cat.horizon_s
    n_sess = rng.poisson(activity * (h / 86400.0) * cat.window_factor[k])
    s_user = np.repeat(np.arange(n), n_sess)
    n_s = len(s_user)
    t0 = t + 1 + _sample_in_window(rng, cat.window_cdf[k], n_s)
    s_cat = _pick_taste(rng, cum_w, fav, s_user)
    length = rng.geometric(1.0 / cfg.events_per_session, n_s)
    searched = rng.random(n_s) < cfg.search_rate
    query = rng.integers(0, _QUERIES_PER_CATEGORY, n_s)

    ev_s = np.repeat(np.arange(n_s), length)
    first = np.cumsum(length) - length
    j = np.arange(len(ev_s)) - np.repeat(first, length)
    gaps = rng.exponential(GAP_MEAN_S, len(ev_s))
    gaps[j == 0] = 0.0
    cum = np.cumsum(gaps)
    ts = t0[ev_s] + (cum - np.repeat(cum[first], length)).astype(np.int64) if n_s else t0[ev_s]
    users = s_user[ev_s]
    r = rng.random(len(ev_s))
    ev_cat = np.where(r < STAY_RATE, s_cat[ev_s], _pick_taste(rng, cum_w, fav, users))
    stray = rng.random(len(ev_s)) < 0.03
    ev_cat = np.where(stray, _zipf(rng, cat.category_table, len(ev_s)), ev_cat)
    ev_cat = np.minimum(ev_cat, cfg.n_categories - 1)
    rank = _zipf(rng, cat.item_table, len(ev_s))
    item = ev_cat * cat.items_per_category + rank
    rb = rng.random(len(ev_s))
    beh = np.where(rb < CART_RATE, _CART, np.where(rb < CART_RATE + FAV_RATE, _FAV, _VIEW))
    beh[j == 0] = _VIEW
    repeat = (j > 0) & ((beh != _VIEW) | (rng.random(len(ev_s)) < REVIEW_RATE))
    prev = np.flatnonzero(repeat) - 1
    item[repeat], ev_cat[repeat] = item[prev], ev_cat[prev]
    keep = ts <= t + h
    session_rank = np.arange(n_s) - np.repeat(np.cumsum(n_sess) - n_sess, n_sess)
    sess = np.repeat(session_rank, length)
    events = {"user": users[keep], "ts": ts[keep], "item": item[keep], "cat": ev_cat[keep],
              "beh": beh[keep], "sess": sess[keep], "query": np.full(int(keep.sum()), -1)}
    searches = {"user": s_user[searched], "ts": t0[searched], "item": np.full(int(searched.sum()), -1),
                "cat": s_cat[searched], "beh": np.full(int(searched.sum()), _SEARCH),
                "sess": session_rank[searched], "query": s_cat[searched] * _QUERIES_PER_CATEGORY + query[searched]}
    return searches, events, n_sess


def _episodes(rng: np.random.Generator, cfg: SynthConfig, cat: _Catalog, k: int, buyers: np.ndarray,
              intent: dict[str, np.ndarray], cum_w: np.ndarray, fav: np.ndarray) -> dict[str, np.ndarray]:
    """The planted purchases of one window: views leading to a buy (and sometimes a second one)."""
    t, h = cat.start_s + k * cat.horizon_s, cat.horizon_s
    n_b = len(buyers)
    kind = intent["kind"][buyers]
    b_cat = np.where(kind > 0, intent["cat"][buyers], _pick_taste(rng, cum_w, fav, buyers))
    t_buy = t + 1 + _sample_in_window(rng, cat.window_cdf[k], n_b)
    n_views = np.where(kind == 1, 1 + rng.poisson(0.7, n_b), 2 + rng.poisson(2.0, n_b))
    has_cart = (kind != 1) & (rng.random(n_b) < 0.7)
    extra = rng.random(n_b) < EXTRA_BUY_RATE
    length = n_views + has_cart + 1 + 2 * extra
    ep = np.repeat(np.arange(n_b), length)
    first = np.cumsum(length) - length
    j = np.arange(len(ep)) - np.repeat(first, length)
    buy_j = (n_views + has_cart)[ep]
    gaps = rng.exponential(GAP_MEAN_S * 1.3, len(ep))
    gaps[j == 0] = 0.0
    cum = np.cumsum(gaps)
    cum = cum - np.repeat(cum[first], length)
    ts = t_buy[ep] + (cum - cum[first + (n_views + has_cart)][ep]).astype(np.int64)
    ts = np.clip(ts, t + 1, t + h)
    rank = _zipf(rng, cat.item_table, len(ep))
    item = b_cat[ep] * cat.items_per_category + rank
    # The bought item: the open-cart item, or the last item viewed before the buy.
    target = np.where(kind == 1, intent["item"][buyers], item[first + n_views - 1])
    second = item[first + length - 1]
    beh = np.full(len(ep), _VIEW)
    beh[(j == buy_j - 1) & has_cart[ep]] = _CART
    beh[(j == buy_j) | (j == buy_j + 2)] = _BUY
    main = j <= buy_j
    item = np.where(main & ((kind[ep] == 1) | (j >= n_views[ep] - 1)), target[ep], item)
    item = np.where(j > buy_j, second[ep], item)
    return {"user": buyers[ep], "ts": ts, "item": item, "cat": b_cat[ep], "beh": beh,
            "sess": np.full(len(ep), -1), "query": np.full(len(ep), -1)}


def _update(state: _State, ev: dict[str, np.ndarray], n: int) -> None:
    """Fold one window's events (sorted by user, time; no searches) into the state."""
    users, beh = ev["user"], ev["beh"]
    is_cart, is_view, is_buy = beh == _CART, beh == _VIEW, beh == _BUY
    state.cart = _push_ring(state.cart, users[is_cart], {
        "ts": ev["ts"][is_cart], "item": ev["item"][is_cart], "cat": ev["cat"][is_cart],
        "open": np.ones(int(is_cart.sum()), np.int64)}, n, CART_SLOTS)
    bu, bi, bt = users[is_buy], ev["item"][is_buy], ev["ts"][is_buy]
    if len(bu):
        closes = ((state.cart["item"][bu] == bi[:, None]) & (state.cart["ts"][bu] <= bt[:, None])
                  & (state.cart["ts"][bu] >= 0))
        r, c = np.nonzero(closes)
        state.cart["open"][bu[r], c] = 0
    state.view = _push_ring(state.view, users[is_view], {
        "ts": ev["ts"][is_view], "cat": ev["cat"][is_view]}, n, VIEW_SLOTS)
    if len(users):
        last = np.full(n, -1, np.int64)
        np.maximum.at(last, users, ev["ts"])
        state.last_ts = np.maximum(state.last_ts, last)
    state.buys += np.bincount(bu, minlength=n)
    state.n_events += np.bincount(users, minlength=n)


def _simulate_block(cfg: SynthConfig, cat: _Catalog, block: int, n: int,
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """All windows of one block of users -> (events sorted by user then time, truth rows)."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, block)))
    activity = cfg.sessions_per_day * rng.lognormal(-cfg.activity_sigma ** 2 / 2, cfg.activity_sigma, n)
    n_fav = rng.integers(3, 7, n)
    fav = _zipf(rng, cat.category_table, (n, 6))
    w = rng.gamma(0.8, 1.0, (n, 6)) * (np.arange(6)[None, :] < n_fav[:, None])
    cum_w = np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)
    state = _State.empty(n)
    parts, truth = [], []
    for k in range(cfg.windows):
        t = cat.start_s + k * cat.horizon_s
        intent = _intent(state, t, cat.horizon_s, cfg.intent_strength)
        bought = rng.random(n) < intent["p"]
        searches, background, n_sess = _background(rng, cfg, cat, k, n, activity, cum_w, fav)
        buyers = np.flatnonzero(bought)
        episodes = _episodes(rng, cfg, cat, k, buyers, intent, cum_w, fav)
        # Session ids: background sessions numbered per user, then one per purchase episode.
        background["sess"] = background["sess"] + state.sessions[background["user"]]
        searches["sess"] = searches["sess"] + state.sessions[searches["user"]]
        episodes["sess"] = state.sessions[episodes["user"]] + n_sess[episodes["user"]]
        state.sessions += n_sess + bought
        window = {key: np.concatenate([searches[key], background[key], episodes[key]])
                  for key in background}
        # Order by user and time (same second: view < cart < fav < buy < search), and drop exact
        # repeats (same user, second, item, behaviour): a loader would drop them as duplicates, and
        # the truth must be computed from exactly the events a loader keeps.
        order = np.lexsort((window["item"], window["beh"], window["ts"], window["user"]))
        window = {key: v[order] for key, v in window.items()}
        repeat = np.zeros(len(order), bool)
        repeat[1:] = ((np.diff(window["user"]) == 0) & (np.diff(window["ts"]) == 0)
                      & (np.diff(window["beh"]) == 0) & (np.diff(window["item"]) == 0)
                      & (window["beh"][1:] != _SEARCH))
        window = {key: v[~repeat] for key, v in window.items()}
        if k >= 1:
            truth.append({"user": np.arange(n), "cutoff": np.full(n, t), "p": intent["p"],
                          "bought": bought, "kind": intent["kind"], "cat": intent["cat"],
                          "item": intent["item"], "n_events": state.n_events.copy(),
                          **{c: intent[c] for c in TERMS}})
        no_search = window["beh"] != _SEARCH
        _update(state, {key: v[no_search] for key, v in window.items()}, n)
        parts.append(window)
    events = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(events["user"], kind="stable")          # windows are already in time order
    events = {key: v[order] for key, v in events.items()}
    truth_cols = {key: np.concatenate([r[key] for r in truth]) for key in truth[0]} if truth else None
    return events, truth_cols


# --- writers ---------------------------------------------------------------------------------------
def _resolve_fmt(out: Path, fmt: str) -> str:
    name = out.name.lower()
    if fmt == "auto":
        if name.endswith((".parquet", ".pq")):
            return "parquet"
        if name.endswith((".csv", ".csv.gz")):
            return "taobao"
        raise DataError(f"cannot tell the format of {out.name!r} from its extension.",
                        title="Unknown output format",
                        hint="Name the file .csv / .csv.gz (Taobao layout) or .parquet, or pass fmt.")
    if fmt not in ("taobao", "parquet"):
        raise DataError(f"fmt must be auto, taobao or parquet, got {fmt!r}.", title="Unknown output format")
    return fmt


class _Sink:
    """Writes arrow tables to CSV (optionally gzip, no header) or Parquet, one chunk at a time."""

    def __init__(self, path: Path, kind: str, schema: pa.Schema):
        self.path, self.kind, self.schema = path, kind, schema
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = None
        self._raw: gzip.GzipFile | None = None
        self._stream: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | pacsv.CSVWriter
        if kind == "parquet":
            self._writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        else:
            header = kind == "csv_header"
            if path.name.lower().endswith(".gz"):
                # Python's gzip with mtime=0 and no file name: the bytes depend only on the data
                # and the zlib build.
                self._file = open(path, "wb")  # noqa: SIM115 -- closed in close()
                self._raw = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0,
                                          compresslevel=6)
                self._stream = pa.PythonFile(self._raw, mode="w")
            else:
                self._stream = pa.OSFile(str(path), "wb")
            self._writer = pacsv.CSVWriter(self._stream, schema, write_options=pacsv.WriteOptions(
                include_header=header, quoting_style="none"))

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        if self._stream is not None:
            self._stream.close()
        if self._raw is not None:
            self._raw.close()
        if self._file is not None:
            self._file.close()


_TAOBAO_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("category_id", pa.int64()),
                            ("behavior", pa.string()), ("timestamp", pa.int64())])
_PARQUET_SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("category", pa.string()),
                             ("behavior", pa.string()), ("ts", pa.timestamp("s")),
                             ("session_id", pa.string()), ("price", pa.float64()), ("query", pa.string())])
_TRUTH_SCHEMA = pa.schema([("user_id", pa.string()), ("cutoff", pa.timestamp("s")), ("p_buy", pa.float64()),
                           ("bought", pa.int8()), ("intent_kind", pa.string()),
                           ("intent_category", pa.string()), ("intent_item", pa.string()),
                           ("n_events", pa.int64()), *((term, pa.float64()) for term in TERMS)])


def _text(values: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    arr = pc.cast(pa.array(values, pa.int64(), mask=missing), pa.string())
    return arr


def _events_table(ev: dict[str, np.ndarray], first_user: int, cat: _Catalog, fmt: str) -> pa.Table:
    user_id = ev["user"].astype(np.int64) + first_user + 1
    if fmt == "taobao":
        keep = ev["beh"] != _SEARCH
        item = cat.item_ids(ev["item"][keep])
        return pa.table([user_id[keep], item, cat.category_id[ev["cat"][keep]],
                         pa.array(TAOBAO_BEHAVIORS).take(pa.array(ev["beh"][keep].astype(np.int8))),
                         ev["ts"][keep]], schema=_TAOBAO_SCHEMA)
    is_search = ev["beh"] == _SEARCH
    item_idx = np.maximum(ev["item"], 0)
    price = np.round(cat.category_price[ev["cat"]]
                     * (0.5 + ((item_idx * 2654435761) % 4096) / 4096.0), 2)
    users_text = _text(user_id)
    session = pc.binary_join_element_wise(users_text, _text(ev["sess"]), "-")
    query = cat.queries.take(pa.array(np.where(is_search, ev["query"], 0), mask=~is_search))
    return pa.table([users_text, _text(cat.item_ids(item_idx), is_search), _text(cat.category_id[ev["cat"]]),
                     pa.array(CANONICAL_BEHAVIORS).take(pa.array(ev["beh"].astype(np.int8))),
                     pa.array(ev["ts"], pa.timestamp("s")), session,
                     pa.array(price, pa.float64(), mask=is_search), query], schema=_PARQUET_SCHEMA)


def _truth_table(tr: dict[str, np.ndarray], first_user: int, cat: _Catalog) -> pa.Table:
    has_cat = tr["cat"] >= 0
    has_item = tr["item"] >= 0
    return pa.table([
        _text(tr["user"].astype(np.int64) + first_user + 1),
        pa.array(tr["cutoff"], pa.timestamp("s")), pa.array(tr["p"]), pa.array(tr["bought"].astype(np.int8)),
        pa.array(_INTENT_KINDS).take(pa.array(tr["kind"].astype(np.int8))),
        _text(cat.category_id[np.maximum(tr["cat"], 0)], ~has_cat),
        _text(cat.item_ids(np.maximum(tr["item"], 0)), ~has_item),
        pa.array(tr["n_events"]), *(pa.array(np.round(tr[c], 6)) for c in TERMS),
    ], schema=_TRUTH_SCHEMA)


def _truth_sink(path: Path) -> _Sink:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return _Sink(path, "parquet", _TRUTH_SCHEMA)
    if name.endswith((".csv", ".csv.gz")):
        return _Sink(path, "csv_header", _TRUTH_SCHEMA)
    raise DataError(f"cannot tell the format of the truth file {path.name!r}.", title="Unknown output format",
                    hint="Name it .parquet, .csv or .csv.gz.")


# --- the public entry points -------------------------------------------------------------------
def generate(config: SynthConfig, out: str | Path, *, fmt: str = "auto", truth_out: str | Path | None = None,
             progress: ProgressFn | None = None) -> SynthSummary:
    """Simulate ``config.users`` users and stream their events to ``out`` (and the truth to ``truth_out``).

    Users are simulated in blocks of :data:`BLOCK_USERS` and written a chunk (``config.chunk_users``,
    rounded up to whole blocks) at a time by a writer thread, so memory stays bounded by about two
    chunks whatever the size. ``progress(done_users, total_users, message)`` after each chunk.
    """
    began = time.perf_counter()
    out = Path(out)
    kind = _resolve_fmt(out, fmt)
    truth_path = Path(truth_out) if truth_out is not None else None
    cat = _catalog(config)
    chunk_blocks = max(1, -(-config.chunk_users // BLOCK_USERS))
    n_blocks = -(-config.users // BLOCK_USERS)
    sink = _Sink(out, "parquet" if kind == "parquet" else "csv", _PARQUET_SCHEMA if kind == "parquet"
                 else _TAOBAO_SCHEMA)
    truth_sink = _truth_sink(truth_path) if truth_path is not None else None
    counts = np.zeros(len(CANONICAL_BEHAVIORS), np.int64)
    p_sum, p_rows = 0.0, 0
    jobs: queue.Queue = queue.Queue(maxsize=1)
    failure: list[BaseException] = []

    def writer() -> None:
        while (job := jobs.get()) is not None:
            if failure:
                continue
            try:
                sink.write(job[0])
                if truth_sink is not None and job[1] is not None:
                    truth_sink.write(job[1])
            except Exception as err:  # re-raised in the caller's thread below
                failure.append(err)

    thread = threading.Thread(target=writer, name="synth-writer", daemon=True)
    thread.start()
    try:
        report(progress, 0, config.users, "simulating")
        for c0 in range(0, n_blocks, chunk_blocks):
            tables, truths = [], []
            for b in range(c0, min(c0 + chunk_blocks, n_blocks)):
                first = b * BLOCK_USERS
                n = min(BLOCK_USERS, config.users - first)
                ev, tr = _simulate_block(config, cat, b, n)
                counts += np.bincount(ev["beh"], minlength=len(CANONICAL_BEHAVIORS))
                tables.append(_events_table(ev, first, cat, kind))
                if tr is not None:
                    seen = tr["n_events"] > 0
                    p_sum += float(tr["p"][seen].sum())
                    p_rows += int(seen.sum())
                    if truth_sink is not None:
                        truths.append(_truth_table(tr, first, cat))
            if failure:
                break
            jobs.put((pa.concat_tables(tables), pa.concat_tables(truths) if truths else None))
            done = min((c0 + chunk_blocks) * BLOCK_USERS, config.users)
            report(progress, done, config.users, f"{done:,} / {config.users:,} users")
    finally:
        jobs.put(None)
        thread.join()
        sink.close()
        if truth_sink is not None:
            truth_sink.close()
    if failure:
        raise DataError(f"could not write {out}: {failure[0]}", title="Cannot write file") from failure[0]
    if kind == "taobao":
        counts[_SEARCH] = 0
    names = TAOBAO_BEHAVIORS if kind == "taobao" else CANONICAL_BEHAVIORS
    return SynthSummary(
        events=int(counts.sum()), users=config.users, buys=int(counts[_BUY]), path=out,
        truth_path=truth_path, seconds=time.perf_counter() - began, fmt=kind,
        behaviors={names[i]: int(counts[i]) for i in range(len(names))},
        cutoffs=truth_cutoffs(config), mean_p=p_sum / p_rows if p_rows else float("nan"))


def demo_config() -> SynthConfig:
    """The configuration of the app's demo dataset (3,000 users, 9 days, seed 7)."""
    return SynthConfig(**DEMO_CONFIG_ARGS)


def demo_dataset(out_dir: str | Path = "sample_data/demo", *, progress: ProgressFn | None = None) -> Path:
    """Write the app's deterministic demo log: ``events.csv.gz`` (Taobao layout) and ``truth.csv.gz``.

    Returns the path of ``events.csv.gz``. Same bytes on every run on one machine; on another CPU
    the truth's ``p_buy`` may differ in its last digit (numpy's SIMD ``exp`` is not correctly
    rounded, and its AVX-512 and AVX2 kernels differ; the events came out identical).
    """
    out_dir = Path(out_dir)
    events = out_dir / "events.csv.gz"
    generate(demo_config(), events, fmt="taobao", truth_out=out_dir / "truth.csv.gz", progress=progress)
    return events


# --- comparing a model with the truth ------------------------------------------------------------
def truth_plan(config: SynthConfig, *, n_train: int = 4) -> CutoffPlan:
    """A :class:`core.modeling.labels.CutoffPlan` on the truth grid, laid out as
    :func:`core.modeling.labels.plan_cutoffs` lays out a real dataset: the last grid point is the
    test cutoff, the one before it validates, and the ``n_train`` grid points before that train, so
    every validation and test row has a known Bayes-optimal score."""
    grid = [t.replace(tzinfo=None) for t in truth_cutoffs(config)]
    if len(grid) < 3:
        raise ValueError("the truth grid needs at least three cutoffs (train, validation, test): "
                         "generate more days.")
    train = grid[max(0, len(grid) - 2 - n_train):len(grid) - 2]
    end = config.start_dt.replace(tzinfo=None) + timedelta(seconds=config.horizon_seconds * config.windows)
    return CutoffPlan(train_cutoffs=train, valid_cutoff=grid[-2], score_cutoff=end, test_cutoff=grid[-1])


def _with_truth(rows: pd.DataFrame, truth: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``rows`` (user_id, cutoff, ...) joined to the truth's ``columns``; ValueError for rows off the grid."""
    left = rows.assign(user_id=rows["user_id"].astype(str),
                       cutoff=pd.to_datetime(rows["cutoff"]).dt.tz_localize(None))
    right = truth.assign(user_id=truth["user_id"].astype(str),
                         cutoff=pd.to_datetime(truth["cutoff"]).dt.tz_localize(None))
    merged = left.merge(right[["user_id", "cutoff", *columns]], on=["user_id", "cutoff"], how="inner")
    if len(merged) != len(left):
        raise ValueError(f"{len(left) - len(merged)} rows have no truth: are the validation and test "
                         "cutoffs on the truth grid (use truth_plan)?")
    return merged


def planted_terms(valid_rows: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Which planted terms a model reads, on the same rows as :func:`compare_with_truth`.

    The model's logit is regressed on the five terms (least squares with an intercept), and so is
    the true logit (whose weights are ``intent_strength`` each). Per term (index ``TERMS``):

    * ``weight_share``: the model's weight over the truth's (1 = the term moves the model's logit as
      much as it moves the truth; 0.3 = the model carries a third of it);
    * ``restored_roc_auc``: the model's ROC-AUC once the part of the term that its logit does not
      already explain (the residual of the term regressed on the logit) is added at the truth's
      weight: how much of the gap to the Bayes AUC that one term holds;
    * ``roc_auc``: the model's own ROC-AUC, the same in every row, to read the gain against.
    """
    from scipy.special import logit
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import roc_auc_score

    merged = _with_truth(valid_rows, truth, ["p_buy", *TERMS])
    y = merged["label"].to_numpy()
    terms = merged[list(TERMS)].to_numpy(dtype=float)
    model, true = (logit(np.clip(merged[c].to_numpy(dtype=float), 1e-7, 1 - 1e-7)) for c in ("score", "p_buy"))
    model_weights = LinearRegression().fit(terms, model).coef_
    true_weights = LinearRegression().fit(terms, true).coef_
    own = float(roc_auc_score(y, model))
    rows = {}
    for j, term in enumerate(TERMS):
        fit = LinearRegression().fit(model[:, None], terms[:, j])
        residual = terms[:, j] - fit.predict(model[:, None])
        rows[term] = {"weight_share": float(model_weights[j] / true_weights[j]),
                      "restored_roc_auc": float(roc_auc_score(y, model + true_weights[j] * residual)),
                      "roc_auc": own}
    return pd.DataFrame.from_dict(rows, orient="index")


def compare_with_truth(valid_rows: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """ROC-AUC of a model's scores against the Bayes-optimal AUC on the same rows, and the
    chance-corrected ratio ``(AUC - 0.5) / (Bayes AUC - 0.5)``: the share of the achievable lift
    above chance that the model reaches (1 = as good as the truth, 0 = chance).

    valid_rows: user_id, cutoff, label, score (a model's saved test or validation rows).
    truth: the generator's truth file (user_id, cutoff, p_buy, ...).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    from core.modeling.metrics import expected_calibration_error

    merged = _with_truth(valid_rows, truth, ["p_buy"])
    y = merged["label"].to_numpy()
    model_auc = float(roc_auc_score(y, merged["score"]))
    bayes_auc = float(roc_auc_score(y, merged["p_buy"]))
    return {"rows": float(len(merged)), "positives": float(y.sum()), "model_roc_auc": model_auc,
            "bayes_roc_auc": bayes_auc, "ratio": (model_auc - 0.5) / (bayes_auc - 0.5),
            "ece": float(expected_calibration_error(y, merged["score"])),
            "bayes_ece": float(expected_calibration_error(y, merged["p_buy"])),
            "model_pr_auc": float(average_precision_score(y, merged["score"])),
            "bayes_pr_auc": float(average_precision_score(y, merged["p_buy"]))}
