"""powerbert-tui: the PowerBERT dashboard (Textual). Start, watch, stop and resume experiments,
read their results, try their models on your own sentences, and compare experiments.

    powerbert-tui [--db runs.db]        (or POWERBERT_DB=...; default ./runs.db)

Tasks declared in ./powerbert.toml (a task file, as `powerbert run` reads it) are read at start
and offered by the new-experiment form.

The app is small: it holds the database handle, the clock, the GPU probe and the planner behind
the form's estimate (all injectable, so tests and snapshots are deterministic) and opens screens. Screens live in tui/screens/, each
polling runs.db from a thread worker of its own. Quitting never stops a run: supervisors and
workers run detached, and opening the dashboard again shows them as they are.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from textual import work
from textual.app import App
from textual.binding import Binding

from tui.gpu import GpuStat, probe_gpus
from tui.messages import TasksDeclared
from tui.screens.experiments import ExperimentsScreen
from tui.screens.help import HelpScreen
from tui.source import DEFAULT_DB, Database

# What the screens import lazily; loaded in a thread at start so the first screen draws at once.
HEAVY_MODULES = ("powerbert.runner.experiments", "powerbert.views", "powerbert.profiles", "powerbert.results.evaluate",
                 "powerbert.results.report", "tui.rows")


class PowerBertApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "PowerBERT"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # app.tcss lays plots out by these
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        gpu_probe: Callable[[], list[GpuStat]] = probe_gpus,
        poll_s: float | None = None,
        planner: Callable | None = None,
    ) -> None:
        super().__init__()
        self.db = Database(db_path)
        self.clock = clock  # elapsed and ETA are measured against this
        self.gpu_probe = gpu_probe
        self.poll_s = poll_s  # a shorter poll interval for every screen (tests)
        # What the form's estimate calls, as powerbert.runner.plan.plan_experiment (None: that).
        self.planner = planner
        self.tasks_declared: TasksDeclared | None = None  # ./powerbert.toml read (or refused)

    def on_mount(self) -> None:
        self._warm_up()
        self.push_screen(ExperimentsScreen())

    @work(thread=True, exit_on_error=False, group="warm-up")
    def _warm_up(self) -> None:
        import importlib

        self.post_message(read_task_file())  # first: it is quick, and the form wants its tasks
        for name in HEAVY_MODULES:
            importlib.import_module(name)

    def on_tasks_declared(self, message: TasksDeclared) -> None:
        self.tasks_declared = message
        if message.error is not None:
            self.notify(message.error, title="powerbert.toml not read", severity="error", timeout=15)
        for screen in self.screen_stack:  # a form opened before the file was read
            if hasattr(screen, "add_declared_tasks"):
                screen.add_declared_tasks()

    # -- opening screens (the screens call these) ----------------------------------------------

    def open_experiment(self, experiment_id: int) -> None:
        from tui.screens.experiment import ExperimentScreen

        self.push_screen(ExperimentScreen(experiment_id))

    def open_new_experiment(self) -> None:
        from tui.screens.new_experiment import NewExperimentScreen

        self.push_screen(NewExperimentScreen())

    def open_results(self, experiment_id: int) -> None:
        from tui.screens.results import ResultsScreen

        self.push_screen(ResultsScreen(experiment_id))

    def open_playground(self, experiment_id: int) -> None:
        from tui.screens.playground import PlaygroundScreen

        self.push_screen(PlaygroundScreen(experiment_id))

    def open_compare(self, experiment_ids: list[int]) -> None:
        from tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(experiment_ids))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def on_unmount(self) -> None:
        self.db.close()


def read_task_file() -> TasksDeclared:
    """Register the tasks of ./powerbert.toml, if there is one (in a worker: it checks the data
    files the tasks name)."""
    from powerbert.data.taskfile import load_declared_tasks
    from powerbert.errors import first_line

    try:
        return TasksDeclared([task.name for task in load_declared_tasks(None)])
    except Exception as exc:  # a bad task file is said, in one line; the dashboard goes on
        return TasksDeclared([], first_line(exc))


def create_app(db_path: str | os.PathLike[str] | None = None, **options) -> PowerBertApp:
    """The app as `powerbert-tui` builds it (tests and snapshots use this too)."""
    return PowerBertApp(db_path or os.environ.get("POWERBERT_DB") or DEFAULT_DB, **options)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="powerbert-tui", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help=f"the runs database (env POWERBERT_DB; default ./{DEFAULT_DB})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `powerbert-tui` script."""
    args = parse_args(argv)
    create_app(args.db).run()


if __name__ == "__main__":
    main()
