"""Vocabulary, padded sequences and one user's events (core/sequences.py)."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.data.schema import BEHAVIOR_CODE
from core.errors import NotFoundError
from core.modeling.labels import LabelSpec, build_examples, plan_cutoffs, scoring_examples
from core.modeling.sequences import (
    BEHAVIOR_STRIDE,
    N_BEHAVIOR_IDS,
    OOV,
    QUERY_TOKENS,
    TOP_CATEGORY,
    SequenceBatch,
    Vocab,
    build_sequences,
    build_vocab,
    map_ids,
    stable_hash,
    user_events,
)
from core.progress import Cancelled, CancelToken
from tests.event_rows import add_events, insert_events

T = datetime(2024, 1, 10, 12)
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def add_random_events(store, dataset, users=150, seed=3):
    """A few thousand seeded events over ten days: skewed items, searches, sessions."""
    sql = """
        WITH e AS (
            SELECT u.range AS u, x.range AS k,
                   (hash(u.range, x.range, ?) % 1000) / 1000.0 AS r1,
                   (hash(x.range, u.range, ?) % 1000) / 1000.0 AS r2
            FROM range(?) u JOIN range(60) x ON x.range < 1 + hash(u.range, ?) % 60)
        SELECT ?, 'user' || u, 'it' || floor(300 * r1 * r1)::INT, 'cat' || floor(300 * r1 * r1)::INT % 17,
               CASE WHEN r2 < 0.7 THEN 'view' WHEN r2 < 0.8 THEN 'cart' WHEN r2 < 0.85 THEN 'fav'
                    WHEN r2 < 0.92 THEN 'buy' WHEN r2 < 0.95 THEN 'remove_from_cart'
                    ELSE 'search' END,
               TIMESTAMP '2024-01-01' + to_seconds((u * 7919 + k * 13007) % (10 * 86400)),
               CASE WHEN u % 2 = 0 THEN 's' || (k // 5) END,
               CASE WHEN r2 >= 0.95 THEN 'Blue Jeans, slim-fit ' || (k % 9) || ' extra words' END
        FROM e"""
    with store.write(dataset, "test events") as w:
        insert_events(w, sql, [seed, seed + 1, users, seed, dataset],
                      columns=("dataset", "user_id", "item_id", "category", "behavior", "ts", "session_id", "query"))


def arrays_equal(a: SequenceBatch, b: SequenceBatch) -> bool:
    same = all(np.array_equal(getattr(a, n), getattr(b, n)) and getattr(a, n).dtype == getattr(b, n).dtype
               for n in SequenceBatch.ARRAYS)
    if a.target_category is None or b.target_category is None:
        return same and a.target_category is None and b.target_category is None
    return same and np.array_equal(a.target_category, b.target_category)


def one_row(user: str, cutoff: datetime = T) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [user], "cutoff": [cutoff], "label": [0], "split": ["train"]})


@pytest.fixture
def small(store):
    add_events(store, "s", [
        ("a", "i1", "c1", "view", T - timedelta(hours=3)),
        ("a", "i2", "c1", "cart", T - timedelta(hours=2)),
        ("a", "i1", "c1", "buy", T - timedelta(minutes=5)),
        ("a", "i9", "c2", "buy", T + timedelta(minutes=5)),          # after T: never read
        *[("b", f"j{k}", "c2", "view", T - timedelta(minutes=10 * k)) for k in range(10)],
        ("q", None, None, "search", T - timedelta(minutes=1), "Red Shoes, size-42 for MEN"),
        ("q", "i1", "c1", "view", T - timedelta(minutes=2)),
    ])
    return store


def test_left_padding_mask_and_newest_last(small):
    vocab = build_vocab(small, "s", T)
    spec = LabelSpec(horizon="1h", max_len=5)
    batch = build_sequences(small, "s", one_row("a"), vocab, spec)
    assert len(batch) == 1 and batch.max_len == 5
    assert batch.mask[0].tolist() == [False, False, True, True, True]
    # behaviour x context: the view of i1 is followed by a buy of i1 (1) and by i1 again (2); every
    # event is in c1, the newest event's category (4)
    codes = [BEHAVIOR_CODE["view"] + BEHAVIOR_STRIDE * 7, BEHAVIOR_CODE["cart"] + BEHAVIOR_STRIDE * 4,
             BEHAVIOR_CODE["buy"] + BEHAVIOR_STRIDE * 4]
    assert batch.behavior[0].tolist() == [0, 0, *codes]
    assert batch.behavior.max() < N_BEHAVIOR_IDS
    for name in ("item", "category", "gap", "hour"):
        assert (getattr(batch, name)[0, :2] == 0).all() and (getattr(batch, name)[0, 2:] > 0).all()
    # the newest event (the buy of i1 five minutes before T) sits at L-1
    assert batch.item[0, -1] == vocab.items["i1"] and batch.item[0, -2] == vocab.items["i2"]
    assert batch.hour[0].tolist()[2:] == [1 + 9, 1 + 10, 1 + 11]   # UTC hours 9, 10, 11
    assert (batch.query == 0).all()


def test_truncation_keeps_the_last_events_and_matches_user_events(small):
    vocab = build_vocab(small, "s", T)
    spec = LabelSpec(horizon="1h", max_len=4)
    batch = build_sequences(small, "s", one_row("b"), vocab, spec)
    assert batch.mask.all()
    assert batch.item[0].tolist() == [vocab.items[f"j{k}"] for k in (3, 2, 1, 0)]
    events = user_events(small, "s", "b", T, spec)
    assert events["position"].tolist() == [0, 1, 2, 3]
    assert events["item_id"].tolist() == ["j3", "j2", "j1", "j0"]
    assert events["gap_seconds"].tolist() == [1800.0, 1200.0, 600.0, 0.0]
    assert events["ts"].is_monotonic_increasing


def test_user_events_aligns_with_padding_and_refuses_unknown_users(small):
    spec = LabelSpec(horizon="1h", max_len=6)
    events = user_events(small, "s", "a", T, spec)
    assert events["position"].tolist() == [3, 4, 5]           # left padded: newest at L-1 = 5
    assert events["behavior"].tolist() == ["view", "cart", "buy"]
    assert (events["ts"] <= T).all()
    with pytest.raises(NotFoundError) as info:
        user_events(small, "s", "nobody", T, spec)
    assert "'nobody' is unknown in dataset 's'" in str(info.value)
    assert "Check the user id" in str(info.value)


def test_query_tokens_are_hashed_lowercase_first_q(small):
    vocab = build_vocab(small, "s", T, query_buckets=97)
    batch = build_sequences(small, "s", one_row("q"), vocab, LabelSpec(horizon="1h", max_len=3))
    expected = [1 + stable_hash(t) % 97 for t in ("red", "shoes", "size", "42")]
    assert QUERY_TOKENS == 4 and batch.query[0, -1].tolist() == expected
    assert (batch.query[0, :-1] == 0).all()                   # the view and the padding
    assert batch.behavior[0, -1] == BEHAVIOR_CODE["search"] and batch.item[0, -1] == OOV


def test_vocab_top_k_oov_and_stable_hash_buckets(store):
    rows = [("u", "hot", "c", "view", T - timedelta(minutes=m)) for m in range(1, 6)]
    rows += [("u", "warm", "c", "view", T - timedelta(minutes=m)) for m in range(6, 9)]
    rows += [("u", "cold", "d", "view", T - timedelta(minutes=9))]
    rows += [("u", "future", "c", "view", T + timedelta(minutes=m)) for m in range(1, 20)]
    add_events(store, "v", rows)
    vocab = build_vocab(store, "v", T, max_items=2, item_buckets=0)
    assert vocab.items == {"hot": 2, "warm": 3}               # never counts events after `before`
    assert vocab.n_items == 4
    assert map_ids(["hot", "cold", None], vocab.items, 0).tolist() == [2, OOV, OOV]
    hashed = build_vocab(store, "v", T, max_items=2, item_buckets=16)
    batch = build_sequences(store, "v", one_row("u"), hashed, LabelSpec(horizon="1h", max_len=9))
    assert batch.item[0, 0] == 2 + 2 + stable_hash("cold") % 16   # oldest event: the tail item
    assert map_ids(["cold"], hashed.items, 16)[0] == batch.item[0, 0]
    # the hash is MD5-defined: the same in every process and every DuckDB version
    assert stable_hash("abc") == 0x900150983cd24fb
    assert Vocab.from_dict(hashed.to_dict()) == hashed


def test_ids_are_identical_in_another_process(store, tmp_path):
    add_random_events(store, "r", users=20)
    spec = LabelSpec(horizon="1d", max_len=12)
    cutoff = datetime(2024, 1, 8)
    vocab = build_vocab(store, "r", cutoff, max_items=10, item_buckets=32, category_buckets=4)
    rows = scoring_examples(store, "r", spec, cutoff)
    here = build_sequences(store, "r", rows, vocab, spec)
    store.close()
    code = f"""
import sys, numpy as np
sys.path.insert(0, {str(ROOT)!r})
from datetime import datetime
from core.data.store import Store
from core.modeling.labels import LabelSpec, scoring_examples
from core.modeling.sequences import build_sequences, build_vocab
with Store({str(store.path)!r}, read_only=True) as s:
    spec = LabelSpec(horizon="1d", max_len=12)
    vocab = build_vocab(s, "r", datetime(2024, 1, 8), max_items=10, item_buckets=32, category_buckets=4)
    b = build_sequences(s, "r", scoring_examples(s, "r", spec, datetime(2024, 1, 8)), vocab, spec)
    np.save({str(tmp_path / 'items.npy')!r}, b.item); np.save({str(tmp_path / 'q.npy')!r}, b.query)
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONHASHSEED": "123",
                                                                   "PATH": "/usr/bin:/bin"})
    assert np.array_equal(np.load(tmp_path / "items.npy"), here.item)
    assert np.array_equal(np.load(tmp_path / "q.npy"), here.query)
    assert (here.item >= 2 + 10).any()                         # some tail items were hashed


