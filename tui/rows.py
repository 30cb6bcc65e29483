"""Table cells and status lines, built in the fetch workers from what was read.

The status colours, durations, ETA, resume steps, nodes and run names are the ones the CLI
shows too (powerbert.views, powerbert.store.run_label); rich's Text is what the tables take.
Failed and lost runs stand out twice, in the status colour and with a '!' before their name,
so they show even where colour is lost. Epochs read from 1: the epoch being trained.

Only the fetch workers call these: run_detail reads resume checkpoints' headers from disk.
"""

from __future__ import annotations

import time

from rich.text import Text

from powerbert.store import Experiment, Run, RunStatus, run_label
from powerbert.views import STATUS_STYLE, ExperimentSummary, eta_seconds, fmt_duration, resume_step, short_node

PROBLEM = (RunStatus.FAILED, RunStatus.LOST)
MARK = "●"


def status_text(status) -> Text:
    return Text(str(status), style=STATUS_STYLE.get(str(status), ""))


def elapsed(run: Run, now: float) -> float | None:
    """Like Run.elapsed (every attempt added up), against the dashboard's clock (so tests can
    freeze it). A queued run shows what its earlier attempts trained, if any."""
    if run.started_at is None or run.status == RunStatus.QUEUED:
        return run.earlier_elapsed or None
    return run.earlier_elapsed + max(0.0, (run.ended_at if run.ended_at is not None else now) - run.started_at)


def current_epoch(run: Run) -> int | None:
    """The epoch being trained, counted from 1. The store's epoch counts the epochs completed
    (the worker records int(step / steps per epoch)), so a run in its first epoch has 0 there;
    a run that has done all its steps shows its last epoch."""
    if run.epoch is None:
        return None
    done = run.status == RunStatus.FINISHED or (run.total_steps and run.step is not None and run.step >= run.total_steps)
    return run.epoch if done else run.epoch + 1


def _num(value: float | None, digits: int = 3) -> Text:
    return Text("-" if value is None else f"{value:.{digits}f}", justify="right")


def run_cells(run: Run, tasks: tuple[str, ...], now: float, start_step: int | None = None, node: bool = False) -> list[Text]:
    """run, status, device, the node if `node` (powerbert.views.shows_node), epoch and step, loss,
    best dev score per task, best overall, elapsed, ETA (`start_step`: where this attempt
    started, see powerbert.views.attempt_start_step)."""
    problem = run.status in PROBLEM
    label = run_label(run.subset, run.kind)
    name = Text(("! " if problem else "") + label, style=STATUS_STYLE[str(run.status)] if problem else "")
    step = f"{run.step or 0}/{run.total_steps}" if run.total_steps else "-"
    epoch = current_epoch(run)
    epoch = "-" if epoch is None else str(epoch)
    scores = []
    for task in tasks:
        if task in (run.best_scores or {}):
            scores.append(_num(run.best_scores[task]))
        else:
            scores.append(Text("" if task in run.tasks else "·", justify="right", style="dim"))
    return [
        name, status_text(run.status), Text(run.device or "-"), *([Text(short_node(run))] if node else []),
        Text(f"{epoch} {step}", justify="right"),
        _num(run.loss), *scores, _num(run.best_overall, 4),
        Text(fmt_duration(elapsed(run, now)), justify="right"),
        Text(fmt_duration(eta_seconds(run, now, start_step)), justify="right"),
    ]


def run_detail(run: Run, epochs: int | None = None, start_step: int | None = None) -> Text:
    """The line under the table for the selected run: where it is (epoch of `epochs`, step),
    where this attempt started (`start_step`), its best score on each of its tasks and overall
    (a narrow runs table leaves score columns out), why a run failed or was lost, and the step
    that resuming a stopped, failed or lost run continues from."""
    text = Text()
    text.append(run_label(run.subset, run.kind), style="bold")
    text.append("  ")
    text.append_text(status_text(run.status))
    epoch = current_epoch(run)
    if epoch is not None and run.status != RunStatus.QUEUED:
        where = f"epoch {epoch}" + (f" of {epochs}" if epochs else "")
        if run.step is not None and run.total_steps:
            where += f", step {run.step} of {run.total_steps}"
        text.append(f"  {where}")
    if run.attempt > 1:
        # Elapsed and ETA are this attempt's: the store keeps no start or end of earlier ones.
        since = f" from step {start_step}" if start_step is not None and run.status == RunStatus.RUNNING else ""
        text.append(f"  attempt {run.attempt}{since}", style="dim")
    best = [(task, run.best_scores[task]) for task in run.tasks if task in (run.best_scores or {})]
    if len(run.tasks) > 1 and run.best_overall is not None:
        best.append(("overall", run.best_overall))
    if best:
        # Every task's score: a narrow runs table leaves some of its score columns out.
        text.append("  best " + "  ".join(f"{name} {value:.{4 if name == 'overall' else 3}f}" for name, value in best))
    elif run.best_overall is not None:
        text.append(f"  best overall {run.best_overall:.4f}")
    if run.status in PROBLEM:
        text.append(f"  {run.error or 'no reason recorded'}", style=STATUS_STYLE[str(run.status)])
    elif run.error and run.status != RunStatus.FINISHED:
        text.append(f"  {run.error}", style="yellow")
    if run.status in (*PROBLEM, RunStatus.STOPPED):
        step = resume_step(run)
        if step is not None:
            text.append(f"  resumes from step {step} (r)", style="bold")
        elif run.step:
            text.append("  no resume checkpoint: r restarts it from step 0", style="dim")
    return text


def experiment_line(experiment: Experiment, runs: list[Run], supervisor_alive: bool) -> Text:
    """Name, status, run counts, and what needs attention (no supervisor, an error)."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[str(run.status)] = counts.get(str(run.status), 0) + 1
    text = Text()
    text.append(experiment.name, style="bold")
    text.append("  ")
    text.append_text(status_text(experiment.status))
    text.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()), style="dim")
    active = any(r.status in (RunStatus.RUNNING, RunStatus.QUEUED) for r in runs)
    if active and not supervisor_alive:
        text.append("  no supervisor is running: R resumes", style="bold yellow")
    if experiment.error:
        text.append(f"  {experiment.error}", style="red")
    return text


def model_name(config: dict) -> str:
    model = (config.get("train") or {}).get("model")
    if model in (None, "", "default"):
        return "MiniLM"
    return str(model).rstrip("/").split("/")[-1][:24]


def experiment_cells(summary: ExperimentSummary, marked: bool) -> list[Text]:
    """mark, name, tasks, model, status, runs finished/all, started, best overall."""
    exp = summary.experiment
    started = time.strftime("%m-%d %H:%M", time.localtime(exp.started_at or exp.created_at))
    return [
        Text(MARK if marked else " ", style="bold cyan"),
        Text(exp.name),
        Text(",".join(exp.tasks)),
        Text(model_name(exp.config)),
        status_text(exp.status),
        Text(f"{summary.done}/{summary.total}", justify="right"),
        Text(started),
        _num(summary.best, 4),
    ]
