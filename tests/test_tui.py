"""The dashboard (tui/) driven with Textual's pilot against real runs.db files.

`prepare_db` builds a database with the Store API: two experiments with fixed timestamps,
runs in every status, metrics, dev outputs and ensemble results (the snapshot tests use it
too). Waiting is always on a condition (`wait_for`), never a fixed sleep. The slow tests
train for real: one starts an experiment from the form (a detached supervisor and its
workers, cleaned up afterwards), one builds a tiny finished experiment for the playground.

Run: python -m pytest tests/test_tui.py -q
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from powerbert.outputs import TaskOutputs
from powerbert.results import best_overall
from powerbert.store import ExperimentStatus, RunStatus, Store
from powerbert.tasks import TASKS, power_set, subset_name
from tui.app import create_app

pytestmark = pytest.mark.timeout(240)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: every stored time is fixed from this
NOW = T0 + 3 * 3600  # the dashboard's clock in these tests
FOREVER = 4_102_444_800.0  # a heartbeat in 2100: a run with no pid stays "alive" (liveness.py)
TASKS3 = ("sst", "para", "sts")
SIZE = (100, 30)


# ---- a prepared runs.db -------------------------------------------------------------------------


def _dev_outputs(subset: str, seed: int, n: int = 40) -> dict[str, TaskOutputs]:
    """Deterministic dev outputs that are informative (better than chance) for each task."""
    rng = np.random.default_rng(seed)
    gold_rng = np.random.default_rng(0)  # the same gold for every model
    gold = {"sst": gold_rng.integers(0, 5, n), "para": gold_rng.integers(0, 2, n), "sts": gold_rng.uniform(0, 5, n)}
    out = {}
    for task in subset.split("+"):
        g = gold[task]
        if task == "sst":
            o = np.eye(5)[g] * 1.5 + rng.normal(size=(n, 5))
        elif task == "para":
            o = (2 * g - 1) + rng.normal(size=n) * 1.5
        else:
            o = np.clip(g + rng.normal(size=n), 0, 5)
        out[task] = TaskOutputs(task, [f"{task}{i}" for i in range(n)], g, np.round(o, 6))
    return out


def _curve(store: Store, run_id: int, steps: int, tasks: tuple[str, ...], scale: float = 1.0) -> None:
    rows = []
    for step in range(1, steps + 1):
        loss = scale * (1.8 * math.exp(-step / 12) + 0.25 + 0.05 * math.sin(step))
        rows.append((step, step / 20, "train", "loss", round(loss, 6)))
        if step % 20 == 0:
            scores = {t: round(0.35 + 0.1 * (step / 20) + 0.02 * i, 4) for i, t in enumerate(tasks)}
            rows += [(step, step / 20, "dev", t, v) for t, v in scores.items()]
            if len(tasks) > 1:
                rows.append((step, step / 20, "dev", "overall", round(sum(scores.values()) / len(scores), 4)))
    store.add_metrics(run_id, rows)


def _finish(store: Store, run, seed: int, start: float, *, scale: float = 1.0) -> None:
    outputs = _dev_outputs(run.subset, seed)
    scores = {t: round(o.score(), 4) for t, o in outputs.items()}
    overall = sum((v + 1) / 2 if TASKS[t].metric == "pearson" else v for t, v in scores.items()) / len(scores)
    store.save_dev_outputs(run.id, outputs)
    _curve(store, run.id, 40, run.tasks, scale)
    store.update_run(
        run.id, status=RunStatus.FINISHED, device="cuda:0", host="gpu-box", epoch=2, step=40, total_steps=40,
        loss=0.31, best_scores=scores, best_overall=round(overall, 4), attempt=1, exit_code=0,
        created_at=T0, started_at=start, ended_at=start + 754, heartbeat_at=start + 754, updated_at=start + 754,
        log_tail=f"device cuda:0; 40 steps\nepoch 2 dev: overall {overall:.4f}  (best)",
    )


def prepare_db(path: Path, out_root: Path) -> dict[str, int]:
    """Two experiments: 'alpha' (older, every run finished, ensembles stored) and 'beta' (newer,
    a run in every status). Returns {name: experiment id}."""
    from powerbert.results import ensemble_experiment

    config = {"train": {"tasks": list(TASKS3), "model": None, "epochs": 2}, "profile": "demo",
              "launch": {"gpus": [0], "runs_per_gpu": 1, "max_parallel": 1}}
    ids = {}
    with Store(path) as store:
        alpha = store.create_experiment("alpha", TASKS3, config, str(out_root / "alpha"), power_set(TASKS3))
        store.update_experiment(alpha.id, status=ExperimentStatus.FINISHED, created_at=T0, started_at=T0,
                                ended_at=T0 + 5400)
        for i, run in enumerate(store.runs(alpha.id)):
            _finish(store, run, seed=10 + i, start=T0 + 60 * i, scale=1.1)
        ensemble_experiment(store, alpha.id)
        ids["alpha"] = alpha.id

        beta = store.create_experiment("beta", TASKS3, config, str(out_root / "beta"), power_set(TASKS3))
        store.update_experiment(beta.id, status=ExperimentStatus.RUNNING, created_at=T0 + 7200,
                                started_at=T0 + 7200)
        runs = {r.subset: r for r in store.runs(beta.id)}
        for i, subset in enumerate(("sst", "para", "sts")):
            _finish(store, runs[subset], seed=20 + i, start=T0 + 7200 + 30 * i)
        failed = runs["sst+para"]
        _curve(store, failed.id, 13, failed.tasks)
        store.update_run(
            failed.id, status=RunStatus.FAILED, device="cuda:0", epoch=0, step=13, total_steps=40, loss=1.234,
            attempt=1, exit_code=1, error="RuntimeError: CUDA out of memory", started_at=T0 + 7300,
            ended_at=T0 + 7400, log_tail="device cuda:0; 40 steps\nTraceback (most recent call last):\n"
            "RuntimeError: CUDA out of memory",
        )
        lost = runs["sst+sts"]
        store.update_run(
            lost.id, status=RunStatus.LOST, device="cuda:0", epoch=0, step=5, total_steps=40, loss=1.9,
            attempt=1, error="worker vanished: no process 4242 started at the recorded time",
            started_at=T0 + 7300, ended_at=T0 + 7500, log_tail="device cuda:0; 40 steps",
        )
        running = runs["para+sts"]
        _curve(store, running.id, 25, running.tasks)
        store.update_run(
            running.id, status=RunStatus.RUNNING, device="cuda:0", host="gpu-box", epoch=1, step=25,
            total_steps=40, loss=0.512, best_scores={"para": 0.55, "sts": 0.4}, best_overall=0.6083,
            attempt=1, started_at=T0 + 7600, heartbeat_at=FOREVER,
        )
        ids["beta"] = beta.id
    return ids


@pytest.fixture
def db_path(tmp_path) -> Path:
    path = tmp_path / "runs.db"
    prepare_db(path, tmp_path / "runs")
    return path


def run_async(test):
    """Run an async test in a fresh event loop (no asyncio plugin is assumed to be installed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def make_app(path, **options):
    """The app as the command builds it, with a frozen clock, no GPUs and quick polling."""
    options.setdefault("clock", lambda: NOW)
    options.setdefault("gpu_probe", lambda: [])
    options.setdefault("poll_s", 0.1)
    return create_app(str(path), **options)


async def wait_for(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until predicate() is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # widgets not there yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


def plain(widget, width: int = 200) -> str:
    """What a Static shows, as text."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(widget.content)
    return console.export_text()


def cell(table, row_key: str, column: str) -> str:
    return table.get_cell(row_key, column).plain.strip()


async def open_experiment(pilot, name: str, curves: bool = True):
    """From the experiments list: put the cursor on `name`, press enter, wait for the runs (and
    the first run's curves)."""
    from tui.screens.experiment import ExperimentScreen
    from tui.widgets.tables import ExperimentsTable, RunsTable

    app = pilot.app
    await wait_for(pilot, lambda: app.screen.query_one(ExperimentsTable).row_count > 0, what="experiments")
    table = app.screen.query_one(ExperimentsTable)
    row = next(i for i in range(table.row_count) if table.get_row_at(i)[1].plain.strip() == name)
    table.move_cursor(row=row)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen), what="the experiment view")
    screen = app.screen
    await wait_for(pilot, lambda: screen.query_one(RunsTable).row_count > 0 and (screen.follow.after_id > 0 or not curves),
                   what="runs and curves")
    return screen


# ---- the command ------------------------------------------------------------------------------


def test_command_takes_db_from_option_env_or_default(monkeypatch):
    from tui.app import parse_args

    monkeypatch.delenv("POWERBERT_DB", raising=False)
    assert str(create_app(parse_args([]).db).db.path) == "runs.db"
    monkeypatch.setenv("POWERBERT_DB", "/data/env.db")
    assert str(create_app(parse_args([]).db).db.path) == "/data/env.db"
    assert str(create_app(parse_args(["--db", "/data/opt.db"]).db).db.path) == "/data/opt.db"


def test_dashboard_starts_without_importing_torch():
    """The first screen draws at once: torch and scipy load later, in a worker thread."""
    import subprocess

    code = "import sys, tui.app; print(sorted(m for m in ('torch', 'scipy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


# ---- the experiments list ---------------------------------------------------------------------


@run_async
async def test_experiments_list_newest_first_with_best_score(db_path):
    from tui.widgets.tables import ExperimentsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExperimentsTable).row_count == 2)
        table = app.screen.query_one(ExperimentsTable)
        names = [table.get_row_at(i)[1].plain.strip() for i in range(2)]
        assert names == ["beta", "alpha"]
        with Store(db_path) as store:
            # the best overall over every task: an ensemble scheme or the all-task run
            _, best = best_overall(store, store.get_experiment("alpha"))
        row = table.get_row_at(1)
        assert [c.plain.strip() for c in row[2:6]] == ["sst,para,sts", "MiniLM", "finished", "7/7"]
        assert row[7].plain.strip() == f"{best:.4f}"


