"""The numpy fast path (core.modeling.sequences.sequences_from_events) against the SQL path
(scoring_examples + build_sequences): the same rows and every array byte for byte, on a synthetic
log with searches plus planted edge cases (tied and duplicated timestamps, items and categories
outside the vocabulary or missing, users with more events than max_len, awkward query text), with
and without a lookback, at several cutoffs and per-user cutoffs; and the demo model scores the
same through both."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.errors import DataError
from core.modeling.labels import LabelSpec, scoring_examples
from core.modeling.sequences import (
    BEHAVIOR_STRIDE,
    QUERY_TOKENS,
    TOP_CATEGORY,
    SequenceBatch,
    Vocab,
    build_sequences,
    build_vocab,
    query_tokens,
    sequences_from_events,
    stable_hash,
)
from core.modeling.synth import SynthConfig, generate
from models.artifact import load_model
from tests.event_rows import add_events

ROOT = Path(__file__).resolve().parents[1]
DATASET = "fast"
START = datetime(2017, 11, 25)
T0 = START + timedelta(days=3, hours=7, minutes=13)
CUTOFFS = [START + timedelta(days=2), T0, START + timedelta(days=4, seconds=59)]
# planted at T0: the queries and timestamps the synthetic log does not produce
ODD_QUERIES = ["Red  SHOES, size-42!", "İSTANBUL ΟΔΟΣ straße", "a_b ½ ٣x --", "", "   ", "x" * 40 + " y z w v u"]


def planted_rows() -> list[tuple]:
    """Users whose events tie on ts (same and different behaviours, items, categories, queries),
    repeat exactly, lack item or category, lie outside the vocabulary, search with odd text, fall
    on sub-second times, and outnumber max_len."""
    t = T0 - timedelta(hours=1)
    rows: list[tuple] = []
    for k, behavior in enumerate(["view", "cart", "buy", "fav", "remove_from_cart", "view", "buy"]):
        rows.append(("tie", f"it{k % 3}", f"c{k % 2}", behavior, t))           # one instant, many ties
        rows.append(("tie", f"it{k % 3}", f"c{k % 2}", behavior, t))           # and exact duplicates
    rows += [("tie", None, "c1", "view", t), ("tie", "it1", None, "view", t),
             ("tie", None, None, "search", t, "b a"), ("tie", None, None, "search", t, "a b"),
             ("tie", None, None, "search", t, None)]
    for k, text in enumerate(ODD_QUERIES):
        rows.append(("odd", None, None, "search", t - timedelta(minutes=k), text))
        rows.append(("odd", f"never-seen-{k}", f"new-cat-{k}", "view", t - timedelta(minutes=k, microseconds=k)))
    rows += [("busy", f"b{k % 7}", f"c{k % 3}", ["view", "cart", "buy"][k % 3],
              T0 - timedelta(seconds=37 * k + 0.5)) for k in range(160)]
    rows += [("late", "it0", "c0", "view", T0 + timedelta(seconds=1))]        # after T0: no row at T0
    rows += [("exact", "it0", "c0", "cart", T0), ("exact", "it0", "c0", "view", T0 - timedelta(days=3))]
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    tmp = tmp_path_factory.mktemp("fast")
    generate(SynthConfig(users=300, days=5, seed=11, n_items=400, n_categories=12, search_rate=0.4,
                         start=START.date().isoformat()), tmp / "events.parquet")
    with Store(tmp / "store.duckdb") as opened:
        ingest_file(opened, tmp / "events.parquet", dataset=DATASET, layout="generic",
                    column_map={c: c for c in ("user_id", "item_id", "category", "behavior", "ts", "query")})
        add_events(opened, DATASET, planted_rows())
        yield opened


def all_events(store: Store) -> pd.DataFrame:
    return store.df("SELECT user_id, ts, behavior::VARCHAR AS behavior, item_id, category, query, price "
                    "FROM events WHERE dataset = ? ORDER BY random()", [DATASET])


def assert_same(fast: SequenceBatch, sql: SequenceBatch) -> None:
    pd.testing.assert_frame_equal(fast.keys, sql.keys)
    for name in SequenceBatch.ARRAYS:
        a, b = getattr(fast, name), getattr(sql, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), (name, np.argwhere(a != b)[:5])
    assert fast.target_category is None and sql.target_category is None


@pytest.fixture(scope="module")
def vocabs(store) -> dict[str, Vocab]:
    """A small vocabulary with hash buckets and fine gaps; one without buckets (tail ids are OOV)."""
    small = build_vocab(store, DATASET, START + timedelta(days=2), max_items=60, max_categories=5,
                        item_buckets=37, category_buckets=3, query_buckets=97, gap_buckets=40, gap_steps=4)
    bare = build_vocab(store, DATASET, START + timedelta(days=2), max_items=20, max_categories=4,
                       item_buckets=0, category_buckets=0, query_buckets=11, gap_buckets=8, gap_steps=1)
    return {"buckets": small, "bare": bare}


@pytest.mark.parametrize("lookback", [None, "1d", "6h"])
@pytest.mark.parametrize("vocab_name", ["buckets", "bare"])
def test_fast_path_equals_sql_path_at_each_cutoff(store, vocabs, lookback, vocab_name):
    vocab, events = vocabs[vocab_name], all_events(store)
    for max_len in (100, 9):
        spec = LabelSpec(horizon="1d", lookback=lookback, max_len=max_len)
        for cutoff in CUTOFFS:
            examples = scoring_examples(store, DATASET, spec, cutoff)
            assert len(examples) > 10
            sql = build_sequences(store, DATASET, examples, vocab, spec, chunk_users=97)
            assert_same(sequences_from_events(events, cutoff, vocab, spec), sql)
            assert ((sql.behavior // BEHAVIOR_STRIDE & TOP_CATEGORY) > 0).sum() > 10   # the fourth bit is compared too
    # the planted users are there, full, tied and truncated as the SQL has them
    at_t0 = sequences_from_events(events, T0, vocab, LabelSpec(max_len=9, lookback=lookback))
    users = list(at_t0.keys["user_id"])
    assert {"tie", "odd", "busy", "exact"} <= set(users) and "late" not in users
    assert at_t0.mask[users.index("busy")].all()


def test_per_user_cutoffs_equal_sql_rows_at_mixed_cutoffs(store, vocabs):
    vocab, events = vocabs["buckets"], all_events(store)
    spec = LabelSpec(horizon="1d", lookback="2d", max_len=30)
    users = sorted(events["user_id"].unique())
    chosen = {u: CUTOFFS[i % len(CUTOFFS)] for i, u in enumerate(users) if i % 5}   # every 5th: not asked
    chosen["late"] = T0                                                              # nothing by T0: no row
    parts = []
    for cutoff in CUTOFFS:
        rows = scoring_examples(store, DATASET, spec, cutoff)
        parts.append(rows[rows["user_id"].map(chosen).eq(cutoff)])
    examples = pd.concat(parts, ignore_index=True)
    fast = sequences_from_events(events, chosen, vocab, spec)
    assert_same(fast, build_sequences(store, DATASET, examples, vocab, spec))
    assert len(fast) == len(examples) > 100 and "late" not in set(fast.keys["user_id"])


def test_query_tokens_mirror_the_sql_tokeniser(store):
    """The Python tokeniser against DuckDB's own on the odd texts (case mapping, separators, digits)."""
    for text in [*ODD_QUERIES, "Ωμέγα ΣΟΦΟΣ", "ǅemal ﬁne Ⅻ"]:
        (sql,) = store.fetchone("SELECT list_filter(regexp_split_to_array(lower(?), '[^\\pL\\pN]+'), "
                                "lambda t: t <> '')", [text])
        assert query_tokens(text, 1000) == [1 + stable_hash(t) % 1000 for t in sql[:QUERY_TOKENS]], text


