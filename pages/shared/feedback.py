"""What the user is told: the project's error box, messages queued across a rerun, progress bars."""
from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Literal

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core.errors import IntentLensError

FlashKind = Literal["success", "info", "warning"]
_FLASH_KEY = "_flash"


def show_error(err: IntentLensError) -> None:
    """The project's title and message in an error box; never a traceback."""
    text = f"**{err.title}.** {err.message}"
    if err.hint:
        text += f"  \n{err.hint}"
    st.error(text, icon=":material/error:")


class Guard:
    """See :func:`guard`. A class rather than a generator, so type checkers know that the block
    may stop early (``__exit__`` returns True when it swallowed the error)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if isinstance(err, IntentLensError):
            show_error(err)
            return True
        return False


def guard() -> Guard:
    """``with guard(): ...`` runs a block; an IntentLensError inside it is shown with
    :func:`show_error` and stops the block (the rest of the page still renders). Other exceptions
    are bugs and propagate."""
    return Guard()


def flash(kind: FlashKind, text: str) -> None:
    """Queue a message for the next run (survives ``st.rerun``)."""
    st.session_state.setdefault(_FLASH_KEY, []).append((kind, text))


def show_flash() -> None:
    """Show and clear the queued messages."""
    shows = {"success": st.success, "info": st.info, "warning": st.warning}
    for kind, text in st.session_state.pop(_FLASH_KEY, []):
        shows[kind](text)


def progress_to(bar: DeltaGenerator) -> Callable[[float, float | None, str], None]:
    """A core progress callback that drives an ``st.progress`` element."""
    def progress(done: float, total: float | None, message: str) -> None:
        fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
        bar.progress(fraction, text=message or None)
    return progress
