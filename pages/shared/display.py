"""How numbers, times, charts and tables are shown on every page."""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from pandas.io.formats.style import Styler

STATUS_COLORS = {"pass": "#E3F4EA", "warn": "#FDF0DC", "fail": "#FBE3E4"}   # light badge fills
STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2}


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def fmt_int(value: Any) -> str:
    """1234567 -> '1,234,567'; missing -> '–'."""
    return "–" if _missing(value) else f"{int(value):,}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'; missing -> '–'."""
    return "–" if _missing(value) else f"{float(value):.{digits}%}"


def fmt_ts(value: Any) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM' (UTC); missing -> '–'."""
    return "–" if _missing(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def fmt_span(start: Any, end: Any) -> str:
    """'2017-11-25 → 2017-12-03 (9 days)'."""
    if _missing(start) or _missing(end):
        return "–"
    a, b = pd.Timestamp(start), pd.Timestamp(end)
    days = (b - a).total_seconds() / 86400
    length = f"{days:.1f} days" if days < 10 else f"{days:,.0f} days"
    if days < 1:
        length = f"{days * 24:.1f} hours"
    return f"{a:%Y-%m-%d} → {b:%Y-%m-%d} ({length})"


def fmt_seconds(seconds: float | None) -> str:
    """42 -> '42 s'; 125 -> '2 min 05 s'; 3900 -> '1 h 05 min'; missing -> '–'."""
    if seconds is None or pd.isna(seconds):
        return "–"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def count_columns(columns: list[str]) -> dict[str, Any]:
    """``st.column_config`` entries showing counts with thousands separators."""
    return {c: st.column_config.NumberColumn(c.replace("_", " "), format="localized")
            for c in columns}


def chart(fig: go.Figure, key: str) -> None:
    """Show a core.charts figure with its own template (not Streamlit's theme)."""
    st.plotly_chart(fig, theme=None, key=key, config={"displaylogo": False})


def quality_table(checks: pd.DataFrame) -> Styler:
    """The quality checks for display: failures first (report order otherwise), the status cell
    tinted like a badge, values rounded. Returns a pandas Styler for ``st.dataframe``."""
    frame = checks.assign(_order=checks["status"].map(STATUS_ORDER).fillna(3))
    frame = frame.sort_values("_order", kind="stable").drop(columns="_order")
    frame["value"] = frame["value"].map(
        lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v))
        else f"{v:,.4g}" if isinstance(v, (int, float)) else str(v))
    frame = frame[["status", "group", "check", "value", "reason"]].reset_index(drop=True)
    return frame.style.map(lambda s: f"background-color: {STATUS_COLORS.get(s, 'white')}; "
                                     "font-weight: 600", subset=["status"])
