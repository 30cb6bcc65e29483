"""The dashboard's new-experiment form: inline refusals, and the real thing: a detached supervisor
and its workers started from the form, training to finished after the dashboard quits.

Run: python -m pytest tests/test_tui_form.py -q
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from powerbert.store import ExperimentStatus, RunStatus, Store
from powerbert.tasks import TASKS
from tests.tui_harness import SIZE, cell, fake_plan, make_app, open_experiment, plain, run_async, wait_for

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


FIELDS = ["task-sst", "task-para", "task-sts", "task-cfimdb", "subsets", "data-dir", "model", "profile", "epochs",
          "max-train", "backend", "gpus", "parallel", "name", "start", "cancel"]  # as shown, top to bottom (local backend)


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
        typed = {"subsets": "pairs", "data-dir": "/data/cs224n", "model": "bert-base-uncased", "epochs": "3", "max-train": "500",
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
        # "parallel": 2 replaced the 1; the Ray backend's fields (hidden) kept their defaults
        assert {i.id: i.value for i in form.query(Input) if i.parent.display} == typed
        assert {i.id: i.value for i in form.query(Input) if not i.parent.display} == {"ray-address": "", "ray-gpus": "1", "ray-cpus": "1"}


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


# ---- subsets, the estimate, declared tasks -------------------------------------------------------


def _fill(form, tasks, data_dir, model) -> None:
    for box in form.query("TickBox"):
        box.value = box.id.removeprefix("task-") in tasks
    form.query_one("#data-dir").value = str(data_dir)
    form.query_one("#model").value = str(model)
    form.query_one("#gpus").value = "cpu"


@run_async
async def test_subsets_choose_the_runs_and_a_bad_value_starts_nothing(tmp_path, tiny_model_dir, toy_data_dir, monkeypatch):
    """The form takes --subsets' grammar: a part it cannot read is the form's one-line error and
    nothing is created; 'singles,full' makes those four runs, and the estimate counts them."""
    from powerbert.runner import experiments
    from tui.screens.experiment import ExperimentScreen

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POWERBERT_OUT", raising=False)
    launched = []
    monkeypatch.setattr(experiments, "launch", lambda db, store, experiment: launched.append(experiment.name) or 0)
    app = make_app(tmp_path / "runs.db")  # fake_plan: 150 s and 90 MB a run
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        assert form.query_one("#subsets").placeholder == "all; or singles, pairs, full, upto:K, sst+para"
        _fill(form, ("sst", "para", "sts"), toy_data_dir, tiny_model_dir)
        error, estimate = form.query_one("#form-error"), form.query_one("#estimate")
        await wait_for(pilot, lambda: plain(estimate).strip() == "7 runs · about 0:17:30 · 630.0 MB when done",
                       what="the power set's estimate")
        form.query_one("#subsets").value = "sst+nope"
        expected = "subsets 'sst+nope': nope is not among the tasks (sst, para, sts)"
        await wait_for(pilot, lambda: expected in plain(estimate) and estimate.has_class("error"), what="the estimate's refusal")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: expected in plain(error), what="the form's refusal")
        assert "--subsets" not in plain(error) and "\n" not in str(error.content)
        assert not (tmp_path / "runs.db").exists() and not launched

        form.query_one("#subsets").value = "singles,full"
        form.query_one("#name").value = "chosen"
        await wait_for(pilot, lambda: plain(estimate).strip() == "4 runs · about 0:10:00 · 360.0 MB when done",
                       what="the estimate of four runs")
        assert [r.subset for r in form.estimate.runs] == ["sst", "para", "sts", "sst+para+sts"]
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen), timeout=60, what="the experiment view")
    with Store(tmp_path / "runs.db") as store:
        runs = store.runs(store.get_experiment("chosen").id)
    assert [r.subset for r in runs] == ["sst", "para", "sts", "sst+para+sts"]
    assert launched == ["chosen"]


@run_async
async def test_estimate_follows_the_form_calibrating_once(tmp_path, tiny_model_dir, toy_data_dir, monkeypatch):
    """The real planner: the first estimate calibrates the tiny model on the CPU (the line says
    so meanwhile), later ones use the cache; epochs and subsets change it; typing starts one
    estimate, not one per key; missing data and bad subsets are the line's text."""
    from powerbert.errors import ConfigError
    from powerbert.runner.plan import plan_experiment

    monkeypatch.setenv("POWERBERT_CACHE", str(tmp_path / "cache"))
    calls = []

    def planner(config, subsets, launch, **options):
        if config.model != str(tiny_model_dir):  # the form's defaults, before the test fills it in
            raise ConfigError("not the model under test")
        calls.append([len(s) for s in subsets])
        return plan_experiment(config, subsets, launch, **options)

    app = make_app(tmp_path / "runs.db", planner=planner)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        _fill(form, ("sst", "para", "sts"), toy_data_dir, tiny_model_dir)
        form.query_one("#epochs").value = "1"
        form.query_one("#max-train").value = "32"
        estimate = form.query_one("#estimate")
        await wait_for(pilot, lambda: "calibrating this device once" in plain(estimate), timeout=60, what="the calibration")
        assert plain(estimate).strip() == "estimating… (calibrating this device once)"
        await wait_for(pilot, lambda: form.estimate is not None, timeout=180, what="the first estimate")
        first = form.estimate
        assert len(first.runs) == 7 and not first.calibration.cached and first.wall_seconds > 0
        assert re.fullmatch(r"7 runs · about \d+:\d\d:\d\d · [\d.]+ [KMG]?B when done", plain(estimate).strip())

        form.query_one("#epochs").value = "3"
        await wait_for(pilot, lambda: form.estimate is not None and form.estimate.runs[0].epochs == 3, timeout=60,
                       what="the estimate of three epochs")
        assert form.estimate.calibration.cached and form.estimate.wall_seconds > first.wall_seconds

        before = len(calls)
        form.query_one("#subsets").focus()
        await pilot.press(*"singles")
        await wait_for(pilot, lambda: plain(estimate).startswith("3 runs "), timeout=60, what="the singles' estimate")
        assert len(calls) - before < len("singles")  # not one per key
        assert calls[-1] == [1, 1, 1]

        form.query_one("#data-dir").value = str(tmp_path / "no-such-folder")
        await wait_for(pilot, lambda: "no-such-folder" in plain(estimate) and estimate.has_class("error"), timeout=60,
                       what="the missing data in the estimate")
        assert "\n" not in str(estimate.content) and form.estimate is None
        form.query_one("#data-dir").value = str(toy_data_dir)
        form.query_one("#subsets").value = "upto:x"
        await wait_for(pilot, lambda: "subsets 'upto:x': expected upto:K" in plain(estimate), what="the bad subsets")
        assert not (tmp_path / "runs.db").exists()


