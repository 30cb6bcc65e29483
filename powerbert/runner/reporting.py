"""What a training run records, whichever process writes it into runs.db.

`RunReporter` turns the training loop's callbacks into the store writes one run makes (its
metrics in batches, its progress, the best epoch's dev outputs and scores), each one
`self.write("store_method", *args)` naming a `Store` method. A local worker writes them into
runs.db itself (worker.StoreCallbacks); a run on a Ray node buffers them and the supervisor,
polling it, writes them (cluster/actor.py), so no remote process ever opens runs.db. One place
decides what a run records; the two backends only differ in how it reaches the file.

`train_and_report` is the rest of a run that both share: resume or start afresh (dropping the
metric rows the retrained steps will write again), train, and record how it ended.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

from powerbert.errors import first_line
from powerbert.store import Run, RunStatus
from powerbert.training.callbacks import EvalResult, TrainCallbacks, TrainStart

METRIC_FLUSH_S = 2.0  # metrics reach runs.db at most this late; one transaction per flush


def failure(exc: BaseException) -> str:
    """A failed run's error column: the exception's type and first line."""
    return f"{type(exc).__name__}: {first_line(exc)}"


class RunReporter(TrainCallbacks):
    """Training progress as store writes. Subclasses say where a write goes (`write`) and
    where a log line goes (`say`)."""

    def __init__(self, run_id: int, device_label: str | None = None):
        self.run_id = run_id
        self.device_label = device_label  # the slot the supervisor gave: cpu, or cuda:N (physical)
        # Of the training loop, armed by on_start (loading a model and data may take long on a
        # slow network and is not a loop that can hang): then any callback counts as progress.
        self._last_progress: float | None = None
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._progress: dict = {}
        self._last_flush = time.monotonic()
        self.last_loss: float | None = None

    def write(self, method: str, *args, **kwargs):
        """Make the write `Store.<method>(*args, **kwargs)` reach runs.db."""
        raise NotImplementedError

    def say(self, text: str, error: bool = False) -> None:
        """A line for the run's log."""
        raise NotImplementedError

    def progress(self) -> dict:
        """Step, epoch, loss and total steps so far: what a heartbeat carries."""
        with self._lock:
            return dict(self._progress)

    def _touch(self) -> None:
        self._last_progress = time.monotonic()

    def on_start(self, info: TrainStart) -> None:
        self._touch()
        train = ", ".join(f"{t} {n}" for t, n in info.train_rows.items())
        dev = ", ".join(f"{t} {n}" for t, n in info.dev_rows.items())
        self.say(f"device {info.device}; training rows per epoch: {train}; dev rows: {dev}; "
                 f"{info.total_steps} steps from step {info.start_step}")
        with self._lock:
            self._progress.update(total_steps=info.total_steps, step=info.start_step)
        self.write("heartbeat", self.run_id, total_steps=info.total_steps, step=info.start_step)
        # The device it really trains on, not the one asked for: a cuda slot with no usable GPU
        # in this process would train on the CPU, and the tables must say so.
        used = self.device_label if info.device.startswith("cuda") and (self.device_label or "").startswith("cuda") else info.device
        self.write("update_run", self.run_id, device=used)

    def on_step(self, step: int, epoch: float, losses: dict[str, float], lr: float) -> None:
        self._touch()
        total = sum(losses.values())
        now = time.time()  # the step's own time: the rows reach runs.db in batches
        rows = [(step, epoch, "train", "loss", total, now), (step, epoch, "train", "lr", lr, now)]
        if len(losses) > 1:
            rows += [(step, epoch, "train", f"loss/{t}", v, now) for t, v in losses.items()]
        with self._lock:
            self._buffer.extend(rows)
            self._progress.update(step=step, epoch=int(epoch), loss=total)
        self.last_loss = total
        if time.monotonic() - self._last_flush > METRIC_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._buffer = self._buffer, []
        if rows:
            try:
                self.write("add_metrics", self.run_id, rows)
            except BaseException:
                with self._lock:  # keep them, in order, for whoever flushes next
                    self._buffer[:0] = rows
                raise
        self._last_flush = time.monotonic()

    def on_eval(self, result: EvalResult) -> None:
        self._touch()
        now = time.time()
        rows = [(result.step, float(result.epoch), "dev", t, v, now) for t, v in result.scores.items()]
        if result.overall is not None:
            rows.append((result.step, float(result.epoch), "dev", "overall", result.overall, now))
        with self._lock:
            self._buffer.extend(rows)
        self.flush()
        scores = "  ".join(f"{t} {v:.4f}" for t, v in result.scores.items())
        overall = f"  overall {result.overall:.4f}" if result.overall is not None else ""
        self.say(f"epoch {result.epoch} dev: {scores}{overall}{'  (best)' if result.is_best else ''}")
        if result.is_best:
            self.write("save_dev_outputs", self.run_id, result.outputs)
            self.write("update_run", self.run_id, best_scores=result.scores, best_overall=result.overall, epoch=result.epoch)

    def on_eval_batch(self, task: str, done: int, total: int) -> None:
        self._touch()  # a dev evaluation longer than the stall limit is not a hang

    def before_checkpoint(self, kind: str, step: int) -> None:
        # Every metric up to `step` reaches runs.db before the resume checkpoint says `step`:
        # a kill after the checkpoint then leaves no gap in the curve (resume drops only rows
        # after `step`).
        self.flush()

    def on_checkpoint(self, kind: str, path: Path, step: int) -> None:
        self._touch()
        if kind == "best":
            self.write("update_run", self.run_id, checkpoint=str(path))

    def on_message(self, text: str) -> None:
        self._touch()
        self.say(text)

    def end_training(self) -> None:
        """Training is over (whichever way): what the reporter does then (the local worker
        stops its heartbeat thread) before the final writes."""


