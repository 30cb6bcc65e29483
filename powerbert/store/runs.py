"""Store methods for runs: one row per trained model, its status, process and progress.

The life of a run: queued -> running (claim_next_queued, then mark_run_started in the worker,
which honours a stop that came in between) -> heartbeats while it trains -> finished / failed / stopped (finish_run), or lost when the
supervisor finds its process gone. Resuming sets it back to queued with update_run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from powerbert.errors import StoreError
from powerbert.store.base import StoreBase
from powerbert.store.models import (
    RUN_COLUMNS,
    Experiment,
    Run,
    RunStatus,
    encode_run_field,
    run_folder,
    run_from_row,
    run_status,
)
from powerbert.tasks import TASKS, subset_name

_RUN_SELECT = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"

# The attempt that ran (if any) joins earlier_elapsed before a new one starts: it ran from
# started_at to its end, or to its last heartbeat when that came first (a lost run's ended_at is
# when someone noticed, not when it died).
_FOLD_ATTEMPT = (
    "earlier_elapsed = earlier_elapsed + CASE WHEN started_at IS NULL THEN 0 ELSE MAX(0,"
    " MIN(COALESCE(ended_at, heartbeat_at, started_at), COALESCE(heartbeat_at, ended_at, started_at)) - started_at) END"
)


def _canonical_subset(subset: Sequence[str] | str, experiment_tasks: Sequence[str]) -> str:
    names = subset.split("+") if isinstance(subset, str) else list(subset)
    if not names:
        raise StoreError("a run needs at least one task: got an empty subset")
    for name in names:
        if name not in TASKS:
            raise StoreError(f"unknown task '{name}': expected one of {', '.join(TASKS)}")
        if experiment_tasks and name not in experiment_tasks:
            allowed = ", ".join(experiment_tasks)
            raise StoreError(f"task '{name}' is not one of the experiment's tasks ({allowed})")
    return subset_name(names)


def _check_kind(kind: str) -> str:
    if not kind or "/" in kind or kind.strip() != kind:
        raise StoreError(f"bad run kind '{kind}': expected a word like 'powerset' or 'frozen'")
    return kind


class RunsMixin(StoreBase):
    def _insert_runs(
        self,
        db: sqlite3.Connection,
        experiment: Experiment,
        subsets: Iterable[Sequence[str] | str],
        kind: str,
    ) -> list[int]:
        """Insert one queued run per subset; call inside `_write`."""
        _check_kind(kind)
        now = time.time()
        ids = []
        for subset in subsets:
            name = _canonical_subset(subset, experiment.tasks)
            out_dir = run_folder(experiment.out_dir, name, kind) if experiment.out_dir else None
            try:
                cur = db.execute(
                    "INSERT INTO runs (experiment_id, subset, kind, status, out_dir, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (experiment.id, name, kind, RunStatus.QUEUED.value, out_dir, now, now),
                )
            except sqlite3.IntegrityError:
                raise StoreError(
                    f"experiment '{experiment.name}' already has a {kind} run for {name}"
                ) from None
            ids.append(cur.lastrowid)
        return ids

    def get_run(self, run_id: int) -> Run:
        row = self._row(f"{_RUN_SELECT} WHERE id = ?", (int(run_id),))
        if row is None:
            raise StoreError(f"no run with id {run_id}")
        return run_from_row(row)

    def runs(self, experiment_id: int, kind: str | None = None) -> list[Run]:
        """The experiment's runs in creation order (singles first for a power set)."""
        if kind is None:
            rows = self._rows(
                f"{_RUN_SELECT} WHERE experiment_id = ? ORDER BY id", (experiment_id,)
            )
        else:
            rows = self._rows(
                f"{_RUN_SELECT} WHERE experiment_id = ? AND kind = ? ORDER BY id",
                (experiment_id, kind),
            )
        return [run_from_row(r) for r in rows]

    def find_run(self, key: str | int) -> Run:
        """A run by id ('12') or by 'EXPERIMENT/SUBSET' ('exp1/sts+sst', any task order).

        When several kinds share the subset, the power-set run is the one meant."""
        if isinstance(key, int) or key.strip().isdigit():
            return self.get_run(int(key))
        if "/" not in key:
            raise StoreError(
                f"cannot read run '{key}': expected EXPERIMENT/SUBSET (like exp1/sst+sts) "
                "or a run id"
            )
        experiment_key, subset = key.split("/", 1)
        experiment = self.get_experiment(experiment_key)  # type: ignore[attr-defined]
        names = subset.split("+")
        if all(n in TASKS for n in names):
            subset = subset_name(names)
        runs = self.runs(experiment.id)
        matches = [r for r in runs if r.subset == subset]
        if not matches:
            known = ", ".join(r.subset for r in runs if r.kind == "powerset") or "none"
            raise StoreError(
                f"no run '{subset}' in experiment '{experiment.name}': runs are {known}"
            )
        return next((r for r in matches if r.kind == "powerset"), matches[0])

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set any Run fields by name (best_scores as a dict); updated_at is set to now."""
        values = {name: encode_run_field(name, value) for name, value in fields.items()}
        values.setdefault("updated_at", time.time())
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), int(run_id))
            )
        if cur.rowcount == 0:
            raise StoreError(f"no run with id {run_id}")

    def mark_run_started(
        self, run_id: int, pid: int, pid_start_time: float | None, host: str, device: str, node: str | None = None
    ) -> bool:
        """Record the worker process that now trains the run (pid_start_time: seconds since
        epoch, see store/process.py); counts one more attempt. Returns False, and ends the run
        as stopped instead, if it was stopped since the supervisor claimed it: a stop that
        finds no worker pid to signal writes 'stopped' into the status, and only this check,
        in the same transaction as the start, keeps the worker from setting it back to running."""
        now = time.time()
        with self._write() as db:
            cur = db.execute(
                "UPDATE runs SET status = ?, pid = ?, pid_start_time = ?, host = ?, device = ?, node = ?,"
                " started_at = ?, heartbeat_at = ?, updated_at = ?, ended_at = NULL,"
                " exit_code = NULL, error = NULL, attempt = attempt + 1 WHERE id = ? AND status != ?",
                (RunStatus.RUNNING.value, pid, pid_start_time, host, device, node, now, now, now, run_id,
                 RunStatus.STOPPED.value),
            )
            if cur.rowcount == 1:
                return True
            stopped = db.execute(
                "UPDATE runs SET ended_at = COALESCE(ended_at, ?), updated_at = ?,"
                " error = COALESCE(error, ?) WHERE id = ? AND status = ?",
                (now, now, "stopped before training started", run_id, RunStatus.STOPPED.value),
            )
        if stopped.rowcount == 0:
            raise StoreError(f"no run with id {run_id}")
        return False

    def heartbeat(
        self,
        run_id: int,
        *,
        epoch: int | None = None,
        step: int | None = None,
        total_steps: int | None = None,
        loss: float | None = None,
    ) -> RunStatus:
        """Say the run is alive, with its progress; returns the run's status as stored, so a
        worker can notice that someone set it to 'stopped'."""
        now = time.time()
        values: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
        for name, value in (("epoch", epoch), ("step", step), ("total_steps", total_steps)):
            if value is not None:
                values[name] = int(value)
        if loss is not None:
            values["loss"] = float(loss)  # NaN is stored as NULL: a diverged loss shows as none
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._write() as db:
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run with id {run_id}")
        return RunStatus(row[0])

    def finish_run(
        self,
        run_id: int,
        status: RunStatus | str,
        exit_code: int | None = None,
        error: str | None = None,
        log_tail: str | None = None,
        *,
        expect: RunStatus | str | None = None,
    ) -> bool:
        """End the run with a final status (finished, failed, stopped or lost).

        With `expect`, only if its status is still that one (compare-and-set: the supervisor
        marks a run lost only if the worker did not finish it meanwhile). Returns whether the
        row changed. log_tail=None keeps the stored tail.
        """
        final = run_status(status)
        if not final.is_terminal:
            raise StoreError(f"finish_run needs a final status, not '{final.value}'")
        now = time.time()
        values: dict[str, Any] = {
            "status": final.value,
            "ended_at": now,
            "updated_at": now,
            "exit_code": exit_code,
            "error": error,
        }
        if log_tail is not None:
            values["log_tail"] = log_tail
        assignments = ", ".join(f"{name} = ?" for name in values)
        where, params = "id = ?", [run_id]
        if expect is not None:
            where += " AND status = ?"
            params.append(run_status(expect).value)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE runs SET {assignments} WHERE {where}", (*values.values(), *params)
            )
        if cur.rowcount == 0 and expect is None:
            raise StoreError(f"no run with id {run_id}")
        return cur.rowcount == 1

    def claim_next_queued(self, experiment_id: int, kind: str | None = None) -> Run | None:
        """Atomically take the experiment's first queued run and mark it running.

        Two supervisors calling this at once get different runs (the select and the update
        share one write transaction). The pid is cleared until mark_run_started records the
        worker's; heartbeat_at is set to now so a staleness check gives the worker time.
        """
        now = time.time()
        kind_clause, params = ("", (experiment_id,)) if kind is None else (
            " AND kind = ?",
            (experiment_id, kind),
        )
        with self._write() as db:
            row = db.execute(
                f"SELECT id FROM runs WHERE experiment_id = ? AND status = 'queued'{kind_clause}"
                " ORDER BY id LIMIT 1",
                params,
            ).fetchone()
            if row is None:
                return None
            db.execute(
                f"UPDATE runs SET {_FOLD_ATTEMPT}, status = ?, started_at = ?, heartbeat_at = ?, updated_at = ?,"
                " ended_at = NULL, exit_code = NULL, error = NULL, pid = NULL,"
                " pid_start_time = NULL WHERE id = ?",
                (RunStatus.RUNNING.value, now, now, now, row[0]),
            )
        return self.get_run(row[0])

    def requeue_run(self, run_id: int) -> None:
        """Queue a stopped, failed or lost run again (resume): its attempt's time is kept in
        earlier_elapsed, so elapsed adds up every attempt."""
        with self._write() as db:
            db.execute(
                f"UPDATE runs SET {_FOLD_ATTEMPT}, status = ?, started_at = NULL, ended_at = NULL, error = NULL,"
                " exit_code = NULL, updated_at = ? WHERE id = ?",
                (RunStatus.QUEUED.value, time.time(), run_id),
            )

    def delete_run(self, run_id: int) -> None:
        """Delete a run with its metrics and dev outputs; a running run is refused."""
        with self._write() as db:
            row = db.execute("SELECT subset, status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no run with id {run_id}")
            if row["status"] == RunStatus.RUNNING.value:
                raise StoreError(
                    f"run {run_id} ({row['subset']}) is running: stop it before deleting it"
                )
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
