"""The Ray backend end to end, on a real two-node cluster (conftest.py), through the CLI.

Run: python -m pytest tests/cluster -q   (about 2-3 minutes; needs root for the namespace)

Each test starts `powerbert run --backend ray` on the tiny model and then does to it what users
and machines do: let it finish, stop it, kill its supervisor, kill a node, and run the
preflight against a node that cannot see the run folders. The order matters: killing the
second node comes last but one, and the node that hides the folders is started last.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from powerbert.store import ExperimentStatus, RunStatus, Store
from tests.faults.helpers import cli, cli_env, wait_until

RAY = ("--backend", "ray", "--ray-gpus-per-run", "0", "--ray-cpus-per-run", "1")


@pytest.fixture
def where(tmp_path, ray_cluster, janitor):
    db, out = tmp_path / "runs.db", tmp_path / "runs"
    janitor.watch_db(db)
    return db, out, {**cli_env(db, out), **{k: v for k, v in ray_cluster.env.items() if k.startswith("RAY_") or k == "HOME"}}


def start(env, model, data, *extra) -> str:
    """`powerbert run --backend ray --detach` on the tiny model; the experiment's name."""
    done = cli("run", *RAY, "--model", model, "--data-dir", data, "--batch-size", "16", "--set", "lr=1e-3",
               "--set", "precision=fp32", "--yes", "--detach", *extra, env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"experiment (\S+):", done.stdout).group(1)


def experiment_of(db: Path, name: str):
    with Store(db) as store:
        exp = store.get_experiment(name)
        return exp, store.runs(exp.id)


def wait_ended(db: Path, name: str, timeout: float):
    return wait_until(lambda: (lambda e: e if e[0].status.is_terminal else None)(experiment_of(db, name)), timeout, f"{name} to end", 0.5)


def train_steps(db: Path, run_id: int) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute(
            "SELECT step FROM metrics WHERE run_id = ? AND split = 'train' AND name = 'loss' ORDER BY step", (run_id,))]
    finally:
        conn.close()


def open_by_ray(cluster, db: Path) -> list[str]:
    """Ray processes (raylets, workers, actors) holding runs.db or its WAL open right now."""
    found = []
    for proc in cluster.processes():
        try:
            if not (proc.name().startswith("ray") or "ray" in " ".join(proc.cmdline()[:2])):
                continue
            if any(Path(f.path).name.startswith(db.name) for f in proc.open_files()):
                found.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:
            continue
    return found


# Seven runs on two Ray nodes, then the report: about 65 s on a quiet machine, over the suite's
# 300 s once with a two-thread training run beside it; the budget must hold under such load.
@pytest.mark.timeout(900)
def test_the_power_set_trains_on_both_nodes_and_ensembles(where, ray_cluster, tiny_model_dir, toy_data_dir):
    db, out, env = where
    name = start(env, tiny_model_dir, toy_data_dir, "--epochs", "2", "--max-train", "64")
    seen_open = []
    while not experiment_of(db, name)[0].status.is_terminal:
        seen_open += open_by_ray(ray_cluster, db)  # sampled all along the run
        time.sleep(0.3)
    exp, runs = experiment_of(db, name)
    assert exp.status == ExperimentStatus.FINISHED, [(r.subset, r.status, r.error) for r in runs]
    assert seen_open == [], f"Ray processes opened runs.db: {seen_open}"
    assert len(runs) == 7 and all(r.status == RunStatus.FINISHED and r.attempt == 1 for r in runs)
    assert len({r.node for r in runs}) == 2, "both nodes took runs"
    assert all(r.node and r.device == "cpu" and r.best_overall is not None for r in runs)

    # The ensembles are the ones the stored dev outputs give (the same evaluation, here).
    from powerbert.results.ensemble import evaluate_all

    with Store(db) as store:
        stored = {(r.scheme, r.task): r.score for r in store.ensemble_results(exp.id)}
        dev = {r.subset: store.dev_outputs(r.id) for r in runs}
        expected = evaluate_all(dev, exp.tasks, expected_models=[r.subset for r in runs])
    assert {("voting", t) for t in exp.tasks} <= set(stored)
    for outcome in expected:
        if (outcome.scheme, outcome.task) in stored and outcome.score is not None:
            assert stored[(outcome.scheme, outcome.task)] == pytest.approx(outcome.score), (outcome.scheme, outcome.task)

    report = cli("report", name, env=env)
    assert report.returncode == 0 and "voting" in report.stdout, report.stdout + report.stderr
    status = json.loads(cli("status", name, "--json", env=env).stdout)
    assert {r["node"] for r in status["runs"]} == {r.node for r in runs}


