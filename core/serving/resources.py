"""CPU and memory of IntentLens processes over time, sampled with psutil into a small JSON Lines file.

A :class:`ResourceSampler` watches one process and its children (the process tree) from a daemon
thread: every ``interval`` seconds it writes one line with the keys of :data:`RESOURCE_COLUMNS`:
``time`` (ISO-8601 UTC), ``source`` (``app``, ``service``, ``job:train`` ...), ``pid`` (the watched
root), ``cpu_percent`` (CPU used since the previous sample, summed over the tree, in % of one core:
two busy cores read 200), ``rss_mb`` (resident memory summed over the tree, MiB) and ``processes``
(processes in the tree). The thread stops on :meth:`ResourceSampler.stop` or when the watched
process exits.

Who samples: the scoring service (``core.serving.service``: itself, from start to shutdown), every
background job of :class:`core.runtime.jobs.JobRegistry` (a job runs inside the app process, so its
lines are that process's figures while the job runs, labelled ``job:<kind>``), and the app (itself).
The default file is ``<directory of the DuckDB file>/logs/resources.log``, beside the request log,
rotated by size like it (``resources.log.1`` ...). :func:`read_resource_log` reads it back for the
Monitor page, where the figures sit beside the request latency.
"""
from __future__ import annotations

import itertools
import json
import logging
import logging.handlers
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psutil

from core.serving.requestlog import read_json_lines

RESOURCE_COLUMNS: tuple[str, ...] = ("time", "source", "pid", "cpu_percent", "rss_mb", "processes")
RESOURCE_FILE = "resources.log"
RESOURCE_MAX_BYTES = 2 * 2**20      # rotate past 2 MiB (about 20,000 lines: a day at one line per 5 s)
RESOURCE_BACKUPS = 2
DEFAULT_INTERVAL_S = 5.0            # seconds between samples
_MB = 2**20
_ids = itertools.count()            # a distinct logger name per sampler in this process


def default_resource_path(db_path: str | Path) -> Path:
    """``<directory of the DuckDB file>/logs/resources.log`` (beside the request log)."""
    return Path(db_path).resolve().parent / "logs" / RESOURCE_FILE


class TreeSampler:
    """CPU % and RSS of a process and its children, one call at a time.

    CPU % is measured between two calls: psutil keeps each process's previous CPU times, so the
    :class:`psutil.Process` objects are kept across calls (a child seen for the first time counts
    from the next call on). NoSuchProcess (or ZombieProcess) from :meth:`sample` means the root has exited.
    """

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self._known: dict[int, psutil.Process] = {}
        self.sample()                        # primes the CPU counters

    def sample(self) -> tuple[float, float, int]:
        """(cpu_percent since the previous call, rss in MiB, processes) of the tree."""
        procs = [self.root, *self.root.children(recursive=True)]   # NoSuchProcess when the root is gone
        cpu, rss, alive = 0.0, 0.0, 0
        known: dict[int, psutil.Process] = {}
        for proc in procs:
            proc = self._known.get(proc.pid, proc)
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:   # exited, not yet reaped: on Linux its
                        raise psutil.ZombieProcess(proc.pid)    # memory reads as 0 instead of raising
                    cpu += proc.cpu_percent(interval=None)
                    rss += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                if proc.pid == self.root.pid:
                    raise
                continue                                   # a child that ended between the calls
            known[proc.pid] = proc
            alive += 1
        self._known = known
        return cpu, rss / _MB, alive


class ResourceSampler:
    """Samples a process tree into a JSON Lines file from a daemon thread until stopped or the
    process exits. Use as a context manager or call :meth:`start` / :meth:`stop`.

    path: the file (created with its folder). source: the label of every line. pid: the root
    process (default: this one). interval: seconds between lines (> 0).
    """

    def __init__(self, path: str | Path, source: str, *, pid: int | None = None,
                 interval: float = DEFAULT_INTERVAL_S, max_bytes: int = RESOURCE_MAX_BYTES,
                 backups: int = RESOURCE_BACKUPS):
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds; got {interval}.")
        self.path = Path(path)
        self.source = str(source)
        self.pid = int(pid if pid is not None else os.getpid())
        self.interval = float(interval)
        self._max_bytes, self._backups = max_bytes, backups
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lines = 0                                    # lines written so far

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ResourceSampler:
        """Start the thread (once); returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"intentlens-resources-{self.source}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to stop and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (it ends by itself when the watched process exits)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=self._max_bytes,
                                                       backupCount=self._backups, encoding="utf-8", delay=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger(f"intentlens.resources.{next(_ids)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
        try:
            tree = TreeSampler(self.pid)
            while not self._stop.wait(self.interval):
                cpu, rss, procs = tree.sample()
                logger.info(json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                                        "source": self.source, "pid": self.pid, "cpu_percent": round(cpu, 2),
                                        "rss_mb": round(rss, 2), "processes": procs}, separators=(",", ":")))
                self.lines += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass                                          # the watched process exited: stop sampling
        finally:
            logger.removeHandler(handler)
            handler.close()


def start_sampler(db_path: str | Path, source: str, *, pid: int | None = None,
                  interval: float = DEFAULT_INTERVAL_S) -> ResourceSampler:
    """A started :class:`ResourceSampler` writing to :func:`default_resource_path` of ``db_path``."""
    return ResourceSampler(default_resource_path(db_path), source, pid=pid, interval=interval).start()


def read_resource_log(path: str | Path) -> pd.DataFrame:
    """The resource log at ``path`` and its rotated backups, oldest first: :data:`RESOURCE_COLUMNS`
    with ``time`` tz-naive UTC ``datetime64``; lines that do not parse are skipped; no file: an
    empty frame with these columns."""
    frame = pd.DataFrame(read_json_lines(path, RESOURCE_COLUMNS), columns=list(RESOURCE_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601", errors="coerce")
    frame = frame[frame["time"].notna()].copy()
    frame["time"] = frame["time"].dt.tz_localize(None).astype("datetime64[ns]")
    for column in ("cpu_percent", "rss_mb"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("pid", "processes"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(0).astype("int64")
    frame["source"] = frame["source"].astype(str)
    return frame.sort_values("time", kind="stable").reset_index(drop=True)
