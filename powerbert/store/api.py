"""The Store: the typed read/write API over runs.db that every front end and process uses.

    with Store("runs/runs.db") as store:
        exp = store.create_experiment("exp1", ("sst", "sts"), config, "runs/exp1",
                                      power_set(("sst", "sts")))
        for run in store.runs(exp.id): ...

Writes run inside BEGIN IMMEDIATE ... COMMIT (`_write`); reads are plain statements, which in
WAL mode see the last committed state and never wait for a writer. Experiments live here;
runs, metrics and results are in the mixins beside this file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from powerbert.errors import StoreError
from powerbert.store.metrics import MetricsMixin
from powerbert.store.models import (
    EXPERIMENT_COLUMNS,
    Experiment,
    ExperimentStatus,
    Run,
    RunStatus,
    encode_experiment_field,
    experiment_from_row,
    experiment_status,
    to_json,
)
from powerbert.store.results import ResultsMixin
from powerbert.store.runs import RunsMixin
from powerbert.tasks import TASKS, register_declarations

_EXPERIMENT_SELECT = f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments"


def _check_experiment_name(name: str) -> str:
    # '/' separates experiment and subset in 'exp1/sst+sts'; an all-digit name would read as an id
    if not name or name.strip() != name or "/" in name or name.isdigit():
        raise StoreError(
            f"bad experiment name '{name}': use letters, digits, '-', '_' or '.', not only "
            "digits, no '/' and no spaces at either end"
        )
    return name


class Store(RunsMixin, MetricsMixin, ResultsMixin):
    """runs.db as dataclasses. `Store(path)` opens (and creates or migrates) the database."""

    def __enter__(self) -> Store:
        return self

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(
        self,
        name: str,
        tasks: Sequence[str],
        config: dict[str, Any],
        out_dir: str | None,
        subsets: Iterable[Sequence[str] | str],
        kind: str = "powerset",
    ) -> Experiment:
        """A queued experiment with one queued run per subset, in one transaction."""
        _check_experiment_name(name)
        register_declarations((config or {}).get("declared_tasks"))  # its own tasks, if any
        if not tasks:
            raise StoreError(f"experiment '{name}' needs at least one task")
        for task in tasks:
            if task not in TASKS:
                raise StoreError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
        ordered = tuple(t for t in TASKS if t in tasks)
        out_dir = None if out_dir is None else str(out_dir)
        with self._write() as db:
            try:
                cur = db.execute(
                    "INSERT INTO experiments (name, tasks, config, status, out_dir, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, to_json(list(ordered)), to_json(config or {}),
                     ExperimentStatus.QUEUED.value, out_dir, time.time()),
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"experiment '{name}' already exists") from None
            row = db.execute(f"{_EXPERIMENT_SELECT} WHERE id = ?", (cur.lastrowid,)).fetchone()
            experiment = experiment_from_row(row)
            self._insert_runs(db, experiment, subsets, kind)
        return experiment

    def add_runs(
        self, experiment_id: int, subsets: Iterable[Sequence[str] | str], kind: str = "powerset"
    ) -> list[Run]:
        """More queued runs for an experiment (e.g. the 'frozen' baselines)."""
        with self._write() as db:
            row = db.execute(f"{_EXPERIMENT_SELECT} WHERE id = ?", (experiment_id,)).fetchone()
            if row is None:
                raise StoreError(f"no experiment with id {experiment_id}")
            ids = self._insert_runs(db, experiment_from_row(row), subsets, kind)
        return [self.get_run(run_id) for run_id in ids]

    def get_experiment(self, key: int | str) -> Experiment:
        """By id or by name; a StoreError that lists the experiments there are otherwise."""
        row = None
        if isinstance(key, str):
            row = self._row(f"{_EXPERIMENT_SELECT} WHERE name = ?", (key,))
        if row is None and (isinstance(key, int) or key.strip().isdigit()):
            row = self._row(f"{_EXPERIMENT_SELECT} WHERE id = ?", (int(key),))
        if row is not None:
            return experiment_from_row(row)
        names = [e.name for e in self.list_experiments()]
        if not names:
            raise StoreError(f"no experiment '{key}': there are no experiments yet")
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise StoreError(f"no experiment '{key}': experiments are {shown}")

    def list_experiments(self) -> list[Experiment]:
        """Every experiment, newest first."""
        rows = self._rows(f"{_EXPERIMENT_SELECT} ORDER BY created_at DESC, id DESC")
        return [experiment_from_row(r) for r in rows]

    def latest_experiment(self, status: ExperimentStatus | str | None = None) -> Experiment | None:
        """The newest experiment (with that status, if given), or None."""
        if status is None:
            row = self._row(f"{_EXPERIMENT_SELECT} ORDER BY created_at DESC, id DESC LIMIT 1")
        else:
            row = self._row(
                f"{_EXPERIMENT_SELECT} WHERE status = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                (experiment_status(status).value,),
            )
        return None if row is None else experiment_from_row(row)

    def update_experiment(self, experiment_id: int, **fields: Any) -> None:
        """Set any Experiment fields by name (tasks as a sequence, config as a dict)."""
        if not fields:
            return
        values = {name: encode_experiment_field(name, value) for name, value in fields.items()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE experiments SET {assignments} WHERE id = ?",
                (*values.values(), experiment_id),
            )
        if cur.rowcount == 0:
            raise StoreError(f"no experiment with id {experiment_id}")

    def end_experiment(self, experiment_id: int, status: ExperimentStatus, *, force: bool = False) -> bool:
        """Record the supervisor's end: final status, end time, no supervisor pid.

        Unless `force`, only if nobody queued runs again meanwhile and set it running (a
        `powerbert resume` racing the end): then nothing changes, False comes back, and the
        supervisor goes on with them. One write, so the two cannot interleave."""
        now = time.time()
        guard = "" if force else (
            " AND NOT (status = ? AND EXISTS (SELECT 1 FROM runs WHERE experiment_id = experiments.id AND status = ?))"
        )
        args = () if force else (ExperimentStatus.RUNNING.value, RunStatus.QUEUED.value)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE experiments SET status = ?, ended_at = ?, supervisor_pid = NULL WHERE id = ?{guard}",
                (ExperimentStatus(status).value, now, experiment_id, *args),
            )
        return cur.rowcount == 1

    def delete_experiment(self, key: int | str) -> None:
        """Delete an experiment with all its runs, metrics and results (rows only, not its
        files); refused while any of its runs is running."""
        experiment = self.get_experiment(key)
        with self._write() as db:
            running = db.execute(
                "SELECT subset FROM runs WHERE experiment_id = ? AND status = ?",
                (experiment.id, RunStatus.RUNNING.value),
            ).fetchall()
            if running:
                subsets = ", ".join(r[0] for r in running)
                raise StoreError(
                    f"experiment '{experiment.name}' has running runs ({subsets}): stop it first"
                )
            db.execute("DELETE FROM experiments WHERE id = ?", (experiment.id,))
