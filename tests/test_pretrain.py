"""Self-supervised pre-training (core.modeling.pretrain): the masked-event loss falls on users never
trained on, a run cancelled mid-epoch resumes to exactly the uninterrupted result, a broken encoder
directory is refused with a ModelError, a fine-tune gets the encoder's tensors and freezes what it
asks for, and ``python -m core pretrain`` works end to end."""
from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from core.cli import main
from core.data.ingest import ingest_file
from core.data.schema import BEHAVIOR_CODE
from core.data.store import Store
from core.errors import ModelError
from core.modeling.labels import LabelSpec
from core.modeling.pipeline import checkpoint_dir_for
from core.modeling.pretrain import (
    CARD_FILE,
    CONTENT_EMBEDDINGS,
    ENCODER_FILE,
    ENCODER_PREFIXES,
    HASH_ITEM_BUCKETS,
    VOCAB_FILE,
    cutoff_grid,
    hashed_vocabulary,
    init_from_pretrained,
    load_pretrained,
    mask_events,
    next_event_targets,
    pretrain,
    pretrain_examples,
    pretrained_config,
)
from core.modeling.sequences import OOV, build_sequences, map_ids
from core.modeling.synth import SynthConfig, generate
from core.modeling.training import CHECKPOINT_FILE, TrainConfig, _optimizer
from core.progress import Cancelled, CancelToken
from models.transformer import IntentTransformer, TransformerConfig

SMALL = dict(max_len=30, d_model=16, n_heads=2, n_layers=1, d_ff=32, threads=1)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic log (300 users, 6 days) in a DuckDB file."""
    root = tmp_path_factory.mktemp("pretrain")
    generate(SynthConfig(users=300, days=6, seed=3), root / "synth.csv")
    with Store(root / "db.duckdb") as store:
        ingest_file(store, root / "synth.csv", dataset="syn")
    return root / "db.duckdb"


@pytest.fixture(scope="module")
def encoder(database: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encoder pre-trained for 4 epochs on the small log (the 'balanced' sizes, max_len 30)."""
    out = tmp_path_factory.mktemp("encoders") / "enc"
    with Store(database, read_only=True) as store:
        pretrain(store, "syn", out, epochs=4, max_len=30, batch_size=64, lr=2e-3, threads=1, seed=1)
    return out


def _tensors(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / ENCODER_FILE, map_location="cpu", weights_only=True)


def test_examples_are_users_with_new_events_at_each_cutoff(database: Path) -> None:
    with Store(database, read_only=True) as store:
        grid = cutoff_grid(store, "syn", "1d", until="2017-11-29 12:00")
        examples = pretrain_examples(store, "syn", grid)
        events = store.df("SELECT user_id, ts FROM events WHERE dataset = 'syn'")
    # the grid runs back from `until` in whole days and stops at the first event
    assert grid[-1].isoformat() == "2017-11-29T12:00:00"
    assert [t.isoformat() for t in grid] == ["2017-11-25T12:00:00", "2017-11-26T12:00:00", "2017-11-27T12:00:00",
                                              "2017-11-28T12:00:00", "2017-11-29T12:00:00"]
    # planted truth by hand: a user is an example at T_k when they have an event in (T_k-1, T_k]
    ts = events["ts"].to_numpy(dtype="datetime64[us]")
    expected = set()
    for k, t in enumerate(grid):
        lo = np.datetime64(grid[k - 1]) if k else np.datetime64("1970-01-01")
        hit = (ts > lo) & (ts <= np.datetime64(t))
        expected |= {(u, k) for u in events["user_id"].to_numpy()[hit]}
    got = set(zip(examples.users[examples.user_code], examples.cutoff_code.tolist(), strict=True))
    assert got == expected and len(examples) == len(expected)


