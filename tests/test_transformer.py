"""IntentTransformer: shapes, attention, padding invariance, determinism, Captum-friendliness, and the
event-statistics path (soft-window counts computed from the event tensors)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.modeling.sequences import SequenceBatch
from models.transformer import IntentTransformer, TransformerConfig, state_shapes

torch.set_num_threads(1)

N_ITEMS, N_CATS, N_GAPS, N_QUERY, Q = 50, 12, 17, 33, 3


def planted_batch(n: int, L: int = 20, *, seed: int = 0, scope: str = "any",
                  min_events: int = 1) -> SequenceBatch:
    """Random left-padded sequences; label 1 when a cart (code 2) is among the newest 3 events
    (scope "any"), or when the newest 3 events hold a cart in the target category ("category")."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_events, L + 1, size=n)
    mask = np.arange(L)[None, :] >= (L - lengths)[:, None]                 # left padded
    behavior = np.where(rng.random((n, L)) < 0.15, 2, rng.choice([1, 3, 5, 6], size=(n, L)))
    item = rng.integers(2, N_ITEMS, size=(n, L))
    category = rng.integers(2, N_CATS, size=(n, L))
    gap = np.sort(rng.integers(1, N_GAPS, size=(n, L)), axis=1)[:, ::-1].copy()
    hour = rng.integers(1, 25, size=(n, L))
    query = np.where(rng.random((n, L, Q)) < 0.3, rng.integers(1, N_QUERY, size=(n, L, Q)), 0)
    query[behavior != 6] = 0
    arrays = {"behavior": behavior, "item": item, "category": category, "gap": gap, "hour": hour}
    arrays = {k: np.where(mask, v, 0).astype(np.int64) for k, v in arrays.items()}
    query = np.where(mask[:, :, None], query, 0).astype(np.int64)
    recent_cart = (arrays["behavior"][:, -3:] == 2)
    target = None
    if scope == "category":
        # half the rows target a category of a recent event, half a random one
        pick = np.where(rng.random(n) < 0.5, arrays["category"][:, -1], rng.integers(2, N_CATS, n))
        target = pick.astype(np.int64)
        label = (recent_cart & (arrays["category"][:, -3:] == target[:, None])).any(axis=1)
    else:
        label = recent_cart.any(axis=1)
    keys = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)],
                         "cutoff": pd.Timestamp("2017-12-01"), "label": label.astype(int),
                         "split": "train"})
    return SequenceBatch(keys=keys, query=query, mask=mask, target_category=target, **arrays)


def tiny_config(L: int = 20, scope: str = "any", **kw) -> TransformerConfig:
    sizes = dict(d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.1)
    sizes.update(kw)
    return TransformerConfig(n_behaviors=7, n_items=N_ITEMS, n_categories=N_CATS, n_gaps=N_GAPS,
                             n_hours=25, n_query_buckets=N_QUERY, max_len=L, scope=scope, **sizes)


def _model(scope: str = "any", seed: int = 0, **kw) -> IntentTransformer:
    torch.manual_seed(seed)
    return IntentTransformer(tiny_config(scope=scope, **kw)).eval()


@pytest.mark.parametrize("event_stats", [0, 6])
@pytest.mark.parametrize("scope", ["any", "category"])
def test_shapes_and_attention_rows(scope, event_stats):
    batch = planted_batch(8, scope=scope)
    model = _model(scope, event_stats=event_stats)
    with torch.no_grad():
        logits, att = model(**batch.tensors(), return_attention=True)
    S = model.n_special
    assert logits.shape == (8,)
    assert len(att) == 2
    for layer in att:
        assert layer.shape == (8, 4, S + 20, S + 20)
        torch.testing.assert_close(layer.sum(-1), torch.ones(8, 4, S + 20))
        # padded keys get exactly zero weight
        padded = ~torch.from_numpy(batch.mask)                              # (B, L)
        weights_on_pad = layer[:, :, :, S:].permute(0, 1, 3, 2)[padded.unsqueeze(1).expand(-1, 4, -1)]
        assert padded.any() and float(weights_on_pad.abs().max()) == 0.0
    assert model.param_count() == sum(p.numel() for p in model.parameters())


