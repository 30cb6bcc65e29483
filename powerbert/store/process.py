"""Process identity for runs.db: the `pid_start_time` convention, and the check built on it.

A pid alone cannot tell whether a run's worker is still alive: once it dies the kernel may hand
the same pid to an unrelated process. So runs.db stores the pair (pid, pid_start_time), where

    pid_start_time = the process's start time in SECONDS SINCE THE UNIX EPOCH (a float),

as psutil's `Process.create_time()` gives it. On Linux that is the start ticks of
/proc/<pid>/stat / CLK_TCK plus the boot time in /proc/stat: the very formula PowerBERT used when
it read /proc itself, so start times stored by those versions compare as before. The boot time
the kernel reports can move by a second between reads (NTP adjusts the wall clock, not the
uptime), so two readings of the same process agree only to about a second: compare with
`is_same_process`, never with `==`. Both halves are only meaningful on the host that recorded
them (runs.host).
"""

from __future__ import annotations

import psutil

START_TIME_TOLERANCE_S = 2.0  # boot time jitter (1 s) plus the 10 ms tick, with room to spare

# A zombie has exited and only waits for its parent to read its status (a worker whose
# supervisor died, under an init that does not reap): nothing runs, nothing to signal.
_ENDED = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def process_start_time(pid: int) -> float | None:
    """Seconds since the epoch at which process `pid` started; None if it does not exist here,
    is a zombie, or its start time cannot be read (another user's process on some systems)."""
    if pid <= 0:
        return None  # psutil refuses negative pids, and pid 0 is the kernel's, never a run's
    try:
        process = psutil.Process(int(pid))
        with process.oneshot():  # one read of /proc/<pid>/stat for both
            if process.status() in _ENDED:
                return None
            return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return None


def is_same_process(pid: int | None, start_time: float | None) -> bool:
    """Whether the process recorded as (pid, start_time) on this host is still running.

    False for a dead pid, a zombie, and a pid the kernel has reused for another process. Where
    the start time cannot be read (psutil is denied it: another user's process on some systems)
    or none was recorded, the pid's existence decides.
    """
    if pid is None or pid <= 0:
        return False
    try:
        process = psutil.Process(int(pid))
        with process.oneshot():
            if process.status() in _ENDED:
                return False
            if start_time is None:
                return True
            current = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists (psutil.Process found it); who it is cannot be told
    return abs(current - start_time) <= START_TIME_TOLERANCE_S
