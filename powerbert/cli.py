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
    if given.get("data_dir") is not None:
        given["data_dir"] = str(given["data_dir"])
    if given.get("skip_bad_rows") is False:
        given["skip_bad_rows"] = None
    return given


def command(func):
    """Register a command whose user errors print one line and exit 1 (tracebacks with --debug)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return app.command()(wrapper)


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
        precision=precision,
    )
    config = resolve_config(profile or default_profile(overrides.get("data_dir")), overrides)
    from powerbert.data import check_data_dir

    check_data_dir(config.data_dir, config.tasks)
    where = config.data_dir or "the built-in demo data"
    console.print(f"training [bold]{'+'.join(config.tasks)}[/bold] on {where} -> {out}")
    with RichTrainProgress(console) as progress:
        result = train_subset(config, out, progress)
    scores = "  ".join(f"{t} {v:.4f}" for t, v in result.best_scores.items())
    console.print(f"best epoch {result.best_epoch}: {scores}  overall {result.best_overall:.4f}")
    console.print(f"checkpoint: {result.best_checkpoint}")


def main() -> None:
    """Entry point of the `powerbert` script."""
    app()