def test_fast_and_manual_attention_agree():
    batch = planted_batch(16)
    model = _model()
    fast = model(**batch.tensors())
    manual, _ = model(**batch.tensors(), return_attention=True)
    torch.testing.assert_close(fast, manual, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("event_stats", [0, 6])
def test_padding_does_not_change_the_score(event_stats):
    batch = planted_batch(10, L=12)
    model = _model(event_stats=event_stats)                # max_len 20 > 12
    extra = 8
    padded = {}
    for name, value in batch.tensors().items():
        pad = torch.zeros((value.shape[0], extra, *value.shape[2:]), dtype=value.dtype)
        padded[name] = torch.cat([pad, value], dim=1)      # extra LEFT padding: L 12 -> 20
    longer = padded["behavior"].shape[1] + 10              # beyond max_len: clamped positions
    more = {k: torch.cat([torch.zeros((v.shape[0], 10, *v.shape[2:]), dtype=v.dtype), v], 1)
            for k, v in padded.items()}
    assert more["behavior"].shape[1] == longer
    base = model(**batch.tensors())
    torch.testing.assert_close(model(**padded), base, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(**more), base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("event_stats", [0, 6])
def test_padding_invariance_category_scope(event_stats):
    batch = planted_batch(6, L=10, scope="category")
    model = _model("category", event_stats=event_stats)
    t = batch.tensors()
    padded = {k: (torch.cat([torch.zeros((v.shape[0], 5, *v.shape[2:]), dtype=v.dtype), v], 1)
                  if k != "target_category" else v) for k, v in t.items()}
    torch.testing.assert_close(model(**padded), model(**t), atol=1e-5, rtol=0)


@pytest.mark.parametrize("event_stats", [0, 6])
def test_fully_padded_rows_are_finite(event_stats):
    batch = planted_batch(4)
    t = batch.tensors()
    for name in ("behavior", "item", "category", "gap", "hour", "query"):
        t[name] = torch.zeros_like(t[name])
    t["mask"] = torch.zeros_like(t["mask"])
    model = _model(event_stats=event_stats)
    logits, att = model(**t, return_attention=True)
    assert torch.isfinite(logits).all() and all(torch.isfinite(a).all() for a in att)
    model.train()
    assert torch.isfinite(model(**t)).all()


def test_same_seed_same_weights_and_scores():
    batch = planted_batch(5)
    a, b, c = _model(seed=3), _model(seed=3), _model(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert torch.equal(a(**batch.tensors()), b(**batch.tensors()))
    assert not torch.equal(a(**batch.tensors()), c(**batch.tensors()))


def test_query_tokens_are_averaged_ignoring_padding():
    batch = planted_batch(3)
    model = _model()
    t = batch.tensors()
    t["query"] = torch.zeros_like(t["query"])
    t["query"][:, -1, 0] = 5
    one = model(**t)
    t["query"][:, -1, 1] = 5                                # same token twice: same mean
    torch.testing.assert_close(model(**t), one)
    t["query"][:, -1, 1] = 7                                # another token changes it
    assert not torch.allclose(model(**t), one)


def test_category_scope_requires_target():
    batch = planted_batch(3)
    with pytest.raises(ValueError, match="target_category"):
        _model("category")(**batch.tensors())


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="n_layers"):
        tiny_config(n_layers=0)
    with pytest.raises(ValueError, match="d_model"):
        tiny_config(d_model=30)
    cfg = tiny_config()
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.filterwarnings("ignore:Multiple layers provided")   # independent embedding layers
@pytest.mark.parametrize("event_stats", [0, 6])
@pytest.mark.parametrize("scope", ["any", "category"])
def test_captum_layer_integrated_gradients_attaches_to_embeddings(scope, event_stats):
    from captum.attr import LayerIntegratedGradients

    batch = planted_batch(2, scope=scope)
    model = _model(scope, event_stats=event_stats)
    t = batch.tensors()
    names = ("behavior", "item", "category", "gap", "hour", "query")
    inputs = tuple(t[n] for n in names)
    extra = (t["mask"], t.get("target_category"))
    layers = [model.behavior_emb, model.item_emb, model.category_emb, model.gap_emb,
              model.hour_emb, model.query_emb]
    if event_stats:
        layers.append(model.window_emb)                   # the statistics' per-event weights
        # a trained-like path (the initial one adds almost nothing to the logit)
        with torch.no_grad():
            model.stats_proj[0].weight.normal_(0.0, 0.5)
    lig = LayerIntegratedGradients(lambda *args: model(*args), layers)
    # baseline: every id 0 (padding embeddings are zero vectors); mask and target stay
    baselines = tuple(torch.zeros_like(x) for x in inputs)
    attrs, delta = lig.attribute(inputs, baselines=baselines, additional_forward_args=extra,
                                 n_steps=64, return_convergence_delta=True)
    assert len(attrs) == 6 + (event_stats > 0) and attrs[2].shape == (2, 20, 32)
    assert attrs[5].shape == (2, 20, Q, 32)
    if event_stats:
        assert attrs[6].shape == (2, 20, event_stats)
        stats_part = attrs[6].sum(dim=-1)                                   # (B, L) per event
        assert float(stats_part.abs().sum()) > 1e-3                         # the path is attributed...
        assert float(stats_part[~t["mask"]].abs().max()) == 0.0             # ...to real events only
    total = sum(a.sum(dim=tuple(range(1, a.dim()))) for a in attrs)
    with torch.no_grad():
        gap = model(*inputs, *extra) - model(*baselines, *extra)
    torch.testing.assert_close(total.detach(), gap, atol=float(delta.abs().max()) + 1e-4, rtol=0)


def _config(**changes) -> TransformerConfig:
    """tiny_config() with any field replaced (the constructor runs its checks)."""
    return TransformerConfig(**{**tiny_config().to_dict(), **changes})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("n_items", 1, "TransformerConfig.n_items must be an int in [2, 2000000]; got 1."),
    ("n_items", 2_000_001, "TransformerConfig.n_items must be an int in [2, 2000000]; got 2000001."),
    ("n_categories", "12", "TransformerConfig.n_categories must be an int in [2, 2000000]; got '12'."),
    ("n_query_buckets", 10**12, "TransformerConfig.n_query_buckets must be an int in [2, 2000000]; "
                                "got 1000000000000."),
    ("n_behaviors", True, "TransformerConfig.n_behaviors must be an int in [2, 4096]; got True."),
    ("n_gaps", 5000, "TransformerConfig.n_gaps must be an int in [2, 4096]; got 5000."),
    ("n_hours", 1.5, "TransformerConfig.n_hours must be an int in [2, 4096]; got 1.5."),
    ("max_len", 0, "TransformerConfig.max_len must be an int in [1, 4096]; got 0."),
    ("n_heads", 0, "TransformerConfig.n_heads must be an int in [1, 64]; got 0."),
    ("n_heads", -4, "TransformerConfig.n_heads must be an int in [1, 64]; got -4."),
    ("d_model", 30, "TransformerConfig.d_model must be divisible by n_heads (4); got 30."),
    ("d_model", 4, "TransformerConfig.d_model must be an int in [8, 1024]; got 4."),
    ("d_model", 2048, "TransformerConfig.d_model must be an int in [8, 1024]; got 2048."),
    ("n_layers", 0, "TransformerConfig.n_layers must be an int in [1, 4]; got 0."),
    ("n_layers", 5, "TransformerConfig.n_layers must be an int in [1, 4]; got 5."),
    ("d_ff", 15, "TransformerConfig.d_ff must be an int in [16, 8192]; got 15."),
    ("d_ff", 8193, "TransformerConfig.d_ff must be an int in [16, 8192]; got 8193."),
    ("dropout", 0.5, "TransformerConfig.dropout must be a float in [0, 0.5); got 0.5."),
    ("dropout", -0.1, "TransformerConfig.dropout must be a float in [0, 0.5); got -0.1."),
    ("dropout", "0.1", "TransformerConfig.dropout must be a float in [0, 0.5); got '0.1'."),
    ("scope", "all", "TransformerConfig.scope must be one of ('any', 'category'); got 'all'."),
    ("event_stats", -1, "TransformerConfig.event_stats must be an int in [0, 64]; got -1."),
    ("event_stats", 65, "TransformerConfig.event_stats must be an int in [0, 64]; got 65."),
    ("event_stats", True, "TransformerConfig.event_stats must be an int in [0, 64]; got True."),
    ("event_stats", 4.0, "TransformerConfig.event_stats must be an int in [0, 64]; got 4.0."),
    ("id_dropout", 1.0, "TransformerConfig.id_dropout must be a float in [0, 1); got 1.0."),
    ("id_dropout", -0.2, "TransformerConfig.id_dropout must be a float in [0, 1); got -0.2."),
    ("id_dropout", "0.5", "TransformerConfig.id_dropout must be a float in [0, 1); got '0.5'."),
    ("stat_totals", 7, "TransformerConfig.stat_totals must be an int in [0, 6]; got 7."),
    ("stat_totals", -1, "TransformerConfig.stat_totals must be an int in [0, 6]; got -1."),
    ("stat_latest", True, "TransformerConfig.stat_latest must be a bool, and True only with stat_totals > 0; "
                          "got True with stat_totals 0."),
    ("stat_latest", 1, "TransformerConfig.stat_latest must be a bool, and True only with stat_totals > 0; "
                       "got 1 with stat_totals 0."),
    ("seq_dropout", 1, "TransformerConfig.seq_dropout must be a float in [0, 1); got 1."),
    ("seq_dropout", False, "TransformerConfig.seq_dropout must be a float in [0, 1); got False."),
])
def test_every_config_field_is_checked_with_its_rule_and_value(field, value, message):
    with pytest.raises(ValueError) as info:
        _config(**{field: value})
    assert str(info.value) == message


