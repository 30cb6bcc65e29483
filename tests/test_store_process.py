"""Process identity for runs.db (powerbert.store.process): a run's worker is alive only while
its pid AND its start time match, so an exited (zombie or reaped) process, or a pid reused by
another process, never counts; start times stored by versions that read /proc still match."""

import os
import subprocess
import sys
import time

import pytest

from powerbert.store import is_same_process, process_start_time
from powerbert.store.process import START_TIME_TOLERANCE_S


def test_process_start_time_identifies_this_process():
    started = process_start_time(os.getpid())
    assert started is not None
    assert started <= time.time() + 2
    assert is_same_process(os.getpid(), started)
    assert not is_same_process(os.getpid(), started - 3600)  # same pid, another process
    assert not is_same_process(None, started)
    assert is_same_process(os.getpid(), None)  # no start time recorded: the pid decides


def test_an_exited_process_is_not_the_process_any_more():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    started = process_start_time(child.pid)
    assert is_same_process(child.pid, started)
    child.stdin.close()  # it exits...
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ...and, not reaped yet, is a zombie
    assert process_start_time(child.pid) is None
    assert not is_same_process(child.pid, started)
    assert not is_same_process(child.pid, None)  # nothing runs under that pid
    child.wait()
    assert not is_same_process(child.pid, started)  # reaped: the pid is free


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="those versions read Linux's /proc")
def test_start_times_stored_by_versions_that_read_proc_still_match():
    # Before psutil, PowerBERT stored the boot time (btime in /proc/stat) plus the start ticks
    # (field 22 of /proc/PID/stat) over CLK_TCK. Worked out here the same way, as a fixture.
    with open("/proc/stat", encoding="ascii") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    with open(f"/proc/{os.getpid()}/stat", encoding="utf-8") as f:
        stat = f.read()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    stored = boot + ticks / os.sysconf("SC_CLK_TCK")
    assert abs(process_start_time(os.getpid()) - stored) <= START_TIME_TOLERANCE_S
    assert is_same_process(os.getpid(), stored)
    assert not is_same_process(os.getpid(), stored - 3600)
