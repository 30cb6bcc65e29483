"""Is a run's worker alive? A run is alive only if its pid exists, the process start time
matches the one recorded (so a reused pid never counts), and its heartbeat is fresh.

Whoever looks next (the supervisor, `powerbert status`, the dashboard) calls `reconcile` to mark
runs whose worker vanished (kill -9, a reboot) as lost, with their log tail. A worker that lives
but makes no progress for STALL_AFTER_S marks itself lost and ends (worker.py).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path

from powerbert.store import Run, RunStatus, Store, is_same_process

# Defined here rather than in worker.py so that the supervisor and `powerbert status` need not
# import the training stack (torch, transformers: seconds of start-up) to watch runs.
HEARTBEAT_INTERVAL_S = 3.0  # the worker beats this often; STALE_AFTER_S must stay well above
LOG_TAIL_LINES = 30
STALE_AFTER_S = 20.0  # several missed heartbeats; keeps "lost within 30 s" with room to look
assert STALE_AFTER_S >= 4 * HEARTBEAT_INTERVAL_S
# A worker whose heartbeat thread lives on while its training loop is stuck (a deadlock after
# fork, a hung filesystem or device) would look alive forever: after this long with no step,
# evaluation or checkpoint it ends itself as lost, so that resume can take over. Far above the
# slowest quiet stretches: a dev evaluation with no callback between batches (a large dev set
# through bert-base on a CPU), or torch.compile's first step on a GPU.
STALL_AFTER_S = float(os.environ.get("POWERBERT_STALL_S", 3600))


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-lines:])


def run_is_alive(run: Run, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    fresh = run.heartbeat_at is not None and now - run.heartbeat_at < STALE_AFTER_S
    if run.host and run.host != socket.gethostname():
        return fresh  # another machine's pids mean nothing here: trust the heartbeat alone
    if run.pid is None:
        return fresh  # claimed, worker not started yet: the claim set a heartbeat
    return fresh and is_same_process(run.pid, run.pid_start_time)


def why_lost(run: Run, now: float) -> str:
    if run.pid is not None and not is_same_process(run.pid, run.pid_start_time):
        return f"worker vanished: no process {run.pid} started at the recorded time (killed or machine restarted)"
    age = now - (run.heartbeat_at or run.started_at or now)
    return f"worker stopped answering: no heartbeat for {age:.0f} s"


def reconcile(store: Store, experiment_id: int, skip: set[int] | frozenset[int] = frozenset()) -> list[Run]:
    """Mark running runs with no live worker as lost; return the runs as they now stand.

    `skip` holds run ids whose worker the caller itself is watching (a supervisor's children).
    A read-only store (a reading command on a database it may not write) records nothing: the
    runs come back as lost all the same, so what is shown is true.
    """
    now = time.time()
    runs = store.runs(experiment_id)
    changed = False
    for i, run in enumerate(runs):
        if run.status == RunStatus.RUNNING and run.id not in skip and not run_is_alive(run, now):
            tail = log_tail(Path(run.out_dir) / "worker.log") if run.out_dir else None
            if getattr(store, "readonly", False):
                runs[i] = dataclasses.replace(run, status=RunStatus.LOST, error=why_lost(run, now), log_tail=tail or run.log_tail)
                continue
            changed |= store.finish_run(run.id, RunStatus.LOST, error=why_lost(run, now), log_tail=tail, expect=RunStatus.RUNNING)
    return store.runs(experiment_id) if changed else runs
