"""Read -> validate -> clean -> quarantine bad rows -> one transaction into ``events``.

The file is read once by DuckDB's own reader (``read_csv`` with every column as text, or
``read_parquet``) into a temporary staging table, with each row's canonical fields and, for a bad
row, the reason it is bad. Lines the CSV reader cannot split (wrong column count, invalid UTF-8,
unterminated quotes, over-long lines) are captured by ``store_rejects`` with their line numbers.
A CSV line holding control bytes (NUL and the like: a corrupted line) is quarantined as
``binary bytes in line`` whatever else it holds; only a file that is mostly not text is refused
(:func:`core.data.formats.inspect_file`). Bad rows go into ``quarantine`` with their 1-based source
line (the header is line 1), a reason and their raw text (control bytes shown as U+FFFD).

Duplicates (rows identical in every source column) follow a policy: ``drop`` keeps one of each,
``keep`` stores them all. By default (``duplicates=None``) it follows the timestamps' resolution:
at day resolution (a date-only ``ts_format``, or every timestamp at midnight in the source time
zone) identical lines are legitimate repeats (two clicks on one item in one day) and are kept;
finer timestamps make an identical line a repeated record, and it is dropped. The report and the
dataset record (``options`` JSON, key ``duplicates``) say which policy was used and why.

Timestamps of the generic layout are read as :class:`core.data.formats.TimeOptions` says
(``ts_format``, ``tz``, ``year``); :func:`check_time_options` refuses a wrong one, naming it.
:func:`preview_file` parses the first rows into a DataFrame without writing to any store.

Everything happens inside one :meth:`Store.write`: an error, a refused file, a KeyboardInterrupt
(even from the progress callback) or the process being killed leaves the store exactly as it was,
and other processes keep reading the previous version until the write commits.

Line numbers count the lines DuckDB's reader sees; blank lines, which it skips, are not counted.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.data.formats import (
    CONTROL_CLASS,
    ReadPlan,
    SchemaReader,
    TimeOptions,
    directives,
    format_has_year,
    inspect_file,
    plan_read,
)
from core.data.store import Store, Write
from core.errors import DataError, StoreError
from core.progress import ProgressFn, report

if TYPE_CHECKING:
    import pandas as pd
    from duckdb import DuckDBPyConnection as Cursor

MAX_NAME_LEN = 64
MAX_ID_LEN = 256            # longer ids are quarantined
MAX_RAW_LEN = 1000          # quarantine keeps this much of a bad line
MAX_LINE_BYTES = 4 << 20    # the CSV reader's line limit; longer lines are quarantined
MAX_PREVIEW_ROWS = 1000
EARLIEST = datetime(2000, 1, 1)   # timestamps before this are implausible for a web log
STEPS = 4                   # reading, validating, duplicates, writing
DUPLICATE_POLICIES: tuple[str, ...] = ("drop", "keep")

# Reasons a row is quarantined (the `reason` column; also the keys of IngestReport.quarantined).
R_BINARY = "binary bytes in line"
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
_SET_TIMEZONE = "SET SESSION TimeZone = ?"
_CREATE_STAGE = "CREATE TEMP TABLE " + _STAGE + " AS "          # + the reader's SELECT
_COUNT_GOOD = "SELECT count(*) FROM " + _STAGE + " WHERE reason IS NULL"
_COUNT_STAGE = "SELECT count(*), count(*) FILTER (WHERE reason IS NULL) FROM " + _STAGE
_STAGE_REASONS = "SELECT reason, count(*) FROM " + _STAGE + " WHERE reason IS NOT NULL GROUP BY reason"
_STAGE_SPAN = ("SELECT count(DISTINCT user_id), count(DISTINCT item_id), min(ts), max(ts) FROM " + _STAGE
               + " WHERE reason IS NULL")
# Control bytes in quarantined raw text are shown as the replacement character.
_SHOW_RAW = "regexp_replace({raw}, '" + CONTROL_CLASS + "', '\ufffd', 'g')"
_FORMAT_HINT = ("Use strptime directives, e.g. '%Y-%m-%d %H:%M:%S', '%d/%m/%Y %H:%M', '%Y%m%d' or "
                "'%m-%d' (with --year); '%-m' reads a month without a leading zero.")
_PREVIEW_COLUMNS = ("user_id", "item_id", "category", "behavior", "ts", "session_id", "price", "brand",
                    "query", "ts_raw", "reason")


@dataclass
class IngestReport:
    """What one ingest read, kept, dropped and quarantined, and which duplicate policy it used."""

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
    duplicates: str = "drop"          # the policy used: drop | keep
    duplicates_reason: str = ""       # why: asked for, or from the timestamps' resolution
    duplicates_kept: int = 0          # rows identical to an earlier row that were stored (policy keep)
    duplicates_across: int = 0        # append: rows equal to an event stored before (also in duplicates_dropped)

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_quarantined"] = self.rows_quarantined
        for key in ("ts_min", "ts_max"):
            d[key] = d[key].isoformat() if d[key] else None
        return d

    def summary(self) -> str:
        repeats = (f"  duplicates dropped {self.duplicates_dropped:>12,}" if self.duplicates == "drop"
                   else f"  identical rows kept{self.duplicates_kept:>12,}")
        lines = [
            f"Ingested {self.source_file} as dataset {self.dataset!r} (layout {self.layout}) "
            f"in {self.seconds:.1f} s",
            f"  rows read          {self.rows_read:>12,}",
            f"  rows stored        {self.rows_stored:>12,}",
            repeats,
            f"  rows quarantined   {self.rows_quarantined:>12,}",
        ]
        for reason, n in sorted(self.quarantined.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {reason:<32}{n:>10,}")
        span = (f"{self.ts_min:%Y-%m-%d %H:%M:%S} .. {self.ts_max:%Y-%m-%d %H:%M:%S} UTC"
                if self.ts_min and self.ts_max else "none")
        lines.append(f"  time range         {span} (source time zone {self.source_tz})")
        lines.append(f"  duplicates         {self.duplicates} ({self.duplicates_reason})")
        lines.append(f"  sha256             {self.sha256}")
        return "\n".join(lines)


# -- names --------------------------------------------------------------------------------
def validate_dataset_name(name: str | None) -> str:
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


def _parquet_schema(store: Store) -> SchemaReader:
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
    sql = (f"read_csv(?, auto_detect=false, header=false, skip={int(plan.skip)}, "
           f"columns={columns}, delim=?, quote='\"', escape='\"', compression='{compression}', "
           f"max_line_size={MAX_LINE_BYTES}, store_rejects=true, rejects_table='{_REJECTS}', "
           f"rejects_scan='{_SCANS}') AS t({names})")
    return sql, [str(plan.info.path), plan.info.delimiter]


def _rows_sql(plan: ReadPlan, lo: float, hi: float, *, preview: bool = False) -> tuple[str, list]:
    """SELECT every source row as canonical fields plus ``reason`` (NULL for a good row).

    For staging also the source columns not stored (``x<i>``, for duplicate detection) and, for a
    bad row, its raw text; for a preview the timestamp's text (``ts_raw``) instead.
    """
    e = plan.exprs
    inner_fields = ["user_id", "item_id", "category", "session_id", "brand", "query",
                    "price", "price_raw", "behavior_raw", "behavior", "ts_seconds"] + (["ts_raw"] if preview else [])
    params: list[Any] = []
    parts = []
    for name in inner_fields:
        parts.append(f"{e[name]} AS {name}")
        params += plan.params.get(name, [])
    columns = [f"c{i}" for i in range(plan.n_columns)]
    reader, reader_params = _reader_sql(plan)
    # a CSV line with control bytes is corrupted, whatever its fields happen to parse as
    binary_check = (f"WHEN regexp_matches(concat({', '.join(columns)}), '{CONTROL_CLASS}') THEN '{R_BINARY}'"
                    if plan.info.kind == "csv" else "")
    item_check = (f"WHEN item_id IS NULL AND behavior IS DISTINCT FROM 'search' THEN '{R_MISSING_ITEM}' "
                  if plan.item_required else "")
    ts = "CASE WHEN reason IS NULL THEN make_timestamp(CAST(round(ts_seconds * 1e6) AS BIGINT)) END AS ts"
    outer_params: list[Any] = []
    if preview:
        select = f"user_id, item_id, category, behavior, {ts}, session_id, price, brand, query, ts_raw, reason"
    else:
        delim = plan.info.delimiter if plan.info.kind == "csv" else ","
        raw = "concat_ws(?, " + ", ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in columns) + ")"
        extras = "".join(f" c{i} AS x{i}," for i in plan.extra_columns)
        select = (f"user_id, item_id, category, behavior,{extras} {ts}, session_id, price, brand, query, reason, "
                  f"CASE WHEN reason IS NOT NULL THEN left({_SHOW_RAW.format(raw=raw)}, {MAX_RAW_LEN}) END AS raw")
        outer_params = [delim]
    sql = f"""
        SELECT {select}
        FROM (
            SELECT *,
                CASE
                    {binary_check}
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
            FROM (SELECT {", ".join(parts)}, {", ".join(columns)} FROM {reader})
        )"""
    # parameter order follows the text: raw's delimiter, the bounds, the inner fields, the reader
    return sql, [*outer_params, lo, hi, *params, *reader_params]


def _time_bounds() -> tuple[float, float]:
    """Plausible epoch seconds: from EARLIEST to a day from now."""
    return EARLIEST.replace(tzinfo=UTC).timestamp(), (datetime.now(UTC) + timedelta(days=1)).timestamp()


# Lines the CSV reader rejected: one row per line with its reason and text.
_REJECTED_LINES = f"""
    SELECT line,
           CASE WHEN regexp_matches(arg_min(csv_line, column_idx), '{CONTROL_CLASS}') THEN '{R_BINARY}'
                ELSE 'malformed line: ' || lower(arg_min(error_type, column_idx)) END AS reason,
           arg_min(csv_line, column_idx) AS csv_line
    FROM {_REJECTS} GROUP BY line"""
_COUNT_REJECTED_SQL = f"SELECT reason, count(*) FROM ({_REJECTED_LINES}) GROUP BY ALL"
_QUARANTINE = "_ingest_quarantine"   # the quarantined rows, gathered on the ingest's cursor
_CREATE_QUARANTINE = f"CREATE TEMP TABLE {_QUARANTINE} (dataset VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR)"
_QUARANTINE_ROWS_SQL = f"""
    INSERT INTO {_QUARANTINE}
    WITH rej AS (SELECT line, row_number() OVER (ORDER BY line) AS j
                 FROM (SELECT DISTINCT line FROM {_REJECTS})),
         steps AS (SELECT line - ? - j AS accepted_before, max(j) AS j FROM rej GROUP BY ALL),
         bad AS (SELECT rowid - (SELECT min(rowid) FROM {_STAGE}) AS k, reason, raw
                 FROM {_STAGE} WHERE reason IS NOT NULL)
    SELECT ?, bad.k + 1 + ? + coalesce(steps.j, 0), bad.reason, bad.raw
    FROM bad ASOF LEFT JOIN steps ON bad.k >= steps.accepted_before
