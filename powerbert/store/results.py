"""Store methods for what runs leave behind: per-example dev outputs and ensemble scores.

Dev outputs are one row per example (run, task, position in the file), the output as JSON text
(a number, or a list of logits). Python's float repr round-trips exactly, so the ensembles see
the very float64 values the model produced. A run that reaches a better epoch replaces its rows
for that task wholesale.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import time
from collections.abc import Iterable

from powerbert.errors import StoreError
from powerbert.outputs import TaskOutputs
from powerbert.store.base import StoreBase
from powerbert.store.models import EnsembleResult, to_json
from powerbert.tasks import TASKS


def _task_order(task: str) -> tuple[int, str]:
    names = list(TASKS)
    return (names.index(task) if task in names else len(names), task)


class ResultsMixin(StoreBase):
    def save_dev_outputs(self, run_id: int, outputs: dict[str, TaskOutputs]) -> None:
        """Replace the run's stored dev outputs for each task in `outputs` (one transaction)."""
        rows = []
        for task, out in outputs.items():
            if out.task != task:
                raise StoreError(f"dev outputs filed under '{task}' are for task '{out.task}'")
            gold = out.gold.tolist()
            values = out.outputs.tolist()  # Python floats (nested lists for logits)
            for position, (example_id, label, value) in enumerate(zip(out.ids, gold, values)):
                label = None if math.isnan(label) else label
                rows.append((run_id, task, position, str(example_id), label, json.dumps(value)))
        with self._write() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"no run with id {run_id}: its dev outputs were not saved")
            db.executemany(
                "DELETE FROM dev_outputs WHERE run_id = ? AND task = ?",
                [(run_id, task) for task in outputs],
            )
            # executemany rather than sqlite-utils' insert_all, which fits this transaction but
            # took 1.85x as long for 10,000 rows (39 vs 21 ms): see MetricsMixin.add_metrics.
            db.executemany(
                "INSERT INTO dev_outputs (run_id, task, position, example_id, gold, output)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def dev_outputs(self, run_id: int) -> dict[str, TaskOutputs]:
        """The run's dev outputs per task (registry order), as saved; {} if none.

        A task saved with zero examples is not stored, so it does not come back."""
        import numpy as np  # here: reading dev outputs is the only use, and every command imports the store

        rows = self._rows(
            "SELECT task, example_id, gold, output FROM dev_outputs WHERE run_id = ?"
            " ORDER BY task, position",
            (run_id,),
        )
        result = {}
        for task, group in itertools.groupby(rows, key=lambda r: r["task"]):
            group = list(group)
            # One json.loads for the whole column: far faster than one call per example.
            outputs = json.loads("[" + ",".join(r["output"] for r in group) + "]")
            result[task] = TaskOutputs(
                task=task,
                ids=[r["example_id"] for r in group],
                gold=np.array(
                    [math.nan if r["gold"] is None else r["gold"] for r in group], dtype=np.float64
                ),
                outputs=np.array(outputs, dtype=np.float64),
            )
        return {task: result[task] for task in sorted(result, key=_task_order)}

    def save_ensemble_results(
        self, experiment_id: int, results: Iterable[EnsembleResult], *, replace_all: bool = False
    ) -> None:
        """Store scores, replacing any earlier result for the same (scheme, task).

        replace_all=True first drops every earlier result of the experiment."""
        now = time.time()
        rows = [
            (experiment_id, r.scheme, r.task, None if r.score is None else float(r.score),
             to_json(r.details or {}), now)
            for r in results
        ]
        try:
            with self._write() as db:
                if replace_all:
                    db.execute(
                        "DELETE FROM ensemble_results WHERE experiment_id = ?", (experiment_id,)
                    )
                # Written out rather than sqlite-utils' upsert_all(pk=(experiment_id, scheme,
                # task)): that builds this same ON CONFLICT statement, but on a SQLite older
                # than 3.24 falls back to INSERT OR IGNORE of the key columns alone, which the
                # NOT NULL created_at turns into a silently skipped row. This fails loudly there.
                db.executemany(
                    "INSERT INTO ensemble_results (experiment_id, scheme, task, score,"
                    " details, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (experiment_id, scheme, task) DO UPDATE SET"
                    " score = excluded.score, details = excluded.details,"
                    " created_at = excluded.created_at",
                    rows,
                )
        except sqlite3.IntegrityError:
            raise StoreError(f"no experiment with id {experiment_id}: results not saved") from None

    def ensemble_results(self, experiment_id: int) -> list[EnsembleResult]:
        rows = self._rows(
            "SELECT id, experiment_id, scheme, task, score, details, created_at"
            " FROM ensemble_results WHERE experiment_id = ? ORDER BY scheme, task",
            (experiment_id,),
        )
        return [
            EnsembleResult(
                experiment_id=r["experiment_id"],
                scheme=r["scheme"],
                task=r["task"],
                score=r["score"],
                details=json.loads(r["details"] or "{}"),
                created_at=r["created_at"],
                id=r["id"],
            )
            for r in rows
        ]
