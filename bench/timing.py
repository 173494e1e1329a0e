"""What every bench script measures with: repeated timings summarised as median and spread, and a
peak-memory sampler.

A single timing on a shared machine says little: every figure a bench prints is the median of at
least :data:`MIN_REPEATS` runs, with the fastest and slowest run beside it, so a reader sees how much
the machine moved the number. ``Stat.text`` renders ``median (min–max, n=…)``.
"""
from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psutil

MIN_REPEATS = 5     # the fewest runs a bench summarises

T = TypeVar("T")


@dataclass(frozen=True)
class Stat:
    """Median, minimum and maximum of repeated measurements."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            raise ValueError("no measurements to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor: float) -> Stat:
        """The same figures times ``factor`` (e.g. 1000 for ms); a negative factor is refused."""
        if factor < 0:
            raise ValueError("scale by a non-negative factor")
        return Stat(self.median * factor, self.low * factor, self.high * factor, self.n)

    def text(self, fmt: str = ",.2f", unit: str = "") -> str:
        """``median unit (low–high, n=N)``."""
        return (f"{self.median:{fmt}}{unit} ({self.low:{fmt}}–{self.high:{fmt}}, n={self.n})")


def rates(count: float, seconds: Sequence[float]) -> Stat:
    """Throughput (``count`` per second) of each timed run, summarised."""
    return Stat.of([count / s for s in seconds])


def repeat(fn: Callable[[], T], repeats: int, *, warmup: int = 0) -> tuple[list[float], T]:
    """Seconds of each of ``repeats`` calls of ``fn`` (after ``warmup`` untimed calls) and the
    last result. ``repeats`` below :data:`MIN_REPEATS` is raised to it."""
    for _ in range(warmup):
        fn()
    seconds: list[float] = []
    result: T
    for _ in range(max(repeats, MIN_REPEATS)):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, result


class PeakRSS:
    """Peak resident memory of a process (this one by default), with its children when
    ``children`` is true, sampled every ``interval`` seconds in a daemon thread. Use as a context
    manager, or ``start()`` / ``stop()``; ``peak`` is in bytes, ``each`` the peak of every process
    seen (pid -> (command name, bytes))."""

    def __init__(self, pid: int | None = None, *, children: bool = False, interval: float = 0.02):
        self.pid, self.children, self.interval = pid, children, interval
        self.peak = 0
        self.each: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)] if self.children else [root]
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):     # a child ended between listing and reading
                    rss = proc.memory_info().rss
                    total += rss
                    name, seen = self.each.get(proc.pid, (proc.name(), 0))
                    self.each[proc.pid] = (name, max(seen, rss))
            self.peak = max(self.peak, total)
        except psutil.Error:
            pass            # the process itself is gone: keep the peak seen so far

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def __enter__(self) -> PeakRSS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
