"""Source layouts: how each known behaviour log maps onto the canonical ``events`` schema.

A :class:`ReadPlan` says how to read a file (CSV options or Parquet) and gives one SQL expression
per canonical field. Expressions only ever name code-generated positional columns ``c0, c1, ...``
(the reader's columns are renamed positionally), so a user's column names never become SQL
identifiers; behaviour values, time bounds and offsets are bound with ``?``.

Layouts
-------
``taobao``          UserBehavior: no header; ``user_id,item_id,category_id,behavior,timestamp``;
                    ``pv/cart/fav/buy``; unix seconds (absolute instants; the source's local zone,
                    UTC+8, is recorded).
``tianchi_mobile``  header ``user_id,item_id,behavior_type,user_geohash,item_category,time``;
                    1 view, 2 fav, 3 cart, 4 buy; ``YYYY-MM-DD HH`` in China time (UTC+8) -> UTC.
``rees46``          header ``event_time,event_type,product_id,category_id,category_code,brand,price,
                    user_id,user_session``; ``2019-10-01 00:00:00 UTC``; view/cart/remove_from_cart/
                    purchase. ``category`` is ``category_code`` when present, else ``category_id``
                    (the code is readable; the id keeps rows without a code distinguishable).
``retailrocket``    header ``timestamp,visitorid,event,itemid,transactionid``; unix milliseconds;
                    view/addtocart/transaction.
``generic``         any CSV (with a header, or positional ``--map user_id=1``) or Parquet, with a
                    column map ``FIELD=COLUMN`` (fields: :data:`GENERIC_FIELDS`) and a behaviour value
                    map ``SOURCE=BEHAVIOR``. ``*=BEHAVIOR`` maps every other value, and gives every
                    row that behaviour when no ``behavior`` column is mapped (e.g. ``*=view`` for a
                    view-only log). ``ts`` may hold epoch seconds, milliseconds, microseconds or
                    nanoseconds (told apart per value by magnitude) or date/time text; ``ts_offset_ms``
                    adds a column of milliseconds to it (Diginetica's ``timeframe``). :class:`TimeOptions`
                    says how to read text times: a strptime format, the source's time zone (text without
                    a zone is local time there; UTC when none is given) and a year for dates without one.

Text checks
-----------
:func:`inspect_file` refuses a file only when its sampled head is mostly not text (over
:data:`BINARY_SHARE_LIMIT` of its bytes are control bytes or not UTF-8). A text file with a few
corrupted lines is read; :data:`CONTROL_CLASS` finds those lines so that ingest quarantines them.
"""
from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.data.schema import BEHAVIORS, MAPPABLE_FIELDS
from core.errors import DataError

LAYOUTS: tuple[str, ...] = ("taobao", "tianchi_mobile", "rees46", "retailrocket", "generic")

# Fields a generic column map may name: the canonical ones plus a millisecond offset added to ts.
GENERIC_FIELDS: tuple[str, ...] = (*MAPPABLE_FIELDS, "ts_offset_ms")

# Behaviour values every generic file understands (lower-cased source value -> canonical).
DEFAULT_BEHAVIOR_MAP: dict[str, str] = {
    **{b: b for b in BEHAVIORS},
    "pv": "view", "click": "view", "detail": "view", "page_view": "view",
    "addtocart": "cart", "add_to_cart": "cart",
    "favorite": "fav", "favourite": "fav", "like": "fav", "wishlist": "fav",
    "purchase": "buy", "transaction": "buy", "order": "buy",
    "removefromcart": "remove_from_cart",
}

TAOBAO_BEHAVIORS = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}
TIANCHI_BEHAVIORS = {"1": "view", "2": "fav", "3": "cart", "4": "buy"}
REES46_BEHAVIORS = {"view": "view", "cart": "cart", "remove_from_cart": "remove_from_cart",
                    "purchase": "buy"}
