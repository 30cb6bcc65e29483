"""How the task losses of one multitask step become gradients: plain sum, or PCGrad.

Both take the per-task losses and leave `.grad` set on every parameter, like `loss.backward()`.

PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): on the shared encoder
parameters, each task's gradient g_i is projected, in a random order over the other tasks j,
onto the normal plane of g_j wherever the two conflict (g_i . g_j < 0):
    g_i <- g_i - (g_i . g_j / |g_j|^2) g_j
and the projected gradients are summed. Task heads keep their own gradients. The gradients are
handled as one flat vector per task, so a projection is a few vector operations, not a Python
loop over parameters.
"""

from __future__ import annotations

import random

import torch
from torch import nn


class GradientCombiner:
    """Turns per-task losses into gradients on the model's parameters."""

    name = "base"

    def backward(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter], step: int) -> None:
        raise NotImplementedError


class SumGradients(GradientCombiner):
    """The naive multitask step: the gradient of the summed losses."""

    name = "sum"

    def backward(self, losses, shared, step):
        torch.stack(list(losses.values())).sum().backward()


class PCGrad(GradientCombiner):
    """Gradient surgery on the shared parameters; the task order is drawn from (seed, step) so a
    resumed run makes exactly the same choices as an uninterrupted one."""

    name = "pcgrad"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.conflicts = 0  # projections made so far, for logging

    def backward(self, losses, shared, step):
        names = list(losses)
        if len(names) == 1:
            losses[names[0]].backward()
            return
        flat = []
        for name in names:
            for p in shared:
                p.grad = None
            # Each task's batch has its own graph, so no retain_graph is needed; head grads
            # accumulate untouched because a head only appears in its own task's graph.
            losses[name].backward()
            flat.append(_flatten([p.grad for p in shared], shared))
        grads = torch.stack(flat)
        combined, conflicts = project_conflicting(grads, random.Random(self.seed * 1_000_003 + step))
        self.conflicts += conflicts
        _unflatten_into(combined, shared)


def project_conflicting(grads: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor, int]:
    """PCGrad on a [T, P] matrix of task gradients: the sum of the projected rows, and how many
    projections were made."""
    originals = grads
    projected = grads.clone()
    norms_sq = (originals * originals).sum(dim=1)
    conflicts = 0
    tasks = list(range(grads.shape[0]))
    for i in tasks:
        others = [j for j in tasks if j != i]
        rng.shuffle(others)
        for j in others:
            dot = torch.dot(projected[i], originals[j])
            # .item() syncs a GPU once per pair; with at most four tasks that is 12 small syncs
            # per step, far below the cost of the backward passes.
            if dot.item() < 0 and norms_sq[j].item() > 0:
                projected[i] -= (dot / norms_sq[j]) * originals[j]
                conflicts += 1
    return projected.sum(dim=0), conflicts


def _flatten(grads: list[torch.Tensor | None], params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)
    ])


def _unflatten_into(vector: torch.Tensor, params: list[nn.Parameter]) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        # Views into one buffer: no copy, and the optimizer reads them like any gradient.
        p.grad = vector[offset : offset + n].view_as(p)
        offset += n


def make_combiner(name: str, seed: int) -> GradientCombiner:
    if name == "pcgrad":
        return PCGrad(seed)
    if name == "sum":
        return SumGradients()
    raise ValueError(f"unknown gradient surgery '{name}': expected pcgrad or sum")