# ---- the Ray backend -------------------------------------------------------------------------------


async def _choose_ray(pilot, form) -> None:
    form.query_one("#backend").value = "ray"
    await wait_for(pilot, lambda: form.query_one("#ray-cpus").display and not form.query_one("#gpus").parent.display,
                   what="the Ray backend's fields")


@run_async
async def test_ray_backend_shows_its_fields_and_refuses_a_bad_value_inline(tmp_path, tiny_model_dir, toy_data_dir, monkeypatch):
    """With ray chosen, the cluster's fields show (address, GPUs and CPUs per run) in place of
    GPUs and parallel runs; the estimate is the run count with no planning (it would join the
    cluster); a value check_launch refuses is its one line, in the form's words, and nothing
    is created."""
    from powerbert.runner import experiments

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POWERBERT_OUT", raising=False)
    launched, planned = [], []
    monkeypatch.setattr(experiments, "launch", lambda db, store, experiment: launched.append(experiment.name) or 0)

    def planner(config, subsets, launch, **options):
        planned.append(launch)
        return fake_plan(config, subsets, launch, **options)

    app = make_app(tmp_path / "runs.db", planner=planner)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        for ray_field in ("ray-address", "ray-gpus", "ray-cpus"):  # hidden on the local backend
            assert not form.query_one(f"#{ray_field}").parent.display
        _fill(form, ("sst", "para", "sts"), toy_data_dir, tiny_model_dir)
        estimate, error = form.query_one("#estimate"), form.query_one("#form-error")
        await wait_for(pilot, lambda: plain(estimate).startswith("7 runs · about"), what="the local estimate")
        await _choose_ray(pilot, form)
        assert "$RAY_ADDRESS, then auto" in form.query_one("#ray-address").placeholder
        assert form.query_one("#ray-gpus").value == "1" and form.query_one("#ray-cpus").value == "1"
        await wait_for(pilot, lambda: plain(estimate).strip() == "7 runs on the Ray cluster · time and disk: powerbert plan --backend ray",
                       what="the Ray backend's estimate line")
        assert all(launch.get("backend") != "ray" for launch in planned)  # the planner never joined a cluster

        form.query_one("#ray-cpus").value = "-1"
        expected = "CPUs per run -1: expected 0 or more"
        await wait_for(pilot, lambda: expected in plain(estimate) and estimate.has_class("error"), what="the estimate's refusal")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: expected in plain(error), what="the form's refusal")
        assert "\n" not in str(error.content) and "--" not in plain(error)
        form.query_one("#ray-cpus").value = "0"
        form.query_one("#ray-gpus").value = "0"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "expected a run to ask for some CPU or GPU" in plain(error), what="the second refusal")
    assert not (tmp_path / "runs.db").exists() and not (tmp_path / "runs").exists() and not launched
    assert all(launch.get("backend") != "ray" for launch in planned)


