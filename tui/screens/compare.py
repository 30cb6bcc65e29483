"""Compare experiments: their results tables side by side, and for one subset (chosen in the
Select) the loss and dev-score curves of every experiment overlaid on one pair of plots.

Curves are read incrementally per experiment (rows newer than the last id seen); the tables
are rebuilt only when a run's result changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalScroll
from textual.widgets import Footer, Header, Label, Select, Static

from powerbert.store import Metric
from powerbert.tasks import TASKS, power_set, subset_name
from tui.fetch import Curves
from tui.screens.base import PollingScreen
from tui.source import Database
from tui.widgets.curves import CurvePlot


@dataclass
class CompareRequest:
    subset: str | None
    shown: dict[int, tuple]  # experiment id -> signature of the table on screen
    after: dict[int, tuple[int | None, int]]  # experiment id -> (run id followed, last metric id)


@dataclass
class CompareData:
    names: dict[int, str]
    subsets: list[str]  # every subset of any experiment, power-set order
    tables: dict[int, tuple[tuple, object]] = field(default_factory=dict)  # id -> (signature, renderable)
    metrics: dict[int, tuple[int | None, list[Metric]]] = field(default_factory=dict)  # id -> (run id, rows)
    subset: str | None = None


def default_subset(subsets_per_experiment: list[set[str]]) -> str | None:
    """The largest subset every experiment has (the full set when they share their tasks)."""
    common = set.intersection(*subsets_per_experiment) if subsets_per_experiment else set()
    pool = common or set().union(*subsets_per_experiment)
    return max(pool, key=lambda s: (len(s.split("+")), s), default=None)


class CompareScreen(PollingScreen):
    POLL_S = 2.0
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("s", "focus_subset", "Subset"),
    ]

    def __init__(self, experiment_ids: list[int]) -> None:
        super().__init__(id="compare")
        self.experiment_ids = list(experiment_ids)
        self.subset: str | None = None
        self.shown: dict[int, tuple] = {}
        self.after: dict[int, tuple[int | None, int]] = {}
        self.curves: dict[int, Curves] = {}
        self.names: dict[int, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with HorizontalScroll(id="compare-tables"):
            for experiment_id in self.experiment_ids:
                yield Static("loading…", id=f"compare-table-{experiment_id}", classes="compare-table")
        with Horizontal(id="compare-bar"):
            yield Label("curves of the run:")
            yield Select([], prompt="subset", compact=True, id="subset")
        with Horizontal(id="compare-curves"):
            yield CurvePlot("loss", id="compare-loss")
            yield CurvePlot("dev overall", id="compare-dev")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = "compare"

    def fetch_request(self) -> CompareRequest:
        return CompareRequest(self.subset, dict(self.shown), dict(self.after))

    def fetch(self, db: Database, request: CompareRequest) -> CompareData:
        from powerbert.results.evaluate import experiment_report
        from tui.screens.results import results_signature
        from tui.widgets.report_view import compact_table

        store = db.store()
        experiments = [store.get_experiment(i) for i in self.experiment_ids]
        runs = {e.id: store.runs(e.id, kind="powerset") for e in experiments}
        tasks = tuple(t for t in TASKS if any(t in e.tasks for e in experiments))
        present = {r.subset for rs in runs.values() for r in rs}
        subsets = [subset_name(s) for s in power_set(tasks) if subset_name(s) in present]
        subset = request.subset or default_subset([{r.subset for r in rs} for rs in runs.values()])
        data = CompareData({e.id: e.name for e in experiments}, subsets, subset=subset)
        for experiment in experiments:
            signature = results_signature(store, experiment.id)
            if request.shown.get(experiment.id) != signature:
                data.tables[experiment.id] = (signature, compact_table(experiment_report(store, experiment)))
            run = next((r for r in runs[experiment.id] if r.subset == subset), None)
            run_id, after = request.after.get(experiment.id, (None, 0))
            if run is None:
                data.metrics[experiment.id] = (None, [])
                continue
            after = after if run_id == run.id else 0
            rows = store.metrics(run.id, after, ("loss", "overall"), limit=50_000)
            data.metrics[experiment.id] = (run.id, rows)
        return data

    def show(self, data: CompareData) -> None:
        self.names = data.names
        if data.subset != self.subset:
            if self.subset is not None:
                return  # read for a subset no longer chosen; the next poll reads the right one
            self.subset = data.subset
        select = self.query_one("#subset", Select)
        options = [(s, s) for s in data.subsets]
        if [o[0] for o in options] != getattr(self, "_options", None):
            self._options = [o[0] for o in options]
            select.set_options(options)
            if self.subset in data.subsets:
                select.value = self.subset
        for experiment_id, (signature, table) in data.tables.items():
            self.shown[experiment_id] = signature
            self.query_one(f"#compare-table-{experiment_id}", Static).update(table)
        changed = False
        for experiment_id, (run_id, rows) in data.metrics.items():
            before = self.after.get(experiment_id, (None, 0))
            if before[0] != run_id:
                self.curves[experiment_id] = Curves()
                changed = True
            curves = self.curves.setdefault(experiment_id, Curves())
            changed |= curves.extend(rows)
            self.after[experiment_id] = (run_id, rows[-1].id if rows else (before[1] if before[0] == run_id else 0))
        if changed or not self.polls:
            self._draw()

    def _draw(self) -> None:
        for name, plot_id in (("loss", "#compare-loss"), ("overall", "#compare-dev")):
            series = [(self.names.get(i, str(i)), *self.curves[i].get(name)) for i in self.experiment_ids if i in self.curves]
            self.query_one(plot_id, CurvePlot).show_series(series, f"no {self.subset or 'run'} curves")

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or event.value == self.subset:
            return
        self.subset = str(event.value)
        self.after, self.curves = {}, {}
        self._draw()
        self.poll_now()

    def action_focus_subset(self) -> None:
        self.query_one("#subset", Select).focus()

    def action_back(self) -> None:
        self.app.pop_screen()
