"""PCGrad against hand-computed projections, and the combiner's effect on real parameters."""

import random

import torch

from powerbert.surgery import PCGrad, SumGradients, project_conflicting


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
