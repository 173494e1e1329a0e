"""Cutoffs, labels, candidate categories and the eligibility check (core/labels.py)."""
from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from core.errors import DataError, EligibilityError
from core.modeling.labels import (
    MAX_CANDIDATE_CATEGORIES,
    CutoffPlan,
    LabelSpec,
    build_examples,
    carted_in_horizon,
    check_eligibility,
    parse_duration,
    plan_cutoffs,
    scoring_examples,
)
from tests.event_rows import add_events

DAY0 = datetime(2024, 1, 1)


def at(hours: float, minutes: float = 0) -> datetime:
    return DAY0 + timedelta(hours=hours, minutes=minutes)


@pytest.fixture
def tiny(store):
    """Six users around the cutoffs 01:00 (train) and 02:00 (valid) with H = 1h."""
    add_events(store, "tiny", [
        ("u1", "i1", "A", "view", at(0, 10)), ("u1", "i2", "B", "buy", at(1, 30)),
        ("u2", "i1", "A", "view", at(0, 20)), ("u2", "i1", "A", "buy", at(2, 30)),
        ("u3", "i3", "C", "view", at(1, 30)),
        ("u4", "i4", "A", "view", at(0, 0)), ("u4", "i4", "A", "buy", at(1, 0)),
        ("u5", "i5", "B", "view", at(0, 30)), ("u5", "i5", "B", "buy", at(2, 0)),
        ("u6", "i9", "Z", "view", at(5, 0)),
    ])
    return store


TINY_PLAN = CutoffPlan(train_cutoffs=[at(1)], valid_cutoff=at(2), score_cutoff=at(5))


def labels_of(frame: pd.DataFrame) -> dict:
    keys = ["user_id", "cutoff"] + (["category"] if "category" in frame else [])
    return {tuple(k): int(v) for k, v in zip(frame[keys].itertuples(index=False), frame["label"], strict=True)}


def test_parse_duration_accepts_units_and_refuses_junk():
    assert parse_duration("30min") == timedelta(minutes=30)
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration("7d") == timedelta(days=7)
    for bad in ("", "soon", "-1d", "0h", "3 parsecs"):
        with pytest.raises(DataError, match="not a duration"):
            parse_duration(bad)


def test_real_two_hour_slice_plan_with_30min_horizon(store, samples):
    from core.data.ingest import ingest_file

    ingest_file(store, samples / "taobao" / "UserBehavior_slice_2h.csv", dataset="slice")
    spec = LabelSpec(horizon="30min")
    plan = plan_cutoffs(store, "slice", spec)
    # events 09:00-11:10:11 +08:00 = 01:00-03:10:11 UTC: test history up to 10:40 local, label = a
    # buy by 11:10; validation 30 minutes before (labels end where the test window starts); training
    # cutoffs every 30 minutes before that, each with >= 30min history
    assert plan.test_cutoff == datetime(2017, 11, 26, 2, 40)
    assert plan.valid_cutoff == datetime(2017, 11, 26, 2, 10)
    assert plan.train_cutoffs == [datetime(2017, 11, 26, 1, 40)]
    assert plan.score_cutoff == datetime(2017, 11, 26, 3, 10, 11)
    assert CutoffPlan.from_dict(plan.to_dict()) == plan
    examples = build_examples(store, "slice", spec, plan)
    # every row and label against the raw events: a row per user with an event at or before T,
    # label 1 when the user buys in (T, T + 30min]
    events = store.df("SELECT user_id, behavior::VARCHAR AS behavior, ts FROM events WHERE dataset = 'slice'")
    buys = events[events.behavior == "buy"]
    expected = []
    for split, cutoff in ([("train", t) for t in plan.train_cutoffs] + [("valid", plan.valid_cutoff)]
                          + [("test", plan.test_cutoff)]):
        users = set(events.loc[events.ts <= cutoff, "user_id"])
        buyers = set(buys.loc[(buys.ts > cutoff) & (buys.ts <= cutoff + timedelta(minutes=30)), "user_id"])
        expected += [(u, cutoff, int(u in buyers), split) for u in users]
    got = sorted(map(tuple, examples[["user_id", "cutoff", "label", "split"]].itertuples(index=False)))
    assert got == sorted(expected)
    assert examples.groupby("split")["label"].sum().min() > 50


