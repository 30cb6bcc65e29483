"""The experiment view's table: one row per run (cells built by tui.rows in the worker)."""

from __future__ import annotations

from textual.binding import Binding

from tui.widgets.live_table import LiveTable

# What a narrow runs table leaves out after the tasks' score columns, in this order; run,
# status, device, progress and overall always show. The node (Ray runs) says where a run
# trains: it is left out after every score column, before elapsed, loss and ETA.
RUNS_OPTIONAL = ("node", "elapsed", "loss", "eta")


def score_column(task: str) -> str:
    """The key of a task's score column in the runs table."""
    return f"score:{task}"


class RunsTable(LiveTable):
    """One row per run; the score columns are the experiment's tasks, known with the first poll.

    Where not every column fits (four tasks at 80 columns), the tasks' score columns go first,
    the last task's first: the run's line under the table has every score, and the overall
    column stays."""

    def show_runs(self, tasks: tuple[str, ...], rows: dict, node: bool = False) -> None:
        """`node`: the rows have a node cell after the device (tui.rows.run_cells)."""
        scores = [score_column(t) for t in tasks]  # a declared task may be called 'loss'
        self.set_columns([("run", "run"), ("status", "status"), ("device", "device"), *([("node", "node")] if node else []),
                          ("progress", "ep step"), ("loss", "loss"), *zip(scores, tasks), ("overall", "overall"),
                          ("elapsed", "elapsed"), ("eta", "ETA")],
                         optional=(*reversed(scores), *(c for c in RUNS_OPTIONAL if node or c != "node")))
        self.sync(rows)


class ExperimentsTable(LiveTable):
    """The home screen's table: one row per experiment, kept newest first."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]  # shown in the footer

    def __init__(self, **kwargs) -> None:
        columns = [("mark", " "), ("name", "name"), ("tasks", "tasks"), ("model", "model"),
                   ("status", "status"), ("runs", "runs"), ("started", "started"), ("best", "best")]
        # Where not everything fits (80 columns and a default name, 'sst+para+sts-20250101-120000'),
        # these go first, in this order: the results and experiment views show them too.
        super().__init__(columns, optional=("model", "tasks", "started"), **kwargs)

    def show_experiments(self, rows: dict, names_newest_first: list[str]) -> None:
        # rows added later (new experiments) are sorted back into newest-first order
        rank = {name: i for i, name in enumerate(names_newest_first)}
        self.sync(rows, order=lambda cells: rank.get(cells[1].plain.strip(), len(rank)))
