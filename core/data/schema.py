"""Canonical names shared by every module: behaviours, table names, schema version."""
from __future__ import annotations

SCHEMA_VERSION = 1

# Order matters: the integer code of a behaviour in model inputs is its index + 1 (0 is padding).
BEHAVIORS: tuple[str, ...] = ("view", "cart", "fav", "buy", "remove_from_cart", "search")
BEHAVIOR_CODE: dict[str, int] = {b: i + 1 for i, b in enumerate(BEHAVIORS)}


def behavior_code_sql(expr: str) -> str:
    """SQL giving a behaviour's BEHAVIOR_CODE, which is also the order in which events with equal
    timestamps are taken and behaviours are listed (``expr`` is a code constant). The stored column
    is text: a cast to an ENUM on every read of a Parquet segment cost twice the scan itself."""
    whens = " ".join(f"WHEN '{b}' THEN {BEHAVIOR_CODE[b]}" for b in BEHAVIORS)
    return f"CASE {expr} {whens} END"

# Columns of the canonical `events` table, in order.
EVENT_COLUMNS: tuple[str, ...] = (
    "dataset", "user_id", "item_id", "category", "behavior", "ts",
    "session_id", "price", "brand", "query",
)

# Fields a generic column map may name (FIELD=COLUMN); user_id, behavior and ts are required.
MAPPABLE_FIELDS: tuple[str, ...] = (
    "user_id", "item_id", "category", "behavior", "ts", "session_id", "price", "brand", "query",
)
REQUIRED_FIELDS: tuple[str, ...] = ("user_id", "behavior", "ts")