@run_async
async def test_new_experiment_in_the_db_is_added_on_top(db_path):
    from tui.widgets.tables import ExperimentsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExperimentsTable).row_count == 2)
        table = app.screen.query_one(ExperimentsTable)
        with Store(db_path) as store:
            gamma = store.create_experiment("gamma", ("sst",), {}, None, [("sst",)])
            store.update_experiment(gamma.id, created_at=NOW)
        await wait_for(pilot, lambda: table.row_count == 3, what="the new experiment")
        assert [table.get_row_at(i)[1].plain.strip() for i in range(3)] == ["gamma", "beta", "alpha"]


# ---- the experiment view ----------------------------------------------------------------------


@run_async
async def test_experiment_view_shows_runs_and_updates_cells_in_place(db_path):
    from tui.widgets.tables import RunsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        table = screen.query_one(RunsTable)
        with Store(db_path) as store:
            runs = {r.subset: r for r in store.runs(store.get_experiment("beta").id)}
        assert table.row_count == 7
        running = str(runs["para+sts"].id)
        assert cell(table, running, "status") == "running"
        assert cell(table, running, "progress") == "1 25/40"
        assert cell(table, running, "elapsed") == "53:20"  # NOW - started_at, on the frozen clock
        assert cell(table, running, "eta") == "32:00"  # 15 steps left at 25 steps per 3200 s
        assert cell(table, str(runs["sst+sts"].id), "run") == "! sst+sts"  # lost runs stand out

        cleared = []
        table.clear = lambda *a, **k: cleared.append(a)  # the table must never be rebuilt
        with Store(db_path) as store:
            store.update_run(runs["para+sts"].id, step=31, loss=0.4321, best_scores={"para": 0.61, "sts": 0.4})
        await wait_for(pilot, lambda: cell(table, running, "loss") == "0.432", what="the loss cell")
        assert cell(table, running, "progress") == "1 31/40"
        assert cell(table, running, "para") == "0.610"
        assert table.row_count == 7 and not cleared


