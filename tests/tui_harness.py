"""What the dashboard tests share: a prepared runs.db, the app as the command builds it, and
ways to wait and read what it shows.

`prepare_db` builds a database with the Store API: two experiments with fixed timestamps,
runs in every status, metrics, dev outputs and ensemble results (the snapshot tests use it
too). Waiting is always on a condition (`wait_for`), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from pathlib import Path

import numpy as np

from powerbert.outputs import TaskOutputs
from powerbert.store import ExperimentStatus, RunStatus, Store
from powerbert.tasks import TASKS, power_set
from tests.fixtures import noisy_outputs
from tui.app import create_app

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: every stored time is fixed from this
NOW = T0 + 3 * 3600  # the dashboard's clock in these tests
FOREVER = 4_102_444_800.0  # a heartbeat in 2100: a run with no pid stays "alive" (liveness.py)
TASKS3 = ("sst", "para", "sts")
TASKS4 = ("sst", "para", "sts", "cfimdb")
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
        out[task] = TaskOutputs(task, [f"{task}{i}" for i in range(n)], g, np.round(noisy_outputs(task, g, rng), 6))
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
    from powerbert.results.evaluate import ensemble_experiment

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


def add_four_task_experiment(path: Path, out_root: Path, name: str = "quad") -> int:
    """A third experiment, the newest: four tasks (15 runs), finished, failed, stopped, running
    on two GPUs and queued ones, with best scores but no dev outputs. Returns its id."""
    config = {"train": {"tasks": list(TASKS4), "model": None, "epochs": 2}, "profile": "demo",
              "launch": {"gpus": [0, 1], "runs_per_gpu": 1, "max_parallel": 1}}
    start = T0 + 9000
    with Store(path) as store:
        exp = store.create_experiment(name, TASKS4, config, str(out_root / name), power_set(TASKS4))
        store.update_experiment(exp.id, status=ExperimentStatus.RUNNING, created_at=start, started_at=start)
        runs = {r.subset: r for r in store.runs(exp.id)}

        def scores(run, k: int) -> dict[str, float]:
            return {t: round(0.42 + 0.031 * ((k + 3 * i) % 7), 4) for i, t in enumerate(run.tasks)}

        finished = ("sst", "para", "sts", "cfimdb", "sst+para", "sst+sts", "para+sts", "sts+cfimdb")
        for k, subset in enumerate(finished):
            run = runs[subset]
            best = scores(run, k)
            store.update_run(
                run.id, status=RunStatus.FINISHED, device=f"cuda:{k % 2}", epoch=2, step=40, total_steps=40,
                loss=round(0.3 + 0.01 * k, 4), best_scores=best, best_overall=round(sum(best.values()) / len(best), 4),
                attempt=1, exit_code=0, started_at=start + 60 * k, ended_at=start + 60 * k + 700 + 7 * k,
            )
        failed = runs["sst+cfimdb"]
        store.update_run(failed.id, status=RunStatus.FAILED, device="cuda:0", epoch=0, step=13, total_steps=40,
                         loss=1.234, attempt=1, exit_code=1, error="RuntimeError: CUDA out of memory",
                         started_at=start + 600, ended_at=start + 700)
        stopped = runs["para+cfimdb"]
        store.update_run(stopped.id, status=RunStatus.STOPPED, device="cuda:1", epoch=1, step=22, total_steps=40,
                         loss=0.77, best_scores=scores(stopped, 9), best_overall=0.5105, attempt=1,
                         started_at=start + 650, ended_at=start + 1400)
        for device, subset, step in (("cuda:0", "sst+para+sts", 31), ("cuda:1", "sst+para+sts+cfimdb", 25)):
            run = runs[subset]
            _curve(store, run.id, step, run.tasks)
            best = scores(run, step)
            store.update_run(
                run.id, status=RunStatus.RUNNING, device=device, host="gpu-box", epoch=1, step=step, total_steps=40,
                loss=0.512, best_scores=best, best_overall=round(sum(best.values()) / len(best), 4), attempt=1,
                started_at=start + 1500, heartbeat_at=FOREVER,
            )
        return exp.id


def run_async(test):
    """Run an async test in a fresh event loop (no asyncio plugin is assumed to be installed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


FAKE_RUN_S = 150.0  # what fake_plan says each run takes, one slot after another
FAKE_RUN_BYTES = 90_000_000


def fake_plan(config, subsets, launch, *, keep_resume_state: bool = False, on_message=lambda text: None):
    """plan_experiment's answer without calibrating or reading data: 150 s and 90 MB a run, on
    one slot (the form's estimate in tests that are not about it, and in snapshots)."""
    from powerbert.runner.plan import Plan, RunEstimate
    from powerbert.tasks import subset_name

    runs = [RunEstimate(subset_name(s), {}, 10, config.epochs, FAKE_RUN_S, "cpu", i * FAKE_RUN_S) for i, s in enumerate(subsets)]
    disk = len(runs) * FAKE_RUN_BYTES
    return Plan(runs, ["cpu"], len(runs) * FAKE_RUN_S, disk, disk, None)


def make_app(path, **options):
    """The app as the command builds it, with a frozen clock, no GPUs, quick polling and the
    fake planner (a test of the estimate passes planner=None, the real one)."""
    options.setdefault("clock", lambda: NOW)
    options.setdefault("gpu_probe", lambda: [])
    options.setdefault("poll_s", 0.1)
    options.setdefault("planner", fake_plan)
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