"""
_QUARANTINE_SKIPPED_SQL = (f"INSERT INTO {_QUARANTINE} VALUES "
                           f"(?, ?, ?, left({_SHOW_RAW.format(raw='?')}, {MAX_RAW_LEN}))")
_QUARANTINE_PARQUET_SQL = f"""
    INSERT INTO {_QUARANTINE}
    SELECT ?, rowid - (SELECT min(rowid) FROM {_STAGE}) + 1, reason, raw
    FROM {_STAGE} WHERE reason IS NOT NULL
"""
_QUARANTINE_REJECTS_SQL = f"""
    INSERT INTO {_QUARANTINE}
    SELECT ?, line, reason, left({_SHOW_RAW.format(raw="csv_line")}, {MAX_RAW_LEN})
    FROM ({_REJECTED_LINES})
"""


def _good_rows(cur: Cursor, name: str, plan: ReadPlan, drop: bool) -> tuple[str, list[Any], int | None]:
    """The SELECT of the good staged rows to store as ``name``, its parameters, and how many rows are
    identical to an earlier one (None with ``drop``: then it is the good rows less those stored).

    Identical means equal in every source column. Rows are first grouped by a 64-bit hash of the
    whole row (cheap); only rows whose hash occurs more than once go through the exact DISTINCT.
    With ``drop`` one row of each identical group is kept, otherwise all of them. The caller drops
    the temporary hash table (``_DROP_DUPKEYS``) once the SELECT has run.
    """
    row = ("user_id, item_id, category, behavior, ts, session_id, price, brand, query"
           + "".join(f", x{i}" for i in plan.extra_columns))
    # identifiers and the column list are code constants; the dataset name is bound
    dupkeys_sql = (f"CREATE TEMP TABLE {_DUPKEYS} AS SELECT hash({row}) AS hk FROM {_STAGE} "
                   "WHERE reason IS NULL GROUP BY hk HAVING count(*) > 1")
    cur.execute(dupkeys_sql)
    project = ("? AS dataset, user_id, item_id, category, CAST(behavior AS behavior_t) AS behavior, ts, "
               "session_id, price, brand, query")
    select_all = f"SELECT {project} FROM {_STAGE} WHERE reason IS NULL"
    suspects = f"FROM {_STAGE} WHERE reason IS NULL AND hash({row}) IN (SELECT hk FROM {_DUPKEYS})"
    if cur.execute(_COUNT_DUPKEYS).fetchall()[0][0] == 0:
        return select_all, [name], 0
    if drop:
        return (f"""SELECT {project} FROM {_STAGE}
                    WHERE reason IS NULL AND hash({row}) NOT IN (SELECT hk FROM {_DUPKEYS})
                    UNION ALL
                    SELECT {project} FROM (SELECT DISTINCT {row} {suspects})""", [name, name], None)
    identical = cur.execute(
        f"SELECT (SELECT count(*) {suspects}) - (SELECT count(*) FROM (SELECT DISTINCT {row} {suspects}))"
    ).fetchall()[0][0]
    return select_all, [name], int(identical)


def _insert_events(w: Write, name: str, plan: ReadPlan, drop: bool) -> tuple[int, int]:
    """Store the good staged rows as ``name``; returns (rows stored, rows identical to an earlier one)."""
    sql, params, identical = _good_rows(w.cur, name, plan, drop)
    stored = w.add("events", sql, params)
    if identical is None:
        identical = int(w.cur.execute(_COUNT_GOOD).fetchall()[0][0]) - stored
    w.cur.execute(_DROP_DUPKEYS)
    return stored, identical


# An append first gathers the file's rows in a temporary table, then stores those not already stored.
_FRESH = "_ingest_fresh"
_FRESH_SQL = f"""
    SELECT n.* FROM {_FRESH} n
    WHERE NOT EXISTS (
        SELECT 1 FROM events o
        WHERE o.dataset = ? AND o.user_id = n.user_id AND o.ts = n.ts AND o.behavior = n.behavior
          AND o.item_id IS NOT DISTINCT FROM n.item_id AND o.category IS NOT DISTINCT FROM n.category)"""
_DATASET_SPAN = ("SELECT count(DISTINCT user_id), count(DISTINCT item_id), min(ts), max(ts) FROM events "
                 "WHERE dataset = ?")


def _append_events(w: Write, name: str, plan: ReadPlan, drop: bool) -> tuple[int, int, int]:
    """Store the good staged rows under ``name``, leaving out those equal to an event of ``name``
    stored before in (user_id, item_id, category, behavior, ts). Returns (rows stored, rows
    identical to an earlier row of the file, rows left out as already stored)."""
    sql, params, identical = _good_rows(w.cur, name, plan, drop)
    w.cur.execute(f"CREATE TEMP TABLE {_FRESH} AS {sql}", params)
    w.cur.execute(_DROP_DUPKEYS)
    staged = int(w.cur.execute(f"SELECT count(*) FROM {_FRESH}").fetchall()[0][0])
    if identical is None:
        identical = int(w.cur.execute(_COUNT_GOOD).fetchall()[0][0]) - staged
    stored = w.add("events", _FRESH_SQL, [name])
    w.cur.execute("DROP TABLE " + _FRESH)
    return stored, identical, staged - stored


# The dataset's row after an append: counts added, span recomputed, the appended file listed.
_APPENDED_ROW_SQL = """
    SELECT name, layout, source_file, ?, coalesce(rows_read, 0) + ?, coalesce(rows_stored, 0) + ?,
           coalesce(rows_quarantined, 0) + ?, coalesce(duplicates_dropped, 0) + ?, ?, ?, ?, ?, source_tz,
           ?, ?
    FROM datasets WHERE name = ?"""


def _update_appended(w: Write, previous: dict[str, Any], record: dict[str, Any], quarantined: int) -> None:
    """Add an append's counts to the dataset's record; recompute its users, items and time range."""
    name = previous["name"]
    n_users, n_items, ts_min, ts_max = w.cur.execute(_DATASET_SPAN, [name]).fetchall()[0]
    options = json.loads(previous.get("options") or "{}")
    options["appends"] = [*options.get("appends", []), record]
    digest = hashlib.sha256(f"{previous.get('sha256') or ''}+{record['sha256']}".encode()).hexdigest()
    w.replace("datasets", _APPENDED_ROW_SQL,
              [digest, record["rows_read"], record["rows_stored"], quarantined, record["duplicates_dropped"],
               n_users, n_items, ts_min, ts_max, json.dumps(options, sort_keys=True, default=str),
               record["appended_at"], name])


def _day_resolution(cur: Cursor, plan: ReadPlan) -> str | None:
    """Why the timestamps are at day resolution (a date-only format, or every good one at local
    midnight), or None when they are finer. Stops at the first timestamp that is not midnight."""
    if plan.time.date_only:
        return f"the timestamp format {plan.time.ts_format!r} has no time of day"
    if plan.session_tz == "UTC":
        local, params = "ts", []
    else:
        local, params = "timezone(?, timezone('UTC', ts))", [plan.session_tz] * 2   # used twice below
    finer = cur.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {_STAGE} WHERE reason IS NULL "
        f"AND {local} <> date_trunc('day', {local}) LIMIT 1)", params).fetchall()[0][0]
    if finer:
        return None
    return f"every timestamp is at midnight ({plan.session_tz})"


def _duplicate_policy(asked: str | None, day: str | None) -> tuple[str, str]:
    """The policy to use and the reason given for it."""
    repeats = "so identical lines are legitimate repeats (e.g. two clicks on one item in one day)"
    if asked is not None:
        found = f"day resolution: {day}" if day else "timestamps finer than a day"
        return asked, f"asked for (--duplicates {asked}); {found}"
    if day:
        return "keep", f"auto: day resolution ({day}), {repeats}"
    return "drop", "auto: timestamps are finer than a day, so an identical line is a repeated record"


def _is_reader_error(err: Exception) -> bool:
    """A duckdb error (or its StoreError translation) raised while reading the source file."""
    return isinstance(err, StoreError) or type(err).__module__.split(".")[0] in ("duckdb", "_duckdb")


def _reader_failed(source_file: str, plan: ReadPlan, err: Exception) -> DataError:
    text = err.message if isinstance(err, StoreError) else str(err).strip().splitlines()[0]
    return DataError(f"DuckDB could not read {source_file} as {plan.layout}: {text}",
                     hint="Check the file is complete (not truncated) and in the layout named; "
                          "see `python -m core ingest --help`.")


# -- options ------------------------------------------------------------------------------
def duplicate_choice(value: str | None) -> str | None:
    """``drop`` or ``keep``; None (or ``auto``) lets the timestamps' resolution decide."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if text not in DUPLICATE_POLICIES:
        raise DataError(f"--duplicates {value!r} is not a duplicate policy.", title="Invalid option",
                        hint="Use --duplicates drop (keep one of identical rows), keep (store them all), "
                             "or leave it out to decide from the timestamps' resolution.")
    return text


