"""Cases 4 and 5: process identity and stopping, with real processes and real signals.

Case 4: a run (and a supervisor) whose recorded pid now belongs to an unrelated process, one
that started at another time: it is not alive, `powerbert stop` (the real command) never
signals it, and `powerbert status` calls the run lost.
Case 5: `stop` sends SIGTERM to a worker, which checkpoints and ends stopped well inside the
grace period; a worker that ignores SIGTERM is killed when the grace period ends; and nothing
the worker started (even a child that ignores SIGTERM) outlives it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from powerbert.model import checkpoint as ckpt
from powerbert.runner import experiments
from powerbert.runner.liveness import reconcile, run_is_alive
from powerbert.store import RunStatus, Store, process_start_time
from tests.faults.helpers import alive, cli, cli_env, session_members, tiny_config, wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# A process that ignores SIGTERM and starts a child that ignores it too.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(600)'])\n"
    "time.sleep(600)\n"
)
# The real worker, started with a child that ignores SIGTERM (as a compile or data-loading
# helper might): the stop must not leave it behind.
WORKER_WITH_CHILD = (
    "import runpy, subprocess, sys\n"
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
    "sys.argv = ['powerbert.runner.worker', '--db', sys.argv[1], '--run', sys.argv[2]]\n"
    "runpy.run_module('powerbert.runner.worker', run_name='__main__', alter_sys=True)\n"
)

# The real worker whose training loop hangs at step 3 (the main thread sleeps inside on_step, as
# a deadlock would hold it) while its heartbeat thread lives on.
HUNG_WORKER = (
    "import runpy, sys, time\n"
    "from powerbert.runner import worker\n"
    "step = worker.StoreCallbacks.on_step\n"
    "def hang_at_3(self, n, *rest):\n"
    "    step(self, n, *rest)\n"
    "    if n == 3:\n"
    "        self.flush(); time.sleep(600)\n"
    "worker.StoreCallbacks.on_step = hang_at_3\n"
    "sys.exit(worker.main(['--db', sys.argv[1], '--run', sys.argv[2]]))\n"
)

# A dev evaluation far longer than the stall limit, moving batch by batch (small batches, each
# 0.5 s slower): progress, not a hang.
SLOW_EVAL_WORKER = (
    "import sys, time\n"
    "from powerbert.runner import worker\nfrom powerbert.training import loop as train\n"
    "evaluate = train.evaluate\n"
    "def slow(*args, on_batch=None, **kw):\n"
    "    def each(*a):\n"
    "        time.sleep(0.5); on_batch(*a)\n"
    "    return evaluate(*args[:4], batch_size=4, on_batch=each)\n"
    "train.evaluate = slow\n"
    "sys.exit(worker.main(['--db', sys.argv[1], '--run', sys.argv[2]]))\n"
)


# The real worker, killed by SIGKILL the moment its 10th step is recorded: long before the
# first interval of resume checkpoints, and within the first epoch.
KILLED_AT_10 = (
    "import os, signal, sys\n"
    "from powerbert.runner import worker\n"
    "step = worker.StoreCallbacks.on_step\n"
    "def die_at_10(self, n, *rest):\n"
    "    step(self, n, *rest)\n"
    "    if n == 10:\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "worker.StoreCallbacks.on_step = die_at_10\n"
    "sys.exit(worker.main(['--db', sys.argv[1], '--run', sys.argv[2]]))\n"
)


def start_patched_worker(tmp_path, janitor, config, name: str, script: str, stall_s: float | None = None):
    """Queue one run of `config` and start `script` (the worker, patched) on it as the
    supervisor starts a worker: in a session of its own, its output in the run's log."""
    db = tmp_path / "runs.db"
    janitor.watch_db(db)
    store = Store(db)
    exp = experiments.create_experiment(store, config, name=name, out_root=tmp_path / "runs")
    run = store.claim_next_queued(exp.id)
    Path(run.out_dir).mkdir(mode=0o700)
    env = None if stall_s is None else cli_env(db, POWERBERT_STALL_S=stall_s)
    with open(Path(run.out_dir) / "worker.log", "ab") as log:
        worker = janitor.popen([sys.executable, "-c", script, str(db), str(run.id)], start_new_session=True,
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    return store, run, worker


@pytest.mark.timeout(180)
def test_4_a_reused_pid_is_not_alive_and_never_signalled(tmp_path, janitor):
    db = tmp_path / "runs.db"
    store = Store(db)
    exp = store.create_experiment("stale", ("sst", "sts"), {"train": {}}, str(tmp_path / "runs"), [("sst",), ("sts",)])
    sst, sts = store.runs(exp.id)
    # Bystanders in sessions of their own, so that a killpg on their pid would reach them.
    bystanders = [janitor.popen(SLEEPER, start_new_session=True) for _ in range(2)]
    started = [process_start_time(b.pid) for b in bystanders]
    host = socket.gethostname()
    store.mark_run_started(sst.id, bystanders[0].pid, started[0] - 3600, host, "cpu")
    store.mark_run_started(sts.id, bystanders[1].pid, started[1] - 3600, host, "cpu")
    store.update_experiment(exp.id, status="running", supervisor_pid=bystanders[1].pid, supervisor_start_time=started[1] - 7200)
    assert not run_is_alive(store.get_run(sst.id))
    assert not experiments.supervisor_alive(store.get_experiment(exp.id))  # resume would start a new one
    env = cli_env(db)

    out = cli("stop", "stale/sst", "--grace", "1", env=env)
    assert out.returncode == 0, out.stderr
    assert "sst: stopped" in out.stdout
    out = cli("status", "stale", env={**env, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "lost" in out.stdout and f"no process {bystanders[1].pid} started at the recorded time" in out.stdout
    assert all(b.poll() is None for b in bystanders), "a bystander was signalled"
    assert store.get_run(sst.id).status == RunStatus.STOPPED
    assert store.get_run(sts.id).status == RunStatus.LOST
    store.close()


@pytest.mark.timeout(180)
def test_5_sigterm_checkpoints_and_stops_within_the_grace_leaving_no_child(tmp_path, janitor, tiny_model_dir, toy_data_dir):
    config = tiny_config(tiny_model_dir, toy_data_dir, ("sst",), epochs=400, max_train=None)
    store, run, worker = start_patched_worker(tmp_path, janitor, config, "stop", WORKER_WITH_CHILD)
    wait_until(lambda: (store.get_run(run.id).step or 0) > 0, 120, "the worker to train")
    members = session_members(worker.pid)
    assert len(members) == 2, members  # the worker and its child

    t0 = time.monotonic()
    stopped = experiments.stop(store, "stop/sst", grace_s=30)[0]
    took = time.monotonic() - t0
    assert stopped.status == RunStatus.STOPPED and stopped.error is None, stopped.error
    assert took < 30, f"took the whole grace period ({took:.1f} s): it was killed, not stopped"
    assert worker.wait(timeout=10) == 0
    tensors, meta = ckpt.load_tensors(Path(run.out_dir) / "last.safetensors")
    assert meta["step"] == store.get_run(run.id).step > 0
    wait_until(lambda: not any(alive(p) for p in members), 10, "the worker's child to be gone")
    assert session_members(worker.pid) == []
    store.close()


@pytest.mark.timeout(120)
def test_5_a_worker_ignoring_sigterm_is_killed_after_the_grace_with_its_children(tmp_path, janitor):
    store = Store(tmp_path / "runs.db")
    exp = store.create_experiment("stubborn", ("sst",), {"train": {}}, str(tmp_path / "runs"), [("sst",)])
    run = store.runs(exp.id)[0]
    worker = janitor.popen([sys.executable, "-c", STUBBORN], start_new_session=True, stdout=subprocess.PIPE)
    worker.stdout.readline()  # its child is up
    members = session_members(worker.pid)
    assert len(members) == 2
    store.mark_run_started(run.id, worker.pid, process_start_time(worker.pid), socket.gethostname(), "cpu")

    t0 = time.monotonic()
    stopped = experiments.stop(store, "stubborn/sst", grace_s=2)[0]
    took = time.monotonic() - t0
    assert 2 <= took < 15
    assert stopped.status == RunStatus.STOPPED and "killed after 2 s" in stopped.error
    assert worker.wait(timeout=10) == -signal.SIGKILL
    wait_until(lambda: not any(alive(p) for p in members), 10, "every process of the worker to be gone")
    store.close()


@pytest.mark.timeout(180)
def test_a_worker_whose_training_hangs_ends_itself_as_lost(tmp_path, janitor, tiny_model_dir, toy_data_dir):
    """A stuck training loop with a live heartbeat thread would look alive forever: after
    POWERBERT_STALL_S without progress the worker records the run lost, then SIGKILLs itself."""
    config = tiny_config(tiny_model_dir, toy_data_dir, ("sst",), epochs=400, max_train=None)
    store, run, worker = start_patched_worker(tmp_path, janitor, config, "hung", HUNG_WORKER, stall_s=2)
    wait_until(lambda: worker.poll() is not None, 150, "the hung worker to end")
    assert worker.returncode == -signal.SIGKILL
    hung = store.get_run(run.id)
    assert hung.status == RunStatus.LOST
    assert hung.error.startswith("hung: no training step") and "(at step 3)" in hung.error
    assert "hung: no training step" in hung.log_tail
    store.close()


@pytest.mark.timeout(180)
def test_a_dev_evaluation_longer_than_the_stall_limit_is_not_taken_for_a_hang(tmp_path, janitor, tiny_model_dir, toy_data_dir):
    config = tiny_config(tiny_model_dir, toy_data_dir, ("sst",))
    store, run, worker = start_patched_worker(tmp_path, janitor, config, "slow-eval", SLOW_EVAL_WORKER, stall_s=2)
    wait_until(lambda: worker.poll() is not None, 150, "the worker to end")
    done = store.get_run(run.id)
    assert worker.returncode == 0 and done.status == RunStatus.FINISHED, (done.status, done.error)
    # The evaluation took 15 batches x 0.5 s, far past the 2 s limit, and it was scored.
    assert done.best_scores and "sst" in done.best_scores
    store.close()


@pytest.mark.timeout(180)
def test_a_run_killed_at_its_10th_step_resumes_from_a_checkpoint_not_from_step_0(tmp_path, janitor, tiny_model_dir, toy_data_dir):
    from powerbert.views import resume_step

    # 240 steps per epoch and no interval checkpoint: only the early one after step 1 can exist.
    config = tiny_config(tiny_model_dir, toy_data_dir, ("sst",), epochs=2, max_train=None, batch_size=1, checkpoint_every_s=1e9)
    store, run, worker = start_patched_worker(tmp_path, janitor, config, "killed10", KILLED_AT_10)
    assert worker.wait(timeout=150) == -signal.SIGKILL
    lost = reconcile(store, run.experiment_id)[0]
    assert lost.status == RunStatus.LOST
    step = resume_step(lost)
    assert step is not None and 1 <= step < 10  # the checkpoint after the first step
    experiments.resume(tmp_path / "runs.db", store, "killed10")
    log = Path(run.out_dir) / "worker.log"
    resumed = f"resumed from {Path(run.out_dir) / 'last.safetensors'} at step {step}"
    wait_until(lambda: resumed in log.read_text(), 120, f"the worker to resume from step {step}")
    experiments.stop(store, "killed10", grace_s=30)
    store.close()
