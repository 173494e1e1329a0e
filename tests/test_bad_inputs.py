"""The bad-input corpus (tests/bad_inputs/make.py): every refused file gets its exact title and
message and leaves every table exactly as it was; every partly bad file keeps its good rows and
quarantines the bad ones with their line numbers. Plus a generated log with corrupted lines."""
from __future__ import annotations

import gzip
import random

import pytest
from bad_inputs.make import CASES, SQL_TEXT, write_corpus

from core import errors
from core.data.ingest import R_BINARY, ingest_file
from core.data.store import TABLES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture
def loaded(store, samples):
    """A store that already holds one dataset, so 'unchanged' is a real claim."""
    ingest_file(store, samples / "taobao/UserBehavior_head.csv", dataset="existing")
    return store


def _table_counts(store) -> dict[str, int]:
    return {t: store.fetchone(f"SELECT count(*) FROM {t}")[0] for t in TABLES}


def test_every_case_has_an_expectation(corpus):
    """Each file in the corpus is refused with a message, or loads with known counts."""
    assert set(corpus) == {c.name for c in CASES} and len(CASES) == len(corpus)
    for case in CASES:
        assert (case.error is None) != (case.stored is None), case.name
        assert corpus[case.name].is_file()


@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.name)
def test_refused_files_leave_database_unchanged(loaded, corpus, case):
    before, counts = loaded.fingerprint(), _table_counts(loaded)
    assert counts["events"] == 4321 and counts["datasets"] == 1
    with pytest.raises(getattr(errors, case.error_type)) as err:
        ingest_file(loaded, corpus[case.name], dataset="new", **case.kwargs)
    assert type(err.value) is getattr(errors, case.error_type)
    assert err.value.title == case.title
    assert case.error in err.value.message, err.value.message
    if case.hint:
        assert case.hint in (err.value.hint or ""), err.value.hint
    assert "Traceback" not in str(err.value)
    assert _table_counts(loaded) == counts
    assert loaded.fingerprint() == before
    assert loaded.dataset_names() == ["existing"]


@pytest.mark.parametrize("case", [c for c in CASES if not c.error], ids=lambda c: c.name)
def test_partly_bad_files_quarantine_with_line_numbers(store, corpus, case):
    rep = ingest_file(store, corpus[case.name], dataset="d", **case.kwargs)
    assert rep.rows_stored == case.stored
    got = {reason: (n, line) for reason, n, line in store.fetchall(
        "SELECT reason, count(*), min(line) FROM quarantine WHERE dataset = 'd' GROUP BY reason")}
    assert got == case.quarantine
    assert rep.quarantined == {r: n for r, (n, _) in case.quarantine.items()}
    assert rep.rows_read == rep.rows_stored + rep.duplicates_dropped + rep.rows_quarantined
    meta = store.dataset("d")
    assert meta["rows_quarantined"] == sum(n for n, _ in case.quarantine.values())


def test_quarantine_keeps_the_raw_line(store, corpus):
    ingest_file(store, corpus["bad_timestamps.csv"], dataset="d")
    assert store.fetchone("SELECT raw FROM quarantine WHERE line = 3") == ("4,100,10,pv,not-a-time",)


def test_corrupted_lines_show_control_bytes_as_replacement_characters(store, corpus):
    ingest_file(store, corpus["corrupted_lines.csv"], dataset="d")
    got = store.fetchall("SELECT line, reason, raw FROM quarantine ORDER BY line")
    assert got == [(3, R_BINARY, "4,1\ufffd00,10,pv,1511544500"), (5, R_BINARY, "\ufffd" * 8),
                   (7, R_BINARY, "5,100,1\ufffd\ufffd,pv,1511544600")]


def test_sql_text_in_ids_is_stored_verbatim(store, corpus):
    ingest_file(store, corpus["sql_in_ids.csv"], dataset="d")
    assert store.fetchone("SELECT count(*) FROM events WHERE user_id = ?", [SQL_TEXT])[0] == 1
    assert store.fetchone("SELECT count(*) FROM events")[0] == 6


def test_megabyte_line_is_cut_in_quarantine(store, corpus):
    ingest_file(store, corpus["megabyte_line.csv"], dataset="d")
    raw = store.fetchone("SELECT raw FROM quarantine")[0]
    assert 0 < len(raw) <= 1000


