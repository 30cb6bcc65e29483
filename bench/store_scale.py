"""Benchmark 5: a dashboard refresh and `powerbert status` at 1,000,000 metric rows vs 1,000.

    python bench/store_scale.py                 # ~1 minute once the databases are built
    python bench/store_scale.py --repeats 100

Two runs.db files with the same 15 runs (two three-task power sets and a single-task run; two
of them running, with live heartbeats) and 1,000 or 1,000,000 metric rows spread over the runs
the way workers write them (loss, lr and per-task losses every step, dev scores every epoch).
They are built once and kept under $POWERBERT_BENCH_CACHE (default ~/.cache/powerbert-bench).

Timed on each, interleaved:
  experiment view   what the dashboard's experiment screen reads per poll: tui.fetch.
                    experiment_snapshot for the selected run (runs, the experiment, the metric
                    rows newer than the last id it saw, the log) and the table cells built from it;
  status            `powerbert status`: powerbert.cli.live.snapshot rendered to text;
  experiments list  the home screen's powerbert.views.experiment_summaries.
The view polls in a steady state: it has seen the history up to 20 rows ago.
Target: each refresh at 1,000,000 rows <= 2x its time at 1,000 rows.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import common

TARGET = 2.0
SIZES = {"1k": 1_000, "1M": 1_000_000}
SCHEMA = 3  # bump to rebuild the cached databases


def build(path, rows: int) -> None:
    """15 runs, `rows` metric rows; written with the store's own batched writes."""
    from powerbert.store import RunStatus, Store, process_start_time
    from powerbert.tasks import power_set

    tmp = path.with_suffix(".building")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{tmp}{suffix}"):
            os.unlink(f"{tmp}{suffix}")
    with Store(tmp) as store:
        runs = []
        for name, tasks in (("exp-a", ("sst", "para", "sts")), ("exp-b", ("sst", "para", "sts")), ("exp-c", ("sst",))):
            exp = store.create_experiment(name, tasks, {"train": {}}, None, power_set(tasks))
            runs += store.runs(exp.id)
        assert len(runs) == 15
        per_run = rows // len(runs)
        for run in runs:
            batch, step = [], 0
            written = 0
            while written < per_run:
                step += 1
                epoch = step / 1000
                new = [(step, epoch, "train", "loss", 1.0 / step), (step, epoch, "train", "lr", 1e-5)]
                if len(run.tasks) > 1:
                    new += [(step, epoch, "train", f"loss/{t}", 0.5 / step) for t in run.tasks]
                if step % 1000 == 0:
                    new += [(step, epoch, "dev", t, 0.5) for t in run.tasks] + [(step, epoch, "dev", "overall", 0.5)]
                new = new[: per_run - written]
                batch += new
                written += len(new)
                if len(batch) >= 20_000:
                    store.add_metrics(run.id, batch)
                    batch = []
            store.add_metrics(run.id, batch)
            store.finish_run(run.id, RunStatus.FINISHED, exit_code=0)
        pid = os.getpid()
        for run in runs[-2:]:  # two runs still training; `live_runs` keeps their heartbeat fresh
            store.update_run(run.id, status=RunStatus.RUNNING, pid=pid, pid_start_time=process_start_time(pid),
                             ended_at=None, exit_code=None, step=1, total_steps=10)
    os.replace(tmp, path)


def open_db(label: str, rows: int, rebuild: bool):
    from powerbert.store import Store

    common.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = common.CACHE_DIR / f"store-scale-v{SCHEMA}-{label}.db"
    if rebuild or not path.exists():
        start = time.perf_counter()
        build(path, rows)
        print(f"   built {path} ({rows:,} metric rows) in {time.perf_counter() - start:.1f} s", flush=True)
    return Store(path)