def test_gap_buckets_are_log_spaced_monotone_and_capped(store):
    gaps = [0, 1, 3, 10, 60, 600, 3600, 86400, 30 * 86400]
    add_events(store, "g", [("u", f"i{s}", "c", "view", T - timedelta(seconds=s)) for s in gaps])
    vocab = build_vocab(store, "g", T)
    batch = build_sequences(store, "g", one_row("u"), vocab, LabelSpec(horizon="1h", max_len=9))
    by_age = batch.gap[0][::-1].tolist()                      # newest (gap 0) first
    assert by_age[0] == 1 and by_age == sorted(by_age) and len(set(by_age)) == len(gaps)
    assert by_age == [1 + int(np.floor(np.log2(1 + s))) for s in gaps]
    capped = build_sequences(store, "g", one_row("u"), Vocab(gap_buckets=4),
                             LabelSpec(horizon="1h", max_len=9))
    assert capped.gap.max() == 4 and capped.gap[0][::-1].tolist() == sorted(capped.gap[0])


def test_lookback_drops_older_events(small):
    vocab = build_vocab(small, "s", T)
    spec = LabelSpec(horizon="1h", lookback="150min", max_len=5)
    batch = build_sequences(small, "s", one_row("a"), vocab, spec)
    assert batch.mask[0].tolist() == [False, False, False, True, True]
    events = user_events(small, "s", "a", T, spec)
    assert events["position"].tolist() == [3, 4] and events["behavior"].tolist() == ["cart", "buy"]


