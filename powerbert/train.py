"""The training loop for one subset of tasks: `train_subset(config, out_dir, callbacks)`.

Single-task and multitask alike: each step takes one batch of every task in the subset, the
gradient combiner (plain sum or PCGrad, powerbert.surgery) turns the task losses into
gradients, and AdamW steps. An epoch is `epoch_size` steps: "max" = the largest task's batches
(smaller tasks start another pass over their rows), "min" = the smallest task's batches
(larger tasks carry on where they stopped in the next epoch). After every epoch the dev files
are scored; the best epoch's weights are kept.

The data order is a pure function of (seed, task, pass) and each task's stream position is the
global step, so resuming from a checkpoint at step k sees exactly the batches an uninterrupted
run would have seen; dropout's RNG state is saved in the checkpoint. The loop knows nothing of
SQLite or terminals: it reports through `TrainCallbacks`.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from powerbert import checkpoint as ckpt
from powerbert.batching import Batch, EncodedTask, bucketed_batches, encode_task, sorted_batches
from powerbert.config import TrainConfig
from powerbert.data import TaskData, load_split, skipped_summary
from powerbert.model import MultitaskBert, build_model, load_tokenizer
from powerbert.outputs import TaskOutputs
from powerbert.surgery import make_combiner
from powerbert.tasks import TASKS, overall_score


class TrainCallbacks:
    """Side effects of training (logging, storing, progress bars). Override what you need."""

    def on_start(self, info: "TrainStart") -> None: ...
    def on_step(self, step: int, epoch: float, losses: dict[str, float], lr: float) -> None: ...
    def on_eval(self, result: "EvalResult") -> None: ...
    def on_checkpoint(self, kind: str, path: Path, step: int) -> None: ...
    def on_message(self, text: str) -> None: ...
    def on_eval_batch(self, task: str, done: int, total: int) -> None:
        """After each dev batch: rows of `task` scored so far. A long evaluation is progress."""

    def before_checkpoint(self, kind: str, step: int) -> None:
        """Called just before a checkpoint is written. A resume checkpoint at step k promises
        that everything reported up to step k is durable (the worker flushes its buffered
        metrics here), else a kill after the checkpoint leaves a gap in the stored curve."""


@dataclass
class TrainStart:
    total_steps: int
    steps_per_epoch: int
    start_step: int  # > 0 when resuming
    device: str
    train_rows: dict[str, int]
    dev_rows: dict[str, int]


@dataclass
class EvalResult:
    epoch: int  # 1-based epoch just finished
    step: int
    scores: dict[str, float]
    overall: float | None
    outputs: dict[str, TaskOutputs]
    is_best: bool


@dataclass
class TrainResult:
    status: str  # "finished" or "stopped"
    step: int
    best_epoch: int | None
    best_scores: dict[str, float] = field(default_factory=dict)
    best_overall: float | None = None
    best_checkpoint: Path | None = None


class TaskStream:
    """An endless, reproducible sequence of bucketed batches over one task's rows."""

    def __init__(self, encoded: EncodedTask, batch_size: int, seed: int, max_rows: int | None):
        self.encoded = encoded
        self.batch_size = batch_size
        self.seed = seed
        self.task_index = list(TASKS).index(encoded.task)
        self.lengths = encoded.lengths()
        self.rows_per_pass = min(len(encoded), max_rows) if max_rows else len(encoded)
        self.batches_per_pass = math.ceil(self.rows_per_pass / batch_size)
        self._pass_index: int | None = None
        self._pass_batches: list[np.ndarray] = []

    def batch(self, k: int):
        """The k-th batch of the stream (0-based), collated."""
        pass_index, within = divmod(k, self.batches_per_pass)
        if pass_index != self._pass_index:
            rng = np.random.default_rng([self.seed, self.task_index, pass_index])
            rows = None
            if self.rows_per_pass < len(self.encoded):
                rows = rng.choice(len(self.encoded), self.rows_per_pass, replace=False)
            self._pass_batches = bucketed_batches(self.lengths, self.batch_size, rng, rows)
            self._pass_index = pass_index
        return self.encoded.collate(self._pass_batches[within])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def tune_cpu_runtime() -> None:
    """Make this process's heap keep the memory it frees (Linux, glibc), for CPU training.

    Each step frees and reallocates the same large buffers (activations, gradients). By default
    glibc serves large blocks with mmap and unmaps them when freed, so every page of next step's
    buffers comes back through a page fault: on a small VM, allocating MiniLM's gradients took
    0.5 s that way against 0.06 s from the heap (bench/train_throughput.py --levers measures the
    whole step). Keeping freed memory costs up to the step's peak, which the process needs anyway.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not mallopt(m_mmap_threshold, 1 << 30):  # serve blocks up to 1 GiB from the heap,
        mallopt(m_mmap_threshold, 32 << 20)  # or up to the most an older glibc accepts
    mallopt(m_trim_threshold, (1 << 31) - 1)  # and do not give freed heap back


def load_training_data(config: TrainConfig, split: str, on_message: Callable[[str], None]) -> dict[str, TaskData]:
    loaded = {}
    for name in config.tasks:
        data = load_split(name, config.data_dir, split, skip_bad_rows=config.skip_bad_rows)
        note = skipped_summary(data)
        if note:
            on_message(note)
        loaded[name] = data
    return loaded


@torch.no_grad()
def evaluate(
    model: MultitaskBert, dev: dict[str, EncodedTask], device, precision, batch_size=64,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> dict[str, TaskOutputs]:
    """Outputs of the model on every dev set, in file order; `on_batch(task, done, total)`
    after each batch."""
    was_training = model.training
    model.eval()
    results = {}
    for name, encoded in dev.items():
        outputs: list[np.ndarray | None] = [None] * len(encoded)
        done = 0
        for indices in sorted_batches(encoded.lengths(), batch_size):
            batch = encoded.collate(indices).to(device)
            with autocast_for(device, precision):
                out = model.task_outputs(batch).float().cpu().numpy()
            for row, value in zip(batch.indices, out):
                outputs[row] = value
            done += len(batch.indices)
            if on_batch is not None:
                on_batch(name, done, len(encoded))
        results[name] = TaskOutputs(name, encoded.ids, encoded.labels, np.stack(outputs))
    model.train(was_training)
    return results


class TrainStep:
    """One optimisation step on one batch of every task: forward passes under autocast, the
    combiner's backward, the L2 term, clipping, the optimizer. `train_subset` runs it, and so do
    the benchmarks in bench/, so what they time is the product's own step."""

    def __init__(self, model: MultitaskBert, optimizer: torch.optim.Optimizer, combiner, config: TrainConfig, device: torch.device):
        self.model, self.optimizer, self.combiner = model, optimizer, combiner
        self.config, self.device = config, device
        self.shared = model.shared_parameters()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        table = model.encoder.get_input_embeddings().weight
        # On a CPU, telling the combiner which word-embedding rows the batches touch lets
        # PCGrad skip the rest (half of MiniLM's shared parameters, zero for every task). On a
        # GPU the full rows cost little and finding the rows would wait for the device.
        self.table = table if device.type == "cpu" and any(table is p for p in self.shared) else None

    def __call__(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        """Train on `batches` (task -> batch); returns each task's loss, detached."""
        model, config = self.model, self.config
        losses = {}
        token_ids = []
        for name, batch in batches.items():
            batch = batch.to(self.device)
            token_ids += [x["input_ids"].reshape(-1) for x in (batch.a, batch.b) if x is not None]
            with autocast_for(self.device, config.precision):
                outputs = model.task_outputs(batch)
            losses[name] = model.task_loss(batch, outputs)
        self.optimizer.zero_grad(set_to_none=True)
        rows = {self.table: torch.unique(torch.cat(token_ids))} if self.table is not None and len(batches) > 1 else None
        self.combiner.backward(losses, self.shared, step, rows)
        if config.l2 > 0:
            # d/dw of lambda * sum(w^2) is 2 * lambda * w: added to the gradient directly, which
            # is the explicit L2 term without a pass over every weight to compute its value.
            with_grad = [p for p in self.trainable if p.grad is not None]
            torch._foreach_add_([p.grad for p in with_grad], with_grad, alpha=2 * config.l2)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, config.grad_clip)
        self.optimizer.step()
        return {n: v.detach() for n, v in losses.items()}


