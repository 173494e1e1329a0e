"""The shared store's catalog: which immutable Parquet segment files make up each table, now.

Many processes (the app, every CLI command, the scoring service, nightly jobs) use one store at the
same time. DuckDB allows one writing process per database file, so the durable store is not a
DuckDB file: it is a folder of immutable Parquet *segments* plus this catalog, a SQLite database in
WAL mode (SQLite's own multi-process transactions, from the standard library). Every process runs
its queries in its own in-memory DuckDB over views of the segments (:mod:`core.data.store`).

Layout of a store folder::

    catalog.sqlite          segments, transactions, the version counter, the schema version
    segments/<table>/       <txid>-<n>.parquet, written once, never modified
    locks/<dataset>.lock    one writer per dataset at a time (flock; released by the kernel on death)
    tmp/                    DuckDB's spill space

A write is a *transaction* (:class:`core.data.store.Write`): it registers itself (``txns``, state
``open``, with its pid), writes its segment files and fsyncs them, then commits in one SQLite
transaction that adds the new segments, marks the replaced ones removed and bumps the version.
Readers see either all of it or none of it. A writer killed at any moment leaves at most files that
no committed segment names; :meth:`Catalog.collect_garbage` deletes them once their writer is gone.
A removed segment's file is kept for :data:`GRACE_SECONDS` so a query that started on the previous
version can finish.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import StoreError

CATALOG_FILE = "catalog.sqlite"
SEGMENTS_DIR = "segments"
LOCKS_DIR = "locks"
TMP_DIR = "tmp"
GRACE_SECONDS = 600.0         # a removed segment's file outlives its removal this long
LOCK_POLL_SECONDS = 0.1
DEFAULT_LOCK_TIMEOUT = 900.0  # a writer waits this long for another writer of the same dataset

_DDL = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS txns (
        txid TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, what TEXT NOT NULL,
        dataset TEXT NOT NULL, started REAL NOT NULL, state TEXT NOT NULL, finished REAL)""",
    """CREATE TABLE IF NOT EXISTS segments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tbl TEXT NOT NULL, dataset TEXT NOT NULL, key TEXT NOT NULL,
        file TEXT NOT NULL UNIQUE,            -- relative to the store folder
        rows INTEGER NOT NULL, bytes INTEGER NOT NULL, txid TEXT NOT NULL,
        added INTEGER NOT NULL, removed INTEGER, removed_at REAL)""",
    "CREATE INDEX IF NOT EXISTS segments_live ON segments (removed, tbl, dataset, key)",
)


@dataclass(frozen=True)
class Segment:
    """One committed Parquet file of one table, dataset and key."""

    id: int
    table: str
    dataset: str
    key: str
    file: str        # relative to the store folder
    rows: int


@dataclass(frozen=True)
class Snapshot:
    """The live segments at one catalog version: what a reader's views show."""

    version: int
    segments: tuple[Segment, ...]

    def files(self, table: str) -> list[str]:
        return [s.file for s in self.segments if s.table == table]


