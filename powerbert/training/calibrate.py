"""Calibration: how long the pieces of a run take on this device, with this model, measured.

`calibrate(config, tasks, threads)` times, for each task, real training steps (the product's
own `TrainStep`, on batches of the task's own rows spread over a whole pass, after warm-up
steps) and real dev forward passes, plus what every run pays once: a fresh process importing
PowerBERT's model code and building the model and tokenizer, tokenising rows, writing a
checkpoint. `powerbert plan` builds
its estimates from these figures. They are cached (a JSON file under ~/.cache/powerbert, keyed
by model, device, precision, max length, batch size, threads and the task's data file) so a
second plan of the same setting is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from powerbert.config import TrainConfig

WARMUP_STEPS = 2  # first steps pay allocation and autotuning: not counted
TIMED_STEPS = 10
CACHE_VERSION = 12


@dataclass
class TaskTiming:
    step_s: float  # one training step of one batch of this task (forward, backward, optimiser)
    eval_row_s: float  # one dev row's forward pass
    tokenize_row_s: float  # reading and tokenising one row


@dataclass
class Calibration:
    tasks: dict[str, TaskTiming]
    startup_s: float  # a worker's fixed cost: the imports, the model and tokenizer load
    prestart_s: float  # the part of startup_s before the worker marks its run started (not in its elapsed time)
    checkpoint_bytes_per_s: float  # writing safetensors
    parameter_bytes: int  # the weights (fp32) of the model of every calibrated task: what its best.safetensors holds
    # What gradient surgery adds to a step of k tasks over their steps alone (PCGrad: a backward
    # pass per task, then projections between every pair of task gradients), measured at k = 2
    # and at k = every calibrated task; keys are k as text (JSON). Empty with surgery "sum" and
    # no balancing (which needs each task's gradient, as PCGrad does).
    surgery_s: dict = field(default_factory=dict)
    # Each task's own weights (fp32): its head and its own top layers (task_layers). A run on
    # fewer tasks holds the model less those of the tasks it lacks.
    task_bytes: dict = field(default_factory=dict)
    cached: bool = False

    def run_parameter_bytes(self, subset: tuple[str, ...]) -> int:
        """What the model of a run on `subset` (of the calibrated tasks) holds in its weights (fp32)."""
        return self.parameter_bytes - sum(n for task, n in self.task_bytes.items() if task not in subset)

    def surgery_seconds(self, tasks: int) -> float:
        """Surgery's extra time in a step of `tasks` tasks: measured, or on the line through
        the measured points (none for one task)."""
        points = sorted((int(k), v) for k, v in self.surgery_s.items())
        if tasks < 2 or not points:
            return 0.0
        for k, v in points:
            if k == tasks:
                return v
        (k0, v0), (k1, v1) = ([(1, 0.0)] + points)[-2:]
        return max(0.0, v0 + (v1 - v0) * (tasks - k0) / (k1 - k0))


def cache_path() -> Path:
    root = Path(os.environ.get("POWERBERT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "powerbert")
    return root / "calibration.json"


def _key(config: TrainConfig, device: str, kernels: list, threads: int, task: str) -> str:
    from powerbert.data.files import task_path

    path = task_path(task, config.data_dir, "train")
    stat = path.stat()
    parts = [CACHE_VERSION, config.model or "default", device, config.precision, kernels, config.max_length, config.batch_size,
             threads, config.heads.pair_mode(task), config.heads.sts_head, task, str(path), stat.st_size, int(stat.st_mtime)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _load_cache() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache we cannot write only costs the next plan its calibration again


def calibrate(config: TrainConfig, tasks: tuple[str, ...], threads: int, on_message=lambda text: None) -> Calibration:
    """The timings for `tasks` under `config` on its device with `threads` torch threads, from
    the cache where it has them, measured otherwise."""
    from powerbert.model.device import (
        batch_width_multiple,
        bf16_training_passes,
        packed_dropout_masks,
        resolve_device,
        resolve_precision,
        row_embedding_update,
        training_attention,
    )

    torch_device = resolve_device(config.device)
    config = replace(config, precision=resolve_precision(config.precision, torch_device))  # what the runs will train at
    device = str(torch_device)
    # What the steps will run, not the settings' spelling ("auto" and "eager" on a CPU under
    # bf16 time the same steps).
    kernels = [training_attention(config.attention, torch_device, config.precision),
               row_embedding_update(config.embedding_update, torch_device),
               bf16_training_passes(config.train_weights, config.precision, torch_device),
               packed_dropout_masks(config.dropout_masks, torch_device),
               batch_width_multiple(torch_device, config.precision)]
    cache = _load_cache()
    keys = {t: _key(config, device, kernels, threads, t) for t in tasks}
    common_key = hashlib.sha256(json.dumps([CACHE_VERSION, config.model or "default", device, config.precision, kernels, threads, config.surgery, config.balance,
                                            config.batch_size, config.heads.task_layers, sorted(tasks)]).encode()).hexdigest()[:24]
    have = {t: cache[k] for t, k in keys.items() if k in cache}
    common = cache.get(common_key)
    if len(have) == len(tasks) and common is not None:
        return Calibration({t: TaskTiming(**v) for t, v in have.items()}, cached=True, **common)
    # All of them again, not only those the cache lacks: surgery's cost is timed across the
    # task set, with the model that has all of their heads.
    on_message(f"calibrating on {device} ({', '.join(tasks)}): a few real training steps per task, once; cached for the next plan")
    measured, fixed = _measure(config, tasks, threads)
    for task, timing in measured.items():
        cache[keys[task]] = asdict(timing)
    cache[common_key] = fixed
    _save_cache(cache)
    return Calibration({t: measured[t] for t in tasks}, **fixed)


def _measure(config: TrainConfig, tasks: tuple[str, ...], threads: int) -> tuple[dict[str, TaskTiming], dict]:
    import tempfile

    import torch

    from powerbert.data.batching import encode_task, sorted_batches
    from powerbert.data.files import load_split
    from powerbert.model import checkpoint as ckpt
    from powerbert.model.device import autocast_for, batch_width_multiple, resolve_device, tune_cpu_runtime
    from powerbert.model.multitask import build_model, load_tokenizer
    from powerbert.model.surgery import make_combiner
    from powerbert.training.step import TrainStep, make_optimizer
    from powerbert.training.streams import TaskStream

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        device = resolve_device(config.device)
        if device.type == "cpu":
            tune_cpu_runtime()
        startup_s, prestart_s = _startup_seconds(config)
        tokenizer = load_tokenizer(config.model)
        model = build_model(config.model, tasks, config.heads).to(device)
        optimizer = make_optimizer(model, config)
        step = TrainStep(model, optimizer, make_combiner("sum", config.seed), config, device)
        timings, streams = {}, {}
        for task in tasks:
            start = time.perf_counter()
            train = load_split(task, config.data_dir, "train", skip_bad_rows=True)
            dev = load_split(task, config.data_dir, "dev", skip_bad_rows=True)
            mode = config.heads.pair_mode(task)
            multiple = batch_width_multiple(device, config.precision)
            encoded = encode_task(train, tokenizer, pair_mode=mode, max_length=config.max_length, pad_multiple=multiple)
            dev_encoded = encode_task(dev, tokenizer, pair_mode=mode, max_length=config.max_length, pad_multiple=multiple)
            tokenize_row_s = (time.perf_counter() - start) / max(1, len(train) + len(dev))
            stream = streams[task] = TaskStream(encoded, config.batch_size, config.seed, config.max_train, config.bucket_window)
            model.train()
            # Timed batches spread over the whole first pass (their sizes vary: _pass_mean
            # corrects their mean to the pass's).
            last = stream.batches_per_pass - 1
            timed = [round(i * last / max(1, TIMED_STEPS - 1)) for i in range(TIMED_STEPS)]
            times = []
            for i, k in enumerate([*range(WARMUP_STEPS), *timed]):
                batch = stream.batch(k)
                start = time.perf_counter()
                step({task: batch}, k)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= WARMUP_STEPS:
                    times.append(time.perf_counter() - start)
            model.eval()
            rows = 0
            start = time.perf_counter()
            batches = sorted_batches(dev_encoded.lengths(), config.batch_size)
            # Evenly spread over the length-sorted batches: the first ones are the shortest rows.
            sample = [batches[i] for i in sorted({round(k * (len(batches) - 1) / 5) for k in range(6)})]
            with torch.no_grad():
                for indices in sample:
                    batch = dev_encoded.collate(indices).to(device)
                    with autocast_for(device, config.precision):
                        model.task_outputs(batch).float().cpu()
                    rows += len(indices)
            eval_row_s = (time.perf_counter() - start) / max(1, rows)
            timings[task] = TaskTiming(_pass_mean(stream, timed, times), eval_row_s, tokenize_row_s)
        surgery_s = {}
        if (config.surgery != "sum" or config.balance != "none") and len(tasks) > 1:
            # The same multitask batches through the surgery and through a plain sum: the
            # difference is what surgery costs on top of the tasks' own steps.
            surgical = TrainStep(model, optimizer, make_combiner(config.surgery, config.seed, config.balance), config, device)
            model.train()
            for k in sorted({2, len(tasks)}):
                subset = tasks[:k]
                surgery_s[str(k)] = max(0.0, _multitask_step_s(surgical, streams, subset, device) - _multitask_step_s(step, streams, subset, device))
        parameter_bytes = sum(p.numel() * 4 for p in model.parameters())
        task_bytes = {t: sum(p.numel() * 4 for p in model.task_parameters(t)) for t in tasks}
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            ckpt.atomic_save_tensors(Path(folder) / "probe.safetensors", model.state_dict(), {"kind": "probe"})
            write_s = time.perf_counter() - start
        fixed = {"startup_s": startup_s, "prestart_s": prestart_s, "surgery_s": surgery_s, "checkpoint_bytes_per_s": parameter_bytes / max(write_s, 1e-6), "parameter_bytes": parameter_bytes,
                 "task_bytes": task_bytes}
        return timings, fixed
    finally:
        torch.set_num_threads(before)


def _multitask_step_s(train_step, streams: dict, subset: tuple[str, ...], device, steps: int = 3) -> float:
    """The mean time of `steps` steps on one batch of every task of `subset` (after a warm-up)."""
    import torch

    times = []
    for i in range(steps + 1):
        batches = {t: streams[t].batch(i) for t in subset}
        start = time.perf_counter()
        train_step(batches, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.fmean(times)


def _pass_mean(stream, timed: list[int], times: list[float]) -> float:
    """A step's mean time over the whole pass, from the timed steps: their mean, corrected by a
    least-squares line of time against padded tokens for how the timed batches' sizes differ
    from the pass's (ten batches of a task whose rows vary in length are rarely the pass's
    average; measured, that alone put sts runs 20-30% off)."""
    import numpy as np

    sizes = np.array([stream.padded_tokens(k) for k in timed], dtype=float)
    mean = statistics.fmean(times)
    if len(set(sizes.tolist())) < 2:
        return mean
    slope = max(0.0, float(np.polyfit(sizes, np.array(times), 1)[0]))  # a step never gets cheaper with more tokens
    pass_size = statistics.fmean(stream.padded_tokens(k) for k in range(stream.batches_per_pass))
    return max(1e-6, mean + slope * (pass_size - float(sizes.mean())))


def _startup_seconds(config: TrainConfig) -> tuple[float, float]:
    """What a worker pays before its first step, other than reading its data: a fresh Python,
    the imports, the tokenizer and the model built and loaded, timed from outside the process
    (this process has most of it imported already, so timing here would count too little).
    Also the part of it before the worker marks its run started (a fresh Python and the
    worker's own light imports): the run's elapsed time in runs.db begins after it."""
    # The encoder is what costs; the heads are a few small layers (and the task names of a task
    # file would mean nothing to a fresh process that has not read it).
    code = (
        "import sys, time\n"
        "import psutil\n"
        "import powerbert.runner.worker\n"
        "print(time.time() - psutil.Process().create_time())\n"
        "from powerbert.model.multitask import load_encoder, load_tokenizer\n"
        "model = sys.argv[1] or None\n"
        "load_tokenizer(model)\n"
        "load_encoder(model)\n"
    )
    settings = config.model or ""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    measured = []
    for _ in range(2):  # the faster of two: the first may read the model's files from a cold disk cache
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, settings], capture_output=True, text=True, timeout=600, check=True, env=env)
        total = time.perf_counter() - start
        prestart = float(done.stdout.split()[0])
        measured.append((total, min(prestart, total)))
    return min(measured)
