"""Cutoffs, horizons, the label definition and the time-based split.

At a cutoff T a user is described by events at or before T; the label is 1 when the user buys in
(T, T + H] (scope ``any``) or buys in a candidate category (scope ``category``).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.errors import DataError, EligibilityError

if TYPE_CHECKING:
    from core.data.store import Store

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SCOPES = ("any", "category")

# A point in time as callers hold it: a python or pandas datetime, a numpy datetime64 (a DuckDB
# result), or ISO text (a card or a command line). Naive values are UTC.
TimeLike = datetime | np.datetime64 | str


def parse_duration(text: str) -> timedelta:
    """``"30min"``, ``"6h"``, ``"1d"``, ``"7d"``, ``"2w"`` -> timedelta; DataError on anything else."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise DataError(f"{text!r} is not a duration.", title="Bad duration",
                        hint="Write a positive number and a unit: 30min, 6h, 1d, 7d or 2w.")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


@dataclass(frozen=True)
class LabelSpec:
    """What a row means and what its label is.

    horizon: H, the window after the cutoff in which a buy makes the label 1 (duration text).
    scope: ``any`` (buys anything) or ``category`` (buys in a category touched before T).
    lookback: history window before T (duration text); None = all history.
    max_len: events kept per sequence (the most recent), >= 1.
    cutoff_step: distance between training cutoffs; None = the horizon.
    max_train_cutoffs: how many earlier cutoffs feed training, >= 1.
    """

    horizon: str = "1d"
    scope: str = "any"
    lookback: str | None = None
    max_len: int = 100
    cutoff_step: str | None = None
    max_train_cutoffs: int = 6

    def __post_init__(self) -> None:
        parse_duration(self.horizon)
        if self.lookback is not None:
            parse_duration(self.lookback)
        if self.cutoff_step is not None:
            parse_duration(self.cutoff_step)
        if self.scope not in SCOPES:
            raise DataError(f"scope must be one of {SCOPES}, got {self.scope!r}.", title="Bad scope")
        if int(self.max_len) < 1:
            raise DataError(f"max_len must be >= 1, got {self.max_len}.", title="Bad max_len")
        if int(self.max_train_cutoffs) < 1:
            raise DataError(f"max_train_cutoffs must be >= 1, got {self.max_train_cutoffs}.",
                            title="Bad max_train_cutoffs")

    @property
    def horizon_td(self) -> timedelta:
        return parse_duration(self.horizon)

    @property
    def step_td(self) -> timedelta:
        return parse_duration(self.cutoff_step or self.horizon)

    @property
    def lookback_td(self) -> timedelta | None:
        return parse_duration(self.lookback) if self.lookback else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


# ---------------------------------------------------------------------------------------------
# Cutoffs and the time split
# ---------------------------------------------------------------------------------------------

# scope ``category``: at most this many candidate categories per (user, cutoff), the ones the user
# touched most recently before T (ties broken by category text). Keeps rows per user bounded.
MAX_CANDIDATE_CATEGORIES = 5

# Name of the small cutoff table registered on a cursor (a code constant, never user input).
_CUTOFFS_VIEW = "il_cutoffs"


