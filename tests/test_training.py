"""fit_transformer / predict_transformer / search_transformer on small planted sequence data."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from core.errors import EligibilityError, ModelError
from core.modeling.training import (
    CHECKPOINT_FILE,
    TrainConfig,
    fit_transformer,
    predict_transformer,
    search_transformer,
)
from core.progress import Cancelled, CancelToken
from tests.test_transformer import planted_batch, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return planted_batch(1500, seed=1), planted_batch(600, seed=2)


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _cancelled_after_epoch_1_then_resumed(train, valid, tc: TrainConfig, checkpoint_dir):
    """A fit cancelled once its first epoch is checkpointed, then the same fit again: the resumed result."""
    token = CancelToken()

    def stop_after_first(record):
        if record["epoch"] == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        fit_transformer(tiny_config(), train, valid, tc, cancel=token, on_epoch=stop_after_first,
                        checkpoint_dir=checkpoint_dir)
    return fit_transformer(tiny_config(), train, valid, tc, checkpoint_dir=checkpoint_dir)


@pytest.mark.parametrize("scope,extra,sizes", [("any", {}, {}),
                                               ("any", {"balanced_sampling": True, "augment_crop": 0.2}, {}),
                                               ("category", {}, {}),
                                               ("category", {"event_dropout": 0.05}, {"event_stats": 8})])
def test_learns_a_planted_signal(scope, extra, sizes):
    train, valid = planted_batch(2500, seed=1, scope=scope), planted_batch(800, seed=2, scope=scope)
    tc = TrainConfig(epochs=4, batch_size=128, lr=3e-3, seed=0, **extra)
    fit = fit_transformer(tiny_config(scope=scope, **sizes), train, valid, tc)
    p = predict_transformer(fit.model, valid)
    assert p.shape == (800,) and np.all((p >= 0) & (p <= 1))
    assert roc_auc_score(valid.keys["label"], p) > 0.9
    # the returned weights are the best epoch's
    best = fit.history[fit.best_epoch - 1]["valid_pr_auc"]
    assert average_precision_score(valid.keys["label"], p) == pytest.approx(best, abs=1e-9)
    np.testing.assert_allclose(fit.valid_pred, p)


def test_compact_id_dtypes_train_like_int64(data):
    """build_sequences stores ids in the smallest integer type; training widens per mini-batch."""
    train, valid = data
    compact = train.subset(np.arange(len(train)))
    for name, dtype in (("behavior", np.int8), ("item", np.int16), ("category", np.int8),
                        ("gap", np.int8), ("hour", np.int8), ("query", np.int16)):
        setattr(compact, name, getattr(compact, name).astype(dtype))
    tc = TrainConfig(epochs=1, batch_size=256, seed=2, augment_crop=0.2)
    a = fit_transformer(tiny_config(), compact, valid, tc)
    b = fit_transformer(tiny_config(), train, valid, tc)
    assert _same_weights(a.model, b.model)
    np.testing.assert_array_equal(predict_transformer(a.model, compact), predict_transformer(b.model, train))


def test_prior_correction_keeps_probabilities_calibrated(data):
    train, valid = data
    ratio = (1 - train.keys["label"]).sum() / train.keys["label"].sum()
    fit = fit_transformer(tiny_config(), train, valid, TrainConfig(epochs=3, batch_size=128, lr=3e-3))
    assert float(fit.model.logit_offset) == pytest.approx(-math.log(ratio))
    p = predict_transformer(fit.model, valid)
    assert abs(p.mean() - valid.keys["label"].mean()) < 0.08


def test_same_seed_same_weights(data):
    train, valid = data
    tc = TrainConfig(epochs=2, batch_size=256, seed=5, augment_crop=0.3, event_dropout=0.1)
    a = fit_transformer(tiny_config(), train, valid, tc).model
    b = fit_transformer(tiny_config(), train, valid, tc).model
    c = fit_transformer(tiny_config(), train, valid, TrainConfig(**{**tc.to_dict(), "seed": 6})).model
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_callbacks_cancel_and_resume_from_checkpoint(data, tmp_path):
    train, valid = data
    tc = TrainConfig(epochs=3, batch_size=256, lr=2e-3, seed=1, patience=5, event_dropout=0.1)
    reference = fit_transformer(tiny_config(), train, valid, tc)

    token, calls, epochs = CancelToken(), [], []

    def on_epoch(record):
        epochs.append(record)
        if record["epoch"] == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        fit_transformer(tiny_config(), train, valid, tc, cancel=token, on_epoch=on_epoch,
                        progress=lambda d, t, m: calls.append((d, t, m)), checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    assert set(epochs[0]) >= {"epoch", "train_loss", "valid_loss", "valid_pr_auc", "valid_roc_auc",
                              "seconds"}
    steps = math.ceil(len(train) / 256)
    assert calls[-1][0] == steps and calls[-1][1] == 3 * steps and "epoch 1/3" in calls[-1][2]

    lines, replayed, resume_calls = [], [], []
    resumed = fit_transformer(tiny_config(), train, valid, tc, cancel=CancelToken(),
                              checkpoint_dir=tmp_path, log=lines.append, on_epoch=replayed.append,
                              progress=lambda d, t, m: resume_calls.append((d, t, m)))
    assert resumed.resumed_from == 1
    assert lines == ["resumed from the checkpoint at epoch 1 of 3"]
    # the progress bar starts where the checkpoint left off, and a live chart gets the whole run
    assert resume_calls[0] == (steps, 3 * steps, "resumed from the checkpoint at epoch 1 of 3")
    assert [r["epoch"] for r in replayed] == [1, 2, 3] and replayed[0] == epochs[0]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.best_epoch == reference.best_epoch
    assert _same_weights(resumed.model, reference.model)
    for got, want in zip(resumed.history, reference.history, strict=True):
        assert got["valid_pr_auc"] == want["valid_pr_auc"]

    # a finished run called again resumes at the end: same model, no new epochs
    again = fit_transformer(tiny_config(), train, valid, tc, checkpoint_dir=tmp_path)
    assert again.resumed_from == 3 and _same_weights(again.model, reference.model)
    # a checkpoint of another run (other size, other seed, other data) is never mixed in
    lines.clear()
    other = fit_transformer(tiny_config(d_model=16), train, valid, tc, checkpoint_dir=tmp_path, log=lines.append)
    assert other.resumed_from == 0 and other.model.config.d_model == 16
    assert len(lines) == 1 and lines[0].startswith(f"ignored the checkpoint in {tmp_path}: it belongs to another run")
    reseeded = TrainConfig(**{**tc.to_dict(), "seed": 2})
    assert fit_transformer(tiny_config(d_model=16), train, valid, reseeded,
                           checkpoint_dir=tmp_path).resumed_from == 0
    fewer = train.subset(np.arange(len(train) - 1))
    assert fit_transformer(tiny_config(d_model=16), fewer, valid, reseeded,
                           checkpoint_dir=tmp_path).resumed_from == 0
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot be read"):
        fit_transformer(tiny_config(), train, valid, tc, checkpoint_dir=tmp_path)


def test_moving_average_of_weights_is_what_is_validated_kept_and_resumed(data, tmp_path):
    """ema_half_life > 0: the validated and returned weights are the moving average. A vanishing
    half-life makes the average the raw weights exactly; a real one differs from them, still learns,
    and a run cancelled after epoch 1 resumes to the same average."""
    train, valid = data
    tc = TrainConfig(epochs=3, batch_size=256, lr=3e-3, seed=4, patience=5, keep="last")
    raw = fit_transformer(tiny_config(), train, valid, tc)
    instant = fit_transformer(tiny_config(), train, valid, TrainConfig(**{**tc.to_dict(), "ema_half_life": 1e-9}))
    assert _same_weights(raw.model, instant.model)
    averaged_tc = TrainConfig(**{**tc.to_dict(), "ema_half_life": 0.5})
    averaged = fit_transformer(tiny_config(), train, valid, averaged_tc)
    assert not _same_weights(raw.model, averaged.model)
    p = predict_transformer(averaged.model, valid)
    assert roc_auc_score(valid.keys["label"], p) > 0.75           # it learns, a few steps behind
    assert average_precision_score(valid.keys["label"], p) == pytest.approx(averaged.history[-1]["valid_pr_auc"])

    resumed = _cancelled_after_epoch_1_then_resumed(train, valid, averaged_tc, tmp_path)
    assert resumed.resumed_from == 1 and _same_weights(resumed.model, averaged.model)
    with pytest.raises(ValueError, match=r"TrainConfig\.ema_half_life"):
        TrainConfig(ema_half_life=-1)


def test_early_stopping_after_patience(data):
    train, valid = data
    # a learning rate too small to move float32 weights: validation never improves
    tc = TrainConfig(epochs=6, batch_size=512, lr=1e-13, weight_decay=0.0, patience=2, warmup=0)
    fit = fit_transformer(tiny_config(dropout=0.0), train, valid, tc)
    assert len(fit.history) == 3 and fit.best_epoch == 1


def test_bad_inputs_are_refused(data):
    train, valid = data
    one_class = train.subset(np.flatnonzero(train.keys["label"].to_numpy() == 0))
    with pytest.raises(EligibilityError, match="one class"):
        fit_transformer(tiny_config(), one_class, valid, TrainConfig(epochs=1))
    with pytest.raises(ModelError, match="target_category"):
        fit_transformer(tiny_config(scope="category"), train, valid, TrainConfig(epochs=1))
    from models.transformer import IntentTransformer
    with pytest.raises(ModelError, match="target_category"):
        predict_transformer(IntentTransformer(tiny_config(scope="category")), valid)
    with pytest.raises(ValueError, match=r"TrainConfig\.lr"):
        TrainConfig(lr=0)


def test_a_teachers_probabilities_reach_the_model_through_distillation(data):
    """Training labels shuffled (no signal left in them); the teacher knows the planted rule. Without
    distillation the model learns nothing; with it, the teacher's ranking reaches the validation rows."""
    train, valid = data
    truth = train.keys["label"].to_numpy(dtype=float)
    noisy = train.subset(np.arange(len(train)))
    noisy.keys["label"] = np.random.default_rng(0).permutation(truth).astype(int)
    teacher = np.where(truth == 1, 0.6, 0.05)              # a calibrated-looking teacher
    tc = TrainConfig(epochs=4, batch_size=128, lr=3e-3, seed=0)
    plain = fit_transformer(tiny_config(), noisy, valid, tc)
    taught = fit_transformer(tiny_config(), noisy, valid, TrainConfig(**{**tc.to_dict(), "distill": 0.7}),
                             teacher=teacher)
    y_valid = valid.keys["label"]
    assert roc_auc_score(y_valid, predict_transformer(plain.model, valid)) < 0.7
    assert roc_auc_score(y_valid, predict_transformer(taught.model, valid)) > 0.8
    with pytest.raises(ModelError, match="teacher"):
        fit_transformer(tiny_config(), noisy, valid, TrainConfig(epochs=1, distill=0.5))
    with pytest.raises(ModelError, match="teacher"):
        fit_transformer(tiny_config(), noisy, valid, TrainConfig(epochs=1, distill=0.5), teacher=teacher[:-1])
    with pytest.raises(ModelError, match="teacher"):
        fit_transformer(tiny_config(), noisy, valid, TrainConfig(epochs=1, distill=0.5), teacher=teacher + 1)
    with pytest.raises(ValueError, match=r"TrainConfig\.distill"):
        TrainConfig(distill=1.0)


