"""The `powerbert` command line: thin Typer commands that parse, call the library, and print.

Errors the user can fix (a bad file, a missing model, an unknown experiment) print one line and
exit 1; `powerbert --debug ...` shows the traceback instead.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from powerbert.errors import USER_ERRORS

app = typer.Typer(
    help="PowerBERT: train one BERT per subset of tasks (sst, para, sts), watch them, ensemble them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

# Options shared by several commands: one definition each, so help texts stay consistent.
TasksOpt = Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated tasks: sst, para, sts (and cfimdb).")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder of CS224N task files; default: the built-in demo data.", envvar="POWERBERT_DATA_DIR")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Hugging Face model id or local folder; default: the offline MiniLM BERT.", envvar="POWERBERT_MODEL")]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", help="Recipe to start from: demo, quick, paper, best. Default: demo without --data-dir, best with it.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Training epochs (overrides the profile).")]
MaxTrainOpt = Annotated[Optional[int], typer.Option("--max-train", min=0, help="Training rows per task per epoch, a fresh sample each epoch; 0 = all.")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Peak learning rate.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Rows per task per step.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (data order, dropout, heads).")]
SurgeryOpt = Annotated[Optional[str], typer.Option("--surgery", help="Multitask gradients: pcgrad (gradient surgery) or sum.")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad-rows", help="Skip malformed rows (reported with their lines) instead of stopping.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="bf16 (autocast) or fp32.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Any other recipe setting as KEY=VALUE, repeatable: e.g. --set para_head=bi --set pooling=cls --set warmup=0.06.")]


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.", envvar="POWERBERT_DEBUG")] = False,
) -> None:
    _state["debug"] = debug


def training_overrides(**given) -> dict:
    """Command-line values that override the profile (None = not given)."""
    tasks = given.pop("tasks", None)
    if tasks is not None:
        from powerbert.tasks import parse_tasks

        given["tasks"] = parse_tasks(tasks)
    # Stored paths must not depend on the folder a command runs in: the workers, the
    # dashboard and `powerbert predict` may all start elsewhere.
    if given.get("data_dir") is not None:
        given["data_dir"] = str(Path(given["data_dir"]).expanduser().resolve())
    model = given.get("model")
    if model and Path(model).expanduser().is_dir():
        given["model"] = str(Path(model).expanduser().resolve())
    if given.get("skip_bad_rows") is False:
        given["skip_bad_rows"] = None
    from powerbert.config import parse_settings

    given.update(parse_settings(given.pop("settings", None) or []))
    return given


def command(func=None, *, name: str | None = None):
    """Register a command whose user errors print one line and exit 1 (tracebacks with --debug)."""

    if func is None:
        return lambda f: command(f, name=name)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return app.command(name=name)(wrapper)


@command
def train(
    tasks: TasksOpt = "sst",
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    epochs: EpochsOpt = None,
    max_train: MaxTrainOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    seed: SeedOpt = None,
    surgery: SurgeryOpt = None,
    skip_bad_rows: SkipBadOpt = False,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    settings: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for this run's checkpoints (best.safetensors, best.json, last.safetensors).")] = Path("runs/train"),
) -> None:
    """Train one subset of tasks in the foreground and print the dev scores after each epoch.

    Example: powerbert train --tasks sst,para,sts --data-dir data/ --max-train 500 --epochs 1
    """
    from powerbert.profiles import default_profile, resolve_config
    from powerbert.progress import RichTrainProgress
    from powerbert.train import train_subset

    overrides = training_overrides(
        tasks=tasks, data_dir=data_dir, model=model, epochs=epochs, max_train=max_train, lr=lr,
        batch_size=batch_size, seed=seed, surgery=surgery, skip_bad_rows=skip_bad_rows, device=device,
        precision=precision, settings=settings,
    )
    profile = profile or default_profile(overrides.get("data_dir"))
    config = resolve_config(profile, overrides)
    from powerbert.data import check_data_dir

    check_data_dir(config.data_dir, config.tasks)
    where = config.data_dir or "the built-in demo data"
    console.print(f"training [bold]{'+'.join(config.tasks)}[/bold] on {where} -> {out}")
    surgery_note = f"; multitask gradients: {config.surgery}" if len(config.tasks) > 1 else ""
    recipe = f"recipe {profile}: lr {config.lr:g}, batch {config.batch_size}, {config.epochs} epoch{'s' if config.epochs != 1 else ''}{surgery_note}"
    with RichTrainProgress(console, recipe) as progress:
        result = train_subset(config, out, progress)
    scores = "  ".join(f"{t} {v:.4f}" for t, v in result.best_scores.items())
    console.print(f"best epoch {result.best_epoch}: {scores}  overall {result.best_overall:.4f}")
    console.print(f"checkpoint: {result.best_checkpoint}")


DbOpt = Annotated[Path, typer.Option("--db", help="The runs database.", envvar="POWERBERT_DB")]
ExperimentArg = Annotated[Optional[str], typer.Argument(help="Experiment name or id; default: the latest.", show_default=False)]


def open_store(db: Path):
    from powerbert.store import Store

    return Store(db)


def pick_experiment(store, key: str | None):
    if key is not None:
        return store.get_experiment(key)
    experiment = store.latest_experiment()
    if experiment is None:
        from powerbert.errors import ExperimentError

        raise ExperimentError(f"no experiments in {store.path}: start one with `powerbert run`")
    return experiment


def parse_gpus(gpus: str | None) -> list[int] | None:
    if gpus is None:
        return None
    if gpus.strip().lower() in ("", "none", "cpu"):
        return []
    try:
        return [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise ValueError(f"--gpus '{gpus}': expected GPU indices like 0,1 (or 'cpu')") from None


@command
def run(
    tasks: TasksOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    epochs: EpochsOpt = None,
    max_train: MaxTrainOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    seed: SeedOpt = None,
    surgery: SurgeryOpt = None,
    skip_bad_rows: SkipBadOpt = False,
    precision: PrecisionOpt = None,
    settings: SetOpt = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU indices to use, e.g. 0,1 ('cpu' for none); default: every GPU found.")] = None,
    runs_per_gpu: Annotated[int, typer.Option("--runs-per-gpu", min=1, help="Runs sharing one GPU at a time.")] = 1,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1, help="Runs at once on a machine without a GPU (CPU threads are shared).")] = 1,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also train the paper's frozen-encoder and naive multitask baselines.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="Experiment name; default: tasks and time.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for checkpoints and logs (one subfolder per experiment).", envvar="POWERBERT_OUT")] = Path("runs"),
    db: DbOpt = Path("runs.db"),
    detach: Annotated[bool, typer.Option("--detach", help="Start and return at once; follow later with `powerbert watch`.")] = False,
) -> None:
    """Train every subset of the tasks (the power set) in the background, then ensemble them.

    Follows the runs live; Ctrl-C detaches and the runs go on. With no arguments: the demo
    experiment on the built-in data, a few minutes on a CPU.
    """
    from powerbert import experiments
    from powerbert.live import follow, snapshot
    from powerbert.profiles import default_profile, resolve_config
    from powerbert.tasks import DEFAULT_TASKS

    overrides = training_overrides(
        tasks=tasks, data_dir=data_dir, model=model, epochs=epochs, max_train=max_train, lr=lr,
        batch_size=batch_size, seed=seed, surgery=surgery, skip_bad_rows=skip_bad_rows, precision=precision,
        settings=settings,
    )
    profile = profile or default_profile(overrides.get("data_dir"))
    config = resolve_config(profile, overrides)
    if "tasks" not in overrides:
        config.tasks = DEFAULT_TASKS
    for note in experiments.validate(config):  # what --skip-bad-rows will skip
        console.print(note, highlight=False)
    with open_store(db) as store:
        exp = experiments.create_experiment(
            store, config, name=name, profile=profile, out_root=out, gpus=parse_gpus(gpus),
            runs_per_gpu=runs_per_gpu, max_parallel=max_parallel, baselines=baselines,
        )
        pid = experiments.launch(db, store, exp)
        console.print(f"experiment [bold]{exp.name}[/bold]: {len(store.runs(exp.id))} runs, supervisor pid {pid}, logs in {exp.out_dir}")
        if detach:
            console.print(f"detached. Follow with: powerbert watch {exp.name} --db {db}")
            return
        try:
            exp = follow(store, exp.id, console)
        except KeyboardInterrupt:
            console.print(f"\ndetached; the runs go on. Come back with: powerbert watch {exp.name} --db {db}")
            return
        finish_summary(store, exp)
        _, runs, _ = snapshot(store, exp.id)
        if any(r.status in ("failed", "lost") for r in runs):
            raise typer.Exit(code=1)


def finish_summary(store, exp) -> None:
    from powerbert.results import experiment_report
    from powerbert.report import render_table

    if any(r.status == "finished" for r in store.runs(exp.id)):
        console.print(render_table(experiment_report(store, exp)))
        console.print(f"full report: powerbert report {exp.name}")


@command
def status(experiment: ExperimentArg = None, db: DbOpt = Path("runs.db")) -> None:
    """Print the runs table of an experiment once."""
    from powerbert.live import snapshot

    with open_store(db) as store:
        exp = pick_experiment(store, experiment)
        console.print(snapshot(store, exp.id)[2])


@command
def watch(experiment: ExperimentArg = None, db: DbOpt = Path("runs.db")) -> None:
    """Follow an experiment's runs live until it ends (Ctrl-C stops watching, not the runs)."""
    from powerbert.live import follow

    with open_store(db) as store:
        exp = pick_experiment(store, experiment)
        try:
            exp = follow(store, exp.id, console)
        except KeyboardInterrupt:
            console.print("\nstopped watching; the runs go on.")
            return
        finish_summary(store, exp)


