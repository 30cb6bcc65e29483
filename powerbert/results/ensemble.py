"""Ensembles over the models trained on a task: voting, weighted, single, learned (and greedy).

Pure computation on stored dev outputs (`TaskOutputs`), no torch and no SQLite, so the report
imports fast. Every scheme reduces to weights per member, and `combine` turns weights plus
member outputs into ensemble outputs, on dev here and on new text at prediction time.

Honesty: `learned` and `greedy` choose their weights by looking at dev gold, so their dev score
comes from k-fold cross-validation: each fold's outputs are combined with weights fit on the
other folds only. The weights used for prediction are then fit on the whole dev set. `weighted`
uses each member's dev score (the paper's scheme); with 4 near-equal weights its in-sample
optimism is small, and `details` says so.

`greedy` (Caruana et al. 2004) can be evaluated by name but is not in `SCHEMES`: on simulated
members (correlated errors, one weak, miscalibrated or pure-noise member) its held-out score was
at best level with `learned`, usually 0.1-0.5 points below, and below `voting` when members were
alike; its in-sample score overstated it by about a point of accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from powerbert.outputs import TaskOutputs
from powerbert.results.fitting import FITTERS
from powerbert.tasks import TASKS, overall_score

SCHEMES: tuple[str, ...] = ("voting", "weighted", "single", "learned")  # order shown in tables
CV_SCHEMES: tuple[str, ...] = ("learned", "greedy")  # scored by cross-validation


@dataclass
class EnsembleOutcome:
    scheme: str
    task: str
    score: float | None  # dev score (CV score for learned/greedy); None if the scheme can't run
    weights: dict[str, float]  # member -> weight used for prediction
    members: list[str]  # members combined, in input order
    missing: list[str]  # expected members absent or refused
    outputs: np.ndarray | None  # combined dev outputs (out-of-fold for CV schemes)
    details: dict = field(default_factory=dict)  # JSON-safe extras: folds, per-fold weights, notes
    gold: np.ndarray | None = None  # dev gold aligned with `outputs`, for the error analysis


def combine(task: str, member_outputs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted mean of the members' outputs (logits, or scores for regress).

    Members absent from `weights` or weighted 0 are ignored; weights are renormalised, so
    `{'a': 2, 'b': 2}` is the equal mean. Raises ValueError when no member has positive weight.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'")
    used = {m: float(w) for m, w in weights.items() if w > 0}
    if not used:
        raise ValueError(f"{task}: no member has a positive weight")
    absent = [m for m in used if m not in member_outputs]
    if absent:
        raise ValueError(f"{task}: weights name {', '.join(absent)} but no outputs were given")
    total = sum(used.values())
    return sum(w / total * np.asarray(member_outputs[m], dtype=np.float64) for m, w in used.items())


def cv_folds(n: int, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """k deterministic, shuffled, near-equal folds of range(n) (k is capped at n)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(order, min(k, n))]


def _check_aligned(task: str, members: dict[str, TaskOutputs]) -> None:
    ref_name, ref = next(iter(members.items()))
    for name, out in members.items():
        if out.task != task:
            raise ValueError(f"member '{name}' holds {out.task} outputs, expected {task}")
        if list(out.ids) != list(ref.ids):
            raise ValueError(f"{task}: member '{name}' has different ids from '{ref_name}'")
        if not np.array_equal(out.gold, ref.gold, equal_nan=True):
            raise ValueError(f"{task}: member '{name}' has different gold labels from '{ref_name}'")
        if out.outputs.shape != ref.outputs.shape:
            raise ValueError(
                f"{task}: member '{name}' outputs have shape {out.outputs.shape}, "
                f"'{ref_name}' has {ref.outputs.shape}"
            )
    if np.isnan(ref.gold).any():
        raise ValueError(f"{task}: dev gold has missing labels; ensembles need a labelled split")


def _cross_validate(
    scheme: str, task: str, outs: dict[str, np.ndarray], gold: np.ndarray, folds: int, seed: int
):
    """Out-of-fold outputs: each fold combined with weights fit on the other folds only."""
    fit = FITTERS[scheme]
    oof = np.zeros_like(next(iter(outs.values())))
    fold_weights, fold_scores = [], []
    parts = cv_folds(len(gold), folds, seed)
    for held in parts:
        train = np.setdiff1d(np.arange(len(gold)), held)
        w = fit(task, {m: o[train] for m, o in outs.items()}, gold[train])
        oof[held] = combine(task, {m: o[held] for m, o in outs.items()}, w)
        fold_weights.append(w)
        fold_scores.append(TASKS[task].score(oof[held], gold[held]))
    details = {
        "cv": {"folds": len(parts), "seed": seed, "sizes": [len(p) for p in parts]},
        "fold_weights": fold_weights,
        "fold_scores": fold_scores,
    }
    return oof, details


