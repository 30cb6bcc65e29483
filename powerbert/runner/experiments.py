"""Create, start, stop and resume experiments: what the CLI and the dashboard both call.

An experiment is one power set of runs (7 for three tasks), stored in runs.db with its resolved
config, and run by a detached supervisor process (powerbert.runner.supervisor). Nothing here waits for
training: the front ends follow progress by reading runs.db.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from powerbert.config import TrainConfig, absolute_paths
from powerbert.errors import ExperimentError
from powerbert.runner.liveness import reconcile
from powerbert.store import Experiment, ExperimentStatus, Run, RunStatus, Store, is_same_process, process_start_time
from powerbert.store.process import START_TIME_TOLERANCE_S
from powerbert.tasks import declarations_of, power_set, subset_name

STOP_GRACE_S = 30.0  # a worker's time to checkpoint after SIGTERM before it is killed


def default_name(tasks: tuple[str, ...]) -> str:
    return f"{subset_name(tasks)}-{time.strftime('%Y%m%d-%H%M%S')}"


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
    keep_resume_state: bool = False,
    subsets: list[tuple[str, ...]] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    ray_cpus_per_run: float = 1.0,
    ray_gpus_per_run: float = 1.0,
) -> Experiment:
    """Store the experiment and one queued run per subset (plus the baselines if asked).

    `subsets` (powerbert.subsets.select_subsets) defaults to the whole power set. The
    declarations of the tasks that are not built in go with it, so every process that reads
    the experiment knows them (powerbert.tasks.register_declarations)."""
    name = name or default_name(config.tasks)
    out_dir = Path(out_root).expanduser().resolve() / name
    config = absolute_paths(config)
    # The folder first: a read-only or full disk is refused, naming the folder, before anything
    # is stored (else a queued experiment with nowhere to write would be left behind).
    make_private_dirs(out_dir)
    os.chmod(out_dir, 0o700)  # also when it was there already: it will hold configs and logs
    stored = {
        "train": config.to_dict(),
        "profile": profile,
        "launch": {"gpus": gpus, "runs_per_gpu": runs_per_gpu, "max_parallel": max_parallel, "keep_resume_state": keep_resume_state,
                   "backend": backend,
                   **({"ray_address": ray_address, "ray_cpus_per_run": ray_cpus_per_run, "ray_gpus_per_run": ray_gpus_per_run}
                      if backend == "ray" else {})},
        "declared_tasks": declarations_of(config.tasks),
    }
    experiment = store.create_experiment(name, config.tasks, stored, str(out_dir), subsets or power_set(config.tasks))
    if baselines:
        add_baselines(store, experiment)
    return store.get_experiment(experiment.id)


def make_private_dirs(path: Path) -> None:
    """mkdir -p where every folder created is 0700 (Path.mkdir(parents=True) gives the parents
    0777 minus the umask, 0755 under the usual 022); an error names the folder."""
    path = Path(path)
    missing = []
    folder = path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        for created in reversed(missing):
            try:
                os.mkdir(created, 0o700)
            except FileExistsError:
                continue  # made by another process a moment ago
            os.chmod(created, 0o700)
        if not path.is_dir():
            raise ExperimentError(f"{path}: not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ExperimentError(f"{path}: folder is not writable")
    except OSError as exc:
        raise ExperimentError(f"{exc.filename or path}: cannot create the folder: {exc.strerror}") from exc


def add_baselines(store: Store, experiment: Experiment) -> list[Run]:
    """The paper's frozen and naive baselines as extra queued runs on all the tasks."""
    from powerbert.runner.baselines import BASELINE_KINDS

    added = []
    existing = {(r.subset, r.kind) for r in store.runs(experiment.id)}
    for kind in BASELINE_KINDS:
        if (subset_name(experiment.tasks), kind) not in existing:
            added += store.add_runs(experiment.id, [experiment.tasks], kind)
    return added


def supervisor_alive(experiment: Experiment) -> bool:
    return is_same_process(experiment.supervisor_pid, experiment.supervisor_start_time)


def start_supervisor(db_path: Path | str, experiment: Experiment) -> int:
    """Start the experiment's supervisor, detached: own session, no pipes to the caller."""
    log_path = Path(experiment.out_dir) / "supervisor.log"
    make_private_dirs(log_path.parent)
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:  # a read-only or full disk: one line naming the file
        raise ExperimentError(f"{log_path}: cannot write the supervisor's log: {exc.strerror}") from exc
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "powerbert.runner.supervisor", "--db", str(Path(db_path).resolve()), "--experiment", str(experiment.id)],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    finally:
        os.close(fd)
    return proc.pid