def test_statistics_path_gets_its_own_learning_rate():
    """AdamW groups: every trainable parameter once; the event-statistics path at stats_lr_scale x lr;
    decay on matrices and embeddings only. A model without the path keeps its two groups."""
    from core.modeling.training import _optimizer
    from models.transformer import IntentTransformer

    torch.manual_seed(0)
    model = IntentTransformer(tiny_config(event_stats=4))
    groups = _optimizer(model, TrainConfig(lr=2e-3, weight_decay=0.1, stats_lr_scale=5.0)).param_groups
    fast = {id(p) for p in model.statistics_parameters()}
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(fast) == 3
    for group in groups:
        in_path = {id(p) in fast for p in group["params"]}
        assert len(in_path) == 1                                 # a group is all in or all out
        assert group["lr"] == pytest.approx(2e-3 * (5.0 if in_path.pop() else 1.0))
        assert group["weight_decay"] == (0.1 if group["params"][0].dim() >= 2 else 0.0)
        assert len({p.dim() >= 2 for p in group["params"]}) == 1
    assert [g["lr"] for g in groups] == pytest.approx([2e-3, 2e-3, 1e-2, 1e-2])
    plain = _optimizer(IntentTransformer(tiny_config()), TrainConfig(lr=2e-3)).param_groups
    assert [(g["lr"], g["weight_decay"]) for g in plain] == [(2e-3, 0.01), (2e-3, 0.0)]
    with pytest.raises(ValueError, match=r"TrainConfig\.stats_lr_scale"):
        TrainConfig(stats_lr_scale=0)


