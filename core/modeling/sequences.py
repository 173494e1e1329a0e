"""Events -> padded integer arrays per (user, cutoff): behaviour, item, category, time gap, hour, query.

Padding id 0 defines the mask (as in RecBole's SASRec). Sequences are LEFT-padded: the newest event
sits at position L-1. Built inside DuckDB and streamed in chunks of users (:func:`build_sequences`);
for a few users whose events are already in memory, :func:`sequences_from_events` computes the same
rows and arrays in numpy (the scoring service's fast path).

Per position:

* behaviour: ``core.data.schema.BEHAVIOR_CODE`` (1..6) crossed with the event's context in its window,
  ``code + BEHAVIOR_STRIDE * context`` (ids 1..Vocab.n_behavior_ids-1), where ``context`` has
  ``Vocab.context_bits`` bits computed from the same last-L events (never from after the cutoff):
  1 = the same item is bought by a newer event, 2 = the same item appears in a newer event, 4 = the
  event's category is the category of the newest event, 8 = the event's category is the one the
  user viewed most in the last horizon H (a tie goes to the category viewed last; the aggregate
  feature ``open_carts_top_category_h1`` counts the open carts it marks). A cart whose item was
  bought later, an open cart in the category the user is browsing now and one in the aisle they
  keep coming back to are different tokens, which a Transformer with ~10^4 rows could otherwise
  learn only through item-identity matching in attention. Vocabularies saved before the fourth bit
  read back with three (``Vocab.from_dict``), so their models get the ids they were trained on.
* item / category: vocabulary ids (see :class:`Vocab`); a missing item or category is OOV (1).
* gap: ``1 + min(gap_buckets - 1, floor(gap_steps * log2(1 + seconds from the event to the cutoff)))``,
  so bucket 1 is "at the cutoff" and every ``gap_steps`` buckets double the time span (the pipeline
  uses 4 steps per doubling: 9 h and 12 h ago are different tokens, which decayed signals need).
* hour: 1 + the event's hour of day in UTC.
* query: the first ``QUERY_TOKENS`` tokens of the search text (lowercased, split on anything that
  is not a letter or digit), each ``1 + stable_hash(token) % query_buckets``; 0 elsewhere.

Events that share a timestamp are ordered by behaviour, item, category and query, so the arrays are
the same for every run and every chunking.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import ArrayLike

from core.data.schema import BEHAVIOR_CODE, BEHAVIORS, behavior_code_sql
from core.errors import DataError, NotFoundError
from core.modeling.labels import LabelSpec, TimeLike, _to_datetime
from core.progress import CancelToken, ProgressFn, report

if TYPE_CHECKING:
    import torch

    from core.data.store import Store

PAD = 0
OOV = 1
QUERY_TOKENS = 4          # Q: hashed tokens kept per search event (the first ones of the query)
BEHAVIOR_STRIDE = len(BEHAVIORS) + 1     # ids per context value (0 = pad, 1..6 behaviours)
CONTEXT_BITS = 4                         # context bits of a new vocabulary (saved ones may have 3)
N_BEHAVIOR_IDS = BEHAVIOR_STRIDE * 2 ** CONTEXT_BITS   # the most behaviour ids a vocabulary gives


@dataclass
class Vocab:
    """Ids: 0 pad, 1 out-of-vocabulary, 2..K+1 the K most frequent values, then hash buckets.

    items / categories: source id text -> vocabulary id (2..K+1).
    item_buckets / category_buckets: hash buckets for ids outside the top K (0 = map them to OOV).
    query_buckets: hash buckets for search tokens (ids 1..query_buckets; 0 pad).
    gap_buckets: log-spaced time-gap buckets (ids 1..gap_buckets; 0 pad).
    gap_steps: gap buckets per doubling of the time gap (>= 1).
    context_bits: context bits crossed with the behaviour (3 or 4; see the module docstring).
    """

    items: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    item_buckets: int = 1024
    category_buckets: int = 128
    query_buckets: int = 1024
    gap_buckets: int = 32
    gap_steps: int = 1
    context_bits: int = CONTEXT_BITS

    def __post_init__(self) -> None:
        if self.context_bits not in (3, CONTEXT_BITS):
            raise ValueError(f"Vocab.context_bits must be 3 or {CONTEXT_BITS}; got {self.context_bits!r}.")

    @property
    def n_behavior_ids(self) -> int:
        """Embedding rows for the behaviour input: pad + every behaviour under every context."""
        return BEHAVIOR_STRIDE << self.context_bits

    @property
    def n_items(self) -> int:
        """Embedding rows for items: pad + OOV + top-K + buckets."""
        return 2 + len(self.items) + self.item_buckets

    @property
    def n_categories(self) -> int:
        return 2 + len(self.categories) + self.category_buckets

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "categories": self.categories,
                "item_buckets": self.item_buckets, "category_buckets": self.category_buckets,
                "query_buckets": self.query_buckets, "gap_buckets": self.gap_buckets,
                "gap_steps": self.gap_steps, "context_bits": self.context_bits}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        """What ``to_dict`` wrote; a vocabulary saved before ``context_bits`` existed has 3."""
        return cls(**{"context_bits": 3, **{k: data[k] for k in cls.__dataclass_fields__ if k in data}})


@dataclass
class SequenceBatch:
    """Model inputs for N examples of length L (see docs/INTERFACES.md).

    Arrays are stored in the smallest integer type that holds their ids (1M users x L = 100 fit
    in about 1.6 GB); :meth:`tensors` widens them to int64 (``torch.long``) for embeddings.
    """

    keys: pd.DataFrame                 # user_id, cutoff, [category], label, split
    behavior: np.ndarray               # (N, L) int8: 0 pad, BEHAVIOR_CODE + BEHAVIOR_STRIDE * context
    item: np.ndarray                   # (N, L) int16/int32 (smallest that holds vocab.n_items)
    category: np.ndarray               # (N, L) int16/int32 vocab ids
    gap: np.ndarray                    # (N, L) int8: 1 + log bucket of (cutoff - ts), 0 pad
    hour: np.ndarray                   # (N, L) int8: 1 + hour of day (UTC), 0 pad
    query: np.ndarray                  # (N, L, Q) int16/int32 hashed search tokens, 0 pad
    mask: np.ndarray                   # (N, L) bool, True = real event (newest at L-1)
    target_category: np.ndarray | None = None   # (N,) category vocab id (scope category)

    ARRAYS = ("behavior", "item", "category", "gap", "hour", "query", "mask")

    def __len__(self) -> int:
        return int(self.behavior.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.behavior.shape[1])

    def subset(self, index: ArrayLike, *, share: bool = False) -> SequenceBatch:
        """The rows at ``index`` (positions or a boolean mask), in that order: a copy. ``share``: when
        the positions are a run of consecutive rows (a split of the time-ordered example rows), the
        arrays are views of these instead, so writing into them writes here; at a million rows a copy
        of every split would double the sequences' memory."""
        index = np.asarray(index)
        rows: np.ndarray | slice = index
        if share and index.dtype.kind in "iu" and index.ndim == 1 and len(index) \
                and index[-1] - index[0] == len(index) - 1 and bool(np.all(np.diff(index) == 1)):
            rows = slice(int(index[0]), int(index[-1]) + 1)      # a view, not a copy
        return SequenceBatch(
            keys=self.keys.iloc[rows].reset_index(drop=True),
            **{name: getattr(self, name)[rows] for name in self.ARRAYS},
            target_category=None if self.target_category is None else self.target_category[rows],
        )

    def tensors(self, *, widen: bool = True) -> dict[str, torch.Tensor]:
        """torch tensors keyed like IntentTransformer.forward's arguments.

        widen: ids as int64 (``torch.long``, what embeddings take; a copy). False shares the
        compact arrays without copying: index a mini-batch first, then call ``.long()`` on it,
        which keeps a large training set at 1-4 bytes per id instead of 8.
        """
        import torch

        convert = _widen if widen else np.ascontiguousarray
        out = {name: torch.from_numpy(convert(getattr(self, name))) for name in self.ARRAYS}
        if self.target_category is not None:
            out["target_category"] = torch.from_numpy(convert(self.target_category))
        return out

    @staticmethod
    def concat(parts: list[SequenceBatch]) -> SequenceBatch:
        first = parts[0]
        return SequenceBatch(
            keys=pd.concat([p.keys for p in parts], ignore_index=True),
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in SequenceBatch.ARRAYS},
            target_category=None if first.target_category is None
            else np.concatenate([p.target_category for p in parts]),
        )


