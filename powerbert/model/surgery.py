"""How the task losses of one multitask step become gradients: plain sum, or PCGrad.

Both take the per-task losses and leave `.grad` set on every parameter, like `loss.backward()`.

PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): on the shared encoder
parameters, each task's gradient g_i is projected, in a random order over the other tasks j,
onto the normal plane of g_j wherever the two conflict (g_i . g_j < 0):
    g_i <- g_i - (g_i . g_j / |g_j|^2) g_j
and the projected gradients are summed. Task heads keep their own gradients.

Balancing (`balance="norm"`, with either combiner): each task's shared gradient is first scaled
to the mean of the tasks' gradient norms, g_i <- g_i * mean_j |g_j| / |g_i|, so a task whose
loss has a larger scale (cosine STS's mean squared error on 0-5) does not drown the others'
share of the step; the sum of the scaled gradients keeps about the size of the plain sum.

With surgery "alternate" nothing is combined: the training step (powerbert.training.step)
gives each task's batch an optimizer step of its own, each a plain backward.

The gradients are handled as one flat vector per task, and every dot product the projections
need comes from one T x T Gram matrix, so a step costs one pass over the gradients to build it
and one to combine them: no Python loop over parameters per pair, and no wait on the device
(bench/pcgrad_overhead.py times it against the plain sum).
"""

from __future__ import annotations

import random

import torch
from torch import nn

from powerbert.errors import ConfigError


class GradientCombiner:
    """Turns per-task losses into gradients on the model's parameters.

    `rows`, optional, maps a shared parameter (an embedding table) to the only rows of it that
    can have a gradient this step (the token ids in the batches); a combiner may use it to skip
    the rest, which are zero for every task."""

    name = "base"

    def backward(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter], step: int,
                 rows: dict[nn.Parameter, torch.Tensor] | None = None) -> None:
        raise NotImplementedError


class SumGradients(GradientCombiner):
    """The naive multitask step: the gradient of the summed losses."""

    name = "sum"

    def backward(self, losses, shared, step, rows=None):
        torch.stack(list(losses.values())).sum().backward()


class PCGrad(GradientCombiner):
    """Gradient surgery on the shared parameters; the task order is drawn from (seed, step) so a
    resumed run makes exactly the same choices as an uninterrupted one. With `balance`, the
    task gradients are scaled to one norm first.

    Each task's shared gradients are copied into one row of a [T, P] buffer kept across steps,
    so there is no per-step allocation of it, nor a stack of flattened copies; the combined
    gradient goes into another kept buffer, which the parameters' .grad then view. Of a table
    given in `rows` only those rows are copied: on MiniLM the word embeddings are half the
    encoder's parameters, and a step's batches touch a few thousand of their 30,522 rows."""

    name = "pcgrad"

    project = True

    def __init__(self, seed: int = 0, *, balance: bool = False):
        self.seed = seed
        self.balance = balance
        self._conflicts: torch.Tensor | int = 0  # a device tensor: read it only when logging
        self._grads: torch.Tensor | None = None  # [T, P] task gradients
        self._combined: torch.Tensor | None = None  # [P]

    @property
    def conflicts(self) -> int:
        """Projections made so far (reading it waits for the device)."""
        return int(self._conflicts)

    def backward(self, losses, shared, step, rows=None):
        names = list(losses)
        if len(names) == 1:
            losses[names[0]].backward()
            return
        layout = [(p, (rows or {}).get(p)) for p in shared]
        grads, combined = self._buffers(len(names), layout)
        sparse = set()
        for row, name in zip(grads, names):
            for p in shared:
                p.grad = None
            # Each task's batch has its own graph, so no retain_graph is needed; head grads
            # accumulate untouched because a head only appears in its own task's graph.
            # With .grad unset, autograd stores its result as is (no zero fill, no add): one
            # copy moves it into the row.
            losses[name].backward()
            sparse |= _copy_into(row, layout)
        weights, conflicts = conflict_weights(grads, step_rng(self.seed, step),
                                              project=self.project, balance=self.balance)
        self._conflicts = self._conflicts + conflicts
        torch.mv(grads.T, weights.to(grads.dtype), out=combined)
        _point_grads_at(combined, layout, sparse)

    def _buffers(self, tasks: int, layout) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, P] and [P] views of buffers kept at their largest size (P varies with `rows`)."""
        size = sum(_flat_size(p, r) for p, r in layout)
        full = sum(p.numel() for p, _ in layout)
        first = layout[0][0]
        if self._grads is None or self._grads.shape[0] != tasks or self._grads.shape[1] < size or self._grads.device != first.device:
            self._grads = torch.empty((tasks, full), dtype=first.dtype, device=first.device)
            self._combined = torch.empty(full, dtype=first.dtype, device=first.device)
        return self._grads[:, :size], self._combined[:size]


class BalancedSum(PCGrad):
    """The sum of the task gradients after balancing their norms: PCGrad's per-task gradients
    without its projections."""

    name = "sum"
    project = False

    def __init__(self, seed: int = 0):
        super().__init__(seed, balance=True)


def step_rng(seed: int, step: int) -> random.Random:
    """The random choices of one multitask step (PCGrad's task order, alternate's): drawn from
    (seed, step) alone, so a resumed run makes exactly the choices an uninterrupted one makes."""
    return random.Random(seed * 1_000_003 + step)


def conflict_weights(grads: torch.Tensor, rng: random.Random, *, project: bool = True,
                     balance: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad on a [T, P] matrix of task gradients, as weights w [T] with sum of the projected
    rows = w @ grads, and the number of projections made (a 0-dim tensor). With `balance`, the
    rows are scaled to their mean norm first; with `project` off, none is projected.

    Every projected gradient stays a combination of the original rows, g_i' = C[i] @ grads, so
    each dot product g_i' . g_j = C[i] @ G[:, j] comes from the T x T Gram matrix G: one pass
    over the gradients for all of them, and the projections are T x T arithmetic. The branch on
    a conflict is a torch.where, so nothing waits for the device. Balancing scales the rows by
    s, which is the Gram matrix scaled by s s^T: T x T arithmetic too."""
    tasks = grads.shape[0]
    gram = (grads @ grads.T).double()
    scale = torch.ones(tasks, dtype=gram.dtype, device=grads.device)
    if balance:
        norms = gram.diagonal().clamp(min=0).sqrt()
        # The mean over the tasks with a gradient on the shared parameters this step; a task
        # without one keeps its (zero) row.
        live = norms > 0
        target = norms.sum() / live.sum().clamp(min=1)
        scale = torch.where(live, target / torch.where(live, norms, 1.0), 1.0)
        gram = gram * torch.outer(scale, scale)
    coeffs = torch.eye(tasks, dtype=gram.dtype, device=grads.device)
    conflicts = torch.zeros((), dtype=torch.long, device=grads.device)
    for i in range(tasks if project else 0):
        others = [j for j in range(tasks) if j != i]
        rng.shuffle(others)
        for j in others:
            dot = coeffs[i] @ gram[:, j]
            norm_sq = gram[j, j]
            conflict = (dot < 0) & (norm_sq > 0)
            coeffs[i, j] -= torch.where(conflict, dot / torch.where(norm_sq > 0, norm_sq, 1.0), 0.0)
            conflicts += conflict
    return coeffs.sum(dim=0) * scale, conflicts


