"""The supervisor: one detached process per experiment that runs its queue of runs.

Started by `powerbert.runner.experiments.start_supervisor` as
`python -m powerbert.runner.supervisor --db PATH --experiment ID`, in its own session, logging to
<experiment folder>/supervisor.log, so closing the terminal that started it changes nothing.
It starts a worker per queued run as device slots free (one per GPU by default, or
--max-parallel on a CPU with the cores shared between them), records how each worker ended,
marks runs whose worker vanished as lost, and when every run has ended evaluates the ensembles
and marks the experiment finished, failed or stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from powerbert.runner.liveness import log_tail, reconcile
from powerbert.store import ExperimentStatus, RunStatus, Store, StoreError, is_database_busy, process_start_time

POLL_S = 1.0


@dataclass
class Slot:
    label: str  # shown in tables: "cpu", "cuda:1"
    env: dict[str, str]  # environment the worker gets (CUDA_VISIBLE_DEVICES, thread counts)


def device_slots(launch: dict) -> list[Slot]:
    """Slots from the experiment's launch settings: GPUs (given or detected) or CPU workers."""
    gpus = launch.get("gpus")
    if gpus is None:
        gpus = detect_gpus()
    if gpus:
        per_gpu = max(1, int(launch.get("runs_per_gpu") or 1))
        # GPU workers still run Python and host-side ops: share the cores rather than let
        # every worker start a thread per core.
        env = thread_env(len(gpus) * per_gpu)
        return [Slot(f"cuda:{g}", {**env, "CUDA_VISIBLE_DEVICES": str(g)}) for g in gpus for _ in range(per_gpu)]
    parallel = max(1, int(launch.get("max_parallel") or 1))
    env = {**thread_env(parallel), "CUDA_VISIBLE_DEVICES": ""}
    return [Slot("cpu", env) for _ in range(parallel)]