RETAILROCKET_BEHAVIORS = {"view": "view", "addtocart": "cart", "transaction": "buy"}

TIANCHI_HEADER = ("user_id", "item_id", "behavior_type", "user_geohash", "item_category", "time")
REES46_HEADER = ("event_time", "event_type", "product_id", "category_id", "category_code", "brand",
                 "price", "user_id", "user_session")
RETAILROCKET_HEADER = ("timestamp", "visitorid", "event", "itemid", "transactionid")
KNOWN_HEADERS: dict[str, tuple[str, ...]] = {
    "tianchi_mobile": TIANCHI_HEADER, "rees46": REES46_HEADER, "retailrocket": RETAILROCKET_HEADER,
}

# Reads a Parquet file's (column name, type name) pairs; the caller supplies one that uses its store.
SchemaReader = Callable[[Path], list[tuple[str, str]]]

_SNIFF_BYTES = 1 << 16   # how much of the file the detector looks at
_DELIMITERS = (",", ";", "\t", "|")

# A file whose sampled head has more than this share of non-text bytes (control bytes other than
# tab/CR/LF, and bytes that are not valid UTF-8) is refused as binary. Below it, lines holding such
# bytes are quarantined one by one and every other line is kept.
BINARY_SHARE_LIMIT = 0.30
# The control bytes that mark a corrupted line, as a regular-expression character class (RE2 and
# Python both read the escapes); tab, LF and CR are text.
CONTROL_CLASS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL_BYTES = re.compile(CONTROL_CLASS.encode())
_NOT_TEXT = re.compile(CONTROL_CLASS[:-1] + r"\udc80-\udcff]")   # control, or an undecodable byte
# Formats that are not a behaviour log but are often mistaken for one (magic bytes -> what to do).
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive; unzip it and ingest the CSV or Parquet file inside"),
    (b"BZh", "bzip2-compressed; decompress it (or re-compress with gzip) first"),
    (b"\xfd7zXZ\x00", "xz-compressed; decompress it (or re-compress with gzip) first"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed; decompress it (or re-compress with gzip) first"),
    (b"\xff\xfe", "UTF-16 text; save it as UTF-8 and try again"),
    (b"\xfe\xff", "UTF-16 text; save it as UTF-8 and try again"),
)

# strptime directives (after an optional '-' flag) that carry a year, or a time of day.
_DIRECTIVE = re.compile(r"%-?([A-Za-z%])")
_YEAR_DIRECTIVES = frozenset("YyGcx")
_TIME_DIRECTIVES = frozenset("HIMSfgncX")


@dataclass(frozen=True)
class TimeOptions:
    """How the generic layout reads text timestamps (checked by ``core.data.ingest`` first).

    ``ts_format``: a strptime format such as ``%Y-%m-%d %H:%M:%S`` or ``%m-%d``; None: numbers
    are epoch seconds/ms/us/ns, text is read by DuckDB's own date/time parser.
    ``tz``: the source's IANA time zone; text without a zone is local time there (None: UTC).
    ``year``: the year of dates whose format has none (``%m-%d`` with 2015 reads ``6-4`` as
    2015-06-04); every row gets that year.
    """

    ts_format: str | None = None
    tz: str | None = None
    year: int | None = None

    def given(self) -> list[str]:
        """The options that are set, by their command-line names."""
        names = (("--ts-format", self.ts_format), ("--tz", self.tz), ("--year", self.year))
        return [name for name, value in names if value is not None]

    @property
    def date_only(self) -> bool:
        """A format without a time of day: every timestamp is a whole day."""
        return self.ts_format is not None and not (directives(self.ts_format) & _TIME_DIRECTIVES)


def directives(fmt: str) -> set[str]:
    """The strptime directive letters in ``fmt`` (``%-d`` counts as ``d``; ``%%`` is a literal)."""
    return {d for d in _DIRECTIVE.findall(fmt) if d != "%"}


