"""The only module that imports duckdb: the store, its cursors, its writes and its schema.

One store per installation, shared by every process that uses it (the app, each CLI command, the
scoring service, scheduled jobs) at the same time. Its path is, in order: the ``path`` argument
(``--db``), the ``INTENTLENS_DB`` environment variable, then ``data/intentlens``. It is a folder of
immutable Parquet segments with a SQLite catalog (:mod:`core.data.catalog`); each process queries it
through its own in-memory DuckDB, whose views (``events``, ``scores``, ...) show the catalog's latest
committed version. Readers never wait and never see half a write.

Writes go through :meth:`Store.write`: one dataset at a time (writers of other datasets run
beside it), all or nothing, and a writer killed at any moment leaves nothing partial. The private
store ``Store(":memory:")`` is a plain in-memory DuckDB with real tables, for scratch work.

A :class:`Store` holds one DuckDB connection; every call takes its own cursor, so threads may
share a Store. Every value is bound with ``?``; table and column names only ever come from
constants in the code. Any duckdb error leaves this module as a
:class:`~core.errors.StoreError` (or a subclass) with a readable title.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from core.data.catalog import (
    CATALOG_FILE,
    DEFAULT_LOCK_TIMEOUT,
    SEGMENTS_DIR,
    TMP_DIR,
    Catalog,
    DatasetLock,
    PendingSegment,
    Snapshot,
    fsync_path,
)
from core.data.schema import BEHAVIORS
from core.errors import ConflictError, NotFoundError, StoreError
from core.settings import ENV_MEMORY, get_settings

if TYPE_CHECKING:
    import pyarrow as pa

# The cursor type Store.cursor() and Store.transaction() yield, for annotations elsewhere (duckdb
# stays imported here only).
Cursor = duckdb.DuckDBPyConnection

# A value of duckdb.connect's ``config`` mapping.
_ConfigValue = str | bool | int | float | list[str]

# Every table's columns and types, in order. The private (``":memory:"``) store creates them as
# DuckDB tables; the shared store's views cast its Parquet segments to them.
TABLE_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "datasets": (
        ("name", "VARCHAR"), ("layout", "VARCHAR"), ("source_file", "VARCHAR"), ("sha256", "VARCHAR"),
        ("rows_read", "BIGINT"), ("rows_stored", "BIGINT"), ("rows_quarantined", "BIGINT"),
        ("duplicates_dropped", "BIGINT"), ("n_users", "BIGINT"), ("n_items", "BIGINT"),
        ("ts_min", "TIMESTAMP"), ("ts_max", "TIMESTAMP"), ("source_tz", "VARCHAR"),
        ("options", "VARCHAR"),         # JSON: column map, behaviour map, csv options used
        ("ingested_at", "TIMESTAMP")),
    "events": (
        ("dataset", "VARCHAR"), ("user_id", "VARCHAR"), ("item_id", "VARCHAR"), ("category", "VARCHAR"),
        ("behavior", "VARCHAR"),        # one of core.data.schema.BEHAVIORS; ordered by behavior_code_sql
        ("ts", "TIMESTAMP"),            # UTC
        ("session_id", "VARCHAR"), ("price", "DOUBLE"), ("brand", "VARCHAR"), ("query", "VARCHAR")),
    "quarantine": (
        ("dataset", "VARCHAR"),
        ("line", "BIGINT"),             # 1-based line number in the source file (header is line 1)
        ("reason", "VARCHAR"), ("raw", "VARCHAR")),
    "scores": (
        ("model_id", "VARCHAR"), ("dataset", "VARCHAR"), ("user_id", "VARCHAR"), ("category", "VARCHAR"),
        ("probability", "DOUBLE"), ("cutoff", "TIMESTAMP"), ("scored_at", "TIMESTAMP")),
    # One row per user and dataset as of its last event: what cohort filters and tables read.
    "user_stats": (
        ("dataset", "VARCHAR"), ("user_id", "VARCHAR"), ("n_events", "BIGINT"), ("n_views", "BIGINT"),
        ("n_carts", "BIGINT"), ("n_favs", "BIGINT"), ("n_buys", "BIGINT"),
        ("open_carts", "BIGINT"),       # items carted and not bought afterwards
        ("first_ts", "TIMESTAMP"), ("last_ts", "TIMESTAMP"),
        ("top_category", "VARCHAR"),    # the category with most events
        ("categories", "VARCHAR[]")),   # every category the user touched
    # Every scoring run (``scores`` keeps only a model's latest run): drift and cohort stability
    # compare runs.
    "score_runs": (
        ("run_id", "VARCHAR"), ("model_id", "VARCHAR"), ("dataset", "VARCHAR"),
        ("cutoff", "TIMESTAMP"),        # T: users described as of this moment
        ("scored_at", "TIMESTAMP"), ("n_users", "BIGINT")),     # distinct users scored
    "score_history": (("run_id", "VARCHAR"), ("user_id", "VARCHAR"), ("category", "VARCHAR"),
                      ("score", "DOUBLE")),
    # Every cohort export (its audit stamp) and the rows it wrote: realized accuracy measures the
    # exported cut once the run's horizon has passed (core.insight.realized).
    "exports": (
        ("export_id", "VARCHAR"),
        ("run_id", "VARCHAR"),          # the scoring run exported (NULL: scores without a recorded run)
        ("model_id", "VARCHAR"), ("dataset", "VARCHAR"), ("cutoff", "TIMESTAMP"),
        ("cut", "VARCHAR"),             # CohortSpec.describe()
        ("spec", "VARCHAR"),            # CohortSpec as JSON
        ("n_rows", "BIGINT"), ("path", "VARCHAR"), ("exported_at", "TIMESTAMP")),
    "export_rows": (("export_id", "VARCHAR"), ("user_id", "VARCHAR"), ("category", "VARCHAR")),
}
# Tables in the order used by fingerprint().
TABLES: tuple[str, ...] = ("datasets", "events", "quarantine", "scores", "user_stats", "score_runs",
                          "score_history", "exports", "export_rows")
# How a table's rows belong to a dataset and a key (for the private store's DML): the dataset
# column (None: through the key's run or export) and the key column (None: one key per dataset).
PARTITION: dict[str, tuple[str | None, str | None]] = {
    "datasets": ("name", None), "events": ("dataset", None), "quarantine": ("dataset", None),
    "user_stats": ("dataset", None), "scores": ("dataset", "model_id"), "score_runs": ("dataset", "run_id"),
    "score_history": (None, "run_id"), "exports": ("dataset", "export_id"), "export_rows": (None, "export_id"),
}
# The parent table that gives a dataset to the rows of a table without a dataset column.
_PARENT: dict[str, str] = {"score_history": "score_runs", "export_rows": "exports"}
# NOT NULL columns of the private store's tables (and the checks of rows a shared write adds).
_NOT_NULL: dict[str, tuple[str, ...]] = {
    "datasets": ("name", "layout"), "events": ("dataset", "user_id", "behavior", "ts"),
    "quarantine": ("dataset", "reason"),
    "scores": ("model_id", "dataset", "user_id", "probability", "cutoff", "scored_at"),
    "user_stats": ("dataset", "user_id"),
    "score_runs": ("run_id", "model_id", "dataset", "cutoff", "scored_at", "n_users"),
    "score_history": ("run_id", "user_id", "score"),
    "exports": ("export_id", "model_id", "dataset", "cut", "spec", "n_rows", "exported_at"),
    "export_rows": ("export_id", "user_id"),
}
_PRIMARY: dict[str, str] = {"datasets": "name", "score_runs": "run_id", "exports": "export_id"}

_BEHAVIOR_ENUM = ", ".join("'" + b + "'" for b in BEHAVIORS)  # constants, not user input
_CREATE_ENUM = f"CREATE TYPE behavior_t AS ENUM ({_BEHAVIOR_ENUM})"


def _table_ddl(table: str) -> str:
    cols = []
    for name, kind in TABLE_COLUMNS[table]:
        extra = " PRIMARY KEY" if _PRIMARY.get(table) == name else (
            " NOT NULL" if name in _NOT_NULL[table] else "")
        cols.append(f"{name} {kind}{extra}")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})"


_DDL: tuple[str, ...] = (
    _CREATE_ENUM,
    *(_table_ddl(t) for t in TABLES),
)


# Deleting a dataset from the private store: every table that holds its rows (names are constants,
# the value is bound).
_DELETE_DATASET: tuple[str, ...] = (
    "DELETE FROM score_history WHERE run_id IN (SELECT run_id FROM score_runs WHERE dataset = ?)",
    "DELETE FROM export_rows WHERE export_id IN (SELECT export_id FROM exports WHERE dataset = ?)",
    *("DELETE FROM " + table + " WHERE " + ("name" if table == "datasets" else "dataset") + " = ?"
      for table in ("exports", "score_runs", "scores", "user_stats", "quarantine", "events", "datasets")))


def resolve_db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``--db`` wins, then ``INTENTLENS_DB``, then ``data/intentlens``."""
    if path:
        return Path(path)
    return get_settings().db_path