def check_time_options(store: Store, ts_format: str | None = None, tz: str | None = None,
                       year: int | str | None = None) -> TimeOptions:
    """Validated :class:`TimeOptions` (``tz`` spelt as DuckDB's zone list does); a DataError names
    the option that is wrong and says what would be right."""
    fmt = None if ts_format is None or not str(ts_format).strip() else str(ts_format)
    if fmt is not None:
        if not directives(fmt):
            raise DataError(f"--ts-format {fmt!r} has no strptime directive such as %Y, %m or %d.",
                            title="Invalid time option", hint=_FORMAT_HINT)
        try:
            store.fetchone("SELECT try_strptime('', ?)", [fmt])
        except StoreError as e:
            raise DataError(f"--ts-format {fmt!r} is not a strptime format DuckDB can read ({e.message}).",
                            title="Invalid time option", hint=_FORMAT_HINT) from e
    number = _year(year)
    if number is not None and fmt is None:
        raise DataError(f"--year {number} needs --ts-format: it is the year of dates whose format has none.",
                        title="Invalid time option", hint="Add e.g. --ts-format '%m-%d' for dates like 6-4.")
    if fmt is not None and number is not None and format_has_year(fmt):
        raise DataError(f"--year {number} was given but --ts-format {fmt!r} reads a year itself.",
                        title="Invalid time option", hint="Drop --year, or drop the year from --ts-format.")
    if fmt is not None and number is None and not format_has_year(fmt):
        raise DataError(f"--ts-format {fmt!r} has no year (%Y or %y), so the dates cannot be placed in time.",
                        title="Invalid time option",
                        hint="Pass --year YYYY with the year the source's documentation gives.")
    zone = None
    if tz is not None and str(tz).strip():
        zones = {n.lower(): n for (n,) in store.fetchall("SELECT name FROM pg_timezone_names()")}
        zone = zones.get(str(tz).strip().lower())
        if zone is None:
            close = difflib.get_close_matches(str(tz).strip(), list(zones.values()), n=3)
            maybe = f" Did you mean {', '.join(close)}?" if close else ""
            raise DataError(f"--tz {tz!r} is not a time zone name DuckDB knows.{maybe}",
                            title="Invalid time option",
                            hint="Use an IANA name such as Asia/Shanghai, Europe/Berlin, America/New_York or UTC.")
    return TimeOptions(ts_format=fmt, tz=zone, year=number)