def format_has_year(fmt: str) -> bool:
    return bool(directives(fmt) & _YEAR_DIRECTIVES)


@dataclass
class FileInfo:
    """What the first bytes of a file say about it."""

    path: Path
    kind: str                    # csv | parquet
    compression: str             # none | gzip
    delimiter: str = ","
    first_line: str = ""         # the first line without control bytes (CSV), for detection
    first_line_no: int = 1       # its 1-based number (> 1 only when the lines above it are corrupted)
    corrupted_head: list[str] = field(default_factory=list)   # those lines above it, as text
    first_fields: list[str] = field(default_factory=list)   # first_line split on the delimiter
    parquet_columns: list[tuple[str, str]] = field(default_factory=list)  # (name, duckdb type)

    def found(self) -> str:
        """One line describing the start of the file, for error messages."""
        if self.kind == "parquet":
            cols = ", ".join(f"{n} {t}" for n, t in self.parquet_columns)
            return f"a Parquet file with columns: {cols}"
        if self.first_line_no > 1:
            return (f"line {self.first_line_no} (the first without binary bytes) "
                    f"{_shorten(self.first_line)!r}")
        return f"first line {_shorten(self.first_line)!r}"


@dataclass
class ReadPlan:
    """How to read one file and turn its columns into canonical fields.

    ``exprs`` maps a canonical field (and ``ts_seconds``) to a SQL expression over ``c0..cN``;
    ``params`` holds the values bound to the ``?`` in those expressions, per field.
    """

    layout: str                          # one of LAYOUTS
    info: FileInfo
    n_columns: int                       # columns in the source (c0 .. c{n-1})
    header: bool                         # CSV: has a header line (skipped, but counted)
    source_tz: str                       # recorded with the dataset
    exprs: dict[str, str]                # field -> SQL expression (ts_seconds: DOUBLE epoch seconds,
                                         # ts_raw: the timestamp column as text)
    params: dict[str, list]              # field -> bound values for its expression
    behavior_map: dict[str, str]         # lower-cased source value (or '*') -> canonical behaviour
    column_map: dict[str, str] = field(default_factory=dict)   # generic: field -> source column
    item_required: bool = True           # rows without item_id are quarantined (except searches)
    extra_columns: list[int] = field(default_factory=list)   # source columns not stored; they take
                                         # part in duplicate detection (duplicates = identical lines)
    time: TimeOptions = field(default_factory=TimeOptions)   # generic: how text times are read

    @property
    def session_tz(self) -> str:
        """DuckDB's TimeZone while reading: text times without a zone are local time there."""
        return self.time.tz or "UTC"

    @property
    def skip(self) -> int:
        """CSV lines before the first data line: the header and any corrupted lines above it."""
        return self.info.first_line_no if self.header else 0

    def options(self) -> dict:
        """What went into reading the file, stored as JSON with the dataset."""
        options = {"layout": self.layout, "kind": self.info.kind, "compression": self.info.compression,
                   "delimiter": self.info.delimiter, "header": self.header,
                   "column_map": self.column_map, "behavior_map": self.behavior_map,
                   "source_tz": self.source_tz}
        if self.time.ts_format is not None:
            options["ts_format"] = self.time.ts_format
        if self.time.year is not None:
            options["year"] = self.time.year
        return options


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- looking at the file ----------------------------------------------------------------
def inspect_file(path: str | Path, parquet_schema: SchemaReader | None = None) -> FileInfo:
    """Read the first bytes of ``path``: Parquet or CSV, compression, delimiter, first line.

    ``parquet_schema(path) -> list[(name, type)]`` is supplied by the caller (it needs the store).
    Raises DataError for a missing, empty, binary or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"there is no file at {path}.", hint="Check the path and try again.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if not magic:
        raise DataError(f"{path.name} is empty (0 bytes).",
                        hint="Expected a behaviour log: CSV, gzip CSV or Parquet with one event per row.")
    if magic == b"PAR1":
        return FileInfo(path=path, kind="parquet", compression="none",
                        parquet_columns=list((parquet_schema or _arrow_schema)(path)))
    compression = "gzip" if magic[:2] == b"\x1f\x8b" else "none"
    try:
        if compression == "gzip":
            with gzip.open(path, "rb") as gz:
                head = gz.read(_SNIFF_BYTES)
        else:
            with open(path, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path.name} looks gzip-compressed but cannot be decompressed ({e}).",
                        hint="The file may be truncated; download or copy it again.") from e
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    _refuse_binary(path, head)
    if not head.strip():
        raise DataError(f"{path.name} holds no data (only blank lines).",
                        hint="Expected a behaviour log with one event per line.")
    lines = head.split(b"\n")
    whole = lines[:-1] or lines      # the last piece may be cut by the sample
    line_no = next((k for k, line in enumerate(whole) if not _CONTROL_BYTES.search(line)), 0)
    first_line = lines[line_no].rstrip(b"\r").decode("utf-8", errors="replace")
    corrupted = [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in lines[:line_no]]
    delimiter = max(_DELIMITERS, key=first_line.count) if first_line else ","
    if first_line.count(delimiter) == 0:
        delimiter = ","
    fields = [f.strip().strip('"').strip() for f in first_line.split(delimiter)]
    return FileInfo(path=path, kind="csv", compression=compression, delimiter=delimiter,
                    first_line=first_line, first_line_no=line_no + 1, corrupted_head=corrupted,
                    first_fields=fields)


def _refuse_binary(path: Path, head: bytes) -> None:
    """DataError when the sampled head is a known non-log format or mostly not text."""
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            raise DataError(f"{path.name} is {what}.", title="Not a text file",
                            hint="Expected a behaviour log: CSV, gzip CSV or Parquet with one event per row.")
    share = binary_share(head)
    if share <= BINARY_SHARE_LIMIT:
        return
    control = len(_CONTROL_BYTES.findall(head)) / len(head)
    what = ("is not UTF-8 text" if control < 0.01 else "is not a text CSV or Parquet file (it holds binary data)")
    raise DataError(
        f"{path.name} {what}: {share:.0%} of its first {len(head):,} bytes are control bytes or not "
        f"valid UTF-8 (a file is refused above {BINARY_SHARE_LIMIT:.0%}; below it only the corrupted "
        f"lines are quarantined); first bytes {head[:16]!r}.", title="Not a text file",
        hint="Expected a behaviour log: CSV (UTF-8), gzip CSV or Parquet with one event per row.")


def _arrow_schema(path: Path) -> list[tuple[str, str]]:
    """Column names and (pyarrow) type names of a Parquet file, for detection only."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as e:   # pyarrow raises ArrowInvalid (a ValueError) on junk
        raise DataError(f"{path.name} starts like Parquet but cannot be read ({e}).",
                        hint="The file may be truncated or corrupt; export it again.") from e
    return [(f.name, str(f.type)) for f in schema]