@run_async
async def test_selected_run_reads_only_new_metric_rows(db_path):
    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        with Store(db_path) as store:
            running = store.find_run("beta/para+sts")
        screen.query_one("#runs-table").move_to(str(running.id))
        await wait_for(pilot, lambda: screen.follow.run_id == running.id and len(screen.curves.get("loss")[0]) == 25)
        seen = screen.follow.after_id
        reads = []
        store = app.db.store()
        original = store.metrics
        store.metrics = lambda run_id, after_id=0, *a, **k: reads.append((run_id, after_id)) or original(run_id, after_id, *a, **k)
        with Store(db_path) as writer:
            writer.add_metrics(running.id, [(26, 1.3, "train", "loss", 0.5), (27, 1.35, "train", "loss", 0.49)])
        await wait_for(pilot, lambda: len(screen.curves.get("loss")[0]) == 27, what="the new loss points")
        assert reads and all(after >= seen for _, after in reads)
        assert screen.curves.get("loss")[1][-2:] == [0.5, 0.49]


@run_async
async def test_failed_and_lost_runs_say_why(db_path):
    from tui.widgets.log_tail import LogTail

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        with Store(db_path) as store:
            failed = store.find_run("beta/sst+para")
        screen.query_one("#runs-table").move_to(str(failed.id))
        await wait_for(pilot, lambda: "CUDA out of memory" in plain(screen.query_one("#run-detail")))
        log = screen.query_one(LogTail)
        await wait_for(pilot, lambda: any("Traceback" in line.text for line in log.lines), what="the stored log tail")