def _widen(array: np.ndarray) -> np.ndarray:
    """int64 for integer ids (what nn.Embedding wants), bool stays bool; always contiguous."""
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray(array, dtype=np.int64)


def _id_dtype(max_id: int) -> np.dtype:
    """The smallest signed integer type that holds ids 0..max_id."""
    for dtype in (np.int8, np.int16, np.int32):
        if max_id <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


# ---------------------------------------------------------------------------------------------
# A stable hash, the same in SQL and in Python
# ---------------------------------------------------------------------------------------------
# DuckDB's hash() may change between versions, which would silently remap every tail id of a
# saved model. This hash is the first 15 hex digits (60 bits) of the MD5 of the text: it is
# defined by MD5 alone, so SQL and Python agree and it never changes.

def _stable_hash_sql(expr: str) -> str:
    """SQL for the stable hash of a VARCHAR expression (expr is a code constant)."""
    return f"('0x' || substr(md5({expr}), 1, 15))::BIGINT"


def stable_hash(text: str) -> int:
    """Python twin of the SQL stable hash (used for single values and in tests)."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:15], 16)


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

_TOP_VALUES_SQL = {
    # column name -> top-K query; the column comes from this constant table, never from input
    column: f"""
        SELECT {column} AS value, count(*) AS n FROM events
        WHERE dataset = ? AND ts <= ? AND {column} IS NOT NULL
        GROUP BY {column} HAVING count(*) >= ? ORDER BY n DESC, value LIMIT ?"""
    for column in ("item_id", "category")
}


def build_vocab(store: Store, dataset: str, before: TimeLike, *, max_items: int = 20000,
                max_categories: int = 2000, item_buckets: int = 1024, category_buckets: int = 128,
                query_buckets: int = 1024, gap_buckets: int = 32, min_count: int = 1,
                gap_steps: int = 1) -> Vocab:
    """Top-K items and categories by event count among events at or before ``before``.

    ``min_count``: a value needs at least this many events to get its own id (rarer values share
    hash buckets), so a small dataset does not give thousands of once-seen items their own vector.

    Pass the validation cutoff (or an earlier time) as ``before``: the vocabulary never looks at
    the validation window. Values outside the top K map to hash buckets (or OOV when the bucket
    count is 0) by :func:`stable_hash`.
    """
    for name, value in (("max_items", max_items), ("max_categories", max_categories),
                        ("item_buckets", item_buckets), ("category_buckets", category_buckets)):
        if int(value) < 0:
            raise DataError(f"{name} must be >= 0, got {value}.", title="Bad vocabulary size")
    for name, value in (("query_buckets", query_buckets), ("gap_buckets", gap_buckets),
                        ("gap_steps", gap_steps)):
        if int(value) < 1:
            raise DataError(f"{name} must be >= 1, got {value}.", title="Bad vocabulary size")
    before = _to_datetime(before)
    tops = {}
    for column, limit in (("item_id", max_items), ("category", max_categories)):
        rows = store.fetchall(_TOP_VALUES_SQL[column], [dataset, before, max(1, int(min_count)), int(limit)])
        tops[column] = {str(value): OOV + 1 + i for i, (value, _) in enumerate(rows)}
    return Vocab(items=tops["item_id"], categories=tops["category"], item_buckets=int(item_buckets),
                 category_buckets=int(category_buckets), query_buckets=int(query_buckets),
                 gap_buckets=int(gap_buckets), gap_steps=int(gap_steps))


def _vocab_frame(mapping: dict[str, int]) -> pa.Table:
    return pa.table({"value": pa.array(list(mapping.keys()), pa.string()),
                     "id": pa.array(list(mapping.values()), pa.int32())})


def map_ids(values: Iterable[object], mapping: dict[str, int], buckets: int) -> np.ndarray:
    """Vocabulary ids of source values in Python (the twin of the SQL mapping): top-K id, else
    ``2 + K + stable_hash % buckets``, else OOV; missing values map to OOV."""
    series = pd.Series(values, dtype=object)
    uniques = pd.unique(series.dropna())
    # one step per distinct value, not per event
    table = {value: vocab_id(str(value), mapping, buckets) for value in uniques}
    return series.map(table).fillna(OOV).to_numpy(dtype=np.int64)


def vocab_id(text: str, mapping: dict[str, int], buckets: int) -> int:
    """The vocabulary id of one present value (see :func:`map_ids`)."""
    if text in mapping:
        return mapping[text]
    return OOV + 1 + len(mapping) + stable_hash(text) % buckets if buckets > 0 else OOV


# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------

_KEYS_VIEW = "il_seq_keys"
_ITEMS_VIEW = "il_vocab_items"
_CATEGORIES_VIEW = "il_vocab_categories"


BOUGHT_LATER = 1                            # the context bit of "the item is bought by a newer event"
SEEN_LATER = 2                              # the context bit of "the item appears in a newer event"
NEWEST_CATEGORY = 4                         # the context bit of "same category as the newest event"
TOP_CATEGORY = 8                            # the context bit of "the category viewed most in the last H"


# Event order: newest first, ties broken on every other column so the order is deterministic.
_NEWEST_FIRST = (f"e.ts DESC, {behavior_code_sql('e.behavior')} DESC, e.item_id DESC, e.category DESC, "
                 "e.query DESC")

# The last L events at or before each key's cutoff (and after its lookback start, lo). rn = 1 is
# the newest event; it lands at position L - 1.
_RECENT_SQL = f"""
SELECT k.seq_idx, k.cutoff, e.ts, e.behavior, e.item_id, e.category, e.query,
       row_number() OVER (PARTITION BY k.seq_idx ORDER BY {_NEWEST_FIRST}) AS rn
