"""Progress reporting shared by the CLI, the app's worker threads and long core steps.

A long step takes ``progress: ProgressFn | None`` and calls ``progress(done, total, message)``;
``total`` may be None when unknown. ``cancel: CancelToken | None`` is checked between chunks.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from core.errors import IntentLensError

ProgressFn = Callable[[float, "float | None", str], None]


class Cancelled(IntentLensError):
    title = "Cancelled"


class CancelToken:
    """A flag a worker checks once per step; ``cancel()`` may be called from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("the job was cancelled before it finished.")


def report(progress: ProgressFn | None, done: float, total: float | None, message: str) -> None:
    if progress is not None:
        progress(done, total, message)
