"""A command whose terminal hangs up mid-write (an SSH connection dropped, a window closed) ends as
the hang-up ends it, killed by SIGHUP, not as an "internal error" with a traceback file: on a
busy machine the write to the dead terminal (EIO) can fail before the kernel's SIGHUP arrives
(seen in test_detach.py's hang-up case under load)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.faults.helpers import ROOT

SCRIPT = """
import errno
from powerbert.cli.app import command, app

@command(name="write")
def write() -> None:
    raise OSError(errno.EIO, "Input/output error")

app()
"""


def run_on(stdout, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-c", SCRIPT, "write"], stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=120)


def test_eio_on_a_terminal_ends_the_command_as_a_hang_up_would_and_leaves_no_error_log():
    master, slave = pty.openpty()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = run_on(slave, Path(tmp))
        finally:
            os.close(slave)
            os.close(master)
        assert done.returncode == -signal.SIGHUP, done.stderr
        assert b"internal error" not in done.stderr
        assert not list(Path(tmp).glob("powerbert-internal-error-*"))


def test_eio_elsewhere_is_still_an_internal_error():
    with tempfile.TemporaryDirectory() as tmp:
        done = run_on(subprocess.PIPE, Path(tmp))
        assert done.returncode == 1
        assert b"internal error: OSError" in done.stderr
        assert list(Path(tmp).glob("powerbert-internal-error-*"))
