"""Test helper: write hand-made events straight into a Store (no ingest)."""
from __future__ import annotations

import pandas as pd


def add_events(store, dataset, rows):
    """Insert (user, item, category, behavior, ts[, query, session]) tuples; refresh ts range."""
    frame = pd.DataFrame(
        [tuple(r) + (None,) * (7 - len(r)) for r in rows],
        columns=["user_id", "item_id", "category", "behavior", "ts", "query", "session_id"])
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    with store.cursor() as cur:
        store.register_df(cur, "new_events", frame)
        cur.execute("""INSERT INTO events (dataset, user_id, item_id, category, behavior, ts,
                                           query, session_id)
                       SELECT ?, user_id, item_id, category, behavior, ts, query, session_id
                       FROM new_events""", [dataset])
    store.execute("DELETE FROM datasets WHERE name = ?", [dataset])
    store.execute("""INSERT INTO datasets (name, layout, ts_min, ts_max)
                     SELECT ?, 'test', min(ts), max(ts) FROM events WHERE dataset = ?""",
                  [dataset, dataset])
