"""Fitting ensemble weights on dev outputs: 'learned' (weights on the simplex minimising the
task's loss, with a slight ridge toward equal weights) and 'greedy' (Caruana's forward
selection with replacement). Their scores are always cross-validated by ensemble.py."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, softmax

from powerbert.tasks import TASKS

GREEDY_ROUNDS = 20  # Caruana's bag size; past ~20 picks the weights barely move


RIDGE = 1e-4  # slight pull toward equal weights: keeps the optimum unique and tiny folds sane


def loss_and_grad(task: str, stack: np.ndarray, gold: np.ndarray, theta: np.ndarray):
    """Smooth surrogate of the task metric at weights softmax(theta), and its theta gradient.

    classify: mean cross-entropy; binary: mean BCE; regress: negative Pearson (the metric
    itself, which is smooth; MSE would also reward calibration the metric ignores).
    `stack` is [M, N, ...]: the members' outputs on the fitting rows.
    """
    w = softmax(theta)
    z = np.tensordot(w, stack, axes=1)
    n = len(gold)
    kind = TASKS[task].kind
    if kind == "classify":
        logp = log_softmax(z, axis=-1)
        labels = gold.astype(np.int64)
        loss = -logp[np.arange(n), labels].mean()
        dz = np.exp(logp)
        dz[np.arange(n), labels] -= 1.0
        dz /= n
    elif kind == "binary":
        # log(1+e^z) - y z, written stably
        loss = float(np.mean(np.logaddexp(0.0, z) - gold * z))
        dz = (expit(z) - gold) / n
    else:
        zc, yc = z - z.mean(), gold - gold.mean()
        szz, syy = float(zc @ zc), float(yc @ yc)
        if szz <= 0 or syy <= 0:
            return 0.0, np.zeros_like(theta)
        r = float(zc @ yc) / np.sqrt(szz * syy)
        loss = -r
        dz = -(yc / np.sqrt(szz * syy) - r * zc / szz)
    dw = np.array([float(np.sum(dz * s)) for s in stack])
    dtheta = w * (dw - w @ dw)  # chain rule through the softmax
    return float(loss) + RIDGE * float(theta @ theta), dtheta + 2 * RIDGE * theta


def fit_learned(task: str, member_outputs: dict[str, np.ndarray], gold: np.ndarray) -> dict[str, float]:
    """Simplex weights minimising the task's smooth loss on exactly these rows."""
    names = list(member_outputs)
    if len(names) == 1:
        return {names[0]: 1.0}
    stack = np.stack([np.asarray(member_outputs[m], dtype=np.float64) for m in names])
    gold = np.asarray(gold, dtype=np.float64)
    result = minimize(
        lambda t: loss_and_grad(task, stack, gold, t),
        np.zeros(len(names)),  # start from voting, so a flat loss leaves equal weights
        jac=True,
        method="L-BFGS-B",
    )
    return dict(zip(names, (float(w) for w in softmax(result.x))))


def fit_greedy(task: str, member_outputs: dict[str, np.ndarray], gold: np.ndarray) -> dict[str, float]:
    """Caruana's forward selection with replacement by the task metric; weights = pick counts.

    Keeps the bag prefix with the best score on these rows; ties go to the earlier member.
    """
    spec = TASKS[task]
    names = list(member_outputs)
    counts = dict.fromkeys(names, 0)
    summed = np.zeros_like(np.asarray(member_outputs[names[0]], dtype=np.float64))
    best_score, best_counts = -np.inf, dict(counts)
    for size in range(1, GREEDY_ROUNDS + 1):
        trials = {m: spec.score((summed + member_outputs[m]) / size, gold) for m in names}
        pick = max(names, key=trials.__getitem__)
        summed = summed + member_outputs[pick]
        counts[pick] += 1
        if trials[pick] > best_score:
            best_score, best_counts = trials[pick], dict(counts)
    total = sum(best_counts.values())
    return {m: c / total for m, c in best_counts.items()}


FITTERS = {"learned": fit_learned, "greedy": fit_greedy}
