"""Fixtures of the fault suite: process cleanup, tmpfs mounts, and one experiment run the hard
way (hostile names, umask 022, bad rows skipped) that several cases then inspect or damage.

See tests/faults/README.md for which case each test proves.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from powerbert.store import ExperimentStatus, Store
from tests.faults.helpers import (
    CLI,
    Janitor,
    alive,
    cli_env,
    cmdline,
    inet_sockets,
    try_mount_tmpfs,
    unmount,
    wait_until,
)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Workers started from this process use one torch thread: fast and steady on a busy box."""
    monkeypatch.setenv("POWERBERT_THREADS", "1")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(folder, size, readonly=False): a real tmpfs, unmounted at the end; skips the test
    where this machine does not allow mounting (not root, no CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m", readonly: bool = False) -> Path:
        if not try_mount_tmpfs(folder, size, readonly=readonly):
            pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        unmount(folder)


# ---- one experiment run the hard way ---------------------------------------------------------

# Shell metacharacters, quotes, spaces and a leading '-': if any of these ever went through a
# shell, `pwned` would appear, or the fake home's canary would go.
HOSTILE = "-x; rm -rf ~ $(touch pwned) `touch pwned` \"q\" 'q'"
BAD_SST_LINES = (242, 243, 244)  # rows appended after the 240 good ones (line 1 is the header)


@dataclass
class HostileExperiment:
    base: Path  # everything lives under here
    cwd: Path  # where `powerbert run` ran; relative paths below are relative to it
    home: Path  # HOME of every process (a canary file inside must survive)
    db: Path
    name: str
    data_dir: Path
    model_dir: Path
    out_root: Path
    launched: subprocess.CompletedProcess
    cmdlines: dict[int, list[str]] = field(default_factory=dict)  # pid -> argv, as /proc saw it
    sockets: dict[int, list] = field(default_factory=dict)  # pid -> inet sockets seen
    modes: dict[str, int] = field(default_factory=dict)  # path -> mode seen while running
    samples: int = 0


def _with_bad_rows(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    with open(dst / "ids-sst-train.csv", "a", encoding="utf-8") as f:
        f.write("240\tbad1\tA fine film .\t7\n")  # label out of range
        f.write("241\tbad2\t \t2\n")  # empty sentence
        f.write("242\tbad3\tNo label .\n")  # a column missing


def _watch(exp: HostileExperiment, stop: threading.Event) -> None:
    """While the experiment runs: every process's argv and sockets, and the file modes."""
    while not stop.is_set():
        try:
            conn = Store(exp.db)
            pids = [r[0] for r in conn.conn.execute("SELECT pid FROM runs WHERE pid IS NOT NULL")]
            pids += [r[0] for r in conn.conn.execute("SELECT supervisor_pid FROM experiments WHERE supervisor_pid IS NOT NULL")]
            conn.close()
        except Exception:  # noqa: BLE001 - the next sample will do
            pids = []
        for pid in pids:
            if alive(pid):
                try:
                    exp.cmdlines.setdefault(pid, cmdline(pid))
                except OSError:
                    continue
                exp.sockets.setdefault(pid, []).extend(inet_sockets(pid))
        for path in [exp.db, Path(f"{exp.db}-wal"), Path(f"{exp.db}-shm")]:
            try:
                exp.modes[str(path)] = stat.S_IMODE(os.stat(path).st_mode)
            except OSError:
                pass
        exp.samples += 1
        time.sleep(0.05)


@pytest.fixture(scope="session")
def hostile_experiment(tmp_path_factory, tiny_model_dir, toy_data_dir) -> HostileExperiment:
    """`powerbert run --detach` of sst,sts under umask 022, with the experiment name, data
    folder, model folder, database folder and output folder all named with shell payloads and
    a leading '-', HOME pointing at a fake home, and 3 bad rows in the sst training file
    (--skip-bad-rows). Finished when returned; watched while it ran."""
    base = tmp_path_factory.mktemp("hostile")
    cwd, home = base / "cwd", base / "home"
    cwd.mkdir()
    home.mkdir()
    (home / "canary").write_text("still here")
    data_rel, model_rel = f"-data {HOSTILE}", f"-model {HOSTILE}"
    db_rel, out_rel = f"-db {HOSTILE}/runs.db", f"-runs {HOSTILE}"
    _with_bad_rows(toy_data_dir, cwd / data_rel)
    shutil.copytree(tiny_model_dir, cwd / model_rel)
    name = f"-exp {HOSTILE}"
    env = cli_env(cwd / db_rel, HOME=home)
    env.pop("POWERBERT_DB")  # given as --db below, relative, with its payload
    janitor = Janitor()
    janitor.watch_db(cwd / db_rel)
    args = [
        "run", "--tasks", "sst,sts", "--epochs", "2", "--max-train", "32", "--batch-size", "16",
        "--lr", "1e-3", "--precision", "fp32", "--max-parallel", "2", "--skip-bad-rows", "--detach", "--keep-resume-state",
        f"--name={name}", f"--data-dir={data_rel}", f"--model={model_rel}", f"--db={db_rel}", f"--out={out_rel}",
    ]
    exp = HostileExperiment(base, cwd, home, (cwd / db_rel).resolve(), name, (cwd / data_rel).resolve(),
                            (cwd / model_rel).resolve(), (cwd / out_rel).resolve(), None)  # type: ignore[arg-type]
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(exp, stop), daemon=True)
    watcher.start()
    try:
        exp.launched = subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180, umask=0o022)
        assert exp.launched.returncode == 0, exp.launched.stdout + exp.launched.stderr
        store = Store(exp.db)
        try:
            wait_until(lambda: store.get_experiment(name).status.is_terminal, 240, "the hostile experiment to end", interval=0.2)
            assert store.get_experiment(name).status == ExperimentStatus.FINISHED, [
                (r.subset, r.status, r.error) for r in store.runs(store.get_experiment(name).id)
            ]
        finally:
            store.close()
        # the supervisor is gone once the status is final; give it a moment to exit
        wait_until(lambda: not any(alive(p) for p in exp.cmdlines), 30, "every process to exit")
    finally:
        stop.set()
        watcher.join(timeout=5)
        janitor.cleanup()
    return exp
