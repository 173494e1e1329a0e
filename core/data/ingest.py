"""Read -> validate -> clean -> quarantine bad rows -> one transaction into ``events``.

The file is read once by DuckDB's own reader (``read_csv`` with every column as text, or
``read_parquet``) into a temporary staging table, with each row's canonical fields and, for a bad
row, the reason it is bad. Lines the CSV reader cannot split (wrong column count, invalid UTF-8,
unterminated quotes, over-long lines) are captured by ``store_rejects`` with their line numbers.
Good rows go into ``events`` with exact duplicates (identical canonical rows) dropped and counted;
bad rows go into ``quarantine`` with their 1-based source line (the header is line 1) and a reason.

Everything happens inside one :meth:`Store.transaction`: an error, a refused file or a
KeyboardInterrupt (even from the progress callback) leaves the database exactly as it was.

Line numbers count the lines DuckDB's reader sees; blank lines, which it skips, are not counted.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from core.errors import DataError, StoreError
from core.data.formats import ReadPlan, inspect_file, plan_read
from core.progress import ProgressFn, report

MAX_NAME_LEN = 64
MAX_ID_LEN = 256            # longer ids are quarantined
MAX_RAW_LEN = 1000          # quarantine keeps this much of a bad line
MAX_LINE_BYTES = 4 << 20    # the CSV reader's line limit; longer lines are quarantined
EARLIEST = datetime(2000, 1, 1)   # timestamps before this are implausible for a web log
STEPS = 4                   # reading, validating, cleaning, writing

# Reasons a row is quarantined (the `reason` column; also the keys of IngestReport.quarantined).
R_MISSING_USER = "missing user_id"
R_MISSING_ITEM = "missing item_id"
R_MISSING_BEHAVIOR = "missing behavior"
R_UNKNOWN_BEHAVIOR = "unknown behavior"
R_BAD_TS = "unparsable timestamp"
R_IMPLAUSIBLE_TS = "implausible timestamp"
R_LONG_ID = "id longer than 256 characters"
R_BAD_PRICE = "unparsable price"

_NAME_OK = re.compile(r"^[^\x00-\x1f\x7f/\\]+$")
_STAGE = "_ingest_stage"          # temporary tables on the ingest's own cursor
_REJECTS = "_ingest_rejects"
_SCANS = "_ingest_scans"
_DUPKEYS = "_ingest_dupkeys"
_COUNT_DUPKEYS = "SELECT count(*) FROM " + _DUPKEYS
_DROP_DUPKEYS = "DROP TABLE " + _DUPKEYS
_DROP_STAGE = "DROP TABLE " + _STAGE


@dataclass
class IngestReport:
    """What one ingest read, kept, dropped and quarantined."""

    dataset: str
    layout: str
    source_file: str
    sha256: str
    rows_read: int
    rows_stored: int
    duplicates_dropped: int
    quarantined: dict[str, int] = field(default_factory=dict)   # reason -> rows
    ts_min: datetime | None = None
    ts_max: datetime | None = None
    source_tz: str = "UTC"
    seconds: float = 0.0

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rows_quarantined"] = self.rows_quarantined
        for key in ("ts_min", "ts_max"):
            d[key] = d[key].isoformat() if d[key] else None
        return d

    def summary(self) -> str:
        lines = [
            f"Ingested {self.source_file} as dataset {self.dataset!r} (layout {self.layout}) "
            f"in {self.seconds:.1f} s",
            f"  rows read          {self.rows_read:>12,}",
            f"  rows stored        {self.rows_stored:>12,}",
            f"  duplicates dropped {self.duplicates_dropped:>12,}",
            f"  rows quarantined   {self.rows_quarantined:>12,}",
        ]
        for reason, n in sorted(self.quarantined.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {reason:<32}{n:>10,}")
        span = (f"{self.ts_min:%Y-%m-%d %H:%M:%S} .. {self.ts_max:%Y-%m-%d %H:%M:%S} UTC"
                if self.ts_min and self.ts_max else "none")
        lines.append(f"  time range         {span} (source time zone {self.source_tz})")
        lines.append(f"  sha256             {self.sha256}")
        return "\n".join(lines)


# -- names --------------------------------------------------------------------------------
def validate_dataset_name(name: str) -> str:
    """A dataset name: 1..64 characters, no control characters or slashes; surrounding spaces cut.

    Quotes, semicolons and SQL words are allowed: names are always bound as values.
    """
    text = str(name).strip() if name is not None else ""
    if not text:
        raise DataError("the dataset name is empty.", title="Invalid dataset name",
                        hint="Pass --dataset NAME (letters, digits, spaces, - _ . are safest).")
    if len(text) > MAX_NAME_LEN:
        raise DataError(f"the dataset name is {len(text)} characters long; the limit is {MAX_NAME_LEN}.",
                        title="Invalid dataset name", hint="Pass a shorter --dataset NAME.")
    if not _NAME_OK.match(text):
        raise DataError(f"the dataset name {text!r} contains a control character or a slash.",
                        title="Invalid dataset name",
                        hint="Use letters, digits, spaces and - _ . in --dataset NAME.")
    return text


def default_dataset_name(file_name: str) -> str:
    """The file name without directories and .csv/.gz/.parquet endings, made a valid name."""
    stem = Path(file_name).name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".parquet", ".pq"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[\x00-\x1f\x7f/\\]+", "_", stem).strip() or "dataset"
    return stem[:MAX_NAME_LEN]


# -- helpers ------------------------------------------------------------------------------
class _Hasher(threading.Thread):
    """sha256 of a file in a background thread (hashlib releases the GIL on big chunks)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.digest = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            h = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            self.digest = h.hexdigest()
        except OSError as e:    # surfaced by result()
            self.error = e

    def result(self) -> str:
        self.join()
        if self.error is not None:
            raise DataError(f"could not read {self.path.name} to fingerprint it ({self.error}).")
        return self.digest