@command(name="list")
def list_experiments(db: DbOpt = Path("runs.db")) -> None:
    """List the experiments in the database, newest first."""
    from powerbert.live import experiments_table

    with open_store(db) as store:
        console.print(experiments_table(store))


RunOrExperimentArg = Annotated[str, typer.Argument(help="An experiment (name or id), or one run as EXPERIMENT/SUBSET (e.g. exp1/sst+sts) or its id.")]


@command
def stop(
    target: RunOrExperimentArg,
    db: DbOpt = Path("runs.db"),
    grace: Annotated[float, typer.Option("--grace", min=0.0, help="Seconds a worker gets to checkpoint before it is killed.")] = 30.0,
) -> None:
    """Stop a run or a whole experiment; stopped runs keep a checkpoint to resume from."""
    from powerbert import experiments
    from powerbert.results import run_label

    with open_store(db) as store:
        runs = experiments.stop(store, target, grace_s=grace)
        for run in runs:
            console.print(f"{run_label(run.subset, run.kind)}: {run.status}")


@command
def resume(target: RunOrExperimentArg, db: DbOpt = Path("runs.db")) -> None:
    """Continue stopped, failed or lost runs from their last checkpoint, in the background."""
    from powerbert import experiments
    from powerbert.results import run_label

    with open_store(db) as store:
        exp, runs = experiments.resume(db, store, target)
        for run in runs:
            console.print(f"{run_label(run.subset, run.kind)}: {run.status}")
        console.print(f"follow with: powerbert watch {exp.name} --db {db}")


def main() -> None:
    """Entry point of the `powerbert` script."""
    app()


# Commands that read finished experiments (ensemble, report, predict) live in their own module;
# importing it registers them on `app`.
from powerbert import cli_results  # noqa: E402,F401