def make_optimizer(model: MultitaskBert, config: TrainConfig) -> torch.optim.Optimizer:
    if config.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    head_params = [p for p in model.heads.parameters() if p.requires_grad]
    groups = [{"params": model.shared_parameters(), "lr": config.lr}]
    groups.append({"params": head_params, "lr": config.head_lr or config.lr})
    groups = [g for g in groups if g["params"]]
    # Fused AdamW updates each tensor in one pass with no temporaries: on a 2-core CPU it is
    # ~10x faster than the default (0.07 s against 0.8 s a step for MiniLM), and the fastest on
    # a GPU too (bench/train_throughput.py, bench/gpu_mfu.py).
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def make_schedule(optimizer, config: TrainConfig, total_steps: int):
    warmup = int(config.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_subset(
    config: TrainConfig,
    out_dir: Path | str,
    callbacks: TrainCallbacks | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train one subset; write best/last checkpoints into out_dir; report through callbacks."""
    callbacks = callbacks or TrainCallbacks()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ckpt.clean_stale_temporaries(out_dir)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    if device.type == "cpu":
        tune_cpu_runtime()

    tokenizer = load_tokenizer(config.model)
    train_data = load_training_data(config, "train", callbacks.on_message)
    dev_data = load_training_data(config, "dev", callbacks.on_message)
    encode = lambda d: encode_task(d, tokenizer, pair_mode=config.heads.pair_mode(d.task.name), max_length=config.max_length)  # noqa: E731
    streams = {n: TaskStream(encode(d), config.batch_size, config.seed, config.max_train) for n, d in train_data.items()}
    dev = {n: encode(d) for n, d in dev_data.items()}

    model = build_model(config.model, config.tasks, config.heads).to(device)
    optimizer = make_optimizer(model, config)
    sizes = [s.batches_per_pass for s in streams.values()]
    steps_per_epoch = max(sizes) if config.epoch_size == "max" else min(sizes)
    total_steps = steps_per_epoch * config.epochs
    scheduler = make_schedule(optimizer, config, total_steps)
    combiner = make_combiner(config.surgery, config.seed)

    start_step, best_overall, best_epoch, best_scores = 0, None, None, {}
    last_path, best_path = out_dir / "last.safetensors", out_dir / "best.safetensors"
    if resume and last_path.exists():
        start_step, best_overall, best_epoch, best_scores = _restore(last_path, model, optimizer, scheduler)
        callbacks.on_message(f"resumed from {last_path} at step {start_step}")

    callbacks.on_start(TrainStart(
        total_steps, steps_per_epoch, start_step, str(device),
        {n: s.rows_per_pass for n, s in streams.items()}, {n: len(e) for n, e in dev.items()},
    ))

    def save_last(step: int) -> None:
        callbacks.before_checkpoint("last", step)
        _save_last(last_path, model, optimizer, scheduler, step, best_overall, best_epoch, best_scores, config)
        callbacks.on_checkpoint("last", last_path, step)

    train_step = TrainStep(model, optimizer, combiner, config, device)
    model.train()
    last_save = time.monotonic()
    step = start_step
    while step < total_steps:
        if should_stop and should_stop():
            save_last(step)
            return TrainResult("stopped", step, best_epoch, best_scores, best_overall, best_path if best_epoch else None)
        losses = train_step({name: stream.batch(step) for name, stream in streams.items()}, step)
        scheduler.step()
        step += 1
        loss_values = {n: float(v) for n, v in losses.items()}
        callbacks.on_step(step, step / steps_per_epoch, loss_values, scheduler.get_last_lr()[0])

        if step % steps_per_epoch == 0:
            epoch = step // steps_per_epoch
            outputs = evaluate(model, dev, device, config.precision, on_batch=callbacks.on_eval_batch)
            scores = {n: o.score() for n, o in outputs.items()}
            overall = overall_score(scores)
            is_best = best_overall is None or (overall is not None and overall > best_overall)
            if is_best:
                best_overall, best_epoch, best_scores = overall, epoch, scores
                save_best(best_path, model, config)
                callbacks.on_checkpoint("best", best_path, step)
            callbacks.on_eval(EvalResult(epoch, step, scores, overall, outputs, is_best))
            save_last(step)
            last_save = time.monotonic()
        elif time.monotonic() - last_save > config.checkpoint_every_s:
            save_last(step)
            last_save = time.monotonic()

    return TrainResult("finished", step, best_epoch, best_scores, best_overall, best_path if best_epoch else None)


def save_best(path: Path, model: MultitaskBert, config: TrainConfig) -> None:
    ckpt.atomic_save_tensors(path, model.state_dict(), {"kind": "best"})
    ckpt.atomic_write_json(path.with_suffix(".json"), {"config": config.to_dict(), "format": 1})


def _save_last(path, model, optimizer, scheduler, step, best_overall, best_epoch, best_scores, config) -> None:
    optim_tensors, optim_meta = ckpt.optimizer_to_tensors(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "kind": "last", "step": step, "scheduler": scheduler.state_dict(), "optimizer": optim_meta,
        "best_overall": best_overall, "best_epoch": best_epoch, "best_scores": best_scores,
        "config": config.to_dict(),
    }
    ckpt.atomic_save_tensors(path, tensors, meta)


def _restore(path: Path, model, optimizer, scheduler):
    tensors, meta = ckpt.load_tensors(path)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)
    optimizer.load_state_dict(ckpt.optimizer_from_tensors(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta["step"], meta["best_overall"], meta["best_epoch"], meta["best_scores"] or {}