FROM {_KEYS_VIEW} k JOIN events e ON e.user_id = k.user_id AND e.ts <= k.cutoff
WHERE e.dataset = ? AND (k.lo IS NULL OR e.ts > k.lo)
QUALIFY rn <= ?
"""

# Parameters, in order: dataset, L, item buckets, item base, item buckets, category buckets,
# category base, category buckets, H in seconds, the top-category bit (0 without it), query buckets,
# L, gap_buckets - 1, gap_steps.
_TOKENS = "list_filter(regexp_split_to_array(lower(r.query), '[^\\pL\\pN]+'), lambda t: t <> '')"
_SEQUENCE_SQL = f"""
WITH r AS MATERIALIZED ({_RECENT_SQL}),
items AS (
    SELECT d.item_id, coalesce(v.id, CASE WHEN ? > 0 THEN ? + {_stable_hash_sql('d.item_id')} % ?
                                          ELSE {OOV} END) AS id
    FROM (SELECT DISTINCT item_id FROM r WHERE item_id IS NOT NULL) d
    LEFT JOIN {_ITEMS_VIEW} v ON v.value = d.item_id),
cats AS (
    SELECT d.category, coalesce(v.id, CASE WHEN ? > 0 THEN ? + {_stable_hash_sql('d.category')} % ?
                                           ELSE {OOV} END) AS id
    FROM (SELECT DISTINCT category FROM r WHERE category IS NOT NULL) d
    LEFT JOIN {_CATEGORIES_VIEW} v ON v.value = d.category),
