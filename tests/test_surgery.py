"""PCGrad and gradient balancing against hand-computed results, and the combiners' effect on
real parameters."""

import random

import pytest
import torch

from powerbert.errors import ConfigError
from powerbert.model.surgery import BalancedSum, PCGrad, SumGradients, conflict_weights, make_combiner, project_conflicting


def test_no_conflict_is_plain_sum():
    grads = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # dot = 1 > 0
    combined, conflicts = project_conflicting(grads, random.Random(0))
    assert conflicts == 0
    assert torch.allclose(combined, torch.tensor([2.0, 1.0]))


def test_conflicting_pair_matches_hand_computation():
    # g1 = (1, 0), g2 = (-1, 1): g1.g2 = -1 < 0.
    # g1' = g1 - (-1 / |g2|^2) g2 = (1, 0) + 0.5 (-1, 1) = (0.5, 0.5)
    # g2' = g2 - (-1 / |g1|^2) g1 = (-1, 1) + (1, 0)    = (0, 1)
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    combined, conflicts = project_conflicting(grads, random.Random(0))
    assert conflicts == 2
    assert torch.allclose(combined, torch.tensor([0.5, 1.5]))
    # each projected gradient no longer conflicts with the other task's original gradient
    assert torch.dot(torch.tensor([0.5, 0.5]), grads[1]) >= -1e-6


def test_three_tasks_projection_uses_updated_gradient():
    # g1 conflicts with g2 and g3; the dot with g3 is taken after projecting on g2 (Yu et al., Alg. 1).
    g = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    rng = random.Random(3)
    combined, _ = project_conflicting(g, rng)
    # recompute by hand with the same random orders
    rng = random.Random(3)
    expected = []
    for i in range(3):
        others = [j for j in range(3) if j != i]
        rng.shuffle(others)
        gi = g[i].clone()
        for j in others:
            dot = torch.dot(gi, g[j])
            if dot < 0:
                gi = gi - dot / torch.dot(g[j], g[j]) * g[j]
        expected.append(gi)
    assert torch.allclose(combined, torch.stack(expected).sum(0))


def _toy_problem():
    """Shared w in R^2 and one scalar head per task.

    loss_a = w.(1, 0) + 3 h_a  -> shared gradient (1, 0), head gradient 3
    loss_b = w.(-1, 1) + 2 h_b -> shared gradient (-1, 1), head gradient 2 (conflicts with a)
    """
    w = torch.nn.Parameter(torch.zeros(2))
    h_a, h_b = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(1.0))
    losses = {"a": w @ torch.tensor([1.0, 0.0]) + 3 * h_a, "b": w @ torch.tensor([-1.0, 1.0]) + 2 * h_b}
    return w, h_a, h_b, losses


def test_pcgrad_projects_shared_grads_and_keeps_head_grads():
    w, h_a, h_b, losses = _toy_problem()
    PCGrad(seed=0).backward(losses, [w], step=0)
    assert torch.allclose(w.grad, torch.tensor([0.5, 1.5]))  # see test_conflicting_pair_...
    assert h_a.grad.item() == 3.0 and h_b.grad.item() == 2.0


def test_pcgrad_single_task_equals_plain_backward():
    w, h_a, _, losses = _toy_problem()
    PCGrad().backward({"a": losses["a"]}, [w], step=0)
    assert torch.allclose(w.grad, torch.tensor([1.0, 0.0]))


def test_sum_is_sum_of_gradients():
    w, h_a, h_b, losses = _toy_problem()
    SumGradients().backward(losses, [w], step=0)
    assert torch.allclose(w.grad, torch.tensor([0.0, 1.0]))
    assert h_a.grad.item() == 3.0 and h_b.grad.item() == 2.0


def _reference_pcgrad(grads: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Yu et al.'s Algorithm 1 written out directly on the gradient rows."""
    projected = []
    for i in range(grads.shape[0]):
        others = [j for j in range(grads.shape[0]) if j != i]
        rng.shuffle(others)
        gi = grads[i].double().clone()
        for j in others:
            gj = grads[j].double()
            dot = torch.dot(gi, gj)
            if dot < 0:
                gi = gi - dot / torch.dot(gj, gj) * gj
        projected.append(gi)
    return torch.stack(projected).sum(0)


def test_gram_matrix_form_matches_direct_projection_on_random_gradients():
    gen = torch.Generator().manual_seed(0)
    for tasks in (2, 3, 4):
        for seed in range(5):
            grads = torch.randn(tasks, 50, generator=gen)
            grads[1] -= 2 * grads[0]  # make sure some pairs conflict
            combined, _ = project_conflicting(grads, random.Random(seed))
            expected = _reference_pcgrad(grads, random.Random(seed))
            assert torch.allclose(combined.double(), expected, atol=1e-4), (tasks, seed)


def test_pcgrad_on_a_module_matches_per_task_gradients_projected():
    # Three tasks through one shared layer (plus an unused shared parameter), twice in a row,
    # so the kept buffers are reused: the result must equal projecting the plain gradients.
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 3)
    unused = torch.nn.Parameter(torch.zeros(2))
    params = [shared.weight, shared.bias, unused]
    pcgrad = PCGrad(seed=1)
    for step in range(2):
        xs = [torch.randn(5, 4) for _ in range(3)]
        signs = [1.0, -1.0, 0.5]

        def losses():
            return {f"t{k}": s * shared(x).sum() for k, (x, s) in enumerate(zip(xs, signs))}  # noqa: B023 - called in this iteration

        per_task = []
        for loss in losses().values():
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            per_task.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]))
        expected, _ = project_conflicting(torch.stack(per_task), random.Random(1 * 1_000_003 + step))
        for p in params:
            p.grad = None
        pcgrad.backward(losses(), params, step)
        got = torch.cat([p.grad.reshape(-1) for p in params])
        assert torch.allclose(got, expected, atol=1e-5)
    assert pcgrad.conflicts > 0


