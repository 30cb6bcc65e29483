"""The connection a Store holds: opening, closing, and the one way to write (`_write`)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from powerbert.errors import StoreError
from powerbert.store.db import open_db, write_transaction


class StoreBase:
    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        """Open runs.db at `path`; `readonly` for commands that only read (see open_db): the
        file must exist, and any write raises StoreError."""
        self.path = str(path)
        self.readonly = readonly
        self._conn = open_db(path, readonly=readonly)
        self._conn.row_factory = sqlite3.Row
        # One connection may be shared by the dashboard's thread workers: the lock keeps one
        # thread's reads out of another thread's open write transaction.
        self._lock = threading.RLock()

    @property
    def conn(self) -> sqlite3.Connection:
        """The raw connection, for queries the API does not cover. Write through `_write`."""
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StoreBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT around the block; rolled back if it raises."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only, for a command that only reads: cannot write")
        with self._lock, write_transaction(self._conn, self.path):
            yield self._conn

    def _rows(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _tuples(self, sql: str, params: Any = ()) -> list[tuple]:
        """Plain tuples: for long reads, where building sqlite3.Row objects costs double."""
        with self._lock:
            cursor = self._conn.cursor()
            cursor.row_factory = None
            return cursor.execute(sql, params).fetchall()

    def _row(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()