def binary_share(chunk: bytes) -> float:
    """Share of bytes in ``chunk`` that are not text: control bytes other than tab, CR and LF, and
    bytes that are not part of valid UTF-8."""
    if not chunk:
        return 0.0
    return len(_NOT_TEXT.findall(chunk.decode("utf-8", errors="surrogateescape"))) / len(chunk)


def _header_of(info: FileInfo) -> tuple[str, ...]:
    if info.kind == "parquet":
        return tuple(n.lower() for n, _ in info.parquet_columns)
    return tuple(f.lower() for f in info.first_fields)


def _looks_taobao(info: FileInfo) -> bool:
    f = info.first_fields
    return (info.kind == "csv" and info.delimiter == "," and len(f) == 5
            and f[3].lower() in TAOBAO_BEHAVIORS and f[4].isdigit())


def how_to_map(info: FileInfo) -> str:
    """A ready-to-edit generic command line for this file's columns."""
    names = [n for n, _ in info.parquet_columns] if info.kind == "parquet" else info.first_fields
    guess: dict[str, str] = {}
    for name in names:
        low = name.lower()
        for fld, keys in (("ts", ("time", "date", "ts")),
                          ("user_id", ("user", "visitor", "customer", "client")),
                          ("item_id", ("item", "product", "sku")),
                          ("behavior", ("event", "behav", "action", "type"))):
            if fld not in guess and any(k in low for k in keys):
                guess[fld] = name
                break
    parts = [f"--map {fld}={guess.get(fld, '<column>')}" for fld in ("user_id", "item_id", "behavior", "ts")]
    return ("Name the layout with --format taobao|tianchi_mobile|rees46|retailrocket, or map the columns: "
            "--format generic " + " ".join(parts) + " [--behavior-map VALUE=view|cart|fav|buy ...; "
            "--behavior-map '*=view' when every row is a view].")


