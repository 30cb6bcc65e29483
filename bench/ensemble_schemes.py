"""Which way of combining a task's members pays: ensemble schemes compared on a finished
experiment's stored dev outputs (no model is run again).

    python bench/ensemble_schemes.py --db runs.db --experiment NAME
    python bench/ensemble_schemes.py --db runs.db --experiment LEVER --rest-from BASE [--rest-from BASE2 ...]

For every task, every candidate scheme over the models trained on it, and against it the
single-task model (the "single" scheme) and the best single member. Schemes that look at the
dev gold to fit anything (temperatures, weights, a stacker) are scored out of fold: 5-fold
cross-validation, each fold combined by what was fit on the other four, as the product's
`learned` scheme is. Label-free schemes (equal means of logits or of probabilities) need no CV.

  voting          equal mean of the members' logits (or scores)              the product's default, no CV
  weighted        mean weighted by each member's dev score                   the paper's, in-sample
  learned         simplex weights fit on the task's loss                     the product's, CV
  prob-voting     equal mean of the members' probabilities (scores: as voting)
  calibrated      each member's temperature (classify, binary) or linear map (regress) fit on
                  the other folds, then the equal mean of probabilities (or of mapped scores); CV
  stacked         logistic (classify, binary) or ridge (regress) regression on all members'
                  outputs, fit on the other folds; CV
It prints a table per task and the overall of each scheme, and the gain of each over the
single-task models' ensemble and over the best single model (the all-task model: the one model
scored on every task).

`--rest-from BASE` scores a lever measured on part of the power set: an experiment started with
`--subsets` (say, only the pairs with another setting) has its runs, and every subset it did not
train comes from BASE, a finished experiment on the same tasks and seed. Nothing is retrained, and
the comparison with BASE is paired: the shared members are the same models. Given more than once,
each subset the experiment did not train comes from the first BASE that finished it (a lever
trained as two experiments, the rest from the base).
"""

from __future__ import annotations

import argparse
import sys

import common
import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, logit, softmax

from powerbert.results.ensemble import cv_folds, evaluate_scheme
from powerbert.results.evaluate import experiment_subsets, load_dev_outputs
from powerbert.store import Store
from powerbert.tasks import TASKS, overall_score

FOLDS = 5


def probabilities(kind: str, outputs: np.ndarray) -> np.ndarray:
    return softmax(outputs, axis=-1) if kind == "classify" else expit(outputs)


def as_outputs(kind: str, probs: np.ndarray) -> np.ndarray:
    """Probabilities back to the task's output convention (log-probabilities are valid logits)."""
    eps = 1e-7
    return np.log(np.clip(probs, eps, 1.0)) if kind == "classify" else logit(np.clip(probs, eps, 1 - eps))


def fit_temperature(kind: str, outputs: np.ndarray, gold: np.ndarray) -> float:
    """The temperature T minimising the NLL of outputs / T on these rows."""
    def nll(log_t):
        z = outputs / np.exp(log_t[0])
        if kind == "classify":
            return -log_softmax(z, axis=-1)[np.arange(len(gold)), gold.astype(int)].mean()
        return float(np.mean(np.logaddexp(0.0, z) - gold * z))
    return float(np.exp(minimize(nll, [0.0], method="L-BFGS-B", bounds=[(-3, 3)]).x[0]))


def fit_stacker(kind: str, features: np.ndarray, gold: np.ndarray, l2: float = 1e-2):
    """Logistic (classify: multinomial; binary) or ridge (regress) regression on `features`."""
    x = np.hstack([features, np.ones((len(features), 1))])
    if kind == "regress":
        reg = l2 * len(x) * np.eye(x.shape[1])
        reg[-1, -1] = 0
        w = np.linalg.solve(x.T @ x + reg, x.T @ gold)
        return lambda f: np.hstack([f, np.ones((len(f), 1))]) @ w
    classes = int(gold.max()) + 1 if kind == "classify" else 1

    def loss(flat):
        w = flat.reshape(x.shape[1], classes)
        z = x @ w
        if kind == "classify":
            lp = log_softmax(z, axis=-1)
            value = -lp[np.arange(len(gold)), gold.astype(int)].mean()
            dz = np.exp(lp)
            dz[np.arange(len(gold)), gold.astype(int)] -= 1
        else:
            z = z[:, 0]
            value = float(np.mean(np.logaddexp(0.0, z) - gold * z))
            dz = (expit(z) - gold)[:, None]
        grad = x.T @ dz / len(gold) + 2 * l2 * w
        return value + l2 * float((w * w).sum()), grad.ravel()

    w = minimize(loss, np.zeros(x.shape[1] * classes), jac=True, method="L-BFGS-B").x.reshape(x.shape[1], classes)
    if kind == "classify":
        return lambda f: np.hstack([f, np.ones((len(f), 1))]) @ w
    return lambda f: (np.hstack([f, np.ones((len(f), 1))]) @ w)[:, 0]


