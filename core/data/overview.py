"""The Data page's overview queries: one DuckDB aggregate each, a small tidy frame out.

Every function takes ``(store, dataset, ...)``, filters ``events`` (or ``quarantine``) with a bound
``dataset = ?``, aggregates inside DuckDB and returns at most a few thousand rows whatever the
size of the log, so they stay quick on 100M events. Day and hour boundaries are taken in the
source's own time zone (``datasets.source_tz``; Taobao logs are UTC+8) so that "hour 20" means
8 pm where the shoppers were. :func:`local_offset` says which offset was used.

The frames are what :mod:`core.charts` draws; column names are documented per function.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from core.data.schema import BEHAVIORS, behavior_code_sql
from core.data.store import Store

MAX_TIME_POINTS = 400        # events_per_day switches to weeks, then months, above this many buckets
MAX_TOP_CATEGORIES = 100     # cap for top_categories(limit=...)
MAX_PREVIEW_ROWS = 1000      # cap for preview_rows / quarantine_rows (limit=...)
RAW_TEXT_CHARS = 500         # quarantined raw lines are cut to this many characters for display
MISSING_CATEGORY = "(missing)"
FUNNEL_STAGES: tuple[str, ...] = ("view", "cart", "fav", "buy")   # the funnel's stages, in order

DATASET_COLUMNS: tuple[str, ...] = (
    "name", "layout", "source_file", "rows_read", "rows_stored", "rows_quarantined",
    "duplicates_dropped", "n_users", "n_items", "ts_min", "ts_max", "source_tz", "ingested_at",
)
PREVIEW_COLUMNS: tuple[str, ...] = (
    "user_id", "item_id", "category", "behavior", "ts", "session_id", "price", "brand", "query",
)


# -- time zone ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalOffset:
    """The fixed offset added to UTC timestamps to get the source's wall-clock time."""

    seconds: float   # e.g. 28800.0 for UTC+8
    label: str       # e.g. "UTC+08:00", shown on axis titles