def _expected() -> str:
    return ("expected one of: taobao (no header; user_id,item_id,category_id,pv|cart|fav|buy,unix seconds), "
            "tianchi_mobile (header " + ",".join(TIANCHI_HEADER) + "), rees46 (header "
            + ",".join(REES46_HEADER) + "), retailrocket (header " + ",".join(RETAILROCKET_HEADER) + ")")


def detect_from_info(info: FileInfo) -> str:
    """The layout a file's first line (or Parquet schema) matches; DataError when none or several do."""
    header = _header_of(info)
    matches = [name for name, cols in KNOWN_HEADERS.items() if header == cols]
    if _looks_taobao(info):
        matches.append("taobao")
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:   # cannot happen with the built-in layouts; kept for new ones
        raise DataError(f"{info.path.name} matches several layouts ({', '.join(matches)}).",
                        hint="Name one with --format.")
    near = [name for name, cols in KNOWN_HEADERS.items() if set(cols) <= set(header)]
    extra = (f" It has the columns of {near[0]} plus others; use --format generic with a column map."
             if near else "")
    raise DataError(f"the layout of {info.path.name} is not one IntentLens knows: {_expected()}; "
                    f"found {info.found()}.{extra}", title="Unknown file layout",
                    hint=how_to_map(info))


def detect_layout(path: str | Path, parquet_schema: SchemaReader | None = None) -> str:
    """Name the layout of ``path`` from its header and shape (see the module docstring)."""
    return detect_from_info(inspect_file(path, parquet_schema))


# -- SQL building blocks (code constants and positional column names only) ----------------
def _col(i: int) -> str:
    return f"c{int(i)}"


def _text(i: int, info: FileInfo) -> str:
    """Column i as trimmed text, NULL when empty."""
    base = _col(i) if info.kind == "csv" else f"CAST({_col(i)} AS VARCHAR)"
    return f"NULLIF(trim({base}), '')"


def _behavior_expr(src: str | None, mapping: dict[str, str]) -> tuple[str, list]:
    """CASE over lower-cased source values; values bound, '*' the fallback (or the constant)."""
    fallback = mapping.get("*")
    if src is None:
        return ("?", [fallback])
    pairs = [(k, v) for k, v in mapping.items() if k != "*"]
    params: list = []
    sql = "CASE lower(" + src + ")"
    for k, v in pairs:
        sql += " WHEN ? THEN ?"
        params += [k, v]
    if fallback is not None:
        sql += " ELSE (CASE WHEN " + src + " IS NULL THEN NULL ELSE ? END)"
        params.append(fallback)
    return sql + " END", params


def _unix_seconds(text: str) -> str:
    return f"TRY_CAST({text} AS DOUBLE)"


