"""runs.db under real concurrency: separate processes (spawn), as the supervisor, workers and
dashboard will be. Nothing here may raise 'database is locked', lose a row or run a migration
twice.

Run: python -m pytest tests/test_store_concurrency.py -q
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from pathlib import Path

import pytest
from sqlite_utils import Database

from powerbert.store import MIGRATIONS, RunStatus, Store, open_db, schema_version
from powerbert.store.migrations import migration_names

CTX = mp.get_context("spawn")
ROUNDS = 8  # fresh databases opened at the same moment, per test run
BATCHES, BATCH_ROWS = 120, 25
WAIT_S = 60  # for a child that should take a few seconds; only a hang would use it


# -- child processes (module level, so that spawn can import them) ---------------------------


def _report(results, fn, *args) -> None:
    try:
        results.put(("ok", fn(*args)))
    except BaseException:  # noqa: BLE001 - any failure goes back to the test as text
        results.put(("error", traceback.format_exc()))


def _open_fresh_databases(folder: str, barrier, results) -> None:
    def work():
        for round_ in range(ROUNDS):
            barrier.wait(WAIT_S)  # everyone opens the same brand-new file together
            conn = open_db(Path(folder) / f"round{round_}" / "runs.db")
            conn.execute("SELECT COUNT(*) FROM runs").fetchone()
            conn.close()
        return ROUNDS

    _report(results, work)


def _write_metrics(path: str, run_id: int, barrier, results) -> None:
    def work():
        with Store(path) as store:
            barrier.wait(WAIT_S)
            for batch in range(BATCHES):
                first = batch * BATCH_ROWS
                rows = [(s, s / 100, "train", "loss", 1.0 / (s + 1))
                        for s in range(first, first + BATCH_ROWS)]
                store.add_metrics(run_id, rows)
                store.heartbeat(run_id, step=first + BATCH_ROWS - 1, loss=rows[-1][4])
                time.sleep(0.01)
        return BATCHES

    _report(results, work)


def _claim_all(path: str, experiment_id: int, barrier, results) -> None:
    def work():
        claimed = []
        with Store(path) as store:
            barrier.wait(WAIT_S)
            while (run := store.claim_next_queued(experiment_id)) is not None:
                claimed.append(run.id)
        return claimed

    _report(results, work)


def _start(target, args: tuple, count: int) -> tuple[list, object, object]:
    results = CTX.Queue()
    barrier = CTX.Barrier(count)  # the caller keeps it: a barrier collected here is unlinked
    processes = [CTX.Process(target=target, args=(*args, barrier, results)) for _ in range(count)]
    for p in processes:
        p.start()
    return processes, results, barrier


def _collect(processes, results, timeout: float = WAIT_S) -> list:
    """Each child's return value; fails with the first child's traceback, or if one died."""
    outcomes = []
    deadline = time.monotonic() + timeout
    while len(outcomes) < len(processes) and time.monotonic() < deadline:
        try:
            outcomes.append(results.get(timeout=0.2))
        except queue.Empty:
            if not any(p.is_alive() for p in processes) and results.empty():
                break  # a child died without reporting: no need to wait out the timeout
    for p in processes:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    errors = [text for status, text in outcomes if status == "error"]
    assert not errors, errors[0]
    assert len(outcomes) == len(processes), "a child process died without reporting"
    return [value for _, value in outcomes]


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_processes_opening_a_new_database_together_migrate_it_once(tmp_path):
    processes, results, _barrier = _start(_open_fresh_databases, (str(tmp_path),), 4)
    assert _collect(processes, results) == [ROUNDS] * 4
    for round_ in range(ROUNDS):
        conn = open_db(tmp_path / f"round{round_}" / "runs.db")
        # every migration recorded as applied exactly once, in order
        applied = MIGRATIONS.applied(Database(conn, recursive_triggers=False))
        assert [m.name for m in applied] == migration_names(MIGRATIONS)
        assert schema_version(conn) == len(migration_names(MIGRATIONS))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


@pytest.mark.timeout(90)
def test_writers_and_a_polling_reader_lose_nothing(tmp_path):
    path = str(tmp_path / "runs.db")
    with Store(path) as store:
        exp = store.create_experiment("e", ("sst", "para", "sts"), {}, None,
                                      [("sst",), ("para",), ("sts",)])
        run_ids = [r.id for r in store.runs(exp.id)]

        results = CTX.Queue()
        barrier = CTX.Barrier(3)
        writers = [CTX.Process(target=_write_metrics, args=(path, run_id, barrier, results))
                   for run_id in run_ids]
        for w in writers:
            w.start()

        # The dashboard's loop: incremental reads 10 times a second while the writers write.
        seen: dict[int, list] = {run_id: [] for run_id in run_ids}
        polls = 0
        while any(w.is_alive() for w in writers) and polls < 600:
            for run_id in run_ids:
                after = seen[run_id][-1].id if seen[run_id] else 0
                seen[run_id].extend(store.metrics(run_id, after_id=after))
            store.latest_metrics(run_ids)
            store.runs(exp.id)
            polls += 1
            time.sleep(0.1)
        assert _collect(writers, results) == [BATCHES] * 3
        for run_id in run_ids:  # the last rows, written after the final poll
            after = seen[run_id][-1].id if seen[run_id] else 0
            seen[run_id].extend(store.metrics(run_id, after_id=after))

        total = BATCHES * BATCH_ROWS
        assert polls >= 10, "the writers finished before the reader could watch them"
        for run_id in run_ids:
            stored = store.metrics(run_id)
            assert [m.step for m in stored] == list(range(total))  # exact count, no gaps
            # the incremental reads saw every row exactly once, in order
            assert [m.id for m in seen[run_id]] == [m.id for m in stored]
            run = store.get_run(run_id)
            assert run.step == total - 1 and run.loss == pytest.approx(1.0 / total)
            assert store.latest_metrics([run_id])[run_id] == {"loss": pytest.approx(1.0 / total)}


@pytest.mark.timeout(90)
def test_concurrent_claims_start_each_run_once(tmp_path):
    path = str(tmp_path / "runs.db")
    with Store(path) as store:
        subsets = [("sst",), ("para",), ("sts",), ("sst", "para"), ("sst", "sts"),
                   ("para", "sts"), ("sst", "para", "sts")]
        exp = store.create_experiment("e", ("sst", "para", "sts"), {}, None, subsets)
        store.add_runs(exp.id, subsets, kind="frozen")
        store.add_runs(exp.id, subsets, kind="naive")
        processes, results, _barrier = _start(_claim_all, (path, exp.id), 4)
        claimed = [run_id for ids in _collect(processes, results) for run_id in ids]
        all_ids = [r.id for r in store.runs(exp.id)]
        assert sorted(claimed) == all_ids  # each run once, none left behind
        assert {r.status for r in store.runs(exp.id)} == {RunStatus.RUNNING}