def test_shorter_step_keeps_training_windows_out_of_validation(store):
    add_events(store, "d", [("u", "i", "c", "view", DAY0 + timedelta(hours=h)) for h in range(0, 240, 3)])
    spec = LabelSpec(horizon="1d", cutoff_step="6h", max_train_cutoffs=5)
    plan = plan_cutoffs(store, "d", spec)
    assert plan.test_cutoff == datetime(2024, 1, 10, 21) - timedelta(days=1)
    assert plan.valid_cutoff == plan.test_cutoff - timedelta(days=1)
    assert len(plan.train_cutoffs) == 5
    assert plan.train_cutoffs == sorted(plan.train_cutoffs)
    for t in plan.train_cutoffs:
        assert t + timedelta(days=1) <= plan.valid_cutoff
    steps = {b - a for a, b in zip(plan.train_cutoffs, plan.train_cutoffs[1:], strict=False)}
    assert steps == {timedelta(hours=6)}


def test_tiny_dataset_labels_and_rows(tiny):
    spec = LabelSpec(horizon="1h")
    examples = build_examples(tiny, "tiny", spec, TINY_PLAN)
    assert list(examples.columns) == ["user_id", "cutoff", "label", "split"]
    assert labels_of(examples) == {
        ("u1", at(1)): 1,   # buy at 01:30 in (01:00, 02:00]
        ("u2", at(1)): 0,   # buy at 02:30 is after the window
        ("u4", at(1)): 0,   # a buy exactly at T is history, not the label
        ("u5", at(1)): 1,   # a buy exactly at T + H counts
        ("u1", at(2)): 0, ("u2", at(2)): 1, ("u3", at(2)): 0, ("u4", at(2)): 0,
        ("u5", at(2)): 0,
    }                       # u3 has no event before 01:00; u6 none before 02:00
    assert (examples.loc[examples.cutoff == at(1), "split"] == "train").all()
    assert (examples.loc[examples.cutoff == at(2), "split"] == "valid").all()
    only_valid = build_examples(tiny, "tiny", spec, TINY_PLAN, splits=("valid",))
    assert set(only_valid["split"]) == {"valid"} and len(only_valid) == 5


def test_lookback_limits_who_is_a_row(tiny):
    spec = LabelSpec(horizon="1h", lookback="30min")
    examples = build_examples(tiny, "tiny", spec, TINY_PLAN, splits=("train",))
    # only u4 has an event in (00:30, 01:00]; u5's view at exactly 00:30 is outside
    assert set(examples["user_id"]) == {"u4"}


def test_category_scope_rows_labels_and_cap(tiny):
    # u7 touches 7 categories before 01:00 and buys in the most recent and the oldest one
    add_events(tiny, "tiny", [("u7", f"x{k}", f"K{k}", "view", at(0, 5 * k)) for k in range(7)]
               + [("u7", "x6", "K6", "buy", at(1, 10)), ("u7", "x0", "K0", "buy", at(1, 20))])
    spec = LabelSpec(horizon="1h", scope="category")
    examples = build_examples(tiny, "tiny", spec, TINY_PLAN, splits=("train",))
    assert list(examples.columns) == ["user_id", "cutoff", "category", "label", "split"]
    labels = labels_of(examples)
    assert labels[("u1", at(1), "A")] == 0        # u1 bought in B, a category it had not touched
    assert ("u1", at(1), "B") not in labels
    assert labels[("u4", at(1), "A")] == 0
    u7 = examples[examples.user_id == "u7"]
    assert len(u7) == MAX_CANDIDATE_CATEGORIES
    assert set(u7["category"]) == {f"K{k}" for k in range(2, 7)}   # the 5 most recent
    assert labels[("u7", at(1), "K6")] == 1                        # K0 bought, but not a candidate


def test_scoring_examples(tiny):
    rows = scoring_examples(tiny, "tiny", LabelSpec(horizon="1h"), at(5))
    assert set(rows["user_id"]) == {"u1", "u2", "u3", "u4", "u5", "u6"}
    assert rows["label"].isna().all() and (rows["split"] == "score").all()
    assert (rows["cutoff"] == at(5)).all()


def test_eligibility_counts_and_refusal_message(tiny):
    spec = LabelSpec(horizon="1h")
    ok = check_eligibility(tiny, "tiny", spec, TINY_PLAN, min_pos=1, min_neg=1)
    assert (ok.train_pos, ok.train_neg, ok.valid_pos, ok.valid_neg, ok.windows) == (2, 2, 1, 4, 1)
    assert ok.ok and ok.require() is ok
    refused = check_eligibility(tiny, "tiny", spec, TINY_PLAN, min_pos=10, min_neg=1)
    assert not refused.ok
    with pytest.raises(EligibilityError) as info:
        refused.require()
    text = str(info.value)
    assert "2 positives and 2 negatives" in text and "1 positives and 4 negatives" in text
    assert "longer history" in text and "shorter horizon" in text and "another dataset" in text