top AS (
    SELECT seq_idx, arg_max(category, (n_views, last_view, category)) AS category FROM (
        SELECT seq_idx, category, count(*) AS n_views, max(ts) AS last_view FROM r
        WHERE behavior = 'view' AND category IS NOT NULL AND epoch(cutoff - ts) <= ?
        GROUP BY seq_idx, category)
    GROUP BY seq_idx),
ctx AS (
    SELECT r.*,
           (r.item_id IS NOT NULL AND coalesce(count(*) FILTER (WHERE r.behavior = 'buy')
                OVER newer_same_item, 0) > 0)::INTEGER
         + 2 * (r.item_id IS NOT NULL AND coalesce(count(*) OVER newer_same_item, 0) > 0)::INTEGER
         + 4 * coalesce(r.category = first_value(r.category) OVER (PARTITION BY r.seq_idx ORDER BY r.rn),
                        false)::INTEGER
         + ? * coalesce(r.category = t.category, false)::INTEGER AS context
    FROM r LEFT JOIN top t ON t.seq_idx = r.seq_idx
    WINDOW newer_same_item AS (PARTITION BY r.seq_idx, r.item_id ORDER BY r.rn
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
flat AS (
    SELECT r.seq_idx, r.rn, r.cutoff, r.ts, r.behavior, r.context, i.id AS item, c.id AS category,
           list_transform({_TOKENS}[1:{QUERY_TOKENS}],
                          lambda t: 1 + {_stable_hash_sql('t')} % ?) AS tok
    FROM ctx r
    LEFT JOIN items i ON i.item_id = r.item_id
    LEFT JOIN cats c ON c.category = r.category)
SELECT seq_idx,
       (? - rn)::SMALLINT AS pos,
       ({behavior_code_sql('behavior')} + {BEHAVIOR_STRIDE} * context)::TINYINT AS behavior,
       coalesce(item, {OOV})::INTEGER AS item,
       coalesce(category, {OOV})::INTEGER AS category,
       (1 + least(?, floor(? * log2(1 + epoch(cutoff - ts)))))::SMALLINT AS gap,
       (1 + hour(ts))::TINYINT AS hour,
       {", ".join(f"coalesce(tok[{j + 1}], 0)::INTEGER AS q{j}" for j in range(QUERY_TOKENS))}
FROM flat
"""


def _lookback_start(cutoffs: pd.Series, spec: LabelSpec) -> pd.Series:
    lookback = spec.lookback_td
    if lookback is None:
        return pd.Series(pd.NaT, index=cutoffs.index, dtype="datetime64[us]")
    return (cutoffs - lookback).astype("datetime64[us]")


def _check_examples(examples: pd.DataFrame, spec: LabelSpec) -> None:
    need = ["user_id", "cutoff"] + (["category"] if spec.scope == "category" else [])
    missing = [c for c in need if c not in examples.columns]
    if missing:
        raise DataError(f"the example rows lack column(s) {missing}.", title="Bad example rows",
                        hint="Build them with core.modeling.labels.build_examples or scoring_examples.")


def build_sequences(store: Store, dataset: str, examples: pd.DataFrame, vocab: Vocab,
                    spec: LabelSpec, *, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None, chunk_users: int = 50_000) -> SequenceBatch:
    """Per example row, the last ``spec.max_len`` events at or before its cutoff, left-padded.

    Sequences are built for each distinct (user, cutoff); rows sharing one (scope category) share
    it. Each chunk of ``chunk_users`` such sequences, in user order (with one cutoff per row: a
    chunk of users), is one DuckDB query: a row_number window picks the last
    L events, joins map vocabulary ids; its flat (sequence, position, ids...) result is streamed as
    Arrow batches and scattered into preallocated arrays with numpy. Memory: the output arrays
    plus one chunk.
    """
    _check_examples(examples, spec)
    n_rows, length = len(examples), int(spec.max_len)
    keys = examples.reset_index(drop=True)
    cutoffs = pd.to_datetime(keys["cutoff"]).astype("datetime64[us]")
    # one sequence per distinct (user, cutoff); rows map to it through `seq_of_row`
    user_code, users = pd.factorize(keys["user_id"].astype(str), sort=False)
    pair = pd.MultiIndex.from_arrays([user_code, cutoffs.to_numpy()])
    seq_of_row, pairs = pd.factorize(pair, sort=False)
    n_seq = len(pairs)
    seq_user = pairs.get_level_values(0).to_numpy(dtype=np.int64)
    seq_cutoff = pd.Series(pairs.get_level_values(1), dtype="datetime64[us]")
    seq_lo = _lookback_start(seq_cutoff, spec)

    n_items_max = vocab.n_items - 1
    n_cat_max = vocab.n_categories - 1
    arrays = {
        "behavior": np.zeros((n_seq, length), np.int8),
        "item": np.zeros((n_seq, length), _id_dtype(n_items_max)),
        "category": np.zeros((n_seq, length), _id_dtype(n_cat_max)),
        "gap": np.zeros((n_seq, length), _id_dtype(vocab.gap_buckets)),
        "hour": np.zeros((n_seq, length), np.int8),
        "query": np.zeros((n_seq, length, QUERY_TOKENS), _id_dtype(vocab.query_buckets)),
    }
    item_base = OOV + 1 + len(vocab.items)
    cat_base = OOV + 1 + len(vocab.categories)
    params = [dataset, length,
              vocab.item_buckets, item_base, max(vocab.item_buckets, 1),
              vocab.category_buckets, cat_base, max(vocab.category_buckets, 1),
              spec.horizon_td.total_seconds(), TOP_CATEGORY if vocab.context_bits > 3 else 0,
              vocab.query_buckets, length, vocab.gap_buckets - 1, vocab.gap_steps]

    # chunks: consecutive runs of `chunk_users` sequences in user order
    chunk_size = max(1, int(chunk_users))
    by_user = np.argsort(seq_user, kind="stable")
    n_chunks = -(-n_seq // chunk_size)
    seq_ids = np.arange(n_seq, dtype=np.int64)
    user_text = np.asarray(users, dtype=object)
    with store.cursor() as cur:
        store.register_df(cur, _ITEMS_VIEW, _vocab_frame(vocab.items))
        store.register_df(cur, _CATEGORIES_VIEW, _vocab_frame(vocab.categories))
        for chunk in range(n_chunks):
            if cancel is not None:
                cancel.check()
            members = by_user[chunk * chunk_size:(chunk + 1) * chunk_size]
            key_table = pa.table({
                "seq_idx": pa.array(seq_ids[members]),
                "user_id": pa.array(user_text[seq_user[members]], pa.string()),
                "cutoff": pa.array(seq_cutoff.to_numpy()[members], pa.timestamp("us")),
                "lo": pa.array(seq_lo.to_numpy()[members], pa.timestamp("us")),
            })
            store.register_df(cur, _KEYS_VIEW, key_table)
            reader = cur.sql(_SEQUENCE_SQL, params=params).to_arrow_reader(1_000_000)
            for batch in reader:
                _scatter(arrays, batch)
            cur.unregister(_KEYS_VIEW)
            report(progress, min(n_seq, (chunk + 1) * chunk_size), n_seq, "building sequences")

    if n_seq != n_rows or not np.array_equal(seq_of_row, np.arange(n_rows)):
        arrays = {name: array[seq_of_row] for name, array in arrays.items()}
    target = None
    if spec.scope == "category":
        target = map_ids(keys["category"], vocab.categories, vocab.category_buckets)
        target = target.astype(_id_dtype(n_cat_max))
    return SequenceBatch(keys=keys, mask=arrays["behavior"] != PAD, target_category=target,
                         **arrays)


def _scatter(arrays: dict[str, np.ndarray], batch: pa.RecordBatch) -> None:
    """Write one Arrow batch of flat (seq_idx, pos, ids...) rows into the arrays, vectorised."""
    columns = {name: batch.column(name).to_numpy(zero_copy_only=False)
               for name in batch.schema.names}
    row, pos = columns["seq_idx"], columns["pos"].astype(np.int64)
    for name in ("behavior", "item", "category", "gap", "hour"):
        arrays[name][row, pos] = columns[name]
    for j in range(QUERY_TOKENS):
        arrays["query"][row, pos, j] = columns[f"q{j}"]


# ---------------------------------------------------------------------------------------------
# The same arrays from events in memory (the scoring service's fast path)
# ---------------------------------------------------------------------------------------------

_DAY_US = 86_400 * 1_000_000
_HOUR_US = 3_600 * 1_000_000
_TOKEN = re.compile(r"[^\W_]+")       # a run of letters and digits: what _TOKENS keeps
# DuckDB's lower() maps one code point to one (Unicode's simple case mapping); Python's str.lower()
# differs from that for exactly these two: U+0130 (to "i" + a combining dot) and a word-final
# capital sigma (to the final form).
_SIMPLE_LOWER = str.maketrans({"\u0130": "i", "\u03a3": "\u03c3"})


def query_tokens(query: str, query_buckets: int) -> list[int]:
    """The query ids of one search text, as the sequence SQL computes them (``_TOKENS``): lowercased,
    split on anything that is not a letter or digit, the first ``QUERY_TOKENS`` tokens, each
    ``1 + stable_hash(token) % query_buckets``."""
    tokens = _TOKEN.findall(query.translate(_SIMPLE_LOWER).lower())[:QUERY_TOKENS]
    return [1 + stable_hash(token) % query_buckets for token in tokens]


def _text_codes(values: np.ndarray, mapping: dict[str, int] | None = None,
                buckets: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sort key, vocabulary ids) of a text column. The key orders ``DESC NULLS LAST`` (smaller =
    earlier; equal values share a key, missing values get 1, after every present one); the ids are
    what :func:`map_ids` gives (:func:`vocab_id` per distinct value, OOV for missing ones; zeros
    when no ``mapping`` is given)."""
    present = ~pd.isna(values)
    key = np.ones(len(values), np.int64)
    ids = np.full(len(values), OOV if mapping is not None else 0, np.int64)
    if present.any():
        uniques, rank = np.unique(values[present].astype(str), return_inverse=True)
        key[present] = -rank.astype(np.int64)
        if mapping is not None:             # one lookup per distinct value
            ids[present] = np.fromiter((vocab_id(text, mapping, buckets) for text in uniques.tolist()),
                                       np.int64, len(uniques))[rank]
    return key, ids


def _epoch_seconds(delta_us: np.ndarray) -> np.ndarray:
    """DuckDB's ``epoch(interval)`` of ``cutoff - ts`` (>= 0): whole days in seconds plus the
    rest's microseconds / 1e6, added in float64 in that order, so the gap buckets match bit for bit."""
    days, rest = np.divmod(delta_us, _DAY_US)
    return (days * 86_400).astype(np.float64) + rest.astype(np.float64) / 1e6


def _top_categories(seq: np.ndarray, cat_key: np.ndarray, ts: np.ndarray, n_seq: int) -> np.ndarray:
    """Per sequence, the category key with the most of these events (a tie goes to the latest event,
    then to the larger category text, as the SQL's ``arg_max``); 1, which no category has, when none."""
    top = np.ones(n_seq, np.int64)
    if len(seq) == 0:
        return top
    order = np.lexsort((cat_key, seq))
    seq, cat_key, ts = seq[order], cat_key[order], ts[order]
    starts = np.flatnonzero(np.r_[True, (seq[1:] != seq[:-1]) | (cat_key[1:] != cat_key[:-1])])
    size, last = np.diff(np.r_[starts, len(seq)]), np.maximum.reduceat(ts, starts)
    g_seq, g_key = seq[starts], cat_key[starts]
    best = np.lexsort((-g_key, last, size, g_seq))          # per sequence, the best group comes last
    ends = best[np.r_[np.flatnonzero(np.diff(g_seq[best])), len(best) - 1]]
    top[g_seq[ends]] = g_key[ends]
    return top


def sequences_from_events(events: pd.DataFrame, cutoffs: Mapping[str, TimeLike] | TimeLike, vocab: Vocab,
                          spec: LabelSpec) -> SequenceBatch:
    """What :func:`core.modeling.labels.scoring_examples` and :func:`build_sequences` give for these
    events, built in numpy without DuckDB (the scoring service's path for a few users).

    events: one row per event with columns user_id, ts (naive UTC), behavior, item_id, category and
    optionally query (missing = no search text); other columns are ignored. cutoffs: each user's T
    (a mapping user id -> time; users it lacks are not scored), or one T for every user. The rows
    (``keys``: user_id, cutoff, label NaN, split ``score``) are the users with an event in
    (T - lookback, T] (any event at or before T without a lookback), ordered by cutoff then user id,
    as the examples SQL orders them; the arrays equal ``build_sequences``'s for those rows byte for
    byte: the same last ``spec.max_len`` events in the same order (newest first, ties broken by
    behaviour, item, category and query descending, missing values last), context bits, vocabulary
    ids (:func:`map_ids`), gap and hour buckets and query tokens (:func:`query_tokens`).
    Scope ``any`` only: DataError for scope ``category`` (use the SQL path).
    """
    if spec.scope != "any":
        raise DataError("sequences_from_events builds scope 'any' rows only.", title="Wrong scope",
                        hint="Build scope 'category' rows with scoring_examples and build_sequences.")
    missing = [c for c in ("user_id", "ts", "behavior", "item_id", "category") if c not in events.columns]
    if missing:
        raise DataError(f"the events lack column(s) {missing}.", title="Bad events",
                        hint="Give user_id, ts, behavior, item_id, category (and query) per event.")
    length = int(spec.max_len)
    users = events["user_id"].to_numpy(dtype=object).astype(str)
    ts = events["ts"].to_numpy(dtype="datetime64[us]").view(np.int64)
    if isinstance(cutoffs, Mapping):
        table = {str(u): np.datetime64(_to_datetime(t), "us").view(np.int64) for u, t in cutoffs.items()}
        nat = np.iinfo(np.int64).min                          # no cutoff: not scored
        cut = np.fromiter((table.get(u, nat) for u in users.tolist()), np.int64, len(users))
        keep = (cut != nat) & (ts <= cut)
    else:
        cut = np.full(len(users), np.datetime64(_to_datetime(cutoffs), "us").view(np.int64))
        keep = ts <= cut
    lookback = spec.lookback_td
    if lookback is not None:
        keep &= ts > cut - lookback // timedelta(microseconds=1)
    rows = np.flatnonzero(keep)
    user, ts, cut = users[rows], ts[rows], cut[rows]
    column = {name: events[name].to_numpy(dtype=object)[rows] for name in ("behavior", "item_id", "category")}
    column["query"] = (events["query"].to_numpy(dtype=object)[rows] if "query" in events.columns
                       else np.full(len(rows), None, dtype=object))

    # the rows: one per (user, cutoff) left, ordered by cutoff then user id
    pairs = sorted(set(zip(cut.tolist(), user.tolist(), strict=True)))
    index = {pair: i for i, pair in enumerate(pairs)}
    seq = np.fromiter((index[pair] for pair in zip(cut.tolist(), user.tolist(), strict=True)), np.int64, len(rows))
    n_seq = len(pairs)

    # newest first within a sequence, ties as _NEWEST_FIRST breaks them
    unknown = sorted({str(b) for b in column["behavior"].tolist()} - set(BEHAVIOR_CODE))
    if unknown:
        raise DataError(f"unknown behaviour(s) {unknown}.", title="Bad events",
                        hint=f"Use one of {', '.join(BEHAVIORS)}.")
    code = np.fromiter((BEHAVIOR_CODE[str(b)] for b in column["behavior"].tolist()), np.int64, len(rows))
    item_key, item_id = _text_codes(column["item_id"], vocab.items, vocab.item_buckets)
    cat_key, cat_id = _text_codes(column["category"], vocab.categories, vocab.category_buckets)
    query_key, _ = _text_codes(column["query"])
    order = np.lexsort((query_key, cat_key, item_key, -code, -ts, seq))
    starts = np.searchsorted(seq[order], np.arange(n_seq))
    rn = np.arange(len(order)) - starts[seq[order]]                 # 0 = the newest event
    order, rn = order[rn < length], rn[rn < length]
    seq, ts, cut, code, item_key, item_id, cat_key, cat_id = (
        a[order] for a in (seq, ts, cut, code, item_key, item_id, cat_key, cat_id))
    query = column["query"][order]

    # context bits over the kept events: a newer event of the same item (bought / any), the
    # category of the newest event and the category viewed most in the last H
    by_item = np.lexsort((rn, item_key, seq))
    same = np.zeros(len(seq), bool)           # a newer event of the same sequence and item exists
    same[1:] = (seq[by_item][1:] == seq[by_item][:-1]) & (item_key[by_item][1:] == item_key[by_item][:-1])
    group = np.cumsum(~same) - 1
    is_buy = code[by_item] == BEHAVIOR_CODE["buy"]
    bought_before = np.cumsum(is_buy) - is_buy
    newer_buys = bought_before - bought_before[np.flatnonzero(~same)][group]
    has_item = item_key[by_item] <= 0
    context = np.zeros(len(seq), np.int64)
    context[by_item] = BOUGHT_LATER * (has_item & (newer_buys > 0)) + SEEN_LATER * (has_item & same)
    newest_cat = cat_key[rn == 0][seq]
    context += NEWEST_CATEGORY * ((cat_key <= 0) & (cat_key == newest_cat))
    seconds = _epoch_seconds(cut - ts)
    if vocab.context_bits > 3:
        recent = (code == BEHAVIOR_CODE["view"]) & (cat_key <= 0) & (seconds <= spec.horizon_td.total_seconds())
        top = _top_categories(seq[recent], cat_key[recent], ts[recent], n_seq)
        context += TOP_CATEGORY * ((cat_key <= 0) & (cat_key == top[seq]))

    log2 = {s: math.log2(1.0 + s) for s in set(seconds.tolist())}       # libm's log2, as DuckDB's
    steps = np.fromiter((log2[s] for s in seconds.tolist()), np.float64, len(seconds)) * vocab.gap_steps
    gap = 1 + np.minimum(vocab.gap_buckets - 1, np.floor(steps))
    tokens = np.zeros((len(seq), QUERY_TOKENS), np.int64)
    texts: dict[str, list[int]] = {}
    for i, text in enumerate(query.tolist()):
        if isinstance(text, str):
            ids = texts.setdefault(text, query_tokens(text, vocab.query_buckets))
            tokens[i, :len(ids)] = ids

    pos = length - 1 - rn
    arrays = {
        "behavior": np.zeros((n_seq, length), np.int8),
        "item": np.zeros((n_seq, length), _id_dtype(vocab.n_items - 1)),
        "category": np.zeros((n_seq, length), _id_dtype(vocab.n_categories - 1)),
        "gap": np.zeros((n_seq, length), _id_dtype(vocab.gap_buckets)),
        "hour": np.zeros((n_seq, length), np.int8),
        "query": np.zeros((n_seq, length, QUERY_TOKENS), _id_dtype(vocab.query_buckets)),
    }
    arrays["behavior"][seq, pos] = code + BEHAVIOR_STRIDE * context
    arrays["item"][seq, pos] = item_id
    arrays["category"][seq, pos] = cat_id
    arrays["gap"][seq, pos] = gap
    arrays["hour"][seq, pos] = 1 + (ts // _HOUR_US) % 24
    arrays["query"][seq, pos] = tokens
    keys = pd.DataFrame({"user_id": pd.Series([u for _, u in pairs], dtype="str"),   # as a DuckDB result has them
                         "cutoff": np.array([t for t, _ in pairs], np.int64).view("datetime64[us]"),
                         "label": np.full(n_seq, np.nan), "split": pd.Series(["score"] * n_seq, dtype="str")})
    return SequenceBatch(keys=keys, mask=arrays["behavior"] != PAD, **arrays)


# ---------------------------------------------------------------------------------------------
# One user's events, aligned with sequence positions (for explanations)
# ---------------------------------------------------------------------------------------------

_USER_EVENTS_SQL = f"""
SELECT ? - row_number() OVER (ORDER BY {_NEWEST_FIRST}) AS position,
       e.ts, e.behavior::VARCHAR AS behavior, e.item_id, e.category, e.query,
       epoch(?::TIMESTAMP - e.ts) AS gap_seconds
FROM events e
WHERE e.dataset = ? AND e.user_id = ? AND e.ts <= ? AND (?::TIMESTAMP IS NULL OR e.ts > ?)
QUALIFY position >= 0
ORDER BY position
"""


def user_events(store: Store, dataset: str, user_id: object, cutoff: TimeLike,
                spec: LabelSpec) -> pd.DataFrame:
    """The raw events behind one user's sequence at ``cutoff``, one row per filled position.

    Columns: position (L-1 = newest), ts, behavior, item_id, category, query, gap_seconds.
    Empty when the user has no event in the lookback; NotFoundError when the user is unknown.
    """
    user = str(user_id)
    if store.fetchone("SELECT 1 FROM events WHERE dataset = ? AND user_id = ? LIMIT 1",
                      [dataset, user]) is None:
        raise NotFoundError(f"user {user!r} is unknown in dataset {dataset!r}.",
                            hint="Check the user id (ids are matched as text, exactly as in the "
                                 "source file) and the dataset name.")
    cutoff = _to_datetime(cutoff)
    lookback = spec.lookback_td
    lo = cutoff - lookback if lookback else None
    return store.df(_USER_EVENTS_SQL, [int(spec.max_len), cutoff, dataset, user, cutoff, lo, lo])
