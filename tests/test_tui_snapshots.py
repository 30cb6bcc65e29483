"""Snapshots (pytest-textual-snapshot) of the dashboard's main screens at 80x24 and 120x40.

The app is built by `tui.app.create_app`, as `powerbert-tui` builds it, on the database of
tests/tui_harness.py's `prepare_db` (fixed timestamps), with a frozen clock, no GPUs, the time
zone set to UTC and a relative database path, so every run draws the same screen. The running
run has a worker.log with lines longer than the log pane (they wrap). Each snapshot waits for
its data on a condition before it is taken.

Run: python -m pytest tests/test_tui_snapshots.py -q   (--snapshot-update after a deliberate change)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.tui_harness import NOW, add_four_task_experiment, fake_plan, prepare_db, wait_for
from tui.app import create_app

pytestmark = pytest.mark.timeout(120)

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def snap_app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    prepare_db(Path("runs.db"), Path("runs"))
    log = Path("runs/beta/para+sts/worker.log")
    log.parent.mkdir(parents=True)
    log.write_text("device cuda:0; training rows per epoch: para 2000, sts 1000; dev rows: para 400, sts 200; "
                   "40 steps from step 0\nepoch 1 dev: para 0.5500  sts 0.4000  overall 0.6083  (best)\n")
    yield create_app("runs.db", clock=lambda: NOW, gpu_probe=lambda: [], planner=fake_plan)
    monkeypatch.undo()
    time.tzset()


async def _experiments(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.screen.query_one("#experiments-table").row_count == 2)


async def _experiment(pilot) -> None:
    from powerbert.store import Store
    from tests.tui_harness import open_experiment

    screen = await open_experiment(pilot, "beta")
    with Store("runs.db") as store:
        running = store.find_run("beta/para+sts")
    screen.query_one("#runs-table").move_to(str(running.id))
    await wait_for(pilot, lambda: screen.follow.run_id == running.id and len(screen.curves.get("loss")[0]) == 25)
    await wait_for(pilot, lambda: len(screen.query_one("#log").texts) == 2)


async def _results(pilot) -> None:
    await _experiments(pilot)
    pilot.app.screen.query_one("#experiments-table").move_cursor(row=1)  # alpha
    await pilot.press("e")
    await wait_for(pilot, lambda: getattr(pilot.app.screen, "report", None) is not None, timeout=30)


async def _form(pilot) -> None:
    await _experiments(pilot)
    await pilot.press("n")
    await wait_for(pilot, lambda: pilot.app.screen.id == "new-experiment")
    await wait_for(pilot, lambda: pilot.app.screen.estimate is not None, what="the estimate")  # fake_plan's


async def _help(pilot) -> None:
    await _experiments(pilot)
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: pilot.app.screen.id == "help")


async def _compare(pilot) -> None:
    await _experiments(pilot)
    await pilot.press("space", "down", "space", "c")
    await wait_for(pilot, lambda: pilot.app.screen.id == "compare")
    screen = pilot.app.screen
    await wait_for(pilot, lambda: len(screen.shown) == 2 and len(screen.curves) == 2, timeout=30)


SCREENS = {
    "experiments": _experiments,
    "experiment": _experiment,
    "results": _results,
    "new_experiment": _form,
    "help": _help,
    "compare": _compare,
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare, snap_app, screen, size):
    assert snap_compare(snap_app, terminal_size=size, run_before=SCREENS[screen])


async def _experiments_long_name(pilot) -> None:
    """A default-named experiment: at 80 columns the model column goes, the rest shows whole."""
    from powerbert.store import Store

    with Store("runs.db") as store:
        gamma = store.create_experiment("sst+para+sts-20231115-011320", ("sst", "para", "sts"), {}, None, [("sst",)])
        store.update_experiment(gamma.id, created_at=NOW)
    await wait_for(pilot, lambda: pilot.app.screen.query_one("#experiments-table").row_count == 3)


def test_experiments_with_a_long_name_at_80_columns(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=_experiments_long_name)


async def _four_tasks(pilot) -> None:
    """Four tasks, 15 runs, at 80 columns: the score columns that do not fit go (the last
    task's first), what shows is whole, and the line under the table has every score of the
    selected run (the one on all four tasks, running)."""
    from powerbert.store import Store
    from tests.tui_harness import open_experiment

    add_four_task_experiment(Path("runs.db"), Path("runs"))
    await wait_for(pilot, lambda: pilot.app.screen.query_one("#experiments-table").row_count == 3)
    screen = await open_experiment(pilot, "quad", curves=False)
    with Store("runs.db") as store:
        full = store.find_run("quad/sst+para+sts+cfimdb")
    screen.query_one("#runs-table").move_to(str(full.id))
    await wait_for(pilot, lambda: screen.follow.run_id == full.id and len(screen.curves.get("loss")[0]) == 25)


def test_experiment_with_four_tasks_at_80_columns(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=_four_tasks)