def _epoch_unit(n: str) -> str:
    """Epoch seconds from a number whose unit is told by its size: present-day instants are about
    1e9 in seconds, 1e12 in milliseconds, 1e15 in microseconds and 1e18 in nanoseconds."""
    return (f"(CASE WHEN abs({n}) >= 1e17 THEN {n} / 1e9 WHEN abs({n}) >= 1e14 THEN {n} / 1e6 "
            f"WHEN abs({n}) >= 1e11 THEN {n} / 1e3 ELSE {n} END)")


def _parquet_type(i: int, info: FileInfo) -> str:
    return info.parquet_columns[i][1].upper() if info.kind == "parquet" else "VARCHAR"


def _is_time_type(typ: str) -> bool:
    return typ.startswith("TIMESTAMP") or typ == "DATE"


def _auto_seconds(i: int, info: FileInfo) -> str:
    """Epoch seconds from epoch numbers (unit by size), timestamps, or date/time text.

    Text without a zone is read in the session's TimeZone (the plan's ``session_tz``)."""
    upper = _parquet_type(i, info)
    if _is_time_type(upper):
        return f"epoch(CAST({_col(i)} AS TIMESTAMPTZ))"
    if any(upper.startswith(t) for t in ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "DECIMAL",
                                           "SMALLINT", "UBIGINT", "UINTEGER", "HUGEINT", "REAL")):
        return _epoch_unit(f"CAST({_col(i)} AS DOUBLE)")
    t = _text(i, info)
    n = f"TRY_CAST({t} AS DOUBLE)"
    return f"(CASE WHEN {n} IS NOT NULL THEN {_epoch_unit(n)} ELSE epoch(TRY_CAST({t} AS TIMESTAMPTZ)) END)"


def _formatted_seconds(i: int, info: FileInfo, time: TimeOptions) -> tuple[str, list]:
    """Epoch seconds from text read with ``time.ts_format`` (the year put in front when given)."""
    t = _text(i, info)
    if time.year is not None:
        return (f"epoch(CAST(try_strptime(? || ' ' || {t}, ?) AS TIMESTAMPTZ))",
                [str(time.year), "%Y " + str(time.ts_format)])
    return f"epoch(CAST(try_strptime({t}, ?) AS TIMESTAMPTZ))", [time.ts_format]


def _plan(layout: str, info: FileInfo, n_columns: int, header: bool, source_tz: str,
          fields: dict[str, int], ts_sql: str, bmap: dict[str, str], *, ts_params: list | None = None,
          time: TimeOptions | None = None, column_map: dict[str, str] | None = None,
          item_required: bool = True) -> ReadPlan:
    exprs: dict[str, str] = {}
    params: dict[str, list] = {"ts_seconds": list(ts_params or [])}
    for name in ("user_id", "item_id", "category", "session_id", "brand", "query"):
        exprs[name] = _text(fields[name], info) if name in fields else "NULL"
    if "price" in fields:
        exprs["price"] = f"TRY_CAST({_text(fields['price'], info)} AS DOUBLE)"
        exprs["price_raw"] = _text(fields["price"], info)
    else:
        exprs["price"], exprs["price_raw"] = "NULL", "NULL"
    src = _text(fields["behavior"], info) if "behavior" in fields else None
    exprs["behavior_raw"] = src or "NULL"
    exprs["behavior"], params["behavior"] = _behavior_expr(src, bmap)
    exprs["ts_seconds"] = ts_sql
    exprs["ts_raw"] = _text(fields["ts"], info)
    used = set(fields.values())
    return ReadPlan(layout=layout, info=info, n_columns=n_columns, header=header, source_tz=source_tz,
                    exprs=exprs, params=params, behavior_map=dict(bmap), column_map=column_map or {},
                    item_required=item_required, time=time or TimeOptions(),
                    extra_columns=[i for i in range(n_columns) if i not in used])


