"""`powerbert train`: one subset of tasks in the foreground, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from powerbert.cli.app import (
    BatchOpt,
    DataDirOpt,
    DeviceOpt,
    EpochsOpt,
    LrOpt,
    MaxTrainOpt,
    ModelOpt,
    PrecisionOpt,
    ProfileOpt,
    SeedOpt,
    SetOpt,
    SkipBadOpt,
    SurgeryOpt,
    TasksFileOpt,
    TasksOpt,
    command,
    console,
    training_overrides,
)


@command
def train(
    tasks: TasksOpt = "sst",
    tasks_file: TasksFileOpt = None,
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
    from powerbert.cli.progress import RichTrainProgress
    from powerbert.config import absolute_paths
    from powerbert.profiles import default_profile, resolve_config
    from powerbert.training.loop import train_subset

    overrides = training_overrides(
        tasks=tasks, tasks_file=tasks_file, data_dir=data_dir, model=model, epochs=epochs, max_train=max_train, lr=lr,
        batch_size=batch_size, seed=seed, surgery=surgery, skip_bad_rows=skip_bad_rows, device=device,
        precision=precision, settings=settings,
    )
    profile = profile or default_profile(overrides.get("data_dir"))
    config = absolute_paths(resolve_config(profile, overrides))
    from powerbert.runner.checks import check_settings

    for note in check_settings(config):
        console.print(note, highlight=False)
    where = config.data_dir or "the built-in demo data"
    console.print(f"training [bold]{'+'.join(config.tasks)}[/bold] on {where} -> {out}")
    balanced = ", norms balanced" if config.balance == "norm" and config.surgery != "alternate" else ""
    surgery_note = f"; multitask gradients: {config.surgery}{balanced}" if len(config.tasks) > 1 else ""
    recipe = f"recipe {profile}: lr {config.lr:g}, batch {config.batch_size}, {config.epochs} epoch{'s' if config.epochs != 1 else ''}{surgery_note}"
    with RichTrainProgress(console, recipe) as progress:
        result = train_subset(config, out, progress)
    scores = "  ".join(f"{t} {v:.4f}" for t, v in result.best_scores.items())
    console.print(f"best epoch {result.best_epoch}: {scores}  overall {result.best_overall:.4f}")
    console.print(f"checkpoint: {result.best_checkpoint}")
