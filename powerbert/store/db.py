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

Migrations are a sqlite-utils `Migrations` set (migrations.py), recorded by name; `migrate` says
what is kept by hand around it and why. The opening itself stays hand-written too, as sqlite-utils
does not keep these guarantees: `Database(path)` lets sqlite3 create the file with the umask's
mode (0644), sets no busy timeout beyond sqlite3's default, and `Database.enable_wal()` neither
retries the switch when a process opening the same new file holds it, nor reports that the
filesystem kept another journal mode (it returns nothing), which must be refused here.

Over 300 lines on purpose: each guarantee is written down beside the code that keeps it.
"""

from __future__ import annotations

import datetime
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from powerbert.errors import StoreError
from powerbert.store import migrations as _migrations

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

BUSY_TIMEOUT_S = 10.0
# SQLite's own words for a lock it could not get. The store's busy error says them too, so the
# CLI, the worker's waiting message and the tests all recognise a busy database by this string.
DATABASE_LOCKED = "database is locked"
MEMORY = ":memory:"


def open_db(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path`, migrated to the current schema.

    The connection is in autocommit mode (isolation_level=None): use `write_transaction` for
    writes. `":memory:"` gives a private in-memory database, for tests. `readonly` is for
    commands that only read: the file must exist (nothing is created), it is never migrated or
    written, and a database on a read-only filesystem or in a folder the user cannot write
    opens all the same (see `_open_readonly`).
    """
    if readonly and str(path) != MEMORY:
        return _open_readonly(Path(path).expanduser())
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


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing runs.db.

    `mode=ro` reads a WAL database like any reader, when SQLite may create or use the -shm
    file beside it. On a read-only mount, or in a folder we cannot write, it cannot: then the
    file is opened `immutable=1`, as read-only media are, which reads the database file as it
    stands (what a clean shutdown left there; nothing else can be writing it on such a mount)."""
    if not path.exists():
        raise StoreError(no_database_message(path))
    if path.is_dir():
        raise StoreError(f"{path} is a folder: expected a runs.db file")
    uri = f"file:{quote(str(path.resolve()))}"
    last: Exception | None = None
    for options in ("mode=ro", "mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            version = schema_version(conn)  # the first read: fails here if the file cannot be read
        except sqlite3.Error as e:
            last = e
            continue
        names = _migrations.known_migration_names()
        _refuse_newer(version, len(names), str(path))
        if version < len(names):
            conn.close()
            raise StoreError(
                f"{path}: database schema version {version} is older than this PowerBERT's ({len(names)}): "
                f"run a command that writes (e.g. `powerbert list` with write access) once to migrate it"
            )
        return conn
    raise StoreError(f"{path}: cannot open the database read-only: {last}")


def no_database_message(path: Path) -> str:
    """What a reading command says when there is no runs.db where it looked."""
    return (f"no runs.db at {Path(path).absolute()}: start an experiment with `powerbert run`, or point "
            f"at an existing database with --db PATH or POWERBERT_DB")


@contextmanager
def write_transaction(conn: sqlite3.Connection, label: str = "runs.db") -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if is_database_busy(e):
            raise StoreError(
                f"{label}: {DATABASE_LOCKED}: another process has held the write lock for "
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
    """How many of the migrations in migrations.py the database has applied (its user_version)."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, label: str) -> None:
    """Apply the migrations this database lacks, all in one write transaction.

    sqlite-utils' `Migrations` keeps the record (by name, in `_sqlite_migrations`) and runs each
    migration in its own savepoint. Three things it does not do are kept here, by hand:
      - the write lock. On its own, `Migrations.apply` creates its table and decides what is
        pending before it takes any lock, then runs each migration in a plain (deferred)
        BEGIN. Several processes opening a brand-new database at once (supervisor, workers,
        dashboard) would all find m001_initial pending, and all but one would then fail on
        "table ... already exists". Here every process takes BEGIN IMMEDIATE first and `apply`
        runs inside that transaction (sqlite-utils nests into an open one with savepoints), so
        what is pending is read only under the lock: each migration runs exactly once;
      - refusing a newer database. sqlite-utils records names and has no notion of "newer";
        user_version (how many migrations are applied, set in the same transaction) gives
        that, and a message naming both versions;
      - databases written before sqlite-utils kept the record (`_adopt_applied`).
    A migration that fails rolls the whole transaction back: the database stays as it was.
    """
    names = _migrations.known_migration_names()
    version = schema_version(conn)
    _refuse_newer(version, len(names), label)
    recorded = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_migrations.MIGRATIONS_TABLE,)).fetchone()
    if version == len(names) and recorded:
        # The common case: no write lock taken, and no sqlite-utils imported (about 0.1 s with
        # the numpy it brings), just to open an up-to-date database.
        return
    from sqlite_utils import Database

    schema = _migrations.MIGRATIONS  # looked up now, so tests can swap the set
    # No plugins (they could register functions on our connection) and no recursive_triggers
    # pragma: the Database only lends its migration and table helpers to open_db's connection.
    db = Database(conn, recursive_triggers=False, execute_plugins=False)
    with write_transaction(conn, label):
        version = schema_version(conn)  # another process may have migrated it meanwhile
        _refuse_newer(version, len(names), label)
        _adopt_applied(db, schema, names[:version])
        schema.apply(db)
        if version != len(names):
            conn.execute(f"PRAGMA user_version = {len(names)}")


# PowerBERT's own record of applied migrations, before sqlite-utils kept it: (version, name,
# applied_at seconds since the epoch), one row per migration, beside user_version.
_OLD_RECORD = "migrations"


def _adopt_applied(db: Database, schema: Migrations, applied: list[str]) -> None:
    """Record in sqlite-utils' table the migrations that user_version says are applied.

    A runs.db written by PowerBERT before sqlite-utils kept the record has user_version N and
    its own `migrations` table; one built by another tool may have user_version only. Either
    way its first N migrations are applied (user_version only ever counted them, in order), so
    they are recorded as applied, keeping the old table's applied_at where it has one, and the
    old table goes: one record, not two that could disagree. Without this, sqlite-utils would
    see no record and run m001_initial again on a database that has its tables.
    sqlite-utils has no call that marks a migration applied without running it, so the row is
    written as `Migrations` itself writes it (migration_set, name, applied_at as UTC text).
    """
    schema.ensure_migrations_table(db)
    recorded = {m.name for m in schema.applied(db)}
    old = db.table(_OLD_RECORD)
    when: dict[str, float] = {}
    if old.exists():
        when = {name: at for name, at in db.execute(f"SELECT name, applied_at FROM {_OLD_RECORD}")}
    record = db.table(schema.migrations_table)
    for name in applied:
        if name not in recorded:
            at = datetime.datetime.fromtimestamp(when.get(name, time.time()), datetime.timezone.utc)
            record.insert({"migration_set": schema.name, "name": name, "applied_at": str(at)})
    if old.exists():
        old.drop()


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
            if is_database_busy(e) and time.monotonic() < deadline:
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


def is_database_busy(error: BaseException) -> bool:
    """Whether an error means runs.db is locked by another writer (SQLite's own error, or the
    store's StoreError that says DATABASE_LOCKED): the one test every waiting caller uses."""
    if not isinstance(error, (sqlite3.OperationalError, StoreError)):
        return False
    message = str(error).lower()
    return "locked" in message or "busy" in message
