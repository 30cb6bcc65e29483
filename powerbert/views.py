"""What both front ends show of runs.db: status colours, durations and ETA, the node a run
trains on, an experiment's best overall score, and experiment summaries.

The CLI's tables (powerbert.cli.live) and the dashboard (tui/) both draw from here, so the two
never disagree. Reads runs.db through the store only: no torch, no scipy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from powerbert.store import Experiment, Run, RunStatus, Store, run_label
from powerbert.tasks import overall_score

STATUS_STYLE = {
    "queued": "dim", "running": "bold cyan", "finished": "green", "failed": "bold red",
    "stopped": "yellow", "lost": "bold magenta",
}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


NODE_DIGITS = 8  # of a Ray node id's 56 hex digits: enough to tell a cluster's nodes apart


def shows_node(experiment: Experiment, runs: list[Run]) -> bool:
    """Whether the runs table has a node column: on the Ray backend (from the start, while
    every run is still queued, so the columns stay put when runs are placed), or where a run
    has a node; never for a local experiment."""
    launch = (experiment.config or {}).get("launch") or {}
    return launch.get("backend") == "ray" or any(run.node for run in runs)


def short_node(run: Run) -> str:
    """The node a run trains on, as the tables show it: its id's first hex digits; '-' for none."""
    return run.node[:NODE_DIGITS] if run.node else "-"


def eta_seconds(run: Run, now: float | None = None, start_step: int | None = None) -> float | None:
    """Remaining time from this attempt's pace: the steps trained since it started over the time
    since; None until there is a pace to go by.

    `start_step` is the step this attempt started from (`attempt_start_step`). started_at is this
    attempt's start, so after a resume counting from step 0 would credit this attempt with the
    earlier attempts' steps (32/50 a minute after resuming at 30 read as 0:12 left, not 9:00).
    Without it a first attempt counts from 0 and a resumed one has no pace yet (None)."""
    if run.status != RunStatus.RUNNING or not run.total_steps or not run.step or run.started_at is None:
        return None
    if start_step is None:
        if run.attempt > 1:
            return None
        start_step = 0
    done = run.step - start_step
    if done <= 0:
        return None
    now = time.time() if now is None else now
    rate = done / max(1e-9, now - run.started_at)
    return max(0, run.total_steps - run.step) / rate


def attempt_start_step(store: Store, run: Run) -> int | None:
    """The step this attempt of a running run started from: 0 for a first attempt; after a
    resume, the last step whose metric rows were written before this attempt started (a resume
    drops the rows after its checkpoint's step, so that is the checkpoint's step; an attempt
    that found no checkpoint dropped them all, so 0). None when it cannot be told.

    A run's metric ids grow with time, so the rows written before this attempt are the first
    ones by id: their last one is found by bisecting over ids, one indexed read (the first row
    after an id) per probe, so the cost grows with the log of the row count."""
    if run.started_at is None:
        return None
    if run.attempt <= 1:
        return 0
    started = run.started_at

    def first_after(after_id: int):
        rows = store.metrics(run.id, after_id, ("loss",), limit=1)
        return rows[0] if rows else None

    def before(row) -> bool:
        return row is not None and row.time < started

    last = first_after(0)
    if not before(last):
        return 0
    # Gallop to an id past the last earlier row, then bisect between: `last` is always an
    # earlier row, and no earlier row has an id above `high`.
    jump = 1
    while before(row := first_after(last.id + jump - 1)):
        last, jump = row, jump * 2
    high = last.id + jump - 1
    while last.id < high:
        middle = (last.id + high) // 2
        row = first_after(middle)
        if before(row):
            last = row
        else:
            high = middle
    return int(last.step or 0)


def best_overall(store: Store, experiment: Experiment) -> tuple[str, float] | None:
    """The experiment's best overall score over every task, and who has it: an ensemble scheme
    or a run trained on all the tasks. Runs on fewer tasks do not compete (their "overall"
    averages fewer tasks)."""
    candidates: dict[str, float] = {}
    by_scheme: dict[str, dict[str, float]] = {}
    for result in store.ensemble_results(experiment.id):
        if result.score is not None:
            by_scheme.setdefault(result.scheme, {})[result.task] = result.score
    for scheme, scores in by_scheme.items():
        if set(scores) >= set(experiment.tasks):
            candidates[scheme] = overall_score({t: scores[t] for t in experiment.tasks})
    for run in store.runs(experiment.id):
        if set(run.best_scores or {}) >= set(experiment.tasks) and run.best_overall is not None:
            candidates[run_label(run.subset, run.kind)] = run.best_overall
    if not candidates:
        return None
    name = max(candidates, key=candidates.get)
    return name, candidates[name]


@dataclass
class ExperimentSummary:
    experiment: Experiment
    done: int  # finished runs
    total: int
    best: float | None  # best overall dev score over every task: an ensemble or an all-task run


def experiment_summaries(store: Store) -> list[ExperimentSummary]:
    """Every experiment, newest first, with its run counts and best overall score."""
    summaries = []
    for experiment in store.list_experiments():
        runs = store.runs(experiment.id)
        found = best_overall(store, experiment)
        best = found[1] if found else None
        done = sum(r.status == RunStatus.FINISHED for r in runs)
        summaries.append(ExperimentSummary(experiment, done, len(runs), best))
    return summaries


def resume_step(run: Run) -> int | None:
    """The step a stopped, failed or lost run resumes from: its resume checkpoint's, read from
    the file's header alone (no torch, no weights); None when it has none (it restarts at 0)."""
    from powerbert.errors import CheckpointError
    from powerbert.model.checkpoint import read_metadata

    if run.status not in (RunStatus.STOPPED, RunStatus.FAILED, RunStatus.LOST) or not run.out_dir:
        return None
    path = Path(run.out_dir) / "last.safetensors"
    if not path.exists():
        return None
    try:
        return int(read_metadata(path)["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
