"""A worker process: trains one run of an experiment and records it in runs.db.

Started by the supervisor as `python -m powerbert.runner.worker --db PATH --run ID`, in a session of its
own, with stdout and stderr going to the run's worker.log. It records its pid and start time,
beats a heartbeat from a background thread, writes metrics in batches, stores the best epoch's
dev outputs, and ends the run as finished, stopped (SIGTERM, or the status set to stopped in
runs.db), failed (an exception, with its one-line reason and the log tail) or lost (its training
made no progress for STALL_AFTER_S: the heartbeat thread records it and kills the process).

About 300 lines: the worker's callbacks, heartbeat and stall watchdog belong with the process they watch.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
from pathlib import Path

from powerbert.errors import first_line
from powerbert.runner.liveness import HEARTBEAT_INTERVAL_S, LOG_TAIL_LINES, STALL_AFTER_S, log_tail  # noqa: F401 (re-exported)
from powerbert.store import RunStatus, Store, StoreError, is_database_busy, process_start_time
from powerbert.training.callbacks import EvalResult, TrainCallbacks, TrainStart

METRIC_FLUSH_S = 2.0  # metrics reach runs.db at most this late; one transaction per flush


def say(text: str, stream=None) -> None:
    """Print a line to the worker's log. worker.log lives in the run folder, so on a full or
    read-only disk the write fails: that must neither stop training nor hide the real error
    (the checkpoint write names the path), so a failed log write is dropped."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except (OSError, ValueError):
        pass


BUSY_RETRY_S = 300.0  # how long a write waits out a runs.db someone else keeps locked


def patiently(write, *args, **kwargs):
    """A runs.db write that waits out a lock held past the busy timeout (someone's `sqlite3`
    shell in a transaction, a backup, a huge delete) instead of failing the run: training pauses
    and goes on. Other errors, and a lock held for BUSY_RETRY_S, still raise."""
    deadline = time.monotonic() + BUSY_RETRY_S
    while True:
        try:
            return write(*args, **kwargs)
        except (StoreError, sqlite3.OperationalError) as exc:
            if not is_database_busy(exc) or time.monotonic() > deadline:
                raise
            say(f"runs.db is busy, waiting: {exc}", sys.stderr)
            time.sleep(1.0)


class StoreCallbacks(TrainCallbacks):
    """Training progress into runs.db: buffered metrics, a heartbeat thread, dev outputs."""

    def __init__(self, store_path: str, run_id: int, stop_event: threading.Event,
                 log_path: Path | None = None, stall_after_s: float = STALL_AFTER_S, device_label: str | None = None):
        self.store_path = store_path
        self.device_label = device_label  # the slot the supervisor gave: cpu, or cuda:N (physical)
        self.run_id = run_id
        self.stop_event = stop_event
        self.log_path = log_path
        self.stall_after_s = stall_after_s
        # Of the training loop, armed by on_start (loading a model and data may take long on a
        # slow network and is not a loop that can hang): then any callback counts as progress.
        self._last_progress: float | None = None
        self.store = Store(store_path)
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._progress: dict = {}
        self._last_flush = time.monotonic()
        self.last_loss: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        # Its own connection: sqlite3 connections are not shared across threads.
        store = Store(self.store_path)
        try:
            while not self._done.wait(HEARTBEAT_INTERVAL_S):
                with self._lock:
                    progress = dict(self._progress)
                quiet = 0.0 if self._last_progress is None else time.monotonic() - self._last_progress
                if quiet > self.stall_after_s:
                    self._end_hung(store, quiet, progress.get("step"))
                    return
                try:
                    status = store.heartbeat(self.run_id, **progress)
                except Exception as exc:
                    # A busy or full database: beat again next time. Ending the thread here
                    # would let every viewer mark this healthy run lost 20 s later.
                    say(f"heartbeat failed, will retry: {exc}", sys.stderr)
                    continue
                if status == RunStatus.STOPPED:  # `powerbert stop` could not signal us
                    self.stop_event.set()
        except Exception as exc:  # a heartbeat failure must not kill training; say so in the log
            say(f"heartbeat thread stopped: {exc}", sys.stderr)
        finally:
            store.close()

    def _end_hung(self, store: Store, quiet: float, step: int | None) -> None:
        """The loop is stuck: record the run lost (unless it ended meanwhile), then SIGKILL this
        process: a hung loop may not answer SIGTERM, and its device memory must come free."""
        message = (f"hung: no training step, evaluation or checkpoint for {quiet:.0f} s (at step {step}); "
                   f"the worker ended itself so that resume can continue from its last checkpoint")
        say(message, sys.stderr)
        try:
            store.finish_run(self.run_id, RunStatus.LOST, error=message, log_tail=log_tail(self.log_path),
                             expect=RunStatus.RUNNING)
        except Exception as exc:  # noqa: BLE001 - end anyway: a viewer marks it lost 20 s later
            say(f"could not record the hang: {exc}", sys.stderr)
        os.kill(os.getpid(), signal.SIGKILL)

    def _touch(self) -> None:
        self._last_progress = time.monotonic()

    def on_start(self, info: TrainStart) -> None:
        self._touch()
        train = ", ".join(f"{t} {n}" for t, n in info.train_rows.items())
        dev = ", ".join(f"{t} {n}" for t, n in info.dev_rows.items())
        say(f"device {info.device}; training rows per epoch: {train}; dev rows: {dev}; "
            f"{info.total_steps} steps from step {info.start_step}")
        with self._lock:
            self._progress.update(total_steps=info.total_steps, step=info.start_step)
        patiently(self.store.heartbeat, self.run_id, total_steps=info.total_steps, step=info.start_step)
        # The device it really trains on, not the one asked for: a cuda slot with no usable GPU
        # in this process would train on the CPU, and the tables must say so.
        used = self.device_label if info.device.startswith("cuda") and (self.device_label or "").startswith("cuda") else info.device
        patiently(self.store.update_run, self.run_id, device=used)

    def on_step(self, step: int, epoch: float, losses: dict[str, float], lr: float) -> None:
        self._touch()
        total = sum(losses.values())
        rows = [(step, epoch, "train", "loss", total), (step, epoch, "train", "lr", lr)]
        if len(losses) > 1:
            rows += [(step, epoch, "train", f"loss/{t}", v) for t, v in losses.items()]
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
                patiently(self.store.add_metrics, self.run_id, rows)
            except BaseException:
                with self._lock:  # keep them, in order, for whoever flushes next
                    self._buffer[:0] = rows
                raise
        self._last_flush = time.monotonic()

    def on_eval(self, result: EvalResult) -> None:
        self._touch()
        rows = [(result.step, float(result.epoch), "dev", t, v) for t, v in result.scores.items()]
        if result.overall is not None:
            rows.append((result.step, float(result.epoch), "dev", "overall", result.overall))
        with self._lock:
            self._buffer.extend(rows)
        self.flush()
        scores = "  ".join(f"{t} {v:.4f}" for t, v in result.scores.items())
        overall = f"  overall {result.overall:.4f}" if result.overall is not None else ""
        say(f"epoch {result.epoch} dev: {scores}{overall}{'  (best)' if result.is_best else ''}")
        if result.is_best:
            patiently(self.store.save_dev_outputs, self.run_id, result.outputs)
            patiently(self.store.update_run, self.run_id, best_scores=result.scores, best_overall=result.overall, epoch=result.epoch)

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
            patiently(self.store.update_run, self.run_id, checkpoint=str(path))

    def on_message(self, text: str) -> None:
        self._touch()
        say(text)

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)
        self.flush()
        self.store.close()



