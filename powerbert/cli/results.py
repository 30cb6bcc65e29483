"""`powerbert ensemble / report`: the commands over an experiment's stored results.

Thin like the rest of the CLI: parse, call powerbert.results, print.
"""

from __future__ import annotations

import io
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from powerbert.cli.app import DbOpt, ExperimentArg, command, console, err_console, open_store, pick_experiment
from powerbert.errors import ExperimentError
from powerbert.results import DEFAULT_SCHEME


class ReportFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


def _check_scheme(scheme: str) -> str:
    from powerbert.results.ensemble import SCHEMES

    if scheme not in SCHEMES:
        raise typer.BadParameter(f"unknown scheme '{scheme}': expected one of {', '.join(SCHEMES)}")
    return scheme


SchemeOpt = Annotated[str, typer.Option("--scheme", callback=_check_scheme, help="The ensemble whose errors the charts show: voting, weighted, single or learned.")]


# ---- ensemble ------------------------------------------------------------------------------


@command
def ensemble(experiment: ExperimentArg = None, db: DbOpt = Path("runs.db")) -> None:
    """Evaluate every ensemble scheme from the stored dev outputs, store the scores, print them.

    No model is run. Runs that failed or have not finished are left out: each ensemble uses the models it has, and the output names those missing.
    """
    from powerbert.results.evaluate import ensemble_experiment
    from powerbert.results.report import build_report, render_table
    from powerbert.store import RunStatus

    with open_store(db) as store:
        exp = pick_experiment(store, experiment)
        runs = store.runs(exp.id, kind="powerset")
        if not any(r.status == RunStatus.FINISHED for r in runs):
            states = ", ".join(f"{r.subset} {r.status}" for r in runs) or "none"
            raise ExperimentError(f"experiment '{exp.name}' has no finished run yet, nothing to ensemble (runs: {states})")
        outcomes = ensemble_experiment(store, exp.id)
    used = {m for o in outcomes for m in o.members}
    missing = [r for r in runs if r.subset not in used]
    console.print(render_table(build_report(exp.name, exp.tasks, {}, {}, outcomes)))
    line = f"{len(used)} of {len(runs)} models in the ensembles"
    if missing:
        line += "; missing: " + ", ".join(f"{r.subset} ({r.status})" for r in missing)
    console.print(line, style="yellow" if missing else None, highlight=False, soft_wrap=True)
    console.print(f"stored in {db}; the full report: powerbert report {exp.name}", style="dim", highlight=False, soft_wrap=True)


# ---- report --------------------------------------------------------------------------------


@command
def report(
    experiment: ExperimentArg = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="table (with the error charts), markdown (charts as a text block), csv (the table), or json (table, weights and the error analysis).")] = ReportFormat.table,
    scheme: SchemeOpt = DEFAULT_SCHEME,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also train the paper's two baselines (frozen encoder; naive multitask) as extra runs, in the background; re-run report when they finish.")] = False,
    db: DbOpt = Path("runs.db"),
) -> None:
    """The results table (every model and every ensemble on dev, best marked) and the error
    analysis of one ensemble (the paper's figures 2 and 3)."""
    from powerbert.results import report as render
    from powerbert.results.evaluate import experiment_report

    # Machine-readable formats keep stdout clean: messages go to stderr.
    say = console if fmt == ReportFormat.table else err_console
    with open_store(db, reader=not baselines) as store:
        exp = pick_experiment(store, experiment)
        if baselines:
            _start_baselines(store, exp, db, say)
        data = experiment_report(store, exp, scheme)
    if fmt == ReportFormat.table:
        console.print(render.render_table(data))
        console.print()
        console.print(render.render_charts(data))
    elif fmt == ReportFormat.markdown:
        charts = _plain_text(render.render_charts(data))
        typer.echo(render.to_markdown(data) + f"\n### Error analysis · {scheme} ensemble\n\n```\n{charts}```\n", nl=False)
    elif fmt == ReportFormat.csv:
        typer.echo(render.to_csv(data), nl=False)
    else:
        typer.echo(render.to_json(data))


def _start_baselines(store, exp, db: Path, say: Console) -> None:
    from powerbert.runner import experiments
    from powerbert.store import RunStatus, run_label

    added = experiments.add_baselines(store, exp)
    runs = [r for r in store.runs(exp.id) if r.kind != "powerset"]
    waiting = [r for r in runs if r.status in (RunStatus.QUEUED, RunStatus.RUNNING)]
    broken = [r for r in runs if r.status in (RunStatus.FAILED, RunStatus.LOST, RunStatus.STOPPED)]
    names = lambda rs: ", ".join(run_label(r.subset, r.kind) for r in rs)  # noqa: E731
    if waiting:
        # Said before anything starts: this trains two more models, minutes to hours of compute.
        verb = "adding and training" if added else "training"
        say.print(f"baselines {names(waiting)}: {verb} {len(waiting)} more model{'s' if len(waiting) != 1 else ''} "
                  f"in the background, as long as a run each.", highlight=False, soft_wrap=True)
        pid = experiments.launch(db, store, store.get_experiment(exp.id))
        how = f"supervisor pid {pid}" if pid else "the experiment's running supervisor"
        say.print(f"started ({how}). Re-run `powerbert report {exp.name}` when they finish "
                  f"(follow with `powerbert watch {exp.name}`).", highlight=False, soft_wrap=True)
    if broken:
        say.print(f"baselines {names(broken)} ended without finishing: `powerbert resume {exp.name}` retries them.", style="yellow", highlight=False, soft_wrap=True)


def _plain_text(renderable, width: int = 100) -> str:
    out = Console(file=io.StringIO(), record=True, width=width, color_system=None)
    out.print(renderable)
    return out.export_text()


# ---- predict -------------------------------------------------------------------------------


