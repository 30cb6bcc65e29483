"""An experiment's results: the report's table (every model and scheme, best marked) and the
error-analysis charts of the scheme chosen in the Select.

The report evaluates the ensembles from the stored dev outputs, which takes a moment, so it is
built in the fetch worker and only again when a run's result changed or the scheme did.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Header, Label, Select, Static

from powerbert.results import DEFAULT_SCHEME
from tui.screens.base import PollingScreen
from tui.source import Database


def results_signature(store, experiment_id: int) -> tuple:
    """What the report depends on: which runs there are, how they ended, their best scores."""
    return tuple((r.id, str(r.status), r.best_overall) for r in store.runs(experiment_id))


class ResultsScreen(PollingScreen):
    POLL_S = 3.0
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("s", "focus_scheme", "Scheme"),
        Binding("p", "playground", "Playground"),
    ]

    def __init__(self, experiment_id: int) -> None:
        super().__init__(id="results")
        self.experiment_id = experiment_id
        self.scheme = DEFAULT_SCHEME
        self._shown: tuple | None = None  # (signature, scheme) of the report on screen
        self.report = None  # powerbert.results.report.ReportData on screen

    def compose(self) -> ComposeResult:
        from powerbert.results.ensemble import SCHEMES  # scipy: already imported by the app's warm-up

        yield Header()
        with Horizontal(id="results-bar"):
            yield Label("error analysis of the ensemble:")
            yield Select([(s, s) for s in SCHEMES], value=self.scheme, allow_blank=False, compact=True, id="scheme")
        with VerticalScroll(id="results-body"):
            yield Static("building the report…", id="results-table")
            yield Static("", id="results-charts")
        yield Footer(compact=True, show_command_palette=False)

    def fetch_request(self) -> tuple[str, tuple | None]:
        return self.scheme, self._shown

    def fetch(self, db: Database, request):
        from powerbert.results.evaluate import experiment_report
        from powerbert.results.report import render_charts, render_table

        scheme, shown = request
        store = db.store()
        experiment = store.get_experiment(self.experiment_id)
        key = (results_signature(store, self.experiment_id), scheme)
        if key == shown:
            return None  # nothing the report depends on changed
        report = experiment_report(store, experiment, scheme)
        return key, report, render_table(report), render_charts(report)

    def show(self, payload) -> None:
        if payload is None:
            return
        key, report, table, charts = payload
        if key[1] != self.scheme:
            return  # built for a scheme no longer chosen; the next poll builds the right one
        self._shown, self.report = key, report
        self.sub_title = f"{report.experiment} · results"
        self.query_one("#results-table", Static).update(table)
        self.query_one("#results-charts", Static).update(charts)

    def show_error(self, error: str) -> None:
        self.query_one("#results-table", Static).update(error)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value != self.scheme and event.value is not Select.BLANK:
            self.scheme = str(event.value)
            self.query_one("#results-charts", Static).update(f"analysing the {self.scheme} ensemble…")
            self.poll_now()

    def action_focus_scheme(self) -> None:
        self.query_one("#scheme", Select).focus()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_playground(self) -> None:
        self.app.open_playground(self.experiment_id)
