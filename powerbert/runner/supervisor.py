"""The supervisor: one detached process per experiment that runs its queue of runs.

Started by `powerbert.runner.experiments.start_supervisor` as
`python -m powerbert.runner.supervisor --db PATH --experiment ID`, in its own session, logging to
<experiment folder>/supervisor.log, so closing the terminal that started it changes nothing.
It starts queued runs through its backend as there is room (local.py: a worker process per
device slot on this machine; cluster/driver.py: a Ray actor per run on any node of a cluster,
runs.db still written here alone), records how each run ended, marks runs whose worker
vanished as lost, and when every run has ended evaluates the ensembles and marks the
experiment finished, failed or stopped.
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

from powerbert.errors import USER_ERRORS, first_line
from powerbert.runner.liveness import reconcile
from powerbert.runner.local import Slot, detect_gpus, device_slots, thread_env  # noqa: F401 (re-exported)
from powerbert.store import ExperimentStatus, RunStatus, Store, StoreError, is_database_busy, process_start_time


class Supervisor:
    def __init__(self, db_path: str, experiment_id: int):
        self.db_path = db_path
        self.store = Store(db_path)
        self.experiment = self.store.get_experiment(experiment_id)
        self.terminating = False
        self.backend = None  # made in run(): the Ray one connects to the cluster, which may fail

    def log(self, text: str) -> None:
        # supervisor.log sits in the experiment folder: a full or read-only disk there must not
        # kill the process that records how every run ended, so a failed log write is dropped.
        try:
            print(time.strftime("%Y-%m-%d %H:%M:%S"), text, flush=True)
        except (OSError, ValueError):
            pass

    def run(self) -> int:
        exp = self.experiment
        self.store.update_experiment(
            exp.id, status=ExperimentStatus.RUNNING, supervisor_pid=os.getpid(),
            supervisor_start_time=process_start_time(os.getpid()), host=socket.gethostname(),
            started_at=exp.started_at or time.time(), ended_at=None,
        )
        problem = self.settings_problem()
        if problem is None:
            try:
                self.backend = make_backend(self.db_path, self.store, exp, self.log)
            except USER_ERRORS as exc:  # Ray missing, or the cluster out of reach
                problem = first_line(exc)
        if self.backend is not None:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self.terminate)  # again: joining a Ray cluster may set its own
            self.log(f"supervising experiment {exp.name} (id {exp.id}) on {self.backend.describe()}")
            problem = problem or self.backend.problem()
        if problem is not None:
            # Something changed since the experiment was created (the model folder moved, the
            # GPU went away): every queued run would fail the same way, so none starts.
            self.log(f"not starting any run: {problem}")
            for run in self.store.runs(exp.id):
                if run.status == RunStatus.QUEUED:
                    self.store.finish_run(run.id, RunStatus.FAILED, error=problem, expect=RunStatus.QUEUED)
            return self.finish() or 0
        try:
            while True:
                self.supervise()
                ended = self.finish()
                if ended is not None:
                    return ended
        finally:
            self.backend.close()

    def supervise(self) -> None:
        """Start queued runs as slots free and watch them, until nothing is left to do."""
        exp, backend = self.experiment, self.backend
        asked_to_stop = False
        while True:
            try:
                if self.terminating and not asked_to_stop:
                    backend.terminate()
                    asked_to_stop = True
                backend.reap()
                runs = reconcile(self.store, exp.id, skip=backend.watching())
                status = self.store.get_experiment(exp.id).status
                if status == ExperimentStatus.RUNNING and not self.terminating:
                    backend.start_queued()
                    runs = self.store.runs(exp.id)
            except (StoreError, sqlite3.OperationalError) as exc:
                # runs.db busy (a lock held past the busy timeout) or full: the workers go on
                # training, so wait and look again rather than die and leave them unwatched.
                # Anything else (the experiment deleted under us) still ends the supervisor.
                if not is_database_busy(exc):
                    raise
                self.log(f"runs.db unavailable, retrying: {exc}")
                time.sleep(backend.poll_s)
                continue
            active = [r for r in runs if r.status in (RunStatus.RUNNING, RunStatus.QUEUED)]
            if not backend.watching() and not any(r.status == RunStatus.RUNNING for r in runs):
                if not active or status != ExperimentStatus.RUNNING or self.terminating:
                    return
            backend.idle()  # until something may have happened: poll_s, or sooner

    def settings_problem(self) -> str | None:
        """The experiment's settings checked as `powerbert run` checked them (check_settings),
        now, on this machine; the problem in one line, or None."""
        from powerbert.config import TrainConfig
        from powerbert.runner.checks import check_settings

        try:
            config = TrainConfig.from_dict(self.experiment.config["train"])
            # Not the task files: a file that went bad is reported by the runs that read it,
            # each naming it, while the runs on other tasks go on.
            check_settings(config, gpus=self.experiment.config.get("launch", {}).get("gpus"), data=False)
        except USER_ERRORS as exc:
            return first_line(exc)
        return None

    def terminate(self, *_) -> None:
        """SIGTERM to the supervisor: every run is asked to stop (they checkpoint), then it ends.
        Only a flag here: the loop asks the backend (Ray's calls are no work for a signal handler)."""
        self.terminating = True

    def finish(self) -> int | None:
        """Evaluate the ensembles and record the final status; None when a resume queued runs
        again meanwhile (the caller goes on supervising them)."""
        exp_id = self.experiment.id
        runs = self.store.runs(exp_id)
        if any(r.status == RunStatus.FINISHED for r in runs):
            try:
                from powerbert.results.evaluate import ensemble_experiment

                outcomes = ensemble_experiment(self.store, exp_id)
                self.log(f"evaluated {len(outcomes)} ensemble result(s)")
            except Exception as exc:  # the runs are done either way; say why ensembles are missing
                self.log(f"ensemble evaluation failed: {type(exc).__name__}: {exc}")
                self.store.update_experiment(exp_id, error=f"ensemble evaluation failed: {exc}")
        # From the runs alone: a stop that came after the last run ended leaves the experiment
        # finished, not stopped.
        statuses = {r.status for r in runs}
        if statuses <= {RunStatus.FINISHED}:
            final = ExperimentStatus.FINISHED
        elif statuses & {RunStatus.FAILED, RunStatus.LOST}:
            final = ExperimentStatus.FAILED
        else:
            final = ExperimentStatus.STOPPED
        if not self.store.end_experiment(exp_id, final, force=self.terminating):
            self.log("runs were queued again while the experiment was ending: supervising them")
            return None
        self.log(f"experiment {self.experiment.name} {final}")
        self.store.close()
        return 0


def make_backend(db_path: str, store: Store, experiment, log):
    """The experiment's backend: local worker processes, or actors on a Ray cluster."""
    if experiment.config.get("launch", {}).get("backend", "local") == "ray":
        from powerbert.runner.cluster.driver import RayBackend  # imports ray: only when asked for

        return RayBackend(store, experiment, log)
    from powerbert.runner.local import LocalBackend

    return LocalBackend(db_path, store, experiment, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m powerbert.runner.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="path of runs.db")
    parser.add_argument("--experiment", type=int, required=True, help="experiment id")
    args = parser.parse_args(argv)
    supervisor = Supervisor(args.db, args.experiment)
    signal.signal(signal.SIGTERM, supervisor.terminate)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # belt and braces: we are in our own session
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