def test_sql_text_as_dataset_name_is_bound(loaded, corpus):
    ingest_file(loaded, corpus["sql_in_ids.csv"], dataset=SQL_TEXT)
    assert sorted(loaded.dataset_names()) == sorted(["existing", SQL_TEXT])
    assert loaded.fetchone("SELECT count(*) FROM events WHERE dataset = 'existing'")[0] == 4321


def test_duplicate_dataset_name_refused(loaded, samples):
    before = loaded.fingerprint()
    with pytest.raises(errors.ConflictError, match="'existing' exists already"):
        ingest_file(loaded, samples / "taobao/UserBehavior_tail.csv", dataset="existing")
    assert loaded.fingerprint() == before


# -- a large log with a few corrupted lines -------------------------------------------------
GOOD_ROWS = 6000


def _corrupt(line: bytes, rng: random.Random, kind: int) -> bytes:
    """A damaged copy of ``line``: NULs, other control bytes, a run of NULs, or a NUL-only line."""
    k = rng.randrange(1, len(line) - 1)
    if kind == 0:
        return line[:k] + b"\x00" + line[k:]                    # one NUL inside a field
    if kind == 1:
        return line[:k] + bytes([rng.choice([1, 2, 7, 8, 11, 12, 27, 31, 127])]) + line[k + 1:]
    if kind == 2:
        return line[:k] + b"\x00" * 64 + b"," + line[k:]        # NUL run that adds a column
    return b"\x00" * rng.randrange(1, 200)                      # a block of NULs for a line


@pytest.mark.parametrize("shape", ["taobao", "generic_header", "gzip"])
def test_corrupted_lines_are_quarantined_and_every_good_row_kept(store, tmp_path, shape):
    rng = random.Random(7)
    good = [f"{u % 700},{10_000 + u},{u % 31},{('pv', 'cart', 'fav', 'buy')[u % 4]},{1511544070 + 13 * u}"
            for u in range(GOOD_ROWS)]
    header = [b"user,item,cat,action,time"] if shape == "generic_header" else []
    lines = [g.encode() for g in good]
    # 12 corrupted lines among the good ones, the first and the last included
    positions = sorted({0, len(lines) + 11} | set(rng.sample(range(1, len(lines) + 11), 10)))
    bad_lines: list[int] = []
    for pos in positions:
        lines.insert(pos, _corrupt(rng.choice(lines).rstrip(), rng, len(bad_lines) % 4))
        bad_lines.append(pos + 1 + len(header))                  # 1-based, the header is line 1
    data = b"\n".join(header + lines) + b"\n"
    path = tmp_path / ("log.csv.gz" if shape == "gzip" else "log.csv")
    path.write_bytes(gzip.compress(data) if shape == "gzip" else data)
    kwargs = ({"layout": "generic", "column_map": {"user_id": "user", "item_id": "item", "category": "cat",
                                                   "behavior": "action", "ts": "time"}}
              if shape == "generic_header" else {"layout": "taobao"})

    rep = ingest_file(store, path, dataset="c", **kwargs)

    assert (rep.rows_read, rep.rows_stored, rep.duplicates_dropped) == (GOOD_ROWS + 12, GOOD_ROWS, 0)
    assert rep.quarantined == {R_BINARY: 12}
    assert [r[0] for r in store.fetchall("SELECT line FROM quarantine ORDER BY line")] == bad_lines
    stored = {r[0] for r in store.fetchall("SELECT item_id FROM events WHERE dataset = 'c'")}
    assert stored == {str(10_000 + u) for u in range(GOOD_ROWS)}
    assert store.fetchone("SELECT count(*) FROM events WHERE regexp_matches(user_id || item_id || category, "
                          "'[\\x00-\\x1f\\x7f]')")[0] == 0


def test_mostly_binary_file_is_refused_and_nothing_changes(loaded, tmp_path):
    rng = random.Random(3)
    head = b"1,100,10,pv,1511544070\n"
    path = tmp_path / "disk.csv"
    path.write_bytes(head + bytes(rng.randrange(256) for _ in range(100_000)))
    before, counts = loaded.fingerprint(), _table_counts(loaded)
    with pytest.raises(errors.DataError) as err:
        ingest_file(loaded, path, dataset="disk")
    assert err.value.title == "Not a text file"
    assert "disk.csv is not a text CSV or Parquet file (it holds binary data)" in err.value.message
    assert "(a file is refused above 30%; below it only the corrupted lines are quarantined)" in err.value.message
    assert loaded.fingerprint() == before and _table_counts(loaded) == counts
