"""Data quality of one dataset: completeness, consistency and accuracy checks.

Every figure is computed in DuckDB SQL over the dataset's ``events`` and its ``datasets`` row.
Each check has a status (pass / warn / fail), a numeric value and a one-line reason that says what
was measured and, when it is not a pass, why it matters for purchase-intent modelling.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.data.store import Store

STATUSES = ("pass", "warn", "fail")
COLUMNS = ["group", "check", "status", "value", "reason"]

# Thresholds: (warn above, fail above) for shares in [0, 1].
QUARANTINE_SHARE = (0.001, 0.05)
DUPLICATE_SHARE = (0.01, 0.10)
MISSING_SHARE = (0.01, 0.20)
BUY_WITHOUT_VIEW_SHARE = (0.30, 0.80)
ONE_EVENT_USER_SHARE = (0.50, 0.90)
THIN_DAY_SHARE = 0.10       # a day with < 10% of the median daily events is a gap
STRAY_DAY_SHARE = 0.01      # a day with < 1% of the median daily events is a stray day
CENTRAL = (0.0005, 0.9995)  # the main window: the central 99.9% of events' minutes, padded by a day


def _row(store: Store, sql: str, params: list[Any]) -> tuple[Any, ...]:
    """The one row an aggregate query returns."""
    return store.fetchall(sql, params)[0]


def _status(value: float, limits: tuple[float, float]) -> str:
    warn, fail = limits
    return "fail" if value > fail else "warn" if value > warn else "pass"


@dataclass
class QualityReport:
    """The checks of one dataset, one row each (see COLUMNS)."""

    dataset: str
    checks: pd.DataFrame   # group (completeness|consistency|accuracy), check, status, value, reason

    @property
    def status(self) -> str:
        """The worst status of all checks."""
        found = set(self.checks["status"])
        return next((s for s in reversed(STATUSES) if s in found), "pass")

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "status": self.status,
                "checks": self.checks.to_dict(orient="records")}

    def summary(self) -> str:
        lines = [f"Data quality of {self.dataset!r}: {self.status}"]
        for group, rows in self.checks.groupby("group", sort=False):
            lines.append(f"  {group}")
            for row in rows.itertuples():
                lines.append(f"    [{row.status:>4}] {row.check}: {row.reason}")
        return "\n".join(lines)


def _duplicates_check(add: Callable[[str, str, str, float, str], None], meta: dict[str, Any], read: int) -> None:
    """Identical rows: how many, and what the ingest's duplicate policy did with them and why."""
    try:
        policy = json.loads(meta.get("options") or "{}").get("duplicates") or {}
    except (TypeError, ValueError, AttributeError):   # a record written by something other than ingest
        policy = {}
    dropped = int(meta.get("duplicates_dropped") or 0)
    if policy.get("policy") == "keep":
        kept = int(policy.get("identical_rows") or 0)
        share = kept / read
        # at day resolution identical lines are repeats, not errors; otherwise they are judged
        day = policy.get("day_resolution", False)
        add("consistency", "duplicate rows", "pass" if day else _status(share, DUPLICATE_SHARE), share,
            f"{kept:,} rows identical to another ({share:.2%} of rows read) were kept; "
            f"policy keep, {policy.get('reason', '')}.")
        return
    share = dropped / read
    why = f"; policy drop, {policy['reason']}" if policy.get("reason") else ""
    add("consistency", "duplicate rows", _status(share, DUPLICATE_SHARE), share,
        f"{dropped:,} exact duplicate rows ({share:.2%} of rows read) were dropped at ingest{why}.")


