"""The local backend: each run a worker process on this machine, in a device slot of its own.

The supervisor (supervisor.py) asks a backend to start queued runs while it has room, to reap
the ones that ended, and to stop them all. Here a slot is a GPU (one worker per GPU by
default, --runs-per-gpu more) or one of --max-parallel CPU workers with the cores shared out;
a worker is `python -m powerbert.runner.worker` in its own session (worker.py), and how it
ended is read from its exit status when it did not record it itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from powerbert.runner.liveness import log_tail
from powerbert.store import RunStatus, Store, process_start_time


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


class LocalBackend:
    poll_s = 1.0  # how often the supervisor looks for ended workers and free slots

    def __init__(self, db_path: str, store: Store, experiment, log):
        self.store = store
        self.experiment = experiment
        self.log = log
        self.db_path = db_path
        self.free = device_slots(experiment.config.get("launch", {}))
        self.children: dict[int, tuple[subprocess.Popen, Slot]] = {}

    def describe(self) -> str:
        return f"{len(self.free)} slot(s): {', '.join(s.label for s in self.free)}"

    def problem(self) -> str | None:
        return None  # the device checks are the settings check's (Supervisor.settings_problem)

    def watching(self) -> set[int]:
        return set(self.children)

    def idle(self) -> None:
        time.sleep(self.poll_s)

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

    def terminate(self) -> None:
        """The supervisor was asked to stop: every worker gets SIGTERM (they checkpoint) and ends."""
        for proc, _slot in self.children.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the worker leads its group: its children too
            except ProcessLookupError:
                pass
            except PermissionError:
                proc.terminate()

    def close(self) -> None:
        pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