@dataclass
class PendingSegment:
    """A file a write produced and has not committed yet."""

    table: str
    dataset: str
    key: str
    file: str
    rows: int
    bytes: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # alive, someone else's
        return True
    return True


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Catalog:
    """The SQLite catalog of one store folder (one connection per instance; thread-safe via a lock)."""

    def __init__(self, root: Path, *, create: bool, schema_version: int):
        self.root = root
        path = root / CATALOG_FILE
        if not path.exists() and not create:
            raise StoreError(f"{root} has no catalog ({CATALOG_FILE}).", title="Not an IntentLens store",
                             hint="Ingest a dataset first, or check --db / INTENTLENS_DB.")
        if create:
            for sub in (SEGMENTS_DIR, LOCKS_DIR, TMP_DIR):
                (root / sub).mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN / COMMIT ourselves; check_same_thread: guarded below
        self._db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 60000")
        if create:
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")     # a commit is on disk when it returns
        self._lock = threading.Lock()
        if create:
            with self.immediate() as db:
                for ddl in _DDL:
                    db.execute(ddl)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(schema_version)])
                db.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")
        found = self.meta("schema_version")
        if found is None or int(found) != schema_version:
            raise StoreError(
                f"{root} has schema version {found}; this IntentLens needs {schema_version}.",
                title="Incompatible database",
                hint="Point --db / INTENTLENS_DB at a new folder and ingest again.")

    def close(self) -> None:
        self._db.close()

    # -- plumbing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def immediate(self) -> Iterator[sqlite3.Connection]:
        """One SQLite write transaction (BEGIN IMMEDIATE: writers queue here for milliseconds)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def version(self) -> int:
        return int(self.meta("version") or 0)

    def snapshot(self) -> Snapshot:
        """The live segments, read in one SQLite read transaction (a consistent version)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                (version,) = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
                rows = self._db.execute(
                    "SELECT id, tbl, dataset, key, file, rows FROM segments WHERE removed IS NULL "
                    "ORDER BY id").fetchall()
            finally:
                self._db.execute("COMMIT")
        return Snapshot(int(version), tuple(Segment(*r) for r in rows))

    # -- transactions --------------------------------------------------------------------
    def begin(self, dataset: str, what: str) -> str:
        """Register a write (state ``open``) and return its id; files it writes carry the id."""
        txid = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:12]
        with self.immediate() as db:
            db.execute("INSERT INTO txns VALUES (?, ?, ?, ?, ?, ?, 'open', NULL)",
                       [txid, os.getpid(), socket.gethostname(), what, dataset, time.time()])
        return txid

    def commit(self, txid: str, added: list[PendingSegment], removed: list[int]) -> int:
        """Make a write visible: new segments in, replaced ones out, version + 1 (all or nothing)."""
        with self.immediate() as db:
            (state,) = db.execute("SELECT state FROM txns WHERE txid = ?", [txid]).fetchone() or ("gone",)
            if state != "open":
                raise StoreError(f"write {txid} is {state}; it cannot commit.", title="Write aborted",
                                 hint="Another process judged this write dead; run it again.")
            version = int(db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]) + 1
            now = time.time()
            if removed:
                marks = ",".join("?" * len(removed))
                n = db.execute(f"UPDATE segments SET removed = ?, removed_at = ? WHERE removed IS NULL "
                               f"AND id IN ({marks})", [version, now, *removed]).rowcount
                if n != len(removed):
                    raise StoreError("segments this write replaces were replaced by another write meanwhile.",
                                     title="Write conflict", hint="Run it again.")
            db.executemany(
                "INSERT INTO segments (tbl, dataset, key, file, rows, bytes, txid, added) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.table, s.dataset, s.key, s.file, s.rows, s.bytes, txid, version) for s in added])
            db.execute("UPDATE meta SET value = ? WHERE key = 'version'", [str(version)])
            db.execute("UPDATE txns SET state = 'committed', finished = ? WHERE txid = ?", [now, txid])
        return version

    def abort(self, txid: str) -> None:
        with self.immediate() as db:
            db.execute("UPDATE txns SET state = 'aborted', finished = ? WHERE txid = ? AND state = 'open'",
                       [time.time(), txid])

    # -- garbage -------------------------------------------------------------------------
    def collect_garbage(self, grace: float = GRACE_SECONDS) -> dict[str, int]:
        """Delete what no reader can need: files of writes whose process died (or that aborted), and
        files of segments removed more than ``grace`` seconds ago. Returns counts of what went."""
        host = socket.gethostname()
        with self._lock:
            txns = self._db.execute("SELECT txid, pid, host, state FROM txns WHERE state <> 'committed' "
                                    "AND state <> 'cleaned'").fetchall()
        dead = [txid for txid, pid, h, state in txns
                if state == "aborted" or (state == "open" and h == host and not _pid_alive(pid))]
        gone_files = 0
        for txid in dead:
            for path in (self.root / SEGMENTS_DIR).glob(f"*/{txid}-*.parquet"):
                path.unlink(missing_ok=True)
                gone_files += 1
        if dead:
            with self.immediate() as db:
                db.executemany("UPDATE txns SET state = 'cleaned', finished = coalesce(finished, ?) "
                               "WHERE txid = ?", [(time.time(), t) for t in dead])
        with self._lock:
            old = self._db.execute("SELECT id, file FROM segments WHERE removed IS NOT NULL AND removed_at < ?",
                                   [time.time() - grace]).fetchall()
        for _, file in old:
            (self.root / file).unlink(missing_ok=True)
        if old:
            with self.immediate() as db:
                db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i, _ in old])
        return {"dead_writes": len(dead), "orphan_files": gone_files, "expired_segments": len(old)}

    def check(self) -> list[str]:
        """Problems with the committed state: a live segment whose file is missing or whose size
        differs from the one recorded."""
        problems = []
        snap = self.snapshot()
        with self._lock:
            sizes = dict(self._db.execute("SELECT file, bytes FROM segments WHERE removed IS NULL").fetchall())
        for seg in snap.segments:
            path = self.root / seg.file
            if not path.exists():
                problems.append(f"{seg.table}/{seg.dataset}: segment file {seg.file} is missing")
                continue
            if path.stat().st_size != sizes[seg.file]:
                problems.append(f"{seg.table}/{seg.dataset}: {seg.file} has {path.stat().st_size} bytes, "
                                f"the catalog recorded {sizes[seg.file]}")
        return problems

    def named_files(self) -> set[str]:
        """Every file a segment names: live ones and removed ones still in their grace period."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT file FROM segments").fetchall()}

    def open_writes(self) -> list[dict[str, object]]:
        """Writes in progress (state ``open``): what, which dataset, which process, since when."""
        with self._lock:
            rows = self._db.execute("SELECT txid, pid, host, what, dataset, started FROM txns "
                                    "WHERE state = 'open' ORDER BY started").fetchall()
        return [dict(zip(("txid", "pid", "host", "what", "dataset", "started"), r, strict=True)) for r in rows]


class DatasetLock:
    """One writer per dataset across processes: an exclusive flock on ``locks/<hash>.lock``.

    Waits (polling) up to ``timeout`` seconds and then says who holds it. The kernel releases the
    lock when its process dies, so a killed writer never blocks the next one.
    """

    def __init__(self, root: Path, dataset: str, what: str, timeout: float = DEFAULT_LOCK_TIMEOUT):
        digest = hashlib.sha1(dataset.encode("utf-8")).hexdigest()[:20]
        self.path = root / LOCKS_DIR / f"{digest}.lock"
        self.dataset = dataset
        self.what = what
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> DatasetLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise StoreError(
                        f"dataset {self.dataset!r} is being written by another process ({holder}); "
                        f"waited {self.timeout:.0f} s.", title="Dataset is busy",
                        hint="Wait for that job to finish (or stop it), then run this again.") from e
                time.sleep(LOCK_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": self.what, "since": time.time()}).encode())
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (OSError, ValueError):
            return "unknown"
        return f"pid {info.get('pid')}, {info.get('what')}"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
