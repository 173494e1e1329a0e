"""Aggregate features per example row, for the baselines and for SHAP summaries.

Everything is computed inside DuckDB from the events at or before each row's cutoff (and inside
the lookback): one SQL query per chunk of users, scattered into a float32 matrix with numpy.
Windows scale with the horizon H: ``h1`` = the last H, ``h4`` = the last 4H, ``h16`` = the last
16H, ``all`` = the whole lookback. Hours of day are UTC, as in the sequences.

Features (``FEATURE_NAMES``, every scope):

* ``n_<behavior>_<window>``: events of each behaviour per window; ``n_events_<window>`` all of them.
* ``log_secs_since_<behavior>``: ln(1 + seconds from the last such event to the cutoff);
  ln(1 + 10 years) when never. ``log_secs_since_first`` (history length) and
  ``log_secs_since_session_start`` (how long the current session has run) likewise.
* ``n_items``, ``n_categories``: distinct items and categories touched.
* ``open_carts``: items whose last cart is later than their last buy and last removal.
* ``open_carts_top_category_h1``: those open carts in the category the user viewed most in the last
  H (a tie goes to the category viewed last): a shopper back in the aisle of something they have in
  the cart. No other user-level feature says which category an open cart is in, so without it a
  forgotten cart and a cart being compared look alike to the feature models, and to the GBDT that
  teaches the Transformer (``bench/quality.py`` has what it gave).
* ``cart_per_view`` = carts / (views + 1), ``buy_per_cart`` = buys / (carts + 1).
* ``n_sessions`` (session_id changes where the source has it, else gaps over 30 minutes) and
  ``events_per_session``.
* ``share_hours_00_06`` ... ``share_hours_18_24``: the share of events in each quarter of the day.

Scope ``category`` adds ``CATEGORY_FEATURE_NAMES``, the same signals restricted to the row's
candidate category: ``n_cat_<behavior>_<window>`` (view, cart, fav, buy; h1, h4, all),
``log_secs_since_cat_<behavior>``, ``log_secs_since_cat_touch``, ``cat_share`` (share of the
user's events in the category) and ``cat_open_carts``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from core.data.schema import BEHAVIORS, behavior_code_sql
from core.errors import DataError
from core.modeling.labels import LabelSpec
from core.progress import ProgressFn, report

if TYPE_CHECKING:
    from core.data.store import Store

# Window name -> multiple of the horizon (None = the whole lookback).
WINDOWS: tuple[tuple[str, int | None], ...] = (("h1", 1), ("h4", 4), ("h16", 16), ("all", None))
CATEGORY_WINDOWS: tuple[tuple[str, int | None], ...] = (("h1", 1), ("h4", 4), ("all", None))
CATEGORY_BEHAVIORS: tuple[str, ...] = ("view", "cart", "fav", "buy")
SESSION_GAP_SECONDS = 1800          # a new session after 30 minutes without events
NEVER_SECONDS = 10 * 365 * 86400    # "seconds since" when the behaviour never happened
HOUR_BUCKETS: tuple[tuple[int, int], ...] = ((0, 6), (6, 12), (12, 18), (18, 24))
CHUNK_USERS = 50_000

_LOG_NEVER = f"{math.log1p(NEVER_SECONDS):.6f}"


def _window_filter(multiple: int | None) -> str:
    return "" if multiple is None else f" AND age <= {multiple} * h"


# -- the user-level aggregate expressions, name -> SQL over the `ev` rows of one key ----------
def _user_expressions() -> dict[str, str]:
    out: dict[str, str] = {}
    for b in BEHAVIORS:
        for name, multiple in WINDOWS:
            out[f"n_{b}_{name}"] = f"count(*) FILTER (behavior = '{b}'{_window_filter(multiple)})"
    for name, multiple in WINDOWS:
        cond = "TRUE" + _window_filter(multiple)
        out[f"n_events_{name}"] = f"count(*) FILTER ({cond})"
    for b in BEHAVIORS:
        out[f"log_secs_since_{b}"] = (
            f"coalesce(ln(1 + min(age) FILTER (behavior = '{b}')), {_LOG_NEVER})")
    out["log_secs_since_first"] = f"coalesce(ln(1 + max(age)), {_LOG_NEVER})"
    out["log_secs_since_session_start"] = (
        f"coalesce(ln(1 + min(age) FILTER (new_session = 1)), {_LOG_NEVER})")
    out["n_items"] = "count(DISTINCT item_id)"
    out["n_categories"] = "count(DISTINCT category)"
    out["open_carts"] = "NULL"   # filled from the `carts` CTE in the final SELECT
    out["open_carts_top_category_h1"] = "NULL"   # from the `cart_browse` CTE in the final SELECT
    out["cart_per_view"] = ("count(*) FILTER (behavior = 'cart') / "
                            "(count(*) FILTER (behavior = 'view') + 1)")
    out["buy_per_cart"] = ("count(*) FILTER (behavior = 'buy') / "
                           "(count(*) FILTER (behavior = 'cart') + 1)")
    out["n_sessions"] = "sum(new_session)"
    out["events_per_session"] = "count(*) / greatest(sum(new_session), 1)"
    for lo, hi in HOUR_BUCKETS:
        out[f"share_hours_{lo:02d}_{hi:02d}"] = (
            f"count(*) FILTER (hour(ts) >= {lo} AND hour(ts) < {hi}) / count(*)")
    return out


def _category_expressions() -> dict[str, str]:
    out: dict[str, str] = {}
    for b in CATEGORY_BEHAVIORS:
        for name, multiple in CATEGORY_WINDOWS:
            out[f"n_cat_{b}_{name}"] = f"count(*) FILTER (behavior = '{b}'{_window_filter(multiple)})"
    for b in CATEGORY_BEHAVIORS:
        out[f"log_secs_since_cat_{b}"] = (
            f"coalesce(ln(1 + min(age) FILTER (behavior = '{b}')), {_LOG_NEVER})")
    out["log_secs_since_cat_touch"] = f"coalesce(ln(1 + min(age)), {_LOG_NEVER})"
    out["cat_share"] = "NULL"        # count in category / all events, in the final SELECT
    out["cat_open_carts"] = "NULL"   # from the `carts` CTE, in the final SELECT
    return out


_USER_EXPR = _user_expressions()
_CATEGORY_EXPR = _category_expressions()
FEATURE_NAMES: list[str] = list(_USER_EXPR)
CATEGORY_FEATURE_NAMES: list[str] = list(_CATEGORY_EXPR)


def feature_names(spec: LabelSpec) -> list[str]:
    """The columns :func:`build_features` returns for this label definition."""
    return FEATURE_NAMES + (CATEGORY_FEATURE_NAMES if spec.scope == "category" else [])


# -- SQL ---------------------------------------------------------------------------------------
_KEYS_VIEW = "il_feat_keys"      # pair_idx, user_id, cutoff, lo, h: one per (user, cutoff)
_ROWS_VIEW = "il_feat_rows"      # row_idx, pair_idx, category: one per example row

_EV_SQL = f"""
SELECT k.pair_idx, k.h, e.ts, e.behavior, e.item_id, e.category,
       epoch(k.cutoff - e.ts) AS age,
       CASE WHEN lag(e.ts) OVER w IS NULL THEN 1
            WHEN e.session_id IS NOT NULL AND lag(e.session_id) OVER w IS NOT NULL
                 THEN (e.session_id <> lag(e.session_id) OVER w)::INTEGER
            WHEN epoch(e.ts - lag(e.ts) OVER w) > {SESSION_GAP_SECONDS} THEN 1
            ELSE 0 END AS new_session