def test_config_accepts_the_bounds_and_reads_back_what_it_wrote():
    edge = _config(n_heads=1, d_model=8, d_ff=4, n_layers=4, dropout=0.0, max_len=1, n_items=2)
    assert (edge.n_heads, edge.d_model, edge.d_ff, edge.max_len, edge.n_items) == (1, 8, 4, 1, 2)
    wide = _config(n_heads=64, d_model=1024, d_ff=8192, max_len=4096, n_items=2_000_000)
    assert TransformerConfig.from_dict({**wide.to_dict(), "unknown": 1}) == wide
    assert type(_config(n_items=np.int64(50)).n_items) is int              # numpy ints become ints
    with pytest.raises(ValueError, match=r"^TransformerConfig needs n_items, max_len \(missing\)\.$"):
        TransformerConfig.from_dict({k: v for k, v in wide.to_dict().items() if k not in ("n_items", "max_len")})
    with pytest.raises(TypeError, match="needs a dict"):
        TransformerConfig.from_dict(["n_items", 50])


@pytest.mark.parametrize("scope", ["any", "category"])
def test_state_shapes_match_the_real_model_without_allocating(scope):
    config = tiny_config(scope=scope)
    real = {name: tuple(t.shape) for name, t in _model(scope).state_dict().items()}
    assert state_shapes(config) == real
    assert real["item_emb.weight"] == (N_ITEMS, 32) and real["blocks.1.mlp.0.weight"] == (64, 32)
    # a configuration of 2e6-row tables at width 1024 (about 6e9 values, 24 GB) costs nothing here
    huge = _config(n_items=2_000_000, n_categories=2_000_000, n_query_buckets=2_000_000, d_model=1024,
                   d_ff=8192, n_layers=4)
    shapes = state_shapes(huge)
    assert shapes["item_emb.weight"] == (2_000_000, 1024)
    assert sum(int(np.prod(s)) for s in shapes.values()) > 6e9