def project_conflicting(grads: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad on a [T, P] matrix of task gradients: the sum of the projected rows, and how many
    projections were made (a 0-dim tensor)."""
    weights, conflicts = conflict_weights(grads, rng)
    return weights.to(grads.dtype) @ grads, conflicts


def _flat_size(p: nn.Parameter, rows: torch.Tensor | None) -> int:
    return p.numel() if rows is None else rows.numel() * (p.numel() // p.shape[0])


def _copy_into(row: torch.Tensor, layout) -> set[nn.Parameter]:
    """The parameters' gradients, flattened into `row` (zeros where a parameter has none);
    returns the parameters whose gradient was sparse (an embedding's, of the rows in `rows`)."""
    offset, sparse = 0, set()
    for p, rows in layout:
        n = _flat_size(p, rows)
        part = row[offset : offset + n]
        if p.grad is None:
            part.zero_()
        elif p.grad.is_sparse:
            # Its rows are among `rows` (both sorted): each goes to its place in the row.
            grad = p.grad.coalesce()
            places = torch.searchsorted(rows, grad.indices()[0])
            part.zero_().view(rows.numel(), *p.shape[1:]).index_copy_(0, places, grad.values())
            sparse.add(p)
        elif rows is None:
            part.copy_(p.grad.reshape(-1))
        else:
            torch.index_select(p.grad, 0, rows, out=part.view(rows.numel(), *p.shape[1:]))
        offset += n
    return sparse


def _point_grads_at(vector: torch.Tensor, layout, sparse: set[nn.Parameter]) -> None:
    offset = 0
    for p, rows in layout:
        n = _flat_size(p, rows)
        part = vector[offset : offset + n]
        if rows is None:
            # Views into one buffer: no copy, and the optimizer reads them like any gradient.
            p.grad = part.view_as(p)
        elif p in sparse:
            # `rows` come sorted and unique (torch.unique): already a coalesced sparse tensor.
            p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), part.view(rows.numel(), *p.shape[1:]), p.shape,
                                             is_coalesced=True, check_invariants=False)
        else:
            p.grad = torch.zeros_like(p).index_copy_(0, rows, part.view(rows.numel(), *p.shape[1:]))
        offset += n


def make_combiner(name: str, seed: int, balance: str = "none") -> GradientCombiner:
    if balance not in ("none", "norm"):
        raise ConfigError(f"unknown gradient balance '{balance}': expected none or norm")
    if name == "pcgrad":
        return PCGrad(seed, balance=balance == "norm")
    if name == "sum":
        return BalancedSum(seed) if balance == "norm" else SumGradients()
    if name == "alternate":  # TrainStep steps on one task at a time: nothing to combine
        return SumGradients()
    raise ConfigError(f"unknown gradient surgery '{name}': expected pcgrad, sum or alternate")
