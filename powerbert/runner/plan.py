"""The cost of an experiment before it starts: one row per run, the wall time on the slots it
would use, and the disk it takes. `powerbert plan` prints it; `powerbert run` prints its total
and asks before starting one of over an hour.

Each estimate is built from measured figures (powerbert.training.calibrate), in the way a run
spends its time: a worker's start (imports, model, tokenising its rows), then per epoch its
steps (one batch of every task of the subset; a multitask step costs the sum of its tasks'
steps), the dev evaluation of each task, and the checkpoints. The runs are laid onto the slots
in queue order as the supervisor starts them, each slot taking the next run when it frees.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from powerbert.config import TrainConfig
from powerbert.tasks import subset_name
from powerbert.training.calibrate import Calibration, calibrate

SUPERVISOR_POLL_S = 1.0  # the supervisor looks for a free slot this often (runner/supervisor.py)
CHECKPOINTS_PER_EPOCH = 2  # the resume checkpoint and, usually, a best one


@dataclass
class RunEstimate:
    subset: str
    rows_per_epoch: dict[str, int]  # task -> training rows each epoch
    steps_per_epoch: int
    epochs: int
    seconds: float
    slot: str = ""
    starts_at: float = 0.0  # seconds after the experiment starts


@dataclass
class Plan:
    runs: list[RunEstimate]
    slots: list[str]
    wall_seconds: float
    disk_bytes: int  # what the experiment keeps when it has finished
    peak_disk_bytes: int  # while it trains (resume checkpoints of the runs that run at once)
    calibration: Calibration


def training_rows(config: TrainConfig, task: str) -> tuple[int, int, int]:
    """(training rows per epoch, training rows in the file, dev rows) of a task as a run reads
    them: it tokenises every row of its files, and trains on `max_train` of them each epoch."""
    from powerbert.data.files import load_split

    train = len(load_split(task, config.data_dir, "train", skip_bad_rows=True))
    dev = len(load_split(task, config.data_dir, "dev", skip_bad_rows=True))
    return (min(train, config.max_train) if config.max_train else train), train, dev


def plan_experiment(config: TrainConfig, subsets: list[tuple[str, ...]], launch: dict, *, keep_resume_state: bool = False,
                    on_message=lambda text: None) -> Plan:
    """Estimate every run of the experiment `config` would start with these subsets and slots."""
    from powerbert.runner.supervisor import device_slots

    if launch.get("backend") == "ray":
        # As many slots as the cluster's live nodes take runs at once; timed on this machine
        # with the run's own thread count (the nodes are assumed to be like the head).
        from powerbert.runner.cluster.nodes import joined, per_run_of
        from powerbert.runner.cluster.nodes import slots as cluster_slots

        per_run = per_run_of(launch)
        with joined(launch.get("ray_address")) as ray:
            slots = ["ray"] * max(1, cluster_slots(ray, per_run))
        threads = max(1, int(per_run.cpus))
    else:
        slots = [slot.label for slot in device_slots(launch)]
        threads = int(device_slots(launch)[0].env.get("POWERBERT_THREADS") or os.cpu_count() or 1)
    tasks = tuple(t for t in config.tasks if any(t in s for s in subsets))
    calibration = calibrate(config, tasks, threads, on_message)
    rows = {t: training_rows(config, t) for t in tasks}
    runs = []
    for subset in subsets:
        per_task = {t: rows[t][0] for t in subset}
        batches = [math.ceil(n / config.batch_size) for n in per_task.values()]
        steps = max(batches) if config.epoch_size == "max" else min(batches)
        timing = {t: calibration.tasks[t] for t in subset}
        step_s = sum(t.step_s for t in timing.values()) + calibration.surgery_seconds(len(subset))
        eval_s = sum(rows[t][2] * timing[t].eval_row_s for t in subset)
        tokenize_s = sum((rows[t][1] + rows[t][2]) * timing[t].tokenize_row_s for t in subset)
        checkpoint_s = CHECKPOINTS_PER_EPOCH * 4 * calibration.run_parameter_bytes(subset) / calibration.checkpoint_bytes_per_s
        # What runs.db will show as the run's elapsed time: from the worker marking it started.
        seconds = calibration.startup_s - calibration.prestart_s + tokenize_s + config.epochs * (steps * step_s + eval_s + checkpoint_s)
        runs.append(RunEstimate(subset_name(subset), per_task, steps, config.epochs, seconds))
    # The supervisor's own start (its imports and the settings check: much what a worker's
    # start costs) and, once every run has ended, the ensembles' evaluation.
    wall = calibration.startup_s + _schedule(runs, slots, calibration.prestart_s) + ensemble_seconds(tasks, {t: rows[t][2] for t in tasks}, subsets)
    # Each run's weights (the shared encoder and its own tasks' heads and top layers), and its
    # resume checkpoint: the weights and the optimizer's two moments.
    best = [calibration.run_parameter_bytes(subset) for subset in subsets]
    resume = sorted((3 * b for b in best), reverse=True)
    disk = sum(best) + (sum(resume) if keep_resume_state else 0)
    peak = sum(best) + sum(resume[: len(slots)])  # at most as many resume checkpoints as runs at once
    return Plan(runs, slots, wall, disk, max(peak, disk), calibration)


def _schedule(runs: list[RunEstimate], slots: list[str], prestart_s: float) -> float:
    """Lay the runs onto the slots in queue order, each free slot taking the next run (and
    holding it from the worker's start, `prestart_s` before the run's own elapsed time)."""
    free_at = [0.0] * len(slots)
    for run in runs:
        i = min(range(len(slots)), key=free_at.__getitem__)
        run.slot, run.starts_at = f"{slots[i]}#{i}" if slots.count(slots[i]) > 1 else slots[i], free_at[i]
        free_at[i] += prestart_s + run.seconds + SUPERVISOR_POLL_S
    return max(free_at) if runs else 0.0


def ensemble_seconds(tasks: tuple[str, ...], dev_rows: dict[str, int], subsets: list[tuple[str, ...]]) -> float:
    """How long evaluating every ensemble scheme takes for these tasks, dev sizes and members:
    measured by running the real evaluation (powerbert.results.ensemble) on outputs of those
    shapes (their values do not change the work), in this process."""
    import time

    import numpy as np

    from powerbert.outputs import TaskOutputs
    from powerbert.results.ensemble import evaluate_all
    from powerbert.tasks import TASKS

    rng = np.random.default_rng(0)
    gold = {}
    for task in tasks:  # one gold per task: the members of a task share its dev file
        n, spec = dev_rows[task], TASKS[task]
        gold[task] = rng.integers(0, max(spec.num_classes, 2), n).astype(float) if spec.kind != "regress" else rng.uniform(0, 1, n)
    dev = {}
    for subset in subsets:
        outputs = {}
        for task in subset:
            n, spec = dev_rows[task], TASKS[task]
            shape = (n, spec.num_classes) if spec.kind == "classify" else (n,)
            outputs[task] = TaskOutputs(task, [str(i) for i in range(n)], gold[task], rng.normal(size=shape))
        dev[subset_name(subset)] = outputs
    start = time.perf_counter()
    evaluate_all(dev, tasks, expected_models=[subset_name(s) for s in subsets])
    return time.perf_counter() - start