def test_next_event_targets_name_the_first_event_after_each_cutoff(database: Path) -> None:
    vocab = hashed_vocabulary()
    end = datetime(2017, 11, 29)
    with Store(database, read_only=True) as store:
        events = store.df("SELECT user_id, ts, behavior::VARCHAR AS behavior, item_id, category FROM events "
                          "WHERE dataset = 'syn'")
        users = sorted(events["user_id"].unique())[:80]
        # the first cutoff's window ends inside the data; the second's passes `end`
        cutoffs = [datetime(2017, 11, 27, 6), datetime(2017, 11, 28, 12)]
        keys = pd.DataFrame({"user_id": users * 2, "cutoff": [cutoffs[0]] * 80 + [cutoffs[1]] * 80})
        got = next_event_targets(store, "syn", keys, timedelta(days=1), end, vocab)
    events["code"] = events["behavior"].map(BEHAVIOR_CODE)
    seen = {"event": 0, "none": 0, "unknown": 0}
    for row, (user, cutoff) in enumerate(zip(keys["user_id"], keys["cutoff"], strict=True)):
        hi = min(cutoff + timedelta(days=1), end)
        after = events[(events["user_id"] == user) & (events["ts"] > cutoff) & (events["ts"] <= hi)]
        after = after.sort_values(["ts", "code", "item_id", "category"])
        if len(after):
            first = after.iloc[0]
            want = (first["code"], map_ids([first["category"]], {}, vocab.category_buckets)[0])
            seen["event"] += 1
        elif cutoff + timedelta(days=1) <= end:
            want, seen["none"] = (0, OOV), seen["none"] + 1          # a whole window without an event
        else:
            want, seen["unknown"] = (-1, OOV), seen["unknown"] + 1   # the window passes the last readable time
        assert (got["next_behavior"][row], got["next_category"][row]) == want, (user, cutoff)
    assert min(seen.values()) > 0, seen                                 # every case is exercised


def test_masking_hides_a_share_and_keeps_the_truth() -> None:
    gen = torch.Generator().manual_seed(0)
    B, L = 64, 40
    lengths = torch.randint(1, L + 1, (B,), generator=gen)
    mask = torch.arange(L)[None, :] >= (L - lengths)[:, None]
    inputs = {name: torch.randint(2, 50, (B, L), generator=gen) * mask for name in ("behavior", "item", "category")}
    inputs.update(gap=torch.randint(1, 9, (B, L), generator=gen) * mask, hour=torch.randint(1, 25, (B, L)) * mask,
                  query=torch.randint(1, 9, (B, L, 4), generator=gen) * mask[..., None], mask=mask)
    before = {k: v.clone() for k, v in inputs.items()}
    masked, chosen, targets = mask_events(inputs, 0.15, gen)
    assert all(torch.equal(before[k], inputs[k]) for k in inputs)        # the caller's tensors are untouched
    assert not (chosen & ~mask).any() and chosen.any(dim=1).all()        # real events only, >= 1 per row
    assert 0.10 < chosen.sum() / mask.sum() < 0.25
    assert torch.equal(targets["item"], inputs["item"][chosen])         # targets: the original ids
    hidden = (masked["behavior"] == 0) & mask
    assert torch.equal(hidden, hidden & chosen)                         # only chosen events are hidden ...
    assert 0.6 < hidden.sum() / chosen.sum() < 0.95                     # ... about 80 % of them
    assert (masked["query"][hidden] == 0).all() and (masked["item"][hidden] == 0).all()
    assert torch.equal(masked["gap"], inputs["gap"]) and torch.equal(masked["hour"], inputs["hour"])


