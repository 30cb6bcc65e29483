"""What the store hands out: statuses as enums and rows as dataclasses, plus their encoding.

Field names equal column names, so `Store.update_run(run_id, epoch=3)` names the same thing as
`run.epoch`. JSON columns (tasks, config, best_scores, details) are decoded here, once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from powerbert.errors import StoreError
from powerbert.tasks import register_declarations


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"  # its process vanished without saying how it ended (killed, host rebooted)

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


class ExperimentStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self not in (ExperimentStatus.QUEUED, ExperimentStatus.RUNNING)


def _elapsed(started_at: float | None, ended_at: float | None) -> float | None:
    if started_at is None:
        return None
    return max(0.0, (ended_at if ended_at is not None else time.time()) - started_at)


@dataclass
class Experiment:
    id: int
    name: str
    tasks: tuple[str, ...]
    config: dict[str, Any]
    status: ExperimentStatus
    out_dir: str | None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    supervisor_pid: int | None = None
    supervisor_start_time: float | None = None  # seconds since epoch, see store/process.py
    host: str | None = None
    error: str | None = None

    @property
    def elapsed(self) -> float | None:
        """Seconds from start to end (or to now while it runs); None if never started."""
        return _elapsed(self.started_at, self.ended_at)


@dataclass
class Run:
    id: int
    experiment_id: int
    subset: str  # canonical subset name, tasks.subset_name: 'sst+sts'
    kind: str
    status: RunStatus
    device: str | None = None
    pid: int | None = None
    pid_start_time: float | None = None  # seconds since epoch, see store/process.py
    host: str | None = None
    heartbeat_at: float | None = None
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    log_tail: str | None = None
    checkpoint: str | None = None
    out_dir: str | None = None
    epoch: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    best_scores: dict[str, float] = field(default_factory=dict)
    best_overall: float | None = None
    attempt: int = 0
    updated_at: float | None = None
    earlier_elapsed: float = 0.0  # seconds trained by the attempts before this one
    node: str | None = None  # the Ray node id it trains on (backend ray); None on the local backend

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.subset.split("+")) if self.subset else ()

    @property
    def elapsed(self) -> float | None:
        """Seconds of training over every attempt: the earlier ones, plus this one from its
        start to its end (or to now while it runs); None if never started."""
        current = _elapsed(self.started_at, self.ended_at)
        if current is None:
            return self.earlier_elapsed or None
        return self.earlier_elapsed + current


@dataclass
class Metric:
    id: int
    run_id: int
    step: int | None
    epoch: float | None
    split: str  # 'train' or 'dev'
    name: str  # 'loss', 'loss/sst', 'sst', 'overall', 'lr'
    value: float  # NaN comes back as NaN (SQLite stores it as NULL)
    time: float


@dataclass
class EnsembleResult:
    experiment_id: int
    scheme: str  # 'voting', 'weighted', 'single', 'learned', ...
    task: str
    score: float | None
    details: dict[str, Any] = field(default_factory=dict)  # weights, members, missing, cv
    created_at: float | None = None  # set by the store
    id: int | None = None  # set by the store


EXPERIMENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Experiment))
RUN_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Run))
METRIC_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Metric))


def to_json(value: Any) -> str:
    """JSON text for a column; numpy scalars and arrays, enums, paths and sets included."""
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    if _is_numpy(value) and hasattr(value, "ndim") and value.ndim > 0:
        return value.tolist()
    if _is_numpy(value):
        return value.item()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def run_status(value: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        raise StoreError(
            f"unknown run status '{value}': expected one of {', '.join(s.value for s in RunStatus)}"
        ) from None


def experiment_status(value: ExperimentStatus | str) -> ExperimentStatus:
    try:
        return ExperimentStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in ExperimentStatus)
        raise StoreError(
            f"unknown experiment status '{value}': expected one of {allowed}"
        ) from None


def experiment_from_row(row: sqlite3.Row) -> Experiment:
    values = {name: row[name] for name in EXPERIMENT_COLUMNS}
    values["tasks"] = tuple(json.loads(values["tasks"] or "[]"))
    values["config"] = json.loads(values["config"] or "{}")
    values["status"] = ExperimentStatus(values["status"])
    # An experiment on tasks of a task file carries their declarations: whoever reads it (a
    # worker, the dashboard, predict) knows those tasks from here on.
    register_declarations(values["config"].get("declared_tasks"))
    return Experiment(**values)


def run_from_row(row: sqlite3.Row) -> Run:
    values = {name: row[name] for name in RUN_COLUMNS}
    values["best_scores"] = json.loads(values["best_scores"] or "{}")
    values["status"] = RunStatus(values["status"])
    return Run(**values)


def encode_experiment_field(name: str, value: Any) -> Any:
    """The column value for an Experiment field; StoreError for a name that is not a field."""
    if name not in EXPERIMENT_COLUMNS or name == "id":
        raise StoreError(f"experiments have no field '{name}' to update")
    if name == "tasks":
        return to_json(list(value))
    if name == "config":
        return to_json(value)
    if name == "status":
        return experiment_status(value).value
    return _plain(value)


def encode_run_field(name: str, value: Any) -> Any:
    """The column value for a Run field; StoreError for a name that is not a field."""
    if name not in RUN_COLUMNS or name in ("id", "experiment_id"):
        raise StoreError(f"runs have no field '{name}' to update")
    if name == "best_scores":
        return to_json(value if value is not None else {})
    if name == "status":
        return run_status(value).value
    return _plain(value)


def _plain(value: Any) -> Any:
    # numpy scalars (a loss from .item()-less code) and paths would not bind otherwise
    if _is_numpy(value):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def run_label(subset: str, kind: str) -> str:
    """How a run is named in tables: its subset, or 'naive: sst+para+sts' for a baseline."""
    return subset if kind == "powerset" else f"{kind}: {subset}"


def run_folder(experiment_dir: str, subset: str, kind: str) -> str:
    """Where a run keeps its checkpoints and log: <experiment>/<subset>, or <experiment>/<kind>-<subset>
    for a baseline (`frozen-sst+para+sts`), so every run of an experiment is one folder deep."""
    return os.path.join(experiment_dir, subset if kind == "powerset" else f"{kind}-{subset}")


def _is_numpy(value: Any) -> bool:
    """A numpy array or scalar, told without importing numpy (every command imports the store)."""
    return type(value).__module__ == "numpy"