@run_async
async def test_log_tail_is_read_incrementally(db_path, tmp_path):
    from tui.widgets.log_tail import LogTail

    with Store(db_path) as store:
        running = store.find_run("beta/para+sts")
    log_path = Path(running.out_dir) / "worker.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("device cuda:0\nstep one\n")
    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        screen.query_one("#runs-table").move_to(str(running.id))
        log = screen.query_one(LogTail)
        await wait_for(pilot, lambda: [line.text for line in log.lines] == ["device cuda:0", "step one"])
        with open(log_path, "a") as f:
            f.write("step two\npartial")  # an unfinished line waits for its newline
        await wait_for(pilot, lambda: len(log.lines) == 3)
        assert [line.text for line in log.lines][-1] == "step two"
        assert screen.follow.log_offset == len("device cuda:0\nstep one\nstep two\n")


@run_async
async def test_stop_and_delete_from_the_keyboard(db_path):
    from tui.screens.confirm import ConfirmScreen
    from tui.widgets.tables import RunsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        table = screen.query_one(RunsTable)
        with Store(db_path) as store:
            running = store.find_run("beta/para+sts")
            failed = store.find_run("beta/sst+para")
        table.move_to(str(running.id))
        await wait_for(pilot, lambda: screen.follow.run_id == running.id)
        await pilot.press("d")  # refused: it is running
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("s")  # no live worker to signal: the status itself says stopped
        await wait_for(pilot, lambda: cell(table, str(running.id), "status") == "stopped", what="stopped")

        table.move_to(str(failed.id))
        await wait_for(pilot, lambda: screen.follow.run_id == failed.id)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 6, what="the deleted row to go")
        with Store(db_path) as store:
            assert [r.subset for r in store.runs(store.get_experiment("beta").id)].count("sst+para") == 0


@run_async
async def test_help_lists_the_keys_of_the_screen(db_path):
    from tui.screens.help import HelpScreen

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_experiment(pilot, "beta")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        from tui.screens.help import key_rows

        rows = {description: keys for keys, description in key_rows(app.screen.under)}
        assert rows["Stop the run"] == "s" and rows["Stop every run"] == "S / shift+s"
        assert {"Back", "Stop the run", "Resume the run", "Delete", "Results", "Playground", "Help", "Quit"} <= set(rows)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))