# -- the event-statistics path -----------------------------------------------------------------
def _counts_by_hand(batch: SequenceBatch, window: np.ndarray, rows: int, target=None) -> np.ndarray:
    """(B, rows * W): per row r and window w the sum over real events of row r of window[gap, w],
    where an event's row is its behaviour id (+ n_behaviors when it is in the target category)."""
    n, L = batch.behavior.shape
    out = np.zeros((n, rows, window.shape[1]))
    for i in range(n):
        for j in range(L):
            if batch.mask[i, j]:
                r = batch.behavior[i, j]
                if target is not None and batch.category[i, j] == target[i]:
                    r += 7
                out[i, r] += window[batch.gap[i, j]]
    return out.reshape(n, -1)


@pytest.mark.parametrize("scope", ["any", "category"])
def test_event_statistics_are_soft_window_counts_of_each_behaviour(scope):
    """With hand-set window weights and an identity read-out, the path returns the counts of
    every behaviour (and target-category match) in every window, squashed by asinh."""
    batch = planted_batch(5, L=12, scope=scope)
    model = _model(scope, event_stats=2)
    rows = 7 * (2 if scope == "category" else 1)
    window = np.zeros((N_GAPS, 2))
    window[1:, 1] = 1.0                                        # window 1: every event
    window[1:6, 0] = 1.0                                       # window 0: gap buckets 1..5 ...
    window[6:9, 0] = 0.5                                       # ... and half of 6..8
    proj = model.stats_proj[0]
    assert proj.in_features == rows * 2
    with torch.no_grad():
        model.window_emb.weight.copy_(torch.from_numpy(window))
        proj.weight.zero_()
        proj.bias.zero_()
        proj.weight[torch.arange(rows * 2), torch.arange(rows * 2)] = 1.0   # out c = count c
    t = batch.tensors()
    got = model.event_statistics(t["behavior"], t["gap"], t["category"], t["mask"],
                                 t.get("target_category")).detach().numpy()
    counts = _counts_by_hand(batch, window, rows, batch.target_category)
    expected = torch.nn.functional.gelu(torch.asinh(torch.from_numpy(counts))).numpy()
    np.testing.assert_allclose(got[:, :rows * 2], expected, atol=1e-6)
    assert np.all(got[:, rows * 2:] == 0)
    # every real event counts once in window 1: the "all events" counts add up to the lengths
    assert counts.reshape(5, rows, 2)[:, :, 1].sum(axis=1).tolist() == batch.mask.sum(axis=1).tolist()
    if scope == "category":                                     # target-category events have rows 7..13
        in_target = (batch.category == batch.target_category[:, None]) & batch.mask
        assert counts.reshape(5, rows, 2)[:, 7:, 1].sum(axis=1).tolist() == in_target.sum(axis=1).tolist()


