"""Case 1: the terminal that started an experiment goes away; training does not notice.

Three `powerbert run` commands, each following its own experiment live, lose their terminal in
the three ways an SSH session does: SIGKILL, a hang-up of their session (the pty closes), and
the stdout pipe closing under them. Every worker keeps training; a fresh `powerbert status`
shows the runs running, and later finished.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import termios
import threading

import pytest
from typer.testing import CliRunner

from powerbert.cli.app import app
from powerbert.store import ExperimentStatus, RunStatus, Store
from tests.faults.helpers import CLI, alive, cli_env, wait_until

FAULTS = ("sigkill", "sighup", "pipe")


def _drain(fd: int, stop: threading.Event) -> None:
    """Read a pty master until `stop` is set, so the follower never blocks on a full terminal.

    It never blocks in a read: a read still waiting when the test closes the master would hold
    the terminal open past the close (Linux releases the file when the read returns), and the
    hang-up would wait for the follower's next write, which on a busy machine can be late."""
    while not stop.is_set():
        if select.select([fd], [], [], 0.1)[0]:
            try:
                if not os.read(fd, 65536):
                    return
            except OSError:
                return


def _controlling_tty() -> None:  # in the child, after setsid: the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _run_row(stdout: str) -> str:
    rows = [line for line in stdout.splitlines() if line.strip().startswith("sst ")]
    assert len(rows) == 1, stdout
    return rows[0]


@pytest.mark.timeout(300)
def test_1_workers_survive_their_launcher_being_killed_hung_up_or_piped_shut(tmp_path, janitor, tiny_model_dir, toy_data_dir):
    db = tmp_path / "runs.db"
    env = cli_env(db, tmp_path / "runs")
    janitor.watch_db(db)
    # 60 epochs: long enough that the runs still train when `status` looks right after the faults
    common = ["run", "--tasks", "sst", "--data-dir", toy_data_dir, "--model", tiny_model_dir, "--epochs", "60",
              "--max-train", "0", "--batch-size", "16", "--lr", "1e-3", "--precision", "fp32"]
    argv = lambda name: [*CLI, *map(str, common), "--name", name]  # noqa: E731

    launchers = {}
    launchers["sigkill"] = janitor.popen(argv("sigkill"), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
    master, slave = pty.openpty()
    launchers["sighup"] = janitor.popen(argv("sighup"), env=env, stdin=slave, stdout=slave, stderr=slave,
                                        start_new_session=True, preexec_fn=_controlling_tty)
    os.close(slave)
    stop_draining = threading.Event()
    drainer = threading.Thread(target=_drain, args=(master, stop_draining), daemon=True)
    drainer.start()
    launchers["pipe"] = janitor.popen(argv("pipe"), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, start_new_session=True)

    wait_until(db.exists, 120, "runs.db")
    store = Store(db)
    try:
        def training():
            runs = {}
            for name in FAULTS:
                try:
                    run = store.runs(store.get_experiment(name).id)[0]
                except Exception:  # noqa: BLE001 - not created yet
                    return None
                if run.status != RunStatus.RUNNING or run.total_steps is None:
                    return None
                runs[name] = run
            return runs

        before = wait_until(training, 180, "all three workers to train")
        assert all(p.poll() is None for p in launchers.values()), "a launcher ended before its fault"
        assert launchers["pipe"].stdout.read(1)  # it is following, live, on that pipe

        # The faults.
        os.kill(launchers["sigkill"].pid, signal.SIGKILL)
        stop_draining.set()
        drainer.join()
        os.close(master)  # the terminal hangs up: SIGHUP to the session
        launchers["pipe"].stdout.close()
        wait_until(lambda: launchers["sigkill"].poll() is not None, 30, "the killed launcher to die")
        wait_until(lambda: launchers["sighup"].poll() is not None, 60, "the hung-up launcher to end")
        assert launchers["sighup"].returncode == -signal.SIGHUP

        # A fresh `powerbert status` (its own connection, nothing shared with the launchers)
        # sees them running. In-process through the CLI's own code, so that it is quick enough
        # to look while the short runs still train; the final look below is a real process. On
        # a busy machine a run can finish while the launchers are dying: then it is "finished",
        # and the check below (the same worker process finished it) is the proof it survived.
        for name in FAULTS:
            result = CliRunner().invoke(app, ["status", name, "--db", str(db)], env={"COLUMNS": "120"})
            assert result.exit_code == 0, result.output
            row = f" {_run_row(result.output)} "
            assert " running " in row or " finished " in row, (name, result.output)
        for name, run in before.items():
            if store.get_run(run.id).status == RunStatus.RUNNING:
                assert alive(run.pid), f"the {name} worker died with its launcher"

        # ... and they finish, each in its first and only worker process; a real `powerbert
        # status` process shows it.
        wait_until(lambda: all(store.get_experiment(n).status.is_terminal for n in FAULTS), 240, "the experiments to end")
        for name, run in before.items():
            after = store.get_run(run.id)
            assert after.status == RunStatus.FINISHED, (name, after.error)
            assert after.attempt == 1 and after.pid == run.pid, name
            assert store.get_experiment(name).status == ExperimentStatus.FINISHED
        for name in FAULTS:
            if name == "sighup":
                proc = subprocess.run([*CLI, "status", name], env={**env, "COLUMNS": "120"}, capture_output=True, text=True, timeout=120)
                assert proc.returncode == 0, proc.stderr
                out = proc.stdout
            else:
                out = CliRunner().invoke(app, ["status", name, "--db", str(db)], env={"COLUMNS": "120"}).output
            assert " finished " in f" {_run_row(out)} ", (name, out)
    finally:
        stop_draining.set()
        store.close()