def _translate(err: Exception) -> StoreError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, duckdb.IOException) and re.search(r"\block\b", text, re.IGNORECASE):
        return StoreError(
            f"the database file is held by another process ({text}).",
            title="Database is in use",
            hint="Close the other program that opened it, or point --db / INTENTLENS_DB at another store.",
        )
    if isinstance(err, duckdb.OutOfMemoryException):
        return StoreError(text, title="Out of memory",
                          hint=f"Raise {ENV_MEMORY} or free memory, then try again.")
    return StoreError(text)


# The store's own format (the folder layout and catalog), independent of the event schema.
STORE_FORMAT = 2
# Parquet options of every segment.
_PARQUET = "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)"


def _quote(text: str) -> str:
    """A SQL string literal (for file paths in view definitions, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _projection(table: str, columns: Sequence[str] | None) -> str:
    """SELECT list that casts a source relation ``s`` to ``table``'s columns; with ``columns`` the
    source's columns are those (in order) and the table's other columns are NULL."""
    given = set(columns) if columns is not None else None
    parts = []
    for name, kind in TABLE_COLUMNS[table]:
        value = name if given is None or name in given else "NULL"
        parts.append(f"CAST({value} AS {kind}) AS {name}")
    return ", ".join(parts)


def _source(sql: str, table: str, columns: Sequence[str] | None) -> str:
    names = columns if columns is not None else [c for c, _ in TABLE_COLUMNS[table]]
    unknown = [c for c in names if c not in dict(TABLE_COLUMNS[table])]
    if unknown:
        raise StoreError(f"{table} has no column {unknown[0]!r}.")
    return f"SELECT {_projection(table, columns)} FROM ({sql}) AS s({', '.join(names)})"


def _view_sql(table: str, files: Sequence[Path]) -> str:
    if not files:
        nulls = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in TABLE_COLUMNS[table])
        return f"SELECT {nulls} WHERE false"
    listing = "[" + ", ".join(_quote(str(f)) for f in files) + "]"
    return f"SELECT {_projection(table, None)} FROM read_parquet({listing})"


class Store:
    """The IntentLens store: shared (a folder) or private (``":memory:"``).

    Parameters
    ----------
    path: the store folder; ``":memory:"`` for a private, throw-away one.
    read_only: refuse writes (and do not create the folder).
    memory_limit: DuckDB memory limit such as ``"3GB"``; default ``INTENTLENS_MEMORY_LIMIT`` or 3GB.
    temp_directory: where DuckDB spills; default a folder of this process under ``<store>/tmp``.
    threads: DuckDB worker threads; default DuckDB's choice (the number of cores).
    lock_timeout: how long a write waits for another writer of the same dataset.
    in_memory: shared store: tables this process keeps in memory, reloaded when their segments change
        (the app keeps ``scores`` and ``user_stats``, which every cohort query joins); the others are
        views that read the Parquet segments on each query.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False,
                 memory_limit: str | None = None, temp_directory: str | None = None,
                 threads: int | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 in_memory: Sequence[str] = ()):
        self.path = resolve_db_path(path)
        self.read_only = read_only
        self.shared = str(self.path) != ":memory:"
        self.lock_timeout = lock_timeout
        self.catalog: Catalog | None = None
        self._own_tmp: Path | None = None
        config: dict[str, _ConfigValue] = {
            "memory_limit": memory_limit or get_settings().memory_limit,
        }
        if self.shared:
            self.catalog = self._open_catalog()
            if temp_directory is None:
                self._own_tmp = self.path / TMP_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            config["temp_directory"] = temp_directory or str(self._own_tmp)
        elif temp_directory:
            config["temp_directory"] = temp_directory
        if threads:
            config["threads"] = int(threads)
        try:
            self._con = duckdb.connect(":memory:", config=config)
        except duckdb.Error as e:
            raise _translate(e) from e
        self._lock = threading.Lock()
        self._version = -1
        self._in_memory = tuple(t for t in in_memory if t in TABLE_COLUMNS)
        self._files: dict[str, tuple[str, ...]] = {}     # the segment files each table shows now
        if self.shared:
            self._con.execute(_CREATE_ENUM)
            self._con.execute("SET parquet_metadata_cache = true")
            self._refresh()
            if not read_only:
                self.collect_garbage()
        else:
            for ddl in _DDL:
                self._con.execute(ddl)

    def _open_catalog(self) -> Catalog:
        if self.path.is_file():
            raise StoreError(
                f"{self.path} is a single-file database of an earlier IntentLens; stores are now folders "
                "that many processes share.", title="Old database format",
                hint=f"Run `python -m core migrate --from {self.path} --db NEW_FOLDER`, then use NEW_FOLDER.")
        if not (self.path / CATALOG_FILE).exists():
            if self.read_only:
                raise NotFoundError(f"no store at {self.path}.",
                                    hint="Ingest a dataset first, or check --db / INTENTLENS_DB.")
            self.path.mkdir(parents=True, exist_ok=True)
        return Catalog(self.path, create=not self.read_only, schema_version=STORE_FORMAT)

    # -- snapshots -----------------------------------------------------------------------
    def _refresh(self) -> None:
        """Point the views at the catalog's latest version when it moved (caller holds the lock or is
        the constructor). One SQLite read when nothing changed."""
        assert self.catalog is not None
        if self.catalog.version() == self._version:
            return
        snap = self.catalog.snapshot()
        for table in TABLES:
            names = tuple(snap.files(table))
            if self._files.get(table) == names:
                continue                                # this table did not change
            files = [self.path / f for f in names]
            try:
                if table in self._in_memory:
                    self._con.execute(f"CREATE OR REPLACE TABLE il_mem_{table} AS {_view_sql(table, files)}")
                    self._con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM il_mem_{table}")
                else:
                    self._con.execute(f"CREATE OR REPLACE VIEW {table} AS {_view_sql(table, files)}")
                self._files[table] = names
            except duckdb.Error as e:
                raise StoreError(f"{self.path} version {snap.version}: table {table} cannot be read "
                                 f"({str(e).strip().splitlines()[0]}).", title="Damaged store",
                                 hint="Run `python -m core check --db PATH` to see which segment.") from e
        self._version = snap.version

    @property
    def version(self) -> int:
        """The catalog version this process's views show (private store: 0)."""
        if not self.shared:
            return 0
        with self._lock:
            self._refresh()
        return self._version

    # -- connection plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """A fresh cursor for one call on the latest committed version; duckdb errors become StoreError."""
        with self._lock:
            if self.shared:
                self._refresh()
            cur = self._con.cursor()
        try:
            yield cur
        except duckdb.Error as e:
            raise _translate(e) from e
        finally:
            cur.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """Private store only: one DuckDB transaction on its own cursor, rolled back on any exception.
        The shared store is written through :meth:`write`."""
        if self.shared:
            raise StoreError("the shared store's tables are views of committed segments; SQL writes go "
                             "to a private store only.", hint="Write through Store.write(dataset).")
        with self.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @contextlib.contextmanager
    def write(self, dataset: str, what: str = "write") -> Iterator[Write]:
        """One atomic write to ``dataset``'s rows of any table (see :class:`Write`).

        Waits for another writer of the same dataset (up to ``lock_timeout``), never for readers
        or writers of other datasets. Commits when the block ends; on any exception, or if the
        process dies, nothing of it is visible.
        """
        if self.read_only:
            raise StoreError(f"the store at {self.path} was opened read-only.", title="Read-only store",
                             hint="Open it without read_only to write.")
        if not self.shared:
            with self.transaction() as cur:
                yield Write(self, dataset, cur, None)
            return
        assert self.catalog is not None
        with DatasetLock(self.path, dataset, what, self.lock_timeout):
            txid = self.catalog.begin(dataset, what)
            with self._lock:
                cur = self._con.cursor()
            tx = Write(self, dataset, cur, (txid, self.catalog.snapshot()))
            try:
                yield tx
                tx._commit()
            except BaseException as err:
                tx._discard()
                self.catalog.abort(txid)
                if isinstance(err, duckdb.Error):
                    raise _translate(err) from err
                raise
            finally:
                cur.close()
        self.collect_garbage()

    def collect_garbage(self) -> dict[str, int]:
        """Shared store: delete files of dead writes and of segments removed long ago."""
        if self.catalog is None or self.read_only:
            return {}
        return self.catalog.collect_garbage()

    def check(self) -> list[str]:
        """Shared store: problems with the committed state (empty: every segment is whole)."""
        return [] if self.catalog is None else check_segments(self.catalog)

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
        if self.catalog is not None:
            self.catalog.close()
        if self._own_tmp is not None:
            shutil.rmtree(self._own_tmp, ignore_errors=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def delete_dataset(self, name: str) -> None:
        """Remove a dataset's events, quarantine, scores, scoring history, exports and row (one write)."""
        with self.write(name, "delete") as w:
            w.remove_dataset()

    def require_new_dataset(self, name: str, replace: bool) -> None:
        """Refuse an existing name unless ``replace``."""
        if not replace and self.fetchone("SELECT 1 FROM datasets WHERE name = ?", [name]):
            raise ConflictError(f"a dataset called {name!r} exists already.",
                                hint="Pick another --dataset name, or pass --replace to overwrite it.")


class Write:
    """One atomic write to one dataset, from :meth:`Store.write`.

    ``cur`` is this write's own cursor: it sees the store as of the write's start plus what the
    write has added and removed so far, and may hold temporary tables. Rows go in with :meth:`add`
    (a SELECT's rows become a new segment of a table, under a ``key``: the model id for ``scores``,
    the run id for ``score_runs`` / ``score_history``, the export id for ``exports`` /
    ``export_rows``, empty otherwise), out with :meth:`remove` (a key's or every key's rows of a
    table) and :meth:`replace` (both, with the SELECT reading the rows it replaces). Nothing is
    visible to other cursors or processes until the block ends without an exception.
    """

    def __init__(self, store: Store, dataset: str, cur: Cursor,
                 shared: tuple[str, Snapshot] | None):
        self.store = store
        self.dataset = dataset
        self.cur = cur
        self._shared = shared
        self._added: list[PendingSegment] = []
        self._removed: set[int] = set()
        self._n = 0
        if shared is not None:
            self._show()

    # -- the private store: plain DML ----------------------------------------------------
    def _where(self, table: str, key: str | None) -> tuple[str, list[Any]]:
        dataset_col, key_col = PARTITION[table]
        if dataset_col is not None:
            clause, params = f"{dataset_col} = ?", [self.dataset]
        else:
            parent = _PARENT[table]
            clause = f"{key_col} IN (SELECT {key_col} FROM {parent} WHERE dataset = ?)"
            params = [self.dataset]
        if key is not None and key_col is not None:
            clause, params = f"{clause} AND {key_col} = ?", [*params, key]
        return clause, params

    # -- the shared store: segments ------------------------------------------------------
    def _live(self) -> list[tuple[int, str, str]]:
        """(segment id, table, key) of this dataset's segments as this write sees them."""
        assert self._shared is not None
        return [(s.id, s.table, s.key) for s in self._shared[1].segments
                if s.dataset == self.dataset and s.id not in self._removed]

    def _show(self) -> None:
        """Temporary views on ``cur``: the start snapshot, less what was removed, plus what was added."""
        assert self._shared is not None
        root = self.store.path
        for table in TABLES:
            files = [root / s.file for s in self._shared[1].segments
                     if s.table == table and s.id not in self._removed]
            files += [root / p.file for p in self._added if p.table == table]
            self.cur.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS {_view_sql(table, files)}")

    def _write_segment(self, table: str, key: str, sql: str, params: Sequence[Any],
                       columns: Sequence[str] | None) -> PendingSegment | None:
        assert self._shared is not None
        txid = self._shared[0]
        self._n += 1
        relative = f"{SEGMENTS_DIR}/{table}/{txid}-{self._n}.parquet"
        path = self.store.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        query = _source(sql, table, columns)
        (rows,) = self.cur.execute(f"COPY ({query}) TO {_quote(str(path))} {_PARQUET}",
                                   list(params)).fetchone() or (0,)
        if int(rows) == 0:
            path.unlink(missing_ok=True)
            return None
        self._check_not_null(table, path)
        fsync_path(path)
        return PendingSegment(table, self.dataset, key, relative, int(rows), path.stat().st_size)

    def _check_not_null(self, table: str, path: Path) -> None:
        """The private store's NOT NULL constraints, and every row in this write's dataset."""
        tests = " OR ".join(f"{c} IS NULL" for c in _NOT_NULL[table])
        dataset_col = PARTITION[table][0]
        foreign = f"{dataset_col} IS DISTINCT FROM ?" if dataset_col else "false"
        (bad, other) = self.cur.execute(
            f"SELECT count(*) FILTER (WHERE {tests}), count(*) FILTER (WHERE {foreign}) "
            f"FROM read_parquet({_quote(str(path))})", [self.dataset] if dataset_col else []).fetchone() or (0, 0)
        if bad or other:
            path.unlink(missing_ok=True)
            problem = (f"{bad} row(s) lack one of {', '.join(_NOT_NULL[table])}" if bad
                       else f"{other} row(s) belong to another dataset than {self.dataset!r}")
            raise StoreError(f"{table}: {problem}.", title="Invalid rows")

    # -- the API -------------------------------------------------------------------------
    def add(self, table: str, sql: str, params: Sequence[Any] = (), *, key: str = "",
            columns: Sequence[str] | None = None) -> int:
        """Store the rows of ``sql`` (a SELECT on ``cur``) in ``table`` under ``key``; returns how many.
        ``columns`` names the SELECT's columns when it has not all of the table's (the rest are NULL)."""
        if self._shared is None:
            names = columns if columns is not None else [c for c, _ in TABLE_COLUMNS[table]]
            (n,) = self.cur.execute(f"INSERT INTO {table} ({', '.join(names)}) {sql}",
                                    list(params)).fetchone() or (0,)
            return int(n)
        seg = self._write_segment(table, key, sql, params, columns)
        if seg is None:
            return 0
        self._added.append(seg)
        self._show()
        return seg.rows

    def remove(self, table: str, *, key: str | None = None) -> None:
        """Remove this dataset's rows of ``table`` (only ``key``'s when given)."""
        if self._shared is None:
            clause, params = self._where(table, key)
            self.cur.execute(f"DELETE FROM {table} WHERE {clause}", params)
            return
        self._removed.update(i for i, t, k in self._live() if t == table and (key is None or k == key))
        for seg in [p for p in self._added if p.table == table and (key is None or p.key == key)]:
            (self.store.path / seg.file).unlink(missing_ok=True)
            self._added.remove(seg)
        self._show()

    def replace(self, table: str, sql: str, params: Sequence[Any] = (), *, key: str = "",
                columns: Sequence[str] | None = None) -> int:
        """:meth:`remove` ``key``'s rows of ``table`` and :meth:`add` those of ``sql``, which may read
        the rows it replaces."""
        if self._shared is None:
            staged = "_il_replace_" + uuid.uuid4().hex[:8]
            self.cur.execute(f"CREATE TEMP TABLE {staged} AS {sql}", list(params))
            self.remove(table, key=key)
            n = self.add(table, f"SELECT * FROM {staged}", columns=columns)
            self.cur.execute(f"DROP TABLE {staged}")
            return n
        seg = self._write_segment(table, key, sql, params, columns)
        self.remove(table, key=key)
        if seg is None:
            return 0
        self._added.append(seg)
        self._show()
        return seg.rows

    def remove_dataset(self) -> None:
        """Remove every row of this dataset from every table."""
        if self._shared is None:
            for sql in _DELETE_DATASET:
                self.cur.execute(sql, [self.dataset])
            return
        for table in TABLES:
            self.remove(table)

    def require_new(self, replace: bool) -> None:
        """Refuse an existing dataset of this name unless ``replace`` (checked inside the write, so
        two writers cannot both create it)."""
        found = self.cur.execute("SELECT 1 FROM datasets WHERE name = ?", [self.dataset]).fetchone()
        if found and not replace:
            raise ConflictError(f"a dataset called {self.dataset!r} exists already.",
                                hint="Pick another --dataset name, or pass --replace to overwrite it.")

    # -- end -----------------------------------------------------------------------------
    def _commit(self) -> None:
        assert self._shared is not None and self.store.catalog is not None
        for folder in {(self.store.path / p.file).parent for p in self._added}:
            fsync_path(folder)
        self.store.catalog.commit(self._shared[0], self._added, sorted(self._removed))

    def _discard(self) -> None:
        for seg in self._added:
            (self.store.path / seg.file).unlink(missing_ok=True)
        self._added.clear()


def check_segments(catalog: Catalog) -> list[str]:
    """Every committed segment of ``catalog``: present, of the recorded size, readable as Parquet,
    with the recorded number of rows. Works on a store whose views cannot be built."""
    problems = catalog.check()
    con = duckdb.connect(":memory:")
    try:
        for seg in catalog.snapshot().segments:
            if not (catalog.root / seg.file).exists():
                continue
            try:
                (rows,) = con.execute(f"SELECT count(*) FROM read_parquet({_quote(str(catalog.root / seg.file))})"
                                      ).fetchone() or (0,)
            except duckdb.Error as e:
                problems.append(f"{seg.table}/{seg.dataset}: {seg.file} is not readable Parquet "
                                f"({str(e).strip().splitlines()[0]})")
                continue
            if int(rows) != seg.rows:
                problems.append(f"{seg.table}/{seg.dataset}: {seg.file} has {rows} rows, the catalog recorded "
                                f"{seg.rows}")
    finally:
        con.close()
    return problems


def migrate_single_file(source: str | os.PathLike[str], store: Store) -> dict[str, int]:
    """Copy every dataset of a single-file database (the format before shared stores) into ``store``,
    one write per dataset, so each dataset arrives whole or not at all. Returns rows copied per
    dataset; refuses a dataset name ``store`` has already."""
    path = Path(source)
    if not path.is_file():
        raise NotFoundError(f"there is no database file at {path}.", hint="Pass the old .duckdb file to --from.")
    try:
        old = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        raise _translate(e) from e
    counts: dict[str, int] = {}
    try:
        names = [r[0] for r in old.execute("SELECT name FROM datasets ORDER BY name").fetchall()]
        for name in names:
            store.require_new_dataset(name, replace=False)
        for name in names:
            with store.write(name, "migrate") as w:
                for table in TABLES:
                    dataset_col, key_col = PARTITION[table]
                    if dataset_col is not None:
                        where, params = f"{dataset_col} = ?", [name]
                    else:
                        where = f"{key_col} IN (SELECT {key_col} FROM {_PARENT[table]} WHERE dataset = ?)"
                        params = [name]
                    frame = old.sql(f"SELECT * FROM {table} WHERE {where}", params=params).to_arrow_table()
                    w.cur.register("il_migrating", frame)
                    keys = ([None] if key_col is None else
                            sorted({str(k) for k in frame.column(key_col).to_pylist()}))
                    for key in keys:
                        pick = "" if key is None else f" WHERE {key_col} = ?"
                        counts[name] = counts.get(name, 0) + w.add(
                            table, f"SELECT * FROM il_migrating{pick}", [] if key is None else [key],
                            key=key or "")
                    w.cur.unregister("il_migrating")
    except duckdb.Error as e:
        raise _translate(e) from e
    finally:
        old.close()
    return counts