def _to_datetime(value: TimeLike | None) -> datetime:
    """A naive UTC ``datetime`` from a pandas/numpy/python timestamp."""
    if value is None or (not isinstance(value, datetime) and pd.isna(value)):
        raise DataError("a cutoff or dataset time is missing.", title="Missing time",
                        hint="Ingest the dataset again so its time range is recorded.")
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _floor(moment: datetime, unit: timedelta) -> datetime:
    """Round ``moment`` down to a whole multiple of ``unit`` (since the epoch)."""
    epoch = datetime(1970, 1, 1)
    return epoch + ((moment - epoch) // unit) * unit


@dataclass
class CutoffPlan:
    """Where the time split falls for one dataset and label definition.

    Three time-ordered windows, each used for one thing only:

    train_cutoffs: training cutoffs, oldest first; every window (T, T + H] ends at or before
        ``valid_cutoff`` so no training label looks into the validation window.
    valid_cutoff: the window before the test window, ``test_cutoff - H``; its labels serve early
        stopping, hyper-parameter search, ensemble weights and calibration (everything that
        selects).
    test_cutoff: the last complete window, ``ts_max - H`` rounded down to the whole minute (whole
        second for horizons under a minute); its labels are only reported, never selected on.
        None in plans of models trained before the test window existed.
    score_cutoff: the dataset's last event time; scoring describes users as of this moment.
    """

    train_cutoffs: list[datetime]
    valid_cutoff: datetime
    score_cutoff: datetime
    test_cutoff: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"train_cutoffs": [t.isoformat() for t in self.train_cutoffs],
                "valid_cutoff": self.valid_cutoff.isoformat(),
                "test_cutoff": self.test_cutoff.isoformat() if self.test_cutoff else None,
                "score_cutoff": self.score_cutoff.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CutoffPlan:
        test = data.get("test_cutoff")
        return cls(train_cutoffs=[_to_datetime(t) for t in data["train_cutoffs"]],
                   valid_cutoff=_to_datetime(data["valid_cutoff"]),
                   score_cutoff=_to_datetime(data["score_cutoff"]),
                   test_cutoff=_to_datetime(test) if test else None)

    @property
    def splits(self) -> tuple[str, ...]:
        """The labelled splits of this plan: train, valid and (when it has one) test."""
        return ("train", "valid", "test") if self.test_cutoff is not None else ("train", "valid")

    @property
    def report_split(self) -> str:
        """The split whose figures are reported: ``test``; ``valid`` for plans without one."""
        return "test" if self.test_cutoff is not None else "valid"

    @property
    def last_label_cutoff(self) -> datetime:
        """The latest labelled cutoff (test, else validation)."""
        return self.test_cutoff or self.valid_cutoff


def time_range(store: Store, dataset: str) -> tuple[datetime, datetime]:
    """(ts_min, ts_max) of a dataset: the ``datasets`` row, else computed from ``events``."""
    row = store.dataset(dataset)   # NotFoundError names the datasets that exist
    ts_min, ts_max = row.get("ts_min"), row.get("ts_max")
    if ts_min is None or ts_max is None or pd.isna(ts_min) or pd.isna(ts_max):
        ts_min, ts_max = store.fetchone(
            "SELECT min(ts), max(ts) FROM events WHERE dataset = ?", [dataset]) or (None, None)
    if ts_min is None or ts_max is None:
        raise DataError(f"dataset {dataset!r} has no events.", title="Empty dataset",
                        hint="Ingest a file with events into it first.")
    return _to_datetime(ts_min), _to_datetime(ts_max)


def plan_cutoffs(store: Store, dataset: str, spec: LabelSpec) -> CutoffPlan:
    """The time split: test at the last complete window, validation before it, training before that.

    ``test_cutoff = ts_max - H`` (rounded down to the minute), ``valid_cutoff = test_cutoff - H``
    (so the validation labels end where the test window starts), and the training cutoffs are
    ``valid_cutoff - k * step`` for k = 1, 2, ... keeping those whose window ends at or before
    ``valid_cutoff`` and that leave at least one step of history after ``ts_min``; at most
    ``spec.max_train_cutoffs`` of them (the most recent), returned oldest first. The list is empty
    when the dataset is too short; :func:`check_eligibility` then explains what to change.
    """
    ts_min, ts_max = time_range(store, dataset)
    horizon, step = spec.horizon_td, spec.step_td
    unit = timedelta(minutes=1) if horizon >= timedelta(minutes=1) else timedelta(seconds=1)
    test = _floor(ts_max - horizon, unit)
    valid = test - horizon
    earliest = ts_min + step          # at least one step of history before a training cutoff
    train: list[datetime] = []
    k = 1
    while len(train) < int(spec.max_train_cutoffs):
        cutoff = valid - k * step
        if cutoff < earliest:
            break
        if cutoff + horizon <= valid:
            train.append(cutoff)
        k += 1
    return CutoffPlan(train_cutoffs=sorted(train), valid_cutoff=valid, score_cutoff=ts_max, test_cutoff=test)


# ---------------------------------------------------------------------------------------------
# Example rows and labels, all in SQL
# ---------------------------------------------------------------------------------------------

# Label of scope ``any``: a buy in (T, T + H] (buys are few, so the range join is small).
_BOUGHT_ANY_SQL = """
    SELECT DISTINCT b.user_id, c.cutoff
    FROM events b JOIN c ON b.ts > c.cutoff AND b.ts <= c.hi
    WHERE b.dataset = ? AND b.behavior = 'buy'"""

# Rows of scope ``any`` with a lookback: (user, cutoff) where the user's last event at or before
# T lies after lo = T - lookback. The ASOF join finds that last event per user and cutoff without
# expanding every event against every cutoff.
_EXAMPLES_ANY_LOOKBACK_SQL = f"""
WITH c AS (SELECT cutoff, split, lo, hi FROM {_CUTOFFS_VIEW}),
ev AS (SELECT user_id, ts FROM events WHERE dataset = ?),
grid AS (SELECT u.user_id, c.cutoff, c.split, c.lo
         FROM (SELECT DISTINCT user_id FROM ev) u CROSS JOIN c),
active AS (
    SELECT g.user_id, g.cutoff, g.split
    FROM grid g ASOF JOIN ev e ON g.user_id = e.user_id AND g.cutoff >= e.ts
    WHERE e.ts > g.lo),
bought AS ({_BOUGHT_ANY_SQL})
SELECT a.user_id, a.cutoff, (bo.user_id IS NOT NULL)::INTEGER AS label, a.split
FROM active a LEFT JOIN bought bo ON a.user_id = bo.user_id AND a.cutoff = bo.cutoff
"""

# Rows of scope ``any`` over all history: a user is a row at T when their first event is at or
# before T: one aggregate pass over the events.
_EXAMPLES_ANY_SQL = f"""
WITH c AS (SELECT cutoff, split, lo, hi FROM {_CUTOFFS_VIEW}),
first AS (SELECT user_id, min(ts) AS first_ts FROM events WHERE dataset = ? GROUP BY user_id),
active AS (SELECT f.user_id, c.cutoff, c.split FROM first f JOIN c ON f.first_ts <= c.cutoff),
bought AS ({_BOUGHT_ANY_SQL})
SELECT a.user_id, a.cutoff, (bo.user_id IS NOT NULL)::INTEGER AS label, a.split
FROM active a LEFT JOIN bought bo ON a.user_id = bo.user_id AND a.cutoff = bo.cutoff
"""

# Rows of scope ``category``: (user, cutoff, category) for the categories the user touched in the
# lookback before T, the MAX_CANDIDATE_CATEGORIES most recent ones. Label: a buy in that category
# in (T, T + H].
_EXAMPLES_CATEGORY_SQL = f"""
WITH c AS (SELECT cutoff, split, lo, hi FROM {_CUTOFFS_VIEW}),
ev AS (SELECT user_id, category, ts FROM events WHERE dataset = ? AND category IS NOT NULL),
grid AS (SELECT p.user_id, p.category, c.cutoff, c.split, c.lo
         FROM (SELECT DISTINCT user_id, category FROM ev) p CROSS JOIN c),
touched AS (
    SELECT g.user_id, g.category, g.cutoff, g.split, e.ts AS last_touch
    FROM grid g ASOF JOIN ev e
      ON g.user_id = e.user_id AND g.category = e.category AND g.cutoff >= e.ts
    WHERE g.lo IS NULL OR e.ts > g.lo
    QUALIFY row_number() OVER (PARTITION BY g.user_id, g.cutoff
                               ORDER BY e.ts DESC, g.category) <= ?),
bought AS (
    SELECT DISTINCT b.user_id, b.category, c.cutoff
    FROM events b JOIN c ON b.ts > c.cutoff AND b.ts <= c.hi
    WHERE b.dataset = ? AND b.behavior = 'buy' AND b.category IS NOT NULL)
SELECT t.user_id, t.cutoff, t.category, (bo.user_id IS NOT NULL)::INTEGER AS label, t.split
FROM touched t LEFT JOIN bought bo
  ON t.user_id = bo.user_id AND t.category = bo.category AND t.cutoff = bo.cutoff
"""


_COUNTS_HEAD = ("SELECT split, count(*) FILTER (label = 1) AS pos, "
                "count(*) FILTER (label = 0) AS neg FROM (")
_COUNTS_TAIL = ") GROUP BY split"


def _cutoff_frame(spec: LabelSpec, cutoffs: list[tuple[datetime, str]]) -> pd.DataFrame:
    """The registered cutoff table: cutoff, split, lo (lookback start or NULL), hi (T + H)."""
    lookback = spec.lookback_td
    return pd.DataFrame({
        "cutoff": pd.Series([t for t, _ in cutoffs], dtype="datetime64[us]"),
        "split": pd.Series([s for _, s in cutoffs], dtype=object),
        "lo": pd.Series([t - lookback if lookback else pd.NaT for t, _ in cutoffs],
                        dtype="datetime64[us]"),
        "hi": pd.Series([t + spec.horizon_td for t, _ in cutoffs], dtype="datetime64[us]"),
    })


def _examples_query(spec: LabelSpec, dataset: str) -> tuple[str, list[str | int]]:
    if spec.scope == "category":
        return _EXAMPLES_CATEGORY_SQL, [dataset, MAX_CANDIDATE_CATEGORIES, dataset]
    if spec.lookback_td is not None:
        return _EXAMPLES_ANY_LOOKBACK_SQL, [dataset, dataset]
    return _EXAMPLES_ANY_SQL, [dataset, dataset]


def _run_examples(store: Store, dataset: str, spec: LabelSpec,
                  cutoffs: list[tuple[datetime, str]], counts: bool = False) -> pd.DataFrame:
    """Run the examples query over ``cutoffs``: the rows, or (counts) positives and negatives
    per split."""
    keys = ["cutoff", "user_id"] + (["category"] if spec.scope == "category" else [])
    query, params = _examples_query(spec, dataset)
    sql = _COUNTS_HEAD + query + _COUNTS_TAIL if counts else query + " ORDER BY " + ", ".join(keys)
    with store.cursor() as cur:
        store.register_df(cur, _CUTOFFS_VIEW, _cutoff_frame(spec, cutoffs))
        return cur.execute(sql, params).df()


def _empty_examples(spec: LabelSpec) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {"user_id": pd.Series([], dtype=object),
                                     "cutoff": pd.Series([], dtype="datetime64[us]")}
    if spec.scope == "category":
        columns["category"] = pd.Series([], dtype=object)
    columns["label"] = pd.Series([], dtype="int64")
    columns["split"] = pd.Series([], dtype=object)
    return pd.DataFrame(columns)


SPLITS = ("train", "valid", "test")


def _plan_cutoffs_for(plan: CutoffPlan, splits: tuple[str, ...]) -> list[tuple[datetime, str]]:
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise DataError(f"unknown split(s) {sorted(unknown)}; use {', '.join(map(repr, SPLITS))}.",
                        title="Bad split")
    out = [(t, "train") for t in plan.train_cutoffs] if "train" in splits else []
    if "valid" in splits:
        out.append((plan.valid_cutoff, "valid"))
    if "test" in splits and plan.test_cutoff is not None:
        out.append((plan.test_cutoff, "test"))
    return out


def build_examples(store: Store, dataset: str, spec: LabelSpec, plan: CutoffPlan, *,
                   splits: tuple[str, ...] = SPLITS) -> pd.DataFrame:
    """Labelled rows for the training, validation and/or test cutoffs.

    Columns: user_id, cutoff, [category when scope == category], label (0/1), split
    (train|valid|test). One row per user with >= 1 event in the lookback at or before the cutoff
    (per user and candidate category for scope ``category``), ordered by cutoff, user_id, category.
    """
    cutoffs = _plan_cutoffs_for(plan, tuple(splits))
    if not cutoffs:
        return _empty_examples(spec)
    frame = _run_examples(store, dataset, spec, cutoffs)
    frame["label"] = frame["label"].astype("int64")
    return frame


def scoring_examples(store: Store, dataset: str, spec: LabelSpec, cutoff: TimeLike) -> pd.DataFrame:
    """Rows to score at ``cutoff`` (usually the dataset's last event): same columns, label NaN,
    split ``score``."""
    frame = _run_examples(store, dataset, spec, [(_to_datetime(cutoff), "score")])
    frame["label"] = np.nan
    return frame


def labels_at(store: Store, dataset: str, spec: LabelSpec, cutoff: TimeLike) -> pd.DataFrame:
    """The rows of :func:`scoring_examples` at ``cutoff`` with their labels (the same SQL as the
    training rows), split ``realized``: what happened after a scoring run once (T, T + H] is in
    the data."""
    frame = _run_examples(store, dataset, spec, [(_to_datetime(cutoff), "realized")])
    frame["label"] = frame["label"].astype("int64")
    return frame


# The auxiliary target of multi-task training (``TrainConfig.aux_cart``): the row's user puts
# something in the cart in (T, T + H] (in the row's category for scope ``category``). Carts are
# several times as frequent as buys, so every training row gets a second, denser signal about the
# same horizon. A semi-join of the rows (registered with their index ``i``) against the carts.
_ROWS_VIEW = "il_aux_rows"
_CARTED_SQL = f"""
SELECT DISTINCT r.i
FROM {_ROWS_VIEW} r JOIN events e
  ON e.user_id = r.user_id AND e.ts > r.cutoff AND e.ts <= r.hi{{category}}
WHERE e.dataset = ? AND e.behavior = 'cart'
"""


def carted_in_horizon(store: Store, dataset: str, spec: LabelSpec, rows: pd.DataFrame) -> np.ndarray:
    """1 where the row's user carts in (cutoff, cutoff + H], else 0; int8, aligned with ``rows``
    (columns user_id, cutoff and, for scope ``category``, category: example rows). The label of the
    auxiliary head that ``TrainConfig.aux_cart`` trains beside the buy label."""
    frame = pd.DataFrame({
        "i": np.arange(len(rows), dtype=np.int64),
        "user_id": rows["user_id"].astype(str).to_numpy(),
        "cutoff": pd.to_datetime(rows["cutoff"]).astype("datetime64[us]").to_numpy(),
    })
    frame["hi"] = frame["cutoff"] + spec.horizon_td
    on_category = ""
    if spec.scope == "category":
        frame["category"] = rows["category"].to_numpy()
        on_category = " AND e.category = r.category"
    out = np.zeros(len(rows), dtype=np.int8)
    if len(rows) == 0:
        return out
    with store.cursor() as cur:
        store.register_df(cur, _ROWS_VIEW, frame)
        hit = cur.execute(_CARTED_SQL.format(category=on_category), [dataset]).fetchnumpy()["i"]
    out[np.asarray(hit, dtype=np.int64)] = 1
    return out


# ---------------------------------------------------------------------------------------------
# Eligibility
# ---------------------------------------------------------------------------------------------

@dataclass
class Eligibility:
    """Positives and negatives in each split, and whether that is enough to learn from.

    windows: number of training cutoffs (each one a window of length H before validation).
    ok: training and validation hold at least ``min_pos`` positives and ``min_neg`` negatives,
        the test window at least ``min_test_pos`` / ``min_neg`` (when the plan has one), windows >= 1.
    message: one paragraph with the counts and, when not ok, what to change.
    """

    train_pos: int
    train_neg: int
    valid_pos: int
    valid_neg: int
    windows: int
    ok: bool
    message: str
    test_pos: int = 0
    test_neg: int = 0

    def require(self) -> Eligibility:
        """Return self when ok, else raise :class:`EligibilityError` with the message."""
        if not self.ok:
            raise EligibilityError(self.message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A test window needs this many buyers at least: with fewer, a ROC-AUC's 95 % interval is wider
# than the differences between model kinds (about +-0.1 at 20 positives), so the figures would
# mislead more than inform.
MIN_TEST_POSITIVES = 20


def check_eligibility(store: Store, dataset: str, spec: LabelSpec, plan: CutoffPlan | None = None,
                      *, min_pos: int = 10, min_neg: int = 10,
                      min_test_pos: int = MIN_TEST_POSITIVES) -> Eligibility:
    """Count positives/negatives per split (in SQL, without building the rows) and judge them."""
    plan = plan or plan_cutoffs(store, dataset, spec)
    counts = dict.fromkeys(SPLITS, (0, 0))
    cutoffs = _plan_cutoffs_for(plan, SPLITS)
    for split, pos, neg in _run_examples(store, dataset, spec, cutoffs,
                                         counts=True).itertuples(index=False):
        counts[split] = (int(pos), int(neg))
    (tp, tn), (vp, vn), (sp, sn) = counts["train"], counts["valid"], counts["test"]
    windows = len(plan.train_cutoffs)
    what = "buyers" if spec.scope == "any" else "category buys"
    text = (f"Dataset {dataset!r} with horizon {spec.horizon} (scope {spec.scope}): "
            f"training has {tp:,} positives and {tn:,} negatives over {windows} cutoff window(s); "
            f"validation (cutoff {plan.valid_cutoff:%Y-%m-%d %H:%M} UTC) has {vp:,} positives and "
            f"{vn:,} negatives")
    if plan.test_cutoff is not None:
        text += (f"; the test window (cutoff {plan.test_cutoff:%Y-%m-%d %H:%M} UTC, only reported) "
                 f"has {sp:,} positives and {sn:,} negatives.")
    else:
        text += "."
    problems = []
    if windows < 1:
        problems.append(f"the data ends too soon after it starts to fit a training window of "
                        f"{spec.horizon} before the validation and test windows (it needs at least "
                        f"{spec.horizon} of history plus three windows)")
    needs = [("training positives", tp, min_pos), ("training negatives", tn, min_neg),
             ("validation positives", vp, min_pos), ("validation negatives", vn, min_neg)]
    if plan.test_cutoff is not None:
        needs += [("test positives", sp, min_test_pos), ("test negatives", sn, min_neg)]
    for name, value, need in needs:
        if value < need:
            problems.append(f"{name}: {value:,} < {need}")
    ok = not problems
    if ok:
        message = text + " Enough to train and to measure on the test window."
    else:
        scope_hint = ", scope 'any' instead of 'category'" if spec.scope == "category" else ""
        message = (text + " Not enough to learn from and measure honestly: " + "; ".join(problems) + ". "
                   f"Use a dataset with a longer history or more {what}, a shorter horizon "
                   f"(e.g. --horizon {_shorter(spec.horizon_td)}){scope_hint}, or another "
                   f"dataset.")
    return Eligibility(train_pos=tp, train_neg=tn, valid_pos=vp, valid_neg=vn, windows=windows,
                       ok=ok, message=message, test_pos=sp, test_neg=sn)


def _shorter(horizon: timedelta) -> str:
    """A suggestion for a shorter horizon in the duration syntax."""
    seconds = horizon.total_seconds() / 4
    if seconds >= 86400:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h"
    return f"{max(1, int(seconds // 60))}min"