def test_stop_ends_a_remote_run_stopped_with_a_checkpoint(where, ray_cluster, tiny_model_dir, toy_data_dir):
    db, out, env = where
    name = start(env, tiny_model_dir, toy_data_dir, "--epochs", "40", "--subsets", "sst,para")
    exp, runs = wait_until(lambda: (lambda e: e if all((r.step or 0) >= 20 for r in e[1]) else None)(experiment_of(db, name)),
                           120, "both runs to train 20 steps", 0.3)
    stopped = cli("stop", f"{name}/sst", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    _, runs = experiment_of(db, name)
    sst = next(r for r in runs if r.subset == "sst")
    assert sst.status == RunStatus.STOPPED and sst.ended_at is not None, (sst.status, sst.error)
    assert (Path(sst.out_dir) / "last.safetensors").exists()
    from powerbert.model.checkpoint import read_metadata

    assert read_metadata(Path(sst.out_dir) / "last.safetensors")["step"] >= 20
    assert next(r for r in runs if r.subset == "para").status == RunStatus.RUNNING  # the other run goes on
    assert cli("stop", name, env=env, timeout=120).returncode == 0
    exp, runs = wait_ended(db, name, 60)
    assert {r.status for r in runs} == {RunStatus.STOPPED}


def test_a_killed_supervisor_leaves_no_training_and_resume_finishes(where, ray_cluster, tiny_model_dir, toy_data_dir):
    db, out, env = where
    name = start(env, tiny_model_dir, toy_data_dir, "--epochs", "6", "--subsets", "sst,para")
    exp, runs = wait_until(lambda: (lambda e: e if all((r.step or 0) >= 5 for r in e[1]) else None)(experiment_of(db, name)),
                           120, "both runs to train", 0.3)
    assert ray_cluster.actor_processes()
    os.kill(exp.supervisor_pid, signal.SIGKILL)
    wait_until(lambda: not ray_cluster.actor_processes(), 60, "the runs' actors to end with their supervisor", 0.5)
    resumed = cli("resume", name, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    exp, runs = wait_ended(db, name, 150)
    assert exp.status == ExperimentStatus.FINISHED, [(r.subset, r.status, r.error) for r in runs]
    for run in runs:
        steps = train_steps(db, run.id)
        assert steps == list(range(1, run.total_steps + 1)), f"{run.subset}: steps missing or repeated"


def test_a_killed_node_loses_its_run_and_resume_continues_elsewhere(where, ray_cluster, tiny_model_dir, toy_data_dir):
    db, out, env = where
    name = start(env, tiny_model_dir, toy_data_dir, "--epochs", "12", "--subsets", "sst,para")
    second = ray_cluster.node_ids["second"]

    def on_second_with_checkpoint():
        _, runs = experiment_of(db, name)
        for run in runs:
            if run.node == second and run.epoch and run.epoch >= 2 and (Path(run.out_dir) / "last.safetensors").exists():
                return run
        return None

    victim = wait_until(on_second_with_checkpoint, 120, "a run on the second node past its second epoch", 0.2)
    killed_at = time.monotonic()
    ray_cluster.kill_node("second")
    lost = wait_until(lambda: (lambda r: r if r.status == RunStatus.LOST else None)(experiment_of(db, name)[1][[r.id for r in experiment_of(db, name)[1]].index(victim.id)]),
                      30, "the run on the killed node to be lost", 0.2)
    assert time.monotonic() - killed_at <= 15, f"lost after {time.monotonic() - killed_at:.1f} s"
    assert second[:12] in lost.error, lost.error
    exp, runs = wait_ended(db, name, 150)  # the other run finishes on the head
    others = [r for r in runs if r.id != victim.id]
    assert all(r.status == RunStatus.FINISHED for r in others), [(r.subset, r.status, r.error) for r in others]

    wait_until(lambda: ray_cluster.alive_nodes() == 1, 60, "the cluster to count the killed node dead", 1.0)
    from powerbert.model.checkpoint import read_metadata

    checkpoint_step = read_metadata(Path(victim.out_dir) / "last.safetensors")["step"]
    resumed = cli("resume", name, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    exp, runs = wait_ended(db, name, 150)
    run = next(r for r in runs if r.id == victim.id)
    assert run.status == RunStatus.FINISHED and run.attempt == 2, (run.status, run.error)
    assert run.node == ray_cluster.node_ids["head"]
    assert f"at step {checkpoint_step}" in (Path(run.out_dir) / "worker.log").read_text()
    assert train_steps(db, run.id) == list(range(1, run.total_steps + 1)), "steps missing or repeated"


def test_the_preflight_refuses_a_node_that_cannot_see_the_run_folder(where, ray_cluster, tiny_model_dir, toy_data_dir):
    db, out, env = where
    out.mkdir(parents=True)
    # A node with a folder of its own at the same path: in a mount namespace of its own, an
    # empty tmpfs over the runs folder's parent.
    hide = f"mount -t tmpfs none {out.parent} && exec \"$@\""
    ray_cluster.start_node("blind", prefix=("unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh"))
    blind = ray_cluster.node_ids["blind"]
    done = cli("run", *RAY, "--model", tiny_model_dir, "--data-dir", toy_data_dir, "--yes", "--detach", env=env, timeout=180)
    assert done.returncode != 0
    # Left out: Ray's C++ warning that it could not reach a public DNS server to find this
    # machine's address, which only a machine without a network (this namespace) prints.
    lines = [line for line in done.stderr.splitlines() if line.strip() and "network_util.cc" not in line]
    assert len(lines) == 1 and blind[:12] in lines[0] and f"cannot see {out}" in lines[0], done.stderr
    assert not db.exists() or not Store(db).list_experiments(), "nothing was created"
