"""The CLI's rich tables: the runs table of `powerbert run / status / watch` and `powerbert list`.

`follow` redraws it in place until the experiment ends (or Ctrl-C detaches). Reading marks
runs whose worker vanished as lost, so the table never shows a dead run as running.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from powerbert.runner.cleanup import fmt_bytes, tree_bytes
from powerbert.runner.liveness import reconcile
from powerbert.store import Experiment, Run, RunStatus, Store, run_label
from powerbert.views import (
    STATUS_STYLE,
    attempt_start_step,
    eta_seconds,
    experiment_summaries,
    fmt_duration,
    resume_step,
    short_node,
    shows_node,
)


def overall_cell(experiment: Experiment, run: Run) -> str:
    # As in the report: the overall score is only comparable for runs that cover every task
    # (a single-task sts run's selection score, (r + 1) / 2, would read as a higher "overall").
    if run.best_overall is None:
        return "-"
    return f"{run.best_overall:.3f}" if set(run.tasks) >= set(experiment.tasks) else "·"


def runs_table(experiment: Experiment, runs: list[Run], start_steps: dict[int, int | None] | None = None,
               width: int | None = None) -> Table:
    """The runs table; `start_steps`: the step each running run's attempt started from (ETA).

    Within `width` columns (the terminal's), per-task score columns that do not fit are left
    out, last task first, then the node column (Ray runs), and the caption says which: no cell
    is ever cut (`finish…`)."""
    from rich.console import Console
    from rich.measure import Measurement

    shown = list(experiment.tasks)
    node = shows_node(experiment, runs)
    while True:
        table = _runs_table(experiment, runs, start_steps or {}, shown, node)
        if width is None or not (shown or node):
            return table
        probe = Console(width=10_000)
        if Measurement.get(probe, probe.options, table).maximum <= width:
            return table
        # The node says where a run trains: worth more than a score the caption points to.
        if shown:
            shown.pop()
        else:
            node = False


def _runs_table(experiment: Experiment, runs: list[Run], start_steps: dict, shown: list[str], node: bool = False) -> Table:
    left_out = [t for t in experiment.tasks if t not in shown]
    hidden = [f"scores of {', '.join(left_out)}"] if left_out else []
    if not node and shows_node(experiment, runs):
        hidden.append("nodes")
    caption = f"{' and the '.join(hidden)}: a wider terminal, or powerbert status --json" if hidden else None
    # A light box and one space of padding keep seven runs and three tasks inside 80 columns.
    table = Table(title=f"{experiment.name} — {experiment.status}", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0),
                  show_edge=False, caption=caption, caption_justify="left")
    for header in ("run", "status", "device", *(("node",) if node else ()), "step", "loss", *shown, "overall", "time", "ETA"):
        table.add_column(header, no_wrap=True, justify="left" if header in ("run", "status", "device", "node") else "right")
    for run in runs:
        step = f"{run.step or 0}/{run.total_steps}" if run.total_steps else "-"
        scores = [
            f"{run.best_scores[t]:.3f}" if t in (run.best_scores or {}) else ("" if t in run.tasks else "·")
            for t in shown
        ]
        table.add_row(
            run_label(run.subset, run.kind), Text(str(run.status), style=STATUS_STYLE.get(str(run.status), "")),
            run.device or "-", *((short_node(run),) if node else ()), step,
            f"{run.loss:.3f}" if run.loss is not None else "-", *scores,
            overall_cell(experiment, run),
            fmt_duration(run.elapsed), fmt_duration(eta_seconds(run, start_step=start_steps.get(run.id))),
        )
    return table


def problems(runs: list[Run]) -> list[Text]:
    """One line per failed, lost or stopped run: why, where its log is, and where it resumes."""
    lines = []
    for run in runs:
        if run.status not in (RunStatus.FAILED, RunStatus.LOST, RunStatus.STOPPED):
            continue
        step = resume_step(run)
        resumes = f"; resumes from step {step}" if step is not None else "; no checkpoint yet: resume restarts it from step 0"
        if run.status == RunStatus.STOPPED:
            lines.append(Text(f"{run_label(run.subset, run.kind)} stopped{resumes}", style=STATUS_STYLE["stopped"]))
            continue
        where = f" (log: {run.out_dir}/worker.log)" if run.out_dir else ""
        lines.append(Text(f"{run_label(run.subset, run.kind)} {run.status}: {run.error or 'no reason recorded'}{where}{resumes}", style=STATUS_STYLE[str(run.status)]))
    return lines


def snapshot(store: Store, experiment_key: str | int, width: int | None = None) -> tuple[Experiment, list[Run], Group]:
    """The experiment, its runs (dead workers marked lost) and the view: table and problems."""
    experiment = store.get_experiment(experiment_key)
    runs = reconcile(store, experiment.id)
    experiment = store.get_experiment(experiment.id)
    starts = {r.id: attempt_start_step(store, r) for r in runs if r.status == RunStatus.RUNNING}
    return experiment, runs, Group(runs_table(experiment, runs, starts, width), *problems(runs))


def follow(store: Store, experiment_key: str | int, console: Console, refresh_s: float = 1.0) -> Experiment:
    """Show the runs until the experiment reaches a final status; return it.

    On a terminal the table redraws in place. Piped or redirected (a log file, `| tee`), a live
    display would print nothing until the end: instead each change of a run (status, epoch, a
    new best score) prints one timestamped line as it happens, then the final table."""
    experiment, runs, view = snapshot(store, experiment_key, console.width)
    if not console.is_terminal:
        return _follow_as_lines(store, experiment, runs, console, refresh_s)
    with Live(view, console=console, refresh_per_second=4, transient=False) as live:
        while not experiment.status.is_terminal:
            time.sleep(refresh_s)
            experiment, runs, view = snapshot(store, experiment.id, console.width)
            live.update(view)
    return experiment


def run_line(run: Run) -> str:
    """One line for a run's state, as the piped `follow` prints it."""
    parts = [f"{run_label(run.subset, run.kind)}: {run.status}"]
    if run.total_steps:
        parts.append(f"step {run.step or 0}/{run.total_steps}")
    if run.epoch:
        parts.append(f"epoch {run.epoch}")
    if run.best_scores:
        parts.append("best " + " ".join(f"{t} {v:.3f}" for t, v in run.best_scores.items()))
    if run.status in (RunStatus.FAILED, RunStatus.LOST) and run.error:
        parts.append(run.error)
    return ", ".join(parts)


def _follow_as_lines(store: Store, experiment: Experiment, runs: list[Run], console: Console, refresh_s: float) -> Experiment:
    seen: dict[int, tuple] = {}
    while True:
        for run in runs:
            state = (run.status, run.epoch, tuple(sorted((run.best_scores or {}).items())))
            if seen.get(run.id) != state:
                seen[run.id] = state
                console.print(f"{time.strftime('%H:%M:%S')} {run_line(run)}", highlight=False, soft_wrap=True)
        if experiment.status.is_terminal:
            break
        time.sleep(refresh_s)
        experiment, runs, _ = snapshot(store, experiment.id)
    console.print(Group(runs_table(experiment, runs, width=console.width), *problems(runs)))
    return experiment


EXPERIMENT_COLUMNS = ("name", "tasks", "model", "profile", "status", "runs", "started", "best", "disk")
OPTIONAL_EXPERIMENT_COLUMNS = ("model", "profile", "started", "tasks")  # left out first, in this order, when narrow


def experiments_table(store: Store, width: int | None = None) -> Table:
    """`powerbert list`: one row per experiment; within `width` the least needed columns are
    left out rather than any cell cut."""
    from rich.console import Console
    from rich.measure import Measurement

    rows = []
    for summary in experiment_summaries(store):
        exp = summary.experiment
        rows.append({
            "name": exp.name, "tasks": ",".join(exp.tasks), "model": _model_name(exp), "profile": exp.config.get("profile", "-"),
            "status": Text(str(exp.status), style=STATUS_STYLE.get(str(exp.status), "")), "runs": f"{summary.done}/{summary.total}",
            "started": time.strftime("%m-%d %H:%M", time.localtime(exp.started_at or exp.created_at)),
            "best": f"{summary.best:.4f}" if summary.best is not None else "-", "disk": fmt_bytes(tree_bytes(exp.out_dir)),
        })
    shown = list(EXPERIMENT_COLUMNS)
    for drop in (None, *OPTIONAL_EXPERIMENT_COLUMNS):
        if drop:
            shown.remove(drop)
        table = Table(title="experiments", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
        for col in shown:
            # Long names fold onto a second line rather than squeezing every other column.
            table.add_column(col, no_wrap=col != "name", overflow="fold" if col == "name" else "ellipsis", min_width=12 if col == "name" else None)
        for row in rows:
            table.add_row(*(row[c] for c in shown))
        probe = Console(width=10_000)
        if width is None or Measurement.get(probe, probe.options, table).maximum <= width:
            break
    return table


def _model_name(exp: Experiment) -> str:
    model = exp.config.get("train", {}).get("model")
    return "MiniLM" if model in (None, "", "default") else str(model).rstrip("/").split("/")[-1]


def status_json(experiment: Experiment, runs: list[Run]) -> dict:
    """`powerbert status --json`: the experiment and every run, for scripts."""
    from dataclasses import asdict

    def run_record(run: Run) -> dict:
        folder = Path(run.out_dir) if run.out_dir else None
        checkpoints = {
            name: str(folder / f"{name}.safetensors") if folder and (folder / f"{name}.safetensors").exists() else None
            for name in ("best", "last")
        }
        return {
            "id": run.id, "subset": run.subset, "kind": run.kind, "label": run_label(run.subset, run.kind),
            "status": str(run.status), "pid": run.pid, "host": run.host, "device": run.device,
            "node": run.node,
            "step": run.step, "total_steps": run.total_steps, "epoch": run.epoch, "loss": run.loss,
            "best_scores": run.best_scores, "best_overall": run.best_overall, "error": run.error,
            "started_at": run.started_at, "ended_at": run.ended_at, "attempt": run.attempt,
            "out_dir": run.out_dir, "checkpoints": checkpoints, "resumes_from_step": resume_step(run),
            "disk_bytes": tree_bytes(run.out_dir),
        }

    exp = asdict(experiment)
    exp["status"] = str(experiment.status)
    return {"experiment": exp, "runs": [run_record(r) for r in runs], "disk_bytes": tree_bytes(experiment.out_dir)}
