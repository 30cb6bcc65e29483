"""Tests for powerbert.store's database file: the schema and its migrations, and the files it
refuses (unwritable folders, no WAL, not a database) or keeps private.

Run: python -m pytest tests/test_store_files.py -q

Over 300 lines on purpose: each migration, refusal and file-mode guarantee has its own case.
"""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from powerbert.store import (
    MIGRATIONS,
    Migration,
    Store,
    StoreError,
    open_db,
    schema_version,
)
from powerbert.store import db as db_module
from powerbert.store import migrations as migrations_module
from powerbert.store.migrations import MIGRATION_SET, m001_initial, m002_earlier_elapsed, m003_run_node, migration_names
from powerbert.tasks import power_set

pytestmark = pytest.mark.timeout(60)

EXPECTED_COLUMNS = {
    "experiments": {
        "id": "INTEGER", "name": "TEXT", "tasks": "TEXT", "config": "TEXT", "status": "TEXT",
        "out_dir": "TEXT", "created_at": "REAL", "started_at": "REAL", "ended_at": "REAL",
        "supervisor_pid": "INTEGER", "supervisor_start_time": "REAL", "host": "TEXT",
        "error": "TEXT",
    },
    "runs": {
        "id": "INTEGER", "experiment_id": "INTEGER", "subset": "TEXT", "kind": "TEXT",
        "status": "TEXT", "device": "TEXT", "pid": "INTEGER", "pid_start_time": "REAL",
        "host": "TEXT", "heartbeat_at": "REAL", "created_at": "REAL", "started_at": "REAL",
        "ended_at": "REAL", "exit_code": "INTEGER", "error": "TEXT", "log_tail": "TEXT",
        "checkpoint": "TEXT", "out_dir": "TEXT", "epoch": "INTEGER", "step": "INTEGER",
        "total_steps": "INTEGER", "loss": "REAL", "best_scores": "TEXT", "best_overall": "REAL",
        "attempt": "INTEGER", "updated_at": "REAL", "earlier_elapsed": "REAL", "node": "TEXT",
    },
    "metrics": {
        "id": "INTEGER", "run_id": "INTEGER", "step": "INTEGER", "epoch": "REAL",
        "split": "TEXT", "name": "TEXT", "value": "REAL", "time": "REAL",
    },
    "dev_outputs": {
        "run_id": "INTEGER", "task": "TEXT", "position": "INTEGER", "example_id": "TEXT",
        "gold": "REAL", "output": "TEXT",
    },
    "ensemble_results": {
        "id": "INTEGER", "experiment_id": "INTEGER", "scheme": "TEXT", "task": "TEXT",
        "score": "REAL", "details": "TEXT", "created_at": "REAL",
    },
}


def inspect(conn: sqlite3.Connection) -> Database:
    """sqlite-utils' view of a connection, leaving its pragmas (recursive_triggers) alone."""
    return Database(conn, recursive_triggers=False, execute_plugins=False)


def columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    # Each column's declared type, as the schema says it. `columns_dict` would give Python types
    # by affinity instead (str, int, float), which cannot tell REAL from FLOAT or DOUBLE.
    return {column.name: column.type for column in inspect(conn).table(table).columns}


def applied(conn: sqlite3.Connection) -> list[str]:
    """The migrations the database records as applied, in the order they were applied."""
    return [m.name for m in Migrations(MIGRATION_SET).applied(inspect(conn))]


def migration_set(*steps: tuple[str, Migration]) -> Migrations:
    """A stand-in for migrations.MIGRATIONS holding (name, function) steps, in order."""
    migrations = Migrations(MIGRATION_SET)
    for name, fn in steps:
        migrations(name=name)(fn)
    return migrations


KNOWN = migration_names(MIGRATIONS)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# -- schema and migrations -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["memory", "file"])
def test_fresh_database_has_the_schema(tmp_path, where):
    conn = open_db(":memory:" if where == "memory" else tmp_path / "runs.db")
    for table, expected in EXPECTED_COLUMNS.items():
        assert columns(conn, table) == expected, table
    assert schema_version(conn) == len(KNOWN)
    assert applied(conn) == KNOWN  # each recorded once, in order: version N is the N-th name
    indexes = {index.name: index.columns for index in inspect(conn).table("metrics").indexes}
    assert {"metrics_by_run", "metrics_by_run_name_step"} <= set(indexes)
    assert indexes["metrics_by_run_name_step"] == ["run_id", "name", "step"]
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    if where == "file":
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    conn.close()


