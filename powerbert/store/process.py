"""Process identity for runs.db: the `pid_start_time` convention, and the check built on it.

A pid alone cannot tell whether a run's worker is still alive: once it dies the kernel may hand
the same pid to an unrelated process. So runs.db stores the pair (pid, pid_start_time), where

    pid_start_time = the process's start time in SECONDS SINCE THE UNIX EPOCH (a float),

computed on Linux from /proc/<pid>/stat's start ticks / CLK_TCK plus the boot time in /proc/stat
(the same formula as psutil's `Process.create_time()`). The boot time the kernel reports can
move by a second between reads (NTP adjusts the wall clock, not the uptime), so two readings of
the same process agree only to about a second: compare with `is_same_process`, never with `==`.
Both halves are only meaningful on the host that recorded them (runs.host).
"""

from __future__ import annotations

import os
from functools import lru_cache

START_TIME_TOLERANCE_S = 2.0  # boot time jitter (1 s) plus the 10 ms tick, with room to spare


@lru_cache(maxsize=1)
def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start_time(pid: int) -> float | None:
    """Seconds since the epoch at which process `pid` started; None if it does not exist here
    (or is a zombie), or this system has no /proc (then only `os.kill(pid, 0)` can say
    anything)."""
    boot = _boot_time()
    if boot is None:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')': split
    # after the last ')'. What follows starts at field 3, so starttime (field 22) is index 19.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        # A zombie has exited and only waits for its parent to read its status (a worker whose
        # supervisor died, under an init that does not reap): nothing runs, nothing to signal.
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def is_same_process(pid: int | None, start_time: float | None) -> bool:
    """Whether the process recorded as (pid, start_time) on this host is still running.

    False for a dead pid and for a pid the kernel has reused for another process. Without
    /proc (or without a recorded start time) this falls back to whether the pid exists.
    """
    if pid is None or pid <= 0:
        return False
    current = process_start_time(pid)
    if current is None:
        if _boot_time() is not None:
            return False  # /proc works and has no such pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by someone else
        return True
    if start_time is None:
        return True
    return abs(current - start_time) <= START_TIME_TOLERANCE_S
