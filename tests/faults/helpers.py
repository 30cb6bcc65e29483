"""Tools for the fault tests: waiting on conditions, the CLI as a subprocess, process cleanup,
tmpfs mounts, and reading /proc.

Every helper that starts a process hands it to a `Janitor`, which kills it (and every
supervisor and worker recorded in the databases it was told about) when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from powerbert.config import TrainConfig
from powerbert.store import Store, is_same_process, process_start_time

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "powerbert"]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """The predicate's first truthy value; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tiny_config(model_dir, data_dir, tasks=("sst",), **kw) -> TrainConfig:
    base = dict(
        tasks=tuple(tasks), data_dir=str(data_dir), model=str(model_dir), epochs=1, max_train=32,
        batch_size=16, lr=1e-3, precision="fp32", checkpoint_every_s=1e9,
    )
    base.update(kw)
    return TrainConfig(**base)


def cli_env(db: Path | str, out: Path | str | None = None, **extra) -> dict[str, str]:
    env = {**os.environ, "POWERBERT_DB": str(db), "POWERBERT_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if out is not None:
        env["POWERBERT_OUT"] = str(out)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(*args, env: dict[str, str], cwd=None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run `powerbert ARGS` to the end and return what it printed."""
    return subprocess.run([*CLI, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


# ---- processes ---------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is `sid`."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(int(name))
            if fields and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                members.append(int(name))
    return members


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [part.decode() for part in f.read().split(b"\0")[:-1]]


def inet_sockets(pid: int) -> list[tuple[str, str]]:
    """(protocol, tcp state or '-') of every TCP/UDP socket process `pid` holds open.

    The process's fds link to 'socket:[INODE]'; /proc/PID/net/{tcp,tcp6,udp,udp6} list the
    network namespace's sockets with their inode (state 0A is LISTEN).
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        return []
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[9] in inodes:
                found.append((proto, parts[3]))
    return found


class Janitor:
    """Kills, at the end of a test, every process it was handed and every supervisor and
    worker (with their sessions) recorded in the databases it was told about."""

    def __init__(self):
        self.popens: list[subprocess.Popen] = []
        self.dbs: list[Path] = []
        self.pids: list[tuple[int, float | None]] = []

    def popen(self, *args, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(*args, **kw)
        self.popens.append(proc)
        return proc

    def watch_db(self, db: Path | str) -> None:
        self.dbs.append(Path(db))

    def watch_pid(self, pid: int) -> None:
        self.pids.append((pid, process_start_time(pid)))

    def _recorded(self) -> list[tuple[int, float | None]]:
        found = []
        for db in self.dbs:
            if not db.exists():
                continue
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                found += conn.execute("SELECT pid, pid_start_time FROM runs WHERE pid IS NOT NULL").fetchall()
                found += conn.execute(
                    "SELECT supervisor_pid, supervisor_start_time FROM experiments WHERE supervisor_pid IS NOT NULL"
                ).fetchall()
                conn.close()
            except sqlite3.Error:
                continue
        return found

    def cleanup(self) -> None:
        targets = self._recorded() + self.pids + [(p.pid, None) for p in self.popens if p.poll() is None]
        for pid, started in targets:
            if started is not None and not is_same_process(pid, started):
                continue
            if started is None and not any(p.pid == pid for p in self.popens):
                continue
            for member in [pid, *session_members(pid)]:
                try:
                    os.kill(member, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for proc in self.popens:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


# ---- filesystems -------------------------------------------------------------------------


def try_mount_tmpfs(folder: Path, size: str, *, readonly: bool = False) -> bool:
    """Mount a tmpfs of `size` on folder; False where this machine does not let us."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    options = f"size={size},mode=0700" + (",ro" if readonly else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# ---- finished experiments ----------------------------------------------------------------


def clone_experiment(src_db: Path, name: str, dst: Path) -> tuple[Path, Store]:
    """A private copy of a finished experiment (runs.db and every run folder), to damage."""
    dst.mkdir(parents=True, exist_ok=True)
    db = dst / "runs.db"
    source = sqlite3.connect(f"file:{src_db}?mode=ro", uri=True)
    target = sqlite3.connect(db)
    source.backup(target)
    source.close()
    target.close()
    store = Store(db)
    exp = store.get_experiment(name)
    out = dst / "runs"
    shutil.copytree(exp.out_dir, out)
    store.update_experiment(exp.id, out_dir=str(out))
    for run in store.runs(exp.id):
        folder = out / Path(run.out_dir).name
        store.update_run(run.id, out_dir=str(folder), checkpoint=str(folder / "best.safetensors"))
    return db, store
