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
import errno, os, sys, time
from powerbert.cli.app import command, app

@command(name="write")
def write() -> None:
    # Write on until the terminal is gone, as `powerbert run`'s live table does.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        os.write(1, b".")
        time.sleep(0.05)
    sys.exit("the terminal never went away")

app()
"""


def test_a_write_to_a_terminal_that_went_away_ends_the_command_as_a_hang_up_would():
    # The pty is not the child's controlling terminal, so closing it sends no SIGHUP: the only
    # way the child can end killed by SIGHUP is the CLI's own handling of the failed write.
    master, slave = pty.openpty()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": tmp}
        child = subprocess.Popen([sys.executable, "-c", SCRIPT, "write"], stdout=slave, stderr=subprocess.PIPE, env=env)
        os.close(slave)
        assert os.read(master, 1) == b"."  # it is writing to the terminal
        os.close(master)  # the terminal goes away
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == -signal.SIGHUP, stderr
        assert b"internal error" not in stderr
        assert not list(Path(tmp).glob("powerbert-internal-error-*"))
