"""Scoring runs, cohort queries and exports with an audit stamp.

``score_dataset`` scores every user at T = the dataset's last event into the ``scores`` table and
refreshes ``user_stats`` (what cohort filters read). A cohort is a :class:`CohortSpec` — a score cut
(top X %, a threshold, or a band) and filters — turned into one SQL WHERE clause with every value
bound; the same clause drives the summary, the user table, the contrast and the export, so they
always describe the same users.
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.data.schema import behavior_code_sql
from core.errors import DataError, NotFoundError
from core.progress import CancelToken, ProgressFn, report

if TYPE_CHECKING:
    from core.data.store import Store, Write
    from core.modeling.labels import TimeLike
    from models.artifact import LoadedModel

SCORE_CHUNK = 50_000                      # users scored per chunk (bounded memory for 1M users)
ACTIVITY_EDGES = (5, 30)                  # light < 5 events <= regular < 30 <= heavy
ACTIVITY_LEVELS = ("light", "regular", "heavy")
BANDS = ("high", "medium", "low")
DEFAULT_BAND_EDGES = (0.2, 0.5)           # low < 0.2 <= medium < 0.5 <= high
OFFER_COUNT = 3                           # categories offered per user (the Cohorts table, exports, filter)
OFFER_SOURCES = {"model": "model probability", "events": "from the user's events, not a model probability"}
# A value bound to a ``?`` of the cohort SQL.
Param = str | int | float | list[str] | None
SORTABLE = {"score": "score", "user_id": "user_id", "n_events": "n_events",
            "days_since_last": "days_since_last", "open_carts": "open_carts"}

_USER_STATS_SQL = """
WITH ev AS (SELECT user_id, item_id, category, behavior, ts FROM events WHERE dataset = ?),
per_user AS (
    SELECT user_id, count(*) AS n_events,
           count(*) FILTER (WHERE behavior = 'view') AS n_views,
           count(*) FILTER (WHERE behavior = 'cart') AS n_carts,
           count(*) FILTER (WHERE behavior = 'fav') AS n_favs,
           count(*) FILTER (WHERE behavior = 'buy') AS n_buys,
           min(ts) AS first_ts, max(ts) AS last_ts
    FROM ev GROUP BY user_id),
carts AS (
    SELECT user_id, count(*) AS open_carts FROM (
        SELECT user_id, item_id,
               max(ts) FILTER (WHERE behavior = 'cart') AS last_cart,
               max(ts) FILTER (WHERE behavior = 'buy') AS last_buy
        FROM ev WHERE behavior IN ('cart', 'buy') AND item_id IS NOT NULL GROUP BY user_id, item_id)
    WHERE last_cart IS NOT NULL AND (last_buy IS NULL OR last_buy < last_cart)
    GROUP BY user_id),
cats AS (
    SELECT user_id, first(category ORDER BY n DESC, category) AS top_category,
           list(category ORDER BY n DESC, category) AS categories
    FROM (SELECT user_id, category, count(*) AS n FROM ev WHERE category IS NOT NULL GROUP BY ALL)
    GROUP BY user_id)
SELECT ?, p.user_id, p.n_events, p.n_views, p.n_carts, p.n_favs, p.n_buys,
       coalesce(c.open_carts, 0), p.first_ts, p.last_ts, t.top_category, t.categories
FROM per_user p LEFT JOIN carts c USING (user_id) LEFT JOIN cats t USING (user_id)
"""


# -- scoring ----------------------------------------------------------------------------
def refresh_user_stats(w: Write) -> None:
    """Recompute ``user_stats`` for the write's dataset, as part of that write."""
    w.replace("user_stats", _USER_STATS_SQL, [w.dataset, w.dataset])