def test_reopening_applies_nothing_twice(tmp_path):
    path = tmp_path / "runs.db"
    open_db(path).close()
    conn = open_db(path)
    assert applied(conn) == KNOWN
    conn.close()


def _add_note_column(db: Database) -> None:
    db.execute("ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT 'none'")
    db.execute("CREATE TABLE tags (run_id INTEGER REFERENCES runs(id), tag TEXT)")


# The schema this code builds, then one more migration as a later release would add it.
VERSION_1 = (("m001_initial", m001_initial), ("m002_earlier_elapsed", m002_earlier_elapsed), ("m003_run_node", m003_run_node))
VERSION_2 = (*VERSION_1, ("m004_note", _add_note_column))


def test_version_1_database_keeps_its_data_through_a_new_migration(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    monkeypatch.setattr(migrations_module, "MIGRATIONS", migration_set(*VERSION_1))
    with Store(path) as store:
        exp = store.create_experiment("old", ("sst", "sts"), {"epochs": 3}, "runs/old",
                                      power_set(("sst", "sts")))
        run = store.runs(exp.id)[0]
        store.add_metrics(run.id, [(1, 0.1, "train", "loss", 0.5)])
        store.update_run(run.id, best_scores={"sst": 0.5})
        assert schema_version(store.conn) == len(VERSION_1)

    monkeypatch.setattr(migrations_module, "MIGRATIONS", migration_set(*VERSION_2))
    with Store(path) as store:
        assert schema_version(store.conn) == len(VERSION_2)
        assert applied(store.conn) == ["m001_initial", "m002_earlier_elapsed", "m003_run_node", "m004_note"]
        assert "note" in columns(store.conn, "runs")
        assert [tuple(r) for r in store.conn.execute("SELECT DISTINCT note FROM runs")] == [
            ("none",)
        ]
        exp = store.get_experiment("old")
        assert exp.config == {"epochs": 3}
        runs = store.runs(exp.id)
        assert [r.subset for r in runs] == ["sst", "sts", "sst+sts"]
        assert runs[0].best_scores == {"sst": 0.5}
        assert [m.value for m in store.metrics(runs[0].id)] == [0.5]


def test_database_built_by_hand_at_version_1_is_migrated(tmp_path, monkeypatch):
    # No record of migrations at all, only user_version: as a tool other than open_db might
    # leave it.
    path = tmp_path / "runs.db"
    raw = sqlite3.connect(path)
    m001_initial(Database(raw))
    raw.execute("INSERT INTO experiments (name, created_at) VALUES ('hand', 1.0)")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    monkeypatch.setattr(migrations_module, "MIGRATIONS", migration_set(*VERSION_2))
    conn = open_db(path)
    assert schema_version(conn) == len(VERSION_2)
    assert applied(conn) == ["m001_initial", "m002_earlier_elapsed", "m003_run_node", "m004_note"]
    assert conn.execute("SELECT name FROM experiments").fetchall() == [("hand",)]
    assert "note" in columns(conn, "runs")
    conn.close()


def _database_of_powerbert_before_sqlite_utils(path) -> None:
    """A runs.db as open_db left it before migrations were a sqlite-utils set: WAL, schema 1,
    its own `migrations` table (version, name, applied_at) beside user_version, and data."""
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("CREATE TABLE IF NOT EXISTS migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
    m001_initial(Database(raw, recursive_triggers=False))
    raw.execute("INSERT INTO migrations (version, name, applied_at) VALUES (1, 'm001_initial', 1.7e9)")
    raw.execute("PRAGMA user_version = 1")
    raw.execute("COMMIT")
    raw.execute("INSERT INTO experiments (name, created_at) VALUES ('kept', 1.0)")
    raw.close()


def test_database_of_the_previous_release_opens_and_migrates(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    _database_of_powerbert_before_sqlite_utils(path)
    conn = open_db(path)  # the record to adopt, then the migrations since that release
    assert schema_version(conn) == len(KNOWN)
    assert applied(conn) == KNOWN
    # applied_at carried over from the old record, in the text sqlite-utils writes
    record = Migrations(MIGRATION_SET).applied(inspect(conn))[0]
    assert record.name == "m001_initial" and record.applied_at == "2023-11-14 22:13:20+00:00"
    assert "migrations" not in inspect(conn).table_names()  # one record, not two
    assert conn.execute("SELECT name FROM experiments").fetchall() == [("kept",)]
    conn.close()

    _database_of_powerbert_before_sqlite_utils(tmp_path / "older.db")
    monkeypatch.setattr(migrations_module, "MIGRATIONS", migration_set(*VERSION_2))
    with Store(tmp_path / "older.db") as store:  # and straight to a newer schema
        assert schema_version(store.conn) == len(VERSION_2)
        assert applied(store.conn) == ["m001_initial", "m002_earlier_elapsed", "m003_run_node", "m004_note"]
        assert "note" in columns(store.conn, "runs")
        assert [e.name for e in store.list_experiments()] == ["kept"]


def test_failed_migration_leaves_the_previous_version(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    open_db(path).close()

    def broken(db: Database) -> None:
        db.execute("CREATE TABLE half (x)")
        db.execute("THIS IS NOT SQL")

    current = ((name, getattr(migrations_module, name)) for name in KNOWN)
    with_broken = migration_set(*current, ("broken", broken))
    monkeypatch.setattr(migrations_module, "MIGRATIONS", with_broken)
    with pytest.raises(StoreError, match="runs.db: cannot open the database"):
        open_db(path)
    monkeypatch.undo()
    conn = open_db(path)
    assert schema_version(conn) == len(KNOWN)
    assert applied(conn) == KNOWN  # no record of the migration that failed
    assert "half" not in inspect(conn).table_names()
    conn.close()


def test_newer_schema_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    conn = open_db(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()

    def nothing(db: Database) -> None:
        pass

    knows_5 = migration_set(*VERSION_1, *((f"m00{n}_nothing", nothing) for n in range(len(VERSION_1) + 1, 6)))
    monkeypatch.setattr(migrations_module, "MIGRATIONS", knows_5)
    with pytest.raises(StoreError) as err:
        open_db(path)
    assert str(err.value) == (
        f"{path}: database schema version 7 is newer than this PowerBERT understands (5): "
        "upgrade PowerBERT"
    )


# -- files: modes and refusals -------------------------------------------------------------


def test_new_database_is_private(tmp_path, umask_022):
    path = tmp_path / "new" / "deeper" / "runs.db"
    with Store(path) as store:
        exp = store.create_experiment("e", ("sst",), {}, None, [("sst",)])
        store.add_metrics(store.runs(exp.id)[0].id, [(0, 0.0, "train", "loss", 1.0)])
        for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
            assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "deeper").st_mode) == 0o700


def test_path_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = blocker / "runs.db"
    with pytest.raises(StoreError, match=f"^{path}: {blocker} is not a folder$"):
        open_db(path)
    with pytest.raises(StoreError, match=f"^{blocker / 'sub' / 'runs.db'}: cannot create folder"):
        open_db(blocker / "sub" / "runs.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=f"^{locked / 'runs.db'}: cannot create the database"):
            open_db(locked / "runs.db")
        nested = locked / "sub" / "runs.db"
        with pytest.raises(StoreError, match=f"^{nested}: cannot create folder"):
            open_db(locked / "sub" / "runs.db")
    finally:
        locked.chmod(0o700)


def test_permission_denied_creating_the_file_is_refused(tmp_path, monkeypatch):
    # The same refusal as above, simulated so that it runs as root too.
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(db_module.os, "open", denied)
    path = tmp_path / "runs.db"
    expected = f"^{path}: cannot create the database: Permission denied$"
    with pytest.raises(StoreError, match=expected):
        open_db(path)


def test_unwritable_folder_with_existing_database_is_refused(tmp_path, monkeypatch):
    # WAL must create runs.db-wal beside the file. Root passes any access check, so the check
    # is simulated here; the real chmod case is the test above.
    path = tmp_path / "runs.db"
    open_db(path).close()
    real_access = os.access
    monkeypatch.setattr(db_module.os, "access",
                        lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(StoreError, match=f"^{path}: folder {tmp_path} is not writable$"):
        open_db(path)


def test_filesystem_without_wal_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    real_connect = db_module._connect

    class NoWal:  # what a network filesystem's SQLite reports: the journal mode stays 'delete'
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql.upper().startswith("PRAGMA JOURNAL_MODE"):
                return self.conn.execute("PRAGMA journal_mode")
            return self.conn.execute(sql, *args)

        def close(self):
            self.conn.close()

    monkeypatch.setattr(
        db_module, "_connect", lambda target, label: NoWal(real_connect(target, label))
    )
    with pytest.raises(StoreError, match=f"^{path}: this filesystem cannot hold a WAL-mode"):
        open_db(path)


def test_not_a_database_is_refused(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"hello, this is not SQLite" * 100)
    with pytest.raises(StoreError, match=f"^{path}: "):
        open_db(path)
