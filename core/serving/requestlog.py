"""The scoring service's request log: one JSON object per line, rotated by size.

Every request the service answers (:mod:`core.serving.service`) writes one line with the keys of
:data:`LOG_COLUMNS`: ``time`` (ISO-8601 UTC), ``route`` (the route template, e.g. ``/v1/score``),
``method``, ``status`` (int), ``latency_ms`` (float), ``model_id``, ``n_users``, ``n_events`` (ints)
and ``error`` (a short kind such as ``validation`` or ``internal``, null on success). The log never
holds event payloads, user ids or queries: only these counts.

The default file is ``<directory of the DuckDB file>/logs/service.log``. When it grows past
``max_bytes`` it is renamed ``service.log.1`` (the older ones shift to ``.2`` ...; ``backups`` are
kept), as :class:`logging.handlers.RotatingFileHandler` does. :func:`read_request_log` reads the file
and its backups back into one frame, oldest first, for the Monitor page and ``bench/serve.py``.
"""
from __future__ import annotations

import itertools
import json
import logging
import logging.handlers
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

LOG_COLUMNS: tuple[str, ...] = ("time", "route", "method", "status", "latency_ms", "model_id",
                                "n_users", "n_events", "error")
LOG_FILE = "service.log"
LOG_MAX_BYTES = 10 * 2**20          # rotate the log past 10 MiB (about 50,000 lines)
LOG_BACKUPS = 5                     # rotated files kept: service.log.1 .. service.log.5
_INT_COLUMNS = ("status", "n_users", "n_events")
_ids = itertools.count()            # a distinct logger name per RequestLog in this process


def default_log_path(db_path: str | Path) -> Path:
    """``<directory of the DuckDB file>/logs/service.log``."""
    return Path(db_path).resolve().parent / "logs" / LOG_FILE


class RequestLog:
    """Append-only JSON Lines writer with size-based rotation (thread-safe: one lock per handler).

    ``write`` keeps only the keys of :data:`LOG_COLUMNS` (so no caller can leak a payload into the
    log) and stamps ``time`` when the record has none.
    """

    def __init__(self, path: str | Path, *, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger = logging.getLogger(f"intentlens.requests.{next(_ids)}")
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False            # request lines go to the file only
        self._logger.addHandler(self._handler)

    def write(self, record: Mapping[str, object]) -> None:
        line = {key: record.get(key) for key in LOG_COLUMNS}
        if line["time"] is None:
            line["time"] = datetime.now(UTC).isoformat(timespec="microseconds")
        self._logger.info(json.dumps(line, separators=(",", ":")))

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


def log_files(path: str | Path) -> list[Path]:
    """The log and its rotated backups that exist, oldest first (``.5`` ... ``.1``, then the file)."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
    backups = [(int(m.group(1)), p) for p in path.parent.glob(path.name + ".*")
               if (m := pattern.match(p.name)) and p.is_file()] if path.parent.is_dir() else []
    ordered = [p for _, p in sorted(backups, reverse=True)]
    return ordered + ([path] if path.is_file() else [])


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in LOG_COLUMNS})
    frame["time"] = pd.Series(dtype="datetime64[ns]")
    frame["latency_ms"] = pd.Series(dtype="float64")
    for column in _INT_COLUMNS:
        frame[column] = pd.Series(dtype="int64")
    return frame


def read_json_lines(path: str | Path, columns: Sequence[str]) -> list[dict[str, object]]:
    """The ``columns`` of every JSON object line with a string ``time`` in the log at ``path`` and its
    rotated backups, oldest first; other lines (one cut short by a crash) are skipped."""
    rows: list[dict[str, object]] = []
    for file in log_files(path):
        with open(file, encoding="utf-8", errors="replace") as handle:
            for text in handle:
                try:
                    record = json.loads(text)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("time"), str):
                    rows.append({key: record.get(key) for key in columns})
    return rows


def read_request_log(path: str | Path) -> pd.DataFrame:
    """The request log at ``path`` and its rotated backups as one frame, oldest first.

    Columns :data:`LOG_COLUMNS`; ``time`` is tz-naive UTC ``datetime64``, ``status``, ``n_users``
    and ``n_events`` int64, ``latency_ms`` float64, ``error`` None on success. A line that is not a
    JSON object with a parsable time (a line cut short by a crash) is skipped. No file: an empty
    frame with these columns.
    """
    rows = read_json_lines(path, LOG_COLUMNS)
    if not rows:
        return _empty()
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601", errors="coerce")
    frame = frame[frame["time"].notna()].copy()
    frame["time"] = frame["time"].dt.tz_localize(None).astype("datetime64[ns]")
    frame["latency_ms"] = pd.to_numeric(frame["latency_ms"], errors="coerce").astype("float64")
    for column in _INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(0).astype("int64")
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    return frame.reset_index(drop=True)