@run_async
async def test_ray_backend_with_no_cluster_is_one_line_and_creates_nothing(tmp_path, tiny_model_dir, toy_data_dir, monkeypatch):
    """Start with ray runs the CLI's preflight (preflight_folder) in a worker, for real: with
    $RAY_ADDRESS where nothing listens it is one line in the form, and nothing is created."""
    from powerbert.runner import experiments

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POWERBERT_OUT", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    launched = []
    monkeypatch.setattr(experiments, "launch", lambda db, store, experiment: launched.append(experiment.name) or 0)
    app = make_app(tmp_path / "runs.db")
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        _fill(form, ("sst", "sts"), toy_data_dir, tiny_model_dir)
        await _choose_ray(pilot, form)
        error = form.query_one("#form-error")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "cannot reach the Ray cluster" in plain(error), timeout=60, what="the refusal")
        assert "cannot reach the Ray cluster at 127.0.0.1:1" in plain(error) and "\n" not in str(error.content)
        assert not form.query_one("#start").disabled
    assert not (tmp_path / "runs.db").exists() and not (tmp_path / "runs").exists() and not launched


TICKETS = """\
[tasks.tickets]
files = "data/tickets-{split}.jsonl"
text = ["body"]
label = "queue"
kind = "classify"
labels = ["billing", "bug"]
metric = "accuracy"
"""


def _write_task_file(folder, name: str = "tickets", file: str = "powerbert.toml") -> None:
    import json

    (folder / "data").mkdir(exist_ok=True)
    for split in ("train", "dev"):
        rows = [{"body": f"{word} ticket {i}", "queue": queue} for i in range(6)
                for word, queue in (("money", "billing"), ("crash", "bug"))]
        (folder / "data" / f"{name}-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / file).write_text(TICKETS.replace("tickets", name))


@run_async
async def test_tasks_declared_in_powerbert_toml_get_boxes(tmp_path, monkeypatch):
    """./powerbert.toml is read at start: its task has a box after the built-in ones, in the tab
    order, ticked (it is not optional), and the estimate counts it; a task declared after the
    form opened gets its box too. (conftest's task_registry forgets them afterwards.)"""
    from powerbert.data.taskfile import load_declared_tasks
    from tui.messages import TasksDeclared

    _write_task_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    app = make_app(tmp_path / "runs.db")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.tasks_declared is not None, timeout=30, what="powerbert.toml read")
        assert app.tasks_declared.names == ["tickets"] and app.tasks_declared.error is None
        form = await open_form(pilot)
        boxes = [box.id for box in form.query("TickBox")]
        assert boxes == ["task-sst", "task-para", "task-sts", "task-cfimdb", "task-tickets"]
        assert form.query_one("#task-tickets").value is True
        await wait_for(pilot, lambda: plain(form.query_one("#estimate")).startswith("15 runs "), what="four tasks' estimate")
        form.query_one("#task-cfimdb").focus()
        await pilot.press("tab")
        assert app.focused.id == "task-tickets"
        await pilot.press("tab")
        assert app.focused.id == "subsets"

        _write_task_file(tmp_path, "late", "late.toml")
        load_declared_tasks(tmp_path / "late.toml")
        app.post_message(TasksDeclared(["late"]))
        await wait_for(pilot, lambda: [box.id for box in form.query("TickBox")][-2:] == ["task-tickets", "task-late"],
                       what="the late task's box")
        await wait_for(pilot, lambda: plain(form.query_one("#estimate")).startswith("31 runs "), what="five tasks' estimate")


@run_async
async def test_a_bad_powerbert_toml_is_one_line_and_the_dashboard_goes_on(tmp_path, monkeypatch):
    (tmp_path / "powerbert.toml").write_text("[tasks.tickets\ntext = 1\n")
    monkeypatch.chdir(tmp_path)
    app = make_app(tmp_path / "runs.db")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.tasks_declared is not None, timeout=30, what="powerbert.toml read")
        assert "powerbert.toml:1: not valid TOML" in app.tasks_declared.error
        form = await open_form(pilot)
        assert "not valid TOML" in plain(form.query_one("#form-error"))
        assert [box.id for box in form.query("TickBox")] == [f"task-{t}" for t in ("sst", "para", "sts", "cfimdb")]


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