def test_category_scope_target_and_shared_sequences(store):
    add_random_events(store, "r", users=40)
    spec = LabelSpec(horizon="1d", scope="category", max_len=20)
    plan = plan_cutoffs(store, "r", spec)
    examples = build_examples(store, "r", spec, plan)
    vocab = build_vocab(store, "r", plan.valid_cutoff, max_categories=5, category_buckets=8)
    batch = build_sequences(store, "r", examples, vocab, spec, chunk_users=7)
    assert batch.target_category is not None and len(batch.target_category) == len(examples)
    expected = map_ids(examples["category"], vocab.categories, 8)
    assert np.array_equal(batch.target_category, expected)
    assert set(np.unique(batch.target_category)) <= set(range(2, vocab.n_categories))
    # rows that share (user, cutoff) share their sequence
    for _, group in examples.groupby(["user_id", "cutoff"]):
        if len(group) > 1:
            idx = group.index.to_numpy()
            assert (batch.item[idx] == batch.item[idx[0]]).all()
    assert batch.tensors()["target_category"].dtype.is_floating_point is False


def test_no_leakage_events_after_the_cutoff_change_nothing(store):
    add_random_events(store, "r", users=60)
    spec = LabelSpec(horizon="1d", max_len=30)
    cutoff = datetime(2024, 1, 6)
    rows = scoring_examples(store, "r", spec, cutoff)
    vocab = build_vocab(store, "r", cutoff, max_items=50)
    before = build_sequences(store, "r", rows, vocab, spec, chunk_users=16)
    future = [(u, "it1", "cat1", b, cutoff + timedelta(seconds=s), "new query words", "s0")
              for u in rows["user_id"].iloc[:25] for b, s in (("buy", 1), ("view", 3600), ("search", 7))]
    future += [("brand-new-user", "it2", "cat2", "view", cutoff + timedelta(hours=2))]
    add_events(store, "r", future)
    assert build_vocab(store, "r", cutoff, max_items=50) == vocab
    after = build_sequences(store, "r", rows, vocab, spec, chunk_users=16)
    assert arrays_equal(before, after)


