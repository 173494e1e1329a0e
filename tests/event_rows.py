"""Test helpers: write hand-made rows straight into a Store (no ingest), through its write API."""
from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

# The events columns add_events fills (the others stay NULL).
_ADD_COLUMNS = ("dataset", "user_id", "item_id", "category", "behavior", "ts", "query", "session_id")


def add_events(store, dataset, rows):
    """Insert (user, item, category, behavior, ts[, query, session]) tuples; refresh ts range."""
    frame = pd.DataFrame(
        [tuple(r) + (None,) * (7 - len(r)) for r in rows],
        columns=["user_id", "item_id", "category", "behavior", "ts", "query", "session_id"])
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    with store.write(dataset, "test events") as w:
        w.cur.register("new_events", frame)
        insert_events(w, "SELECT ?, user_id, item_id, category, behavior, ts, query, session_id FROM new_events",
                      [dataset], columns=_ADD_COLUMNS)
        w.cur.unregister("new_events")


def insert_events(w, sql: str, params: Sequence[object] = (), *, columns: Sequence[str] | None = None,
                  layout: str = "test", **extra: object) -> int:
    """Within the write ``w``: the rows of ``sql`` (a SELECT on ``w.cur``; ``columns`` names its
    columns when they are not all of events', in order) into ``events`` of the write's dataset, then
    that dataset's ``datasets`` row rewritten: ``layout``, the ``extra`` columns given (``sha256="abc"``)
    and the time range of all its events. Returns the number of events added."""
    n = w.add("events", sql, params, columns=columns)
    names = tuple(extra)
    w.replace("datasets",
              "SELECT ?, ?, " + "".join("?, " for _ in names) + "min(ts), max(ts) FROM events WHERE dataset = ?",
              [w.dataset, layout, *extra.values(), w.dataset], columns=("name", "layout", *names, "ts_min", "ts_max"))
    return n


def clear_scores(store) -> None:
    """Remove every scores row (all models, all datasets): one write per dataset."""
    for (dataset,) in store.fetchall("SELECT DISTINCT dataset FROM scores ORDER BY dataset"):
        with store.write(dataset, "test: clear scores") as w:
            w.remove("scores")


def copy_store(source: Path, target: Path) -> Path:
    """A copy of the (closed) store folder ``source`` at ``target``, without its spill space."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("tmp"))
    return target
