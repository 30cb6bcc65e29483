"""How the dashboard reports a run's progress: epochs from 1, the ETA of a resumed run from
this attempt's steps (powerbert.views.attempt_start_step, eta_seconds), and the step a stopped,
failed or lost run resumes from, read without importing torch. Then the same in the experiment
view, driven with Textual's pilot.

Run: python -m pytest tests/test_tui_progress.py -q
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from powerbert.store import Run, RunStatus, Store
from powerbert.views import attempt_start_step, eta_seconds
from tests.tui_harness import NOW, SIZE, cell, make_app, open_experiment, plain, run_async, wait_for
from tui.rows import current_epoch, run_cells, run_detail

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent


def _run(**fields) -> Run:
    values = dict(id=1, experiment_id=1, subset="sst", kind="powerset", status=RunStatus.RUNNING)
    values.update(fields)
    return Run(**values)


# ---- epochs --------------------------------------------------------------------------------------


def test_epochs_read_from_one():
    # the store counts epochs done (the worker records int(step / steps per epoch))
    assert current_epoch(_run(epoch=0, step=3, total_steps=40)) == 1
    assert current_epoch(_run(epoch=1, step=25, total_steps=40)) == 2
    assert current_epoch(_run(epoch=2, step=40, total_steps=40)) == 2  # all steps done: the last
    assert current_epoch(_run(status=RunStatus.FINISHED, epoch=2, step=40, total_steps=40)) == 2
    assert current_epoch(_run(epoch=None)) is None
    cells = run_cells(_run(epoch=0, step=3, total_steps=40, started_at=NOW - 30, attempt=1), ("sst",), NOW)
    assert cells[3].plain == "1 3/40"
    assert "epoch 1 of 2, step 3 of 40" in run_detail(_run(epoch=0, step=3, total_steps=40), epochs=2).plain


# ---- the ETA of a resumed run ------------------------------------------------------------------


def test_eta_counts_only_this_attempts_steps():
    """The report: 32/50 a minute after resuming at step 30. 2 steps a minute leaves 9:00, not
    the 0:12 that counting every step from this attempt's start gave."""
    run = _run(step=32, total_steps=50, started_at=NOW - 60, attempt=2)
    assert eta_seconds(run, NOW, start_step=30) == pytest.approx(540)
    assert eta_seconds(run, NOW) is None  # a resumed run without its start step has no pace
    assert eta_seconds(run, NOW, start_step=32) is None  # nothing trained yet in this attempt
    first = _run(step=25, total_steps=40, started_at=NOW - 3200, attempt=1)
    assert eta_seconds(first, NOW) == pytest.approx(15 * 3200 / 25)  # a first attempt counts from 0