FROM {_KEYS_VIEW} k JOIN events e ON e.user_id = k.user_id AND e.ts <= k.cutoff
WHERE e.dataset = ? AND (k.lo IS NULL OR e.ts > k.lo)
WINDOW w AS (PARTITION BY k.pair_idx ORDER BY e.ts, {behavior_code_sql('e.behavior')}, e.item_id, e.session_id)
"""

# Per (key, item): is the last cart later than the last buy and the last removal? One row per open item.
_OPEN_ITEMS_SQL = """
SELECT pair_idx, item_id, category FROM (
    SELECT pair_idx, item_id, any_value(category) AS category,
           max(ts) FILTER (behavior = 'cart') AS last_cart,
           max(ts) FILTER (behavior IN ('buy', 'remove_from_cart')) AS last_close
    FROM ev WHERE item_id IS NOT NULL AND behavior IN ('cart', 'buy', 'remove_from_cart')
    GROUP BY pair_idx, item_id)
WHERE last_cart IS NOT NULL AND (last_close IS NULL OR last_close < last_cart)
"""

_CARTS_SQL = """
SELECT pair_idx, category, (count(*))::DOUBLE AS open_carts FROM open_items
GROUP BY GROUPING SETS ((pair_idx), (pair_idx, category))
"""

# Views per category in the last H (a tie for the most viewed goes to the latest view).
_BROWSE_SQL = """
SELECT pair_idx, category, count(*) AS n_views, max(ts) AS last_view
FROM ev WHERE behavior = 'view' AND category IS NOT NULL AND age <= h
GROUP BY pair_idx, category
"""

# Open carts in the category the user viewed most in the last H.
_CART_BROWSE_SQL = """
SELECT o.pair_idx, (count(*))::DOUBLE AS open_carts_top_category_h1
FROM open_items o JOIN (SELECT pair_idx, arg_max(category, (n_views, last_view, category)) AS category
                        FROM browse GROUP BY pair_idx) t
  ON t.pair_idx = o.pair_idx AND t.category = o.category
