"""The dashboard's one handle on runs.db: opened lazily, never created just by looking.

Every screen reads through the same `Database` from its fetch worker (a thread). The Store it
holds shares one sqlite connection behind a lock, so thread workers may use it. A database
that does not exist yet is not created until an experiment is started from the form; a locked
or unreadable one gives a one-line message and the next poll tries again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from powerbert.errors import first_line
from powerbert.store import DATABASE_LOCKED, Store, StoreError, is_database_busy

DEFAULT_DB = "runs.db"


class NoDatabase(Exception):
    """runs.db is not there yet: nothing to show until an experiment is started."""


class Database:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._store: Store | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self.path.is_file()

    def store(self, *, create: bool = False) -> Store:
        """The open Store; NoDatabase if the file is missing and `create` is False."""
        with self._lock:
            if self._store is not None:
                return self._store
            if not create and not self.exists():
                raise NoDatabase(f"no database at {self.path} yet — press n to start an experiment")
            self._store = Store(self.path)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def describe_error(exc: BaseException) -> str:
    """One line for the user: what went wrong with the database, and that we keep trying."""
    if isinstance(exc, NoDatabase):
        return str(exc)
    text = first_line(exc)
    if is_database_busy(exc):
        return f"{DATABASE_LOCKED} ({text}); retrying"
    if isinstance(exc, (StoreError, sqlite3.Error)):
        return f"cannot read the database: {text}; retrying"
    return f"{type(exc).__name__}: {text}"
