"""The bad-input corpus: small broken or hostile behaviour logs, written on demand.

``write_corpus(directory)`` writes every file of :data:`CASES` and returns ``{name: path}``.
Each case says how it is ingested and what must happen: ``title`` and ``error`` (the error's exact
title and a fragment of its message, ``hint`` optionally a fragment of its hint; nothing may change
in the database) or ``quarantine`` (reason -> (count, first line number)) for files that are partly
bad and still load. Run ``python tests/bad_inputs/make.py DIR`` to look
at the files.
"""
from __future__ import annotations

import gzip
import sys
from dataclasses import dataclass, field
from pathlib import Path

GOOD = [  # valid taobao rows (no header)
    "1,100,10,pv,1511544070",
    "1,101,10,cart,1511544100",
    "2,100,10,pv,1511544200",
    "2,100,10,buy,1511544300",
    "3,102,11,fav,1511544400",
]
REES46_HEADER = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
                 "user_session")
SQL_TEXT = "x'); DROP TABLE events; --"


@dataclass
class Case:
    name: str                      # file name
    content: bytes | None          # file bytes (None: written by a special writer)
    kwargs: dict = field(default_factory=dict)       # extra ingest_file keyword arguments
    error: str | None = None       # a fragment of the error message, verbatim (refused files)
    title: str = "Cannot read this file"   # the error's exact title (refused files)
    hint: str | None = None        # a fragment of the error's hint, verbatim
    error_type: str = "DataError"  # class name of the expected error
    quarantine: dict[str, tuple[int, int]] = field(default_factory=dict)  # reason -> (rows, first line)
    stored: int | None = None      # events stored (partly bad files)


def _lines(*rows: str, newline: str = "\n") -> bytes:
    return (newline.join(rows) + newline).encode()


def _truncated_gzip() -> bytes:
    rows = [f"{u},{1000 + (u * 7919) % 50000},{u % 97},pv,{1511544070 + u}" for u in range(40000)]
    whole = gzip.compress(_lines(*rows), compresslevel=1)
    return whole[: int(len(whole) * 0.6)]


def _wrong_types_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "user": pa.array([[1, 2], [3]], type=pa.list_(pa.int64())),
        "item": pa.array(["a", "b"]),
        "when": pa.array([True, False]),
    })
    pq.write_table(table, path)


def _bool_ts_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user": ["u1", "u2"], "item": ["a", "b"], "when": [True, False]}), path)


TMALL_HEADER = "user_id,brand_id,type,visit_datetime"
TMALL_MAP = {"user_id": "user_id", "item_id": "brand_id", "behavior": "type", "ts": "visit_datetime"}
TMALL_BEHAVIORS = {"0": "view", "1": "buy", "2": "fav", "3": "cart"}


def _corrupted_lines() -> bytes:
    """Good taobao rows with NUL and other control bytes in three of them (lines 3, 5, 7)."""
    rows = [r.encode() for r in GOOD[:2]] + [b"4,1\x0000,10,pv,1511544500", GOOD[2].encode(),
                                             b"\x00\x00\x00\x00\x00\x00\x00\x00", GOOD[3].encode(),
                                             b"5,100,1\x01\x1b,pv,1511544600", GOOD[4].encode()]
    return b"\n".join(rows) + b"\n"


def _mostly_binary() -> bytes:
    """One good line, then 4 KiB of NULs and control bytes: a disk image, not a log."""
    return (GOOD[0] + "\n").encode() + bytes(range(32)) * 128