def evaluate_scheme(
    scheme: str,
    task: str,
    members: dict[str, TaskOutputs],
    *,
    expected: list[str] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> EnsembleOutcome:
    """One scheme on one task over `members` (model name -> its dev outputs for `task`).

    Raises ValueError when members disagree on ids, gold or output shape. Members whose
    outputs are not all finite are refused (named in `missing`, reason in details['refused']).
    """
    if scheme not in SCHEMES + CV_SCHEMES:
        raise ValueError(f"unknown scheme '{scheme}': expected one of {', '.join(SCHEMES + CV_SCHEMES)}")
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'")
    if members:
        _check_aligned(task, members)
    refused = {m: "non-finite outputs" for m, o in members.items() if not np.isfinite(o.outputs).all()}
    usable = {m: o for m, o in members.items() if m not in refused}
    missing = [m for m in (expected or []) if m not in usable] + [
        m for m in refused if m not in (expected or [])
    ]
    details: dict = {"refused": refused} if refused else {}

    def outcome(score, weights, outputs, gold=None) -> EnsembleOutcome:
        return EnsembleOutcome(
            scheme, task, score, weights, list(usable), missing, outputs, details, gold
        )

    if not usable:
        details["note"] = "no usable members"
        return outcome(None, {}, None)
    gold = next(iter(usable.values())).gold
    outs = {m: o.outputs for m, o in usable.items()}
    spec = TASKS[task]

    if scheme == "single":
        if task not in usable:
            details["note"] = f"single-task model '{task}' missing"
            return outcome(None, {}, None)
        weights = {task: 1.0}
    elif scheme == "voting":
        weights = dict.fromkeys(usable, 1.0 / len(usable))
    elif scheme == "weighted":
        # Pearson may be negative: a member worse than chance gets no vote rather than a flip
        scores = {m: spec.score(o, gold) for m, o in outs.items()}
        clipped = {m: max(s, 0.0) if np.isfinite(s) else 0.0 for m, s in scores.items()}
        total = sum(clipped.values())
        if total > 0:
            weights = {m: s / total for m, s in clipped.items()}
        else:
            weights = dict.fromkeys(usable, 1.0 / len(usable))
            details["note"] = "every member scored <= 0: equal weights"
        details["member_scores"] = scores
        details["in_sample"] = "weights come from the same dev scores they are judged on"
    else:
        if len(gold) < 2:
            details["note"] = "too few dev examples to cross-validate"
            return outcome(None, {}, None)
        oof, cv = _cross_validate(scheme, task, outs, gold, folds, seed)
        details.update(cv)
        weights = FITTERS[scheme](task, outs, gold)
        # kept so anyone can see the optimism CV removes; never reported as the score
        details["in_sample_score"] = spec.score(combine(task, outs, weights), gold)
        return outcome(spec.score(oof, gold), weights, oof, gold)

    combined = combine(task, outs, weights)
    return outcome(spec.score(combined, gold), weights, combined, gold)


def evaluate_all(
    dev: dict[str, dict[str, TaskOutputs]],
    tasks: tuple[str, ...],
    *,
    expected_models: list[str] | None = None,
    schemes: tuple[str, ...] = SCHEMES,
    folds: int = 5,
    seed: int = 0,
) -> list[EnsembleOutcome]:
    """Every scheme on every task; members of a task are the models whose dev dict has it.

    `expected_models` is every subset of the experiment, so failed runs are named as missing
    for each task their subset covers.
    """
    outcomes = []
    for task in tasks:
        members = {model: by_task[task] for model, by_task in dev.items() if task in by_task}
        expected = [m for m in (expected_models or []) if task in m.split("+")]
        for scheme in schemes:
            outcomes.append(
                evaluate_scheme(scheme, task, members, expected=expected, folds=folds, seed=seed)
            )
    return outcomes


def scheme_weights(outcomes: list[EnsembleOutcome]) -> dict[tuple[str, str], dict[str, float]]:
    """(scheme, task) -> member weights: what prediction on new text needs (`combine`)."""
    return {(o.scheme, o.task): dict(o.weights) for o in outcomes if o.weights}


def outcome_record(outcome: EnsembleOutcome) -> dict:
    """What runs.db keeps of an outcome (`EnsembleResult.details`): JSON-safe, no arrays."""
    return json_safe(
        {"weights": outcome.weights, "members": outcome.members, "missing": outcome.missing,
         **outcome.details}
    )


def json_safe(value):
    """Plain Python for json.dumps(allow_nan=False): numpy scalars unwrapped, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def scheme_overall(outcomes: list[EnsembleOutcome]) -> dict[str, float | None]:
    """Scheme -> overall score over its tasks; None if any task lacks a score.

    An overall over fewer tasks would sit in the same column as full ones and mislead.
    """
    by_scheme: dict[str, dict[str, float | None]] = {}
    for o in outcomes:
        by_scheme.setdefault(o.scheme, {})[o.task] = o.score
    return {
        s: None if any(v is None for v in scores.values()) else overall_score(scores)
        for s, scores in by_scheme.items()
    }
