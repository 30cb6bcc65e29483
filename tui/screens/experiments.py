"""The home screen: every experiment in runs.db, newest first, updated live.

Enter (or a click) opens one; n starts a new one; space marks experiments and c compares the
marked ones; e shows an experiment's results; p opens its playground.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static

from tui.screens.base import PollingScreen
from tui.source import Database
from tui.widgets.tables import ExperimentsTable


@dataclass
class ExperimentRows:
    names: list[str]  # newest first
    rows: dict[str, list[Text]]  # experiment id -> cells


class ExperimentsScreen(PollingScreen):
    BINDINGS = [
        Binding("enter,o", "open", "Open", show=False),
        Binding("n", "new", "New"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("e", "results", "Results"),
        Binding("p", "playground", "Playground"),
    ]

    def __init__(self) -> None:
        super().__init__(id="experiments")
        self.marked: set[int] = set()
        self.names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="experiments-message", classes="message")
        yield ExperimentsTable(id="experiments-table")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = str(self.app.db.path)

    def fetch_request(self) -> set[int]:
        return set(self.marked)

    def fetch(self, db: Database, marked: set[int]) -> ExperimentRows:
        from powerbert.views import experiment_summaries
        from tui.rows import experiment_cells

        summaries = experiment_summaries(db.store())
        return ExperimentRows(
            [s.experiment.name for s in summaries],
            {str(s.experiment.id): experiment_cells(s, s.experiment.id in marked) for s in summaries},
        )

    def show(self, payload: ExperimentRows) -> None:
        self.names = payload.names
        message = self.query_one("#experiments-message", Static)
        message.display = not payload.rows
        message.update("no experiments yet — press n to start one")
        message.set_class(False, "error")
        self.query_one(ExperimentsTable).show_experiments(payload.rows, payload.names)

    def show_error(self, error: str) -> None:
        message = self.query_one("#experiments-message", Static)
        message.update(error)
        message.set_class(True, "error")
        message.display = True

    def selected(self) -> int | None:
        key = self.query_one(ExperimentsTable).cursor_key
        return None if key is None else int(key)

    def _need_selection(self) -> int | None:
        experiment_id = self.selected()
        if experiment_id is None:
            self.notify("no experiment yet — press n to start one", severity="warning")
        return experiment_id

    def on_data_table_row_selected(self, event: ExperimentsTable.RowSelected) -> None:
        event.stop()
        self.app.open_experiment(int(event.row_key.value))

    def action_open(self) -> None:
        if (experiment_id := self._need_selection()) is not None:
            self.app.open_experiment(experiment_id)

    def action_new(self) -> None:
        self.app.open_new_experiment()

    def action_results(self) -> None:
        if (experiment_id := self._need_selection()) is not None:
            self.app.open_results(experiment_id)

    def action_playground(self) -> None:
        if (experiment_id := self._need_selection()) is not None:
            self.app.open_playground(experiment_id)

    def action_mark(self) -> None:
        experiment_id = self.selected()
        if experiment_id is None:
            return
        self.marked ^= {experiment_id}
        mark = Text("●" if experiment_id in self.marked else " ", style="bold cyan")
        self.query_one(ExperimentsTable).set_cell(str(experiment_id), "mark", mark)

    def action_compare(self) -> None:
        table = self.query_one(ExperimentsTable)
        ids = [i for i in self.marked if str(i) in table.rows]
        if len(ids) < 2:
            self.notify("mark two or more experiments with space, then press c", severity="warning")
            return
        self.app.open_compare(sorted(ids))
