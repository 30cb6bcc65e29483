"""Create, start, stop and resume experiments: what the CLI and the dashboard both call.

An experiment is one power set of runs (7 for three tasks), stored in runs.db with its resolved
config, and run by a detached supervisor process (powerbert.supervisor). Nothing here waits for
training: the front ends follow progress by reading runs.db.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from powerbert.config import TrainConfig
from powerbert.errors import ExperimentError
from powerbert.liveness import reconcile
from powerbert.store import Experiment, ExperimentStatus, Run, RunStatus, Store, is_same_process
from powerbert.tasks import power_set, subset_name

STOP_GRACE_S = 30.0  # a worker's time to checkpoint after SIGTERM before it is killed


def default_name(tasks: tuple[str, ...]) -> str:
    return f"{subset_name(tasks)}-{time.strftime('%Y%m%d-%H%M%S')}"


def validate(config: TrainConfig) -> None:
    """Fail fast, in the caller's terminal, on what would make every run fail: missing or
    unreadable task files, an unknown model."""
    from powerbert.data import check_data_dir, load_split
    from powerbert.model import load_tokenizer

    check_data_dir(config.data_dir, config.tasks)
    for task in config.tasks:
        for split in ("train", "dev"):
            load_split(task, config.data_dir, split, skip_bad_rows=config.skip_bad_rows)
    load_tokenizer(config.model)


def create_experiment(
    store: Store,
    config: TrainConfig,
    *,
    name: str | None = None,
    profile: str = "demo",
    out_root: Path | str = "runs",
    gpus: list[int] | None = None,
    runs_per_gpu: int = 1,
    max_parallel: int = 1,
    baselines: bool = False,
) -> Experiment:
    """Store the experiment and one queued run per subset (plus the baselines if asked)."""
    name = name or default_name(config.tasks)
    out_dir = Path(out_root).expanduser().resolve() / name
    stored = {
        "train": config.to_dict(),
        "profile": profile,
        "launch": {"gpus": gpus, "runs_per_gpu": runs_per_gpu, "max_parallel": max_parallel},
    }
    experiment = store.create_experiment(name, config.tasks, stored, str(out_dir), power_set(config.tasks))
    if baselines:
        add_baselines(store, experiment)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out_dir, 0o700)
    for run in store.runs(experiment.id):
        store.update_run(run.id, out_dir=str(run_dir(experiment, run)))
    return store.get_experiment(experiment.id)


def run_dir(experiment: Experiment, run: Run) -> Path:
    folder = run.subset if run.kind == "powerset" else f"{run.kind}-{run.subset}"
    return Path(experiment.out_dir) / folder


def add_baselines(store: Store, experiment: Experiment) -> list[Run]:
    """The paper's frozen and naive baselines as extra queued runs on all the tasks."""
    from powerbert.baselines import BASELINE_KINDS

    added = []
    existing = {(r.subset, r.kind) for r in store.runs(experiment.id)}
    for kind in BASELINE_KINDS:
        if (subset_name(experiment.tasks), kind) not in existing:
            added += store.add_runs(experiment.id, [experiment.tasks], kind)
    for run in added:
        store.update_run(run.id, out_dir=str(run_dir(experiment, run)))
    return added


def supervisor_alive(experiment: Experiment) -> bool:
    return is_same_process(experiment.supervisor_pid, experiment.supervisor_start_time)


def start_supervisor(db_path: Path | str, experiment: Experiment) -> int:
    """Start the experiment's supervisor, detached: own session, no pipes to the caller."""
    log_path = Path(experiment.out_dir) / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "powerbert.supervisor", "--db", str(Path(db_path).resolve()), "--experiment", str(experiment.id)],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    finally:
        os.close(fd)
    return proc.pid


def launch(db_path: Path | str, store: Store, experiment: Experiment) -> int | None:
    """Start a supervisor unless a live one already runs this experiment; its pid or None."""
    if supervisor_alive(experiment):
        return None
    store.update_experiment(experiment.id, status=ExperimentStatus.RUNNING)
    return start_supervisor(db_path, store.get_experiment(experiment.id))


def resolve(store: Store, key: str) -> tuple[Experiment, list[Run]]:
    """An 'EXPERIMENT' or 'EXPERIMENT/subset' (or run id) key: the experiment and the runs meant."""
    if "/" in key or (key.isdigit() and not _experiment_exists(store, key)):
        run = store.find_run(key)
        return store.get_experiment(run.experiment_id), [run]
    experiment = store.get_experiment(key)
    return experiment, store.runs(experiment.id)


def _experiment_exists(store: Store, key: str) -> bool:
    try:
        store.get_experiment(key)
        return True
    except Exception:
        return False


def signal_run(run: Run, sig: int) -> bool:
    """Signal a run's worker (its whole process group) if it is verifiably that process."""
    if not is_same_process(run.pid, run.pid_start_time):
        return False  # dead, or the pid now belongs to someone else: never signal it
    try:
        os.killpg(run.pid, sig)  # workers lead their own session, so their children go too
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(run.pid, sig)
    return True


def stop(store: Store, key: str, *, grace_s: float = STOP_GRACE_S, wait: bool = True) -> list[Run]:
    """Stop a run or a whole experiment: queued runs become stopped, running workers get SIGTERM
    (they checkpoint and mark themselves stopped), and after `grace_s` SIGKILL."""
    experiment, runs = resolve(store, key)
    whole = len(runs) > 1 or "/" not in key and not key.isdigit()
    if whole:
        store.update_experiment(experiment.id, status=ExperimentStatus.STOPPED)
    signalled = []
    for run in runs:
        if run.status == RunStatus.QUEUED:
            store.finish_run(run.id, RunStatus.STOPPED, error="stopped before it started", expect=RunStatus.QUEUED)
        elif run.status == RunStatus.RUNNING:
            if signal_run(run, signal.SIGTERM):
                signalled.append(run)
            else:
                # No live worker to ask: the status itself tells a worker that is starting up.
                store.update_run(run.id, status=RunStatus.STOPPED)
    deadline = time.monotonic() + grace_s
    while wait and signalled and time.monotonic() < deadline:
        signalled = [r for r in signalled if is_same_process(r.pid, r.pid_start_time)]
        time.sleep(0.2)
    for run in signalled if wait else []:
        signal_run(run, signal.SIGKILL)
        store.finish_run(run.id, RunStatus.STOPPED, error=f"killed after {grace_s:.0f} s without stopping", expect=RunStatus.RUNNING)
    return [store.get_run(r.id) for r in runs]


def resume(db_path: Path | str, store: Store, key: str) -> tuple[Experiment, list[Run]]:
    """Queue stopped, failed and lost runs again (they continue from their last checkpoint) and
    make sure a supervisor runs them."""
    experiment, runs = resolve(store, key)
    runs = [r for r in reconcile(store, experiment.id) if r.id in {x.id for x in runs}]
    again = [r for r in runs if r.status in (RunStatus.STOPPED, RunStatus.FAILED, RunStatus.LOST)]
    if not again and not any(r.status == RunStatus.QUEUED for r in runs):
        states = ", ".join(f"{r.subset} {r.status}" for r in runs)
        raise ExperimentError(f"nothing to resume in {experiment.name}: runs are {states}")
    for run in again:
        store.update_run(run.id, status=RunStatus.QUEUED, ended_at=None, error=None, exit_code=None)
    experiment = store.get_experiment(experiment.id)
    launch(db_path, store, experiment)
    return experiment, [store.get_run(r.id) for r in runs]