def test_loss_falls_and_beats_base_rates_on_held_out_users(database: Path, encoder: Path) -> None:
    _, vocab, card = load_pretrained(encoder)
    history = card["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and card["examples"]["holdout"] > 0
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.5
    assert history[-1]["holdout_loss"] < history[0]["holdout_loss"]
    # the bar a model without context reaches: the entropy of the behaviour ids' frequencies over
    # every event the sequences hold. The encoder reads the context, so it names a hidden event's
    # behaviour with clearly less surprise than those base rates.
    with Store(database, read_only=True) as store:
        examples = pretrain_examples(store, "syn", cutoff_grid(store, "syn"))
        batch = build_sequences(store, "syn", examples.keys(np.arange(len(examples))), vocab, LabelSpec(max_len=30))
    freq = np.bincount(batch.behavior[batch.mask]) / batch.mask.sum()
    base_rate_entropy = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
    assert history[-1]["holdout_behavior"] < 0.9 * base_rate_entropy, (history[-1], base_rate_entropy)
    assert card["events"] > 0 and card["config"]["d_model"] == 64 and card["config"]["n_layers"] == 2


def test_cancelled_run_resumes_to_the_uninterrupted_result(database: Path, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = dict(SMALL, epochs=3, seed=5, chunk_users=120)   # several chunks per epoch
    with Store(database, read_only=True) as store:
        reference = pretrain(store, "syn", tmp_path / "ref", **kwargs)
        out = tmp_path / "enc"
        token = CancelToken()

        def progress(done: float, total: float | None, message: str) -> None:
            # cancel half-way through the second epoch (steps are counted over the whole run)
            if message.startswith("pre-training epoch 2/3") and total is not None and done >= total / 2:
                token.cancel()
        with pytest.raises(Cancelled):
            pretrain(store, "syn", out, progress=progress, cancel=token, **kwargs)
        assert (checkpoint_dir_for(out) / CHECKPOINT_FILE).is_file() and not out.exists()
        lines: list[str] = []
        resumed = pretrain(store, "syn", out, log=lines.append, **kwargs)
    assert "resumed from the checkpoint at epoch 1 of 3" in lines and resumed.resumed_from == 1
    assert not checkpoint_dir_for(out).exists()            # a finished run leaves nothing to resume
    ref, got = _tensors(tmp_path / "ref"), _tensors(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    timings = ("seconds", "build_seconds")
    strip = [{k: v for k, v in h.items() if k not in timings} for h in reference.history]
    assert [{k: v for k, v in h.items() if k not in timings} for h in resumed.history] == strip


def _copy(encoder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(encoder, dest)
    return dest


def test_load_pretrained_refuses_broken_directories(encoder: Path, tmp_path: Path) -> None:
    state, vocab, card = load_pretrained(encoder)
    assert set(state) and all(k.startswith(ENCODER_PREFIXES) for k in state) and card["format"]
    assert vocab.n_items == card["config"]["n_items"]

    with pytest.raises(ModelError, match="is not a directory"):
        load_pretrained(tmp_path / "missing")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "card.json").write_text("{}")
    with pytest.raises(ModelError, match=r"has no pretrain\.json"):
        load_pretrained(tmp_path / "model")

    bad = _copy(encoder, tmp_path)
    (bad / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_pretrained(bad)
    (bad / CARD_FILE).write_text(json.dumps({**card, "format": "something-else/9"}))
    with pytest.raises(ModelError, match="format 'something-else/9'"):
        load_pretrained(bad)
    (bad / CARD_FILE).write_text(json.dumps({**card, "config": {**card["config"], "d_model": 32, "d_ff": 64}}))
    with pytest.raises(ModelError, match="do not match the configuration"):
        load_pretrained(bad)
    (bad / CARD_FILE).write_text(json.dumps({**card, "config": {**card["config"], "n_items": 7}}))
    with pytest.raises(ModelError, match="does not match the configuration"):
        load_pretrained(bad)
    (bad / CARD_FILE).write_text(json.dumps(card))
    (bad / ENCODER_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="not an encoder weights file"):
        load_pretrained(bad)
    torch.save({"item_emb.weight": "not a tensor"}, bad / ENCODER_FILE)
    with pytest.raises(ModelError, match="names -> floating tensors"):
        load_pretrained(bad)
    (bad / VOCAB_FILE).unlink()
    with pytest.raises(ModelError, match="no usable configuration and vocabulary"):
        load_pretrained(bad)


def test_init_copies_the_encoder_and_freezes_what_it_says(encoder: Path) -> None:
    state, vocab, _ = load_pretrained(encoder)

    class WithExtra(IntentTransformer):
        """A model with a parameter group the encoder does not have (as newer heads add)."""

        def __init__(self, config: TransformerConfig):
            super().__init__(config)
            self.extra = nn.Linear(4, config.d_model)

    for freeze, frozen_prefixes in (("none", ()), ("embeddings", CONTENT_EMBEDDINGS),
                                    ("all", ENCODER_PREFIXES)):
        torch.manual_seed(0)
        model = WithExtra(pretrained_config(encoder, dropout=0.0))
        head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(ENCODER_PREFIXES)}
        record = init_from_pretrained(model, encoder, freeze, vocab=vocab)
        own = model.state_dict()
        assert sorted(record["loaded"]) == sorted(state) and not record["skipped"]
        assert all(torch.equal(own[k], state[k]) for k in state)                 # copied
        assert all(torch.equal(own[k], v) for k, v in head_before.items())       # the rest untouched
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert frozen == {n for n in state if n.startswith(frozen_prefixes)} == set(record["frozen"])
        # one optimisation step of the training loop's optimiser: frozen tensors stay, the head moves
        opt = _optimizer(model, TrainConfig(lr=1e-2))
        gen = torch.Generator().manual_seed(1)
        B, L = 8, 30
        mask = torch.ones(B, L, dtype=torch.bool)
        ids = {n: torch.randint(2, 20, (B, L), generator=gen) for n in ("behavior", "item", "category", "gap", "hour")}
        model.train()
        logits = model(**ids, query=torch.zeros(B, L, 4, dtype=torch.long), mask=mask)
        (logits.sum() + model.extra.weight.sum()).backward()
        opt.step()
        after = model.state_dict()
        assert all(torch.equal(after[n], state[n]) for n in frozen)
        assert not torch.equal(after["head.0.weight"], head_before["head.0.weight"])
        if freeze != "all":
            assert not torch.equal(after["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])


def test_init_refuses_what_does_not_fit(encoder: Path, tmp_path: Path) -> None:
    _, vocab, _ = load_pretrained(encoder)
    model = IntentTransformer(pretrained_config(encoder))
    with pytest.raises(ModelError, match="freeze must be one of none, embeddings, all"):
        init_from_pretrained(model, encoder, "half")
    other = type(vocab).from_dict({**vocab.to_dict(), "item_buckets": vocab.item_buckets + 1})
    with pytest.raises(ModelError, match="not the one the encoder"):
        init_from_pretrained(model, encoder, vocab=other)
    with pytest.raises(ModelError, match="no tensor of the encoder"):
        init_from_pretrained(IntentTransformer(pretrained_config(encoder, d_model=32, d_ff=64)), encoder)
    # a shorter fine-tune sequence: every tensor but the position table is copied, and the card says so
    shorter = IntentTransformer(pretrained_config(encoder, max_len=10))
    record = init_from_pretrained(shorter, encoder, "all")
    assert set(record["skipped"]) == {"pos_emb.weight"} and "pos_emb.weight" not in record["frozen"]
    assert shorter.pos_emb.weight.requires_grad


def test_cli_pretrains_with_a_hashed_vocabulary(database: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hashed"
    code = main(["pretrain", "--db", str(database), "--dataset", "syn", "--out", str(out), "--epochs", "1",
                 "--hashed-vocab", "--preset", "fast", "--max-len", "20", "--threads", "1"])
    assert code == 0
    assert f"Saved a pre-trained encoder to {out}" in capsys.readouterr().out
    state, vocab, card = load_pretrained(out)
    assert card["hashed_vocab"] and card["epochs"] == 1 and card["config"]["n_layers"] == 1    # 'fast' sizes
    assert vocab.items == {} and vocab.categories == {} and vocab.item_buckets == HASH_ITEM_BUCKETS
    assert state["item_emb.weight"].shape == (HASH_ITEM_BUCKETS + 2, 64)
    # the ids are the same for any dataset: an item text maps to one row, whatever the log
    with Store(database, read_only=True) as store:
        keys = store.df("SELECT user_id, max(ts) AS cutoff FROM events WHERE dataset = 'syn' GROUP BY user_id "
                        "ORDER BY user_id LIMIT 1")
        newest = store.fetchone("SELECT item_id FROM events WHERE dataset = 'syn' AND user_id = ? "
                                "ORDER BY ts DESC, behavior DESC, item_id DESC LIMIT 1", [keys.user_id[0]])
        batch = build_sequences(store, "syn", keys.assign(label=0, split="x"), vocab, LabelSpec(max_len=20))
    assert newest is not None
    assert batch.item[0, -1] == map_ids([newest[0]], {}, HASH_ITEM_BUCKETS)[0]
    # a user error is a message and exit code 2, not a traceback
    assert main(["pretrain", "--db", str(database), "--dataset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "there is no dataset called 'nope'" in capsys.readouterr().err
    assert main(["pretrain", "--db", str(database), "--dataset", "syn", "--out", str(tmp_path / "y"),
                 "--until", "yesterday-ish"]) == 2
    assert "is not a time" in capsys.readouterr().err
    assert not math.isnan(card["history"][0]["holdout_loss"])


def test_fine_tune_refuses_an_encoder_that_saw_the_test_window(database: Path, encoder: Path,
                                                             tmp_path: Path) -> None:
    """The module's encoder read every event of 'syn', the test window's purchases included: training on
    'syn' from it is refused with the cutoff to pre-train up to, and nothing is written."""
    from core.errors import DataError
    from core.modeling.labels import plan_cutoffs
    from core.modeling.pipeline import train_model

    spec = LabelSpec(horizon="1d", max_len=30)
    with Store(database, read_only=True) as store:
        plan = plan_cutoffs(store, "syn", spec)
        with pytest.raises(DataError) as info:
            train_model(store, "syn", kind="transformer", spec=spec, preset="fast", out=tmp_path / "m",
                        init=encoder, threads=1)
    assert info.value.title == "Pre-training saw the test window"
    assert plan.test_cutoff is not None and pd.Timestamp(plan.test_cutoff).isoformat() in info.value.hint
    assert load_pretrained(encoder)[2]["settings"]["until"] > pd.Timestamp(plan.test_cutoff).isoformat()
    assert not (tmp_path / "m").exists()
