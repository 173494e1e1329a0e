"""The store: shared folder (Parquet segments + SQLite catalog) and private in-memory DuckDB.

Many processes share one store folder: these tests run real second processes (subprocess) that read
and write while this one does, and kill writers with SIGKILL at chosen points.
"""
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from core.data.catalog import CATALOG_FILE, SEGMENTS_DIR
from core.data.store import STORE_FORMAT, Store, migrate_single_file, resolve_db_path
from core.errors import ConflictError, NotFoundError, StoreError

ROOT = Path(__file__).resolve().parents[1]
TABLE_NAMES = {"events", "datasets", "quarantine", "scores", "user_stats", "score_runs", "score_history",
               "exports", "export_rows"}


def add_dataset(store: Store, name: str, layout: str = "taobao") -> None:
    with store.write(name) as w:
        w.add("datasets", "SELECT ?, ?", [name, layout], columns=("name", "layout"))


def add_runs(store: Store, dataset: str, runs: list[str]) -> None:
    with store.write(dataset) as w:
        for run in runs:
            w.add("score_runs", "SELECT ?, 'm', ?, TIMESTAMP '2017-12-01', TIMESTAMP '2017-12-02', 2",
                  [run, dataset], key=run)
            w.add("score_history", "SELECT * FROM (VALUES (?, 'u1', NULL, 0.5), (?, 'u2', NULL, 0.1))",
                  [run, run], key=run)


def segment_files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in (path / SEGMENTS_DIR).rglob("*.parquet")}


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=120, **kwargs)


@pytest.fixture(params=["shared", "private"])
def any_store(request, tmp_path):
    s = Store(tmp_path / "s" if request.param == "shared" else ":memory:")
    yield s
    s.close()