def test_event_statistics_ignore_hidden_events_whatever_their_ids():
    """A masked-out event (training's event dropout keeps its ids) adds nothing to the counts."""
    batch = planted_batch(4, L=10, min_events=4)
    model = _model(event_stats=4)
    t = batch.tensors()
    hidden = dict(t)
    hidden["mask"] = t["mask"].clone()
    hidden["mask"][:, -1] = False                               # hide the newest event, ids stay
    removed = {k: v.clone() for k, v in hidden.items()}
    for name in ("behavior", "item", "category", "gap", "hour", "query"):
        removed[name][:, -1] = 0
    args = ("behavior", "gap", "category", "mask")
    a = model.event_statistics(*(hidden[k] for k in args), None)
    b = model.event_statistics(*(removed[k] for k in args), None)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, model.event_statistics(*(t[k] for k in args), None))


def test_stat_totals_count_each_behaviour_whatever_its_context_bits():
    """With stat_totals = the id stride, the read-out also holds each behaviour's count over all of
    its context ids (a buy "bought again later" and a plain buy are one behaviour); a config saved
    before the field reads back without totals and builds the read-out it was trained with."""
    stride, bits = 7, 4
    config = _config(n_behaviors=stride * 2 ** bits, event_stats=2, stat_totals=stride)
    torch.manual_seed(0)
    model = IntentTransformer(config).eval()
    batch = planted_batch(6, L=12, min_events=3)
    rng = np.random.default_rng(1)
    context = rng.integers(0, 2 ** bits, size=batch.behavior.shape)
    behavior = np.where(batch.mask, batch.behavior + stride * context, 0)
    rows = config.n_behaviors
    window = np.zeros((N_GAPS, 2))
    window[1:, 1] = 1.0                                        # window 1: every event
    window[1:6, 0] = 1.0                                       # window 0: the newest gap buckets
    proj = model.stats_proj[0]
    width = (rows + stride) * 2
    assert proj.in_features == width
    with torch.no_grad():
        model.window_emb.weight.copy_(torch.from_numpy(window))
        proj.weight.zero_()
        proj.bias.zero_()
        proj.weight[torch.arange(2 * stride), torch.arange(width - 2 * stride, width)] = 1.0   # out c = total c
    t = batch.tensors()
    got = model.event_statistics(torch.from_numpy(behavior), t["gap"], t["category"], t["mask"], None)
    expected = np.zeros((6, stride, 2))                        # by hand, from the behaviour without context
    for i, j in zip(*np.nonzero(batch.mask), strict=True):
        expected[i, batch.behavior[i, j]] += window[batch.gap[i, j]]
    totals = torch.nn.functional.gelu(torch.asinh(torch.from_numpy(expected.reshape(6, -1)))).numpy()
    np.testing.assert_allclose(got.detach().numpy()[:, :2 * stride], totals, atol=1e-6)
    assert expected[:, :, 1].sum(axis=1).tolist() == batch.mask.sum(axis=1).tolist()
    # saved before the field: no totals, the read-out's width of then
    old = TransformerConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "stat_totals"})
    assert old.stat_totals == 0 and IntentTransformer(old).stats_proj[0].in_features == rows * 2