def train_and_report(run: Run, config, reporter: RunReporter, should_stop, *, keep_resume_state: bool, log_tail=lambda: None) -> int:
    """Train the run in `run.out_dir` and record it through `reporter`, to its final status;
    the exit code (0 finished or stopped, 1 failed). `log_tail()` is the log's last lines."""
    out_dir = Path(run.out_dir)
    ended = False
    try:
        # Lazy: both load torch, and the light commands import this module's callers.
        from powerbert.model import checkpoint as ckpt
        from powerbert.training.loop import train_subset

        resume = (out_dir / "last.safetensors").exists()
        if resume:
            # The header alone: train_subset reads the tensors themselves, once, to restore them.
            step = ckpt.read_metadata(out_dir / "last.safetensors")["step"]
            # Steps after the checkpoint are trained again: drop their old metric rows first.
            reporter.write("delete_metrics_after", run.id, step)
        else:
            # A fresh start (first attempt, or an earlier one died before its first resume
            # checkpoint): every step is trained again, so no earlier row may stay.
            reporter.write("delete_metrics_after", run.id, -1)
        result = train_subset(config, out_dir, reporter, should_stop=should_stop, resume=resume)
        reporter.flush()
        ended = True
        reporter.end_training()
        status = RunStatus.FINISHED if result.status == "finished" else RunStatus.STOPPED
        last_loss = reporter.last_loss
        reporter.write("update_run", run.id, step=result.step, **({"loss": last_loss} if last_loss is not None else {}))
        reporter.write("finish_run", run.id, status, exit_code=0, log_tail=log_tail())
        if status == RunStatus.FINISHED and not keep_resume_state:
            # A finished run never resumes: its resume state (weights plus optimizer moments,
            # three times best.*) is removed; prediction needs only best.*.
            from powerbert.runner.cleanup import drop_resume_state

            drop_resume_state(run)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every way out must leave a final status
        try:  # the log may sit on the disk that just filled up: still record the status
            reporter.say(traceback.format_exc().rstrip(), error=True)
        except (OSError, ValueError):
            pass
        if not ended:
            try:
                reporter.end_training()
            except Exception:
                pass
        reporter.write("finish_run", run.id, RunStatus.FAILED, exit_code=1, error=failure(exc), log_tail=log_tail())
        return 1
