"""runs.db under faults: cases 8 (the real command's refusal of a newer schema), 9 (a writer
killed at random points) and 18 (a database where it cannot be written), for real.

Cases 6 and 7 (concurrent writers and readers; four processes creating one database) are in
tests/test_store_concurrency.py, and the in-process halves of 8 and 18 in tests/test_store.py.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from sqlite_utils import Database

from powerbert.store import MIGRATIONS, Store, StoreError, open_db, schema_version
from powerbert.store.db import DATABASE_LOCKED
from powerbert.store.migrations import migration_names
from tests.faults.helpers import cli, cli_env, remount

KNOWN = len(migration_names(MIGRATIONS))  # the schema version this code builds

ROWS = 40  # metric rows per transaction

# Writes batch after batch, each one transaction: ROWS metric rows for step = batch, and the
# run's step set to that batch, so a torn transaction would show as a short batch or a step
# that disagrees with the metrics.
WRITER = f"""
import sys, time
from powerbert.store import Store, StoreError
store = Store(sys.argv[1])
try:
    exp = store.get_experiment("e")
except StoreError:
    exp = store.create_experiment("e", ("sst",), {{}}, None, [("sst",)])
run_id = store.runs(exp.id)[0].id
batch = store.conn.execute("SELECT COALESCE(MAX(step), -1) + 1 FROM metrics").fetchone()[0]
print("writing", flush=True)
while True:
    with store._write() as db:
        db.executemany(
            "INSERT INTO metrics (run_id, step, epoch, split, name, value, time) VALUES (?, ?, 0, 'train', ?, ?, ?)",
            [(run_id, batch, f"m{{i}}", float(i), time.time()) for i in range({ROWS})],
        )
        db.execute("UPDATE runs SET step = ?, loss = ? WHERE id = ?", (batch, float(batch), run_id))
    batch += 1
"""


def check_consistent(path) -> int:
    """integrity_check ok, every batch whole, the run's step the last batch; how many batches."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        if not Database(conn, recursive_triggers=False).table("runs").exists():
            return 0  # killed before the schema was committed: nothing, which is all-or-nothing too
        torn = conn.execute(f"SELECT step, COUNT(*) FROM metrics GROUP BY step HAVING COUNT(*) != {ROWS}").fetchall()
        assert torn == [], f"torn transactions: {torn}"
        steps = [s for (s,) in conn.execute("SELECT DISTINCT step FROM metrics ORDER BY step")]
        assert steps == list(range(len(steps))), "a batch went missing between two that stayed"
        run_step = conn.execute("SELECT step FROM runs").fetchone()
        assert (run_step[0] if run_step else None) == (steps[-1] if steps else None)
        return len(steps)
    finally:
        conn.close()


@pytest.mark.timeout(180)
def test_9_a_writer_killed_anywhere_leaves_a_sound_database(tmp_path):
    path = tmp_path / "runs.db"
    rng = random.Random(9)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    batches = []
    kills_while_writing = 0
    for _ in range(14):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        try:
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.5))  # anywhere: starting, creating, migrating
            else:
                assert proc.stdout.readline() == "writing\n"
                time.sleep(rng.uniform(0.0, 0.4))  # mid-transaction, almost surely
                kills_while_writing += 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        batches.append(check_consistent(path))
    assert kills_while_writing >= 5 and batches[-1] > 20, batches
    assert batches == sorted(batches)  # nothing committed was ever lost
    conn = open_db(path)  # and the product opens it as it is
    assert schema_version(conn) == KNOWN
    conn.close()


@pytest.mark.timeout(120)
def test_8_the_command_refuses_a_newer_database_naming_both_versions(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        store.create_experiment("kept", ("sst",), {}, None, [("sst",)])
        store.conn.execute(f"PRAGMA user_version = {KNOWN + 5}")
    out = cli("list", env=cli_env(path))
    assert out.returncode == 1
    assert f"schema version {KNOWN + 5} is newer than this PowerBERT understands ({KNOWN})" in out.stderr
    assert "Traceback" not in out.stderr and str(path) in out.stderr
    conn = sqlite3.connect(path)  # untouched
    assert conn.execute("SELECT name FROM experiments").fetchall() == [("kept",)]
    conn.close()


@pytest.mark.timeout(120)
def test_18_a_database_in_a_read_only_folder_is_refused_to_writers_and_read_by_readers(tmp_path, tmpfs):
    # A new database where nothing can be created.
    ro = tmpfs(tmp_path / "ro", "1m", readonly=True)
    with pytest.raises(StoreError, match=f"^{ro / 'runs.db'}: cannot create the database: Read-only file system$"):
        open_db(ro / "runs.db")
    # An existing database on a filesystem that became read-only (WAL needs its -wal and -shm).
    rw = tmpfs(tmp_path / "rw", "1m")
    with Store(rw / "runs.db") as store:
        store.create_experiment("kept", ("sst",), {}, None, [("sst",)])
    remount(rw, "ro")
    with pytest.raises(StoreError, match=f"^{rw / 'runs.db'}: folder {rw} is not writable$"):
        open_db(rw / "runs.db")
    # A command that writes says it in one line; a command that only reads reads it.
    out = cli("stop", "kept", env=cli_env(rw / "runs.db"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{rw / 'runs.db'}: folder {rw} is not writable" in " ".join(out.stderr.split())
    out = cli("list", env=cli_env(rw / "runs.db"))
    assert out.returncode == 0 and "kept" in out.stdout, out.stderr
    remount(rw, "rw")
    with Store(rw / "runs.db") as store:  # nothing was damaged
        assert [e.name for e in store.list_experiments()] == ["kept"]


@pytest.mark.timeout(240)
def test_6_a_write_lock_held_past_the_busy_timeout_pauses_training_and_loses_nothing(tmp_path, janitor, tiny_model_dir, toy_data_dir):
    """Someone holds runs.db's write lock for longer than the 10 s busy timeout (a `sqlite3`
    shell left inside BEGIN IMMEDIATE, a backup): the worker and the supervisor wait, then go
    on; the run is never failed or lost, and its curve has every step once."""
    from powerbert.runner import experiments
    from powerbert.runner.liveness import reconcile
    from powerbert.store import BUSY_TIMEOUT_S, RunStatus
    from tests.faults.helpers import alive, tiny_config, wait_until

    db = tmp_path / "runs.db"
    janitor.watch_db(db)
    store = Store(db)
    exp = experiments.create_experiment(store, tiny_config(tiny_model_dir, toy_data_dir, ("sst",), epochs=3, max_train=None),
                                        name="busy", out_root=tmp_path / "runs")
    experiments.launch(db, store, exp)
    run = wait_until(lambda: (r := store.runs(exp.id)[0]).total_steps and r, 120, "the worker to train")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        held = time.monotonic()
        while time.monotonic() - held < BUSY_TIMEOUT_S + 3:
            assert reconcile(store, exp.id)[0].status == RunStatus.RUNNING  # readers still read
            assert alive(run.pid)
            time.sleep(0.5)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_until(lambda: store.get_experiment(exp.id).status.is_terminal, 120, "the experiment to end")
    done = store.get_run(run.id)
    assert done.status == RunStatus.FINISHED and done.attempt == 1, done.error
    assert [m.step for m in store.metrics(run.id, names=["loss"])] == list(range(1, done.total_steps + 1))
    log = (tmp_path / "runs" / "busy" / "sst" / "worker.log").read_text()
    waits = [line for line in log.splitlines() if line.startswith("runs.db is busy, waiting: ")]
    assert any(DATABASE_LOCKED in line for line in waits), log  # it waited on the store's busy error
    store.close()
