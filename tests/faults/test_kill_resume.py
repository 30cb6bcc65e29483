"""Cases 2 and 3: a worker killed with SIGKILL halfway, then resumed, against the same run
trained straight through. Real supervisors, real workers, a real kill.

Case 2: within 30 s the killed run is lost, with its log tail; resume finishes it; its metrics
have every step exactly once. Case 3: the resumed run saw the same data in the same order
(every per-step loss, per task, equal to the straight run's) and ends with the same weights.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from powerbert.model import checkpoint as ckpt
from powerbert.runner import experiments
from powerbert.store import ExperimentStatus, RunStatus, Store
from tests.faults.helpers import tiny_config, wait_until

TASKS = ("sst", "para", "sts")  # multitask with PCGrad: data order, dropout and surgery order all matter
EPOCHS = 12  # 240 rows / 16 = 15 steps an epoch: 180 steps


def checkpoint_step(path: Path) -> int:
    """The step a resume checkpoint holds, from its header only (cheap to poll)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["powerbert"])["step"]
    except Exception:  # noqa: BLE001 - not there yet, or being replaced this instant
        return -1


def curves(store: Store, run_id: int) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for m in store.metrics(run_id):
        out.setdefault(f"{m.split}/{m.name}", []).append((m.step, m.value))
    return out


@pytest.mark.timeout(420)
def test_2_3_killed_worker_is_lost_then_resumes_to_the_straight_runs_weights(tmp_path, janitor, tiny_model_dir, toy_data_dir):
    db = tmp_path / "runs.db"
    janitor.watch_db(db)
    store = Store(db)
    config = tiny_config(tiny_model_dir, toy_data_dir, TASKS, epochs=EPOCHS, max_train=None, checkpoint_every_s=0.3)
    chosen = {}
    for name in ("straight", "killed"):
        # Keep the resume state of the finished straight run: its last weights are the reference.
        exp = experiments.create_experiment(store, config, name=name, out_root=tmp_path / "runs", keep_resume_state=True)
        for run in store.runs(exp.id):  # only the sst+para+sts run of the power set
            if run.tasks != TASKS:
                store.finish_run(run.id, RunStatus.STOPPED, error="not part of this test", expect=RunStatus.QUEUED)
            else:
                chosen[name] = run
        experiments.launch(db, store, exp)
    straight, victim = chosen["straight"], chosen["killed"]
    last = Path(victim.out_dir) / "last.safetensors"
    try:
        wait_until(lambda: store.get_run(victim.id).total_steps, 180, "the worker to start training")
        total = store.get_run(victim.id).total_steps
        assert total == EPOCHS * 15
        wait_until(lambda: checkpoint_step(last) >= total // 2, 180, "a resume checkpoint past half way", interval=0.02)
        running = store.get_run(victim.id)
        assert running.status == RunStatus.RUNNING
        os.kill(running.pid, signal.SIGKILL)
        killed_at = time.monotonic()

        # Case 2: lost within 30 s, with the log tail, by the supervisor that watched it.
        wait_until(lambda: store.get_run(victim.id).status == RunStatus.LOST, 30, "the killed run to be marked lost")
        assert time.monotonic() - killed_at < 30
        lost = store.get_run(victim.id)
        assert "SIGKILL" in lost.error and "steps from step 0" in lost.log_tail
        wait_until(lambda: store.get_experiment("killed").status.is_terminal, 60, "its supervisor to end")
        assert store.get_experiment("killed").status == ExperimentStatus.FAILED
        resumed_from = checkpoint_step(last)
        assert 0 < resumed_from < total, "the kill came too late to test a resume"

        experiments.resume(db, store, "killed/sst+para+sts")  # the one run, not the stopped rest
        wait_until(lambda: all(store.get_run(r.id).status.is_terminal and store.get_experiment(n).status.is_terminal
                               for n, r in chosen.items()), 300, "both runs to end")
    finally:
        store.close()
        store = Store(db)

    a, b = store.get_run(straight.id), store.get_run(victim.id)
    assert a.status == RunStatus.FINISHED, a.error
    assert b.status == RunStatus.FINISHED and b.attempt == 2, b.error
    log = (Path(b.out_dir) / "worker.log").read_text()
    assert f"at step {resumed_from}" in log  # it continued from the checkpoint, not from 0

    # No step missing or repeated in any curve, across the kill.
    ca, cb = curves(store, a.id), curves(store, b.id)
    assert set(ca) == set(cb) and {"train/loss", "train/loss/sst", "train/loss/para", "train/loss/sts", "dev/overall"} <= set(ca)
    assert [s for s, _ in cb["train/loss"]] == list(range(1, total + 1))
    assert [s for s, _ in cb["dev/overall"]] == [15 * e for e in range(1, EPOCHS + 1)]
    # Case 3: the same batches in the same order (each task's loss at each step), same scores.
    for name in ca:
        assert [s for s, _ in ca[name]] == [s for s, _ in cb[name]], name
        for (step, x), (_, y) in zip(ca[name], cb[name]):
            assert math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6), (name, step, x, y)
    assert b.best_scores == pytest.approx(a.best_scores, abs=1e-9)
    # ... and the same final weights, optimizer state included.
    wa, _ = ckpt.load_tensors(Path(a.out_dir) / "last.safetensors")
    wb, meta_b = ckpt.load_tensors(Path(b.out_dir) / "last.safetensors")
    assert meta_b["step"] == total and set(wa) == set(wb)
    for key in wa:
        if not key.startswith("rng."):
            assert torch.allclose(wa[key], wb[key], rtol=1e-5, atol=1e-6), key
    best_a, _ = ckpt.load_tensors(Path(a.out_dir) / "best.safetensors")
    best_b, _ = ckpt.load_tensors(Path(b.out_dir) / "best.safetensors")
    for key in best_a:
        assert torch.allclose(best_a[key], best_b[key], rtol=1e-5, atol=1e-6), key
    store.close()
