"""What the screens read from runs.db and the run folders, as plain data; no Textual here.

These functions run inside the screens' fetch workers (threads), so the modules that import
torch are imported inside them, never when the dashboard starts. Each takes what the screen
last saw (the last metric id, the log offset) and returns only what is new, so a poll costs
the same at the start of a run and a million metric rows later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from powerbert.store import Experiment, Metric, Run, RunStatus, Store
from powerbert.tasks import TASKS

LOG_FIRST_BYTES = 64 * 1024  # how much of an existing log the first read shows
LOG_READ_BYTES = 256 * 1024  # most read per poll: a chatty log catches up over a few polls
METRICS_PER_FETCH = 20_000  # rows per poll; a long history loads over a few quick polls
CURVE_NAMES = ("loss", *TASKS, "overall")  # train loss; dev scores per task and overall


@dataclass
class LogChunk:
    lines: list[str]
    offset: int  # where the next read starts
    reset: bool  # the file was replaced or truncated (or read for the first time): clear first
    missing: bool = False


def read_log(path: str | Path | None, offset: int) -> LogChunk:
    """Complete lines appended to `path` since `offset` (-1: first read, show its tail)."""
    if path is None:
        return LogChunk([], offset, offset < 0, missing=True)
    try:
        size = os.path.getsize(path)
        reset = offset < 0 or size < offset
        start = max(0, size - LOG_FIRST_BYTES) if reset else offset
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(LOG_READ_BYTES)
    except OSError:
        return LogChunk([], -1, offset >= 0, missing=True)
    end = data.rfind(b"\n")
    if end < 0:
        return LogChunk([], start, reset)
    text = data[: end + 1].decode("utf-8", errors="replace")
    lines = text.splitlines()
    if reset and start > 0:
        lines = lines[1:]  # the first line was cut by the seek
    # Progress bars redraw with '\r': keep what the terminal would show, the last redraw.
    lines = [line.rsplit("\r", 1)[-1] for line in lines]
    return LogChunk(lines, start + end + 1, reset)


@dataclass
class RunFollow:
    """What the experiment view last saw of its selected run (sent to the worker and back)."""

    run_id: int | None = None
    after_id: int = 0  # last metric id seen
    log_offset: int = -1


@dataclass
class ExperimentSnapshot:
    experiment: Experiment
    runs: list[Run]
    follow: RunFollow  # the request this answers, updated to where the reads got to
    metrics: list[Metric] = field(default_factory=list)
    log: LogChunk | None = None
    more: bool = False  # a full batch of metrics came back: poll again at once
    start_steps: dict[int, int | None] = field(default_factory=dict)  # running run id -> its attempt's first step


class AttemptStarts:
    """The step each running run's current attempt started from (for its ETA), looked up once
    per attempt: the lookup bisects the run's metric rows, and the answer cannot change until
    the run is resumed again. Used by one fetch worker at a time (they never overlap)."""

    def __init__(self) -> None:
        self._known: dict[tuple, int] = {}

    def get(self, store: Store, run: Run) -> int | None:
        from powerbert.views import attempt_start_step

        key = (run.id, run.attempt, run.started_at)
        if key in self._known:
            return self._known[key]
        step = attempt_start_step(store, run)
        # Kept only once this attempt has trained past it: just after a resume starts, the rows
        # after its checkpoint may not have been dropped yet, and the answer would read too high.
        if step is not None and run.step is not None and run.step > step:
            self._known[key] = step
        return step


def experiment_snapshot(store: Store, experiment_id: int, follow: RunFollow,
                        starts: AttemptStarts | None = None) -> ExperimentSnapshot:
    """The experiment and its runs (marking vanished workers lost) plus what is new for the
    selected run: metric rows after `follow.after_id` and log lines after `follow.log_offset`;
    and where each running run's attempt started (`starts` remembers it between polls)."""
    from powerbert.runner.liveness import reconcile  # heavy: only ever in a worker thread

    runs = reconcile(store, experiment_id)
    experiment = store.get_experiment(experiment_id)
    done = RunFollow(follow.run_id, follow.after_id, follow.log_offset)
    snapshot = ExperimentSnapshot(experiment, runs, done)
    starts = starts if starts is not None else AttemptStarts()
    snapshot.start_steps = {r.id: starts.get(store, r) for r in runs if r.status == RunStatus.RUNNING}
    run = next((r for r in runs if r.id == follow.run_id), None)
    if run is None:
        return snapshot
    snapshot.metrics = store.metrics(run.id, follow.after_id, CURVE_NAMES, limit=METRICS_PER_FETCH)
    if snapshot.metrics:
        done.after_id = snapshot.metrics[-1].id
    snapshot.more = len(snapshot.metrics) == METRICS_PER_FETCH
    log_path = Path(run.out_dir) / "worker.log" if run.out_dir else None
    snapshot.log = read_log(log_path, follow.log_offset)
    done.log_offset = snapshot.log.offset
    return snapshot


@dataclass
class Curves:
    """A run's curves by metric name: steps and values, extended by each poll's new rows."""

    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    def extend(self, metrics: list[Metric]) -> bool:
        """Add new rows; returns whether anything changed. A resumed run replays steps after
        its checkpoint (their old rows were deleted), so a step at or before the last one
        seen cuts that curve back first."""
        for m in metrics:
            if m.step is None:
                continue
            steps, values = self.series.setdefault(m.name, ([], []))
            if steps and m.step <= steps[-1]:
                keep = next((i for i, s in enumerate(steps) if s >= m.step), len(steps))
                del steps[keep:], values[keep:]
            steps.append(m.step)
            values.append(m.value)
        return bool(metrics)

    def get(self, name: str) -> tuple[list[float], list[float]]:
        return self.series.get(name, ([], []))


def all_metrics(store: Store, run_id: int, names=CURVE_NAMES) -> list[Metric]:
    """Every curve row of a run, read in batches (for the compare view)."""
    rows, after = [], 0
    while True:
        batch = store.metrics(run_id, after, names, limit=METRICS_PER_FETCH)
        rows += batch
        if len(batch) < METRICS_PER_FETCH:
            return rows
        after = batch[-1].id
