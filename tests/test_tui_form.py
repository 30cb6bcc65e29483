"""The dashboard's new-experiment form: inline refusals, and the real thing: a detached supervisor
and its workers started from the form, training to finished after the dashboard quits.

Run: python -m pytest tests/test_tui_form.py -q
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from powerbert.store import ExperimentStatus, RunStatus, Store
from powerbert.tasks import TASKS
from tests.tui_harness import SIZE, cell, make_app, open_experiment, plain, run_async, wait_for

pytestmark = pytest.mark.timeout(240)


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


FIELDS = ["task-sst", "task-para", "task-sts", "task-cfimdb", "data-dir", "model", "profile", "epochs",
          "max-train", "gpus", "parallel", "name", "start", "cancel"]  # as shown, top to bottom


@run_async
async def test_tab_walks_the_fields_in_order_and_typing_goes_into_the_focused_one(tmp_path):
    """Typed text landed in the wrong field: the form itself took the first focus and a tab
    stop of its own. Now the first task box has the focus, each Tab moves to the next field
    shown, and what is typed after a Tab goes into that field."""
    from textual.widgets import Input

    app = make_app(tmp_path / "runs.db")
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        await wait_for(pilot, lambda: app.focused is not None and app.focused.id == FIELDS[0], what="the first field")
        typed = {"data-dir": "/data/cs224n", "model": "bert-base-uncased", "epochs": "3", "max-train": "500",
                 "gpus": "0,1", "parallel": "2", "name": "tabbed"}
        order = [app.focused.id]
        for _ in FIELDS[1:]:
            await pilot.press("tab")
            order.append(app.focused.id)
            if app.focused.id in typed:
                await pilot.press(*typed[app.focused.id])
        assert order == FIELDS
        await pilot.press("tab")  # round again, with no stop between
        assert app.focused.id == FIELDS[0]
        await pilot.press("shift+tab")
        assert app.focused.id == FIELDS[-1]
        assert {i.id: i.value for i in form.query(Input)} == typed  # "parallel": 2 replaced the 1


@run_async
async def test_task_boxes_differ_in_shape_not_only_in_colour(tmp_path):
    from textual.widgets import Checkbox

    app = make_app(tmp_path / "runs.db")
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        boxes = {box.id: box for box in form.query(Checkbox)}

        def drawn(box) -> str:
            return box.render().plain

        await wait_for(pilot, lambda: all(drawn(b) for b in boxes.values()))
        assert "✔" in drawn(boxes["task-sst"]) and "✔" not in drawn(boxes["task-cfimdb"])  # cfimdb: off
        assert drawn(boxes["task-sst"]).replace("✔", " ").replace("sst", "cfimdb") == drawn(boxes["task-cfimdb"])
        boxes["task-sst"].focus()
        await pilot.press("space")  # untick: the tick goes
        await wait_for(pilot, lambda: "✔" not in drawn(boxes["task-sst"]), what="the tick to go")
        assert boxes["task-sst"].value is False


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
    from powerbert.runner import experiments
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