def _parquet_schema(store):
    def schema(path: Path) -> list[tuple[str, str]]:
        try:
            rows = store.fetchall("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)])
        except StoreError as e:
            raise DataError(f"{path.name} starts like Parquet but cannot be read ({e.message}).",
                            hint="The file may be truncated or corrupt; export it again.") from e
        return [(r[0], r[1]) for r in rows]
    return schema


def _reader_sql(plan: ReadPlan) -> tuple[str, list]:
    """The FROM clause reading the file with positional column names c0..cN."""
    names = ", ".join(f"c{i}" for i in range(plan.n_columns))
    if plan.info.kind == "parquet":
        return f"read_parquet(?) AS t({names})", [str(plan.info.path)]
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(plan.n_columns)) + "}"
    compression = "gzip" if plan.info.compression == "gzip" else "none"
    sql = (f"read_csv(?, auto_detect=false, header=false, skip={1 if plan.header else 0}, "
           f"columns={columns}, delim=?, quote='\"', escape='\"', compression='{compression}', "
           f"max_line_size={MAX_LINE_BYTES}, store_rejects=true, rejects_table='{_REJECTS}', "
           f"rejects_scan='{_SCANS}') AS t({names})")
    return sql, [str(plan.info.path), plan.info.delimiter]


def _stage_sql(plan: ReadPlan, lo: float, hi: float) -> tuple[str, list]:
    """CREATE the staging table: canonical fields, a reason for bad rows, their raw text."""
    e = plan.exprs
    inner_fields = ["user_id", "item_id", "category", "session_id", "brand", "query",
                    "price", "price_raw", "behavior_raw", "behavior", "ts_seconds"]
    params: list[Any] = []
    parts = []
    for name in inner_fields:
        parts.append(f"{e[name]} AS {name}")
        params += plan.params.get(name, [])
    passthrough = ", ".join(f"c{i}" for i in range(plan.n_columns))
    reader, reader_params = _reader_sql(plan)
    delim = plan.info.delimiter if plan.info.kind == "csv" else ","
    raw = "concat_ws(?, " + ", ".join(f"coalesce(CAST(c{i} AS VARCHAR), '')"
                                       for i in range(plan.n_columns)) + ")"
    extras = "".join(f" c{i} AS x{i}," for i in plan.extra_columns)
    item_check = (f"WHEN item_id IS NULL AND behavior IS DISTINCT FROM 'search' THEN '{R_MISSING_ITEM}' "
                  if plan.item_required else "")
    sql = f"""
        CREATE TEMP TABLE {_STAGE} AS
        SELECT user_id, item_id, category, behavior,{extras}
               CASE WHEN reason IS NULL THEN make_timestamp(CAST(round(ts_seconds * 1e6) AS BIGINT)) END AS ts,
               session_id, price, brand, query, reason,
               CASE WHEN reason IS NOT NULL THEN left({raw}, {MAX_RAW_LEN}) END AS raw
        FROM (
            SELECT *,
                CASE
                    WHEN user_id IS NULL THEN '{R_MISSING_USER}'
                    WHEN behavior IS NULL AND behavior_raw IS NULL THEN '{R_MISSING_BEHAVIOR}'
                    WHEN behavior IS NULL THEN '{R_UNKNOWN_BEHAVIOR}'
                    {item_check}
                    WHEN ts_seconds IS NULL OR isnan(ts_seconds) THEN '{R_BAD_TS}'
                    WHEN ts_seconds < ? OR ts_seconds > ? THEN '{R_IMPLAUSIBLE_TS}'
                    WHEN length(user_id) > {MAX_ID_LEN} OR length(item_id) > {MAX_ID_LEN}
                         OR length(category) > {MAX_ID_LEN} OR length(session_id) > {MAX_ID_LEN}
                         THEN '{R_LONG_ID}'
                    WHEN price_raw IS NOT NULL AND price IS NULL THEN '{R_BAD_PRICE}'
                END AS reason
            FROM (SELECT {", ".join(parts)}, {passthrough} FROM {reader})
        )"""
    # parameter order follows the text: raw's delimiter, the bounds, the inner fields, the reader
    return sql, [delim, lo, hi] + params + reader_params