def features(outs: dict[str, np.ndarray]) -> np.ndarray:
    return np.hstack([o.reshape(len(o), -1) for o in outs.values()])


def out_of_fold(fit_and_apply, n: int) -> np.ndarray:
    """Each fold's combination by what `fit_and_apply(train_rows, held_rows)` fit on the rest."""
    parts = cv_folds(n, FOLDS, 0)
    result = None
    for held in parts:
        train = np.setdiff1d(np.arange(n), held)
        combined = fit_and_apply(train, held)
        if result is None:
            result = np.zeros((n, *combined.shape[1:]))
        result[held] = combined
    return result


def candidates(task: str, outs: dict[str, np.ndarray], gold: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate's combined dev outputs (out of fold where it fits on gold)."""
    kind = TASKS[task].kind
    n = len(gold)
    mean = lambda arrays: sum(arrays) / len(arrays)  # noqa: E731
    combos = {}
    if kind == "regress":
        combos["prob-voting"] = mean(list(outs.values()))

        def calibrated(train, held):
            mapped = []
            for o in outs.values():
                slope, intercept = np.polyfit(o[train], gold[train], 1)
                mapped.append(slope * o[held] + intercept)
            return mean(mapped)
    else:
        combos["prob-voting"] = as_outputs(kind, mean([probabilities(kind, o) for o in outs.values()]))

        def calibrated(train, held):
            probs = [probabilities(kind, o[held] / fit_temperature(kind, o[train], gold[train])) for o in outs.values()]
            return as_outputs(kind, mean(probs))
    combos["calibrated"] = out_of_fold(calibrated, n)
    x = features(outs)
    combos["stacked"] = out_of_fold(lambda train, held: fit_stacker(kind, x[train], gold[train])(x[held]), n)
    return combos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--rest-from", metavar="BASE", action="append", default=[],
                        help="take the subsets EXPERIMENT did not train from BASE (repeatable: from the first BASE that finished each)")
    args = parser.parse_args()

    with Store(args.db, readonly=True) as store:
        experiment = store.get_experiment(args.experiment)
        dev, expected = load_dev_outputs(store, experiment)
        borrowed: list[str] = []  # "subset, subset from BASE" for the header
        for name in args.rest_from:
            base = store.get_experiment(name)
            if base.tasks != experiment.tasks:
                sys.exit(f"--rest-from {name}: its tasks ({', '.join(base.tasks)}) are not "
                         f"{args.experiment}'s ({', '.join(experiment.tasks)})")
            base_dev, _ = load_dev_outputs(store, base)
            taken = [s for s in base_dev if s not in expected and s not in dev]
            dev.update({s: base_dev[s] for s in taken})
            if taken:
                borrowed.append(f"{', '.join(taken)} from {name}")
        if args.rest_from:
            expected = experiment_subsets(experiment, dev)  # power-set order, borrowed ones included
    tasks = experiment.tasks
    common.header(f"ensemble schemes on {args.experiment}: {len(dev)} models, tasks {', '.join(tasks)}"
                  + (f"; {'; '.join(borrowed)}" if borrowed else ""))
    table: dict[str, dict[str, float]] = {model: {} for model in expected if model in dev}  # power-set order
    for task in tasks:
        members = {m: by_task[task] for m, by_task in dev.items() if task in by_task}
        gold = next(iter(members.values())).gold
        outs = {m: o.outputs for m, o in members.items()}
        for model, out in outs.items():
            table.setdefault(model, {})[task] = TASKS[task].score(out, gold)
        for scheme in ("voting", "weighted", "single", "learned"):
            table.setdefault(scheme, {})[task] = evaluate_scheme(scheme, task, members).score
        for scheme, combined in candidates(task, outs, gold).items():
            table.setdefault(scheme, {})[task] = TASKS[task].score(combined, gold)
    overall = {name: overall_score(scores) if len(scores) == len(tasks) else None for name, scores in table.items()}
    print(f"   {'model / scheme':16s} " + " ".join(f"{t:>8s}" for t in tasks) + "   overall")
    for name, scores in table.items():
        cells = " ".join(f"{scores[t]:8.4f}" if t in scores else f"{'-':>8s}" for t in tasks)
        print(f"   {name:16s} {cells}   {overall[name]:.4f}" if overall[name] is not None else f"   {name:16s} {cells}")
    single = overall["single"]
    best_model = max(overall[m] for m in dev if overall[m] is not None) if any(overall[m] is not None for m in dev) else None
    print(f"   single-task models' ensemble {single:.4f}; best single model {best_model if best_model is None else round(best_model, 4)}")
    for name in [n for n in table if n not in dev and n != "single"]:
        gains = f"{(overall[name] - single) * 100:+.2f} points over single"
        if best_model is not None:
            gains += f", {(overall[name] - best_model) * 100:+.2f} over the best single model"
        print(f"   {name:16s} {gains}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
