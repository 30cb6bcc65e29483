"""What the training loop reports, and to whom: `TrainCallbacks` and the records it receives.

The loop calls these hooks for every side effect (a progress bar, runs.db, a log line), so it
knows nothing of terminals or SQLite. Override what you need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from powerbert.outputs import TaskOutputs


class TrainCallbacks:
    """Side effects of training (logging, storing, progress bars). Override what you need."""

    def on_start(self, info: TrainStart) -> None: ...
    def on_step(self, step: int, epoch: float, losses: dict[str, float], lr: float) -> None: ...
    def on_eval(self, result: EvalResult) -> None: ...
    def on_checkpoint(self, kind: str, path: Path, step: int) -> None: ...
    def on_message(self, text: str) -> None: ...
    def on_eval_batch(self, task: str, done: int, total: int) -> None:
        """After each dev batch: rows of `task` scored so far. A long evaluation is progress."""

    def before_checkpoint(self, kind: str, step: int) -> None:
        """Called just before a checkpoint is written. A resume checkpoint at step k promises
        that everything reported up to step k is durable (the worker flushes its buffered
        metrics here), else a kill after the checkpoint leaves a gap in the stored curve. It may
        raise to keep the checkpoint from being written (a Ray run whose lease ran out)."""


@dataclass
class TrainStart:
    total_steps: int
    steps_per_epoch: int
    start_step: int  # > 0 when resuming
    device: str
    train_rows: dict[str, int]
    dev_rows: dict[str, int]


@dataclass
class EvalResult:
    epoch: int  # 1-based epoch just finished
    step: int
    scores: dict[str, float]
    overall: float | None
    outputs: dict[str, TaskOutputs]
    is_best: bool


@dataclass
class TrainResult:
    status: str  # "finished" or "stopped"
    step: int
    best_epoch: int | None
    best_scores: dict[str, float] = field(default_factory=dict)
    best_overall: float | None = None
    best_checkpoint: Path | None = None
