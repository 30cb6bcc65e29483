"""Terminal progress for `powerbert train`: a rich progress bar and one line per evaluation."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from powerbert.training.callbacks import EvalResult, TrainCallbacks, TrainStart


class RichTrainProgress(TrainCallbacks):
    """Shows steps, loss and ETA; prints the dev scores after every epoch."""

    def __init__(self, console: Console, recipe: str = ""):
        self.console = console
        self.recipe = recipe  # printed once the model is loaded and training starts
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.bar = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def on_start(self, info: TrainStart) -> None:
        rows = ", ".join(f"{t} {n}" for t, n in info.train_rows.items())
        if self.recipe:
            self.console.print(self.recipe)
        self.console.print(f"device {info.device}; training rows per epoch: {rows}; {info.steps_per_epoch} steps per epoch")
        self.bar = self.progress.add_task("training", total=info.total_steps, completed=info.start_step, loss="-")

    def on_step(self, step, epoch, losses, lr) -> None:
        total = sum(losses.values())
        self.progress.update(self.bar, completed=step, loss=f"{total:.4f}", description=f"epoch {int(epoch - 1e-9) + 1}")

    def on_eval(self, result: EvalResult) -> None:
        scores = "  ".join(f"{t} {v:.4f}" for t, v in result.scores.items())
        overall = f"  overall {result.overall:.4f}" if result.overall is not None else ""
        best = "  [green](best so far)[/green]" if result.is_best else ""
        self.progress.console.print(f"epoch {result.epoch} dev: {scores}{overall}{best}")

    def on_checkpoint(self, kind: str, path: Path, step: int) -> None:
        pass

    def on_message(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/yellow]")
