"""Benchmark 4: what logging to runs.db costs a training step, and runs.db under seven writers.

    python bench/logging_overhead.py                  # ~3 minutes on 2 cores
    python bench/logging_overhead.py --steps 60 --writers-seconds 60

Part 1, step time with the metric callback vs without. Two processes train the same MiniLM
sst steps (powerbert.training.loop.TrainStep, the product's defaults) on the same batches, taking turns
step by step. Each holds a powerbert.runner.worker.StoreCallbacks, as a worker does (buffered rows, a
flush every METRIC_FLUSH_S, its heartbeat thread writing runs.db every HEARTBEAT_INTERVAL_S); at
each step one of them reports the step to it and the other does not, the roles swapping every
step. Also reported: the time spent inside on_step itself. Target: with / without <= 1.02x.

Part 2, seven writers and a reader. Seven processes, each a StoreCallbacks of its own run in
one runs.db, log like a fast run does (--rate steps per second, three task losses: 5 rows a
step, plus its heartbeat and one epoch's dev outputs halfway), while a reader process refreshes
the dashboard's experiment view and `powerbert status` every 0.5 s. Reported: rows per second
sustained, the reader's refresh times, and "database is locked" errors (also counting the
writers' "runs.db is busy, waiting" retries). Target: zero.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

TARGET = 1.02
TASKS = ("sst", "para", "sts")


# ---- part 1: the step with and without the callback -------------------------------------------


class StepSide:
    """A process training sst steps; each step it is told whether to report to StoreCallbacks."""

    def __init__(self, db: str, run_id: int, steps: int, threads: int, seed: int = 0):
        import torch

        if threads:
            torch.set_num_threads(threads)
        from powerbert.config import TrainConfig
        from powerbert.data.batching import encode_task
        from powerbert.data.files import load_split
        from powerbert.model.device import tune_cpu_runtime
        from powerbert.model.multitask import build_model, load_tokenizer
        from powerbert.model.surgery import make_combiner
        from powerbert.runner.worker import StoreCallbacks
        from powerbert.training.step import TrainStep, make_optimizer
        from powerbert.training.streams import TaskStream

        tune_cpu_runtime()
        torch.manual_seed(seed)
        self.config = TrainConfig(tasks=("sst",), seed=seed)
        tokenizer = load_tokenizer(None)
        data = load_split("sst", common.DATA_DIR, "train")
        stream = TaskStream(encode_task(data, tokenizer, pair_mode="bi", max_length=self.config.max_length),
                            self.config.batch_size, seed, None)
        self.batches = [stream.batch(k) for k in range(steps)]
        model = build_model(None, self.config.tasks, self.config.heads).train()
        self.step_fn = TrainStep(model, make_optimizer(model, self.config), make_combiner("pcgrad", seed), self.config,
                                 torch.device("cpu"))
        self.callbacks = StoreCallbacks(db, run_id, threading.Event())
        self.step = 0

    def run(self, k: int, log: bool) -> tuple[float, float]:
        """Seconds of the step (and its report, if `log`), and of the report alone."""
        start = time.perf_counter()
        losses = self.step_fn({"sst": self.batches[k]}, self.step)
        self.step += 1
        values = {n: float(v) for n, v in losses.items()}  # the loop reads them either way
        reported = time.perf_counter()
        if log:
            self.callbacks.on_step(self.step, self.step / 267, values, 1e-5)
        end = time.perf_counter()
        return end - start, end - reported

    def close(self) -> None:
        self.callbacks.close()


def new_experiment(db: Path, name: str, tasks: tuple[str, ...]):
    from powerbert.store import Store
    from powerbert.tasks import power_set

    with Store(db) as store:
        exp = store.create_experiment(name, tasks, {"train": {}}, str(db.parent / name), power_set(tasks))
        runs = store.runs(exp.id)
        for run in runs:
            store.mark_run_started(run.id, os.getpid(), None, "bench", "cpu")
        return exp, runs


def step_overhead(steps: int, repeats: int, threads: int, tmp: Path) -> float:
    from sides import Sides

    db = tmp / "steps.db"
    _, runs = new_experiment(db, "steps", ("sst", "sts"))
    # Two identical processes, each with a StoreCallbacks (so each has its heartbeat thread
    # writing runs.db all along); at every step one of them reports and the other does not, the
    # roles swapping each step, so any difference between the two processes cancels out.
    specs = {name: ("logging_overhead", "StepSide", {"db": str(db), "run_id": run.id, "steps": steps, "threads": threads})
             for name, run in zip("AB", runs)}
    print(f"-- part 1: {steps} sst steps x {repeats} rounds, two processes taking turns, {threads or 'default'} thread(s)", flush=True)
    with_log, without, paired, in_callback = [], [], [], []
    with Sides(specs) as sides:
        sides.sides["A"].call("run", 0, True), sides.sides["B"].call("run", 0, True)  # warm-up
        for r in range(repeats):
            for k in range(steps):
                logger = "A" if (r + k) % 2 == 0 else "B"
                got = {name: side.call("run", k, name == logger) for name, side in sides.sides.items()}
                other = "B" if logger == "A" else "A"
                with_log.append(got[logger][0])
                without.append(got[other][0])
                in_callback.append(got[logger][1])
                paired.append(got[logger][0] / got[other][0])
        sides.each("close")
    print(f"   {'with StoreCallbacks':<20} {common.median(with_log):.3f} s/step  (steps {common.spread(with_log)})", flush=True)
    print(f"   {'without':<20} {common.median(without):.3f} s/step  (steps {common.spread(without)})", flush=True)
    share = sum(in_callback) / sum(with_log)
    print(f"   time inside on_step (buffering, the flushes): median {1e6 * common.median(in_callback):.0f} us, "
          f"max {1e3 * max(in_callback):.1f} ms, {share:.3%} of the steps' time", flush=True)
    print(f"   median of step-by-step ratios {common.median(paired):.3f}x", flush=True)
    return common.median(with_log) / common.median(without)


# ---- part 2: seven writers and a reader -----------------------------------------------------------


class _Counter(io.TextIOBase):
    """stderr that counts the lines telling of a locked or busy database."""

    def __init__(self, counts, key):
        self.counts, self.key = counts, key

    def write(self, text: str) -> int:
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered or "failed" in lowered:
            self.counts[self.key] += 1
            sys.__stderr__.write(text)
        return len(text)


def _writer(db: str, run_id: int, tasks: tuple[str, ...], rate: float, seconds: float, go, counts, index: int) -> None:
    import numpy as np

    from powerbert.outputs import TaskOutputs
    from powerbert.runner.worker import StoreCallbacks
    from powerbert.training.callbacks import EvalResult, TrainStart

    sys.stderr = _Counter(counts, f"errors{index}")
    sys.stdout = io.StringIO()
    callbacks = StoreCallbacks(db, run_id, threading.Event())
    callbacks.on_start(TrainStart(100_000, 1000, 0, "cpu", {t: 1000 for t in tasks}, {t: 1000 for t in tasks}))
    go.wait()
    start = time.monotonic()
    step, evaluated = 0, False
    try:
        while (now := time.monotonic()) - start < seconds:
            step += 1
            callbacks.on_step(step, step / 1000, {t: 1.0 / step for t in tasks}, 1e-5)
            if not evaluated and now - start > seconds / 2:  # one epoch's dev outputs, real sizes
                sizes = {"sst": 1101, "para": 3000, "sts": 863}
                outputs = {t: TaskOutputs(t, [f"id{i}" for i in range(sizes[t])], np.zeros(sizes[t]),
                                          np.zeros((sizes[t], 5)) if t == "sst" else np.zeros(sizes[t])) for t in tasks}
                callbacks.on_eval(EvalResult(1, step, {t: 0.5 for t in tasks}, 0.5, outputs, True))
                evaluated = True
            time.sleep(max(0.0, start + step / rate - time.monotonic()))
        callbacks.close()
    except Exception as exc:  # noqa: BLE001 - counted, the run goes on in real life
        counts[f"errors{index}"] += 1
        sys.__stderr__.write(f"writer {index}: {type(exc).__name__}: {exc}\n")
    if callbacks._thread.is_alive():
        counts[f"errors{index}"] += 1
    counts[f"steps{index}"] = step


def _reader(db: str, experiment: str, seconds: float, go, counts, latencies) -> None:
    from rich.console import Console

    from powerbert.cli.live import snapshot
    from powerbert.store import Store
    from tui.fetch import RunFollow, experiment_snapshot

    store = Store(db)
    exp = store.get_experiment(experiment)
    follow = RunFollow(store.runs(exp.id)[-1].id)
    go.wait()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        t0 = time.perf_counter()
        try:
            snap = experiment_snapshot(store, exp.id, follow)
            follow = snap.follow
            Console(file=io.StringIO(), width=100).print(snapshot(store, experiment)[2])
        except Exception as exc:  # noqa: BLE001
            counts["reader_errors"] += 1
            sys.__stderr__.write(f"reader: {type(exc).__name__}: {exc}\n")
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.5)
    store.close()


def writers_and_reader(rate: float, seconds: float, tmp: Path) -> int:
    from powerbert.store import Store

    db = tmp / "seven.db"
    _, runs = new_experiment(db, "seven", TASKS)
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    counts = manager.dict({**{f"errors{i}": 0 for i in range(7)}, **{f"steps{i}": 0 for i in range(7)}, "reader_errors": 0})
    latencies = manager.list()
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(db), run.id, run.tasks, rate, seconds, go, counts, i))
             for i, run in enumerate(runs)]
    procs.append(ctx.Process(target=_reader, args=(str(db), "seven", seconds, go, counts, latencies)))
    print(f"-- part 2: 7 writers at {rate:g} steps/s each for {seconds:g} s, a reader refreshing every 0.5 s", flush=True)
    for p in procs:
        p.start()
    time.sleep(3)  # let every process import and open the database
    go.set()
    for p in procs:
        p.join(timeout=seconds + 120)
    with Store(db) as store:
        rows = store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    errors = sum(counts[f"errors{i}"] for i in range(7)) + counts["reader_errors"]
    steps = sum(counts[f"steps{i}"] for i in range(7))
    lat = sorted(latencies)
    print(f"   {steps:,} steps logged, {rows:,} metric rows: {rows / seconds:,.0f} rows/s sustained "
          f"({steps / seconds / 7:.1f} steps/s per writer, target rate {rate:g})", flush=True)
    if lat:
        print(f"   reader: {len(lat)} refreshes, median {1000 * common.median(lat):.1f} ms, max {1000 * lat[-1]:.1f} ms", flush=True)
    print(f"   'database is locked' errors (and busy retries): {errors}", flush=True)
    manager.shutdown()
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="distinct sst steps per round (part 1)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over those steps (part 1)")
    parser.add_argument("--rate", type=float, default=20.0, help="steps per second of each writer (part 2)")
    parser.add_argument("--writers-seconds", type=float, default=20.0, help="how long the writers log (part 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of part 1 (default 1: on a shared machine a second thread makes steps vary 10x; 0 = torch's own)")
    args = parser.parse_args(argv)
    common.header("bench 4: logging overhead, and runs.db with seven writers and a reader")
    with tempfile.TemporaryDirectory(prefix="powerbert-bench-") as tmp:
        errors = writers_and_reader(args.rate, args.writers_seconds, Path(tmp))
        ratio = step_overhead(args.steps, args.repeats, args.threads, Path(tmp))
    if errors:
        print(f"   MISSED: {errors} 'database is locked' error(s) with seven writers (target 0)")
    code = common.verdict("step time, with the metric callback / without", ratio, TARGET, at_least=False)
    return 1 if errors else code


if __name__ == "__main__":
    sys.exit(main())