def test_chunked_equals_single_chunk_and_progress(store):
    add_random_events(store, "r", users=80)
    spec = LabelSpec(horizon="1d", max_len=25)
    plan = plan_cutoffs(store, "r", spec)
    examples = build_examples(store, "r", spec, plan).sample(frac=1.0, random_state=0)
    vocab = build_vocab(store, "r", plan.valid_cutoff, max_items=40, item_buckets=64)
    calls = []
    whole = build_sequences(store, "r", examples, vocab, spec, chunk_users=10**6)
    chunked = build_sequences(store, "r", examples, vocab, spec, chunk_users=9,
                              progress=lambda d, t, m: calls.append((d, t)))
    assert arrays_equal(whole, chunked) and len(whole) == len(examples)
    assert whole.keys["user_id"].tolist() == examples["user_id"].tolist()   # order kept
    assert len(calls) >= 9 and calls[-1][0] == calls[-1][1]
    # each row really is its user's history at its own cutoff
    row = int(np.argmax(whole.mask.sum(1)))
    events = user_events(store, "r", whole.keys.user_id[row], whole.keys.cutoff[row], spec)
    assert whole.mask[row].sum() == len(events)
    codes = events["behavior"].map(BEHAVIOR_CODE).to_numpy()
    got = whole.behavior[row, events["position"].to_numpy()]
    assert np.array_equal(got % BEHAVIOR_STRIDE, codes)        # the behaviour under its context


def test_tensors_are_long_and_subset_concat_keep_rows(store):
    add_random_events(store, "r", users=10)
    spec = LabelSpec(horizon="1d", max_len=8)
    rows = scoring_examples(store, "r", spec, datetime(2024, 1, 9))
    batch = build_sequences(store, "r", rows, build_vocab(store, "r", datetime(2024, 1, 9)), spec)
    assert batch.item.dtype.itemsize <= 4 and batch.behavior.dtype == np.int8   # compact storage
    tensors = batch.tensors()
    import torch
    for name in ("behavior", "item", "category", "gap", "hour", "query"):
        assert tensors[name].dtype == torch.long
    assert tensors["mask"].dtype == torch.bool
    assert tensors["query"].shape == (len(rows), 8, QUERY_TOKENS)
    compact = batch.tensors(widen=False)
    assert compact["behavior"].dtype == torch.int8
    assert torch.equal(compact["item"][[2, 0]].long(), tensors["item"][[2, 0]])
    part = batch.subset([3, 1])
    assert part.keys["user_id"].tolist() == [rows.user_id[3], rows.user_id[1]]
    assert np.array_equal(SequenceBatch.concat([batch.subset([0, 1]), batch.subset([2])]).item,
                          batch.item[:3])
    # a subset is a copy; with share=True a run of consecutive rows (one split of the time-ordered
    # example rows) shares the arrays, and any other selection is still a copy
    run = batch.subset(np.arange(2, 6), share=True)
    assert all(np.shares_memory(getattr(run, name), getattr(batch, name)) for name in SequenceBatch.ARRAYS)
    assert run.keys["user_id"].tolist() == rows.user_id[2:6].tolist() and np.array_equal(run.gap, batch.gap[2:6])
    for index, share in ((np.arange(2, 6), False), ([3, 1], True), ([1, 3], True),
                         (np.arange(len(rows)) % 2 == 0, True)):
        picked = batch.subset(index, share=share)
        assert not any(np.shares_memory(getattr(picked, n), getattr(batch, n)) for n in SequenceBatch.ARRAYS)


def test_cancel_stops_between_chunks(store):
    add_random_events(store, "r", users=10)
    spec = LabelSpec(horizon="1d", max_len=8)
    rows = scoring_examples(store, "r", spec, datetime(2024, 1, 9))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        build_sequences(store, "r", rows, Vocab(), spec, cancel=token, chunk_users=2)