def keeps_resume_state(store: Store, run) -> bool:
    """Whether the experiment asked to keep finished runs' resume state (--keep-resume-state)."""
    return bool(store.get_experiment(run.experiment_id).config.get("launch", {}).get("keep_resume_state"))


def run_config(store: Store, run):
    """The TrainConfig of a run: the experiment's resolved config, this run's tasks, its kind."""
    from powerbert.config import TrainConfig
    from powerbert.runner.baselines import config_for_kind

    experiment = store.get_experiment(run.experiment_id)
    config = TrainConfig.from_dict({**experiment.config["train"], "tasks": list(run.tasks)})
    return config_for_kind(config, run.kind)


def run_worker(db_path: str, run_id: int, device_label: str) -> int:
    """Train the run; return the process exit code (0 finished or stopped, 1 failed)."""
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    threads = os.environ.get("POWERBERT_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))

    store = Store(db_path)
    run = store.get_run(run_id)
    out_dir = Path(run.out_dir)
    log_path = out_dir / "worker.log"
    started = patiently(store.mark_run_started, run_id, os.getpid(), process_start_time(os.getpid()), socket.gethostname(), device_label)
    if not started:
        # `powerbert stop` came after the supervisor claimed the run but before this process
        # could be signalled: mark_run_started found the stop in the status and ended the run.
        say("stopped before training started")
        store.close()
        return 0
    callbacks = None
    try:
        # Lazy: both load torch, and `python -m powerbert.runner.worker --help` must stay light.
        from powerbert.model import checkpoint as ckpt
        from powerbert.training.loop import train_subset

        config = run_config(store, run)
        resume = (out_dir / "last.safetensors").exists()
        if resume:
            # The header alone: train_subset reads the tensors themselves, once, to restore them.
            step = ckpt.read_metadata(out_dir / "last.safetensors")["step"]
            # Steps after the checkpoint are trained again: drop their old metric rows first.
            patiently(store.delete_metrics_after, run_id, step)
        else:
            # A fresh start (first attempt, or an earlier one died before its first resume
            # checkpoint): every step is trained again, so no earlier row may stay.
            patiently(store.delete_metrics_after, run_id, -1)
        callbacks = StoreCallbacks(db_path, run_id, stop_event, log_path=log_path, device_label=device_label)
        result = train_subset(config, out_dir, callbacks, should_stop=stop_event.is_set, resume=resume)
        callbacks_loss = callbacks.last_loss
        callbacks.close()
        callbacks = None
        status = RunStatus.FINISHED if result.status == "finished" else RunStatus.STOPPED
        last_loss = callbacks_loss
        patiently(store.update_run, run_id, step=result.step, **({"loss": last_loss} if last_loss is not None else {}))
        patiently(store.finish_run, run_id, status, exit_code=0, log_tail=log_tail(log_path))
        if status == RunStatus.FINISHED and not keeps_resume_state(store, run):
            # A finished run never resumes: its resume state (weights plus optimizer moments,
            # three times best.*) is removed; prediction needs only best.*.
            from powerbert.runner.cleanup import drop_resume_state

            drop_resume_state(run)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every way out must leave a final status
        try:  # the log may sit on the disk that just filled up: still record the status
            traceback.print_exc()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        if callbacks is not None:
            try:
                callbacks.close()
            except Exception:
                pass
        reason = first_line(exc)
        patiently(store.finish_run, run_id, RunStatus.FAILED, exit_code=1, error=f"{type(exc).__name__}: {reason}", log_tail=log_tail(log_path))
        return 1
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m powerbert.runner.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="path of runs.db")
    parser.add_argument("--run", type=int, required=True, help="id of the run to train")
    parser.add_argument("--device-label", default="cpu", help="device shown in tables, e.g. 'cuda:1'")
    args = parser.parse_args(argv)
    return run_worker(args.db, args.run, args.device_label)


if __name__ == "__main__":
    sys.exit(main())
