"""Tests for powerbert.store: schema and migrations, round trips, file modes, refusals.

Run: python -m pytest tests/test_store.py -q
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import threading
import time

import numpy as np
import pytest

from powerbert.outputs import TaskOutputs
from powerbert.store import (
    MIGRATIONS,
    EnsembleResult,
    Experiment,
    ExperimentStatus,
    Metric,
    Migration,
    Run,
    RunStatus,
    Store,
    StoreError,
    is_same_process,
    open_db,
    process_start_time,
    schema_version,
)
from powerbert.store import db as db_module
from powerbert.store import migrations as migrations_module
from powerbert.store.metrics import _LATEST_SQL
from powerbert.tasks import power_set

pytestmark = pytest.mark.timeout(60)

TASKS3 = ("sst", "para", "sts")

EXPECTED_COLUMNS = {
    "experiments": {
        "id": "INTEGER", "name": "TEXT", "tasks": "TEXT", "config": "TEXT", "status": "TEXT",
        "out_dir": "TEXT", "created_at": "REAL", "started_at": "REAL", "ended_at": "REAL",
        "supervisor_pid": "INTEGER", "supervisor_start_time": "REAL", "host": "TEXT",
        "error": "TEXT",
    },
    "runs": {
        "id": "INTEGER", "experiment_id": "INTEGER", "subset": "TEXT", "kind": "TEXT",
        "status": "TEXT", "device": "TEXT", "pid": "INTEGER", "pid_start_time": "REAL",
        "host": "TEXT", "heartbeat_at": "REAL", "created_at": "REAL", "started_at": "REAL",
        "ended_at": "REAL", "exit_code": "INTEGER", "error": "TEXT", "log_tail": "TEXT",
        "checkpoint": "TEXT", "out_dir": "TEXT", "epoch": "INTEGER", "step": "INTEGER",
        "total_steps": "INTEGER", "loss": "REAL", "best_scores": "TEXT", "best_overall": "REAL",
        "attempt": "INTEGER", "updated_at": "REAL",
    },
    "metrics": {
        "id": "INTEGER", "run_id": "INTEGER", "step": "INTEGER", "epoch": "REAL",
        "split": "TEXT", "name": "TEXT", "value": "REAL", "time": "REAL",
    },
    "dev_outputs": {
        "run_id": "INTEGER", "task": "TEXT", "position": "INTEGER", "example_id": "TEXT",
        "gold": "REAL", "output": "TEXT",
    },
    "ensemble_results": {
        "id": "INTEGER", "experiment_id": "INTEGER", "scheme": "TEXT", "task": "TEXT",
        "score": "REAL", "details": "TEXT", "created_at": "REAL",
    },
}


def columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    return {row[1]: row[2] for row in conn.execute(f"PRAGMA table_info({table})")}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "runs.db") as s:
        yield s


@pytest.fixture
def experiment(store) -> Experiment:
    return store.create_experiment("exp1", TASKS3, {"lr": 1e-5}, "runs/exp1", power_set(TASKS3))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# -- schema and migrations -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["memory", "file"])
def test_fresh_database_has_the_schema(tmp_path, where):
    conn = open_db(":memory:" if where == "memory" else tmp_path / "runs.db")
    for table, expected in EXPECTED_COLUMNS.items():
        assert columns(conn, table) == expected, table
    assert schema_version(conn) == len(MIGRATIONS)
    applied = conn.execute("SELECT version, name FROM migrations ORDER BY version").fetchall()
    assert applied == [(m.version, m.name) for m in MIGRATIONS]
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(metrics)")}
    assert {"metrics_by_run", "metrics_by_run_name_step"} <= indexes
    assert [r[2] for r in conn.execute("PRAGMA index_info(metrics_by_run_name_step)")] == [
        "run_id", "name", "step"
    ]
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    if where == "file":
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    conn.close()


def test_reopening_applies_nothing_twice(tmp_path):
    path = tmp_path / "runs.db"
    open_db(path).close()
    conn = open_db(path)
    assert conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def _add_note_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT 'none'")
    conn.execute("CREATE TABLE tags (run_id INTEGER REFERENCES runs(id), tag TEXT)")


def test_version_1_database_keeps_its_data_through_a_new_migration(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    version_1 = [MIGRATIONS[0]]
    monkeypatch.setattr(migrations_module, "MIGRATIONS", version_1)
    with Store(path) as store:
        exp = store.create_experiment("old", ("sst", "sts"), {"epochs": 3}, "runs/old",
                                      power_set(("sst", "sts")))
        run = store.runs(exp.id)[0]
        store.add_metrics(run.id, [(1, 0.1, "train", "loss", 0.5)])
        store.update_run(run.id, best_scores={"sst": 0.5})
        assert schema_version(store.conn) == 1

    with_version_2 = [*version_1, Migration(2, "m002_note", _add_note_column)]
    monkeypatch.setattr(migrations_module, "MIGRATIONS", with_version_2)
    with Store(path) as store:
        assert schema_version(store.conn) == 2
        versions = store.conn.execute("SELECT version FROM migrations ORDER BY version")
        assert [tuple(r) for r in versions] == [(1,), (2,)]
        assert "note" in columns(store.conn, "runs")
        assert [tuple(r) for r in store.conn.execute("SELECT DISTINCT note FROM runs")] == [
            ("none",)
        ]
        exp = store.get_experiment("old")
        assert exp.config == {"epochs": 3}
        runs = store.runs(exp.id)
        assert [r.subset for r in runs] == ["sst", "sts", "sst+sts"]
        assert runs[0].best_scores == {"sst": 0.5}
        assert [m.value for m in store.metrics(runs[0].id)] == [0.5]


def test_database_built_by_hand_at_version_1_is_migrated(tmp_path, monkeypatch):
    # No migrations table, only user_version: as a tool other than open_db might leave it.
    path = tmp_path / "runs.db"
    raw = sqlite3.connect(path)
    MIGRATIONS[0].apply(raw)
    raw.execute("INSERT INTO experiments (name, created_at) VALUES ('hand', 1.0)")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    monkeypatch.setattr(
        migrations_module,
        "MIGRATIONS",
        [MIGRATIONS[0], Migration(2, "m002_note", _add_note_column)],
    )
    conn = open_db(path)
    assert schema_version(conn) == 2
    assert conn.execute("SELECT name FROM experiments").fetchall() == [("hand",)]
    assert "note" in columns(conn, "runs")
    conn.close()


def test_failed_migration_leaves_the_previous_version(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    open_db(path).close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        conn.execute("THIS IS NOT SQL")

    with_broken = [*MIGRATIONS, Migration(2, "broken", broken)]
    monkeypatch.setattr(migrations_module, "MIGRATIONS", with_broken)
    with pytest.raises(StoreError, match="runs.db: cannot open the database"):
        open_db(path)
    monkeypatch.undo()
    conn = open_db(path)
    assert schema_version(conn) == 1
    assert "half" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()


def test_newer_schema_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    conn = open_db(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS * 5)  # "knows" version 5
    with pytest.raises(StoreError) as err:
        open_db(path)
    assert str(err.value) == (
        f"{path}: database schema version 7 is newer than this PowerBERT understands (5): "
        "upgrade PowerBERT"
    )


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
    assert frozen[0].out_dir == os.path.join("runs/exp1", "frozen", "sst")
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


# -- files: modes and refusals -------------------------------------------------------------


def test_new_database_is_private(tmp_path, umask_022):
    path = tmp_path / "new" / "deeper" / "runs.db"
    with Store(path) as store:
        exp = store.create_experiment("e", ("sst",), {}, None, [("sst",)])
        store.add_metrics(store.runs(exp.id)[0].id, [(0, 0.0, "train", "loss", 1.0)])
        for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
            assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "deeper").st_mode) == 0o700


def test_path_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = blocker / "runs.db"
    with pytest.raises(StoreError, match=f"^{path}: {blocker} is not a folder$"):
        open_db(path)
    with pytest.raises(StoreError, match=f"^{blocker / 'sub' / 'runs.db'}: cannot create folder"):
        open_db(blocker / "sub" / "runs.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=f"^{locked / 'runs.db'}: cannot create the database"):
            open_db(locked / "runs.db")
        nested = locked / "sub" / "runs.db"
        with pytest.raises(StoreError, match=f"^{nested}: cannot create folder"):
            open_db(locked / "sub" / "runs.db")
    finally:
        locked.chmod(0o700)


def test_permission_denied_creating_the_file_is_refused(tmp_path, monkeypatch):
    # The same refusal as above, simulated so that it runs as root too.
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(db_module.os, "open", denied)
    path = tmp_path / "runs.db"
    expected = f"^{path}: cannot create the database: Permission denied$"
    with pytest.raises(StoreError, match=expected):
        open_db(path)


def test_unwritable_folder_with_existing_database_is_refused(tmp_path, monkeypatch):
    # WAL must create runs.db-wal beside the file. Root passes any access check, so the check
    # is simulated here; the real chmod case is the test above.
    path = tmp_path / "runs.db"
    open_db(path).close()
    real_access = os.access
    monkeypatch.setattr(db_module.os, "access",
                        lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(StoreError, match=f"^{path}: folder {tmp_path} is not writable$"):
        open_db(path)


def test_filesystem_without_wal_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    real_connect = db_module._connect

    class NoWal:  # what a network filesystem's SQLite reports: the journal mode stays 'delete'
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql.upper().startswith("PRAGMA JOURNAL_MODE"):
                return self.conn.execute("PRAGMA journal_mode")
            return self.conn.execute(sql, *args)

        def close(self):
            self.conn.close()

    monkeypatch.setattr(
        db_module, "_connect", lambda target, label: NoWal(real_connect(target, label))
    )
    with pytest.raises(StoreError, match=f"^{path}: this filesystem cannot hold a WAL-mode"):
        open_db(path)


def test_not_a_database_is_refused(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"hello, this is not SQLite" * 100)
    with pytest.raises(StoreError, match=f"^{path}: "):
        open_db(path)


# -- processes -----------------------------------------------------------------------------


def test_process_start_time_identifies_this_process():
    started = process_start_time(os.getpid())
    if started is None:
        pytest.skip("no /proc here")
    assert started <= time.time() + 2
    assert is_same_process(os.getpid(), started)
    assert not is_same_process(os.getpid(), started - 3600)  # same pid, another process
    assert not is_same_process(None, started)
    assert is_same_process(os.getpid(), None)  # no start time recorded: the pid decides


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
        except Exception as e:  # noqa: BLE001: reported below
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