def test_behaviour_context_never_reads_past_the_cutoff(store):
    """The cart of i1 becomes 'bought later' only when the buy is at or before the cutoff."""
    add_events(store, "k", [
        ("u", "i1", "c1", "cart", T - timedelta(hours=2)),
        ("u", "i2", "c2", "view", T - timedelta(hours=1)),
        ("u", "i1", "c1", "buy", T + timedelta(hours=1)),
    ])
    vocab = build_vocab(store, "k", T)
    spec = LabelSpec(horizon="1h", max_len=3)
    before = build_sequences(store, "k", one_row("u", T), vocab, spec)
    after = build_sequences(store, "k", one_row("u", T + timedelta(hours=2)), vocab, spec)
    assert before.behavior[0, -2] == BEHAVIOR_CODE["cart"]                      # open cart, other category
    assert after.behavior[0, -3] == BEHAVIOR_CODE["cart"] + BEHAVIOR_STRIDE * (1 + 2 + 4)


def test_top_category_bit_marks_the_most_viewed_category_of_the_last_horizon(store):
    add_events(store, "top", [
        ("u", "i1", "c1", "cart", T - timedelta(hours=5)),      # open cart in c1
        ("u", "i2", "c2", "cart", T - timedelta(hours=4)),      # open cart in c2
        ("u", "i3", "c2", "view", T - timedelta(hours=3)),      # before the last hour
        ("u", "i4", "c2", "view", T - timedelta(hours=3)),
        ("u", "i5", "c1", "view", T - timedelta(minutes=40)),
        ("u", "i6", "c1", "view", T - timedelta(minutes=30)),
        ("u", "i7", "c2", "view", T - timedelta(minutes=20)),
        ("t", "i1", "c1", "view", T - timedelta(minutes=50)),
        ("t", "i2", "c2", "view", T - timedelta(minutes=20)),  # a tie: the later view wins
    ])
    vocab = build_vocab(store, "top", T)
    assert vocab.context_bits == 4 and vocab.n_behavior_ids == N_BEHAVIOR_IDS == 7 * 16
    rows = pd.concat([one_row("u"), one_row("t")], ignore_index=True)
    batch = build_sequences(store, "top", rows, vocab, LabelSpec(horizon="1h", max_len=7))
    top = (batch.behavior // BEHAVIOR_STRIDE & TOP_CATEGORY) > 0
    names = {v: k for k, v in vocab.categories.items()}
    marked = [[names[c] for c in row[flag]] for row, flag in zip(batch.category, top, strict=True)]
    assert marked == [["c1", "c1", "c1"], ["c2"]]
    # the open cart in c1 carries the bit with no other (not bought, not seen again, not the newest category)
    assert batch.behavior[0, 0] == BEHAVIOR_CODE["cart"] + BEHAVIOR_STRIDE * TOP_CATEGORY
    # over the last 4 hours c2 leads (3 views against 2)
    wide = build_sequences(store, "top", one_row("u"), vocab, LabelSpec(horizon="4h", max_len=7))
    assert [names[c] for c in wide.category[0][(wide.behavior[0] // BEHAVIOR_STRIDE & TOP_CATEGORY) > 0]] \
        == ["c2", "c2", "c2", "c2"]
    # a vocabulary saved before the fourth bit reads back with three: its model gets the ids it knows
    old = Vocab.from_dict({k: v for k, v in vocab.to_dict().items() if k != "context_bits"})
    assert old.context_bits == 3 and old.n_behavior_ids == 7 * 8
    legacy = build_sequences(store, "top", rows, old, LabelSpec(horizon="1h", max_len=7))
    assert np.array_equal(legacy.behavior, np.where(top, batch.behavior - BEHAVIOR_STRIDE * TOP_CATEGORY,
                                                    batch.behavior))
    assert Vocab.from_dict(vocab.to_dict()) == vocab
    with pytest.raises(ValueError, match="context_bits"):
        Vocab(context_bits=5)


def test_finer_gap_steps_split_each_doubling(store):
    gaps = [0, 9 * 3600, 12 * 3600, 16 * 3600]
    add_events(store, "g4", [("u", f"i{s}", "c", "view", T - timedelta(seconds=s)) for s in gaps])
    vocab = build_vocab(store, "g4", T, gap_steps=4, gap_buckets=96)
    batch = build_sequences(store, "g4", one_row("u"), vocab, LabelSpec(horizon="1h", max_len=4))
    by_age = batch.gap[0][::-1].tolist()
    assert by_age == [1 + int(np.floor(4 * np.log2(1 + s))) for s in gaps]
    assert len(set(by_age)) == 4          # with one step per doubling 9 h and 12 h would collide
    assert Vocab.from_dict(vocab.to_dict()).gap_steps == 4