def _set_times(path: Path, run_id: int, steps: range, at: float) -> None:
    """Give rows a fixed write time (add_metrics stamps the real clock)."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE metrics SET time = ? WHERE run_id = ? AND step BETWEEN ? AND ?",
                   (at, run_id, steps.start, steps.stop - 1))


def test_attempt_start_step_is_the_last_step_written_before_the_attempt(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        exp = store.create_experiment("e", ("sst", "para"), {}, None, [("sst",), ("para",)])
        run, other = store.runs(exp.id)
        # the first attempt trained 1000 steps; another run's rows interleave the ids
        for start in range(1, 1001, 100):
            store.add_metrics(run.id, [(s, s / 100, "train", "loss", 1.0) for s in range(start, start + 100)])
            store.add_metrics(other.id, [(s, s / 100, "train", "loss", 1.0) for s in range(start, start + 37)])
        _set_times(path, run.id, range(1, 1001), NOW - 500)
        # the resume: rows after the checkpoint (step 700) go, then this attempt writes its own
        store.delete_metrics_after(run.id, 700)
        store.update_run(run.id, status=RunStatus.RUNNING, attempt=2, started_at=NOW - 60, step=712, total_steps=2000)
        store.add_metrics(run.id, [(s, s / 100, "train", "loss", 1.0) for s in range(701, 713)])
        _set_times(path, run.id, range(701, 713), NOW - 30)
        calls = []
        original = store.metrics
        store.metrics = lambda *a, **k: calls.append(a) or original(*a, **k)
        resumed = store.get_run(run.id)
        assert attempt_start_step(store, resumed) == 700
        assert len(calls) < 40  # a bisection over ids, not a read of every row
        assert eta_seconds(resumed, NOW, attempt_start_step(store, resumed)) == pytest.approx((2000 - 712) * 60 / 12)
        # an attempt that found no checkpoint dropped every row: it started at 0
        store.delete_metrics_after(run.id, -1)
        store.add_metrics(run.id, [(1, 0.01, "train", "loss", 1.0)])
        assert attempt_start_step(store, store.get_run(run.id)) == 0
        assert attempt_start_step(store, _run(attempt=1, started_at=NOW)) == 0


# ---- where a stopped run resumes ---------------------------------------------------------------


def _resume_checkpoint(folder: Path, step: int) -> None:
    import torch

    from powerbert.model.checkpoint import atomic_save_tensors

    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(folder / "last.safetensors", {"model.w": torch.zeros(2)}, {"kind": "last", "step": step})


def test_detail_says_where_a_stopped_run_resumes_without_importing_torch(tmp_path):
    """run_detail runs in the fetch worker; reading the checkpoint's header must not load torch."""
    _resume_checkpoint(tmp_path / "run", 30)
    code = (
        "import sys\n"
        "from powerbert.store import Run, RunStatus\n"
        "from tui.rows import run_detail\n"
        f"run = Run(1, 1, 'sst', 'powerset', RunStatus.LOST, out_dir={str(tmp_path / 'run')!r}, step=34, error='worker vanished')\n"
        "print(run_detail(run).plain)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    detail, torch_loaded = out.stdout.strip().splitlines()
    assert "resumes from step 30" in detail and "worker vanished" in detail
    assert torch_loaded == "False"
    stopped = _run(status=RunStatus.STOPPED, out_dir=str(tmp_path / "none"), step=12)
    assert "restarts it from step 0" in run_detail(stopped).plain  # no checkpoint: from the start


# ---- in the experiment view --------------------------------------------------------------------


@run_async
async def test_resumed_run_shows_this_attempts_eta_and_where_it_resumes(db_path):
    with Store(db_path) as store:
        running = store.find_run("beta/para+sts")
        lost = store.find_run("beta/sst+sts")
        # para+sts was resumed a minute ago from its step-20 checkpoint and is now at 22 of 40
        store.delete_metrics_after(running.id, 20)
        store.add_metrics(running.id, [(21, 1.05, "train", "loss", 0.5), (22, 1.1, "train", "loss", 0.49)])
        store.update_run(running.id, attempt=2, started_at=NOW - 60, step=22)
    _set_times(db_path, running.id, range(1, 21), NOW - 4000)
    _set_times(db_path, running.id, range(21, 23), NOW - 10)
    _resume_checkpoint(Path(lost.out_dir), 4)
    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        table = screen.query_one("#runs-table")
        # 2 steps in 60 s, 18 to go: 9:00 (counting all 22 steps from this attempt's start: 0:49)
        await wait_for(pilot, lambda: cell(table, str(running.id), "eta") == "9:00", what="the ETA")
        assert cell(table, str(running.id), "elapsed") == "1:00"  # this attempt's
        table.move_to(str(running.id))
        detail = screen.query_one("#run-detail")
        await wait_for(pilot, lambda: "attempt 2 from step 20" in plain(detail), what="the attempt line")
        assert "epoch 2 of 2, step 22 of 40" in plain(detail)
        table.move_to(str(lost.id))
        await wait_for(pilot, lambda: "resumes from step 4" in plain(detail), what="the resume step")


def test_elapsed_adds_up_every_attempt(tmp_path):
    """A run that trained 100 s, was stopped, and resumed 50 s ago shows 150 s, in the CLI's
    Run.elapsed and in the dashboard's cells alike; queued in between, it shows the 100 s."""
    from powerbert.store import RunStatus, Store
    from tui.rows import elapsed

    with Store(tmp_path / "runs.db") as store:
        exp = store.create_experiment("e", ("sst",), {"train": {}}, str(tmp_path), [("sst",)])
        run = store.claim_next_queued(exp.id)
        store.update_run(run.id, started_at=1000.0, heartbeat_at=1100.0)
        store.finish_run(run.id, RunStatus.STOPPED)
        store.update_run(run.id, ended_at=1100.0)
        store.requeue_run(run.id)
        queued = store.get_run(run.id)
        assert queued.status == RunStatus.QUEUED and queued.earlier_elapsed == 100.0
        assert queued.elapsed == 100.0 and elapsed(queued, now=5000.0) == 100.0
        store.claim_next_queued(exp.id)
        store.update_run(run.id, started_at=2000.0)
        resumed = store.get_run(run.id)
        assert elapsed(resumed, now=2050.0) == 150.0
        store.finish_run(run.id, RunStatus.FINISHED)
        store.update_run(run.id, ended_at=2050.0)
        assert store.get_run(run.id).elapsed == 150.0
