"""One experiment, live: its runs table, and for the selected run its loss and dev-score
curves and the tail of its worker.log; keys to stop, resume and delete runs.

Each poll reads the runs (marking vanished workers lost), the selected run's metric rows newer
than the last id seen and its log lines past the last offset read; GPUs are looked at every
few seconds. Stop, resume and delete run in thread workers of their own and call the same
functions as `powerbert stop / resume / delete`: deleting first works out, in a worker, what
it would remove and how much disk that frees, asks, and then removes the rows and the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Static

from powerbert.errors import first_line
from powerbert.store import Experiment, Run, RunStatus, Store, StoreError
from tui.fetch import AttemptStarts, Curves, ExperimentSnapshot, RunFollow, experiment_snapshot
from tui.gpu import GpuStat, gpu_line
from tui.messages import ActionDone, DeletionPlanned
from tui.screens.base import PollingScreen
from tui.screens.confirm import ConfirmScreen
from tui.source import Database
from tui.widgets.curves import CurvePlot
from tui.widgets.log_tail import LogTail
from tui.widgets.tables import RunsTable

GPU_EVERY_S = 5.0
STOP = Binding.Group("Stop", compact=True)  # the footer shows "sS Stop": s the run, S them all
RESUME = Binding.Group("Resume", compact=True)


@dataclass
class ExperimentView:
    snapshot: ExperimentSnapshot
    rows: dict[str, list[Text]]  # run id -> table cells
    summary: Text  # the line above the table
    details: dict[int, Text]  # run id -> the line under the table
    labels: dict[int, str]  # run id -> name as tables show it
    node: bool = False  # the rows have a node column (powerbert.views.shows_node)
    gpus: list[GpuStat] | None = field(default=None)  # None: not looked at this time


def run_key(store: Store, experiment: Experiment, run: Run) -> str:
    """The key that experiments.stop/resume take for this one run.

    'EXPERIMENT/SUBSET' names the power-set run; other kinds only by id, and an id that is also
    an experiment's id or name would be read as that experiment, so that case is refused."""
    if run.kind == "powerset":
        return f"{experiment.name}/{run.subset}"
    try:
        store.get_experiment(str(run.id))
    except StoreError:
        return str(run.id)
    raise StoreError(f"run {run.id} ({run.kind}: {run.subset}) cannot be named on its own; "
                     "stop or resume the whole experiment (S, R)")


def deletion_question(name: str, run: Run, plan) -> str:
    """What the delete key asks: what goes, and how much disk that frees (`plan`: a
    powerbert.runner.cleanup.Deletion). Called in the action worker."""
    from powerbert.runner.cleanup import fmt_bytes

    where = f" in {plan.folders[0]}" if plan.folders else ""
    kept = f" {', '.join(plan.kept)} lies outside the experiment's folder and stays." if plan.kept else ""
    return (f"Delete run {name} ({run.status}) with its metrics, dev outputs and files? "
            f"This frees {fmt_bytes(plan.bytes)}{where}.{kept}")