_OFFSET_RE = re.compile(r"^(?:UTC|GMT)?\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def _format_offset(seconds: float) -> str:
    if seconds == 0:
        return "UTC"
    sign = "+" if seconds > 0 else "-"
    minutes = round(abs(seconds) / 60)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def parse_offset(source_tz: str | None, at: datetime | None = None) -> LocalOffset:
    """Turn a recorded source time zone into a fixed offset.

    Accepts ``None``/``"UTC"`` (no shift), ``"+08:00"``, ``"UTC+8"``, ``"GMT-0530"`` and IANA
    names such as ``"Asia/Shanghai"`` (the offset in force at ``at``, the data's first event;
    now when unknown). Anything else is treated as UTC, and the label says so.
    """
    text = (source_tz or "").strip()
    if not text or text.upper() in ("UTC", "GMT", "Z", "+00:00", "UTC+0", "UTC+00:00"):
        return LocalOffset(0.0, "UTC")
    match = _OFFSET_RE.match(text)
    if match:
        sign = 1 if match.group(1) == "+" else -1
        seconds = sign * (int(match.group(2)) * 3600 + int(match.group(3) or 0) * 60)
        return LocalOffset(float(seconds), _format_offset(seconds))
    try:
        zone = ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        return LocalOffset(0.0, f"UTC (unknown zone {text!r})")
    moment = at or datetime.now()
    offset = zone.utcoffset(moment) or timedelta(0)
    return LocalOffset(offset.total_seconds(), _format_offset(offset.total_seconds()))


def local_offset(store: Store, dataset: str) -> LocalOffset:
    """The offset of ``dataset``'s source time zone (NotFoundError for an unknown dataset)."""
    row = store.dataset(dataset)
    ts_min = row.get("ts_min")
    at = ts_min.to_pydatetime() if hasattr(ts_min, "to_pydatetime") and not pd.isna(ts_min) else None
    return parse_offset(row.get("source_tz"), at)


# -- catalogue ------------------------------------------------------------------------------------
def datasets_table(store: Store) -> pd.DataFrame:
    """Every dataset with its counts and time range, in name order (columns DATASET_COLUMNS)."""
    frame = store.datasets()
    return frame[[c for c in DATASET_COLUMNS if c in frame.columns]].reset_index(drop=True)


def behavior_counts(store: Store, dataset: str) -> pd.DataFrame:
    """``behavior``, ``events``, ``share`` (of all events), in canonical behaviour order."""
    frame = store.df(
        "SELECT behavior, count(*) AS events FROM events WHERE dataset = ? "
        f"GROUP BY behavior ORDER BY {behavior_code_sql('behavior')}", [dataset])
    frame["behavior"] = frame["behavior"].astype(str)
    total = frame["events"].sum()
    frame["share"] = frame["events"] / total if total else 0.0
    return frame.reset_index(drop=True)


# -- overview charts ------------------------------------------------------------------------------
_TIME_BUCKETS = (("day", 1), ("week", 7), ("month", 30))


def events_per_day(store: Store, dataset: str) -> pd.DataFrame:
    """``day`` (date, start of the bucket, source time), ``behavior``, ``events``, ``bucket``.

    Logs longer than MAX_TIME_POINTS days are counted per week, then per month (``bucket`` says
    which), so the frame stays small.
    """
    offset = local_offset(store, dataset)
    (span,) = store.fetchone(
        "SELECT date_diff('day', min(ts), max(ts)) FROM events WHERE dataset = ?", [dataset]) or (None,)
    unit = "day"
    for name, days in _TIME_BUCKETS:
        unit = name
        if span is None or span / days <= MAX_TIME_POINTS:
            break
    frame = store.df(
        "SELECT CAST(date_trunc(?, ts + to_seconds(?)) AS DATE) AS day, behavior, "
        f"count(*) AS events FROM events WHERE dataset = ? GROUP BY day, behavior "
        f"ORDER BY day, {behavior_code_sql('behavior')}",
        [unit, offset.seconds, dataset])
    frame["behavior"] = frame["behavior"].astype(str)
    frame["day"] = pd.to_datetime(frame["day"])
    frame["bucket"] = unit
    return frame


def hour_of_day(store: Store, dataset: str) -> pd.DataFrame:
    """``hour`` (0-23, source time), ``behavior``, ``events``, ``share`` of that behaviour's events.

    Every hour appears for every behaviour present (0 where there were none).
    """
    offset = local_offset(store, dataset)
    counts = store.df(
        "SELECT CAST(hour(ts + to_seconds(?)) AS INTEGER) AS hour, behavior, count(*) AS events "
        "FROM events WHERE dataset = ? GROUP BY ALL", [offset.seconds, dataset])
    if counts.empty:
        return pd.DataFrame({"hour": pd.Series(dtype="int64"), "behavior": pd.Series(dtype=str),
                             "events": pd.Series(dtype="int64"), "share": pd.Series(dtype=float)})
    counts["behavior"] = counts["behavior"].astype(str)
    present = [b for b in BEHAVIORS if b in set(counts["behavior"])]
    grid = pd.MultiIndex.from_product([present, range(24)], names=["behavior", "hour"])
    frame = (counts.set_index(["behavior", "hour"])["events"].reindex(grid, fill_value=0)
             .reset_index())
    frame["events"] = frame["events"].astype("int64")
    totals = frame.groupby("behavior")["events"].transform("sum")
    frame["share"] = frame["events"] / totals
    return frame[["hour", "behavior", "events", "share"]]


def funnel(store: Store, dataset: str) -> pd.DataFrame:
    """``stage`` (view, cart, fav, buy), ``users`` with at least one event of that behaviour,
    ``share_of_users`` (of every user of the dataset), ``step_conversion`` (users / users of the
    previous stage; NaN for the first stage or after an empty stage)."""
    flags = ", ".join(f"bool_or(behavior = '{stage}') AS {stage}" for stage in FUNNEL_STAGES)
    sums = ", ".join(f"count(*) FILTER (WHERE {stage}) AS {stage}" for stage in FUNNEL_STAGES)
    row = store.fetchone(
        f"SELECT count(*) AS users, {sums} FROM "          # stage names are code constants
        f"(SELECT user_id, {flags} FROM events WHERE dataset = ? GROUP BY user_id)", [dataset]) \
        or (0,) * (len(FUNNEL_STAGES) + 1)
    total = int(row[0] or 0)
    users = [int(v or 0) for v in row[1:]]
    previous = [math.nan, *users[:-1]]
    return pd.DataFrame({
        "stage": list(FUNNEL_STAGES),
        "users": users,
        "share_of_users": [u / total if total else 0.0 for u in users],
        "step_conversion": [u / p if p and not math.isnan(p) else math.nan
                            for u, p in zip(users, previous, strict=True)],
    })


def top_categories(store: Store, dataset: str, limit: int = 15) -> pd.DataFrame:
    """The ``limit`` busiest categories (at most MAX_TOP_CATEGORIES): ``category``, ``behavior``,
    ``events``, ``total`` (all behaviours), ``rank`` (1 = busiest; ties broken by name).
    Events without a category count under ``"(missing)"``."""
    limit = max(1, min(int(limit), MAX_TOP_CATEGORIES))
    frame = store.df(
        "WITH counts AS ("
        "  SELECT coalesce(category, ?) AS category, behavior, count(*) AS events"
        "  FROM events WHERE dataset = ? GROUP BY ALL),"
        " totals AS (SELECT *, sum(events) OVER (PARTITION BY category) AS total FROM counts),"
        " ranked AS (SELECT *, dense_rank() OVER (ORDER BY total DESC, category) AS rank FROM totals)"
        " SELECT category, behavior, events, total, rank FROM ranked"
        f" WHERE rank <= ? ORDER BY rank, {behavior_code_sql('behavior')}",
        [MISSING_CATEGORY, dataset, limit])
    frame["behavior"] = frame["behavior"].astype(str)
    frame["total"] = frame["total"].astype("int64")
    frame["rank"] = frame["rank"].astype("int64")
    return frame


def events_per_user(store: Store, dataset: str) -> pd.DataFrame:
    """Users per doubling bucket of events: ``bucket`` ("1", "2-3", "4-7", ...), ``low``,
    ``high``, ``users``, ``events`` (their events), ``share_of_users``."""
    frame = store.df(
        "SELECT CAST(floor(log2(n)) AS INTEGER) AS k, count(*) AS users, sum(n) AS events "
        "FROM (SELECT count(*) AS n FROM events WHERE dataset = ? GROUP BY user_id) "
        "GROUP BY k ORDER BY k", [dataset])
    low = (2 ** frame["k"]).astype("int64")
    high = (2 ** (frame["k"] + 1) - 1).astype("int64")
    total = frame["users"].sum()
    return pd.DataFrame({
        "bucket": [str(lo) if lo == hi else f"{lo:,}–{hi:,}" for lo, hi in zip(low, high, strict=True)],
        "low": low, "high": high,
        "users": frame["users"].astype("int64"),
        "events": frame["events"].astype("int64"),
        "share_of_users": frame["users"] / total if total else 0.0,
    })


# -- quarantine and preview -----------------------------------------------------------------------
def quarantine_reasons(store: Store, dataset: str) -> pd.DataFrame:
    """``reason``, ``rows``, ``first_line`` (earliest source line with it), most rows first."""
    return store.df(
        "SELECT reason, count(*) AS rows, min(line) AS first_line FROM quarantine "
        "WHERE dataset = ? GROUP BY reason ORDER BY rows DESC, reason", [dataset])


def quarantine_rows(store: Store, dataset: str, reason: str | None = None,
                    limit: int = 50) -> pd.DataFrame:
    """Sample quarantined rows (``line``, ``reason``, ``raw`` cut to RAW_TEXT_CHARS), by line.

    ``reason`` keeps one reason only; ``limit`` is capped at MAX_PREVIEW_ROWS.
    """
    limit = max(1, min(int(limit), MAX_PREVIEW_ROWS))
    if reason is None:
        return store.df(
            "SELECT line, reason, left(raw, ?) AS raw FROM quarantine WHERE dataset = ? "
            "ORDER BY line NULLS LAST LIMIT ?", [RAW_TEXT_CHARS, dataset, limit])
    return store.df(
        "SELECT line, reason, left(raw, ?) AS raw FROM quarantine WHERE dataset = ? AND reason = ? "
        "ORDER BY line NULLS LAST LIMIT ?", [RAW_TEXT_CHARS, dataset, reason, limit])


def preview_rows(store: Store, dataset: str, limit: int = 100) -> pd.DataFrame:
    """The first ``limit`` events by time (capped at MAX_PREVIEW_ROWS), canonical columns; the
    optional columns this source never fills (all empty) are left out."""
    limit = max(1, min(int(limit), MAX_PREVIEW_ROWS))
    columns = ", ".join(PREVIEW_COLUMNS)  # code constants
    frame = store.df(
        f"SELECT {columns} FROM events WHERE dataset = ? ORDER BY ts, user_id LIMIT ?",
        [dataset, limit])
    frame["behavior"] = frame["behavior"].astype(str)
    keep = [c for c in frame.columns
            if c in ("user_id", "item_id", "category", "behavior", "ts") or frame[c].notna().any()]
    return frame[keep]