def test_pcgrad_restricted_to_touched_embedding_rows_matches_full():
    # Rows of a table that no batch touches have a zero gradient for every task: leaving them
    # out of the projections (as TrainStep does on a CPU) must not change the result.
    def run(with_rows: bool):
        torch.manual_seed(0)
        table = torch.nn.Embedding(10, 3)
        layer = torch.nn.Linear(3, 1)
        params = [table.weight, layer.weight, layer.bias]
        ids = [torch.tensor([1, 2, 2]), torch.tensor([2, 5]), torch.tensor([7, 1])]
        signs = [1.0, -1.0, 0.7]
        losses = {f"t{k}": s * layer(table(i)).sum() for k, (i, s) in enumerate(zip(ids, signs))}
        rows = {table.weight: torch.unique(torch.cat(ids))} if with_rows else None
        PCGrad(seed=3).backward(losses, params, step=4, rows=rows)
        return [p.grad.clone() for p in params]

    for full, restricted in zip(run(False), run(True)):
        assert full.shape == restricted.shape
        assert torch.allclose(full, restricted, atol=1e-6)


def _combined(grads: torch.Tensor, **options) -> tuple[torch.Tensor, int]:
    weights, conflicts = conflict_weights(grads, random.Random(0), **options)
    return weights.to(grads.dtype) @ grads, int(conflicts)


def test_balancing_scales_each_gradient_to_the_mean_norm():
    # |g1| = 1, |g2| = 10: both become 5.5 long, so the small task gets as much of the step.
    combined, conflicts = _combined(torch.tensor([[1.0, 0.0], [0.0, 10.0]]), balance=True, project=False)
    assert conflicts == 0
    assert torch.allclose(combined, torch.tensor([5.5, 5.5]))


def test_balanced_pcgrad_projects_the_scaled_gradients():
    # g1 = (1, 0), g2 = (-3, 4): |g2| = 5, mean norm 3, so g1 -> (3, 0), g2 -> (-1.8, 2.4); they
    # conflict (dot -5.4), and PCGrad on the scaled rows is the hand computation:
    # g1' = (3, 0) + 5.4 / 9 (-1.8, 2.4) = (1.92, 1.44); g2' = (-1.8, 2.4) + 5.4 / 9 (3, 0) = (0, 2.4)
    grads = torch.tensor([[1.0, 0.0], [-3.0, 4.0]])
    combined, conflicts = _combined(grads, balance=True)
    assert conflicts == 2
    assert torch.allclose(combined, torch.tensor([1.92, 3.84]), atol=1e-5)
    assert torch.allclose(combined, _reference_pcgrad(grads * torch.tensor([[3.0], [0.6]]), random.Random(0)).float(), atol=1e-5)


def test_balancing_leaves_a_task_without_shared_gradient_alone():
    # The mean is over the tasks that have a gradient: the other keeps its own size.
    combined, _ = _combined(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), balance=True)
    assert torch.allclose(combined, torch.tensor([3.0, 4.0]))


def test_balanced_sum_on_parameters_and_heads():
    # The toy problem's shared gradients (1, 0) and (-1, 1) have norms 1 and sqrt 2; scaled to
    # their mean m = (1 + sqrt 2) / 2 and summed, unprojected. Heads keep their own gradients.
    w, h_a, h_b, losses = _toy_problem()
    combiner = make_combiner("sum", seed=0, balance="norm")
    assert isinstance(combiner, BalancedSum)
    combiner.backward(losses, [w], step=0)
    m = (1 + 2**0.5) / 2
    expected = m * torch.tensor([1.0, 0.0]) + m / 2**0.5 * torch.tensor([-1.0, 1.0])
    assert torch.allclose(w.grad, expected, atol=1e-6)
    assert h_a.grad.item() == 3.0 and h_b.grad.item() == 2.0


def test_make_combiner_choices():
    assert isinstance(make_combiner("sum", 0), SumGradients)
    balanced = make_combiner("pcgrad", 0, "norm")
    assert isinstance(balanced, PCGrad) and balanced.balance and balanced.project
    assert not make_combiner("pcgrad", 0).balance
    with pytest.raises(ConfigError, match="gradient balance 'loss'"):
        make_combiner("pcgrad", 0, "loss")