CASES: list[Case] = [
    Case("empty.csv", b"", error="empty.csv is empty (0 bytes)."),
    Case("blank_lines.csv", b"\n\n  \n", error="blank_lines.csv holds no data (only blank lines)."),
    Case("header_only.csv", _lines(REES46_HEADER), title="No events in file",
         error="header_only.csv has no event rows after the header"),
    Case("binary_junk.bin", bytes(range(256)) * 8, title="Not a text file",
         error="binary_junk.bin is not a text CSV or Parquet file (it holds binary data): 62% of its "
               "first 2,048 bytes are control bytes or not valid UTF-8"),
    Case("mostly_binary.csv", _mostly_binary(), title="Not a text file",
         # 23 text bytes + 128 x (32 bytes of which 29 are control bytes): 3,712 of 4,119 bytes
         error="mostly_binary.csv is not a text CSV or Parquet file (it holds binary data): 90% of its first "
               "4,119 bytes"),
    Case("utf16.csv", "\ufeff1,100,10,pv,1511544070\n".encode("utf-16-le"), title="Not a text file",
         error="utf16.csv is UTF-16 text; save it as UTF-8 and try again."),
    Case("zipped.csv", b"PK\x03\x04" + bytes(60), title="Not a text file",
         error="zipped.csv is a zip archive; unzip it and ingest the CSV or Parquet file inside."),
    Case("not_a_log.csv", _lines("name,age,city", "ann,31,Oslo"), title="Unknown file layout",
         error="the layout of not_a_log.csv is not one IntentLens knows: expected one of: taobao (no header",
         hint="--format generic --map user_id=<column>"),
    Case("wrong_column_count.csv", _lines("1,100,pv", "2,101,buy"), kwargs={"layout": "taobao"},
         title="No valid events",
         error="none of the 2 rows of wrong_column_count.csv is a valid taobao event "
               "(malformed line: missing columns: 2)"),
    Case("wrong_layout_named.csv",
         _lines("user_id,item_id,behavior_type,user_geohash,item_category,time", "1,2,1,,3,2014-12-01 10"),
         kwargs={"layout": "rees46"}, title="Wrong file layout",
         error="wrong_layout_named.csv is not in the rees46 layout: expected the header event_time,"),
    Case("unknown_map_column.csv", _lines("visitor,product,ts", "a,b,1511544070"),
         kwargs={"layout": "generic", "column_map": {"user_id": "customer", "ts": "ts"},
                 "behavior_map": {"*": "view"}}, title="Column not found",
         error="--map user_id=customer: the file has no column 'customer'; its columns are visitor, product, ts."),
    Case("all_bad_timestamps.csv", _lines("1,100,10,pv,yesterday", "2,100,10,pv,0"),
         kwargs={"layout": "taobao"}, title="No valid events",
         error="none of the 2 rows of all_bad_timestamps.csv is a valid taobao event "
               "(implausible timestamp: 1; unparsable timestamp: 1)"),
    Case("tmall_dates_without_format.csv", _lines(TMALL_HEADER, "1,10,0,6-4", "1,10,0,6-4", "2,11,1,6-5"),
         kwargs={"layout": "generic", "column_map": TMALL_MAP, "behavior_map": TMALL_BEHAVIORS},
         title="No valid events",
         error="none of the 3 rows of tmall_dates_without_format.csv is a valid generic event "
               "(unparsable timestamp: 3)", hint="--ts-format (e.g."),
    Case("bad_time_zone.csv", _lines(TMALL_HEADER, "1,10,0,6-4"),
         kwargs={"layout": "generic", "column_map": TMALL_MAP, "behavior_map": TMALL_BEHAVIORS,
                 "ts_format": "%m-%d", "year": 2015, "tz": "Asia/Shangai"}, title="Invalid time option",
         error="--tz 'Asia/Shangai' is not a time zone name DuckDB knows. Did you mean Asia/Shanghai"),
    Case("year_without_format.csv", _lines(TMALL_HEADER, "1,10,0,6-4"),
         kwargs={"layout": "generic", "column_map": TMALL_MAP, "behavior_map": TMALL_BEHAVIORS, "year": 2015},
         title="Invalid time option", error="--year 2015 needs --ts-format"),
    Case("format_without_year.csv", _lines(TMALL_HEADER, "1,10,0,6-4"),
         kwargs={"layout": "generic", "column_map": TMALL_MAP, "behavior_map": TMALL_BEHAVIORS,
                 "ts_format": "%m-%d"}, title="Invalid time option",
         error="--ts-format '%m-%d' has no year (%Y or %y)", hint="--year YYYY"),
    Case("time_option_on_taobao.csv", _lines(*GOOD), kwargs={"ts_format": "%Y-%m-%d", "tz": "UTC"},
         title="Invalid time option", error="--ts-format, --tz only apply to the generic layout; taobao has"),
    Case("bad_duplicates_option.csv", _lines(*GOOD), kwargs={"duplicates": "sometimes"},
         title="Invalid option", error="--duplicates 'sometimes' is not a duplicate policy."),
    Case("bad_timestamps.csv", _lines(*GOOD[:2], "4,100,10,pv,not-a-time", "5,100,10,pv,0",
                                      "6,100,10,pv,99999999999", *GOOD[2:]),
         quarantine={"unparsable timestamp": (1, 3), "implausible timestamp": (2, 4)}, stored=5),
    Case("unknown_behaviors.csv", _lines(*GOOD, "7,100,10,click,1511544500", "8,100,10,,1511544600"),
         quarantine={"unknown behavior": (1, 6), "missing behavior": (1, 7)}, stored=5),
    Case("missing_ids.csv", _lines(*GOOD, ",100,10,pv,1511544500", "9,,10,pv,1511544600"),
         quarantine={"missing user_id": (1, 6), "missing item_id": (1, 7)}, stored=5),
    Case("mixed_encoding.csv", _lines(*GOOD[:3]) + "4,caf\xe9,10,pv,1511544500\n".encode("latin-1")
         + _lines(*GOOD[3:]),
         quarantine={"malformed line: invalid encoding": (1, 4)}, stored=5),
    Case("corrupted_lines.csv", _corrupted_lines(), quarantine={"binary bytes in line": (3, 3)}, stored=5),
    Case("ragged_rows.csv", _lines(*GOOD[:1], "1,100,pv", *GOOD[1:4], "1,2,3,4,5,6", *GOOD[4:]),
         quarantine={"malformed line: missing columns": (1, 2),
                     "malformed line: too many columns": (1, 6)}, stored=5),
    Case("megabyte_line.csv", _lines(*GOOD[:2], "u" * (1 << 20) + ",100,10,pv,1511544500", *GOOD[2:]),
         quarantine={"id longer than 256 characters": (1, 3)}, stored=5),
    Case("sql_in_ids.csv", _lines(*GOOD, f'"{SQL_TEXT}",100,10,pv,1511544500'), stored=6),
    Case("bad_price.csv", _lines(REES46_HEADER,
                                 "2019-10-01 00:00:00 UTC,view,1,2,,b,12.5,10,s1",
                                 "2019-10-01 00:00:01 UTC,view,1,2,,b,twelve,10,s1",
                                 "2019-10-01 00:00:02 UTC,purchase,1,2,,b,12.5,10,s1"),
         quarantine={"unparsable price": (1, 3)}, stored=2),
    Case("truncated.csv.gz", _truncated_gzip(),
         error="DuckDB could not read truncated.csv.gz as taobao: IO Error: Unexpected end of GZIP stream",
         hint="Check the file is complete (not truncated)"),
    Case("wrong_types.parquet", None,
         kwargs={"layout": "generic", "column_map": {"user_id": "user", "item_id": "item", "ts": "when"},
                 "behavior_map": {"*": "view"}}, title="Wrong column type",
         error="Parquet column 'user' (mapped to user_id) has type BIGINT[]"),
    Case("bool_timestamps.parquet", None,
         kwargs={"layout": "generic", "column_map": {"user_id": "user", "item_id": "item", "ts": "when"},
                 "behavior_map": {"*": "view"}}, title="Wrong column type",
         error="'when' (mapped to ts) has type BOOLEAN"),
]

_WRITERS = {"wrong_types.parquet": _wrong_types_parquet, "bool_timestamps.parquet": _bool_ts_parquet}


def write_corpus(directory: str | Path) -> dict[str, Path]:
    """Write every case's file into ``directory``; returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in CASES:
        path = directory / case.name
        if case.content is None:
            _WRITERS[case.name](path)
        else:
            path.write_bytes(case.content)
        paths[case.name] = path
    return paths


if __name__ == "__main__":
    for path in write_corpus(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs_out").values():
        print(path)