def plan_read(info: FileInfo, layout: str, column_map: dict[str, str] | None = None,
              behavior_map: dict[str, str] | None = None, time: TimeOptions | None = None) -> ReadPlan:
    """The ReadPlan for ``info`` in ``layout`` (``auto`` detects it); ``time`` applies to generic."""
    time = time or TimeOptions()
    if layout in (None, "", "auto"):
        layout = "generic" if column_map else detect_from_info(info)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}.", hint=f"Use one of: auto, {', '.join(LAYOUTS)}.")
    if column_map and layout != "generic":
        raise DataError(f"--map only applies to the generic layout, not {layout}.",
                        hint="Add --format generic, or drop the --map options.")
    if layout == "generic":
        return _plan_generic(info, column_map or {}, behavior_map, time)
    if behavior_map:
        raise DataError(f"--behavior-map only applies to the generic layout, not {layout}.",
                        hint="Add --format generic with a --map for each column.")
    if time.given():
        given = time.given()
        raise DataError(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} to the generic "
                        f"layout; {layout} has its own fixed time format and zone.", title="Invalid time option",
                        hint="Drop the option, or use --format generic with a --map for each column.")
    if layout == "taobao":
        _require_csv(info, layout)
        f = {"user_id": 0, "item_id": 1, "category": 2, "behavior": 3, "ts": 4}
        return _plan(layout, info, 5, False, "UTC+08:00", f, _unix_seconds(_text(4, info)),
                     TAOBAO_BEHAVIORS)
    if layout == "retailrocket":
        header = _require_header(info, layout)
        f = {"ts": 0, "user_id": 1, "item_id": 3, "behavior": 2}
        ts = f"({_unix_seconds(_text(0, info))} / 1000.0)"
        return _plan(layout, info, 5, header, "UTC", f, ts, RETAILROCKET_BEHAVIORS)
    if layout == "tianchi_mobile":
        header = _require_header(info, layout)
        f = {"user_id": 0, "item_id": 1, "behavior": 2, "category": 4, "ts": 5}
        text = _text(5, info) if info.kind == "csv" else f"CAST({_col(5)} AS VARCHAR)"
        # local China time (UTC+8, no daylight saving) -> UTC
        ts = f"(epoch(try_strptime({text}, '%Y-%m-%d %H')) - 8 * 3600)"
        return _plan(layout, info, 6, header, "UTC+08:00", f, ts, TIANCHI_BEHAVIORS)
    # rees46
    header = _require_header(info, layout)
    f = {"ts": 0, "behavior": 1, "item_id": 2, "brand": 5, "price": 6, "user_id": 7, "session_id": 8}
    plan = _plan(layout, info, 9, header, "UTC", f,
                 f"epoch(TRY_CAST({_text(0, info)} AS TIMESTAMPTZ))", REES46_BEHAVIORS)
    plan.exprs["category"] = f"coalesce({_text(4, info)}, {_text(3, info)})"
    return plan


def _require_csv(info: FileInfo, layout: str) -> None:
    if info.kind != "csv":
        raise DataError(f"the {layout} layout is a CSV file; {info.path.name} is {info.kind}.",
                        hint="Use --format generic with a column map for Parquet files.")


def _require_header(info: FileInfo, layout: str) -> bool:
    """Known header present -> True; a headerless CSV of the right width -> False."""
    expected = KNOWN_HEADERS[layout]
    if _header_of(info) == expected:
        return True
    if info.kind == "csv" and len(info.first_fields) == len(expected) and \
            not {f.lower() for f in info.first_fields} & set(expected):
        return False
    raise DataError(f"{info.path.name} is not in the {layout} layout: expected the header "
                    f"{','.join(expected)}; found {info.found()}.", title="Wrong file layout",
                    hint=how_to_map(info))