def test_stat_latest_marks_each_behaviours_newest_unresolved_event_by_browsing_category():
    """stat_latest: per behaviour code, the newest event whose item no newer event bought, in row
    ``code`` (outside the category viewed most) or ``code + stride`` (in it); the read-out then holds
    its window weights, so "the latest open cart is in the aisle being browsed" is one input even
    when an older open cart is there too. A config saved before the field reads back without it."""
    from core.modeling import sequences
    from models.transformer import BOUGHT_LATER_BIT, TOP_CATEGORY_BIT

    stride = sequences.BEHAVIOR_STRIDE
    assert (BOUGHT_LATER_BIT, TOP_CATEGORY_BIT) == (sequences.BOUGHT_LATER, sequences.TOP_CATEGORY)
    view, cart, buy = (sequences.BEHAVIOR_CODE[b] for b in ("view", "cart", "buy"))
    config = _config(n_behaviors=stride * 16, event_stats=2, stat_totals=stride, stat_latest=True)
    model = IntentTransformer(config).eval()
    top, bought = stride * TOP_CATEGORY_BIT, stride * BOUGHT_LATER_BIT
    # oldest -> newest: pad, open cart in the top category, a cart bought later (the newest cart,
    # resolved), an open cart elsewhere (the newest open one), a view in the top category, a buy
    behavior = torch.tensor([[0, cart + top, cart + bought + top, cart, view + top, buy],
                             [0, 0, 0, cart, cart + top, view]])
    mask = behavior > 0
    marked = model.latest_events(behavior, mask)
    assert marked.shape == (2, 6, 2 * stride)
    assert marked[0].nonzero().tolist() == [[3, cart], [4, view + stride], [5, buy]]
    assert marked[1].nonzero().tolist() == [[4, cart + stride], [5, view]]
    assert not marked[~mask].any()
    # the read-out's width and its use: the same events with the open carts' order swapped differ
    assert model.stats_proj[0].in_features == (config.n_behaviors + 3 * stride) * 2
    gap = torch.where(mask, torch.arange(7, 1, -1).expand(2, 6), 0)
    category = torch.where(mask, 3, 0)
    swapped = behavior.clone()
    swapped[1, 3:5] = torch.tensor([cart + top, cart])
    a = model.event_statistics(behavior, gap, category, mask, None)
    b = model.event_statistics(swapped, gap, category, mask, None)
    assert not torch.allclose(a[1], b[1]) and torch.equal(a[0], b[0])
    old = TransformerConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "stat_latest"})
    assert old.stat_latest is False and IntentTransformer(old).stats_proj[0].in_features == (
        config.n_behaviors + stride) * 2


def test_soft_windows_nest_from_now_to_the_whole_history():
    from models.transformer import soft_windows

    w = soft_windows(97, 12).numpy()
    assert w.shape == (97, 12) and np.all(w[0] == 0)            # padding counts nothing
    assert np.all(np.diff(w[1:], axis=0) <= 0)                  # older events weigh less ...
    assert np.all(np.diff(w[1:], axis=1) >= 0)                  # ... and wider windows hold more
    assert w[1, 0] > 0.9 and w[20, 0] < 0.05                    # window 0: the newest buckets only
    assert w[96, -1] > 0.5 and w[1:, -1].min() > 0.5            # the last: every event


