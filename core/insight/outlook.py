"""Demand outlook: expected purchasers per category over the next horizon, with an interval.

A category-scope model gives, for each user and each of the categories they touched recently
(``core.modeling.labels.MAX_CANDIDATE_CATEGORIES`` at most), P(the user buys in that category within
the horizon after T). Treating users as independent, the number of purchasers of a category is a sum
of independent Bernoulli variables with those probabilities: a Poisson-binomial variable. Its mean is
the sum of the probabilities (the expected purchasers) and its central interval says how far the
realised count may fall from it by chance alone, if the probabilities are right. It does not widen
for a model's own errors: a miscalibrated model gives intervals that cover less than they say.

:func:`poisson_binomial_pmf` is exact (recursive convolution, one user at a time); for a category
with more than :data:`EXACT_MAX_ROWS` scored users :func:`poisson_binomial_interval` uses the normal
approximation with the same mean and variance sum p(1 - p), which is then at least a few units wide
wherever buyers are not vanishingly rare. :func:`outlook` puts the model's scores beside the last
complete horizon's actual buyers per category (DuckDB SQL on the events) and, for a cutoff in the
past, the buyers that did follow (a backtest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from core.errors import DataError, ModelError

if TYPE_CHECKING:
    from core.data.store import Store
    from core.modeling.labels import TimeLike

EXACT_MAX_ROWS = 2000        # users per category up to which the interval is exact (O(n^2) work)
DEFAULT_LEVEL = 0.9          # the interval's stated coverage
OUTLOOK_COLUMNS = ["category", "users", "expected", "low", "high", "last_actual", "realized", "method"]
TRAIN_HINT = ("Train a category-scope model: `python -m core train --dataset NAME --scope category` "
              "(or pick the scope 'category' on the Train page), then score the dataset with it.")


# -- the Poisson-binomial distribution ---------------------------------------------------------
def _check_probabilities(p: Any) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64).ravel()
    if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
        raise DataError("probabilities must be finite numbers in [0, 1].", title="Bad probabilities")
    return arr


def _check_level(level: float) -> float:
    if not 0 < float(level) < 1:
        raise DataError(f"the interval level must be in (0, 1), e.g. 0.9; got {level}.", title="Bad level")
    return float(level)


def poisson_binomial_pmf(p: Any) -> np.ndarray:
    """P(K = k) for k = 0..n, K the number of successes of independent Bernoulli(p_i) trials.

    Exact recursive convolution: adding trial i moves mass from k to k + 1 with probability p_i.
    """
    probs = _check_probabilities(p)
    pmf = np.zeros(probs.size + 1)
    pmf[0] = 1.0
    for i, q in enumerate(probs):
        pmf[1:i + 2] = pmf[1:i + 2] * (1.0 - q) + pmf[:i + 1] * q
        pmf[0] *= 1.0 - q
    return pmf


def poisson_binomial_interval(p: Any, level: float = DEFAULT_LEVEL) -> tuple[int, int, str]:
    """The central ``level`` interval (low, high, method) of a Poisson-binomial count.

    Exact (method ``exact``, up to :data:`EXACT_MAX_ROWS` trials): low is the smallest k with
    P(K <= k) >= (1 - level) / 2 and high the smallest k with P(K <= k) >= (1 + level) / 2, so each
    tail outside [low, high] holds at most (1 - level) / 2 and the interval covers at least
    ``level`` (more when the count is small and the steps of its distribution are coarse).
    Beyond (method ``normal``): mean ± z · sqrt(sum p(1 - p)) rounded outwards to whole buyers and
    kept within [0, n].
    """
    level = _check_level(level)
    probs = _check_probabilities(p)
    lower_q, upper_q = (1 - level) / 2, (1 + level) / 2
    if probs.size <= EXACT_MAX_ROWS:
        cdf = np.cumsum(poisson_binomial_pmf(probs))
        tol = 1e-12                       # rounding in the cumulative sum must not move a quantile
        low = int(np.searchsorted(cdf, lower_q - tol, side="left"))
        high = int(np.searchsorted(cdf, upper_q - tol, side="left"))
        return low, min(high, probs.size), "exact"
    mean, sd = float(probs.sum()), math.sqrt(float((probs * (1 - probs)).sum()))
    z = float(norm.ppf(upper_q))
    return (max(0, math.floor(mean - z * sd)), min(probs.size, math.ceil(mean + z * sd)), "normal")


# -- per category --------------------------------------------------------------------------------
def category_outlook(scores: pd.DataFrame, level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """Expected purchasers per category from (user, category) probabilities.

    ``scores``: ``user_id``, ``category``, ``score`` = P(the user buys in the category within the
    horizon), one row per pair. Returns ``category``, ``users`` (pairs scored), ``expected`` (sum of
    the scores), ``low``, ``high`` (:func:`poisson_binomial_interval`) and ``method``, most expected
    first (ties by category).
    """
    level = _check_level(level)
    missing = {"category", "score"} - set(scores.columns)
    if missing:
        raise DataError(f"the scores lack the columns {sorted(missing)}.", title="Bad scores")
    rows = []
    for category, part in scores.dropna(subset=["category"]).groupby("category", sort=False):
        p = part["score"].to_numpy(dtype=np.float64)
        low, high, method = poisson_binomial_interval(p, level)
        rows.append({"category": str(category), "users": int(p.size), "expected": float(p.sum()),
                     "low": low, "high": high, "method": method})
    frame = pd.DataFrame(rows, columns=["category", "users", "expected", "low", "high", "method"])
    return frame.sort_values(["expected", "category"], ascending=[False, True], kind="stable").reset_index(drop=True)


def category_buyers(store: Store, dataset: str, start: TimeLike, end: TimeLike) -> pd.DataFrame:
    """Distinct users with a buy in each category in (``start``, ``end``]: ``category``, ``buyers``."""
    return store.df(
        "SELECT CAST(category AS VARCHAR) AS category, count(DISTINCT user_id) AS buyers FROM events "
        "WHERE dataset = ? AND behavior = 'buy' AND category IS NOT NULL AND ts > ? AND ts <= ? "
        "GROUP BY ALL ORDER BY buyers DESC, category",
        [dataset, pd.Timestamp(start).to_pydatetime(), pd.Timestamp(end).to_pydatetime()])


# -- one model's outlook ---------------------------------------------------------------------------
@dataclass
class OutlookFrame:
    """A category-scope model's demand outlook for one dataset at cutoff T."""

    frame: pd.DataFrame            # OUTLOOK_COLUMNS, most expected first
    model_id: str
    dataset: str
    cutoff: datetime               # T: scores use events at or before it
    horizon: str                   # H, e.g. "1d": the outlook covers (T, T + H]
    level: float                   # the interval's stated coverage
    last_window: tuple[datetime, datetime]   # (T - H, T]: the last complete horizon (``last_actual``)
    source: str                    # "scoring run" (the model's stored scores) or "scored now"
    categories: int                # categories with a score, before ``top``

    @property
    def next_window(self) -> tuple[datetime, datetime]:
        """(T, T + H]: the window the outlook is for."""
        return self.cutoff, self.cutoff + (self.last_window[1] - self.last_window[0])

    def totals(self) -> dict[str, float]:
        """Expected purchases and last-horizon buyers summed over the shown categories (a user
        who buys in two categories counts in both)."""
        return {"expected": float(self.frame["expected"].sum()),
                "last_actual": float(self.frame["last_actual"].sum())}

    def describe(self) -> str:
        start, end = self.next_window
        last_start, last_end = self.last_window
        return (f"Expected purchasers per category in ({start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}] "
                f"(horizon {self.horizon}) from model {self.model_id} ({self.source}), with "
                f"{self.level:.0%} Poisson-binomial intervals; last complete horizon "
                f"({last_start:%Y-%m-%d %H:%M}, {last_end:%Y-%m-%d %H:%M}] beside it.")

    def to_dict(self) -> dict[str, Any]:
        start, end = self.next_window
        return {"model_id": self.model_id, "dataset": self.dataset, "cutoff": self.cutoff.isoformat(),
                "horizon": self.horizon, "level": self.level, "window": [start.isoformat(), end.isoformat()],
                "last_window": [t.isoformat() for t in self.last_window], "source": self.source,
                "categories": self.categories, "totals": self.totals(),
                "rows": self.frame.replace({np.nan: None}).to_dict(orient="records")}