def _plan_generic(info: FileInfo, column_map: dict[str, str],
                  behavior_map: dict[str, str] | None, time: TimeOptions) -> ReadPlan:
    unknown = sorted(set(column_map) - set(GENERIC_FIELDS))
    if unknown:
        raise DataError(f"unknown field(s) in --map: {', '.join(unknown)}.",
                        hint=f"Fields are: {', '.join(GENERIC_FIELDS)}.")
    bmap: dict[str, str] = dict(DEFAULT_BEHAVIOR_MAP)
    for source, target in (behavior_map or {}).items():
        target_l = str(target).strip().lower()
        if target_l not in BEHAVIORS:
            raise DataError(f"--behavior-map {source}={target}: {target!r} is not a behaviour.",
                            hint=f"Behaviours are: {', '.join(BEHAVIORS)}.")
        bmap[str(source).strip().lower() if source != "*" else "*"] = target_l
    missing = [f for f in ("user_id", "ts") if f not in column_map]
    if "behavior" not in column_map and "*" not in bmap:
        missing.append("behavior (or --behavior-map '*=BEHAVIOR' for a constant)")
    if missing:
        raise DataError(f"the generic layout needs a column for: {', '.join(missing)}; "
                        f"found {info.found()}.", title="Incomplete column map", hint=how_to_map(info))
    names = [n for n, _ in info.parquet_columns] if info.kind == "parquet" else info.first_fields
    lowered = [n.lower() for n in names]
    # every column given as a number: positional, and a CSV has no header line
    positional = all(str(c).strip().isdigit() for c in column_map.values())
    header = info.kind == "csv" and not positional
    fields: dict[str, int] = {}
    for fld, column in column_map.items():
        column = str(column).strip()
        if not positional and column.lower() in lowered:
            fields[fld] = lowered.index(column.lower())
        elif column.isdigit() and 1 <= int(column) <= len(names):
            fields[fld] = int(column) - 1   # 1-based position
        else:
            raise DataError(f"--map {fld}={column}: the file has no column {column!r}; "
                            f"its columns are {', '.join(names)}.", title="Column not found",
                            hint="Use a column name from the header, or a 1-based column number.")
    if info.kind == "parquet":
        _check_parquet_types(info, fields)
    ts_params: list = []
    if time.ts_format is not None:
        if _is_time_type(_parquet_type(fields["ts"], info)):
            name, typ = info.parquet_columns[fields["ts"]]
            raise DataError(f"--ts-format applies to text timestamps; Parquet column {name!r} (mapped to ts) "
                            f"is already {typ}.", title="Invalid time option",
                            hint="Drop --ts-format (--tz still applies to timestamps without a zone).")
        ts_sql, ts_params = _formatted_seconds(fields["ts"], info, time)
    else:
        ts_sql = _auto_seconds(fields["ts"], info)
    if "ts_offset_ms" in fields:
        off = _text(fields["ts_offset_ms"], info)
        ts_sql = f"({ts_sql} + coalesce(TRY_CAST({off} AS DOUBLE), 0) / 1000.0)"
    return _plan("generic", info, len(names), header, time.tz or "UTC", fields, ts_sql, bmap,
                 ts_params=ts_params, time=time, column_map={k: str(v) for k, v in column_map.items()},
                 item_required="item_id" in fields)


_NESTED = ("[]", "STRUCT", "MAP", "UNION", "BLOB", "BIT")


def _check_parquet_types(info: FileInfo, fields: dict[str, int]) -> None:
    """Mapped Parquet columns must be text, numbers or (for ts) dates/timestamps."""
    for fld, i in fields.items():
        name, typ = info.parquet_columns[i]
        upper = typ.upper()
        bad = any(t in upper for t in _NESTED) or (fld in ("ts", "ts_offset_ms", "price")
                                                   and upper in ("BOOLEAN", "UUID"))
        if bad:
            need = "a timestamp, a number or date text" if fld == "ts" else \
                "a number" if fld in ("price", "ts_offset_ms") else "text or a number"
            raise DataError(f"Parquet column {name!r} (mapped to {fld}) has type {typ}; "
                            f"{fld} needs {need}; found {info.found()}.", title="Wrong column type",
                            hint="Map another column, or convert this one before ingesting.")