def quality_report(store: Store, dataset: str) -> QualityReport:
    """Run every check on ``dataset`` (NotFoundError if it does not exist)."""
    meta = store.dataset(dataset)
    rows: list[dict] = []

    def add(group: str, check: str, status: str, value: float, reason: str) -> None:
        rows.append({"group": group, "check": check, "status": status, "value": float(value),
                     "reason": reason})

    users = meta.get("n_users")   # counted at ingest; counted here for a record made otherwise
    if users is None or pd.isna(users):
        users = _row(store, "SELECT count(DISTINCT user_id) FROM events WHERE dataset = ?", [dataset])[0]
    n, miss_item, miss_cat, miss_sess, miss_price, miss_brand, ts_min, ts_max = _row(store,
        """SELECT count(*),
                  count(*) FILTER (WHERE item_id IS NULL AND behavior <> 'search'),
                  count(*) FILTER (WHERE category IS NULL OR lower(category) IN ('unknown', 'null', 'nan')),
                  count(*) FILTER (WHERE session_id IS NULL), count(*) FILTER (WHERE price IS NULL),
                  count(*) FILTER (WHERE brand IS NULL), min(ts), max(ts)
           FROM events WHERE dataset = ?""", [dataset])
    n = max(int(n), 1)

    # -- completeness ----------------------------------------------------------------------
    for column, missing, required in (("item_id", miss_item, True), ("category", miss_cat, True),
                                      ("session_id", miss_sess, False), ("price", miss_price, False),
                                      ("brand", miss_brand, False)):
        share = missing / n
        if not required and missing == n:
            add("completeness", f"missing {column}", "pass", share,
                f"{column} is not provided by this source (optional).")
        else:
            status = _status(share, MISSING_SHARE) if required else "pass" if share <= 0.5 else "warn"
            add("completeness", f"missing {column}", status, share,
                f"{missing:,} of {n:,} events ({share:.1%}) have no {column}.")
    read = max(int(meta.get("rows_read") or 0), 1)
    quarantined = int(meta.get("rows_quarantined") or 0)
    share = quarantined / read
    add("completeness", "quarantined rows", _status(share, QUARANTINE_SHARE), share,
        f"{quarantined:,} of {read:,} rows read ({share:.2%}) were quarantined as unusable.")

    # -- consistency -----------------------------------------------------------------------
    span_days = (ts_max - ts_min).total_seconds() / 86400 if ts_min and ts_max else 0.0
    add("consistency", "time range", "pass" if span_days >= 1 else "warn", span_days,
        f"{ts_min:%Y-%m-%d %H:%M} .. {ts_max:%Y-%m-%d %H:%M} UTC ({span_days:.1f} days)"
        + ("" if span_days >= 1 else "; shorter than a day, so only short horizons can be labelled."))

    empty_days, thin_days, total_days = _row(store,
        """WITH per_day AS (SELECT date_trunc('day', ts) AS day, count(*) AS n
                            FROM events WHERE dataset = ? GROUP BY ALL),
                main AS (SELECT * FROM per_day
                         WHERE n >= ? * (SELECT median(n) FROM per_day)),
                all_days AS (SELECT unnest(generate_series(min(day), max(day), INTERVAL 1 DAY)) AS day
                             FROM main)
           SELECT count(*) FILTER (WHERE p.n IS NULL),
                  count(*) FILTER (WHERE p.n < ? * (SELECT median(n) FROM per_day)),
                  count(*)
           FROM all_days a LEFT JOIN per_day p USING (day)""",
        [dataset, STRAY_DAY_SHARE, THIN_DAY_SHARE])
    gaps = int(empty_days) + int(thin_days)
    add("consistency", "events per day gaps", "pass" if gaps == 0 else "warn", gaps,
        f"{empty_days} day(s) without events and {thin_days} day(s) with under "
        f"{THIN_DAY_SHARE:.0%} of the median daily volume within the main {total_days} day(s)."
        if gaps else f"every one of the {total_days} day(s) in the main window has events.")

    _duplicates_check(add, meta, read)

    # Only the (user, item) pairs that were bought are looked up among the views: the buys are
    # few, so this probes the views instead of building a table of all of them.
    buys, orphan = _row(store,
        """WITH b AS (SELECT user_id, item_id, ts FROM events WHERE dataset = ? AND behavior = 'buy'),
                v AS (SELECT user_id, item_id, min(ts) AS first_view FROM events
                      WHERE dataset = ? AND behavior = 'view'
                        AND (user_id, item_id) IN (SELECT (user_id, item_id) FROM b)
                      GROUP BY ALL)
           SELECT count(*), count(*) FILTER (WHERE v.first_view IS NULL OR v.first_view > b.ts)
           FROM b LEFT JOIN v USING (user_id, item_id)""", [dataset, dataset])
    if buys == 0:
        add("consistency", "buys without an earlier view", "warn", 0.0,
            "the dataset has no buys, so purchase intent cannot be learned from it.")
    else:
        share = orphan / buys
        add("consistency", "buys without an earlier view", _status(share, BUY_WITHOUT_VIEW_SHARE), share,
            f"{orphan:,} of {buys:,} buys ({share:.1%}) have no earlier view of the item by the same user"
            + ("" if share <= BUY_WITHOUT_VIEW_SHARE[0] else "; the log may be cut or views not logged."))

    single = _row(store,
        """SELECT count(*) FROM (SELECT user_id FROM events WHERE dataset = ?
                                 GROUP BY user_id HAVING count(*) = 1)""", [dataset])[0]
    share = single / max(int(users), 1)
    add("consistency", "users with one event", _status(share, ONE_EVENT_USER_SHARE), share,
        f"{single:,} of {users:,} users ({share:.1%}) have a single event (no history to learn from).")

    # -- accuracy --------------------------------------------------------------------------
    # The main window from per-minute counts (exact at minute resolution, and a day is added on
    # each side anyway): far cheaper than a quantile over every timestamp.
    outside, lo, hi = _row(store,
        """WITH per_minute AS (SELECT epoch(date_trunc('minute', ts)) AS m, count(*) AS n
                               FROM events WHERE dataset = ? GROUP BY ALL),
                cum AS (SELECT m, n, sum(n) OVER (ORDER BY m) AS c, sum(n) OVER () AS total
                        FROM per_minute),
                q AS (SELECT min(m) FILTER (WHERE c >= ? * total) - 86400 AS lo,
                             min(m) FILTER (WHERE c >= ? * total) + 60 + 86400 AS hi FROM cum)
           SELECT coalesce(sum(n) FILTER (WHERE m < q.lo OR m >= q.hi), 0),
                  make_timestamp(CAST(any_value(q.lo) * 1e6 AS BIGINT)),
                  make_timestamp(CAST(any_value(q.hi) * 1e6 AS BIGINT))
           FROM cum, q""", [dataset, CENTRAL[0], CENTRAL[1]])
    stray = _row(store,
        """WITH per_day AS (SELECT date_trunc('day', ts) AS day, count(*) AS n
                            FROM events WHERE dataset = ? GROUP BY ALL)
           SELECT coalesce(sum(n), 0) FROM per_day WHERE n < ? * (SELECT median(n) FROM per_day)""",
        [dataset, STRAY_DAY_SHARE])[0]
    odd = max(int(outside), int(stray))
    add("accuracy", "timestamps outside the main window", "pass" if odd == 0 else "warn", odd,
        f"{odd:,} events fall outside the main window {lo:%Y-%m-%d} .. {hi:%Y-%m-%d} or on stray days; "
        "likely clock errors." if odd else
        "all timestamps lie in one main window without stray days.")

    priced, bad_price = _row(store,
        "SELECT count(price), count(*) FILTER (WHERE price <= 0) FROM events WHERE dataset = ?",
        [dataset])
    if priced == 0:
        add("accuracy", "non-positive prices", "pass", 0.0, "this source has no prices.")
    else:
        share = bad_price / priced
        add("accuracy", "non-positive prices", _status(share, MISSING_SHARE), share,
            f"{bad_price:,} of {priced:,} priced events ({share:.1%}) have a price of zero or less.")

    share = miss_cat / n
    add("accuracy", "unknown categories", _status(share, MISSING_SHARE), share,
        f"{miss_cat:,} events ({share:.1%}) have a missing or 'unknown' category"
        + ("; category-scoped labels ignore them." if miss_cat else "."))

    return QualityReport(dataset=dataset, checks=pd.DataFrame(rows, columns=COLUMNS))
