"""Cases 16 and 17 (and the --skip-bad-rows count of case 14), on the experiment that
`hostile_experiment` ran for real: names and paths full of shell payloads, umask 022.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from powerbert.store import RunStatus, Store
from tests.faults.conftest import BAD_SST_LINES, HOSTILE

pytestmark = pytest.mark.timeout(300)


def test_16_names_and_paths_reach_the_worker_verbatim_without_a_shell(hostile_experiment):
    exp = hostile_experiment
    store = Store(exp.db)
    try:
        experiment = store.get_experiment(exp.name)
        runs = store.runs(experiment.id)
        assert experiment.name == exp.name
        assert all(r.status == RunStatus.FINISHED for r in runs), [(r.subset, r.error) for r in runs]
        # The paths reached training verbatim (made absolute, so a resume from elsewhere works).
        train = experiment.config["train"]
        assert train["data_dir"] == str(exp.data_dir) and train["model"] == str(exp.model_dir)
        assert Path(experiment.out_dir) == exp.out_root / exp.name
        # Every supervisor and worker got exactly this argument list: no shell re-split it.
        workers = {r.pid: r for r in runs}
        assert set(workers) <= set(exp.cmdlines), "a worker was never seen running"
        for pid, run in workers.items():
            assert exp.cmdlines[pid] == [
                sys.executable, "-m", "powerbert.runner.worker", "--db", str(exp.db), "--run", str(run.id), "--device-label", "cpu",
            ]
        supervisors = [argv for argv in exp.cmdlines.values() if "powerbert.runner.supervisor" in argv]
        assert supervisors == [[sys.executable, "-m", "powerbert.runner.supervisor", "--db", str(exp.db), "--experiment", str(experiment.id)]]
    finally:
        store.close()
    # No payload ran: no marker anywhere under the test folders, the fake home is intact.
    assert "pwned" in HOSTILE
    assert not [p for p in exp.base.rglob("pwned")]
    assert not Path("pwned").exists()
    assert (exp.home / "canary").read_text() == "still here"


def test_17_files_are_private_under_umask_022_and_nothing_listens(hostile_experiment):
    exp = hostile_experiment
    assert exp.samples > 10 and exp.cmdlines, "the watcher never saw the processes run"
    # runs.db and its WAL sidecars, as seen while the supervisor and workers had it open
    for suffix in ("", "-wal", "-shm"):
        assert exp.modes.get(f"{exp.db}{suffix}") == 0o600, (suffix, exp.modes)
    assert stat.S_IMODE(os.stat(exp.db.parent).st_mode) == 0o700  # the folder open_db made
    store = Store(exp.db)
    try:
        experiment = store.get_experiment(exp.name)
        runs = store.runs(experiment.id)
    finally:
        store.close()
    folders = [exp.out_root, Path(experiment.out_dir), *(Path(r.out_dir) for r in runs)]
    for folder in folders:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
    files = [Path(experiment.out_dir) / "supervisor.log"]
    for run in runs:
        files += [Path(run.out_dir) / n for n in ("worker.log", "best.safetensors", "best.json", "last.safetensors")]
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # No supervisor or worker ever held a TCP/UDP socket, let alone a listening one.
    assert {pid: socks for pid, socks in exp.sockets.items() if socks} == {}


def test_14_skip_bad_rows_reports_the_exact_count_and_lines(hostile_experiment):
    exp = hostile_experiment
    store = Store(exp.db)
    try:
        runs = store.runs(store.get_experiment(exp.name).id)
    finally:
        store.close()
    lines = ", ".join(map(str, BAD_SST_LINES))
    expected = f"skipped 3 bad rows in ids-sst-train.csv (lines {lines})"
    for run in runs:
        log = (Path(run.out_dir) / "worker.log").read_text()
        assert (expected in log) == ("sst" in run.tasks), (run.subset, log)
    # ... and the command that started it said so before anything ran
    assert expected in exp.launched.stdout, exp.launched.stdout
