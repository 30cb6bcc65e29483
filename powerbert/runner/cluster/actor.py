"""One run on a Ray node: the actor that trains it and hands what it records to the supervisor.

`RemoteRun` is a plain class (the supervisor wraps it with `ray.remote`, tests drive it
directly). The supervisor creates it with the run and its config, asks `ready()` (where it
landed: node, host, pid, device, and whether that node sees the run folder), records the start
in runs.db, then calls `start()`: training runs in a thread of the actor process. Every write
the run would make to runs.db (reporting.RunReporter) is buffered as an event; the supervisor
calls `poll(acked)` a few times a second, writes the events through its store, and says how
far it has written. The actor never opens runs.db.

Two promises ride on the polls:
- a resume checkpoint at step k is written only once the supervisor has written every event
  before it (metrics up to k), so a node dying right after it leaves no gap in the curve;
- the lease: an actor not polled for LEASE_S stops without writing another checkpoint. The
  supervisor declares a run lost only after LOST_AFTER_S (longer) without an answer, so an
  actor that outlives its raylet and goes on training can never overwrite the checkpoint of
  the attempt that resumed it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from pathlib import Path

from powerbert.runner.liveness import LOG_TAIL_LINES
from powerbert.runner.reporting import RunReporter, failure, train_and_report
from powerbert.store import Run
from powerbert.store.process import process_start_time

POLL_WAIT_S = 1.0  # a poll returns at once with events, else after this long
LEASE_S = 7.0  # not polled this long: stop, and write no checkpoint
LOST_AFTER_S = 10.0  # the supervisor's side: no answer this long and the run is lost (> LEASE_S)
assert LOST_AFTER_S > LEASE_S


class LeaseExpired(Exception):
    """The supervisor stopped polling this run: it may have been declared lost and resumed elsewhere."""


class BufferedReporter(RunReporter):
    """A run's store writes kept as numbered events until the supervisor takes them; its log
    lines written to worker.log in the run folder (shared storage) and kept for the log tail."""

    def __init__(self, run_id: int, device_label: str, log_path: Path, lease_s: float = LEASE_S):
        super().__init__(run_id, device_label)
        self.log_path = log_path
        self.lease_s = lease_s
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._events: list[tuple[int, str, tuple, dict]] = []
        self._seq = 0  # number of the last event made
        self._acked = 0  # number of the last event the supervisor has written into runs.db
        self._polled_at = time.monotonic()
        self._changed = threading.Condition()

    def write(self, method: str, *args, **kwargs) -> None:
        with self._changed:
            self._seq += 1
            self._events.append((self._seq, method, args, kwargs))
            self._changed.notify_all()  # a poll waiting for events returns with this one

    def say(self, text: str, error: bool = False) -> None:
        self.tail.extend(text.splitlines() or [""])
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                print(text, file=log)
        except OSError:
            pass  # a full or read-only run folder: the checkpoint write names the path

    def take(self, acked: int, wait_s: float = 0.0, done=lambda: False) -> list[tuple[int, str, tuple, dict]]:
        """The events not handed out yet, waiting up to `wait_s` for one (or for `done()`);
        `acked`: the last one the supervisor has written."""
        with self._changed:
            self._polled_at = time.monotonic()
            self._acked = max(self._acked, acked)
            self._changed.notify_all()
            deadline = time.monotonic() + wait_s
            while not self._events and not done() and time.monotonic() < deadline:
                self._changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._polled_at = time.monotonic()
            events, self._events = self._events, []
            return events

    def lease_expired(self) -> bool:
        return time.monotonic() - self._polled_at > self.lease_s

    def before_checkpoint(self, kind: str, step: int) -> None:
        super().before_checkpoint(kind, step)  # the metrics so far become an event
        with self._changed:
            if kind == "last":
                # The resume point promises every metric up to `step` is in runs.db.
                target = self._seq
                while self._acked < target and not self.lease_expired():
                    self._changed.wait(0.1)
            if self.lease_expired():
                raise LeaseExpired(f"not polled for {self.lease_s:.0f} s: the supervisor may have given this run up; "
                                   f"not writing the {kind} checkpoint at step {step}")


class RemoteRun:
    """Trains one run where Ray placed it; the supervisor's handle on it."""

    def __init__(self, run: Run, config: dict, declared_tasks: dict | None, *, threads: int, keep_resume_state: bool,
                 expected_versions: dict[str, str], lease_s: float = LEASE_S):
        gpu_ids = _gpu_ids()
        if not gpu_ids and _in_ray() is not None:
            # Ray leaves CUDA_VISIBLE_DEVICES unset for a run that asked for no GPU: hide them
            # all, so that device "auto" trains on the CPU it was given rather than a GPU
            # another run holds.
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        self.run = run
        self.config = config
        self.declared_tasks = declared_tasks
        self.threads = max(1, int(threads))
        self.keep_resume_state = keep_resume_state
        self.expected_versions = expected_versions
        self.device_label = f"cuda:{gpu_ids[0]}" if gpu_ids else "cpu"
        self.stop_event = threading.Event()
        self.reporter = BufferedReporter(run.id, self.device_label, Path(run.out_dir) / "worker.log", lease_s)
        self.exit_code: int | None = None
        self._thread: threading.Thread | None = None

    def ready(self) -> dict:
        """Where this run landed, and what keeps it from training there (None if nothing)."""
        from powerbert.runner.cluster.node_check import check_node

        pid = os.getpid()
        return {
            "node": _node_id(), "host": socket.gethostname(), "pid": pid, "pid_start_time": process_start_time(pid),
            "device": self.device_label,
            # The supervisor made the run folder on the head: not seeing it here means this node
            # does not share the head's storage (a node that joined after the preflight).
            "problem": check_node(self.run.out_dir, None, self.expected_versions),
        }

    def start(self) -> None:
        """Begin training in a thread of this process; returns at once."""
        self._thread = threading.Thread(target=self._train, name=f"run-{self.run.id}", daemon=True)
        self._thread.start()

    def _train(self) -> None:
        try:
            import torch

            torch.set_num_threads(self.threads)
            from powerbert.config import TrainConfig
            from powerbert.tasks import register_declarations

            register_declarations(self.declared_tasks)
            config = TrainConfig.from_dict(self.config)
            self.reporter.say(f"training on node {_node_id()[:12]} ({socket.gethostname()}), {self.device_label}, pid {os.getpid()}")
            code = train_and_report(self.run, config, self.reporter, self._should_stop, keep_resume_state=self.keep_resume_state,
                                    log_tail=lambda: "\n".join(self.reporter.tail))
        except BaseException as exc:  # noqa: BLE001 - the supervisor must hear how it ended
            self.reporter.write("finish_run", self.run.id, "failed", exit_code=1, error=failure(exc))
            code = 1
        self.exit_code = code

    def _should_stop(self) -> bool:
        if self.reporter.lease_expired():
            self.stop_event.set()
        return self.stop_event.is_set()

    def poll(self, acked: int, wait_s: float = POLL_WAIT_S) -> dict:
        """What happened since the last poll, waiting up to `wait_s` for something to (a long
        poll: the supervisor hears of an event at once, without asking many times a second):
        the events to write, the progress for the heartbeat, and whether training has ended
        (then the events are the last ones)."""
        ended = lambda: self._thread is not None and not self._thread.is_alive()  # noqa: E731
        events = self.reporter.take(acked, wait_s, ended)
        done = ended()
        if done:
            events += self.reporter.take(acked)  # the last ones, written as the thread ended
        return {"events": events, "progress": self.reporter.progress(), "done": done,
                "exit_code": self.exit_code if done else None}

    def stop(self) -> None:
        """Checkpoint at the next step and end stopped (`powerbert stop`, or the supervisor's)."""
        self.stop_event.set()


def _in_ray():
    """The ray module inside a Ray worker; None elsewhere (a test driving the class directly).
    Asked first, because Ray's own calls would start a local cluster where none is joined."""
    try:
        import ray
    except ImportError:
        return None
    return ray if ray.is_initialized() else None


def _gpu_ids() -> list[int]:
    ray = _in_ray()
    return [int(g) for g in ray.get_gpu_ids()] if ray else []


def _node_id() -> str:
    ray = _in_ray()
    return ray.get_runtime_context().get_node_id() if ray else socket.gethostname()
