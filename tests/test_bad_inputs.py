"""The bad-input corpus (tests/bad_inputs/make.py): every file gets its message or its quarantine,
and a refused file leaves the database fingerprint exactly as it was."""
from __future__ import annotations

import re

import pytest

from bad_inputs.make import CASES, SQL_TEXT, write_corpus
from core import errors
from core.data.ingest import ingest_file


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture
def loaded(store, samples):
    """A store that already holds one dataset, so 'unchanged' is a real claim."""
    ingest_file(store, samples / "taobao/UserBehavior_head.csv", dataset="existing")
    return store


def test_corpus_is_big_enough():
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.name)
def test_refused_files_leave_database_unchanged(loaded, corpus, case):
    before = loaded.fingerprint()
    with pytest.raises(getattr(errors, case.error_type)) as err:
        ingest_file(loaded, corpus[case.name], dataset="new", **case.kwargs)
    assert re.search(case.error, str(err.value)), str(err.value)
    assert loaded.fingerprint() == before
    assert "new" not in loaded.dataset_names()


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