def require_category_scope(model_dir: str | Path) -> dict[str, Any]:
    """The model's card when its label scope is ``category``; ModelError saying how to train one."""
    from models.artifact import load_card

    card = load_card(model_dir)
    scope = (card.get("label") or {}).get("scope", "any")
    if scope != "category":
        raise ModelError(f"model {card.get('model_id') or Path(model_dir).name!r} predicts whether a user buys "
                         f"anything (scope {scope!r}); a demand outlook per category needs a model of scope "
                         "'category'.", title="Not a category-scope model", hint=TRAIN_HINT)
    return card


def _stored_scores(store: Store, model_id: str, dataset: str) -> tuple[pd.DataFrame, datetime] | None:
    """The model's scoring run of the dataset (user_id, category, score) and its cutoff, or None."""
    frame = store.df("SELECT user_id, category, probability AS score, cutoff FROM scores "
                     "WHERE model_id = ? AND dataset = ?", [model_id, dataset])
    if frame.empty:
        return None
    return frame.drop(columns="cutoff"), pd.Timestamp(frame["cutoff"].max()).to_pydatetime()


def outlook(store: Store, model_dir: str | Path, dataset: str, *, level: float = DEFAULT_LEVEL,
            cutoff: TimeLike | None = None, top: int | None = None) -> OutlookFrame:
    """Expected purchasers per category over the next horizon after T, for a category-scope model.

    T is ``cutoff``, or by default the dataset's last event. The (user, category) probabilities come
    from the model's stored scoring run when it was made at T, else the model scores the dataset at
    T now (nothing is written). Beside each category: ``last_actual``, the users who bought in it in
    the last complete horizon (T - H, T], and ``realized``, those who bought in (T, T + H] when that
    window lies inside the data (a backtest; NaN otherwise). ``top``: keep the ``top`` categories
    with the most expected purchasers. ModelError for a model of scope ``any``.
    """
    from core.insight.cohorts import predict_at
    from core.modeling.labels import LabelSpec, parse_duration
    from core.modeling.model_store import load_model_cached

    level = _check_level(level)
    if top is not None and int(top) < 1:
        raise DataError(f"top must be at least 1; got {top}.", title="Bad top")
    card = require_category_scope(model_dir)
    info = store.dataset(dataset)        # NotFoundError naming the datasets there are
    model_id = str(card.get("model_id") or Path(model_dir).name)
    spec = LabelSpec.from_dict(card.get("label") or {})
    last_event = pd.Timestamp(info["ts_max"]).to_pydatetime()
    t = last_event if cutoff is None else pd.Timestamp(cutoff).to_pydatetime()
    stored = _stored_scores(store, model_id, dataset)
    if stored is not None and stored[1] == t:
        scores, source = stored[0], "scoring run"
    else:
        scores = predict_at(store, load_model_cached(model_dir), dataset, t)
        source = "scored now"
    horizon: timedelta = parse_duration(spec.horizon)
    frame = category_outlook(scores, level)
    categories = len(frame)
    if top is not None:
        frame = frame.head(int(top))
    last = category_buyers(store, dataset, t - horizon, t).set_index("category")["buyers"]
    frame["last_actual"] = frame["category"].map(last).fillna(0).astype("int64")
    if t + horizon <= last_event:
        after = category_buyers(store, dataset, t, t + horizon).set_index("category")["buyers"]
        frame["realized"] = frame["category"].map(after).fillna(0).astype("float64")
    else:
        frame["realized"] = np.nan
    return OutlookFrame(frame=frame[OUTLOOK_COLUMNS].reset_index(drop=True), model_id=model_id,
                        dataset=dataset, cutoff=t, horizon=spec.horizon, level=level,
                        last_window=(t - horizon, t), source=source, categories=categories)
