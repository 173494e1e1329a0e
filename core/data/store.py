"""The only module that imports duckdb: the connection, cursors, transactions and schema.

One DuckDB file per installation. The path is, in order: the ``path`` argument (``--db``), the
``INTENTLENS_DB`` environment variable, then ``data/intentlens.duckdb``. A :class:`Store` holds one
connection; every call takes its own cursor, so threads may share a Store. Every value is bound
with ``?``; table and column names only ever come from constants in the code. Any duckdb error
leaves this module as a :class:`~core.errors.StoreError` (or a subclass) with a readable title.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from core.data.schema import BEHAVIORS, SCHEMA_VERSION
from core.errors import ConflictError, NotFoundError, StoreError
from core.settings import ENV_MEMORY, get_settings

if TYPE_CHECKING:
    import pyarrow as pa

# The cursor type Store.cursor() and Store.transaction() yield, for annotations elsewhere (duckdb
# stays imported here only).
Cursor = duckdb.DuckDBPyConnection

# A value of duckdb.connect's ``config`` mapping.
_ConfigValue = str | bool | int | float | list[str]

# Tables in the order used by fingerprint(); the schema is created from _DDL on first use.
TABLES: tuple[str, ...] = ("meta", "datasets", "events", "quarantine", "scores", "user_stats", "score_runs",
                          "score_history", "exports", "export_rows")

_BEHAVIOR_ENUM = ", ".join("'" + b + "'" for b in BEHAVIORS)  # constants, not user input
_DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    f"CREATE TYPE behavior_t AS ENUM ({_BEHAVIOR_ENUM})",
    """CREATE TABLE IF NOT EXISTS datasets (
        name VARCHAR PRIMARY KEY,
        layout VARCHAR NOT NULL,
        source_file VARCHAR,
        sha256 VARCHAR,
        rows_read BIGINT,
        rows_stored BIGINT,
        rows_quarantined BIGINT,
        duplicates_dropped BIGINT,
        n_users BIGINT,
        n_items BIGINT,
        ts_min TIMESTAMP,
        ts_max TIMESTAMP,
        source_tz VARCHAR,
        options VARCHAR,            -- JSON: column map, behaviour map, csv options used
        ingested_at TIMESTAMP
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        dataset VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL,
        item_id VARCHAR,
        category VARCHAR,
        behavior behavior_t NOT NULL,
        ts TIMESTAMP NOT NULL,      -- UTC
        session_id VARCHAR,
        price DOUBLE,
        brand VARCHAR,
        query VARCHAR
    )""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        dataset VARCHAR NOT NULL,
        line BIGINT,                -- 1-based line number in the source file (header is line 1)
        reason VARCHAR NOT NULL,
        raw VARCHAR
    )""",
    """CREATE TABLE IF NOT EXISTS scores (
        model_id VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL,
        category VARCHAR,
        probability DOUBLE NOT NULL,
        cutoff TIMESTAMP NOT NULL,
        scored_at TIMESTAMP NOT NULL
    )""",
    # One row per user and dataset as of its last event: what cohort filters and tables read.
    """CREATE TABLE IF NOT EXISTS user_stats (
        dataset VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL,
        n_events BIGINT, n_views BIGINT, n_carts BIGINT, n_favs BIGINT, n_buys BIGINT,
        open_carts BIGINT,          -- items carted and not bought afterwards
        first_ts TIMESTAMP, last_ts TIMESTAMP,
        top_category VARCHAR,       -- the category with most events
        categories VARCHAR[]        -- every category the user touched
    )""",
)
# Tables added after schema version 1 shipped: created when missing on every writable open, so an
# existing database file gains them. Every scoring run is appended here (``scores`` keeps only a
# model's latest run): drift and cohort stability compare runs.
_DDL_ADDED: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS score_runs (
        run_id VARCHAR PRIMARY KEY,
        model_id VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        cutoff TIMESTAMP NOT NULL,  -- T: users described as of this moment
        scored_at TIMESTAMP NOT NULL,
        n_users BIGINT NOT NULL     -- distinct users scored
    )""",
    """CREATE TABLE IF NOT EXISTS score_history (
        run_id VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL,
        category VARCHAR,
        score DOUBLE NOT NULL
    )""",
    # Every cohort export (its audit stamp) and the rows it wrote: realized accuracy measures the
    # exported cut once the run's horizon has passed (core.insight.realized).
    """CREATE TABLE IF NOT EXISTS exports (
        export_id VARCHAR PRIMARY KEY,
        run_id VARCHAR,             -- the scoring run exported (NULL: scores without a recorded run)
        model_id VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        cutoff TIMESTAMP,
        cut VARCHAR NOT NULL,       -- CohortSpec.describe()
        spec VARCHAR NOT NULL,      -- CohortSpec as JSON
        n_rows BIGINT NOT NULL,
        path VARCHAR,
        exported_at TIMESTAMP NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS export_rows (
        export_id VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL,
        category VARCHAR
    )""",
)


