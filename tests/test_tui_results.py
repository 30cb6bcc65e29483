"""The dashboard's results and compare views, and a missing, unreadable or locked database.

Run: python -m pytest tests/test_tui_results.py -q
"""

from __future__ import annotations

import pytest

from powerbert.results import DEFAULT_SCHEME
from powerbert.tasks import power_set, subset_name
from tests.tui_harness import SIZE, TASKS3, make_app, plain, prepare_db, run_async, wait_for

pytestmark = pytest.mark.timeout(240)


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
        assert screen.report.analysis_scheme == DEFAULT_SCHEME == "voting"
        screen.query_one("#scheme").value = "learned"
        await wait_for(pilot, lambda: screen.report.analysis_scheme == "learned", what="the learned analysis")


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

    from powerbert.store import DATABASE_LOCKED
    from tui.source import describe_error

    assert describe_error(sqlite3.OperationalError(DATABASE_LOCKED)).startswith(DATABASE_LOCKED)