@run_async
async def test_gpu_panel_shows_each_device_and_hides_without_one(db_path):
    from tui.gpu import GIB, GpuStat

    gpus = [GpuStat(0, "NVIDIA H100 80GB HBM3", 12.5 * GIB, 80 * GIB, 45.0), GpuStat(1, "NVIDIA H100 80GB HBM3", 0, 80 * GIB, None)]
    app = make_app(db_path, gpu_probe=lambda: gpus)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        panel = screen.query_one("#gpu-panel")
        await wait_for(pilot, lambda: panel.display)
        lines = plain(panel).splitlines()
        assert lines[0].startswith("cuda:0 H100 80GB HBM3 12.5/80.0 GiB ██") and lines[0].endswith("45%")
        assert lines[1].startswith("cuda:1") and "0.0/80.0 GiB" in lines[1]
    app = make_app(db_path)  # no GPU: no panel
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        assert not screen.query_one("#gpu-panel").display


def test_gpu_probe_reads_nvidia_smi(monkeypatch):
    import subprocess

    from tui import gpu

    class Done:
        stdout = "0, NVIDIA H200, 1024, 143771, 7\n1, NVIDIA H200, 0, 143771, [N/A]\n"

    monkeypatch.setattr(gpu.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gpu.subprocess, "run", lambda *a, **k: Done())
    stats = gpu.probe_gpus()
    assert [(s.index, s.name, s.used, s.utilisation) for s in stats] == [
        (0, "NVIDIA H200", 1024 * 2**20, 7.0), (1, "NVIDIA H200", 0.0, None)]

    def broken(*a, **k):
        raise subprocess.CalledProcessError(9, "nvidia-smi")

    monkeypatch.setattr(gpu.subprocess, "run", broken)
    monkeypatch.setitem(sys.modules, "torch", None)  # and no torch to ask
    assert gpu.probe_gpus() == []


# ---- results and compare -----------------------------------------------------------------------


@run_async
async def test_results_table_and_scheme_choice(db_path):
    from tui.screens.results import ResultsScreen

    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#experiments-table").row_count == 2)
        app.screen.query_one("#experiments-table").move_cursor(row=1)  # alpha
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.report is not None)
        screen = app.screen
        names = [row.name for row in screen.report.rows]
        assert names[:7] == [subset_name(s) for s in power_set(TASKS3)]
        assert {"voting", "weighted", "single", "learned"} <= set(names)
        assert screen.report.analysis_scheme == "weighted"
        screen.query_one("#scheme").value = "voting"
        await wait_for(pilot, lambda: screen.report.analysis_scheme == "voting", what="the voting analysis")


@run_async
async def test_compare_two_experiments(db_path):
    from tui.screens.compare import CompareScreen

    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#experiments-table")
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("c")  # nothing marked: a warning, no screen
        assert not isinstance(app.screen, CompareScreen)
        await pilot.press("space", "down", "space", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.shown) == 2 and len(screen.curves) == 2, what="both experiments")
        assert screen.subset == "sst+para+sts" or screen.subset is not None
        assert len(screen.curves[screen.experiment_ids[0]].get("loss")[0]) > 0


# ---- a missing or unreadable database -------------------------------------------------------------


@run_async
async def test_missing_database_shows_a_message_and_keeps_running(tmp_path):
    path = tmp_path / "nothing-here" / "runs.db"
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        message = app.screen.query_one("#experiments-message")
        await wait_for(pilot, lambda: "no database at" in plain(message))
        assert "press n to start an experiment" in plain(message)
        await pilot.press("enter", "e", "p", "down")  # nothing to open: warnings, no crash
        polls = app.screen.polls
        await wait_for(pilot, lambda: app.screen.polls > polls + 2, what="polling to go on")
        assert not path.exists()  # looking never creates the database
        path.parent.mkdir()
        prepare_db(path, tmp_path / "runs")
        await wait_for(pilot, lambda: app.screen.query_one("#experiments-table").row_count == 2, what="recovery")
        assert not message.display


