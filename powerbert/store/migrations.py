"""The schema of runs.db as named, append-only migrations: a sqlite-utils migration set.

To change the schema, append a function decorated with `@migration` at the END of this file:
never edit, rename or reorder one that has shipped, since databases out there recorded it as
applied under its name (sqlite-utils' `_sqlite_migrations` table, set "powerbert"). The schema
version of a database is how many of these it has applied, in order, and is mirrored into
`PRAGMA user_version`; `open_db` (db.py) applies whatever a database lacks inside one
BEGIN IMMEDIATE transaction, each migration in its own savepoint.

A migration runs statement by statement through `db.execute`, never `sqlite3`'s
`executescript`, because that commits the open transaction first and the migration would no
longer be atomic.

Status columns carry no CHECK constraint on purpose: SQLite cannot alter a CHECK without
rebuilding the table, and new run kinds or statuses should cost one line of Python, not a
table copy. The store validates statuses instead (models.RunStatus / ExperimentStatus).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

# A migration function: it gets the sqlite-utils Database wrapping the connection open_db holds,
# inside the write transaction.
Migration = Callable[["Database"], None]

# The set's name is part of every record in _sqlite_migrations: never change it.
MIGRATION_SET = "powerbert"
MIGRATIONS_TABLE = "_sqlite_migrations"  # sqlite-utils' record, read by open_db's fast path

# The migrations in order, as (name, function). The sqlite-utils set (`MIGRATIONS`) is built from
# them on first use: importing sqlite-utils (and the numpy it imports) costs about 0.1 s, which a
# command that opens an up-to-date database (`powerbert stop`, `status`) never needs to pay.
STEPS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration, recorded under the function's name."""
    STEPS.append((fn.__name__, fn))
    return fn


def build_migrations(steps: list[tuple[str, Migration]]) -> Migrations:
    """A sqlite-utils migration set holding `steps`, in order."""
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(MIGRATION_SET)
    for name, fn in steps:
        migrations(name=name)(fn)
    return migrations


def __getattr__(name: str) -> Any:
    # `MIGRATIONS`, the sqlite-utils set, built when first asked for (tests swap in their own
    # by setting the attribute; that one is then used).
    if name == "MIGRATIONS":
        built = build_migrations(STEPS)
        globals()["MIGRATIONS"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def known_migration_names() -> list[str]:
    """The names of the migrations open_db applies, without building the sqlite-utils set
    unless a test has put its own in place."""
    if "MIGRATIONS" in globals():
        return migration_names(globals()["MIGRATIONS"])
    return [name for name, _ in STEPS]


def migration_names(migrations: Migrations) -> list[str]:
    """The names `migrations` holds, oldest first; how many is the schema version it builds.

    sqlite-utils only lists a set's migrations against a database (`pending`, `applied`), and
    open_db needs the count before it touches one (to refuse a newer database, and to map an
    older database's `user_version` onto names), so this reads the set's own list.
    """
    return [m.name for m in migrations._migrations]


def run_statements(db: Database, *statements: str) -> None:
    for statement in statements:
        db.execute(statement)


@migration
def m001_initial(db: Database) -> None:
    run_statements(
        db,
        """
        CREATE TABLE experiments (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            tasks TEXT NOT NULL DEFAULT '[]',      -- JSON list of task names
            config TEXT NOT NULL DEFAULT '{}',     -- JSON object
            status TEXT NOT NULL DEFAULT 'queued', -- queued/running/finished/failed/stopped
            out_dir TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            supervisor_pid INTEGER,
            supervisor_start_time REAL,            -- seconds since epoch, see store/process.py
            host TEXT,
            error TEXT
        )
        """,
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
            subset TEXT NOT NULL,                  -- canonical, tasks.subset_name: 'sst+sts'
            kind TEXT NOT NULL DEFAULT 'powerset', -- 'powerset', later 'frozen', 'naive'
            status TEXT NOT NULL DEFAULT 'queued', -- queued/running/finished/failed/stopped/lost
            device TEXT,
            pid INTEGER,
            pid_start_time REAL,                   -- seconds since epoch, see store/process.py
            host TEXT,
            heartbeat_at REAL,
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            exit_code INTEGER,
            error TEXT,
            log_tail TEXT,
            checkpoint TEXT,
            out_dir TEXT,
            epoch INTEGER,
            step INTEGER,
            total_steps INTEGER,
            loss REAL,
            best_scores TEXT NOT NULL DEFAULT '{}', -- JSON {task: score}
            best_overall REAL,
            attempt INTEGER NOT NULL DEFAULT 0,
            updated_at REAL,
            UNIQUE (experiment_id, subset, kind)
        )
        """,
        # AUTOINCREMENT so that an id is never handed out twice: delete_metrics_after removes
        # the newest rows, and plain rowids would then be reused, hiding the resumed rows from
        # a dashboard that reads "id > last seen id".
        """
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER,
            epoch REAL,
            split TEXT NOT NULL DEFAULT 'train',   -- 'train' or 'dev'
            name TEXT NOT NULL,                    -- 'loss', 'loss/sst', 'sst', 'overall', 'lr'
            value REAL,                            -- NaN is stored by SQLite as NULL
            time REAL NOT NULL
        )
        """,
        # (run_id, id): incremental reads. (run_id, name, step) [+ the implicit rowid]: the
        # newest value per name by index seeks, and curves of one metric.
        "CREATE INDEX metrics_by_run ON metrics (run_id, id)",
        "CREATE INDEX metrics_by_run_name_step ON metrics (run_id, name, step)",
        """
        CREATE TABLE dev_outputs (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            task TEXT NOT NULL,
            position INTEGER NOT NULL,             -- row order in the dev file
            example_id TEXT,
            gold REAL,                             -- NULL where the file had no label
            output TEXT NOT NULL,                  -- JSON number, or list of logits
            PRIMARY KEY (run_id, task, position)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE ensemble_results (
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
            scheme TEXT NOT NULL,
            task TEXT NOT NULL,
            score REAL,
            details TEXT NOT NULL DEFAULT '{}',    -- JSON: weights, members, missing, cv
            created_at REAL NOT NULL,
            UNIQUE (experiment_id, scheme, task)
        )
        """,
    )


# Append new migrations below this line, never above.


@migration
def m002_earlier_elapsed(db: Database) -> None:
    # Training time of a run's earlier attempts: each resume starts a new started_at, and the
    # elapsed time users see must add up every attempt, not restart at 0.
    run_statements(db, "ALTER TABLE runs ADD COLUMN earlier_elapsed REAL NOT NULL DEFAULT 0")


@migration
def m003_run_node(db: Database) -> None:
    # The cluster node a run trains on (a Ray node id; empty for the local backend, whose
    # host says it all): two nodes can share a host name, and a lost run must name its node.
    run_statements(db, "ALTER TABLE runs ADD COLUMN node TEXT")