GROUP BY o.pair_idx
"""


def _features_sql(scope: str) -> str:
    user_cols = ",\n       ".join(f"({sql})::DOUBLE AS {name}" for name, sql in _USER_EXPR.items()
                                  if sql != "NULL")
    parts = [f"ev AS MATERIALIZED ({_EV_SQL})",
             f"u AS (SELECT pair_idx, {user_cols} FROM ev GROUP BY pair_idx)",
             f"open_items AS MATERIALIZED ({_OPEN_ITEMS_SQL})",
             f"carts AS ({_CARTS_SQL})",
             f"browse AS ({_BROWSE_SQL})",
             f"cart_browse AS ({_CART_BROWSE_SQL})"]
    select = ["r.row_idx"]
    for name in _USER_EXPR:
        if name == "open_carts":
            select.append("coalesce(uc.open_carts, 0) AS open_carts")
        elif name == "open_carts_top_category_h1":
            select.append("coalesce(cb.open_carts_top_category_h1, 0) AS open_carts_top_category_h1")
        elif name.startswith("log_"):
            select.append(f"coalesce(u.{name}, {_LOG_NEVER}) AS {name}")
        else:
            select.append(f"coalesce(u.{name}, 0) AS {name}")
    joins = ["LEFT JOIN u ON u.pair_idx = r.pair_idx",
             "LEFT JOIN carts uc ON uc.pair_idx = r.pair_idx AND uc.category IS NULL",
             "LEFT JOIN cart_browse cb ON cb.pair_idx = r.pair_idx"]
    if scope == "category":
        cat_cols = ",\n       ".join(f"({sql})::DOUBLE AS {name}"
                                     for name, sql in _CATEGORY_EXPR.items() if sql != "NULL")
        parts.append(f"""c AS (SELECT ev.pair_idx, ev.category, count(*)::DOUBLE AS n_cat_events,
       {cat_cols}
    FROM ev JOIN (SELECT DISTINCT pair_idx, category FROM {_ROWS_VIEW}) want
      ON ev.pair_idx = want.pair_idx AND ev.category = want.category
    GROUP BY ev.pair_idx, ev.category)""")
        for name in _CATEGORY_EXPR:
            if name == "cat_share":
                select.append("coalesce(c.n_cat_events / nullif(u.n_events_all, 0), 0) AS cat_share")
            elif name == "cat_open_carts":
                select.append("coalesce(cc.open_carts, 0) AS cat_open_carts")
            elif name.startswith("log_"):
                select.append(f"coalesce(c.{name}, {_LOG_NEVER}) AS {name}")
            else:
                select.append(f"coalesce(c.{name}, 0) AS {name}")
        joins += ["LEFT JOIN c ON c.pair_idx = r.pair_idx AND c.category = r.category",
                  "LEFT JOIN carts cc ON cc.pair_idx = r.pair_idx AND cc.category = r.category"]
    return ("WITH " + ",\n".join(parts) + "\nSELECT " + ",\n       ".join(select)
            + f"\nFROM {_ROWS_VIEW} r\n" + "\n".join(joins))


_SQL_BY_SCOPE = {scope: _features_sql(scope) for scope in ("any", "category")}


# -- the driver --------------------------------------------------------------------------------
def build_features(store: Store, dataset: str, examples: pd.DataFrame, spec: LabelSpec, *,
                   progress: ProgressFn | None = None, chunk_users: int = CHUNK_USERS) -> pd.DataFrame:
    """Aggregate features aligned row-for-row with ``examples`` (same index), float32 columns
    :func:`feature_names` ``(spec)``. Reads only events at or before each row's cutoff.

    One SQL query per chunk of ``chunk_users`` (user, cutoff) pairs, in user order.
    """
    need = ["user_id", "cutoff"] + (["category"] if spec.scope == "category" else [])
    missing = [c for c in need if c not in examples.columns]
    if missing:
        raise DataError(f"the example rows lack column(s) {missing}.", title="Bad example rows",
                        hint="Build them with core.modeling.labels.build_examples or scoring_examples.")
    names = feature_names(spec)
    n_rows = len(examples)
    out = np.zeros((n_rows, len(names)), np.float32)
    cutoffs = pd.Series(pd.to_datetime(examples["cutoff"]).to_numpy(), dtype="datetime64[us]")
    user_code, users = pd.factorize(examples["user_id"].astype(str).to_numpy(), sort=False)
    pair_of_row, pairs = pd.factorize(pd.MultiIndex.from_arrays([user_code, cutoffs.to_numpy()]),
                                      sort=False)
    pair_user = pairs.get_level_values(0).to_numpy(dtype=np.int64)
    pair_cutoff = pd.Series(pairs.get_level_values(1), dtype="datetime64[us]")
    lookback = spec.lookback_td
    pair_lo = (pair_cutoff - lookback if lookback else
               pd.Series(pd.NaT, index=pair_cutoff.index, dtype="datetime64[us]"))
    horizon_seconds = spec.horizon_td.total_seconds()
    user_text = np.asarray(users, dtype=object)
    categories = (examples["category"].astype(object).to_numpy() if spec.scope == "category"
                  else None)

    # chunks of `chunk_users` (user, cutoff) pairs in user order
    chunk_size = max(1, int(chunk_users))
    n_pairs = len(pairs)
    pair_rank = np.empty(n_pairs, np.int64)
    pair_rank[np.argsort(pair_user, kind="stable")] = np.arange(n_pairs)
    row_chunk = pair_rank[pair_of_row] // chunk_size
    row_order = np.argsort(row_chunk, kind="stable")
    n_chunks = -(-n_pairs // chunk_size)
    row_bounds = np.searchsorted(row_chunk[row_order], np.arange(n_chunks + 1))
    sql = _SQL_BY_SCOPE[spec.scope]
    with store.cursor() as cur:
        for chunk in range(n_chunks):
            rows = row_order[row_bounds[chunk]:row_bounds[chunk + 1]]
            chunk_pairs = np.unique(pair_of_row[rows])
            store.register_df(cur, _KEYS_VIEW, pa.table({
                "pair_idx": pa.array(chunk_pairs),
                "user_id": pa.array(user_text[pair_user[chunk_pairs]], pa.string()),
                "cutoff": pa.array(pair_cutoff.to_numpy()[chunk_pairs], pa.timestamp("us")),
                "lo": pa.array(pair_lo.to_numpy()[chunk_pairs], pa.timestamp("us")),
                "h": pa.array(np.full(len(chunk_pairs), horizon_seconds)),
            }))
            row_columns: dict[str, pa.Array] = {"row_idx": pa.array(rows.astype(np.int64)),
                                                "pair_idx": pa.array(pair_of_row[rows].astype(np.int64))}
            if categories is not None:
                row_columns["category"] = pa.array(
                    pd.Series(categories[rows]).astype("string"), pa.string(), from_pandas=True)
            store.register_df(cur, _ROWS_VIEW, pa.table(row_columns))
            table = cur.sql(sql, params=[dataset]).to_arrow_table()
            idx = table.column("row_idx").to_numpy()
            for j, name in enumerate(names):
                out[idx, j] = table.column(name).to_numpy(zero_copy_only=False)
            cur.unregister(_ROWS_VIEW)
            cur.unregister(_KEYS_VIEW)
            report(progress, min(n_pairs, (chunk + 1) * chunk_size), n_pairs, "building features")
    return pd.DataFrame(out, columns=names, index=examples.index)
