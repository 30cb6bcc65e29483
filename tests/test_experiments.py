"""Experiments for real: a detached supervisor, worker processes, signals and runs.db.

Each test runs a tiny model on toy data, waits on conditions (never fixed sleeps) and kills
every process it started.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from powerbert.config import TrainConfig
from powerbert.runner import experiments
from powerbert.runner.liveness import reconcile, run_is_alive
from powerbert.store import ExperimentStatus, RunStatus, Store, process_start_time
from tests.faults.helpers import tiny_config, wait_until


@pytest.fixture
def started(tmp_path):
    """Start experiments through this; every supervisor and worker is killed at the end."""
    db = tmp_path / "runs.db"
    store = Store(db)
    pids: list[int] = []

    def start(config: TrainConfig, **kw):
        exp = experiments.create_experiment(store, config, out_root=tmp_path / "runs", **kw)
        pids.append(experiments.launch(db, store, exp))
        return store.get_experiment(exp.id)

    yield db, store, start
    for exp in store.list_experiments():
        for run in store.runs(exp.id):
            experiments.signal_run(run, signal.SIGKILL)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    store.close()


def test_supervisor_trains_every_subset_and_ensembles(started, tiny_model_dir, toy_data_dir, tmp_path):
    db, store, start = started
    exp = start(tiny_config(tiny_model_dir, toy_data_dir, ("sst", "sts")))
    wait_until(lambda: store.get_experiment(exp.id).status.is_terminal, 180, "the experiment to end")
    assert store.get_experiment(exp.id).status == ExperimentStatus.FINISHED
    runs = store.runs(exp.id)
    assert sorted(r.subset for r in runs) == ["sst", "sst+sts", "sts"]
    for run in runs:
        assert run.status == RunStatus.FINISHED, run.error
        assert set(run.best_scores) == set(run.tasks)
        assert store.metrics(run.id, names=["loss"])
        assert set(store.dev_outputs(run.id)) == set(run.tasks)
        assert (Path(run.out_dir) / "best.safetensors").exists()
    schemes = {(r.scheme, r.task) for r in store.ensemble_results(exp.id)}
    assert ("weighted", "sst") in schemes and ("learned", "sts") in schemes
    # owner-only files and folders
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(exp.out_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(Path(runs[0].out_dir) / "worker.log").st_mode) == 0o600


def test_killed_worker_is_lost_then_resume_finishes_without_duplicate_steps(started, tiny_model_dir, toy_data_dir):
    db, store, start = started
    config = tiny_config(tiny_model_dir, toy_data_dir, ("sst",), epochs=40, max_train=None, checkpoint_every_s=0.5)
    exp = start(config)
    run = store.runs(exp.id)[0]
    wait_until(lambda: (store.get_run(run.id).step or 0) >= 20, 120, "training to pass step 20")
    wait_until(lambda: (Path(run.out_dir) / "last.safetensors").exists(), 30, "a resume checkpoint")
    victim = store.get_run(run.id)
    os.kill(victim.pid, signal.SIGKILL)
    t0 = time.monotonic()
    wait_until(lambda: reconcile(store, exp.id)[0].status == RunStatus.LOST, 30, "the run to be marked lost")
    assert time.monotonic() - t0 < 30
    lost = store.get_run(run.id)
    assert lost.error and lost.log_tail
    wait_until(lambda: store.get_experiment(exp.id).status.is_terminal, 30, "the supervisor to end")

    experiments.resume(db, store, exp.name)
    wait_until(lambda: store.get_run(run.id).status.is_terminal, 240, "the resumed run to end")
    done = store.get_run(run.id)
    assert done.status == RunStatus.FINISHED, done.error
    steps = [m.step for m in store.metrics(run.id, names=["loss"])]
    assert steps == list(range(1, done.total_steps + 1))  # no duplicate, no gap


def test_sigterm_stops_with_a_checkpoint(started, tiny_model_dir, toy_data_dir):
    db, store, start = started
    # Far more epochs than the test lets it train, so the run cannot finish before the stop.
    exp = start(tiny_config(tiny_model_dir, toy_data_dir, ("sts",), epochs=100_000, max_train=None))
    run = store.runs(exp.id)[0]
    wait_until(lambda: (store.get_run(run.id).step or 0) >= 5, 120, "training to start")
    runs = experiments.stop(store, f"{exp.name}/sts", grace_s=30)
    assert runs[0].status == RunStatus.STOPPED
    assert (Path(run.out_dir) / "last.safetensors").exists()
    assert not run_is_alive(store.get_run(run.id))


def test_reused_pid_is_not_alive_and_never_signalled(tmp_path):
    store = Store(tmp_path / "runs.db")
    exp = store.create_experiment("e", ("sst",), {"train": {}}, str(tmp_path), [("sst",)])
    run = store.runs(exp.id)[0]
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real_start = process_start_time(bystander.pid)
        # the run claims the bystander's pid, but with a start time an hour earlier
        store.mark_run_started(run.id, bystander.pid, real_start - 3600, os.uname().nodename, "cpu")
        run = store.get_run(run.id)
        assert not run_is_alive(run)
        stopped = experiments.stop(store, "e", grace_s=1)
        assert bystander.poll() is None  # never signalled
        assert stopped[0].status == RunStatus.STOPPED
    finally:
        bystander.kill()
        bystander.wait()
    store.close()


def test_cli_run_detach_status_stop_resume(tmp_path, tiny_model_dir, toy_data_dir):
    env = {**os.environ, "POWERBERT_DB": str(tmp_path / "runs.db"), "POWERBERT_OUT": str(tmp_path / "runs")}
    cli = [sys.executable, "-m", "powerbert"]
    common = ["--data-dir", str(toy_data_dir), "--model", str(tiny_model_dir), "--precision", "fp32", "--lr", "1e-3"]
    # Far more epochs than the test lets it train: on a fast machine 40 epochs of the tiny model
    # ended between the `status` and the `stop` calls (each a new Python process importing torch).
    out = subprocess.run(cli + ["run", "--tasks", "sst", "--epochs", "100000", "--name", "cli-exp", "--detach", *common],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "detached" in out.stdout
    store = Store(tmp_path / "runs.db")
    try:
        wait_until(lambda: (store.runs(store.get_experiment("cli-exp").id)[0].step or 0) > 2, 120, "training to start")
        out = subprocess.run(cli + ["status", "cli-exp"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "running" in out.stdout
        out = subprocess.run(cli + ["stop", "cli-exp"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "stopped" in out.stdout
        out = subprocess.run(cli + ["resume", "cli-exp/sst"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: store.runs(store.get_experiment("cli-exp").id)[0].status == RunStatus.RUNNING, 60, "the resumed run")
        out = subprocess.run(cli + ["stop", "cli-exp"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0
        out = subprocess.run(cli + ["list"], env=env, capture_output=True, text=True, timeout=60)
        assert "cli-exp" in out.stdout
    finally:
        for run in store.runs(store.get_experiment("cli-exp").id):
            experiments.signal_run(run, signal.SIGKILL)
        store.close()


def test_run_refuses_missing_data_before_starting(tmp_path, tiny_model_dir):
    env = {**os.environ, "POWERBERT_DB": str(tmp_path / "runs.db")}
    out = subprocess.run(
        [sys.executable, "-m", "powerbert", "run", "--tasks", "sst", "--data-dir", str(tmp_path), "--model", str(tiny_model_dir)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "ids-sst-train.csv" in out.stderr and "Traceback" not in out.stderr