def thread_env(workers: int) -> dict[str, str]:
    # POWERBERT_THREADS set by the user wins: on a shared box (or a busy CI runner) torch's
    # threads spinning against other people's work make a small model many times slower.
    threads = os.environ.get("POWERBERT_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {"POWERBERT_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def detect_gpus() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() == "":
        return []
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:
        return []


class Supervisor:
    def __init__(self, db_path: str, experiment_id: int):
        self.db_path = db_path
        self.store = Store(db_path)
        self.experiment = self.store.get_experiment(experiment_id)
        self.free = device_slots(self.experiment.config.get("launch", {}))
        self.children: dict[int, tuple[subprocess.Popen, Slot]] = {}
        self.terminating = False

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
        self.log(f"supervising experiment {exp.name} (id {exp.id}) with {len(self.free)} slot(s): {', '.join(s.label for s in self.free)}")
        problem = self.settings_problem()
        if problem is not None:
            # Something changed since the experiment was created (the model folder moved, the
            # GPU went away): every queued run would fail the same way, so none starts.
            self.log(f"not starting any run: {problem}")
            for run in self.store.runs(exp.id):
                if run.status == RunStatus.QUEUED:
                    self.store.finish_run(run.id, RunStatus.FAILED, error=problem, expect=RunStatus.QUEUED)
            return self.finish() or 0
        while True:
            self.supervise()
            ended = self.finish()
            if ended is not None:
                return ended

    def supervise(self) -> None:
        """Start queued runs as slots free and watch them, until nothing is left to do."""
        exp = self.experiment
        while True:
            try:
                self.reap()
                runs = reconcile(self.store, exp.id, skip=set(self.children))
                status = self.store.get_experiment(exp.id).status
                if status == ExperimentStatus.RUNNING and not self.terminating:
                    self.start_queued()
                    runs = self.store.runs(exp.id)
            except (StoreError, sqlite3.OperationalError) as exc:
                # runs.db busy (a lock held past the busy timeout) or full: the workers go on
                # training, so wait and look again rather than die and leave them unwatched.
                # Anything else (the experiment deleted under us) still ends the supervisor.
                if not is_database_busy(exc):
                    raise
                self.log(f"runs.db unavailable, retrying: {exc}")
                time.sleep(POLL_S)
                continue
            active = [r for r in runs if r.status in (RunStatus.RUNNING, RunStatus.QUEUED)]
            if not self.children and not any(r.status == RunStatus.RUNNING for r in runs):
                if not active or status != ExperimentStatus.RUNNING or self.terminating:
                    return
            time.sleep(POLL_S)

    def settings_problem(self) -> str | None:
        """The experiment's settings checked as `powerbert run` checked them (check_settings),
        now, on this machine; the problem in one line, or None."""
        from powerbert.config import TrainConfig
        from powerbert.errors import USER_ERRORS, first_line
        from powerbert.runner.checks import check_settings

        try:
            config = TrainConfig.from_dict(self.experiment.config["train"])
            # Not the task files: a file that went bad is reported by the runs that read it,
            # each naming it, while the runs on other tasks go on.
            check_settings(config, gpus=self.experiment.config.get("launch", {}).get("gpus"), data=False)
        except USER_ERRORS as exc:
            return first_line(exc)
        return None

    def start_queued(self) -> None:
        while self.free:
            run = self.store.claim_next_queued(self.experiment.id)
            if run is None:
                return
            out_dir = Path(run.out_dir)
            try:
                out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                log = open(out_dir / "worker.log", "ab")
                os.chmod(out_dir / "worker.log", 0o600)
            except OSError as exc:
                # The output folder went read-only or vanished: this run cannot start, which
                # says so naming the path; the supervisor goes on with the others.
                where = exc.filename or out_dir
                self.store.finish_run(run.id, RunStatus.FAILED, error=f"{where}: cannot write the run's folder: {exc.strerror}", expect=RunStatus.RUNNING)
                self.log(f"run {run.subset} cannot start: {where}: {exc.strerror}")
                continue
            slot = self.free.pop(0)
            # An argument list, never a shell: names and paths reach the worker verbatim.
            argv = [sys.executable, "-m", "powerbert.runner.worker", "--db", self.db_path, "--run", str(run.id), "--device-label", slot.label]
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **slot.env}, start_new_session=True, close_fds=True,
            )
            log.close()
            self.store.update_run(run.id, pid=proc.pid, pid_start_time=process_start_time(proc.pid), host=socket.gethostname(), device=slot.label)
            self.children[run.id] = (proc, slot)
            self.log(f"started run {run.subset} ({run.kind}) as pid {proc.pid} on {slot.label}")

    def reap(self) -> None:
        for run_id, (proc, slot) in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[run_id]
            self.free.append(slot)
            run = self.store.get_run(run_id)
            self.log(f"run {run.subset} exited with {describe_exit(code)}; status {run.status}")
            if run.status != RunStatus.RUNNING:
                continue  # the worker recorded how it ended
            tail = log_tail(Path(run.out_dir) / "worker.log")
            if code == -signal.SIGTERM:
                # SIGTERM (`powerbert stop`, or this supervisor's own stop) arrived before the
                # worker had set its handler: it was asked to stop, it did not fail.
                self.store.finish_run(run_id, RunStatus.STOPPED, exit_code=code, error="stopped before training started", log_tail=tail, expect=RunStatus.RUNNING)
            elif code == -signal.SIGKILL:
                # Killed without a chance to say so: the same as vanishing (kill -9, OOM killer).
                self.store.finish_run(run_id, RunStatus.LOST, exit_code=code, error="worker was killed (SIGKILL)", log_tail=tail, expect=RunStatus.RUNNING)
            else:
                self.store.finish_run(run_id, RunStatus.FAILED, exit_code=code, error=f"worker exited with {describe_exit(code)}", log_tail=tail, expect=RunStatus.RUNNING)

    def terminate(self, *_) -> None:
        """SIGTERM to the supervisor: stop every worker (they checkpoint) and end."""
        self.terminating = True
        for proc, _slot in self.children.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the worker leads its group: its children too
            except ProcessLookupError:
                pass
            except PermissionError:
                proc.terminate()

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


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


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
