"""The supervisor's Ray backend: each run an actor on some node of the cluster, runs.db written
by the supervisor alone.

The supervisor (on the head, the Ray driver) claims queued runs while the cluster has room,
creates a `RemoteRun` actor for each with the resources asked for (Ray picks the node), and a
few times a second polls every actor: the events it returns are written through the store
(metrics, dev outputs, the final status), its progress becomes the run's heartbeat. How a run
can end, in the states users know:
- its training ends: the final events say finished, stopped or failed;
- its actor or node dies, or it has not answered for LOST_AFTER_S: lost, naming the node;
- `powerbert stop` set it stopped in runs.db: the actor is asked to stop (it checkpoints), and
  killed after the grace period;
- the supervisor itself dies: its actors die with it (Ray ends a driver's actors), and an
  actor that somehow lives on stops at its lease (actor.py).
Ray's own retries are off (max_restarts=0, max_task_retries=0): `powerbert resume` is the one
retry path, as on one machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from powerbert.errors import first_line
from powerbert.runner.cluster.actor import LOST_AFTER_S, RemoteRun
from powerbert.runner.cluster.node_check import versions
from powerbert.runner.cluster.nodes import connect, default_address, describe_node, per_run_of, preflight, slots
from powerbert.runner.reporting import failure
from powerbert.store import Run, RunStatus, Store

# The store writes a run makes (reporting.RunReporter, train_and_report), all of its own row:
# nothing else an actor sends is written.
RUN_WRITES = frozenset({"heartbeat", "update_run", "add_metrics", "save_dev_outputs", "delete_metrics_after", "finish_run"})
STOP_GRACE_S = 30.0  # as the local backend's: time to checkpoint after a stop, then killed
SLOTS_REFRESH_S = 5.0  # nodes join and leave: recount the room this often


@dataclass
class Placed:
    """A run the supervisor gave to an actor, and what it knows of it."""

    run: Run
    actor: object
    pending: object  # the outstanding call: ready() until it starts training, then poll()
    started: bool = False
    node_id: str = ""  # once ready
    host: str = ""
    acked: int = 0  # the last event written into runs.db
    answered_at: float = field(default_factory=time.monotonic)
    stop_asked_at: float | None = None

    @property
    def node(self) -> str:
        return describe_node(self.node_id, self.host)


class RayBackend:
    poll_s = 1.0  # the longest the supervisor waits between looks (it wakes at once when an actor answers)

    def __init__(self, store: Store, experiment, log):
        launch = experiment.config.get("launch", {})
        self.store = store
        self.experiment = experiment
        self.log = log
        self.address = launch.get("ray_address")
        self.per_run = per_run_of(launch)
        self.keep_resume_state = bool(launch.get("keep_resume_state"))
        self.ray = connect(self.address)
        self.actor_class = self.ray.remote(RemoteRun)
        self.placed: dict[int, Placed] = {}
        self.room = 0
        self._counted_at = 0.0

    # The supervisor's side of a backend: describe, problem, watching, start_queued, reap, terminate.

    def describe(self) -> str:
        return f"Ray cluster at {self.address or default_address()} ({self.per_run.describe()})"

    def problem(self) -> str | None:
        """The preflight of every node that could take a run, as one line, or None."""
        from powerbert.errors import USER_ERRORS

        try:
            self.room = preflight(self.ray, Path(self.experiment.out_dir), self.per_run)
        except USER_ERRORS as exc:
            return first_line(exc)
        self._counted_at = time.monotonic()
        self.log(f"preflight passed; room for {self.room} run(s) at once")
        return None

    def watching(self) -> set[int]:
        return set(self.placed)

    def idle(self) -> None:
        """Until an actor answers, or poll_s: an answer is written at once (an actor's resume
        checkpoint waits for it), and nothing spins meanwhile."""
        if self.placed:
            self.ray.wait([p.pending for p in self.placed.values()], num_returns=1, timeout=self.poll_s)
        else:
            time.sleep(self.poll_s)

    def start_queued(self) -> None:
        if time.monotonic() - self._counted_at > SLOTS_REFRESH_S:
            self.room, self._counted_at = slots(self.ray, self.per_run), time.monotonic()
        while len(self.placed) < self.room:
            run = self.store.claim_next_queued(self.experiment.id)
            if run is None:
                return
            self._place(run)

    def _place(self, run: Run) -> None:
        from powerbert.runner.worker import run_config

        try:
            Path(run.out_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            self.store.finish_run(run.id, RunStatus.FAILED, error=f"{exc.filename or run.out_dir}: cannot write the run's folder: {exc.strerror}",
                                  expect=RunStatus.RUNNING)
            return
        config = run_config(self.store, run).to_dict()
        actor_class = self.actor_class.options(
            num_cpus=self.per_run.cpus, num_gpus=self.per_run.gpus, max_restarts=0, max_task_retries=0,
        )
        actor = actor_class.remote(
            run, config, self.experiment.config.get("declared_tasks"), threads=max(1, int(self.per_run.cpus)),
            keep_resume_state=self.keep_resume_state, expected_versions=versions(),
        )
        self.placed[run.id] = Placed(run, actor, actor.ready.remote())
        self.log(f"queued run {run.subset} ({run.kind}) on the Ray cluster")

    def reap(self) -> None:
        if not self.placed:
            return
        ready, _ = self.ray.wait([p.pending for p in self.placed.values()], num_returns=len(self.placed), timeout=0)
        ready = set(ready)
        now = time.monotonic()
        for run_id, placed in list(self.placed.items()):
            if placed.pending in ready:
                try:
                    answer = self.ray.get(placed.pending)
                except self.ray.exceptions.ActorUnavailableError as exc:
                    # Ray's word for "unreachable, maybe for a moment": ask again, until
                    # LOST_AFTER_S without an answer (or Ray says it died).
                    if placed.started and now - placed.answered_at < LOST_AFTER_S:
                        placed.pending = placed.actor.poll.remote(placed.acked)
                    else:
                        self._lost(placed, exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - the actor or its node died
                    self._lost(placed, exc)
                    continue
                placed.answered_at = now
                if placed.started:
                    self._apply(placed, answer)
                else:
                    self._begin(placed, answer)
            elif placed.started and now - placed.answered_at > LOST_AFTER_S:
                self._lost(placed, None)
            elif not placed.started:
                # Waiting for room on a node: the claim's heartbeat is kept fresh, so that no
                # viewer marks a run lost that has not started.
                if self.store.heartbeat(run_id) == RunStatus.STOPPED:
                    self._stop_unstarted(placed)
                    continue
            self._watch_stop(placed, now)

    def _begin(self, placed: Placed, answer: dict) -> None:
        run = placed.run
        placed.node_id, placed.host = answer["node"], answer["host"]
        if answer["problem"]:
            error = f"Ray node {placed.node} {answer['problem']}"
            self.store.finish_run(run.id, RunStatus.FAILED, error=error, expect=RunStatus.RUNNING)
            self.log(f"run {run.subset} cannot train there: {error}")
            self._drop(placed)
            return
        if not self.store.mark_run_started(run.id, answer["pid"], answer["pid_start_time"], answer["host"], answer["device"], node=answer["node"]):
            self.log(f"run {run.subset} was stopped before training started")
            self._drop(placed)
            return
        placed.actor.start.remote()
        placed.started = True
        placed.pending = placed.actor.poll.remote(0)
        self.log(f"started run {run.subset} ({run.kind}) on node {placed.node}, {answer['device']}, pid {answer['pid']}")

    def _apply(self, placed: Placed, answer: dict) -> None:
        """Write an actor's events through the store, in order, and its heartbeat."""
        run_id = placed.run.id
        for seq, method, args, kwargs in answer["events"]:
            # Skipped if written already: after a write that failed (runs.db busy) the same
            # answer is read again next time, and what went in before the failure must not twice.
            if seq <= placed.acked:
                continue
            if method not in RUN_WRITES or (args and args[0] != run_id):
                self.log(f"run {placed.run.subset}: ignored a write its actor may not make: {method}")
            else:
                getattr(self.store, method)(*args, **kwargs)
            placed.acked = seq
        if answer["done"]:
            run = self.store.get_run(run_id)
            self.log(f"run {run.subset} ended on node {placed.node} with exit code {answer['exit_code']}; status {run.status}")
            if run.status == RunStatus.RUNNING:  # it ended without saying how (should not happen)
                self.store.finish_run(run_id, RunStatus.FAILED, exit_code=answer["exit_code"], error="the run's actor ended without a final status",
                                      expect=RunStatus.RUNNING)
            self._drop(placed)
            return
        if self.store.heartbeat(run_id, **answer["progress"]) == RunStatus.STOPPED:
            self._ask_to_stop(placed)
        placed.pending = placed.actor.poll.remote(placed.acked)

    def _watch_stop(self, placed: Placed, now: float) -> None:
        if placed.run.id not in self.placed or placed.stop_asked_at is None or now - placed.stop_asked_at < STOP_GRACE_S:
            return
        self.store.finish_run(placed.run.id, RunStatus.STOPPED, error=f"killed after {STOP_GRACE_S:.0f} s without stopping")
        self.log(f"run {placed.run.subset} did not stop within {STOP_GRACE_S:.0f} s: killed")
        self._drop(placed)

    def _lost(self, placed: Placed, exc: Exception | None) -> None:
        where = f"node {placed.node}" if placed.node_id else "its node"
        if exc is None:
            why = f"no answer from its actor for {LOST_AFTER_S:.0f} s"
        else:
            why = failure(exc)
        if placed.node_id and placed.node_id in self._dead_nodes():
            why = f"the node died ({why})"
        error = f"lost on Ray {where}: {why}"
        self.store.finish_run(placed.run.id, RunStatus.LOST, error=error, expect=RunStatus.RUNNING)
        self.log(f"run {placed.run.subset} {error}")
        self._drop(placed)

    def _dead_nodes(self) -> set[str]:
        try:
            return {node["NodeID"] for node in self.ray.nodes() if not node.get("Alive")}
        except Exception:  # noqa: BLE001 - only used to word the message
            return set()

    def _drop(self, placed: Placed) -> None:
        self.placed.pop(placed.run.id, None)
        try:
            self.ray.kill(placed.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _stop_unstarted(self, placed: Placed) -> None:
        self.store.finish_run(placed.run.id, RunStatus.STOPPED, error="stopped before training started")
        self.log(f"run {placed.run.subset} stopped before training started")
        self._drop(placed)

    def terminate(self) -> None:
        """The supervisor was asked to stop: every run checkpoints and ends stopped."""
        for placed in list(self.placed.values()):
            if not placed.started:
                self._stop_unstarted(placed)
            else:
                self._ask_to_stop(placed)

    def _ask_to_stop(self, placed: Placed) -> None:
        """The actor checkpoints at its next step and ends stopped; killed after STOP_GRACE_S."""
        if placed.stop_asked_at is None:
            placed.stop_asked_at = time.monotonic()
            placed.actor.stop.remote()
            self.log(f"run {placed.run.subset}: stop asked; the run checkpoints and ends")

    def close(self) -> None:
        try:
            self.ray.shutdown()
        except Exception:  # noqa: BLE001
            pass

