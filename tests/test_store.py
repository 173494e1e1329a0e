import subprocess
import sys
from pathlib import Path

import pytest

from core.data.store import Store, resolve_db_path
from core.errors import ConflictError, NotFoundError, StoreError


def test_schema_created_and_versioned(store):
    assert store.fetchone("SELECT value FROM meta WHERE key='schema_version'")[0] == "1"
    names = {r[0] for r in store.fetchall("SELECT table_name FROM duckdb_tables()")}
    assert {"events", "datasets", "quarantine", "scores", "meta"} <= names


def test_reopen_keeps_data_and_checks_version(tmp_path):
    path = tmp_path / "a.duckdb"
    with Store(path) as s:
        s.execute("INSERT INTO datasets (name, layout) VALUES (?, ?)", ["d1", "taobao"])
    with Store(path) as s:
        assert s.dataset_names() == ["d1"]
        s.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 999"):
        Store(path)


def test_transaction_rolls_back_on_any_error(store):
    before = store.fingerprint()
    with pytest.raises(RuntimeError), store.transaction() as cur:
        cur.execute("INSERT INTO datasets (name, layout) VALUES (?, ?)", ["x", "taobao"])
        raise RuntimeError("boom")
    assert store.fingerprint() == before


def test_duckdb_errors_become_store_errors(store):
    with pytest.raises(StoreError) as info:
        store.execute("SELECT * FROM no_such_table")
    assert "no_such_table" in str(info.value)


def test_values_are_bound_not_interpolated(store):
    evil = "x'); DROP TABLE events; --"
    store.execute("INSERT INTO datasets (name, layout) VALUES (?, ?)", [evil, "generic"])
    assert store.dataset(evil)["name"] == evil
    assert store.fetchone("SELECT count(*) FROM events")[0] == 0


def test_unknown_dataset_and_conflict_messages(store):
    with pytest.raises(NotFoundError, match="no dataset called 'nope'"):
        store.dataset("nope")
    store.execute("INSERT INTO datasets (name, layout) VALUES ('d', 'taobao')")
    with pytest.raises(ConflictError, match="--replace"):
        store.require_new_dataset("d", replace=False)
    store.require_new_dataset("d", replace=True)


def test_fingerprint_sees_any_change(store):
    a = store.fingerprint()
    store.execute("INSERT INTO quarantine VALUES ('d', 3, 'bad timestamp', 'x,y')")
    assert store.fingerprint() != a


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("INTENTLENS_DB", str(tmp_path / "env.duckdb"))
    assert resolve_db_path(None) == tmp_path / "env.duckdb"
    assert resolve_db_path(tmp_path / "arg.duckdb") == tmp_path / "arg.duckdb"
    monkeypatch.delenv("INTENTLENS_DB")
    assert str(resolve_db_path(None)).endswith("data/intentlens.duckdb")


def test_second_process_gets_a_readable_lock_message(tmp_path):
    path = tmp_path / "locked.duckdb"
    with Store(path):
        code = ("import sys; from core.data.store import Store\n"
                "from core.errors import StoreError\n"
                f"try:\n    Store({str(path)!r})\nexcept StoreError as e:\n    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 3, out.stderr
    assert "Database is in use" in out.stdout


def test_error_titles_do_not_confuse_block_with_lock():
    import duckdb

    from core.data.store import _translate

    oom = _translate(duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256KiB"))
    assert oom.title == "Out of memory"
    held = _translate(duckdb.IOException('IO Error: Could not set lock on file "x.duckdb": Conflicting lock'))
    assert held.title == "Database is in use"


def test_deleting_a_dataset_removes_its_scoring_history_only(store):
    with store.transaction() as cur:
        for run, dataset in (("r1", "a"), ("r2", "a"), ("r3", "b")):
            cur.execute("INSERT INTO score_runs VALUES (?, 'm', ?, TIMESTAMP '2017-12-01', "
                        "TIMESTAMP '2017-12-02', 2)", [run, dataset])
            cur.execute("INSERT INTO score_history VALUES (?, 'u1', NULL, 0.5), (?, 'u2', NULL, 0.1)", [run, run])
    before = store.fingerprint()
    store.delete_dataset("a")
    assert store.fetchall("SELECT run_id FROM score_runs") == [("r3",)]
    assert store.fetchall("SELECT DISTINCT run_id FROM score_history") == [("r3",)]
    assert store.fetchone("SELECT count(*) FROM score_history")[0] == 2
    assert store.fingerprint() != before        # the history tables are part of the fingerprint
