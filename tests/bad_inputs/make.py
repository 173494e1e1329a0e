"""The bad-input corpus: small broken or hostile behaviour logs, written on demand.

``write_corpus(directory)`` writes every file of :data:`CASES` and returns ``{name: path}``.
Each case says how it is ingested and what must happen: ``error`` (a regex the message must
match; nothing may change in the database) or ``quarantine`` (reason -> (count, first line number))
for files that are partly bad and still load. Run ``python tests/bad_inputs/make.py DIR`` to look
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
    error: str | None = None       # regex for the error message (refused files)
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


CASES: list[Case] = [
    Case("empty.csv", b"", error=r"is empty \(0 bytes\)"),
    Case("blank_lines.csv", b"\n\n  \n", error=r"holds no data"),
    Case("header_only.csv", _lines(REES46_HEADER), error=r"no event rows after the header"),
    Case("binary_junk.bin", bytes(range(256)) * 8, error=r"binary data"),
    Case("not_a_log.csv", _lines("name,age,city", "ann,31,Oslo"),
         error=r"expected one of: taobao.*found first line 'name,age,city'.*--format generic --map user_id="),
    Case("wrong_column_count.csv", _lines("1,100,pv", "2,101,buy"), kwargs={"layout": "taobao"},
         error=r"none of the 2 rows .*\(malformed line: missing columns: 2\)"),
    Case("wrong_layout_named.csv",
         _lines("user_id,item_id,behavior_type,user_geohash,item_category,time", "1,2,1,,3,2014-12-01 10"),
         kwargs={"layout": "rees46"}, error=r"not in the rees46 layout: expected the header event_time"),
    Case("unknown_map_column.csv", _lines("visitor,product,ts", "a,b,1511544070"),
         kwargs={"layout": "generic", "column_map": {"user_id": "customer", "ts": "ts"},
                 "behavior_map": {"*": "view"}},
         error=r"no column 'customer'; its columns are visitor, product, ts"),
    Case("all_bad_timestamps.csv", _lines("1,100,10,pv,yesterday", "2,100,10,pv,0"),
         kwargs={"layout": "taobao"},
         error=r"none of the 2 rows .*(unparsable timestamp: 1.*implausible timestamp: 1|"
               r"implausible timestamp: 1.*unparsable timestamp: 1)"),
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
    Case("truncated.csv.gz", _truncated_gzip(), error=r"truncated"),
    Case("wrong_types.parquet", None,
         kwargs={"layout": "generic", "column_map": {"user_id": "user", "item_id": "item", "ts": "when"},
                 "behavior_map": {"*": "view"}},
         error=r"Parquet column 'user' \(mapped to user_id\) has type BIGINT\[\]"),
    Case("bool_timestamps.parquet", None,
         kwargs={"layout": "generic", "column_map": {"user_id": "user", "item_id": "item", "ts": "when"},
                 "behavior_map": {"*": "view"}},
         error=r"'when' \(mapped to ts\) has type BOOLEAN"),
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
    for name, path in write_corpus(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs_out").items():
        print(path)
