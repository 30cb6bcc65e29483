"""AdamW that updates an embedding table only on the rows a step's batches touched.

A param group marked `rows=True` takes a sparse gradient (an `nn.Embedding(sparse=True)`'s) and
gets AdamW's update on its rows alone, the "lazy" Adam of TensorFlow's LazyAdam and torch's
SparseAdam, with AdamW's decoupled weight decay: a row that no batch touched this step keeps its
weights, its moments and its decay until a batch touches it again. Every other group is torch's
(fused) AdamW, unchanged. The moments and the step count live in the optimizer's state under
AdamW's own names, so checkpoints save and restore them like any AdamW state.

Why: MiniLM's word-embedding table is half its parameters (30,522 x 384), and a batch of 16 SST
sentences touches a few hundred of its rows. On a CPU the dense table costs a zero fill, the
L2 term, clipping's norm and AdamW's pass over 11.7M numbers every step
(bench/RESULTS.md, "The word-embedding table on the CPU").
"""

from __future__ import annotations

import math

import torch


class RowAdamW(torch.optim.AdamW):
    """torch.optim.AdamW, except that groups with `rows=True` are updated row by row from a
    sparse gradient."""

    @property
    def row_params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.param_groups if group.get("rows") for p in group["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        # AdamW skips a parameter without a gradient: the sparse ones are hidden from it.
        sparse = [(p, p.grad, group) for group in self.param_groups if group.get("rows")
                  for p in group["params"] if p.grad is not None]
        for p, _, _ in sparse:
            p.grad = None
        try:
            loss = super().step(closure)
        finally:
            for p, grad, _ in sparse:
                p.grad = grad
        for p, grad, group in sparse:
            self._update_rows(p, grad, group)
        return loss

    def _update_rows(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        if not grad.is_sparse:
            # A bug, not a user's mistake: the CLI reports it as an internal error.
            raise RuntimeError("a rows=True parameter got a dense gradient: its embedding is not sparse")
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        weights = p.index_select(0, rows).mul_(1 - lr * group["weight_decay"])
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        weights.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
        p.index_copy_(0, rows, weights)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
