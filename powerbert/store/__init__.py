"""runs.db, the single source of truth: open_db (WAL, busy timeout, migrations) and the Store.

    from powerbert.store import Store, RunStatus
    with Store("runs/runs.db") as store:
        run = store.find_run("exp1/sst+sts")

See db.py for how the file is opened, migrations.py for the schema, models.py for what the
Store hands out, and process.py for the pid_start_time convention (seconds since the epoch).
"""

from powerbert.errors import StoreError
from powerbert.store.api import Store
from powerbert.store.db import BUSY_TIMEOUT_S, DATABASE_LOCKED, is_database_busy, open_db, schema_version, write_transaction
from powerbert.store.migrations import Migration, migration
from powerbert.store.models import (
    EnsembleResult,
    Experiment,
    ExperimentStatus,
    Metric,
    Run,
    RunStatus,
    run_label,
)
from powerbert.store.process import is_same_process, process_start_time

__all__ = [
    "BUSY_TIMEOUT_S",
    "DATABASE_LOCKED",
    "MIGRATIONS",
    "EnsembleResult",
    "Experiment",
    "ExperimentStatus",
    "Metric",
    "Migration",
    "Run",
    "RunStatus",
    "Store",
    "StoreError",
    "is_database_busy",
    "is_same_process",
    "migration",
    "open_db",
    "process_start_time",
    "run_label",
    "schema_version",
    "write_transaction",
]


def __getattr__(name: str):
    # The sqlite-utils migration set is built on first use (powerbert.store.migrations), so
    # importing the store stays free of sqlite-utils and numpy.
    if name == "MIGRATIONS":
        from powerbert.store import migrations

        return migrations.MIGRATIONS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