class ExperimentScreen(PollingScreen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("s", "stop_run", "Stop the run", group=STOP),
        Binding("S,shift+s", "stop_all", "Stop every run", group=STOP),
        Binding("r", "resume_run", "Resume the run", group=RESUME),
        Binding("R,shift+r", "resume_all", "Resume every run", group=RESUME),
        Binding("d", "delete_run", "Delete"),
        Binding("e", "results", "Results"),
        Binding("p", "playground", "Playground"),
    ]

    def __init__(self, experiment_id: int) -> None:
        super().__init__(id="experiment")
        self.experiment_id = experiment_id
        self.experiment: Experiment | None = None
        self.runs: dict[int, Run] = {}
        self.details: dict[int, Text] = {}
        self.labels: dict[int, str] = {}
        self.follow = RunFollow()
        self.curves = Curves()
        self._last_gpu = float("-inf")
        self._starts = AttemptStarts()  # touched only by the fetch worker
        self._planning = False  # a delete is being worked out: a second d waits for its question

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="experiment-summary")
        yield Static("", id="gpu-panel")
        yield RunsTable(id="runs-table")
        yield Static("", id="run-detail")
        with Horizontal(id="panels"):
            with Vertical(id="curves"):
                yield CurvePlot("loss", id="loss-plot")
                yield CurvePlot("dev score", id="dev-plot")
            yield LogTail(id="log")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#gpu-panel").display = False

    # -- polling -------------------------------------------------------------------------------

    def fetch_request(self) -> tuple[RunFollow, bool, float]:
        now = self.app.clock()
        want_gpu = now - self._last_gpu >= GPU_EVERY_S
        if want_gpu:
            self._last_gpu = now
        return RunFollow(self.follow.run_id, self.follow.after_id, self.follow.log_offset), want_gpu, now

    def fetch(self, db: Database, request: tuple[RunFollow, bool, float]) -> ExperimentView:
        from powerbert.runner.experiments import supervisor_alive
        from powerbert.store import run_label
        from powerbert.views import shows_node
        from tui.rows import experiment_line, run_cells, run_detail

        follow, want_gpu, now = request
        snap = experiment_snapshot(db.store(), self.experiment_id, follow, self._starts)
        tasks = snap.experiment.tasks
        epochs = (snap.experiment.config.get("train") or {}).get("epochs")
        starts = snap.start_steps
        node = shows_node(snap.experiment, snap.runs)
        return ExperimentView(
            snap,
            rows={str(r.id): run_cells(r, tasks, now, starts.get(r.id), node) for r in snap.runs},
            summary=experiment_line(snap.experiment, snap.runs, supervisor_alive(snap.experiment)),
            details={r.id: run_detail(r, epochs, starts.get(r.id)) for r in snap.runs},
            labels={r.id: run_label(r.subset, r.kind) for r in snap.runs},
            gpus=self.app.gpu_probe() if want_gpu else None,
            node=node,
        )

    def poll_delay(self, view: ExperimentView) -> float:
        return 0.0 if view.snapshot.more else self.interval

    def show(self, view: ExperimentView) -> None:
        snap = view.snapshot
        self.experiment = snap.experiment
        self.runs = {r.id: r for r in snap.runs}
        self.details, self.labels = view.details, view.labels
        self.sub_title = snap.experiment.name
        table = self.query_one(RunsTable)
        table.show_runs(snap.experiment.tasks, view.rows, view.node)
        self.query_one("#experiment-summary", Static).update(view.summary)
        if view.gpus is not None:
            panel = self.query_one("#gpu-panel", Static)
            panel.display = bool(view.gpus)
            panel.update("\n".join(gpu_line(g) for g in view.gpus))
        if self.follow.run_id not in self.runs:
            key = table.cursor_key
            if key is not None:
                self.select_run(int(key))
            return
        if snap.follow.run_id == self.follow.run_id:  # else: an answer about the last selection
            self.follow = snap.follow
            if self.curves.extend(snap.metrics):
                self._draw_curves()
            if snap.log is not None:
                self.query_one(LogTail).apply(snap.log, self.runs[self.follow.run_id].log_tail)
        self._show_detail()

    def show_error(self, error: str) -> None:
        self.query_one("#experiment-summary", Static).update(Text(error, style="bold red"))

    def _show_detail(self) -> None:
        self.query_one("#run-detail", Static).update(self.details.get(self.follow.run_id, ""))

    def _draw_curves(self) -> None:
        run = self.runs.get(self.follow.run_id)
        xmax = run.total_steps if run else None  # both plots span the whole run
        steps, values = self.curves.get("loss")
        self.query_one("#loss-plot", CurvePlot).show_series([("loss", steps, values)], xmax=xmax)
        names = list(run.tasks if run else ())
        if len(names) > 1:
            names.append("overall")
        series = [(name, *self.curves.get(name)) for name in names]
        self.query_one("#dev-plot", CurvePlot).show_series(series, "after the first epoch", xmax=xmax)

    def select_run(self, run_id: int) -> None:
        if run_id == self.follow.run_id:
            return
        self.follow = RunFollow(run_id)
        self.curves = Curves()
        self.query_one(LogTail).start()
        self._draw_curves()
        self._show_detail()
        self.poll_now()

    def on_data_table_row_highlighted(self, event: RunsTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.select_run(int(event.row_key.value))

    # -- actions -------------------------------------------------------------------------------

    def selected_run(self) -> Run | None:
        return self.runs.get(self.follow.run_id)

    @work(thread=True, group="actions", exit_on_error=False)
    def _act(self, what: str, run_id: int | None) -> None:
        """Stop / resume / delete in a thread: the same library calls as the CLI."""
        from powerbert.runner import cleanup, experiments
        from powerbert.store import run_label

        db = self.app.db
        try:
            store = db.store()
            experiment = store.get_experiment(self.experiment_id)
            run = store.get_run(run_id) if run_id is not None else None
            key = experiment.name if run is None else run_key(store, experiment, run)
            name = experiment.name if run is None else run_label(run.subset, run.kind)
            if what == "stop":
                self.post_message(ActionDone(f"stopping {name}: its workers checkpoint first"))
                # As `powerbert stop`: SIGTERM, then SIGKILL for a worker still alive after the grace
                # period. In this thread, so the dashboard stays live meanwhile.
                stopped = experiments.stop(store, key)
                killed = [run_label(r.subset, r.kind) for r in stopped if r.error and r.error.startswith("killed after")]
                text = f"stopped {name}" + (f" ({', '.join(killed)} killed: no checkpoint in time)" if killed else "")
            elif what == "resume":
                experiments.resume(db.path, store, key)
                text = f"resumed {name}"
            elif what == "plan-delete":
                # Walking the run folder for its size is disk work: here, not on the UI thread.
                plan = cleanup.plan_deletion(store, key)
                self.post_message(DeletionPlanned(run.id, deletion_question(name, run, plan)))
                return
            else:
                # Planned again now: the run may have been resumed since the question was asked,
                # and plan_deletion refuses a running one.
                plan = cleanup.delete(store, cleanup.plan_deletion(store, key))
                text = f"deleted run {name}: freed {cleanup.fmt_bytes(plan.bytes)}"
                if plan.kept:
                    text += f" (kept {', '.join(plan.kept)}: outside the experiment's folder)"
            self.post_message(ActionDone(text))
        except Exception as exc:  # refused: say why, in one line
            text = first_line(exc)
            self.post_message(ActionDone(text, ok=False))

    def on_action_done(self, message: ActionDone) -> None:
        self._planning = False  # a refused plan ends here
        self.notify(message.text, severity="information" if message.ok else "error")
        self.poll_now()

    def on_deletion_planned(self, message: DeletionPlanned) -> None:
        self._planning = False

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act("delete", message.run_id)

        self.app.push_screen(ConfirmScreen(message.question), confirmed)

    def action_stop_run(self) -> None:
        if (run := self.selected_run()) is None:
            return
        if run.status not in (RunStatus.RUNNING, RunStatus.QUEUED):
            self.notify(f"{self.labels[run.id]} is {run.status}, not running", severity="warning")
            return
        self._act("stop", run.id)

    def action_stop_all(self) -> None:
        self._act("stop", None)

    def action_resume_run(self) -> None:
        if (run := self.selected_run()) is not None:
            self._act("resume", run.id)

    def action_resume_all(self) -> None:
        self._act("resume", None)

    def action_delete_run(self) -> None:
        if (run := self.selected_run()) is None:
            return
        name = self.labels[run.id]
        if run.status == RunStatus.RUNNING:
            self.notify(f"{name} is running: stop it (s) before deleting it", severity="warning")
            return
        if not self._planning:
            self._planning = True
            self._act("plan-delete", run.id)  # asks once it knows how much disk the files take

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_results(self) -> None:
        self.app.open_results(self.experiment_id)

    def action_playground(self) -> None:
        self.app.open_playground(self.experiment_id)