# Deleting a dataset: every table that holds its rows (names are constants, the value is bound).
_DELETE_DATASET: tuple[str, ...] = (
    "DELETE FROM score_history WHERE run_id IN (SELECT run_id FROM score_runs WHERE dataset = ?)",
    "DELETE FROM export_rows WHERE export_id IN (SELECT export_id FROM exports WHERE dataset = ?)",
    *("DELETE FROM " + table + " WHERE " + ("name" if table == "datasets" else "dataset") + " = ?"
      for table in ("exports", "score_runs", "scores", "user_stats", "quarantine", "events", "datasets")))


def resolve_db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``--db`` wins, then ``INTENTLENS_DB``, then ``data/intentlens.duckdb``."""
    if path:
        return Path(path)
    return get_settings().db_path


def _translate(err: Exception) -> StoreError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, duckdb.IOException) and re.search(r"\block\b", text, re.IGNORECASE):
        return StoreError(
            f"the database file is held by another process ({text}).",
            title="Database is in use",
            hint="Close the other IntentLens process, or point --db / INTENTLENS_DB at another file.",
        )
    if isinstance(err, duckdb.OutOfMemoryException):
        return StoreError(text, title="Out of memory",
                          hint=f"Raise {ENV_MEMORY} or free memory, then try again.")
    return StoreError(text)


class Store:
    """A DuckDB file with the IntentLens schema.

    Parameters
    ----------
    path: database file; ``":memory:"`` for a throw-away database.
    read_only: open without write access (no schema creation).
    memory_limit: DuckDB memory limit such as ``"3GB"``; default ``INTENTLENS_MEMORY_LIMIT`` or 3GB.
    temp_directory: where DuckDB spills; default ``<db file>.tmp`` beside the file.
    threads: DuckDB worker threads; default DuckDB's choice (the number of cores).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False,
                 memory_limit: str | None = None, temp_directory: str | None = None,
                 threads: int | None = None):
        self.path = resolve_db_path(path)
        self.read_only = read_only
        in_memory = str(self.path) == ":memory:"
        config: dict[str, _ConfigValue] = {
            "memory_limit": memory_limit or get_settings().memory_limit,
        }
        if not in_memory:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.exists():
                raise NotFoundError(f"no database at {self.path}.",
                                    hint="Ingest a dataset first, or check --db / INTENTLENS_DB.")
            config["temp_directory"] = temp_directory or str(self.path) + ".tmp"
        elif temp_directory:
            config["temp_directory"] = temp_directory
        if threads:
            config["threads"] = int(threads)
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only, config=config)
        except duckdb.Error as e:
            raise _translate(e) from e
        self._lock = threading.Lock()
        if not read_only:
            self._ensure_schema()

    # -- connection plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """A fresh cursor for one call; duckdb errors become StoreError."""
        with self._lock:
            cur = self._con.cursor()
        try:
            yield cur
        except duckdb.Error as e:
            raise _translate(e) from e
        finally:
            cur.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """One transaction on its own cursor: commit on success, roll back on *any* exception."""
        with self.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self.cursor() as cur:
            cur.execute(sql, params or [])

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.cursor() as cur:
            return cur.execute(sql, params or []).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        with self.cursor() as cur:
            return cur.execute(sql, params or []).fetchone()

    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        with self.cursor() as cur:
            return cur.execute(sql, params or []).df()

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Result as a pyarrow Table."""
        with self.cursor() as cur:
            return cur.sql(sql, params=list(params or [])).to_arrow_table()

    def batches(self, sql: str, params: Sequence[Any] | None = None,
                rows_per_batch: int = 100_000) -> Iterator[pa.RecordBatch]:
        """Stream a result as pyarrow RecordBatches of about ``rows_per_batch`` rows."""
        with self.cursor() as cur:
            reader = cur.sql(sql, params=list(params or [])).to_arrow_reader(rows_per_batch)
            yield from reader

    def register_df(self, cur: Cursor, name: str, frame: pd.DataFrame | pa.Table) -> None:
        """Expose a pandas/arrow object as a view on ``cur`` (name must be a code constant)."""
        cur.register(name, frame)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        with self.cursor() as cur:
            (exists,) = cur.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta'").fetchone() or (0,)
            if exists:
                row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                found = int(row[0]) if row else 0
                if found != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has schema version {found}; this IntentLens needs {SCHEMA_VERSION}.",
                        title="Incompatible database",
                        hint="Point --db / INTENTLENS_DB at a new file and ingest again.")
                for ddl in _DDL_ADDED:
                    cur.execute(ddl)
                return
            cur.execute("BEGIN TRANSACTION")
            try:
                for ddl in _DDL + _DDL_ADDED:
                    cur.execute(ddl)
                cur.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
                cur.execute("COMMIT")
            except duckdb.Error:
                cur.execute("ROLLBACK")
                raise

    # -- fingerprint ---------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of the content of every table: equal before and after a refused operation."""
        digest = hashlib.sha256()
        with self.cursor() as cur:
            for table in TABLES:
                n, h = cur.execute(
                    f"SELECT count(*), coalesce(bit_xor(hash(t)), 0) FROM {table} t").fetchone() or (0, 0)
                digest.update(f"{table}:{n}:{h};".encode())
        return digest.hexdigest()

    # -- datasets ------------------------------------------------------------------------
    def dataset_names(self) -> list[str]:
        return [r[0] for r in self.fetchall("SELECT name FROM datasets ORDER BY name")]

    def datasets(self) -> pd.DataFrame:
        """One row per dataset with its counts and time range."""
        return self.df("SELECT * FROM datasets ORDER BY name")

    def dataset(self, name: str) -> dict[str, Any]:
        """The ``datasets`` row for ``name``; NotFoundError names the ones that exist."""
        frame = self.df("SELECT * FROM datasets WHERE name = ?", [name])
        if frame.empty:
            known = ", ".join(self.dataset_names()) or "none yet"
            raise NotFoundError(f"there is no dataset called {name!r} (datasets: {known}).",
                                hint="Ingest it first with `python -m core ingest PATH --dataset NAME`.")
        return {str(key): value for key, value in frame.iloc[0].items()}

    def delete_dataset(self, name: str, cur: Cursor | None = None) -> None:
        """Remove a dataset's events, quarantine, scores, scoring history and row (inside ``cur``'s transaction)."""
        if cur is None:
            with self.transaction() as own:
                self.delete_dataset(name, own)
            return
        for sql in _DELETE_DATASET:
            cur.execute(sql, [name])

    def require_new_dataset(self, name: str, replace: bool) -> None:
        """Refuse an existing name unless ``replace``."""
        if not replace and self.fetchone("SELECT 1 FROM datasets WHERE name = ?", [name]):
            raise ConflictError(f"a dataset called {name!r} exists already.",
                                hint="Pick another --dataset name, or pass --replace to overwrite it.")