def test_config_without_event_stats_builds_the_architecture_saved_models_have():
    """Cards written before the field existed have no ``event_stats``: they read back as 0 and build
    the model they were trained with (the summed read-out, no statistics), weight for weight."""
    old = {k: v for k, v in tiny_config().to_dict().items() if k != "event_stats"}
    config = TransformerConfig.from_dict(old)
    assert config.event_stats == 0
    model = IntentTransformer(config)
    keys = set(model.state_dict())
    assert {"pool.weight", "pool.bias"} <= keys
    assert not any(k.startswith(("window_emb", "stats_proj")) for k in keys)
    assert model.state_dict()["head.0.weight"].shape == (32, 64)
    assert model.statistics_parameters() == []
    new = IntentTransformer(_config(event_stats=5))
    new_keys = set(new.state_dict())
    assert "pool.weight" not in new_keys and new.state_dict()["window_emb.weight"].shape == (N_GAPS, 5)
    assert new.state_dict()["stats_proj.0.weight"].shape == (32, 7 * 5)
    assert len(new.statistics_parameters()) == 3               # window table, read-out weight and bias
    # what models.artifact checks a card's weights against before loading them
    assert state_shapes(_config(event_stats=5)) == {k: tuple(v.shape) for k, v in new.state_dict().items()}
    with pytest.raises(RuntimeError, match="window_emb"):
        new.load_state_dict(model.state_dict())                 # the two never load into each other


def test_the_shipped_demo_model_still_loads():
    from models.artifact import load_model

    loaded = load_model("models/saved/demo")
    net = loaded.transformer
    assert net is not None
    card_config = loaded.card["members"]["transformer"]["config"]
    assert net.config.event_stats == card_config.get("event_stats", 0)
    # trained as the presets train now: distilled from an out-of-fold GBDT at one of the preset's teacher
    # weights (the one validation kept), with the per-behaviour totals and newest unresolved events
    from core.modeling.pipeline import PRESETS

    weight = loaded.card["teacher"]["weight"]
    assert weight > 0 and weight in PRESETS[loaded.card["preset"]].teacher_weights
    assert net.config.stat_totals > 0 and net.config.stat_latest
    assert min(net.config.n_items, net.config.n_categories, net.config.n_query_buckets) > N_ITEMS
    with torch.no_grad():
        assert torch.isfinite(net(**planted_batch(3, L=12).tensors())).all()


def test_id_dropout_hides_item_category_and_query_of_some_events_in_training_only():
    """In training, an event whose identity is hidden scores as if its item, category and query ids
    were padding (0) while its behaviour, time and position stay; in eval nothing is hidden."""
    model = _model(event_stats=4, id_dropout=0.5, dropout=0.0).train()
    t = planted_batch(6).tensors()
    torch.manual_seed(3)
    hidden = model(**t)
    torch.manual_seed(3)
    keep = torch.rand(6, 20, 1) >= 0.5                        # the draw forward makes first
    assert 0 < int(keep.sum()) < 120
    blanked = dict(t, item=t["item"] * keep[..., 0], category=t["category"] * keep[..., 0],
                   query=t["query"] * keep)
    model.eval()
    torch.testing.assert_close(hidden, model(**blanked), atol=1e-6, rtol=0)
    assert not torch.allclose(model(**t), model(**blanked))
    torch.testing.assert_close(model(**t), model(**t))         # eval: deterministic, nothing hidden
    assert TransformerConfig.from_dict(tiny_config().to_dict()).id_dropout == 0.0


def test_seq_dropout_hides_the_cls_vector_of_some_rows_in_training_only():
    """In training the head sees [CLS] / (1 - p) on kept rows and zeros on the others, beside the
    event statistics, which it always sees; in eval it sees [CLS] as it is."""
    model = _model(event_stats=4, seq_dropout=0.5, dropout=0.0)
    t = planted_batch(8).tensors()
    with torch.no_grad():
        x, key_mask = model.embed(**{k: t[k] for k in ("behavior", "item", "category", "gap", "hour",
                                                          "query", "mask")})
        cls, _ = model.encode(x, key_mask)
        stats = model.event_statistics(t["behavior"], t["gap"], t["category"], t["mask"], None)
        torch.testing.assert_close(model(**t), model.head(torch.cat([cls, stats], -1)).squeeze(-1))
        model.train()
        torch.manual_seed(5)
        dropped = model(**t)
        torch.manual_seed(5)
        keep = (torch.rand(8, 1) >= 0.5).float()
        assert 0 < int(keep.sum()) < 8
        expected = model.head(torch.cat([cls * keep / 0.5, stats], -1)).squeeze(-1)
    torch.testing.assert_close(dropped, expected, atol=1e-6, rtol=0)