# -- the schema and the basics, for both kinds of store ---------------------------------------------
def test_every_table_is_there_empty(any_store):
    names = {r[0] for r in any_store.fetchall(
        "SELECT table_name FROM duckdb_tables() UNION SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    assert names >= TABLE_NAMES
    for table in TABLE_NAMES:
        assert any_store.fetchone(f"SELECT count(*) FROM {table}") == (0,)
    assert any_store.fetchone("SELECT typeof(behavior) FROM events") is None
    described = dict(any_store.fetchall("SELECT column_name, column_type FROM (DESCRIBE events)"))
    assert described["behavior"] == "VARCHAR" and described["ts"] == "TIMESTAMP"


def test_write_add_replace_remove_are_the_same_on_both_kinds(any_store):
    add_dataset(any_store, "d")
    add_runs(any_store, "d", ["r1", "r2"])
    with any_store.write("d") as w:
        w.replace("datasets", "SELECT * REPLACE ('tianchi' AS layout) FROM datasets WHERE name = ?", ["d"])
        w.remove("score_history", key="r1")
        assert w.cur.execute("SELECT count(*) FROM score_history").fetchone() == (2,)   # sees its own change
    assert any_store.dataset("d")["layout"] == "tianchi"
    assert any_store.fetchall("SELECT DISTINCT run_id FROM score_history") == [("r2",)]
    assert any_store.fetchall("SELECT run_id FROM score_runs ORDER BY 1") == [("r1",), ("r2",)]


def test_a_failed_write_changes_nothing(any_store):
    add_dataset(any_store, "d")
    before = any_store.fingerprint()
    with pytest.raises(RuntimeError), any_store.write("d") as w:
        w.add("quarantine", "SELECT 'd', 3, 'bad timestamp', 'x,y'")
        w.remove_dataset()
        raise RuntimeError("boom")
    assert any_store.fingerprint() == before


def test_rows_of_another_dataset_or_missing_keys_are_refused(tmp_path):
    with Store(tmp_path / "s") as store:
        with pytest.raises(StoreError, match="another dataset than 'a'"), store.write("a") as w:
            w.add("datasets", "SELECT 'b', 'taobao'", columns=("name", "layout"))
        with pytest.raises(StoreError, match="lack one of"), store.write("a") as w:
            w.add("datasets", "SELECT 'a', NULL", columns=("name", "layout"))
        assert store.dataset_names() == []
        assert segment_files(store.path) == set()


def test_values_are_bound_not_interpolated(any_store):
    evil = "x'); DROP TABLE events; --"
    add_dataset(any_store, evil, "generic")
    assert any_store.dataset(evil)["name"] == evil
    assert any_store.fetchone("SELECT count(*) FROM events")[0] == 0


def test_unknown_dataset_and_conflict_messages(any_store):
    with pytest.raises(NotFoundError, match="no dataset called 'nope'"):
        any_store.dataset("nope")
    add_dataset(any_store, "d")
    with pytest.raises(ConflictError, match="--replace"):
        any_store.require_new_dataset("d", replace=False)
    any_store.require_new_dataset("d", replace=True)


def test_fingerprint_sees_any_change(any_store):
    a = any_store.fingerprint()
    with any_store.write("d") as w:
        w.add("quarantine", "SELECT 'd', 3, 'bad timestamp', 'x,y'")
    assert any_store.fingerprint() != a


def test_deleting_a_dataset_removes_its_scoring_history_only(any_store):
    add_runs(any_store, "a", ["r1", "r2"])
    add_runs(any_store, "b", ["r3"])
    before = any_store.fingerprint()
    any_store.delete_dataset("a")
    assert any_store.fetchall("SELECT run_id FROM score_runs") == [("r3",)]
    assert any_store.fetchall("SELECT DISTINCT run_id FROM score_history") == [("r3",)]
    assert any_store.fetchone("SELECT count(*) FROM score_history")[0] == 2
    assert any_store.fingerprint() != before        # the history tables are part of the fingerprint


def test_sql_writes_on_the_shared_store_are_refused_with_the_way_to_write(tmp_path):
    with Store(tmp_path / "s") as store:
        with pytest.raises(StoreError, match=r"Store\.write"), store.transaction():
            pass
        with pytest.raises(StoreError):
            store.execute("INSERT INTO datasets (name, layout) VALUES ('x', 'y')")
        with Store(tmp_path / "s", read_only=True) as ro, pytest.raises(StoreError, match="read-only"):
            add_dataset(ro, "x")


def test_duckdb_errors_become_store_errors(store):
    with pytest.raises(StoreError) as info:
        store.execute("SELECT * FROM no_such_table")
    assert "no_such_table" in str(info.value)


def test_error_titles_do_not_confuse_block_with_lock():
    from core.data.store import _translate

    oom = _translate(duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256KiB"))
    assert oom.title == "Out of memory"
    held = _translate(duckdb.IOException('IO Error: Could not set lock on file "x.duckdb": Conflicting lock'))
    assert held.title == "Database is in use"


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("INTENTLENS_DB", str(tmp_path / "env"))
    assert resolve_db_path(None) == tmp_path / "env"
    assert resolve_db_path(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("INTENTLENS_DB")
    assert str(resolve_db_path(None)).endswith("data/intentlens")


# -- the folder: versions, formats, files -------------------------------------------------------------
def test_reopen_keeps_data_and_checks_the_store_format(tmp_path):
    path = tmp_path / "a"
    with Store(path) as s:
        add_dataset(s, "d1")
    with Store(path) as s:
        assert s.dataset_names() == ["d1"]
    with sqlite3.connect(path / CATALOG_FILE) as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=f"schema version 999.*needs {STORE_FORMAT}"):
        Store(path)


def test_read_only_open_of_a_missing_store_says_so(tmp_path):
    with pytest.raises(NotFoundError, match="no store at"):
        Store(tmp_path / "none", read_only=True)
    assert not (tmp_path / "none").exists()


def test_an_old_single_file_database_is_named_and_migrates_whole(tmp_path):
    from core.data.store import _DDL

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    for ddl in _DDL:
        con.execute(ddl)
    con.execute("INSERT INTO datasets (name, layout) VALUES ('a', 'taobao'), ('b', 'rees46')")
    con.execute("INSERT INTO events (dataset, user_id, item_id, behavior, ts) VALUES "
                "('a', 'u1', 'i1', 'buy', TIMESTAMP '2017-12-01 10:00'), "
                "('b', 'u2', 'i2', 'view', TIMESTAMP '2017-12-01 11:00')")
    con.execute("INSERT INTO score_runs VALUES ('r1', 'm', 'a', TIMESTAMP '2017-12-01', TIMESTAMP '2017-12-02', 1)")
    con.execute("INSERT INTO score_history VALUES ('r1', 'u1', NULL, 0.7)")
    con.close()
    with pytest.raises(StoreError, match="python -m core migrate"):
        Store(old)
    with Store(tmp_path / "new") as store:
        counts = migrate_single_file(old, store)
        assert counts == {"a": 4, "b": 2}
        assert store.fetchall("SELECT dataset, user_id, CAST(behavior AS VARCHAR) FROM events ORDER BY 1") == [
            ("a", "u1", "buy"), ("b", "u2", "view")]
        assert store.fetchall("SELECT run_id, score FROM score_history") == [("r1", 0.7)]
        with pytest.raises(ConflictError, match="'a' exists already"):
            migrate_single_file(old, store)             # nothing copied twice
        assert store.fetchone("SELECT count(*) FROM events") == (2,)


def test_a_replaced_segment_file_outlives_its_replacement_by_the_grace_period(tmp_path):
    with Store(tmp_path / "s") as store:
        add_dataset(store, "d")
        first = segment_files(store.path)
        with store.write("d") as w:
            w.replace("datasets", "SELECT * REPLACE ('x' AS layout) FROM datasets")
        assert first < segment_files(store.path)        # still there: a query may be reading it
        assert store.catalog is not None
        gone = store.catalog.collect_garbage(grace=0.0)
        assert gone["expired_segments"] == 1 and not first & segment_files(store.path)
        assert store.check() == [] and store.dataset("d")["layout"] == "x"


# -- many processes ----------------------------------------------------------------------------------
_HOLD_A_WRITE = """
import sys, time
from core.data.store import Store
store = Store(sys.argv[1])
with store.write("slow", "test") as w:
    w.add("events", "SELECT 'slow', 'u' || i, 'i', NULL, 'view', TIMESTAMP '2017-12-01' + i * INTERVAL 1 SECOND, "
                    "NULL, NULL, NULL, NULL FROM range(1000) t(i)")
    print("added", flush=True)
    sys.stdin.readline()                    # hold the write open until the parent says go
print("committed", flush=True)
"""


def test_readers_and_other_writers_never_wait_for_a_writer_and_see_whole_versions(tmp_path):
    path = tmp_path / "s"
    with Store(path) as store:
        add_dataset(store, "other")
        writer = subprocess.Popen([sys.executable, "-c", _HOLD_A_WRITE, str(path)], cwd=str(ROOT),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None and writer.stdin is not None
            assert writer.stdout.readline().strip() == "added"
            # while the other process holds its write: this one reads, and writes another dataset
            assert store.fetchone("SELECT count(*) FROM events") == (0,)
            add_dataset(store, "mine")
            reader = run_python(f"from core.data.store import Store\ns = Store({str(path)!r}, read_only=True)\n"
                                "print(s.fetchone('SELECT count(*) FROM events')[0], s.dataset_names())")
            assert reader.stdout.split() == ["0", "['mine',", "'other']"], reader.stderr
            writer.stdin.write("go\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "committed"
        finally:
            writer.wait(timeout=60)
        # the same Store object sees the other process's commit without reopening
        assert store.fetchone("SELECT count(*) FROM events WHERE dataset = 'slow'") == (1000,)
        assert store.check() == []


def test_a_second_writer_of_the_same_dataset_waits_and_then_names_the_holder(tmp_path):
    path = tmp_path / "s"
    with Store(path) as store:
        writer = subprocess.Popen([sys.executable, "-c", _HOLD_A_WRITE, str(path)], cwd=str(ROOT),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None and writer.stdin is not None
            assert writer.stdout.readline().strip() == "added"
            impatient = Store(path, lock_timeout=0.5)
            with pytest.raises(StoreError, match=rf"'slow' is being written by another process \(pid {writer.pid}, "
                                                 r"test\)") as info:
                add_dataset(impatient, "slow")
            assert info.value.title == "Dataset is busy"
            impatient.close()
            writer.stdin.write("go\n")
            writer.stdin.flush()
        finally:
            writer.wait(timeout=60)
        add_dataset(store, "slow")                   # free again
        assert store.dataset_names() == ["slow"]


@pytest.mark.parametrize("moment", ["after_add", "after_files_synced"])
def test_a_writer_killed_at_any_moment_leaves_nothing_partial_and_loses_nothing(tmp_path, moment):
    path = tmp_path / "s"
    with Store(path) as store:
        add_dataset(store, "kept")
        committed = store.fingerprint()
        hook = ("    print('ready', flush=True); time.sleep(600)\n" if moment == "after_add" else
                "import core.data.store as m\n"
                "real = m.Write._commit\n"
                "def stall(self):\n"
                "    for f in {(self.store.path / p.file).parent for p in self._added}: m.fsync_path(f)\n"
                "    print('ready', flush=True); time.sleep(600)\n"
                "m.Write._commit = stall\n")
        code = ("import sys, time\nfrom core.data.store import Store\n"
                + (hook if moment != "after_add" else "")
                + "store = Store(sys.argv[1])\n"
                "with store.write('doomed', 'test') as w:\n"
                "    w.add('datasets', \"SELECT 'doomed', 'x'\", columns=('name', 'layout'))\n"
                "    w.add('events', \"SELECT 'doomed', 'u', 'i', NULL, 'buy', TIMESTAMP '2017-12-01', "
                "NULL, NULL, NULL, NULL\")\n"
                + (hook if moment == "after_add" else ""))
        victim = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=str(ROOT),
                                  stdout=subprocess.PIPE, text=True)
        assert victim.stdout is not None and victim.stdout.readline().strip() == "ready"
        assert len(segment_files(path)) == 3              # its two files are on disk, uncommitted
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        assert store.fingerprint() == committed          # nothing of it is visible, nothing lost
        assert store.dataset_names() == ["kept"]
        assert [w["dataset"] for w in store.catalog.open_writes()] == ["doomed"]
        gone = store.collect_garbage()
        assert gone["dead_writes"] == 1 and gone["orphan_files"] == 2
        assert len(segment_files(path)) == 1 and store.check() == []
        add_dataset(store, "doomed")                       # its lock died with it
        assert store.dataset_names() == ["doomed", "kept"]


def test_check_command_reports_a_missing_segment(tmp_path):
    path = tmp_path / "s"
    with Store(path) as store:
        add_dataset(store, "d")
    ok = run_python(f"from core.cli import main; raise SystemExit(main(['check', '--db', {str(path)!r}]))")
    assert ok.returncode == 0 and "every segment is whole" in ok.stdout
    for f in segment_files(path):
        (path / f).unlink()
    bad = run_python(f"from core.cli import main; raise SystemExit(main(['check', '--db', {str(path)!r}]))")
    assert bad.returncode == 1 and "is missing" in bad.stdout


def test_views_follow_commits_of_other_processes_within_one_query_call(tmp_path):
    path = tmp_path / "s"
    with Store(path) as store:
        assert store.version == 0
        out = run_python(f"from core.data.store import Store\ns = Store({str(path)!r})\n"
                         "with s.write('x') as w:\n"
                         "    w.add('datasets', \"SELECT 'x', 'taobao'\", columns=('name', 'layout'))\n")
        assert out.returncode == 0, out.stderr
        assert store.dataset_names() == ["x"] and store.version == 1     # the next query, no reopen