def test_no_rows_bad_scope_and_bad_behaviour():
    spec = LabelSpec(max_len=5)
    frame = pd.DataFrame({"user_id": ["u"], "ts": [T0], "behavior": ["view"], "item_id": ["i"], "category": ["c"]})
    empty = sequences_from_events(frame, T0 - timedelta(seconds=1), Vocab(), spec)
    assert len(empty) == 0 and empty.behavior.shape == (0, 5) and list(empty.keys.columns) == [
        "user_id", "cutoff", "label", "split"]
    one = sequences_from_events(frame, {"u": T0, "other": T0}, Vocab(), spec)   # no query column: no tokens
    assert len(one) == 1 and one.mask[0].tolist() == [False] * 4 + [True] and not one.query.any()
    with pytest.raises(DataError, match="scope 'any'"):
        sequences_from_events(frame, T0, Vocab(), LabelSpec(scope="category"))
    with pytest.raises(DataError, match="unknown behaviour"):
        sequences_from_events(frame.assign(behavior="click"), T0, Vocab(), spec)
    with pytest.raises(DataError, match="lack column"):
        sequences_from_events(frame.drop(columns="category"), T0, Vocab(), spec)


def test_demo_model_scores_the_same_through_both_paths(store):
    model = load_model(ROOT / "models" / "saved" / "demo")
    events = all_events(store)
    examples = scoring_examples(store, DATASET, model.spec, T0)
    sql = build_sequences(store, DATASET, examples, model.vocab, model.spec)
    fast = sequences_from_events(events, T0, model.vocab, model.spec)
    assert_same(fast, sql)
    a = model.predict(fast, engine="torch")
    b = model.predict(sql, engine="torch")
    assert len(a) == len(examples) and np.max(np.abs(a - b)) <= 1e-7
