"""The training loop for one subset of tasks: `train_subset(config, out_dir, callbacks)`.

Single-task and multitask alike: each step takes one batch of every task in the subset, the
gradient combiner (plain sum or PCGrad, powerbert.model.surgery) turns the task losses into
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

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from powerbert.config import TrainConfig
from powerbert.data.batching import (
    EncodedTask,
    encode_task,
    sorted_batches,
)
from powerbert.errors import TrainingDiverged
from powerbert.model import checkpoint as ckpt
from powerbert.model.device import autocast_for, batch_width_multiple, resolve_device, resolve_precision, tune_cpu_runtime
from powerbert.model.multitask import MultitaskBert, build_model, load_tokenizer
from powerbert.model.surgery import make_combiner
from powerbert.outputs import TaskOutputs
from powerbert.tasks import overall_score
from powerbert.training.callbacks import (
    EvalResult,
    TrainCallbacks,
    TrainResult,
    TrainStart,
)
from powerbert.training.step import TrainStep, make_optimizer, make_schedule
from powerbert.training.streams import TaskStream, load_training_data
from powerbert.training.writer import CheckpointWriter


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
    # Prediction's attention kernel, not the training step's: dev outputs must be what
    # prediction computes.
    with model.inference_attention():
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
    # From here on the run's config holds the precision it trains at, so its checkpoints record
    # it and prediction evaluates at it: "auto" depends on the device that runs it.
    config = replace(config, precision=resolve_precision(config.precision, device))

    tokenizer = load_tokenizer(config.model)
    train_data = load_training_data(config, "train", callbacks.on_message)
    dev_data = load_training_data(config, "dev", callbacks.on_message)
    encode = lambda d: encode_task(d, tokenizer, pair_mode=config.heads.pair_mode(d.task.name), max_length=config.max_length,  # noqa: E731
                                   pad_multiple=batch_width_multiple(device, config.precision))
    streams = {n: TaskStream(encode(d), config.batch_size, config.seed, config.max_train, config.bucket_window) for n, d in train_data.items()}
    dev = {n: encode(d) for n, d in dev_data.items()}

    model = build_model(config.model, config.tasks, config.heads).to(device)
    optimizer = make_optimizer(model, config)
    sizes = [s.batches_per_pass for s in streams.values()]
    steps_per_epoch = max(sizes) if config.epoch_size == "max" else min(sizes)
    total_steps = steps_per_epoch * config.epochs
    scheduler = make_schedule(optimizer, config, total_steps)
    combiner = make_combiner(config.surgery, config.seed, config.balance)

    start_step, best_overall, best_epoch, best_scores = 0, None, None, {}
    last_path, best_path = out_dir / "last.safetensors", out_dir / "best.safetensors"
    if resume and last_path.exists():
        start_step, best_overall, best_epoch, best_scores = _restore(last_path, model, optimizer, scheduler)
        callbacks.on_message(f"resumed from {last_path} at step {start_step}")

    callbacks.on_start(TrainStart(
        total_steps, steps_per_epoch, start_step, str(device),
        {n: s.rows_per_pass for n, s in streams.items()}, {n: len(e) for n, e in dev.items()},
    ))

    writer = CheckpointWriter()

    def save_last(step: int) -> None:
        callbacks.before_checkpoint("last", step)
        tensors, meta = _last_state(model, optimizer, scheduler, step, best_overall, best_epoch, best_scores, config)
        writer.submit(last_path, tensors, meta, lambda: callbacks.on_checkpoint("last", last_path, step))

    train_step = TrainStep(model, optimizer, combiner, config, device)
    model.train()
    last_save = time.monotonic()
    step = start_step
    try:
        while step < total_steps:
            writer.poll()  # report a resume checkpoint the writer has finished
            if should_stop and should_stop():
                save_last(step)
                writer.wait()
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
                if overall is None:
                    # Every score NaN (an sts-only run whose outputs went NaN has no Pearson r): the
                    # weights diverged, and training on from them cannot recover. End the run here
                    # rather than keep a NaN epoch as the best one or resume from it.
                    raise TrainingDiverged(f"dev scores are NaN at epoch {epoch}: the run diverged; try a lower lr")
                is_best = best_overall is None or overall > best_overall
                if is_best:
                    best_overall, best_epoch, best_scores = overall, epoch, scores
                    writer.wait()  # files reach the disk in the order they were taken, a failed one stops the run first
                    callbacks.before_checkpoint("best", step)
                    save_best(best_path, model, config)
                    callbacks.on_checkpoint("best", best_path, step)
                callbacks.on_eval(EvalResult(epoch, step, scores, overall, outputs, is_best))
                save_last(step)
                last_save = time.monotonic()
            elif time.monotonic() - last_save > config.checkpoint_every_s or (step == start_step + 1 and not last_path.exists()):
                # Also right after the first step of a fresh run: a kill before the first interval
                # would otherwise lose every step trained so far. After that, at most
                # checkpoint_every_s of training is ever lost.
                save_last(step)
                last_save = time.monotonic()
        writer.wait()
    finally:
        writer.close()

    return TrainResult("finished", step, best_epoch, best_scores, best_overall, best_path if best_epoch else None)


def save_best(path: Path, model: MultitaskBert, config: TrainConfig) -> None:
    ckpt.atomic_save_tensors(path, model.state_dict(), {"kind": "best"})
    ckpt.atomic_write_json(path.with_suffix(".json"), {"config": config.to_dict(), "format": 1})


def _last_state(model, optimizer, scheduler, step, best_overall, best_epoch, best_scores, config) -> tuple[dict, dict]:
    """What a resume checkpoint holds: tensors (the model, the optimizer's state, the RNG) and
    its metadata (the step, the schedule, the best epoch so far, the configuration)."""
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
    return tensors, meta


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