def test_eligibility_counts_the_test_window_and_refuses_a_thin_one(tiny):
    spec = LabelSpec(horizon="1h")
    plan = CutoffPlan(train_cutoffs=[at(0, 30)], valid_cutoff=at(1), score_cutoff=at(5), test_cutoff=at(2))
    ok = check_eligibility(tiny, "tiny", spec, plan, min_pos=1, min_neg=1, min_test_pos=1)
    # the test window at 02:00 is the old validation cutoff of TINY_PLAN: 1 buyer, 4 non-buyers
    assert (ok.test_pos, ok.test_neg) == (1, 4) and (ok.valid_pos, ok.valid_neg) == (2, 2)
    assert ok.ok and "test window" in ok.message
    thin = check_eligibility(tiny, "tiny", spec, plan, min_pos=1, min_neg=1, min_test_pos=5)
    assert not thin.ok
    assert "test positives: 1 < 5" in thin.message and "1 positives and 4 negatives" in thin.message
    # training and validation alone would have been enough: the refusal is the test window's
    assert "training positives" not in thin.message and "validation positives" not in thin.message


def test_examples_of_the_three_windows_never_share_a_cutoff(tiny):
    spec = LabelSpec(horizon="1h")
    plan = CutoffPlan(train_cutoffs=[at(0, 30)], valid_cutoff=at(1), score_cutoff=at(5), test_cutoff=at(2))
    examples = build_examples(tiny, "tiny", spec, plan)
    by_split = examples.groupby("split")["cutoff"].unique()
    assert {s: list(v) for s, v in by_split.items()} == {
        "train": [pd.Timestamp(at(0, 30))], "valid": [pd.Timestamp(at(1))], "test": [pd.Timestamp(at(2))]}
    # the validation labels (01:00, 02:00] end where the test history begins
    assert plan.valid_cutoff + spec.horizon_td <= plan.test_cutoff


def test_eligibility_when_the_data_is_shorter_than_the_windows(tiny):
    spec = LabelSpec(horizon="2h")
    plan = plan_cutoffs(tiny, "tiny", spec)
    assert plan.train_cutoffs == []
    result = check_eligibility(tiny, "tiny", spec, plan)
    assert not result.ok and result.windows == 0
    assert "ends too soon" in result.message and "--horizon" in result.message


def test_plan_round_trips_through_dict():
    plan = CutoffPlan(train_cutoffs=[at(1), at(2)], valid_cutoff=at(3), score_cutoff=at(4, 30))
    assert CutoffPlan.from_dict(plan.to_dict()) == plan
    with_test = CutoffPlan(train_cutoffs=[at(1)], valid_cutoff=at(2), score_cutoff=at(4), test_cutoff=at(3))
    assert CutoffPlan.from_dict(with_test.to_dict()) == with_test
    assert with_test.splits == ("train", "valid", "test") and plan.splits == ("train", "valid")


def test_carted_in_horizon_marks_rows_whose_user_carts_after_the_cutoff_within_the_horizon(store):
    """The cart head's label: a cart in (T, T + H], the same half-open window as the buy label; in
    the row's category for scope ``category``; other behaviours and other datasets count nothing."""
    add_events(store, "shop", [
        ("c1", "i1", "A", "cart", at(1, 30)), ("c1", "i2", "A", "cart", at(1, 40)),   # two carts, one row
        ("c2", "i1", "A", "cart", at(1)),                     # at T: before the window
        ("c3", "i1", "B", "cart", at(2)),                     # at T + H: inside it; at T for cutoff 02:00
        ("c4", "i1", "A", "cart", at(3, 30)),                 # after both windows
        ("c5", "i1", "A", "buy", at(1, 30)), ("c5", "i1", "A", "view", at(1, 20)),
    ])
    add_events(store, "other", [("c4", "i1", "A", "cart", at(2, 30))])
    rows = pd.DataFrame({"user_id": ["c1", "c2", "c3", "c4", "c5", "c3", "c4", "nobody"],
                         "cutoff": [at(1)] * 5 + [at(2)] * 2 + [at(1)]})
    hour = LabelSpec(horizon="1h")
    assert carted_in_horizon(store, "shop", hour, rows).tolist() == [1, 0, 1, 0, 0, 0, 0, 0]
    assert carted_in_horizon(store, "other", hour, rows).tolist() == [0, 0, 0, 0, 0, 0, 1, 0]
    assert carted_in_horizon(store, "shop", LabelSpec(horizon="3h"), rows).tolist() == [1, 0, 1, 1, 0, 0, 1, 0]
    by_category = rows.iloc[:3].assign(category=["A", "A", "A"])
    by_category = pd.concat([by_category, by_category.assign(category="B")], ignore_index=True)
    spec = LabelSpec(horizon="1h", scope="category")
    assert carted_in_horizon(store, "shop", spec, by_category).tolist() == [1, 0, 0, 0, 0, 1]
    assert carted_in_horizon(store, "shop", hour, rows.iloc[:0]).tolist() == []
