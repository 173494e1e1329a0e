"""Pure plotly: a tidy frame in, a ``go.Figure`` out.

Every chart the app shows is drawn in this package, so that all pages share one look:

* one plotly template, ``"intentlens"`` (fonts, margins, gridlines, legend, number separators),
  registered on first use by :func:`template`;
* one fixed colour per behaviour, :data:`BEHAVIOR_COLORS`, used by every chart that splits by
  behaviour;
* readable axes: counts with thousands separators (:data:`COUNT_FORMAT`), shares as percentages
  (:data:`SHARE_FORMAT`).

A chart function takes the frame a ``core`` query returns, checks that the columns it needs are
there (a missing column is a programming error: ``ValueError``) and, when the frame has no rows,
returns :func:`empty_figure` with a sentence saying why, never an exception. Functions are grouped
by the page that uses them; a new chart is one more function in its section, built on
:func:`base_figure`, :func:`require_columns` and the colour and format constants. Pages show figures with
``st.plotly_chart(fig, theme=None)`` so that this template, not Streamlit's, applies.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from core.data.schema import BEHAVIORS

TEMPLATE_NAME = "intentlens"

# One colour per behaviour across every page. Views are the bulk of any log and carry the least
# signal, so they get the quietest colour; buys get the strongest.
BEHAVIOR_COLORS: dict[str, str] = {
    "view": "#9AA5CE",
    "cart": "#F28E2B",
    "fav": "#B07AA1",
    "buy": "#2E9E5B",
    "remove_from_cart": "#E15759",
    "search": "#3BA3A8",
}
ACCENT = "#4C5FD5"        # the theme's primary colour (.streamlit/config.toml): single-series charts
NEUTRAL = "#8A8FA3"       # reference lines, "everyone else", baselines
WARNING = "#D9822B"       # quarantine and other data problems
TEXT = "#1B1F3B"
GRID = "#E6E8F0"

COUNT_FORMAT = ",d"       # 1,234,567
SHARE_FORMAT = ".0%"      # 12%
SHARE_FORMAT_FINE = ".1%"  # 12.3%


# -- look -------------------------------------------------------------------------------------
@functools.cache
def template() -> str:
    """Register the IntentLens plotly template (once per process) and return its name."""
    axis = dict(
        showgrid=True, gridcolor=GRID, gridwidth=1, zeroline=False,
        showline=True, linecolor="#C9CDDA", ticks="outside", tickcolor="#C9CDDA", ticklen=4,
        title=dict(font=dict(size=12, color="#4A4F6A")), automargin=True,
    )
    pio.templates[TEMPLATE_NAME] = go.layout.Template(layout=go.Layout(
        font=dict(family="Source Sans Pro, Inter, Helvetica Neue, Arial, sans-serif", size=13,
                  color=TEXT),
        title=dict(font=dict(size=15), x=0.0, xanchor="left", y=0.97, yanchor="top"),
        colorway=[ACCENT, *BEHAVIOR_COLORS.values(), NEUTRAL],
        paper_bgcolor="white", plot_bgcolor="white",
        margin=dict(l=56, r=20, t=56, b=48),
        xaxis=axis, yaxis=axis,
        legend=dict(orientation="h", x=0.0, xanchor="left", y=1.02, yanchor="bottom",
                    title=dict(text=""), bgcolor="rgba(0,0,0,0)"),
        hoverlabel=dict(font=dict(size=12), bgcolor="white"),
        hovermode="closest",
        separators=".,",
        bargap=0.18,
    ))
    return TEMPLATE_NAME


def behavior_color(behavior: str) -> str:
    """The fixed colour of a behaviour (NEUTRAL for anything unknown)."""
    return BEHAVIOR_COLORS.get(str(behavior), NEUTRAL)


def ordered_behaviors(values: Iterable[str]) -> list[str]:
    """Behaviours present in ``values``, in the canonical order of :data:`core.data.schema.BEHAVIORS`."""
    present = {str(v) for v in values}
    known = [b for b in BEHAVIORS if b in present]
    return known + sorted(present - set(known))


def base_figure(title: str, *, x_title: str | None = None, y_title: str | None = None,
            height: int = 360) -> go.Figure:
    """A blank figure in the IntentLens template with a title and axis titles."""
    fig = go.Figure()
    fig.update_layout(template=template(), title=dict(text=title), height=height)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def empty_figure(message: str, title: str = "", *, height: int = 360) -> go.Figure:
    """A figure with no data and ``message`` written in its middle (what to do next)."""
    fig = base_figure(title, height=height)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#6B7089"))
    return fig


def is_empty_figure(fig: go.Figure) -> bool:
    """True for figures made by :func:`empty_figure` (no traces, one annotation)."""
    return len(fig.data) == 0 and len(fig.layout.annotations) > 0


def require_columns(frame: pd.DataFrame, columns: Iterable[str], chart: str) -> bool:
    """Check ``frame`` has ``columns``; return True when it has rows to draw."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{chart}: the frame lacks columns {missing}; it has {list(frame.columns)}")
    return not frame.empty