def _year(year: int | str | None) -> int | None:
    if year is None or (isinstance(year, str) and not year.strip()):
        return None
    text = str(year).strip()
    if isinstance(year, bool) or not text.isdigit():
        raise DataError(f"--year {year!r} is not a year.", title="Invalid time option",
                        hint="Pass a four-digit year such as 2015.")
    number = int(text)
    latest = datetime.now(UTC).year
    if not EARLIEST.year <= number <= latest:
        raise DataError(f"--year {number} is outside {EARLIEST.year}..{latest}, the years a behaviour log "
                        "can be from.", title="Invalid time option", hint="Pass the year the events happened.")
    return number


def _read_plan(store: Store, path: Path, layout: str, column_map: dict[str, str] | None,
               behavior_map: dict[str, str] | None, time_options: TimeOptions) -> ReadPlan:
    """Look at the file and plan how to read it (DataError on any problem)."""
    info = inspect_file(path, _parquet_schema(store))
    return plan_read(info, layout, column_map, behavior_map, time_options)


# -- preview ------------------------------------------------------------------------------
def preview_file(path: str | Path, *, layout: str = "auto", column_map: dict[str, str] | None = None,
                 behavior_map: dict[str, str] | None = None, ts_format: str | None = None,
                 tz: str | None = None, year: int | str | None = None, rows: int = 20) -> pd.DataFrame:
    """The first ``rows`` rows of ``path`` as ingest would read them, without storing anything.

    Columns: user_id, item_id, category, behavior, ts (UTC; empty for a bad row), session_id,
    price, brand, query, ts_raw (the timestamp as the file has it) and reason (why ingest would
    quarantine the row; None for a good one). Lines the CSV reader cannot split are left out.
    Works in a throw-away in-memory DuckDB and raises the DataErrors ingest would for the file and
    the options.
    """
    if not 1 <= rows <= MAX_PREVIEW_ROWS:
        raise DataError(f"rows={rows!r}: a preview shows 1..{MAX_PREVIEW_ROWS} rows.", title="Invalid option")
    path = Path(path)
    with Store(":memory:") as scratch:
        time_options = check_time_options(scratch, ts_format, tz, year)
        plan = _read_plan(scratch, path, layout, column_map, behavior_map, time_options)
        lo, hi = _time_bounds()
        sql, params = _rows_sql(plan, lo, hi, preview=True)
        with scratch.cursor() as cur:
            cur.execute(_SET_TIMEZONE, [plan.session_tz])
            try:
                frame = cur.execute(sql + " LIMIT ?", [*params, rows]).df()
            except Exception as e:  # duckdb's errors, before the cursor translates them
                if not _is_reader_error(e):
                    raise
                raise _reader_failed(path.name, plan, e) from e
    frame["behavior"] = frame["behavior"].astype("string")
    return frame[list(_PREVIEW_COLUMNS)]