_QUARANTINE_ROWS_SQL = f"""
    INSERT INTO quarantine
    WITH rej AS (SELECT line, row_number() OVER (ORDER BY line) AS j
                 FROM (SELECT DISTINCT line FROM {_REJECTS})),
         steps AS (SELECT line - ? - j AS accepted_before, max(j) AS j FROM rej GROUP BY ALL),
         bad AS (SELECT rowid - (SELECT min(rowid) FROM {_STAGE}) AS k, reason, raw
                 FROM {_STAGE} WHERE reason IS NOT NULL)
    SELECT ?, bad.k + 1 + ? + coalesce(steps.j, 0), bad.reason, bad.raw
    FROM bad ASOF LEFT JOIN steps ON bad.k >= steps.accepted_before
"""
_QUARANTINE_PARQUET_SQL = f"""
    INSERT INTO quarantine
    SELECT ?, rowid - (SELECT min(rowid) FROM {_STAGE}) + 1, reason, raw
    FROM {_STAGE} WHERE reason IS NOT NULL
"""
_QUARANTINE_REJECTS_SQL = f"""
    INSERT INTO quarantine
    SELECT ?, line, 'malformed line: ' || lower(arg_min(error_type, column_idx)),
           left(arg_min(csv_line, column_idx), {MAX_RAW_LEN})
    FROM {_REJECTS} GROUP BY line
"""


def _insert_deduplicated(cur, name: str, plan: ReadPlan) -> int:
    """Insert the good staged rows into ``events``, dropping exact duplicates; returns rows stored.

    Rows are first grouped by a 64-bit hash of the whole row (cheap); only rows whose hash occurs
    more than once go through the exact DISTINCT, the rest are inserted as they are.
    """
    row = ("user_id, item_id, category, behavior, ts, session_id, price, brand, query"
           + "".join(f", x{i}" for i in plan.extra_columns))
    # identifiers and the column list are code constants; the dataset name is bound
    dupkeys_sql = (f"CREATE TEMP TABLE {_DUPKEYS} AS SELECT hash({row}) AS hk FROM {_STAGE} "
                   "WHERE reason IS NULL GROUP BY hk HAVING count(*) > 1")
    cur.execute(dupkeys_sql)
    project = ("?, user_id, item_id, category, CAST(behavior AS behavior_t), ts, session_id, price, "
               "brand, query")
    if cur.execute(_COUNT_DUPKEYS).fetchone()[0] == 0:
        insert_sql = f"INSERT INTO events SELECT {project} FROM {_STAGE} WHERE reason IS NULL"
        stored = cur.execute(insert_sql, [name]).fetchone()[0]
    else:
        insert_sql = (
            f"""INSERT INTO events
                SELECT {project} FROM {_STAGE}
                WHERE reason IS NULL AND hash({row}) NOT IN (SELECT hk FROM {_DUPKEYS})
                UNION ALL
                SELECT {project} FROM (SELECT DISTINCT {row} FROM {_STAGE}
                                       WHERE reason IS NULL AND hash({row}) IN (SELECT hk FROM {_DUPKEYS}))""")
        stored = cur.execute(insert_sql, [name, name]).fetchone()[0]
    cur.execute(_DROP_DUPKEYS)
    return int(stored)


def _is_reader_error(err: Exception) -> bool:
    """A duckdb error (or its StoreError translation) raised while reading the source file."""
    return isinstance(err, StoreError) or type(err).__module__.split(".")[0] in ("duckdb", "_duckdb")