def test_search_records_every_trial(data):
    train, valid = data
    small_train = train.subset(np.arange(600))
    result = search_transformer(small_train, valid, tiny_config(), n_trials=3, seed=0,
                                tc=TrainConfig(epochs=1, batch_size=128))
    assert len(result.trials) == 3
    assert {"d_model", "n_layers", "lr", "dropout", "weight_decay"} <= set(result.trials[0]["params"])
    assert result.best_fit.best_valid_pr_auc == max(t["valid_pr_auc"] for t in result.trials)
    assert result.best_config.d_model == result.best_params["d_model"]
    frame = result.trials_frame()
    assert list(frame["trial"]) == [0, 1, 2] and (frame["seconds"] > 0).all()


def test_a_cart_head_beside_the_buy_head_lends_the_encoder_its_signal(data, tmp_path):
    """Multi-task (aux_cart > 0): half the buy labels are replaced by coin flips, the ``carted``
    column holds the planted rule. The cart head's loss teaches the shared encoder what the noisy buy
    labels cannot; the saved model is the buy model alone (same tensors as without the head); a
    carted column without aux_cart changes nothing; and a cancelled run resumes to the same weights
    (the head's state is in the checkpoint)."""
    train, valid = data
    truth = train.keys["label"].to_numpy()
    rng = np.random.default_rng(0)
    noisy = train.subset(np.arange(len(train)))
    noisy.keys["label"] = np.where(rng.random(len(truth)) < 0.5, rng.integers(0, 2, len(truth)), truth)
    tc = TrainConfig(epochs=4, batch_size=128, lr=3e-3, seed=0)
    plain = fit_transformer(tiny_config(), noisy, valid, tc)
    noisy.keys["carted"] = truth
    ignored = fit_transformer(tiny_config(), noisy, valid, tc)
    assert _same_weights(ignored.model, plain.model)
    multi_tc = TrainConfig(**{**tc.to_dict(), "aux_cart": 1.0})
    multi = fit_transformer(tiny_config(), noisy, valid, multi_tc)
    y_valid = valid.keys["label"]
    auc_plain = roc_auc_score(y_valid, predict_transformer(plain.model, valid))
    auc_multi = roc_auc_score(y_valid, predict_transformer(multi.model, valid))
    assert auc_plain < 0.8 and auc_multi > auc_plain + 0.08          # measured: 0.746 and 0.879
    assert {k: v.shape for k, v in multi.model.state_dict().items()} == \
        {k: v.shape for k, v in plain.model.state_dict().items()}

    resumed = _cancelled_after_epoch_1_then_resumed(noisy, valid, multi_tc, tmp_path)
    assert resumed.resumed_from == 1 and _same_weights(resumed.model, multi.model)
    # another cart target is another run: its checkpoint is not resumed
    other = noisy.subset(np.arange(len(noisy)))
    other.keys["carted"] = 1 - truth
    lines: list[str] = []
    assert fit_transformer(tiny_config(), other, valid, multi_tc, checkpoint_dir=tmp_path,
                           log=lines.append).resumed_from == 0 and "another run" in lines[0]


def test_a_cart_head_without_its_target_is_refused(data):
    train, valid = data
    tc = TrainConfig(epochs=1, aux_cart=0.5)
    with pytest.raises(ModelError, match="'carted' column"):
        fit_transformer(tiny_config(), train, valid, tc)
    never = train.subset(np.arange(len(train)))
    never.keys["carted"] = 0
    with pytest.raises(EligibilityError, match=r"one class only \(0 of 1,500"):
        fit_transformer(tiny_config(), never, valid, tc)
    never.keys["carted"] = np.nan
    with pytest.raises(ModelError, match="must be 0 or 1"):
        fit_transformer(tiny_config(), never, valid, tc)
    with pytest.raises(ValueError, match=r"TrainConfig\.aux_cart"):
        TrainConfig(aux_cart=-0.1)