@run_async
async def test_unreadable_database_shows_a_message(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"this is not a database" * 100)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        message = app.screen.query_one("#experiments-message")
        await wait_for(pilot, lambda: "cannot read the database" in plain(message))
        polls = app.screen.polls
        await wait_for(pilot, lambda: app.screen.polls > polls + 2, what="polling to go on")


def test_locked_database_is_one_line():
    import sqlite3

    from tui.source import describe_error

    assert describe_error(sqlite3.OperationalError("database is locked")).startswith("database is locked")


# ---- the new-experiment form ----------------------------------------------------------------------


async def open_form(pilot):
    from tui.screens.new_experiment import NewExperimentScreen

    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, NewExperimentScreen))
    return pilot.app.screen


@run_async
async def test_form_refuses_bad_settings_inline(tmp_path, toy_data_dir):
    app = make_app(tmp_path / "runs.db")
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        error = form.query_one("#form-error")
        for task in TASKS:
            form.query_one(f"#task-{task}").value = False
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "choose at least one task" in plain(error))
        form.query_one("#task-sst").value = True
        form.query_one("#data-dir").value = str(tmp_path / "no-such-folder")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "does not exist" in plain(error), timeout=30)
        broken = tmp_path / "broken"
        broken.mkdir()
        for split in ("train", "dev"):
            (broken / f"ids-sst-{split}.csv").write_text("garbage without tabs\n\x00\x01\n")
        form.query_one("#data-dir").value = str(broken)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "ids-sst" in plain(error) and "checking" not in plain(error), timeout=30)
        assert "\n" not in str(error.content)  # one line
        form.query_one("#data-dir").value = str(toy_data_dir)
        form.query_one("#model").value = str(tmp_path / "no-model")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "no-model" in plain(error), timeout=30)
        assert not (tmp_path / "runs.db").exists()  # nothing was created


def _pids_alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


