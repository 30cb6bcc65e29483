"""The worker and the loop at the edges of a run: a run that diverges is recorded as failed with
a one-line reason, a stop that lands while the worker is starting is honoured, resuming reads the
resume checkpoint's tensors once, and the worker's command line stays light.

Runs are trained in-process on the tiny BERT and toy data (tests/conftest.py), except where the
test is about the worker as the supervisor starts it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from powerbert.config import TrainConfig
from powerbert.errors import UserError
from powerbert.model import checkpoint as ckpt
from powerbert.runner import experiments, worker
from powerbert.store import ExperimentStatus, RunStatus, Store
from powerbert.training import loop
from tests.faults.helpers import ROOT, cli_env, tiny_config

DIVERGED = "dev scores are NaN at epoch 1: the run diverged; try a lower lr"


@contextmanager
def own_signal_handlers():
    """run_worker sets SIGTERM/SIGINT handlers for its process: give pytest its own back."""
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])


@pytest.fixture
def diverging(monkeypatch):
    """The model's dev outputs all NaN, as a run whose weights blew up gives: forced, because a
    real divergence of the tiny model depends on the torch version."""
    evaluate = loop.evaluate

    def nan_outputs(*args, **kwargs):
        outputs = evaluate(*args, **kwargs)
        for out in outputs.values():
            out.outputs = np.full_like(out.outputs, np.nan)
        return outputs

    monkeypatch.setattr(loop, "evaluate", nan_outputs)


def new_run(tmp_path, config: TrainConfig, name: str = "w"):
    store = Store(tmp_path / "runs.db")
    exp = experiments.create_experiment(store, config, name=name, out_root=tmp_path / "runs")
    return store, store.runs(exp.id)[0]


# ---- a diverged run ----------------------------------------------------------------------


def test_a_run_whose_dev_scores_are_all_nan_stops_with_a_clear_error_and_keeps_no_best(diverging, tiny_model_dir, toy_data_dir, tmp_path):
    evals = []

    class Record(loop.TrainCallbacks):
        def on_eval(self, result):
            evals.append(result)

    with pytest.raises(UserError, match=DIVERGED) as caught:
        loop.train_subset(tiny_config(tiny_model_dir, toy_data_dir, tasks=("sts",)), tmp_path / "out", Record())
    assert type(caught.value).__name__ == "TrainingDiverged"
    assert evals == []  # a NaN epoch is never reported as the best one
    assert not (tmp_path / "out" / "best.safetensors").exists()


def test_the_worker_records_a_diverged_run_as_failed_with_the_reason(diverging, tiny_model_dir, toy_data_dir, tmp_path):
    store, run = new_run(tmp_path, tiny_config(tiny_model_dir, toy_data_dir, tasks=("sts",)))
    with own_signal_handlers():
        assert worker.run_worker(str(store.path), run.id, "cpu") == 1
    failed = store.get_run(run.id)
    assert failed.status == RunStatus.FAILED
    assert failed.error == f"TrainingDiverged: {DIVERGED}", failed.error
    assert failed.best_overall is None and failed.checkpoint is None
    assert store.dev_outputs(run.id) == {}
    store.close()


# ---- a stop while the worker starts --------------------------------------------------------


def test_a_stop_between_the_claim_and_the_worker_starting_is_honoured(tiny_model_dir, toy_data_dir, tmp_path):
    store, run = new_run(tmp_path, tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst",), epochs=3))
    # The supervisor has claimed the run (running, no pid yet) when `powerbert stop` comes:
    # with no process to signal, the stop is written into the run's status.
    claimed = store.claim_next_queued(run.experiment_id)
    assert claimed.id == run.id and claimed.pid is None
    [stopped] = experiments.stop(store, str(run.id))
    assert stopped.status == RunStatus.STOPPED
    # Only now does the worker, started as the supervisor starts it, get to record its pid.
    Path(run.out_dir).mkdir(parents=True, mode=0o700)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "powerbert.runner.worker", "--db", str(store.path), "--run", str(run.id)],
        env=cli_env(store.path), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    after = store.get_run(run.id)
    assert after.status == RunStatus.STOPPED, (after.status, after.error, time.monotonic() - started)
    assert after.ended_at is not None and after.error == "stopped before training started"
    assert not (Path(run.out_dir) / "last.safetensors").exists()  # it never trained
    assert store.metrics(run.id) == []
    store.close()


def test_mark_run_started_still_starts_a_queued_or_claimed_run(tmp_path):
    store = Store(tmp_path / "runs.db")
    exp = store.create_experiment("m", ("sst", "sts"), {"train": {}}, str(tmp_path / "runs"), [("sst",), ("sts",)])
    sst, sts = store.runs(exp.id)
    store.claim_next_queued(exp.id)
    assert store.mark_run_started(sst.id, 1234, 1000.5, "host", "cpu") is True
    assert store.mark_run_started(sts.id, 1235, 1000.5, "host", "cpu") is True  # never claimed
    for run_id in (sst.id, sts.id):
        run = store.get_run(run_id)
        assert run.status == RunStatus.RUNNING and run.attempt == 1 and run.ended_at is None
    store.close()


# ---- resume --------------------------------------------------------------------------------


def test_resume_reads_the_checkpoints_tensors_once(monkeypatch, tiny_model_dir, toy_data_dir, tmp_path):
    store, run = new_run(tmp_path, tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst",), epochs=3))
    out_dir = Path(run.out_dir)
    calls = iter(range(1000))
    first = loop.train_subset(worker.run_config(store, run), out_dir, should_stop=lambda: next(calls) >= 3)
    assert first.status == "stopped" and first.step == 3
    last = out_dir / "last.safetensors"
    with safe_open(str(last), framework="pt") as f:
        assert json.loads(f.metadata()["powerbert"])["step"] == 3

    import safetensors.torch

    reads = []
    load_file = safetensors.torch.load_file  # checkpoint.py imports it where it reads tensors

    def counting(path, *args, **kwargs):
        reads.append(Path(path))
        return load_file(path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", counting)
    with own_signal_handlers():
        assert worker.run_worker(str(store.path), run.id, "cpu") == 0, store.get_run(run.id).error
    assert reads.count(last) == 1, reads  # the step comes from the header, the tensors once
    done = store.get_run(run.id)
    assert done.status == RunStatus.FINISHED and done.step == done.total_steps > first.step
    steps = [m.step for m in store.metrics(run.id, names=["loss"])]
    assert steps and steps[0] == 4 and steps == sorted(set(steps))  # resumed after step 3
    store.close()


def test_read_metadata_refuses_a_truncated_checkpoint_naming_it(tmp_path):
    path = tmp_path / "last.safetensors"
    ckpt.atomic_save_tensors(path, {"x": torch.ones(100)}, {"step": 7})
    assert ckpt.read_metadata(path) == {"step": 7}
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=f"{path}: checkpoint is truncated or corrupt"):
        ckpt.read_metadata(path)
    with pytest.raises(ckpt.CheckpointError, match=f"{tmp_path / 'none.safetensors'}: checkpoint not found"):
        ckpt.read_metadata(tmp_path / "none.safetensors")


# ---- the supervisor's end and the worker's command line ------------------------------------


def test_a_stop_after_every_run_finished_leaves_the_experiment_finished(monkeypatch, tmp_path):
    from powerbert.results import evaluate
    from powerbert.runner.supervisor import Supervisor

    store = Store(tmp_path / "runs.db")
    exp = store.create_experiment("f", ("sst",), {"train": {}, "launch": {"gpus": []}}, str(tmp_path / "runs"), [("sst",)])
    [run] = store.runs(exp.id)
    store.finish_run(run.id, RunStatus.FINISHED, exit_code=0)
    store.update_experiment(exp.id, status=ExperimentStatus.STOPPED)  # the stop came too late
    monkeypatch.setattr(evaluate, "ensemble_experiment", lambda *_: [])
    assert Supervisor(str(store.path), exp.id).finish() == 0
    assert store.get_experiment(exp.id).status == ExperimentStatus.FINISHED
    store.close()


def test_the_worker_help_loads_neither_torch_nor_transformers():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['powerbert.runner.worker', '--help']\n"
        "try:\n"
        "    runpy.run_module('powerbert.runner.worker', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'safetensors'))\n"
        "print(heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--db" in done.stdout
