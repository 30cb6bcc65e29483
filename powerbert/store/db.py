"""open_db: the only place that opens runs.db. WAL, busy timeout, pragmas, file modes, migrations.

Every process (dashboard, CLI, supervisor, workers) opens the same file at once, so:
  - WAL journal: readers never block the writer and the writer never blocks readers;
  - busy_timeout: a writer waiting for another writer's lock sleeps instead of failing;
  - synchronous=NORMAL: safe in WAL (a power cut may lose the last commits, never corrupts);
  - writers take the lock up front with BEGIN IMMEDIATE (`write_transaction`), because a
    deferred transaction that upgrades from read to write in WAL gets SQLITE_BUSY at once,
    without the busy handler ever being asked to wait.

runs.db holds configs, hostnames, pids and error text, so it is created readable by its owner
only (0600), and a folder created for it is 0700. SQLite gives the -wal and -shm files the
database file's own mode, so nothing here changes the process umask (it is process-wide, and
the dashboard opens databases from threads).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from powerbert.store import migrations as _migrations
from powerbert.store.errors import StoreError

BUSY_TIMEOUT_S = 10.0
MEMORY = ":memory:"


def open_db(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path`, migrated to the current schema.

    The connection is in autocommit mode (isolation_level=None): use `write_transaction` for
    writes. `":memory:"` gives a private in-memory database, for tests.
    """
    if str(path) == MEMORY:
        conn = _connect(MEMORY, MEMORY)
        _configure(conn)
        migrate(conn, MEMORY)
        return conn
    path = Path(path).expanduser()
    _make_folder(path)
    created = _create_file(path)
    conn = _connect(path, str(path))
    try:
        _enable_wal(conn, path)
        _configure(conn)
        migrate(conn, str(path))
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"{path}: cannot open the database: {e}") from e
    except BaseException:
        conn.close()
        raise
    if created:
        _restrict_sidecars(path)
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection, label: str = "runs.db") -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if _is_busy(e):
            raise StoreError(
                f"{label}: database is locked: another process has held the write lock for "
                f"more than {BUSY_TIMEOUT_S:g} s"
            ) from e
        raise
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # also when COMMIT itself failed: never leave it open
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, label: str) -> None:
    """Apply the migrations this database lacks, each in its own write transaction.

    Several processes may open a brand-new database at the same moment: each takes the write
    lock before it looks at what is applied, so every migration runs exactly once.
    """
    known = _migrations.MIGRATIONS  # looked up now, so tests can append a migration
    version = schema_version(conn)
    _refuse_newer(version, len(known), label)
    if version == len(known):
        return  # the common case: no write lock taken just to open the database
    for step in known:
        if step.version <= version:
            continue  # user_version only grows, so a stale read costs at most a look inside
        with write_transaction(conn, label):
            _refuse_newer(schema_version(conn), len(known), label)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            applied = {v for (v,) in conn.execute("SELECT version FROM migrations")}
            # user_version counts too: a database built by hand (or by a tool that only sets
            # user_version) must not have its tables created a second time.
            if step.version in applied or step.version <= schema_version(conn):
                continue
            step.apply(conn)
            conn.execute(
                "INSERT INTO migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
            conn.execute(f"PRAGMA user_version = {int(step.version)}")


def _refuse_newer(version: int, known: int, label: str) -> None:
    if version > known:
        raise StoreError(
            f"{label}: database schema version {version} is newer than this PowerBERT "
            f"understands ({known}): upgrade PowerBERT"
        )


def _make_folder(path: Path) -> None:
    folder = path.parent
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
        except FileExistsError:
            continue  # another process made it a moment ago
        except OSError as e:
            raise StoreError(f"{path}: cannot create folder {created}: {e.strerror}") from e
        os.chmod(created, 0o700)  # mkdir's mode passes through the umask; be exact
    if not path.parent.is_dir():
        raise StoreError(f"{path}: {path.parent} is not a folder")


def _create_file(path: Path) -> bool:
    """Create the database file 0600 before SQLite does (SQLite would use 0644). True if new."""
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a database file")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        created = False
    except OSError as e:
        raise StoreError(f"{path}: cannot create the database: {e.strerror}") from e
    else:
        os.close(fd)
        created = True
    # WAL needs to create <name>-wal and <name>-shm beside the file, and to write the file.
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(f"{path}: folder {path.parent} is not writable")
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"{path}: database file is not writable")
    return created


def _connect(target: str | Path, label: str) -> sqlite3.Connection:
    try:
        # check_same_thread=False: the dashboard reads from thread workers; Store serialises
        # its own use of the connection with a lock.
        return sqlite3.connect(
            target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as e:
        raise StoreError(f"{label}: cannot open the database: {e}") from e


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    # Switching a brand-new file to WAL needs an exclusive lock and can fail with 'database is
    # locked' without consulting the busy handler when others open it at the same moment.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as e:
            if _is_busy(e) and time.monotonic() < deadline:
                time.sleep(0.01 + random.random() * 0.04)
                continue
            raise StoreError(f"{path}: cannot open the database: {e}") from e
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not a usable SQLite database: {e}") from e
    if str(mode).lower() != "wal":
        raise StoreError(
            f"{path}: this filesystem cannot hold a WAL-mode SQLite database (journal mode "
            f"stays '{mode}'): put runs.db on a local disk"
        )


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def _restrict_sidecars(path: Path) -> None:
    # SQLite already copies the database's mode onto these; this guards older SQLite builds.
    for suffix in ("-wal", "-shm"):
        try:
            os.chmod(f"{path}{suffix}", 0o600)
        except OSError:
            pass  # not there (yet): SQLite will give it the database file's mode


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message