def predict_at(store: Store, model: LoadedModel, dataset: str, cutoff: TimeLike, *,
               progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> pd.DataFrame:
    """Score every user of ``dataset`` with a loaded model at ``cutoff``, in chunks of users.

    Only events at or before ``cutoff`` are read. Returns ``user_id``, [``category``,] ``score``
    in the order of :func:`core.modeling.labels.scoring_examples`.
    """
    from core.modeling.features import build_features
    from core.modeling.labels import scoring_examples
    from core.modeling.sequences import build_sequences

    spec = model.spec
    examples = scoring_examples(store, dataset, spec, cutoff)
    if examples.empty:
        raise DataError(f"dataset {dataset!r} has no users with events before {cutoff}.",
                        title="Nothing to score")
    scores = np.empty(len(examples), dtype=np.float64)
    for start in range(0, len(examples), SCORE_CHUNK):
        if cancel is not None:
            cancel.check()
        chunk = examples.iloc[start:start + SCORE_CHUNK].reset_index(drop=True)
        seq = (build_sequences(store, dataset, chunk, model.vocab, spec)
               if model.vocab is not None else None)
        feats = build_features(store, dataset, chunk, spec) if model.feature_names else None
        scores[start:start + len(chunk)] = model.predict(seq, feats)
        report(progress, min(start + SCORE_CHUNK, len(examples)), len(examples), "scoring users")
    frame = examples[["user_id"] + (["category"] if spec.scope == "category" else [])].copy()
    frame["score"] = scores
    return frame


def score_dataset(store: Store, model_dir: str | Path, dataset: str, *,
                  progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> pd.DataFrame:
    """Score every user at T = the dataset's last event; replace this model's rows in ``scores``
    and append the run to ``score_runs`` / ``score_history`` (one transaction).

    Returns one row per user (per user and candidate category for scope ``category``) with
    columns ``user_id``, [``category``,] ``score`` = P(buy within the model's horizon after T),
    highest first.
    """
    from models.artifact import load_model

    model = load_model(model_dir)
    info = store.dataset(dataset)
    cutoff = pd.Timestamp(info["ts_max"]).to_pydatetime()
    frame = predict_at(store, model, dataset, cutoff, progress=progress, cancel=cancel)
    staged = frame if "category" in frame else frame.assign(category=None)
    model_id = model.card["model_id"]
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    with store.write(dataset, "score") as w:
        w.cur.register("staged_scores", staged[["user_id", "category", "score"]])
        w.replace("scores", "SELECT ?, ?, user_id, CAST(category AS VARCHAR), score, ?, ? FROM staged_scores",
                  [model_id, dataset, cutoff, scored_at], key=model_id)
        # the run is also appended to the history (drift and cohort stability compare runs)
        run_id = uuid.uuid4().hex
        w.add("score_runs", "SELECT ?, ?, ?, ?, ?, count(DISTINCT user_id) FROM staged_scores",
              [run_id, model_id, dataset, cutoff, scored_at], key=run_id)
        w.add("score_history", "SELECT ?, user_id, CAST(category AS VARCHAR), score FROM staged_scores",
              [run_id], key=run_id)
        w.cur.unregister("staged_scores")
        refresh_user_stats(w)
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def scoring_runs(store: Store, dataset: str | None = None) -> pd.DataFrame:
    """One row per (model, dataset) scoring run: rows, cutoff, scored_at, mean score."""
    return store.df(
        "SELECT model_id, dataset, count(*) AS rows, max(cutoff) AS cutoff, max(scored_at) AS scored_at, "
        "avg(probability) AS mean_score FROM scores WHERE ? IS NULL OR dataset = ? "
        "GROUP BY model_id, dataset ORDER BY scored_at DESC", [dataset, dataset])


def require_run(store: Store, model_id: str, dataset: str) -> None:
    if not store.fetchone("SELECT 1 FROM scores WHERE model_id = ? AND dataset = ? LIMIT 1",
                          [model_id, dataset]):
        raise NotFoundError(f"model {model_id!r} has not scored dataset {dataset!r} yet.",
                            title="No scores yet",
                            hint="Press Re-score (or run `python -m core score --model DIR "
                                 "--dataset NAME`) first.")


def score_histogram(store: Store, model_id: str, dataset: str, bins: int = 50) -> pd.DataFrame:
    """Counts of scores in ``bins`` equal-width bins on [0, 1]: bin_left, bin_right, users."""
    require_run(store, model_id, dataset)
    frame = store.df(
        "SELECT least(floor(probability * ?), ? - 1)::INTEGER AS b, count(*) AS users FROM scores "
        "WHERE model_id = ? AND dataset = ? GROUP BY b ORDER BY b", [bins, bins, model_id, dataset])
    full = pd.DataFrame({"b": np.arange(bins)}).merge(frame, on="b", how="left").fillna({"users": 0})
    full["bin_left"] = full["b"] / bins
    full["bin_right"] = (full["b"] + 1) / bins
    return full[["bin_left", "bin_right", "users"]].astype({"users": "int64"})


# -- cohort definition ------------------------------------------------------------------
@dataclass(frozen=True)
class CohortSpec:
    """A score cut plus filters.

    mode: ``top`` (the top ``top_percent`` % of scored rows), ``threshold`` (score >= threshold) or
        ``band`` (``high`` >= edges[1] > ``medium`` >= edges[0] > ``low``).
    categories: keep users who touched any of these categories (empty = no filter).
    max_days_since_last / min_days_since_last: days between the user's last event and T.
    open_cart: True = only users with an item carted and not bought; False = only without.
    activity: any of ``light`` (< 5 events), ``regular`` (5-29), ``heavy`` (>= 30); empty = all.
    likely_categories: keep users whose :data:`OFFER_COUNT` offered categories include any of these
        ("likely to buy in C"): a category-scope model's highest-probability categories; for an
        any-scope model the user's most-touched categories (from events, not a probability).
    """

    mode: str = "top"
    top_percent: float = 5.0
    threshold: float = 0.5
    band: str = "high"
    band_edges: tuple[float, float] = DEFAULT_BAND_EDGES
    categories: tuple[str, ...] = ()
    max_days_since_last: float | None = None
    min_days_since_last: float | None = None
    open_cart: bool | None = None
    activity: tuple[str, ...] = ()
    likely_categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("top", "threshold", "band"):
            raise DataError(f"cohort mode must be top, threshold or band; got {self.mode!r}.",
                            title="Bad cohort")
        if not 0 < float(self.top_percent) <= 100:
            raise DataError(f"top_percent must be in (0, 100]; got {self.top_percent}.", title="Bad cohort")
        if not 0 <= float(self.threshold) <= 1:
            raise DataError(f"threshold must be in [0, 1]; got {self.threshold}.", title="Bad cohort")
        low, high = self.band_edges
        if not 0 <= low < high <= 1:
            raise DataError(f"band edges must satisfy 0 <= low < high <= 1; got {self.band_edges}.",
                            title="Bad cohort")
        if self.band not in BANDS:
            raise DataError(f"band must be one of {BANDS}; got {self.band!r}.", title="Bad cohort")
        unknown = set(self.activity) - set(ACTIVITY_LEVELS)
        if unknown:
            raise DataError(f"activity levels must be among {ACTIVITY_LEVELS}; got {sorted(unknown)}.",
                            title="Bad cohort")

    def describe(self) -> str:
        if self.mode == "top":
            cut = f"top {self.top_percent:g} %"
        elif self.mode == "threshold":
            cut = f"score >= {self.threshold:.3f}"
        else:
            low, high = self.band_edges
            cut = {"high": f"score >= {high:g}", "medium": f"{low:g} <= score < {high:g}",
                   "low": f"score < {low:g}"}[self.band] + f" ({self.band} band)"
        parts = [cut]
        if self.categories:
            parts.append("touched " + ", ".join(self.categories))
        if self.max_days_since_last is not None:
            parts.append(f"last visit <= {self.max_days_since_last:g} days ago")
        if self.min_days_since_last is not None:
            parts.append(f"last visit >= {self.min_days_since_last:g} days ago")
        if self.open_cart is not None:
            parts.append("has an open cart" if self.open_cart else "no open cart")
        if self.activity:
            parts.append("activity " + "/".join(self.activity))
        if self.likely_categories:
            parts.append(f"likely to buy in {', '.join(self.likely_categories)} (top {OFFER_COUNT} offers)")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, text: str) -> CohortSpec:
        """The spec from ``json.dumps(spec.to_dict())`` (lists back to tuples)."""
        raw = json.loads(text)
        for name in ("band_edges", "categories", "activity", "likely_categories"):
            if name in raw:
                raw[name] = tuple(raw[name])
        return cls(**raw)


# Every scored row joined with its user's stats and offers, ranked; parameters: model_id, dataset,
# the two activity edges, dataset. Offers: a category-scope run's OFFER_COUNT highest-probability
# categories of the user (offer_probabilities beside them); else the user's most-touched categories
# (offer_probabilities NULL).
_BASE_SQL = f"""
WITH run AS (
    SELECT user_id, category, probability AS score, cutoff,
           (row_number() OVER (ORDER BY probability DESC, user_id) - 1)::DOUBLE
               / count(*) OVER () AS score_rank
    FROM scores WHERE model_id = ? AND dataset = ?),
offers AS (
    SELECT user_id, list(category ORDER BY score DESC, category)[1:{OFFER_COUNT}] AS offer_categories,
           list(score ORDER BY score DESC, category)[1:{OFFER_COUNT}] AS offer_probabilities
    FROM run WHERE category IS NOT NULL GROUP BY user_id),
base AS (
    SELECT r.user_id, r.category, r.score, r.score_rank,
           u.n_events, u.n_views, u.n_carts, u.n_favs, u.n_buys, u.open_carts, u.last_ts,
           u.top_category, u.categories,
           date_diff('second', u.last_ts, r.cutoff) / 86400.0 AS days_since_last,
           CASE WHEN u.n_events < ? THEN 'light' WHEN u.n_events < ? THEN 'regular' ELSE 'heavy' END
               AS activity,
           coalesce(o.offer_categories, u.categories[1:{OFFER_COUNT}]) AS offer_categories,
           o.offer_probabilities
    FROM run r JOIN user_stats u ON u.dataset = ? AND u.user_id = r.user_id
    LEFT JOIN offers o ON o.user_id = r.user_id)
"""


def _where(spec: CohortSpec) -> tuple[str, list[Param]]:
    """The cohort's WHERE clause from constant snippets, and its bound values in order."""
    clauses: list[str] = []
    params: list[Param] = []
    if spec.mode == "top":
        clauses.append("score_rank < ?")
        params.append(float(spec.top_percent) / 100.0)
    elif spec.mode == "threshold":
        clauses.append("score >= ?")
        params.append(float(spec.threshold))
    else:
        low, high = (float(x) for x in spec.band_edges)
        if spec.band == "high":
            clauses.append("score >= ?")
            params.append(high)
        elif spec.band == "medium":
            clauses.append("score >= ? AND score < ?")
            params += [low, high]
        else:
            clauses.append("score < ?")
            params.append(low)
    if spec.categories:
        clauses.append("list_has_any(categories, ?::VARCHAR[])")
        params.append(list(spec.categories))
    if spec.max_days_since_last is not None:
        clauses.append("days_since_last <= ?")
        params.append(float(spec.max_days_since_last))
    if spec.min_days_since_last is not None:
        clauses.append("days_since_last >= ?")
        params.append(float(spec.min_days_since_last))
    if spec.open_cart is not None:
        clauses.append("open_carts > 0" if spec.open_cart else "open_carts = 0")
    if spec.activity:
        clauses.append("list_contains(?::VARCHAR[], activity)")
        params.append(list(spec.activity))
    if spec.likely_categories:
        clauses.append("list_has_any(offer_categories, ?::VARCHAR[])")
        params.append(list(spec.likely_categories))
    return " AND ".join(clauses), params


def cohort_sql(model_id: str, dataset: str, spec: CohortSpec) -> tuple[str, list[Param]]:
    """SQL selecting the cohort's rows (all base columns) and its bound parameters."""
    where, params = _where(spec)
    sql = _BASE_SQL + "SELECT * FROM base WHERE " + where
    return sql, [model_id, dataset, ACTIVITY_EDGES[0], ACTIVITY_EDGES[1], dataset, *params]


@dataclass
class CohortSummary:
    size: int                    # rows in the cohort
    total: int                   # rows scored
    expected_buyers: float       # sum of probabilities in the cohort
    mean_score: float
    min_score: float | None      # the score cut actually applied (lowest score in the cohort)
    description: str
    measured: dict[str, float] = field(default_factory=dict)  # precision/lift/recall at the cut, on held-out rows

    @property
    def share(self) -> float:
        return self.size / self.total if self.total else 0.0


def cohort_summary(store: Store, model_id: str, dataset: str, spec: CohortSpec,
                   held_out: pd.DataFrame | None = None) -> CohortSummary:
    """Size, expected buyers and, given the model's held-out rows (its test window), precision and
    lift at the cut."""
    require_run(store, model_id, dataset)
    sql, params = cohort_sql(model_id, dataset, spec)
    size, expected, mean, low = store.fetchone(
        "SELECT count(*), coalesce(sum(score), 0), coalesce(avg(score), 0), min(score) FROM ("
        + sql + ")", params) or (0, 0.0, 0.0, None)
    (total,) = store.fetchone("SELECT count(*) FROM scores WHERE model_id = ? AND dataset = ?",
                              [model_id, dataset]) or (0,)
    summary = CohortSummary(size=int(size), total=int(total), expected_buyers=float(expected),
                            mean_score=float(mean), min_score=None if low is None else float(low),
                            description=spec.describe())
    if held_out is not None and not held_out.empty:
        summary.measured = measured_at_cut(held_out, spec)
    return summary


def measured_at_cut(rows: pd.DataFrame, spec: CohortSpec) -> dict[str, float]:
    """Precision, recall and lift of the same score cut on a model's held-out ``rows`` (label,
    score: its test window).

    Filters are not applied here (they describe users as of T, not the test cutoff); the cut is the
    same rule: the same top %, threshold or band.
    """
    y = rows["label"].to_numpy(dtype=float)
    p = rows["score"].to_numpy(dtype=float)
    if spec.mode == "top":
        k = max(1, math.ceil(len(p) * spec.top_percent / 100.0))
        chosen = np.zeros(len(p), dtype=bool)
        chosen[np.argsort(-p, kind="stable")[:k]] = True
    elif spec.mode == "threshold":
        chosen = p >= spec.threshold
    else:
        low, high = spec.band_edges
        chosen = {"high": p >= high, "medium": (p >= low) & (p < high), "low": p < low}[spec.band]
    base_rate = float(y.mean()) if len(y) else float("nan")
    picked = int(chosen.sum())
    precision = float(y[chosen].mean()) if picked else float("nan")
    recall = float(y[chosen].sum() / y.sum()) if y.sum() else float("nan")
    return {"rows": picked, "precision": precision, "recall": recall, "base_rate": base_rate,
            "lift": precision / base_rate if picked and base_rate > 0 else float("nan")}


def offer_text(categories: Any, probabilities: Any) -> str:
    """One user's offers as text: ``c9 42 %, c1 13 %`` (model probabilities) or ``c2, c5 (from
    events)`` when there are no probabilities (an any-scope model)."""
    cats = [str(c) for c in categories] if _is_list(categories) else []
    if not cats:
        return ""
    if not _is_list(probabilities) or len(probabilities) != len(cats):
        return ", ".join(cats) + " (from events)"
    return ", ".join(f"{c} {100 * float(p):.0f} %" for c, p in zip(cats, probabilities, strict=True))


def _is_list(value: Any) -> bool:
    """A DuckDB list value (a Python list or numpy array), not a NULL (None, NaN or pd.NA)."""
    return isinstance(value, list | tuple | np.ndarray)


def _with_offers(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``offers`` (text, :func:`offer_text`) and ``offers_source`` (model | events) and drop the
    list columns they are made from."""
    has_probs = frame["offer_probabilities"].map(lambda v: _is_list(v) and len(v) > 0).astype(bool)
    frame["offers"] = [offer_text(c, p) for c, p in zip(frame["offer_categories"], frame["offer_probabilities"],
                                                        strict=True)]
    frame["offers_source"] = np.where(has_probs, "model", "events")
    return frame.drop(columns=["offer_categories", "offer_probabilities"])


def cohort_users(store: Store, model_id: str, dataset: str, spec: CohortSpec, *, order_by: str = "score",
                 descending: bool = True, limit: int = 50, offset: int = 0) -> pd.DataFrame:
    """One page of the cohort's users, sorted by a whitelisted column, with each user's offers
    (``offers`` text and ``offers_source``: ``model`` probabilities of a category-scope model, or
    ``events`` = the user's most-touched categories)."""
    if order_by not in SORTABLE:
        raise DataError(f"cannot sort by {order_by!r}; choose one of {', '.join(SORTABLE)}.",
                        title="Bad sort column")
    sql, params = cohort_sql(model_id, dataset, spec)
    direction = "DESC" if descending else "ASC"
    page = ("SELECT user_id, category, score, score_rank, activity, n_events, open_carts, "
            "days_since_last, top_category, offer_categories, offer_probabilities FROM (" + sql + ") ORDER BY "
            + SORTABLE[order_by] + " " + direction + ", user_id LIMIT ? OFFSET ?")
    return _with_offers(store.df(page, [*params, int(limit), int(offset)]))


# One scan of the scored base: each row flagged in or out of the cohort, then every comparison
# (key -> rows in the cohort, rows overall) from it. ``{where}`` is the cohort's WHERE clause.
_CONTRAST_SQL = _BASE_SQL + """,
flagged AS MATERIALIZED (
    SELECT user_id, top_category, n_views, n_carts, n_favs, n_buys, activity,
           CASE WHEN days_since_last < 1/24 THEN '< 1 hour' WHEN days_since_last < 1 THEN '1-24 hours'
                WHEN days_since_last < 3 THEN '1-3 days' WHEN days_since_last < 7 THEN '3-7 days'
                ELSE '7+ days' END AS recency,
           coalesce({where}, false) AS in_c
    FROM base),
users AS (SELECT user_id, bool_or(in_c) AS in_c FROM flagged GROUP BY user_id),
last3 AS (
    -- each user's three newest behaviours in one hash aggregate (max_by keeps them newest first;
    -- events at the same instant are ordered by behaviour code, so patterns are deterministic)
    SELECT user_id, array_to_string(list_reverse(
               max_by(behavior::VARCHAR, epoch_us(ts) * 8 + """ + behavior_code_sql("behavior") + """, 3)), '>') AS key
    FROM events WHERE dataset = ? AND user_id IN (SELECT user_id FROM users) GROUP BY user_id)
SELECT 'categories' AS part, top_category AS key,
       count(*) FILTER (WHERE in_c)::DOUBLE AS c, count(*)::DOUBLE AS a
FROM flagged WHERE top_category IS NOT NULL GROUP BY top_category
UNION ALL
SELECT 'behaviors', unnest(['view', 'cart', 'fav', 'buy']),
       unnest([sum(n_views) FILTER (WHERE in_c), sum(n_carts) FILTER (WHERE in_c),
               sum(n_favs) FILTER (WHERE in_c), sum(n_buys) FILTER (WHERE in_c)])::DOUBLE,
       unnest([sum(n_views), sum(n_carts), sum(n_favs), sum(n_buys)])::DOUBLE
FROM flagged
UNION ALL
SELECT 'recency', recency, count(*) FILTER (WHERE in_c), count(*) FROM flagged GROUP BY recency
UNION ALL
SELECT 'activity', activity, count(*) FILTER (WHERE in_c), count(*) FROM flagged GROUP BY activity
UNION ALL
SELECT 'patterns', l.key, count(*) FILTER (WHERE u.in_c), count(*)
FROM last3 l JOIN users u USING (user_id) GROUP BY l.key
"""
CONTRAST_ORDER = {
    "behaviors": ["view", "cart", "fav", "buy"],
    "recency": ["< 1 hour", "1-24 hours", "1-3 days", "3-7 days", "7+ days"],
    "activity": list(ACTIVITY_LEVELS),
}


def cohort_contrast(store: Store, model_id: str, dataset: str, spec: CohortSpec,
                    top: int = 10) -> dict[str, pd.DataFrame]:
    """What sets the cohort apart from everyone scored: categories, behaviour mix, recency,
    activity, and the patterns of each user's last three behaviours (e.g. ``view>cart>cart``).

    Each frame has columns ``key``, ``cohort`` (share within the cohort), ``everyone`` and
    ``ratio`` (cohort / everyone). Categories: the cohort's ``top`` most common; patterns: the
    ``top`` most over-represented that occur in the cohort; the others in their natural order.
    """
    where, params = _where(spec)
    rows = store.df(_CONTRAST_SQL.format(where=where),
                    [model_id, dataset, ACTIVITY_EDGES[0], ACTIVITY_EDGES[1], dataset, *params, dataset])
    out: dict[str, pd.DataFrame] = {}
    for part in ("categories", "behaviors", "recency", "activity", "patterns"):
        frame = rows[rows["part"] == part]
        c, a = frame["c"].fillna(0.0), frame["a"].fillna(0.0)
        frame = pd.DataFrame({
            "key": frame["key"].astype(str),
            "cohort": c / c.sum() if c.sum() else c * np.nan,
            "everyone": a / a.sum() if a.sum() else a * np.nan,
        })
        frame["ratio"] = frame["cohort"] / frame["everyone"].replace(0, np.nan)
        if part == "categories":
            frame = frame.sort_values(["cohort", "key"], ascending=[False, True]).head(top)
        elif part == "patterns":
            frame = (frame[frame["cohort"] > 0].sort_values(["ratio", "cohort", "key"],
                                                           ascending=[False, False, True]).head(top))
        else:
            order = CONTRAST_ORDER[part]
            frame = frame.assign(_o=frame["key"].map({k: i for i, k in enumerate(order)})).sort_values("_o")
            frame = frame.drop(columns="_o")
        out[part] = frame.reset_index(drop=True)
    return out


def value_curve(store: Store, model_id: str, dataset: str, spec: CohortSpec | None = None, *,
                margin: float = 10.0, cost: float = 1.0, budget: int | None = None,
                points: int = 200) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Expected value of contacting the top-k users of the cohort, for every k.

    value(k) = margin * (sum of the k highest probabilities) - cost * k. Returns the curve
    (k, share, expected_buyers, expected_value, min_score; about ``points`` rows) and the best cut:
    the k with the highest value, limited to ``budget`` users when given.
    """
    if margin < 0 or cost < 0:
        raise DataError("margin and contact cost must be >= 0.", title="Bad value inputs")
    spec = spec or CohortSpec(mode="top", top_percent=100)
    sql, params = cohort_sql(model_id, dataset, spec)
    curve = store.df(
        "WITH ranked AS (SELECT score, row_number() OVER (ORDER BY score DESC, user_id) AS k, "
        "sum(score) OVER (ORDER BY score DESC, user_id ROWS UNBOUNDED PRECEDING) AS expected_buyers "
        "FROM (" + sql + ")), n AS (SELECT count(*) AS total FROM ranked) "
        "SELECT k, k::DOUBLE / total AS share, expected_buyers, ? * expected_buyers - ? * k AS expected_value, "
        "score AS min_score FROM ranked, n "
        "WHERE k % greatest(1, total // ?) = 0 OR k = total OR (? IS NOT NULL AND k = ?) "
        "OR k = (SELECT arg_max(k2, ? * eb - ? * k2) FROM (SELECT k AS k2, expected_buyers AS eb FROM ranked "
        "        WHERE ? IS NULL OR k <= ?)) ORDER BY k",
        [*params, margin, cost, points, budget, budget, margin, cost, budget, budget])
    if curve.empty:
        return curve, {"k": 0, "expected_value": 0.0, "expected_buyers": 0.0, "min_score": None}
    eligible = curve if budget is None else curve[curve["k"] <= budget]
    best = (eligible.iloc[int(eligible["expected_value"].to_numpy().argmax())] if not eligible.empty
            else curve.iloc[0])
    return curve, {"k": int(best["k"]), "expected_value": float(best["expected_value"]),
                   "expected_buyers": float(best["expected_buyers"]), "min_score": float(best["min_score"])}


# -- export -----------------------------------------------------------------------------
_STAMP_LINES = ("model_id", "dataset", "run_id", "cutoff", "export_id", "dataset_sha256", "cut", "rows",
                "exported_at")


def latest_run_id(store: Store, model_id: str, dataset: str) -> str | None:
    """The ``score_runs`` id of the run the ``scores`` table holds for (model, dataset): the run
    recorded with the same ``scored_at``; None for scores written without a recorded run."""
    row = store.fetchone(
        "SELECT r.run_id FROM score_runs r WHERE r.model_id = ? AND r.dataset = ? AND r.scored_at = "
        "(SELECT max(scored_at) FROM scores WHERE model_id = ? AND dataset = ?) ORDER BY r.run_id LIMIT 1",
        [model_id, dataset, model_id, dataset])
    return None if row is None else str(row[0])


def export_cohort(store: Store, model_id: str, dataset: str, spec: CohortSpec, path: str | Path, *,
                  fmt: str | None = None) -> dict[str, Any]:
    """Write the cohort to CSV or Parquet with an audit stamp; returns the stamp.

    The stamp names the export (``export_id``), the scoring run it cut (``run_id``, ``model_id``,
    ``dataset``, ``cutoff``), the cohort (``cut`` text and ``cohort`` spec), the SQL and its values,
    ``rows`` and ``exported_at``. CSV: the stamp is written as ``# key: value`` lines before the
    header and as a ``<file>.audit.json`` sidecar. Parquet: the stamp is in the file's key-value
    metadata (``intentlens.audit``) and in the sidecar. On a writable store the stamp and the
    exported (user, category) rows are also recorded (tables ``exports`` / ``export_rows``), so
    :func:`core.insight.realized.realized_runs` can tell, once the run's horizon has passed, how
    the exported users bought (its ``exports`` frame carries the same ``export_id``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    fmt = fmt or ("parquet" if path.suffix == ".parquet" else "csv")
    if fmt not in ("csv", "parquet"):
        raise DataError(f"export format must be csv or parquet; got {fmt!r}.", title="Bad export format")
    require_run(store, model_id, dataset)
    sql, params = cohort_sql(model_id, dataset, spec)
    select = ("SELECT user_id, category, score, activity, n_events, open_carts, days_since_last, "
              "top_category, offer_categories, offer_probabilities FROM (" + sql + ") ORDER BY score DESC, user_id")
    frame = _with_offers(store.df(select, params))
    info = store.dataset(dataset)
    (cutoff,) = store.fetchone("SELECT max(cutoff) FROM scores WHERE model_id = ? AND dataset = ?",
                               [model_id, dataset]) or (None,)
    exported_at = datetime.now(UTC).replace(microsecond=0)
    stamp = {
        "export_id": uuid.uuid4().hex, "run_id": latest_run_id(store, model_id, dataset),
        "model_id": model_id, "dataset": dataset,
        "cutoff": None if cutoff is None else pd.Timestamp(cutoff).isoformat(),
        "dataset_sha256": info.get("sha256"),
        "dataset_ingested_at": str(info.get("ingested_at")), "cut": spec.describe(),
        "cohort": spec.to_dict(), "sql": select, "params": [str(p) for p in params],
        "rows": len(frame), "path": str(path.resolve()),
        "exported_at": exported_at.isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"intentlens.audit"] = json.dumps(stamp).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)
    else:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            for key in _STAMP_LINES:
                handle.write(f"# {key}: {stamp[key]}\n")
            handle.write("# sql: " + " ".join(select.split()) + "\n")
            handle.write("# params: " + json.dumps(stamp["params"]) + "\n")
            frame.to_csv(handle, index=False)
    Path(str(path) + ".audit.json").write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    if not store.read_only:
        _record_export(store, stamp, frame, cutoff, exported_at.replace(tzinfo=None))
    return stamp


def _record_export(store: Store, stamp: dict[str, Any], frame: pd.DataFrame, cutoff: Any,
                   exported_at: datetime) -> None:
    """The stamp into ``exports`` and the exported keys into ``export_rows`` (one transaction)."""
    export_id = stamp["export_id"]
    with store.write(stamp["dataset"], "export") as w:
        w.add("exports", "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?",
              [export_id, stamp["run_id"], stamp["model_id"], stamp["dataset"], cutoff,
               stamp["cut"], json.dumps(stamp["cohort"]), stamp["rows"], stamp["path"], exported_at], key=export_id)
        w.cur.register("exported_keys", frame[["user_id", "category"]])
        w.add("export_rows", "SELECT ?, user_id, CAST(category AS VARCHAR) FROM exported_keys", [export_id],
              key=export_id)
        w.cur.unregister("exported_keys")


# -- lookups for the Cohorts and Explain pages --------------------------------------------
MAX_SUGGESTIONS = 20                      # user ids a prefix search returns at most


def search_users(store: Store, dataset: str, prefix: str, limit: int = MAX_SUGGESTIONS) -> list[str]:
    """User ids of ``dataset`` that start with ``prefix`` (shortest first, then in text order).

    Reads ``user_stats`` (one row per user) when the dataset has been scored, else the events;
    at most ``limit`` (<= :data:`MAX_SUGGESTIONS`) ids, so it stays cheap with a million users.
    """
    limit = max(1, min(int(limit), MAX_SUGGESTIONS))
    prefix = str(prefix or "")
    if store.fetchone("SELECT 1 FROM user_stats WHERE dataset = ? LIMIT 1", [dataset]):
        sql = ("SELECT user_id FROM user_stats WHERE dataset = ? AND starts_with(user_id, ?) "
               "ORDER BY length(user_id), user_id LIMIT ?")
    else:
        sql = ("SELECT user_id FROM (SELECT DISTINCT user_id FROM events WHERE dataset = ? "
               "AND starts_with(user_id, ?)) ORDER BY length(user_id), user_id LIMIT ?")
    return [row[0] for row in store.fetchall(sql, [dataset, prefix, limit])]


def random_user(store: Store, model_id: str, dataset: str, band: str = "high",
                band_edges: tuple[float, float] = DEFAULT_BAND_EDGES, seed: int = 0) -> str:
    """One user drawn from a score band of the model's scoring run (the same ``seed`` draws the
    same user). NotFoundError when the run is missing or the band holds nobody."""
    low, high = band_edges
    spec = CohortSpec(mode="band", band=band, band_edges=(low, high))
    require_run(store, model_id, dataset)
    sql, params = cohort_sql(model_id, dataset, spec)
    row = store.fetchone("SELECT user_id FROM (" + sql + ") ORDER BY hash(user_id, ?), user_id LIMIT 1",
                         [*params, int(seed)])
    if row is None:
        raise NotFoundError(f"no user of dataset {dataset!r} has a score in the {spec.describe()}.",
                            title="Empty band", hint="Pick another band.")
    return str(row[0])


def cohort_sample(store: Store, model_id: str, dataset: str, spec: CohortSpec, n: int) -> list[str]:
    """Up to ``n`` distinct user ids of the cohort in a fixed pseudo-random order (md5 of the id,
    as ``core.insight.explain`` samples everyone), for global drivers and other per-user work."""
    require_run(store, model_id, dataset)
    sql, params = cohort_sql(model_id, dataset, spec)
    rows = store.fetchall("SELECT DISTINCT user_id FROM (" + sql + ") ORDER BY md5(user_id), user_id LIMIT ?",
                          [*params, max(0, int(n))])
    return [row[0] for row in rows]


RECENT_EVENTS = 20                        # an any-scope user's offers: categories of their last 20 events


def user_offers(store: Store, model_id: str, dataset: str, user_id: str,
                recent: int = RECENT_EVENTS) -> pd.DataFrame:
    """What to offer one scored user: ``category``, ``probability``, ``events``, ``source``.

    A category-scope model's run: the user's :data:`OFFER_COUNT` highest-probability categories
    (``source`` ``model``). An any-scope model has no per-category probability: the categories of
    the user's last ``recent`` events at or before the run's cutoff, most events first (then most
    recent), ``probability`` NaN and ``source`` ``events``. Empty when the user was not scored.
    """
    require_run(store, model_id, dataset)
    frame = store.df(
        "SELECT category, probability, NULL::BIGINT AS events, 'model' AS source FROM scores "
        "WHERE model_id = ? AND dataset = ? AND user_id = ? AND category IS NOT NULL "
        "ORDER BY probability DESC, category LIMIT ?", [model_id, dataset, user_id, OFFER_COUNT])
    if not frame.empty:
        return frame
    return store.df(
        "WITH t AS (SELECT max(cutoff) AS cutoff FROM scores WHERE model_id = ? AND dataset = ? AND user_id = ?), "
        "last AS (SELECT e.category, e.ts FROM events e, t WHERE e.dataset = ? AND e.user_id = ? "
        "         AND e.ts <= t.cutoff ORDER BY e.ts DESC LIMIT ?) "
        "SELECT category, NULL::DOUBLE AS probability, count(*) AS events, 'events' AS source FROM last "
        "WHERE category IS NOT NULL GROUP BY category ORDER BY events DESC, max(ts) DESC, category LIMIT ?",
        [model_id, dataset, user_id, dataset, user_id, max(1, int(recent)), OFFER_COUNT])


def cohort_categories(store: Store, dataset: str, limit: int = 200) -> pd.DataFrame:
    """Categories users touched, most users first (options for the category-interest filter):
    ``category``, ``users``. Reads ``user_stats`` (empty before the first scoring run)."""
    return store.df(
        "SELECT category, count(*) AS users FROM (SELECT unnest(categories) AS category FROM user_stats "
        "WHERE dataset = ?) WHERE category IS NOT NULL GROUP BY category ORDER BY users DESC, category "
        "LIMIT ?", [dataset, max(1, int(limit))])


def days_since_last_range(store: Store, dataset: str) -> tuple[float, float]:
    """(min, max) days between a user's last event and the dataset's last event; (0, 0) when the
    dataset has no user stats yet."""
    row = store.fetchone(
        "SELECT min(d), max(d) FROM (SELECT date_diff('second', last_ts, max(last_ts) OVER ()) / 86400.0 "
        "AS d FROM user_stats WHERE dataset = ?)", [dataset])
    if row is None or row[0] is None:
        return 0.0, 0.0
    return float(row[0]), float(row[1])