# -- the ingest ---------------------------------------------------------------------------
def ingest_file(store: Store, path: str | Path, *, dataset: str | None = None, layout: str = "auto",
                column_map: dict[str, str] | None = None, behavior_map: dict[str, str] | None = None,
                replace: bool = False, progress: ProgressFn | None = None,
                source_name: str | None = None, ts_format: str | None = None, tz: str | None = None,
                year: int | str | None = None, duplicates: str | None = None,
                append: bool = False) -> IngestReport:
    """Load one behaviour log into ``events`` as ``dataset``; see the module docstring.

    ``layout`` is ``auto`` or one of :data:`core.data.formats.LAYOUTS`; ``column_map`` (FIELD -> source
    column) and ``behavior_map`` (source value -> behaviour, ``*`` for any other value) apply to the
    generic layout, and so do ``ts_format`` (strptime format), ``tz`` (IANA zone of the source's
    local times) and ``year`` (for a format without one). ``duplicates`` is ``drop``, ``keep`` or
    None (from the timestamps' resolution). ``source_name`` is the file name to record when
    ``path`` is a temporary copy of an upload. Raises DataError (bad file or option, nothing
    usable), ConflictError (name exists).

    ``append``: add the file's events to the existing ``dataset`` (NotFoundError when there is none)
    with the same validation, quarantine and duplicate policy; a row equal to a stored event of the
    dataset in (user_id, item_id, category, behavior, ts) is dropped as a duplicate too (counted in
    ``duplicates_dropped`` and ``duplicates_across``). The dataset record's counts, time range and
    ``ingested_at`` are updated, its ``sha256`` becomes sha256(old digest + file digest) and its
    ``options`` JSON lists the appended files (key ``appends``). One transaction, as always.
    """
    started = time.perf_counter()
    path = Path(path)
    source_file = source_name or path.name
    name = validate_dataset_name(dataset if dataset is not None else default_dataset_name(source_file))
    asked = duplicate_choice(duplicates)
    time_options = check_time_options(store, ts_format, tz, year)
    if append:
        if replace:
            raise DataError("append and replace exclude each other.", title="Invalid option",
                            hint="Append new events to a dataset, or replace it, not both.")
        previous = store.dataset(name)      # NotFoundError names the datasets that exist
    else:
        store.require_new_dataset(name, replace)
    plan = _read_plan(store, path, layout, column_map, behavior_map, time_options)

    hasher = _Hasher(path)
    hasher.start()
    rows_sql, rows_params = _rows_sql(plan, *_time_bounds())

    with store.write(name, "append" if append else "ingest") as w:
        cur = w.cur
        if not append:
            w.require_new(replace)          # again inside the write: another process may have made it
        cur.execute(_SET_TIMEZONE, [plan.session_tz])   # text times without a zone are local there
        report(progress, 0, STEPS, f"reading {source_file}")
        try:
            cur.execute(_CREATE_STAGE + rows_sql, rows_params)
        except Exception as e:  # inside a transaction duckdb's own errors arrive untranslated
            if not _is_reader_error(e):
                raise
            raise _reader_failed(source_file, plan, e) from e
        report(progress, 1, STEPS, "validating rows")
        total, good = cur.execute(_COUNT_STAGE).fetchall()[0]
        quarantined = dict(cur.execute(_STAGE_REASONS).fetchall())
        rejected = 0
        if plan.info.kind == "csv":
            for reason, n in cur.execute(_COUNT_REJECTED_SQL).fetchall():
                quarantined[reason] = quarantined.get(reason, 0) + n
                rejected += n
        skipped = plan.info.corrupted_head if plan.header else []   # corrupted lines above the header
        if skipped:
            quarantined[R_BINARY] = quarantined.get(R_BINARY, 0) + len(skipped)
        rows_read = int(total) + rejected + len(skipped)
        if good == 0:
            raise _nothing_usable(source_file, plan, rows_read, quarantined)

        report(progress, 2, STEPS, "checking duplicates")
        day = _day_resolution(cur, plan)
        policy, why = _duplicate_policy(asked, day)
        if replace:
            w.remove_dataset()
        across = 0
        if append:
            stored, identical, across = _append_events(w, name, plan, drop=policy == "drop")
        else:
            stored, identical = _insert_events(w, name, plan, drop=policy == "drop")
        dropped = (identical if policy == "drop" else 0) + across

        report(progress, 3, STEPS, "writing quarantine and dataset record")
        cur.execute(_CREATE_QUARANTINE)
        if plan.info.kind == "csv":
            cur.execute(_QUARANTINE_ROWS_SQL, [plan.skip, name, plan.skip])
            cur.execute(_QUARANTINE_REJECTS_SQL, [name])
            for k, text in enumerate(skipped):
                cur.execute(_QUARANTINE_SKIPPED_SQL, [name, k + 1, R_BINARY, text])
        else:
            cur.execute(_QUARANTINE_PARQUET_SQL, [name])
        w.add("quarantine", f"SELECT * FROM {_QUARANTINE}")
        cur.execute("DROP TABLE " + _QUARANTINE)
        n_users, n_items, ts_min, ts_max = cur.execute(_STAGE_SPAN).fetchall()[0]
        digest = hasher.result()
        options = {**plan.options(), "duplicates": {"policy": policy, "asked": asked, "reason": why,
                                                    "day_resolution": day is not None,
                                                    "identical_rows": identical}}
        if append:
            record = {"file": source_file, "sha256": digest, "rows_read": rows_read, "rows_stored": stored,
                      "duplicates_dropped": dropped, "duplicates_across": across, "ts_min": ts_min,
                      "ts_max": ts_max, "appended_at": datetime.now(UTC).replace(tzinfo=None)}
            _update_appended(w, previous, record, sum(quarantined.values()))
        else:
            w.add("datasets", "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?",
                [name, plan.layout, source_file, digest, rows_read, stored, sum(quarantined.values()),
                 dropped, n_users, n_items, ts_min, ts_max, plan.source_tz,
                 json.dumps(options, sort_keys=True), datetime.now(UTC).replace(tzinfo=None)])
        cur.execute(_DROP_STAGE)
        report(progress, STEPS, STEPS, "done")

    return IngestReport(dataset=name, layout=plan.layout, source_file=source_file, sha256=digest,
                        rows_read=rows_read, rows_stored=stored, duplicates_dropped=dropped,
                        quarantined=quarantined, ts_min=ts_min, ts_max=ts_max, source_tz=plan.source_tz,
                        seconds=time.perf_counter() - started, duplicates=policy, duplicates_reason=why,
                        duplicates_kept=identical if policy == "keep" else 0, duplicates_across=across)


def _nothing_usable(source_file: str, plan: ReadPlan, rows_read: int,
                    quarantined: dict[str, int]) -> DataError:
    if rows_read == 0:
        what = "after the header" if plan.header else "in it"
        return DataError(f"{source_file} has no event rows {what}; {plan.info.found()}.",
                         title="No events in file",
                         hint="Expected one event per line below the header.")
    reasons = "; ".join(f"{r}: {n:,}" for r, n in sorted(quarantined.items(), key=lambda kv: (-kv[1], kv[0])))
    worst = max(quarantined, key=lambda r: quarantined[r])
    if worst in (R_BAD_TS, R_IMPLAUSIBLE_TS) and plan.layout == "generic":
        hint = ("Say how to read the times: --ts-format (e.g. '%d/%m/%Y %H:%M', or '%m-%d' with --year "
                "2015 for dates without a year) and --tz for the source's time zone.")
    else:
        hint = "Check --format (or use --format generic with --map FIELD=COLUMN for each column)."
    return DataError(
        f"none of the {rows_read:,} rows of {source_file} is a valid {plan.layout} event "
        f"({reasons}); {plan.info.found()}.", title="No valid events", hint=hint)
