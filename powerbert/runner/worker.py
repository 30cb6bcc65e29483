"""A worker process: trains one run of an experiment and records it in runs.db.

Started by the supervisor as `python -m powerbert.runner.worker --db PATH --run ID`, in a session of its
own, with stdout and stderr going to the run's worker.log. It records its pid and start time,
beats a heartbeat from a background thread, writes metrics in batches, stores the best epoch's
dev outputs, and ends the run as finished, stopped (SIGTERM, or the status set to stopped in
runs.db), failed (an exception, with its one-line reason and the log tail) or lost (its training
made no progress for STALL_AFTER_S: the heartbeat thread records it and kills the process).

What the run records is reporting.RunReporter's (shared with the Ray backend); this module adds
the local process around it: the direct writes, the heartbeat thread and the stall watchdog.
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

from powerbert.runner.liveness import HEARTBEAT_INTERVAL_S, LOG_TAIL_LINES, STALL_AFTER_S, log_tail  # noqa: F401 (re-exported)
from powerbert.runner.reporting import METRIC_FLUSH_S, RunReporter, failure, train_and_report  # noqa: F401 (re-exported)
from powerbert.store import RunStatus, Store, StoreError, is_database_busy, process_start_time


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


class StoreCallbacks(RunReporter):
    """A run's writes straight into runs.db (waiting out a busy database), a heartbeat thread
    and the stall watchdog: the local backend's reporter."""

    def __init__(self, store_path: str, run_id: int, stop_event: threading.Event,
                 log_path: Path | None = None, stall_after_s: float = STALL_AFTER_S, device_label: str | None = None):
        super().__init__(run_id, device_label)
        self.store_path = store_path
        self.stop_event = stop_event
        self.log_path = log_path
        self.stall_after_s = stall_after_s
        self.store = Store(store_path)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def write(self, method: str, *args, **kwargs):
        return patiently(getattr(self.store, method), *args, **kwargs)

    def say(self, text: str, error: bool = False) -> None:
        say(text, sys.stderr if error else None)

    def _beat(self) -> None:
        # Its own connection: sqlite3 connections are not shared across threads.
        store = Store(self.store_path)
        try:
            while not self._done.wait(HEARTBEAT_INTERVAL_S):
                progress = self.progress()
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

    def end_training(self) -> None:
        """Stop the heartbeat thread: from here the final writes say how the run ended."""
        self._done.set()
        self._thread.join(timeout=10)

    def close(self) -> None:
        self.end_training()
        self.flush()
        self.store.close()


def keeps_resume_state(store: Store, run) -> bool:
    """Whether the experiment asked to keep finished runs' resume state (--keep-resume-state)."""
    return bool(store.get_experiment(run.experiment_id).config.get("launch", {}).get("keep_resume_state"))


def run_config(store: Store, run):
    """The TrainConfig of a run: the experiment's resolved config, this run's tasks and seed
    (config.run_seed), its kind."""
    from powerbert.config import TrainConfig, run_seed
    from powerbert.runner.baselines import config_for_kind

    experiment = store.get_experiment(run.experiment_id)
    # Experiments stored before seed_per_run existed gave every run the same seed, and before
    # embedding_update existed trained the word-embedding table dense: a run of one resumes
    # with the seed it started with and the optimizer state it saved.
    stored = {"seed_per_run": False, "embedding_update": "dense", **experiment.config["train"]}
    config = TrainConfig.from_dict({**stored, "tasks": list(run.tasks)})
    return config_for_kind(run_seed(config, tuple(experiment.tasks)), run.kind)


def run_worker(db_path: str, run_id: int, device_label: str) -> int:
    """Train the run; return the process exit code (0 finished or stopped, 1 failed)."""
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
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
    try:
        threads = os.environ.get("POWERBERT_THREADS")
        if threads:
            # After the run is marked started: importing torch is part of the run's time, and
            # its elapsed time (what `powerbert plan` estimates) should count it.
            import torch

            torch.set_num_threads(int(threads))
        config = run_config(store, run)
        callbacks = StoreCallbacks(db_path, run_id, stop_event, log_path=log_path, device_label=device_label)
    except BaseException as exc:  # noqa: BLE001 - a run that cannot even begin still ends failed
        traceback.print_exc()
        patiently(store.finish_run, run_id, RunStatus.FAILED, exit_code=1, error=failure(exc), log_tail=log_tail(log_path))
        store.close()
        return 1
    try:
        return train_and_report(run, config, callbacks, stop_event.is_set, keep_resume_state=keeps_resume_state(store, run),
                                log_tail=lambda: log_tail(log_path))
    finally:
        try:
            callbacks.close()
        except Exception:
            pass
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
