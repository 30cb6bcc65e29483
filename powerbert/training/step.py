"""One optimisation step of a multitask model, and the optimiser and schedule it steps.

`TrainStep` runs the forward passes of one batch per task under autocast (or on a bf16 copy of
the encoder: powerbert.training.bf16_passes), lets the gradient combiner (sum or PCGrad) set
the gradients, adds the explicit L2 term, clips and steps the fp32 weights; with
surgery "alternate" it does that for each task's batch alone, one optimizer step per task.
`make_optimizer` builds fused AdamW, with the word-embedding table in a group of its own that
is updated row by row from a sparse gradient where `embedding_update` says so (RowAdamW).
"""

from __future__ import annotations

import torch

from powerbert.config import TrainConfig
from powerbert.data.batching import Batch
from powerbert.model.device import (
    autocast_for,
    bf16_training_passes,
    packed_dropout_masks,
    resolve_precision,
    row_embedding_update,
    training_attention,
)
from powerbert.model.multitask import MultitaskBert
from powerbert.model.packed_dropout import use_packed_dropout
from powerbert.model.surgery import step_rng
from powerbert.training.bf16_passes import Bf16Passes
from powerbert.training.row_adamw import RowAdamW


class TrainStep:
    """One optimisation step on one batch of every task: forward passes under autocast, the
    combiner's backward, the L2 term, clipping, the optimizer. `train_subset` runs it, and so do
    the benchmarks in bench/, so what they time is the product's own step."""

    def __init__(self, model: MultitaskBert, optimizer: torch.optim.Optimizer, combiner, config: TrainConfig, device: torch.device):
        self.model, self.optimizer, self.combiner = model, optimizer, combiner
        self.config, self.device = config, device
        precision = resolve_precision(config.precision, device)
        # The module the passes run on: the model, or a bf16 copy of its encoder with the
        # model's heads (powerbert.training.bf16_passes); AdamW steps the model's fp32 weights.
        self.passes = Bf16Passes(model) if bf16_training_passes(config.train_weights, precision, device) else None
        self.net = self.passes.net if self.passes else model
        self.autocast = "fp32" if self.passes else precision
        self.net.encoder.set_attn_implementation(training_attention(config.attention, device, precision))
        if packed_dropout_masks(config.dropout_masks, device):
            use_packed_dropout(self.net.encoder, self.net.task_layers)
        self.shared = self.net.shared_parameters()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        table = model.encoder.get_input_embeddings().weight
        # make_optimizer put the table in a row-by-row group (powerbert.training.row_adamw):
        # its embedding then gives a sparse gradient, of the rows the batches touch.
        self.row_table = table if any(p is table for p in getattr(optimizer, "row_params", ())) else None
        embeddings = self.net.encoder.get_input_embeddings()
        embeddings.sparse = self.row_table is not None
        # On a CPU, telling the combiner which word-embedding rows the batches touch lets
        # PCGrad skip the rest (half of MiniLM's shared parameters, zero for every task). On a
        # GPU the full rows cost little and finding the rows would wait for the device, unless
        # the table trains by rows anyway.
        find_rows = device.type == "cpu" or self.row_table is not None
        net_table = embeddings.weight
        self.table = net_table if find_rows and any(net_table is p for p in self.shared) else None

    def __call__(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        """Train on `batches` (task -> batch); returns each task's loss, detached. With surgery
        "alternate", each task's batch is an optimizer step of its own, in an order drawn from
        (seed, step) so that a resumed run takes the same steps."""
        if self.config.surgery == "alternate" and len(batches) > 1:
            order = list(batches)
            # A new order each step, so that no task always takes the last update.
            step_rng(self.config.seed, step).shuffle(order)
            losses = {name: self._update({name: batches[name]}, step)[name] for name in order}
            return {name: losses[name] for name in batches}
        return self._update(batches, step)

    def _update(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        net, config = self.net, self.config
        if self.passes:
            self.passes.follow_mode()
        losses = {}
        token_ids = []
        for name, batch in batches.items():
            batch = batch.to(self.device)
            token_ids += [x["input_ids"].reshape(-1) for x in (batch.a, batch.b) if x is not None]
            with autocast_for(self.device, self.autocast):
                outputs = net.task_outputs(batch)
            losses[name] = net.task_loss(batch, outputs)
        self.optimizer.zero_grad(set_to_none=True)
        rows = {self.table: torch.unique(torch.cat(token_ids))} if self.table is not None and len(batches) > 1 else None
        self.combiner.backward(losses, self.shared, step, rows)
        if self.passes:
            self.passes.grads_to_weights()
        # No autograd on what follows: the L2 term reads the weights, and a gradient that is a
        # view of PCGrad's kept buffer must not pull the buffer into the graph (the next step's
        # combine into it would then fail: it did for multitask runs with the L2 term).
        with torch.no_grad():
            with_grad = [p for p in self.trainable if p.grad is not None]
            dense = [p for p in with_grad if p is not self.row_table]
            # The sparse table's gradient with one value row per touched row (an embedding's
            # has one per token): the L2 term and the norm need each row once.
            table_grad = None
            if self.row_table is not None and self.row_table.grad is not None:
                table_grad = self.row_table.grad = self.row_table.grad.coalesce()
            if config.l2 > 0:
                # d/dw of lambda * sum(w^2) is 2 * lambda * w: added to the gradient directly,
                # which is the explicit L2 term without a pass over every weight for its value.
                torch._foreach_add_([p.grad for p in dense], dense, alpha=2 * config.l2)
                if table_grad is not None:
                    touched = self.row_table.index_select(0, table_grad.indices()[0])
                    table_grad.values().add_(touched, alpha=2 * config.l2)
            if config.grad_clip > 0:
                grads = [p.grad for p in dense] + ([table_grad.values()] if table_grad is not None else [])
                norm = torch.nn.utils.get_total_norm(grads)
                torch.nn.utils.clip_grads_with_norm_(with_grad, config.grad_clip, norm)
            self.optimizer.step()
            if self.passes:
                # A table trained by rows changed only the rows its gradient has.
                self.passes.refresh(table_grad._indices()[0] if table_grad is not None else None)
        return {n: v.detach() for n, v in losses.items()}


def make_optimizer(model: MultitaskBert, config: TrainConfig) -> torch.optim.Optimizer:
    if config.freeze_encoder:
        for p in [*model.encoder.parameters(), *model.task_layers.parameters()]:
            p.requires_grad_(False)
    head_params = [p for p in model.heads.parameters() if p.requires_grad]
    encoder = model.encoder_parameters()  # the shared encoder and any task's own top layers
    table = model.encoder.get_input_embeddings().weight
    by_rows = table.requires_grad and row_embedding_update(config.embedding_update, table.device)
    groups = [{"params": [p for p in encoder if not (by_rows and p is table)], "lr": config.lr}]
    if by_rows:
        groups.append({"params": [table], "lr": config.lr, "rows": True})
    groups.append({"params": head_params, "lr": config.head_lr or config.lr})
    groups = [g for g in groups if g["params"]]
    # Fused AdamW updates each tensor in one pass with no temporaries: on a 2-core CPU it is
    # ~10x faster than the default (0.07 s against 0.8 s a step for MiniLM), and the fastest on
    # a GPU too (bench/train_throughput.py, bench/gpu_mfu.py).
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return RowAdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def make_schedule(optimizer, config: TrainConfig, total_steps: int):
    warmup = int(config.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