# -- the ingest ---------------------------------------------------------------------------
def ingest_file(store, path, *, dataset: str | None = None, layout: str = "auto",
                column_map: dict[str, str] | None = None, behavior_map: dict[str, str] | None = None,
                replace: bool = False, progress: ProgressFn | None = None,
                source_name: str | None = None) -> IngestReport:
    """Load one behaviour log into ``events`` as ``dataset``; see the module docstring.

    ``layout`` is ``auto`` or one of :data:`core.data.formats.LAYOUTS`; ``column_map`` (FIELD -> source
    column) and ``behavior_map`` (source value -> behaviour, ``*`` for any other value) apply to the
    generic layout. ``source_name`` is the file name to record when ``path`` is a temporary copy
    of an upload. Raises DataError (bad file, nothing usable), ConflictError (name exists).
    """
    started = time.perf_counter()
    path = Path(path)
    source_file = source_name or path.name
    name = validate_dataset_name(dataset if dataset is not None else default_dataset_name(source_file))
    store.require_new_dataset(name, replace)
    info = inspect_file(path, _parquet_schema(store))
    plan = plan_read(info, layout, column_map, behavior_map)

    hasher = _Hasher(path)
    hasher.start()
    lo = EARLIEST.replace(tzinfo=timezone.utc).timestamp()
    hi = (datetime.now(timezone.utc) + timedelta(days=1)).timestamp()
    stage_sql, stage_params = _stage_sql(plan, lo, hi)

    with store.transaction() as cur:
        cur.execute("SET SESSION TimeZone = 'UTC'")   # naive text times are read as UTC
        report(progress, 0, STEPS, f"reading {source_file}")
        try:
            cur.execute(stage_sql, stage_params)
        except Exception as e:  # inside a transaction duckdb's own errors arrive untranslated
            if not _is_reader_error(e):
                raise
            raise DataError(f"DuckDB could not read {source_file} as {plan.layout}: "
                            f"{str(e).strip().splitlines()[0]}",
                            hint="Check the file is complete (not truncated) and in the layout named; "
                                 "see `python -m core ingest --help`.") from e
        report(progress, 1, STEPS, "validating rows")
        total, good = cur.execute(
            f"SELECT count(*), count(*) FILTER (WHERE reason IS NULL) FROM {_STAGE}").fetchone()
        quarantined = dict(cur.execute(
            f"SELECT reason, count(*) FROM {_STAGE} WHERE reason IS NOT NULL GROUP BY reason").fetchall())
        rejected = 0
        if plan.info.kind == "csv":
            rows = cur.execute(
                f"SELECT 'malformed line: ' || lower(t), count(*) FROM "
                f"(SELECT line, arg_min(error_type, column_idx) AS t FROM {_REJECTS} GROUP BY line) "
                f"GROUP BY ALL").fetchall()
            for reason, n in rows:
                quarantined[reason] = quarantined.get(reason, 0) + n
                rejected += n
        rows_read = int(total) + rejected
        if good == 0:
            raise _nothing_usable(source_file, plan, rows_read, quarantined)

        report(progress, 2, STEPS, "dropping exact duplicates")
        if replace:
            store.delete_dataset(name, cur)
        stored = _insert_deduplicated(cur, name, plan)

        report(progress, 3, STEPS, "writing quarantine and dataset record")
        if plan.info.kind == "csv":
            cur.execute(_QUARANTINE_ROWS_SQL, [1 if plan.header else 0, name, 1 if plan.header else 0])
            cur.execute(_QUARANTINE_REJECTS_SQL, [name])
        else:
            cur.execute(_QUARANTINE_PARQUET_SQL, [name])
        n_users, n_items, ts_min, ts_max = cur.execute(
            f"SELECT count(DISTINCT user_id), count(DISTINCT item_id), min(ts), max(ts) "
            f"FROM {_STAGE} WHERE reason IS NULL").fetchone()
        digest = hasher.result()
        n_quarantined = sum(quarantined.values())
        cur.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [name, plan.layout, source_file, digest, rows_read, int(stored), n_quarantined,
             int(good) - int(stored), n_users, n_items, ts_min, ts_max, plan.source_tz,
             json.dumps(plan.options(), sort_keys=True),
             datetime.now(timezone.utc).replace(tzinfo=None)])
        cur.execute(_DROP_STAGE)
        report(progress, STEPS, STEPS, "done")

    return IngestReport(dataset=name, layout=plan.layout, source_file=source_file, sha256=digest,
                        rows_read=rows_read, rows_stored=int(stored),
                        duplicates_dropped=int(good) - int(stored), quarantined=quarantined,
                        ts_min=ts_min, ts_max=ts_max, source_tz=plan.source_tz,
                        seconds=time.perf_counter() - started)


def _nothing_usable(source_file: str, plan: ReadPlan, rows_read: int,
                    quarantined: dict[str, int]) -> DataError:
    if rows_read == 0:
        what = "after the header" if plan.header else "in it"
        return DataError(f"{source_file} has no event rows {what}; {plan.info.found()}.",
                         title="No events in file",
                         hint="Expected one event per line below the header.")
    reasons = "; ".join(f"{r}: {n:,}" for r, n in sorted(quarantined.items(), key=lambda kv: -kv[1]))
    return DataError(
        f"none of the {rows_read:,} rows of {source_file} is a valid {plan.layout} event "
        f"({reasons}); {plan.info.found()}.", title="No valid events",
        hint="Check --format (or use --format generic with --map FIELD=COLUMN for each column).")