def launch(db_path: Path | str, store: Store, experiment: Experiment) -> int | None:
    """Start a supervisor unless a live one already runs this experiment; its pid or None.

    The experiment says running first, then the supervisor is looked for: a live one takes the
    queued runs, even one that was ending (its final write refuses while runs are queued and the
    experiment is running: Store.end_experiment); one that has ended has cleared its pid."""
    store.update_experiment(experiment.id, status=ExperimentStatus.RUNNING)
    if supervisor_alive(store.get_experiment(experiment.id)):
        return None
    try:
        return start_supervisor(db_path, store.get_experiment(experiment.id))
    except BaseException:
        store.update_experiment(experiment.id, status=experiment.status)  # not "running" with no supervisor
        raise


def names_one_run(store: Store, key: str) -> bool:
    """Whether a key names one run ('EXPERIMENT/subset', or a run id that is no experiment's)."""
    return "/" in key or (key.isdigit() and not _experiment_exists(store, key))


def resolve(store: Store, key: str) -> tuple[Experiment, list[Run]]:
    """An 'EXPERIMENT' or 'EXPERIMENT/subset' (or run id) key: the experiment and the runs meant."""
    if names_one_run(store, key):
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
    signalled, remote = [], []
    on_ray = experiment.config.get("launch", {}).get("backend") == "ray"
    for run in runs:
        if run.status == RunStatus.QUEUED:
            store.finish_run(run.id, RunStatus.STOPPED, error="stopped before it started", expect=RunStatus.QUEUED)
        elif run.status == RunStatus.RUNNING and on_ray and not supervisor_alive(experiment):
            # No supervisor: no actor trains it any more (Ray ended them with their driver).
            store.finish_run(run.id, RunStatus.STOPPED, error="stopped; no supervisor was running it", expect=RunStatus.RUNNING)
        elif run.status == RunStatus.RUNNING and on_ray:
            # Its actor answers to the supervisor only: the status tells the supervisor, which
            # asks the actor to checkpoint and stop, and kills it after the grace period.
            store.update_run(run.id, status=RunStatus.STOPPED)
            remote.append(run)
        elif run.status == RunStatus.RUNNING:
            if signal_run(run, signal.SIGTERM):
                signalled.append(run)
            else:
                # No live worker to ask: the status itself tells a worker that is starting up.
                store.update_run(run.id, status=RunStatus.STOPPED)
    asked = list(signalled)
    deadline = time.monotonic() + grace_s
    while wait and signalled and time.monotonic() < deadline:
        signalled = [r for r in signalled if is_same_process(r.pid, r.pid_start_time)]
        time.sleep(0.2)
    for run in signalled if wait else []:
        signal_run(run, signal.SIGKILL)
        store.finish_run(run.id, RunStatus.STOPPED, error=f"killed after {grace_s:.0f} s without stopping", expect=RunStatus.RUNNING)
    for run in asked if wait else []:
        kill_stragglers(run)
    # A remote run has ended when the supervisor has written its end (the grace period is the
    # supervisor's to enforce; a little longer here for its last poll).
    deadline = time.monotonic() + grace_s + 5.0
    while wait and remote and time.monotonic() < deadline:
        remote = [r for r in remote if store.get_run(r.id).ended_at is None and supervisor_alive(store.get_experiment(experiment.id))]
        time.sleep(0.2)
    return [store.get_run(r.id) for r in runs]


def kill_stragglers(run: Run) -> list[int]:
    """SIGKILL what the worker started that outlived it (a child that ignored SIGTERM): the
    processes of the worker's session that started no earlier than the worker itself. The
    start-time test keeps an unrelated process that was handed a reused id out of it.

    By session, not `psutil.Process(worker).children(recursive=True)`: the worker is dead by
    now, and its children have been handed to init, so no process lists them as children."""
    if run.pid is None or run.pid_start_time is None:
        return []
    members = [pid for pid, started in _session_members(run.pid) if started >= run.pid_start_time - START_TIME_TOLERANCE_S]
    if run.pid in members:
        return []  # the worker itself still runs (and may yet stop its children)
    killed = []
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def _session_members(session: int) -> Iterator[tuple[int, float]]:
    """(pid, start time) of every live process of session `session`; zombies are left out."""
    for pid in psutil.pids():
        try:
            if os.getsid(pid) != session:  # psutil does not report the session id
                continue
        except OSError:
            continue  # gone since the listing, or not ours to ask about
        started = process_start_time(pid)
        if started is not None:
            yield pid, started


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
        store.requeue_run(run.id)
    experiment = store.get_experiment(experiment.id)
    launch(db_path, store, experiment)
    return experiment, [store.get_run(r.id) for r in runs]
