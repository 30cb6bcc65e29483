"""Tests for powerbert.store's data: experiments and runs, metrics, dev outputs and ensemble
results round trips. Process identity: tests/test_store_process.py. The database file itself (schema,
migrations, refusals, modes): tests/test_store_files.py.

Run: python -m pytest tests/test_store.py -q

Over 300 lines on purpose: one small case per Store method and status change; the database file's own cases are already split out.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time

import numpy as np
import pytest

from powerbert.outputs import TaskOutputs
from powerbert.store import (
    EnsembleResult,
    Experiment,
    ExperimentStatus,
    Metric,
    Run,
    RunStatus,
    Store,
    StoreError,
)
from powerbert.store.db import BUSY_TIMEOUT_S, DATABASE_LOCKED
from powerbert.store.metrics import _LATEST_SQL
from powerbert.tasks import power_set

pytestmark = pytest.mark.timeout(60)

TASKS3 = ("sst", "para", "sts")

@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "runs.db") as s:
        yield s


@pytest.fixture
def experiment(store) -> Experiment:
    return store.create_experiment("exp1", TASKS3, {"lr": 1e-5}, "runs/exp1", power_set(TASKS3))


# -- experiments and runs ------------------------------------------------------------------


def test_experiment_round_trip(store, experiment):
    assert isinstance(experiment, Experiment)
    assert experiment.name == "exp1"
    assert experiment.tasks == TASKS3
    assert experiment.config == {"lr": 1e-5}
    assert experiment.status is ExperimentStatus.QUEUED
    assert experiment.elapsed is None
    assert store.get_experiment("exp1") == experiment
    assert store.get_experiment(experiment.id) == experiment
    assert store.get_experiment(str(experiment.id)) == experiment

    second = store.create_experiment("exp2", ("sts", "sst"), {}, None, [("sts",)])
    assert second.tasks == ("sst", "sts")  # registry order
    assert [e.name for e in store.list_experiments()] == ["exp2", "exp1"]
    assert store.latest_experiment().name == "exp2"

    store.update_experiment(experiment.id, status=ExperimentStatus.RUNNING, started_at=100.0,
                            supervisor_pid=42, supervisor_start_time=99.5, host="gpu1",
                            config={"lr": 2e-5, "epochs": np.int64(3)})
    got = store.get_experiment("exp1")
    assert (got.status, got.started_at, got.supervisor_pid, got.host) == (
        ExperimentStatus.RUNNING, 100.0, 42, "gpu1"
    )
    assert got.config == {"lr": 2e-5, "epochs": 3}
    assert store.latest_experiment(status="running").name == "exp1"
    assert store.latest_experiment(status=ExperimentStatus.FAILED) is None
    with pytest.raises(StoreError, match="no field 'colour'"):
        store.update_experiment(experiment.id, colour="red")
    with pytest.raises(StoreError, match="unknown experiment status 'done'"):
        store.update_experiment(experiment.id, status="done")


def test_experiment_refusals(store, experiment):
    with pytest.raises(StoreError, match="^experiment 'exp1' already exists$"):
        store.create_experiment("exp1", TASKS3, {}, None, [("sst",)])
    with pytest.raises(StoreError, match="^no experiment 'nope': experiments are exp1$"):
        store.get_experiment("nope")
    with pytest.raises(StoreError, match="unknown task 'qqp'"):
        store.create_experiment("exp3", ("sst", "qqp"), {}, None, [("sst",)])
    with pytest.raises(StoreError, match="task 'para' is not one of the experiment's tasks"):
        store.create_experiment("exp3", ("sst",), {}, None, [("sst", "para")])
    with pytest.raises(StoreError, match="already has a powerset run for sst"):
        store.create_experiment("exp3", ("sst",), {}, None, [("sst",), ("sst",)])
    for bad in ("", "a/b", "123", " x"):
        with pytest.raises(StoreError, match="bad experiment name"):
            store.create_experiment(bad, ("sst",), {}, None, [("sst",)])
    # a refused create leaves nothing behind (one transaction)
    assert [e.name for e in store.list_experiments()] == ["exp1"]


def test_no_experiments_message(store):
    with pytest.raises(StoreError, match="^no experiment 'x': there are no experiments yet$"):
        store.get_experiment("x")


def test_runs_are_created_queued_in_power_set_order(store, experiment):
    runs = store.runs(experiment.id)
    assert all(isinstance(r, Run) for r in runs)
    assert [r.subset for r in runs] == [
        "sst", "para", "sts", "sst+para", "sst+sts", "para+sts", "sst+para+sts"
    ]
    assert {r.status for r in runs} == {RunStatus.QUEUED}
    assert runs[4].tasks == ("sst", "sts")
    assert runs[4].out_dir == os.path.join("runs/exp1", "sst+sts")
    assert runs[0].kind == "powerset" and runs[0].attempt == 0 and runs[0].best_scores == {}

    frozen = store.add_runs(experiment.id, [("sst",), "sts"], kind="frozen")
    assert [(r.subset, r.kind) for r in frozen] == [("sst", "frozen"), ("sts", "frozen")]
    assert frozen[0].out_dir == os.path.join("runs/exp1", "frozen-sst")
    assert len(store.runs(experiment.id)) == 9
    assert len(store.runs(experiment.id, kind="frozen")) == 2


def test_find_run(store, experiment):
    runs = store.runs(experiment.id)
    assert store.find_run("exp1/sst+sts").id == runs[4].id
    assert store.find_run("exp1/sts+sst").id == runs[4].id  # any order
    assert store.find_run(f"{experiment.id}/sst").id == runs[0].id
    assert store.find_run(str(runs[2].id)).id == runs[2].id
    assert store.find_run(runs[2].id).id == runs[2].id
    store.add_runs(experiment.id, [("sst",)], kind="frozen")
    assert store.find_run("exp1/sst").kind == "powerset"
    with pytest.raises(StoreError, match="^no run 'cfimdb' in experiment 'exp1': runs are sst, "):
        store.find_run("exp1/cfimdb")
    with pytest.raises(StoreError, match="no experiment 'other'"):
        store.find_run("other/sst")
    with pytest.raises(StoreError, match="expected EXPERIMENT/SUBSET"):
        store.find_run("sst")
    with pytest.raises(StoreError, match="no run with id 999"):
        store.find_run("999")


def test_run_lifecycle(store, experiment):
    first = store.claim_next_queued(experiment.id)
    assert first.subset == "sst" and first.status is RunStatus.RUNNING
    assert first.heartbeat_at is not None and first.pid is None
    assert store.claim_next_queued(experiment.id).subset == "para"

    store.mark_run_started(first.id, pid=1234, pid_start_time=1000.5, host="gpu1", device="cuda:0")
    run = store.get_run(first.id)
    assert (run.pid, run.pid_start_time, run.host, run.device, run.attempt) == (
        1234, 1000.5, "gpu1", "cuda:0", 1
    )
    assert run.elapsed is not None and run.elapsed >= 0

    status = store.heartbeat(first.id, epoch=1, step=10, total_steps=100, loss=0.7)
    assert status is RunStatus.RUNNING
    assert store.heartbeat(first.id, step=11) is RunStatus.RUNNING  # others kept
    run = store.get_run(first.id)
    assert (run.epoch, run.step, run.total_steps, run.loss) == (1, 11, 100, 0.7)

    store.update_run(first.id, best_scores={"sst": np.float64(0.51)}, best_overall=0.51,
                     checkpoint="runs/exp1/sst/best")
    run = store.get_run(first.id)
    assert run.best_scores == {"sst": 0.51} and run.checkpoint == "runs/exp1/sst/best"
    with pytest.raises(StoreError, match="runs have no field 'colour'"):
        store.update_run(first.id, colour="red")
    with pytest.raises(StoreError, match="unknown run status 'done'"):
        store.update_run(first.id, status="done")

    # someone asks the run to stop: the worker learns it from its next heartbeat
    store.update_run(first.id, status=RunStatus.STOPPED)
    assert store.heartbeat(first.id, step=12) is RunStatus.STOPPED

    store.update_run(first.id, status="running")
    with pytest.raises(StoreError, match="is running: stop it before deleting it"):
        store.delete_run(first.id)
    assert store.finish_run(first.id, RunStatus.FINISHED, exit_code=0, log_tail="done\n")
    # compare-and-set: the supervisor's 'lost' must not overwrite a finished run
    assert not store.finish_run(first.id, RunStatus.LOST, expect=RunStatus.RUNNING)
    run = store.get_run(first.id)
    assert (run.status, run.exit_code, run.log_tail) == (RunStatus.FINISHED, 0, "done\n")
    assert run.ended_at is not None and run.elapsed == pytest.approx(run.ended_at - run.started_at)
    with pytest.raises(StoreError, match="needs a final status"):
        store.finish_run(first.id, RunStatus.RUNNING)

    store.add_metrics(first.id, [(1, 0.0, "train", "loss", 1.0)])
    store.delete_run(first.id)
    with pytest.raises(StoreError, match=f"no run with id {first.id}"):
        store.get_run(first.id)
    assert store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0  # cascaded


def test_claim_takes_each_queued_run_once(store, experiment):
    claimed = []
    while (run := store.claim_next_queued(experiment.id)) is not None:
        claimed.append(run.subset)
    assert len(claimed) == 7 and len(set(claimed)) == 7


def test_delete_experiment(store, experiment):
    run = store.runs(experiment.id)[0]
    store.update_run(run.id, status="running")
    with pytest.raises(StoreError, match="has running runs \\(sst\\)"):
        store.delete_experiment("exp1")
    store.finish_run(run.id, "stopped")
    store.save_ensemble_results(
        experiment.id, [EnsembleResult(experiment.id, "voting", "sst", 0.5)]
    )
    store.delete_experiment("exp1")
    assert store.list_experiments() == []
    assert store.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert store.conn.execute("SELECT COUNT(*) FROM ensemble_results").fetchone()[0] == 0


# -- metrics -------------------------------------------------------------------------------


def test_metrics_incremental_read(store, experiment):
    run_id = store.runs(experiment.id)[0].id
    other_id = store.runs(experiment.id)[1].id
    assert store.add_metrics(run_id, []) == 0
    store.add_metrics(run_id, [(s, s / 10, "train", "loss", 1.0 / (s + 1)) for s in range(5)])
    store.add_metrics(other_id, [(0, 0.0, "train", "loss", 9.0)])
    first = store.metrics(run_id)
    assert all(isinstance(m, Metric) for m in first)
    assert [m.step for m in first] == [0, 1, 2, 3, 4]
    assert first[2].value == 1.0 / 3 and first[2].epoch == 0.2 and first[2].split == "train"

    last_seen = first[-1].id
    assert store.metrics(run_id, after_id=last_seen) == []
    store.add_metrics(run_id, [(5, 0.5, "train", "loss", 0.1), (5, 0.5, "dev", "sst", 0.4),
                               (6, 0.6, "train", "loss", float("nan"))])
    new = store.metrics(run_id, after_id=last_seen)
    assert [(m.step, m.name) for m in new] == [(5, "loss"), (5, "sst"), (6, "loss")]
    assert math.isnan(new[2].value)
    assert [m.name for m in store.metrics(run_id, after_id=last_seen, names=["sst"])] == ["sst"]
    assert store.metrics(run_id, names=[]) == []
    assert len(store.metrics(run_id, limit=2)) == 2
    with pytest.raises(StoreError, match="no run with id 999"):
        store.add_metrics(999, [(0, 0.0, "train", "loss", 1.0)])


def test_delete_metrics_after_and_ids_are_never_reused(store, experiment):
    run_id = store.runs(experiment.id)[0].id
    store.add_metrics(run_id, [(s, 0.0, "train", "loss", float(s)) for s in range(10)])
    last_seen = store.metrics(run_id)[-1].id
    assert store.delete_metrics_after(run_id, 6) == 3
    assert [m.step for m in store.metrics(run_id)] == list(range(7))
    # the resumed run writes steps 7.. again; a reader that saw the old rows still gets them
    store.add_metrics(run_id, [(s, 0.0, "train", "loss", float(s)) for s in range(7, 10)])
    assert [m.step for m in store.metrics(run_id, after_id=last_seen)] == [7, 8, 9]


def test_latest_metrics(store, experiment):
    a, b, c = (r.id for r in store.runs(experiment.id)[:3])
    store.add_metrics(a, [(s, 0.0, "train", "loss", 10.0 - s) for s in range(10)])
    store.add_metrics(a, [(9, 1.0, "dev", "sst", 0.3), (9, 1.0, "train", "lr", 1e-5)])
    store.add_metrics(a, [(19, 2.0, "dev", "sst", 0.4)])
    store.add_metrics(b, [(0, 0.0, "train", "loss", 5.0), (0, 0.0, "train", "loss", 4.0)])
    assert store.latest_metrics([a, b, c]) == {
        a: {"loss": 1.0, "sst": 0.4, "lr": 1e-5},
        b: {"loss": 4.0},  # equal steps: the last written
        c: {},
    }


def test_latest_metrics_query_only_seeks_the_index(store, experiment):
    # Cheap at a million rows means no step of the plan scans the metrics table.
    plan = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + _LATEST_SQL, {"run": 1})]
    metric_steps = [p for p in plan if "metrics" in p or " m " in p]
    assert metric_steps and all(p.startswith("SEARCH") and "INDEX" in p for p in metric_steps)
    assert not any("TEMP B-TREE" in p for p in plan)


def test_latest_metrics_stays_fast_with_many_rows(store, experiment):
    run_ids = [r.id for r in store.runs(experiment.id)[:4]]
    names = ["loss", "loss/sst", "lr", "sst", "overall"]
    for run_id in run_ids:
        store.add_metrics(run_id, [(s, 0.0, "train", n, float(s)) for s in range(10_000)
                                   for n in names])
    started = time.perf_counter()
    for _ in range(20):
        latest = store.latest_metrics(run_ids)
    per_call = (time.perf_counter() - started) / 20
    assert latest[run_ids[0]] == {n: 9999.0 for n in names}
    assert per_call < 0.02  # ~0.2 ms here; a scan of 200,000 rows would take far longer


# -- dev outputs and ensembles -------------------------------------------------------------


def _outputs(rng: np.random.Generator, n: int) -> dict[str, TaskOutputs]:
    ids = [f"id{i:04d}" for i in range(n)]
    gold_sts = rng.uniform(0, 5, n)
    gold_sts[3] = np.nan  # a row without a label
    return {
        "sst": TaskOutputs("sst", ids, rng.integers(0, 5, n), rng.normal(size=(n, 5)) * 1e-3),
        "para": TaskOutputs("para", ids, rng.integers(0, 2, n),
                            np.concatenate([[1e-300, -1e300, 0.1 + 0.2], rng.normal(size=n - 3)])),
        "sts": TaskOutputs("sts", ids, gold_sts, rng.uniform(0, 5, n)),
    }


def test_dev_outputs_round_trip_exactly(store, experiment):
    run_id = store.runs(experiment.id)[-1].id
    saved = _outputs(np.random.default_rng(0), 50)
    store.save_dev_outputs(run_id, saved)
    loaded = store.dev_outputs(run_id)
    assert list(loaded) == ["sst", "para", "sts"]
    for task, out in saved.items():
        got = loaded[task]
        assert got.ids == out.ids
        assert got.outputs.shape == out.outputs.shape and got.outputs.dtype == np.float64
        assert np.array_equal(got.outputs, out.outputs)  # bit for bit
        assert np.array_equal(got.gold, out.gold, equal_nan=True)
    assert loaded["sst"].outputs.shape == (50, 5)
    assert math.isnan(loaded["sts"].gold[3])


def test_dev_outputs_are_replaced_per_task(store, experiment):
    run_id = store.runs(experiment.id)[-1].id
    other_run = store.runs(experiment.id)[0].id
    store.save_dev_outputs(run_id, _outputs(np.random.default_rng(0), 50))
    store.save_dev_outputs(other_run, {"sst": _outputs(np.random.default_rng(2), 5)["sst"]})
    better = _outputs(np.random.default_rng(1), 20)["sst"]
    store.save_dev_outputs(run_id, {"sst": better})
    loaded = store.dev_outputs(run_id)
    assert len(loaded["sst"].ids) == 20 and np.array_equal(loaded["sst"].outputs, better.outputs)
    assert len(loaded["para"].ids) == 50  # untouched
    assert len(store.dev_outputs(other_run)["sst"].ids) == 5
    assert store.dev_outputs(store.runs(experiment.id)[1].id) == {}
    with pytest.raises(StoreError, match="filed under 'sts' are for task 'sst'"):
        store.save_dev_outputs(run_id, {"sts": better})
    with pytest.raises(StoreError, match="no run with id 999"):
        store.save_dev_outputs(999, {"sst": better})


def test_ensemble_results_round_trip_and_replace(store, experiment):
    details = {"weights": np.array([0.25, 0.75]), "members": ["sst", "sst+sts"], "missing": [],
               "cv": {"folds": np.int64(5), "score": np.float32(0.5)}}
    store.save_ensemble_results(experiment.id, [
        EnsembleResult(experiment.id, "voting", "sst", 0.5, details),
        EnsembleResult(experiment.id, "weighted", "sst", 0.52),
    ])
    store.save_ensemble_results(
        experiment.id, [EnsembleResult(experiment.id, "voting", "sst", 0.6)]
    )
    results = store.ensemble_results(experiment.id)
    assert [(r.scheme, r.task, r.score) for r in results] == [
        ("voting", "sst", 0.6), ("weighted", "sst", 0.52)
    ]
    assert results[0].details == {} and results[0].created_at is not None
    store.save_ensemble_results(experiment.id, [
        EnsembleResult(experiment.id, "learned", "sts", float("nan"), details)
    ], replace_all=True)
    (only,) = store.ensemble_results(experiment.id)
    assert only.scheme == "learned" and only.score is None  # NaN is stored as NULL
    assert only.details == {"weights": [0.25, 0.75], "members": ["sst", "sst+sts"],
                            "missing": [], "cv": {"folds": 5, "score": 0.5}}
    with pytest.raises(StoreError, match="no experiment with id 999"):
        store.save_ensemble_results(999, [EnsembleResult(999, "voting", "sst", 0.5)])


def test_a_write_lock_held_elsewhere_past_the_busy_timeout_is_one_line(store, experiment):
    run_id = store.runs(experiment.id)[0].id
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # as a `sqlite3` shell left inside a transaction would
    try:
        store.conn.execute("PRAGMA busy_timeout = 100")  # the wait itself is not under test here
        with pytest.raises(StoreError) as err:
            store.add_metrics(run_id, [(0, 0.0, "train", "loss", 1.0)])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert str(err.value) == (
        f"{store.path}: {DATABASE_LOCKED}: another process has held the write lock for more "
        f"than {BUSY_TIMEOUT_S:g} s"
    )
    assert not store.conn.in_transaction
    assert store.add_metrics(run_id, [(0, 0.0, "train", "loss", 1.0)]) == 1  # and it goes on


def test_one_store_shared_by_threads(store, experiment):
    # The dashboard's thread workers may share one Store: its lock keeps transactions apart.
    run_ids = [r.id for r in store.runs(experiment.id)[:4]]
    errors = []

    def work(run_id: int) -> None:
        try:
            for step in range(50):
                store.add_metrics(run_id, [(step, 0.0, "train", "loss", float(step))])
                store.heartbeat(run_id, step=step)
                store.latest_metrics(run_ids)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(run_id,)) for run_id in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert {run_id: values["loss"] for run_id, values in store.latest_metrics(run_ids).items()} == {
        run_id: 49.0 for run_id in run_ids
    }