class Subject:
    """One database and what each refresh reads from it."""

    def __init__(self, store):
        from powerbert.store import RunStatus, process_start_time

        self.store = store
        exp = store.get_experiment("exp-a")
        self.experiment_id = exp.id
        runs = store.runs(exp.id)
        self.selected = max(runs, key=lambda r: len(r.tasks))  # the three-task run: the most rows
        last = store.conn.execute("SELECT MAX(id) FROM metrics WHERE run_id = ?", (self.selected.id,)).fetchone()[0]
        self.after_id = max(0, last - 20)
        self.rows = store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        pid = os.getpid()
        # The cached file records the pid that built it: make the two running runs ours.
        for run in store.runs(self.experiment_id) + store.runs(store.get_experiment("exp-b").id):
            if run.status == RunStatus.RUNNING:
                store.update_run(run.id, pid=pid, pid_start_time=process_start_time(pid))

    def beat(self) -> None:
        from powerbert.store import RunStatus

        for exp in ("exp-a", "exp-b"):
            for run in self.store.runs(self.store.get_experiment(exp).id):
                if run.status == RunStatus.RUNNING:
                    self.store.heartbeat(run.id, step=1)

    def experiment_view(self) -> None:
        from powerbert.runner.experiments import supervisor_alive
        from powerbert.store import run_label
        from tui.fetch import RunFollow, experiment_snapshot
        from tui.rows import experiment_line, run_cells, run_detail

        now = time.time()
        snap = experiment_snapshot(self.store, self.experiment_id, RunFollow(self.selected.id, self.after_id, -1))
        assert len(snap.metrics) > 0
        tasks = snap.experiment.tasks
        {str(r.id): run_cells(r, tasks, now) for r in snap.runs}
        experiment_line(snap.experiment, snap.runs, supervisor_alive(snap.experiment))
        {r.id: run_detail(r) for r in snap.runs}
        {r.id: run_label(r.subset, r.kind) for r in snap.runs}

    def status(self) -> None:
        from rich.console import Console

        from powerbert.cli.live import snapshot

        _, runs, view = snapshot(self.store, "exp-a")
        Console(file=io.StringIO(), width=100).print(view)

    def experiments_list(self) -> None:
        from powerbert.views import experiment_summaries

        experiment_summaries(self.store)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="refreshes of each kind per database")
    parser.add_argument("--rebuild", action="store_true", help="build the databases again")
    args = parser.parse_args(argv)
    common.header("bench 5: dashboard refresh and `powerbert status` at 1,000,000 vs 1,000 metric rows")
    subjects = {label: Subject(open_db(label, rows, args.rebuild)) for label, rows in SIZES.items()}
    for label, s in subjects.items():
        print(f"   {label}: {s.rows:,} metric rows, 15 runs; the selected run has {s.after_id + 20:,} ids up to its last", flush=True)
    kinds = ("experiment_view", "status", "experiments_list")
    for s in subjects.values():  # warm-up: imports, the page cache
        s.beat()
        for kind in kinds:
            getattr(s, kind)()
    times = {(label, kind): [] for label in subjects for kind in kinds}
    for r in range(args.repeats):
        if r % 10 == 0:
            for s in subjects.values():
                s.beat()
        for kind in kinds:
            order = list(subjects) if (r % 2 == 0) else list(subjects)[::-1]
            for label in order:
                start = time.perf_counter()
                getattr(subjects[label], kind)()
                times[(label, kind)].append(time.perf_counter() - start)
    ratios = {}
    for kind in kinds:
        small, big = common.median(times[("1k", kind)]), common.median(times[("1M", kind)])
        ratios[kind] = big / small
        print(f"   {kind:<17} 1k rows {1000 * small:7.2f} ms   1M rows {1000 * big:7.2f} ms   ratio {big / small:.2f}x", flush=True)
    for s in subjects.values():
        s.store.close()
    worst = max(ratios, key=ratios.get)
    return common.verdict(f"refresh time, 1M rows / 1k rows (worst: {worst.replace('_', ' ')})", ratios[worst], TARGET, at_least=False)


if __name__ == "__main__":
    sys.exit(main())
