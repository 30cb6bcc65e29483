"""What both front ends show of runs.db: status colours, durations and ETA, an experiment's
best overall score, and experiment summaries.

The CLI's tables (powerbert.cli.live) and the dashboard (tui/) both draw from here, so the two
never disagree. Reads runs.db through the store only: no torch, no scipy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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


def eta_seconds(run: Run, now: float | None = None) -> float | None:
    """Remaining time from this attempt's pace; None until there is a pace to go by."""
    if run.status != RunStatus.RUNNING or not run.total_steps or not run.step or run.started_at is None:
        return None
    now = time.time() if now is None else now
    # started_at is this attempt's start, so after a resume the pace reads optimistic at first.
    rate = run.step / max(1e-9, now - run.started_at)
    return (run.total_steps - run.step) / rate if rate > 0 else None


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
