"""core/synth.py: determinism, chunking, realism, and that the written truth is the real one."""
from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.cli import main as cli_main
from core.errors import DataError
from core.modeling import synth
from core.modeling.synth import SynthConfig, generate

SMALL = {"users": 600, "days": 4, "seed": 3}
NAMES = ["user_id", "item_id", "category", "behavior", "ts"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_taobao(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, header=None, names=NAMES)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """One mid-size log (taobao layout) with its truth, shared by the statistical tests."""
    out = tmp_path_factory.mktemp("synth")
    config = SynthConfig(users=4000, days=6, seed=11)
    summary = generate(config, out / "events.csv", truth_out=out / "truth.parquet")
    return config, summary, read_taobao(out / "events.csv"), pd.read_parquet(out / "truth.parquet")


# -- determinism and chunking ------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = generate(SynthConfig(**SMALL), tmp_path / "a.csv.gz", truth_out=tmp_path / "ta.csv")
    b = generate(SynthConfig(**SMALL), tmp_path / "b.csv.gz", truth_out=tmp_path / "tb.csv")
    generate(SynthConfig(**{**SMALL, "seed": 4}), tmp_path / "c.csv.gz")
    assert a.events == b.events > 0
    assert sha(tmp_path / "a.csv.gz") == sha(tmp_path / "b.csv.gz")
    assert sha(tmp_path / "ta.csv") == sha(tmp_path / "tb.csv")
    assert sha(tmp_path / "a.csv.gz") != sha(tmp_path / "c.csv.gz")
    # gzip output is plain gzip of the plain CSV
    generate(SynthConfig(**SMALL), tmp_path / "a.csv")
    assert gzip.decompress((tmp_path / "a.csv.gz").read_bytes()) == (tmp_path / "a.csv").read_bytes()


def test_chunked_output_equals_unchunked(tmp_path):
    users = 2 * synth.BLOCK_USERS + 300          # three blocks, the last one partial
    small = SynthConfig(users=users, days=2, seed=5, chunk_users=1)       # one block per chunk
    large = SynthConfig(users=users, days=2, seed=5, chunk_users=10**7)   # everything in one chunk
    calls = []
    generate(small, tmp_path / "small.csv", truth_out=tmp_path / "ts.parquet",
             progress=lambda done, total, msg: calls.append((done, total)))
    generate(large, tmp_path / "large.csv", truth_out=tmp_path / "tl.parquet")
    assert sha(tmp_path / "small.csv") == sha(tmp_path / "large.csv")
    assert pd.read_parquet(tmp_path / "ts.parquet").equals(pd.read_parquet(tmp_path / "tl.parquet"))
    assert calls[0] == (0, users) and calls[-1] == (users, users) and len(calls) == 4


def read_gzip_csv(path: Path) -> pd.DataFrame:
    """A gzip CSV as text cells: what the file says, whatever compressor wrote it."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_demo_dataset_regenerates_the_committed_files(tmp_path):
    """The shipped demo log (the demo models were trained on it) is what the generator writes.

    Compared after decompression, so another zlib build (zlib-ng, another level of the same
    algorithm) cannot fail the test while any changed event does. The events must match byte for
    byte. In the truth file only ``p_buy`` may differ, by a few units in the last place: numpy's
    ``exp`` rounds differently on CPUs with and without AVX-512 (its SIMD kernels are not correctly
    rounded), and the committed file was written on one with it. Every other cell must match exactly.
    """
    committed = Path(__file__).resolve().parents[1] / "sample_data" / "demo"
    path = synth.demo_dataset(tmp_path)
    assert path == tmp_path / "events.csv.gz"
    for name in ("events.csv.gz", "truth.csv.gz"):
        assert (committed / name).exists(), f"sample_data/demo/{name} is missing: see sample_data/README.md"
    events = gzip.decompress((tmp_path / "events.csv.gz").read_bytes())
    assert hashlib.sha256(events).hexdigest() == hashlib.sha256(
        gzip.decompress((committed / "events.csv.gz").read_bytes())).hexdigest(), "events differ from a regeneration"
    assert events.count(b"\n") == 174_368                     # the row count sample_data/README.md states
    new, old = read_gzip_csv(tmp_path / "truth.csv.gz"), read_gzip_csv(committed / "truth.csv.gz")
    assert list(new.columns) == list(old.columns) and len(new) == len(old) == 3000 * 8
    exact = [c for c in old.columns if c != "p_buy"]
    pd.testing.assert_frame_equal(new[exact], old[exact])
    np.testing.assert_allclose(new["p_buy"].astype(float), old["p_buy"].astype(float), rtol=1e-12, atol=0)
    assert (committed / "events.csv.gz").stat().st_size < 4_000_000


# -- file layouts ------------------------------------------------------------------------------
def test_taobao_output_is_a_valid_five_column_log(tmp_path):
    config = SynthConfig(**SMALL)
    summary = generate(config, tmp_path / "e.csv")
    with open(tmp_path / "e.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == summary.events
    assert {len(r) for r in rows} == {5}
    assert not rows[0][0].isalpha()                     # no header
    frame = read_taobao(tmp_path / "e.csv")
    for col in ("user_id", "item_id", "category", "ts"):
        assert pd.api.types.is_integer_dtype(frame[col]), col
    assert set(frame.behavior) == {"pv", "cart", "fav", "buy"}
    start = int(config.start_dt.timestamp())
    assert frame.ts.min() > start and frame.ts.max() <= start + config.windows * config.horizon_seconds
    assert frame.user_id.between(1, config.users).all()
    # sorted by user, then time
    assert (np.diff(frame.user_id) >= 0).all()
    same_user = np.diff(frame.user_id) == 0
    assert (np.diff(frame.ts)[same_user] >= 0).all()
    assert summary.buys == int((frame.behavior == "buy").sum())
    assert not frame.duplicated().any()                 # a loader would drop them; the truth would drift


def test_parquet_has_canonical_columns_and_the_same_events_plus_searches(tmp_path):
    config = SynthConfig(**SMALL)
    generate(config, tmp_path / "e.parquet")
    generate(config, tmp_path / "e.csv")
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == ["user_id", "item_id", "category", "behavior", "ts", "session_id",
                                  "price", "query"]
    frame = table.to_pandas()
    assert set(frame.behavior) == {"view", "cart", "fav", "buy", "search"}
    search = frame[frame.behavior == "search"]
    assert len(search) > 0 and search["query"].notna().all() and search["item_id"].isna().all()
    rest = frame[frame.behavior != "search"]
    assert rest["query"].isna().all() and (rest.price > 0).all() and rest.session_id.notna().all()
    taobao = read_taobao(tmp_path / "e.csv")
    assert len(rest) == len(taobao)
    mapped = rest.behavior.map({"view": "pv", "cart": "cart", "fav": "fav", "buy": "buy"})
    assert (mapped.to_numpy() == taobao.behavior.to_numpy()).all()
    assert (rest.user_id.astype(int).to_numpy() == taobao.user_id.to_numpy()).all()
    assert (rest.item_id.astype(int).to_numpy() == taobao.item_id.to_numpy()).all()
    ts = (rest.ts - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    assert (ts.to_numpy() == taobao.ts.to_numpy()).all()
    # a session is one user's burst: its events sit minutes apart, not days
    spans = rest.groupby("session_id").ts.agg(lambda s: (s.max() - s.min()).total_seconds())
    assert spans.quantile(0.9) < 3 * 3600


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(DataError, match="extension"):
        generate(SynthConfig(**SMALL), tmp_path / "e.txt")
    with pytest.raises(DataError, match="users"):
        SynthConfig(users=0, days=1)
    with pytest.raises(DataError, match="horizon"):
        SynthConfig(users=5, days=0.5, horizon="1d")


def test_cli_synth_writes_log_and_truth(tmp_path, capsys):
    rc = cli_main(["synth", "--users", "200", "--days", "3", "--seed", "2", "--out",
                   str(tmp_path / "log.csv.gz"), "--truth", str(tmp_path / "truth.csv")])
    assert rc == 0
    summary = generate(SynthConfig(users=200, days=3, seed=2), tmp_path / "api.csv.gz",
                       truth_out=tmp_path / "api.csv")
    assert f"wrote {summary.events:,} events of 200 users" in capsys.readouterr().out
    # the CLI writes what the library writes for the same arguments
    assert sha(tmp_path / "log.csv.gz") == sha(tmp_path / "api.csv.gz")
    assert sha(tmp_path / "truth.csv") == sha(tmp_path / "api.csv")
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert list(truth.columns) == [f.name for f in synth._TRUTH_SCHEMA]
    assert len(truth) == 200 * 2 and sorted(truth.cutoff.unique()) == ["2017-11-26 00:00:00", "2017-11-27 00:00:00"]


# -- realism ----------------------------------------------------------------------------------
def test_behaviour_mix_is_near_taobao(medium):
    _, summary, events, _ = medium
    share = events.behavior.value_counts(normalize=True)
    assert 0.86 < share["pv"] < 0.92
    assert 0.04 < share["cart"] < 0.07
    assert 0.02 < share["fav"] < 0.04
    assert 0.012 < share["buy"] < 0.03
    assert summary.behaviors["pv"] == int((events.behavior == "pv").sum())


def test_diurnal_cycle_peaks_in_the_local_evening(medium):
    _, _, events, _ = medium
    local_hour = ((events.ts + 8 * 3600) // 3600) % 24
    share = local_hour.value_counts(normalize=True)
    evening = share.loc[[19, 20, 21, 22]].sum()
    night = share.loc[[2, 3, 4, 5]].sum()
    assert evening > 3 * night
    assert local_hour.mode()[0] in (20, 21, 22)


def test_users_have_category_tastes_and_popular_items(medium):
    _, _, events, _ = medium
    per_user = events.groupby("user_id").category
    top3 = per_user.apply(lambda c: c.value_counts().head(3).sum() / len(c))
    assert top3[per_user.size() >= 30].median() > 0.6
    item_counts = events.item_id.value_counts()
    assert item_counts.head(len(item_counts) // 100).sum() > 0.1 * len(events)   # top 1% of items
    # carts turn into buys: most bought items were carted or viewed by the buyer before
    buys = events[events.behavior == "buy"]
    seen = events[events.behavior.isin(["pv", "cart"])].merge(buys[["user_id", "item_id", "ts"]],
                                                              on=["user_id", "item_id"], suffixes=("", "_b"))
    seen = seen[seen.ts <= seen.ts_b]
    assert len(seen.drop_duplicates(["user_id", "item_id"])) > 0.9 * len(buys.drop_duplicates(["user_id", "item_id"]))


# -- the truth ----------------------------------------------------------------------------------
def _labels(events: pd.DataFrame, truth: pd.DataFrame, horizon_s: int) -> np.ndarray:
    cut = ((truth.cutoff - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")).to_numpy()
    buys = events[events.behavior == "buy"][["user_id", "ts"]]
    rows = pd.DataFrame({"user_id": truth.user_id.astype(int).to_numpy(), "cut": cut,
                         "row": np.arange(len(truth))})
    hit = rows.merge(buys, on="user_id")
    hit = hit[(hit.ts > hit.cut) & (hit.ts <= hit.cut + horizon_s)]
    label = np.zeros(len(truth), np.int8)
    label[hit.row.unique()] = 1
    return label


def test_truth_label_is_the_buy_in_the_window(medium):
    config, summary, events, truth = medium
    assert len(truth) == config.users * (config.windows - 1)
    assert sorted(truth.cutoff.unique()) == [pd.Timestamp(c.replace(tzinfo=None))
                                             for c in synth.truth_cutoffs(config)]
    label = _labels(events, truth, config.horizon_seconds)
    assert (label == truth.bought.to_numpy()).all()
    n_before = [int((events[events.user_id == int(u)].ts <= (c - pd.Timestamp("1970-01-01")).total_seconds()).sum())
                for u, c in truth.sample(50, random_state=0)[["user_id", "cutoff"]].itertuples(index=False)]
    assert n_before == truth.sample(50, random_state=0).n_events.tolist()
    assert truth.p_buy.between(0, 1).all()
    assert abs(summary.mean_p - truth[truth.n_events > 0].p_buy.mean()) < 1e-9


def test_buy_rate_matches_mean_probability_and_deciles_are_ordered(medium):
    _, _, _, truth = medium
    seen = truth[truth.n_events > 0]
    p, y = seen.p_buy.to_numpy(), seen.bought.to_numpy()
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(y.mean() - p.mean()) < 4 * se
    deciles = pd.qcut(p, 10, labels=False, duplicates="drop")
    rate = pd.Series(y).groupby(deciles).mean()
    mean_p = pd.Series(p).groupby(deciles).mean()
    assert rate.iloc[-1] > 4 * rate.iloc[0]
    assert rate.corr(mean_p, method="spearman") > 0.9
    # per decile, the observed rate agrees with the mean probability (calibrated by construction)
    counts = pd.Series(y).groupby(deciles).size()
    assert (np.abs(rate - mean_p) < 4 * np.sqrt(mean_p * (1 - mean_p) / counts) + 0.01).all()


def test_signal_strength_is_learnable_but_not_trivial(medium):
    from sklearn.metrics import roc_auc_score

    _, _, _, truth = medium
    seen = truth[truth.n_events > 0]
    bayes = roc_auc_score(seen.bought, seen.p_buy)
    assert 0.8 < bayes < 0.95
    # each planted signal carries information on its own
    for column in ("c_cart", "c_match", "c_focus", "c_recency", "c_buyer"):
        assert roc_auc_score(seen.bought, seen[column]) > 0.55, column
    # a buy after a live open cart is that cart's item
    assert set(seen.intent_kind) == {"none", "cart", "focus"}


def test_planted_purchase_lands_in_the_intent_category(medium):
    config, _, events, truth = medium
    rows = truth[(truth.bought == 1) & truth.intent_category.notna()].head(300)
    start_of = (rows.cutoff - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    merged = rows.assign(cut=start_of.to_numpy(), user_id=rows.user_id.astype(int)).merge(
        events[events.behavior == "buy"], on="user_id")
    merged = merged[(merged.ts > merged.cut) & (merged.ts <= merged.cut + config.horizon_seconds)]
    first = merged.sort_values("ts").groupby(["user_id", "cut"]).head(1)
    assert (first.category.astype(str) == first.intent_category.astype(str)).mean() == 1.0
    carts = first[first.intent_kind == "cart"]
    assert len(carts) > 20 and (carts.item_id.astype(str) == carts.intent_item.astype(str)).all()


def _reference_p(events: pd.DataFrame, user: int, cutoff: int, horizon_s: int) -> float:
    """p_buy recomputed from the written log alone, following the module docstring."""
    hist = events[(events.user_id == user) & (events.ts <= cutoff)]
    carts = hist[hist.behavior == "cart"].tail(synth.CART_SLOTS)
    buys = hist[hist.behavior == "buy"]
    weights, newest = [], None
    for cart in carts.itertuples():
        if ((buys.item_id == cart.item_id) & (buys.ts >= cart.ts)).any():
            continue
        weights.append(np.exp(-(cutoff - cart.ts) / 3600 / synth.CART_HALF_LIFE_H))
        newest = cart
    c_cart = synth.W_CART * min(sum(weights), 2.0)
    views = hist[hist.behavior == "pv"].tail(synth.VIEW_SLOTS)
    recent = views[views.ts > cutoff - 86400]
    modal_count, modal_cat = 0, None
    if len(recent):
        stats = recent.groupby("category").ts.agg(["size", "max"]).sort_values(["size", "max"])
        modal_count, modal_cat = int(stats["size"].iloc[-1]), stats.index[-1]
    c_focus = synth.W_FOCUS * (modal_count / len(recent) if len(recent) >= 3 else 0.0)
    c_match = synth.W_MATCH * float(newest is not None and (cutoff - newest.ts) < 48 * 3600
                                    and modal_count >= 2 and newest.category == modal_cat)
    c_recency = synth.W_RECENCY * np.exp(-(cutoff - hist.ts.max()) / 3600 / synth.RECENCY_SCALE_H) if len(hist) else 0.0
    c_buyer = synth.W_BUYER * min(len(buys), 3) / 3
    logit = synth.BASE_LOGIT + np.log(horizon_s / 86400) + c_cart + c_match + c_focus + c_recency + c_buyer
    return 1 / (1 + np.exp(-logit))


def test_truth_probability_is_a_function_of_the_visible_history(medium):
    """Recomputing p_buy from the written log gives the written p_buy: the truth hides nothing."""
    config, _, events, truth = medium
    sample = truth[truth.n_events > 0].sample(150, random_state=1)
    cut = (sample.cutoff - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    ref = [_reference_p(events, int(u), int(c), config.horizon_seconds)
           for u, c in zip(sample.user_id, cut, strict=True)]
    close = np.isclose(ref, sample.p_buy.to_numpy(), rtol=1e-5, atol=1e-7)
    assert close.mean() >= 0.98, sample[~close].head().to_string()   # ties at one second may differ


def test_short_horizon_grid(tmp_path):
    config = SynthConfig(users=300, days=0.5, seed=2, horizon="30min")
    generate(config, tmp_path / "e.csv", truth_out=tmp_path / "t.parquet")
    truth = pd.read_parquet(tmp_path / "t.parquet")
    assert config.windows == 24 and truth.cutoff.nunique() == 23
    events = read_taobao(tmp_path / "e.csv")
    assert (_labels(events, truth, 1800) == truth.bought.to_numpy()).all()
    assert truth.p_buy.mean() < 0.1                     # a half-hour window holds few buys


def test_planted_terms_find_the_term_a_model_does_not_read(medium):
    """A score built from the truth without its "cart in the browsed category" term: that term's
    weight share is 0 and restoring it gives back the Bayes AUC; the other terms are read whole."""
    from sklearn.metrics import roc_auc_score

    config, _, _, truth = medium
    logit = np.log(truth["p_buy"] / (1 - truth["p_buy"]))
    blind = 1 / (1 + np.exp(-(logit - config.intent_strength * truth["c_match"])))
    rows = truth.assign(label=truth["bought"], score=blind)[["user_id", "cutoff", "label", "score"]]
    report = synth.planted_terms(rows, truth)
    assert list(report.index) == list(synth.TERMS)
    assert abs(report.loc["c_match", "weight_share"]) < 0.01
    others = report.drop(index="c_match")
    np.testing.assert_allclose(others["weight_share"], 1.0, atol=0.01)
    bayes = roc_auc_score(truth["bought"], truth["p_buy"])
    own = roc_auc_score(truth["bought"], blind)
    assert report["roc_auc"].tolist() == pytest.approx([own] * 5)
    assert own < bayes - 0.005                              # the term matters on this log ...
    assert report.loc["c_match", "restored_roc_auc"] == pytest.approx(bayes, abs=0.002)   # ... and returns
    assert (others["restored_roc_auc"] < report.loc["c_match", "restored_roc_auc"]).all()
    with pytest.raises(ValueError, match="rows have no truth"):
        synth.planted_terms(rows.assign(cutoff=pd.Timestamp("2001-01-01")), truth)
