"""Disk: what an experiment's folders hold, deleting an experiment or a run with its files, and
pruning the resume state of finished runs.

A run folder holds `best.*` (what prediction needs: the best epoch's weights and config),
`last.*` (what resuming needs: weights, optimizer and scheduler state, about three times the
size of best) and worker.log. Deleting never touches a path outside the experiment's own folder:
a run folder that lies elsewhere (edited by hand, say) keeps its files and is named instead.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from powerbert.errors import ExperimentError
from powerbert.runner.experiments import names_one_run, resolve, supervisor_alive
from powerbert.runner.liveness import reconcile
from powerbert.store import Experiment, Run, RunStatus, Store

RESUME_STATE = ("last.safetensors", "last.json")  # what resuming needs and prediction does not


def tree_bytes(path: str | Path | None) -> int:
    """Bytes of the regular files under `path` (0 when it does not exist); links not followed."""
    if not path or not os.path.isdir(path):
        return 0
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # removed while we looked
    return total


def resume_state_files(run: Run) -> list[Path]:
    if not run.out_dir:
        return []
    return [p for p in (Path(run.out_dir) / name for name in RESUME_STATE) if p.exists()]


def drop_resume_state(run: Run) -> int:
    """Remove a run's resume checkpoint; the bytes freed."""
    freed = 0
    for path in resume_state_files(run):
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        freed += size
    return freed


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies inside `folder` once both are resolved (links and '..' followed)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path != folder and folder in path.parents


@dataclass
class Deletion:
    """What a delete removed (or, before it runs, would remove)."""

    experiment: Experiment
    runs: list[Run]
    folders: list[Path] = field(default_factory=list)  # run folders inside the experiment's
    kept: list[str] = field(default_factory=list)  # folders outside it, left alone
    whole_experiment: bool = False
    bytes: int = 0


def plan_deletion(store: Store, key: str) -> Deletion:
    """What `delete key` would remove: an experiment (name or id) or one run (EXPERIMENT/SUBSET)
    with their run folders. Refused while anything in it runs."""
    whole = not names_one_run(store, key)
    experiment, runs = resolve(store, key)
    runs = [r for r in reconcile(store, experiment.id) if r.id in {x.id for x in runs}]
    running = [r.subset for r in runs if r.status == RunStatus.RUNNING]
    if running:
        raise ExperimentError(f"{key}: {', '.join(running)} {'is' if len(running) == 1 else 'are'} running: stop {'it' if len(running) == 1 else 'them'} first (powerbert stop {key})")
    if whole and supervisor_alive(experiment):
        raise ExperimentError(f"experiment '{experiment.name}' has a supervisor running (pid {experiment.supervisor_pid}): stop it first")
    plan = Deletion(experiment, runs, whole_experiment=whole)
    for run in runs:
        if not run.out_dir or not os.path.isdir(run.out_dir):
            continue
        if experiment.out_dir and inside(run.out_dir, experiment.out_dir):
            plan.folders.append(Path(run.out_dir))
            plan.bytes += tree_bytes(run.out_dir)
        else:
            plan.kept.append(run.out_dir)
    log = Path(experiment.out_dir) / "supervisor.log" if whole and experiment.out_dir else None
    if log is not None and log.is_file():
        plan.bytes += log.stat().st_size  # the only file of the experiment's own that goes too
    return plan


def delete(store: Store, plan: Deletion) -> Deletion:
    """Carry out a planned deletion: the rows first (so nothing points at missing files), then
    the run folders, then the experiment's own files (supervisor.log) and its folder if empty."""
    if plan.whole_experiment:
        store.delete_experiment(plan.experiment.id)
    else:
        for run in plan.runs:
            store.delete_run(run.id)
    for folder in plan.folders:
        shutil.rmtree(folder, ignore_errors=True)
    root = plan.experiment.out_dir
    if plan.whole_experiment and root and os.path.isdir(root):
        log = Path(root) / "supervisor.log"
        log.unlink(missing_ok=True)
        try:
            os.rmdir(root)  # only if empty: anything else in it is not ours to remove
        except OSError:
            pass
    return plan


@dataclass
class Pruned:
    runs: list[Run]
    bytes: int


def plan_prune(store: Store) -> Pruned:
    """The finished runs of experiments that are not running any more whose resume state is still
    on disk (a finished run never resumes: `best.*` is all that prediction needs)."""
    runs, total = [], 0
    for experiment in store.list_experiments():
        if not experiment.status.is_terminal:
            continue
        for run in store.runs(experiment.id):
            files = resume_state_files(run) if run.status == RunStatus.FINISHED else []
            if files:
                runs.append(run)
                total += sum(f.stat().st_size for f in files)
    return Pruned(runs, total)


def prune(plan: Pruned) -> int:
    return sum(drop_resume_state(run) for run in plan.runs)


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