@pytest.mark.timeout(300)
@run_async
async def test_form_starts_an_experiment_that_trains_to_finished(tmp_path, tiny_model_dir, toy_data_dir, monkeypatch):
    """The real thing: a detached supervisor and its workers; quitting the dashboard midway
    stops nothing, and a new dashboard shows the runs through to finished."""
    from powerbert import experiments
    from tui.screens.experiment import ExperimentScreen
    from tui.widgets.tables import RunsTable

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POWERBERT_OUT", raising=False)
    path = tmp_path / "runs.db"
    app = make_app(path, clock=time.time, poll_s=0.2)
    try:
        async with app.run_test(size=SIZE) as pilot:
            form = await open_form(pilot)
            for task in TASKS:
                form.query_one(f"#task-{task}").value = task in ("sst", "sts")
            form.query_one("#data-dir").value = str(toy_data_dir)
            form.query_one("#model").value = str(tiny_model_dir)
            form.query_one("#epochs").value = "1"
            form.query_one("#max-train").value = "32"
            form.query_one("#gpus").value = "cpu"
            form.query_one("#parallel").value = "3"
            form.query_one("#name").value = "from-form"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen), timeout=60, what="the view")
            screen = app.screen
            await wait_for(pilot, lambda: screen.query_one(RunsTable).row_count == 3, what="three runs")
            # FINISHED counts too: on a fast machine a 32-row run can end between two polls
            await wait_for(pilot, lambda: any(r.status in (RunStatus.RUNNING, RunStatus.FINISHED) for r in screen.runs.values()),
                           timeout=60, what="a run to start")
        # the dashboard is gone; the experiment is not
        with Store(path) as store:
            experiment = store.get_experiment("from-form")
            assert experiment.config["train"]["epochs"] == 1 and experiment.config["train"]["max_train"] == 32
            assert experiments.supervisor_alive(experiment) or experiment.status == ExperimentStatus.FINISHED

        app = make_app(path, clock=time.time, poll_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_experiment(pilot, "from-form", curves=False)
            await wait_for(pilot, lambda: len(screen.runs) == 3 and all(r.status == RunStatus.FINISHED for r in screen.runs.values()),
                           timeout=180, what="every run to finish")
            table = screen.query_one(RunsTable)
            assert all(cell(table, str(i), "status") == "finished" for i in screen.runs)
            await wait_for(pilot, lambda: len(screen.curves.get("loss")[0]) > 0, what="the first run's loss curve")
    finally:
        with Store(path) as store:
            try:
                experiment = store.get_experiment("from-form")
            except Exception:
                experiment = None
            if experiment is not None:
                pids = [r.pid for r in store.runs(experiment.id) if r.pid]
                if experiments.supervisor_alive(experiment):
                    pids.append(experiment.supervisor_pid)
                    experiments.stop(store, "from-form", grace_s=10)
                    try:
                        os.killpg(experiment.supervisor_pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 30
                while _pids_alive(pids) and time.monotonic() < deadline:
                    time.sleep(0.2)
                for pid in _pids_alive(pids):
                    os.kill(pid, signal.SIGKILL)


# ---- the playground -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory, tiny_model_dir, toy_data_dir):
    """A tiny finished three-task experiment, trained in this process (7 tiny runs)."""
    from powerbert import experiments
    from powerbert.config import TrainConfig
    from powerbert.results import ensemble_experiment
    from powerbert.worker import run_worker

    root = tmp_path_factory.mktemp("tiny-exp")
    path = root / "runs.db"
    config = TrainConfig(tasks=TASKS3, data_dir=str(toy_data_dir), model=str(tiny_model_dir), epochs=1, max_train=32,
                         batch_size=16, lr=1e-3, precision="fp32", checkpoint_every_s=1e9)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Store(path) as store:
            exp = experiments.create_experiment(store, config, name="tiny", out_root=root / "runs")
            for run in store.runs(exp.id):
                assert run_worker(str(path), run.id, "cpu") == 0
            ensemble_experiment(store, exp.id)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return path


async def _predict(pilot, screen, first: str, second: str = "") -> None:
    answered = screen.answered
    screen.query_one("#first").value = first
    screen.query_one("#second").value = second
    screen.query_one("#first").focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.answered > answered, timeout=60, what="the prediction")


@run_async
async def test_playground_shows_every_model_and_ensemble(tiny_experiment):
    from tui.screens.playground import PlaygroundScreen

    app = make_app(tiny_experiment)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#experiments-table").row_count == 1)
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PlaygroundScreen))
        screen = app.screen
        await pilot.press("enter")  # empty: a message, not a crash
        assert "type a sentence first" in plain(screen.query_one("#play-status"))
        await wait_for(pilot, lambda: screen.loaded is not None, timeout=120, what="the models to load")
        assert not screen.query_one("#play-loading").display
        output = screen.query_one("#play-output")

        await _predict(pilot, screen, "a great movie .")
        text = plain(output)
        for model in ("sst", "sst+para", "sst+sts", "sst+para+sts"):
            assert model in text
        for scheme in ("voting", "weighted", "single", "learned"):
            assert scheme in text
        assert "para" not in text.split("sst ·", 1)[0]

        await _predict(pilot, screen, "what about cats ?", "why do i like cats ?")
        text = plain(output)
        assert "para · Quora paraphrase" in text and "sts · STS similarity" in text
        assert "/ 5" in text and "p(para)" in text

        await _predict(pilot, screen, "😀🎬 très bien — ok? \u202e\u200d")
        assert "sst ·" in plain(output)
        await _predict(pilot, screen, "great " * 2000)
        assert "truncated" in plain(output)
        await _predict(pilot, screen, "\x00\x01\x02")
        assert "control characters" in plain(output) or "nothing the tokenizer" in plain(output)
        assert screen.is_attached
