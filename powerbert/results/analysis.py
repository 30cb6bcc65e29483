"""Error analysis of one task's predictions: the paper's figures 2 and 3 as plain counts.

For every task kind the result has the same two parts, so the report draws them the same way:
  - "difference": counts of (predicted - gold). Classify and binary count each nonzero
    difference (an SST error of -2 is two classes too negative); regress counts every example
    in fixed bins of width 0.5 over [-5, 5].
  - "confusion": gold x predicted counts (rows gold, columns predicted). Regress rounds both
    to the nearest whole score (half up), so an STS pair is a bucket 0..5.
Everything returned is JSON-safe (lists of ints and floats, string labels).
"""

from __future__ import annotations

import numpy as np

from powerbert.tasks import TASKS

REGRESS_BIN_WIDTH = 0.5


def error_analysis(task: str, predictions: np.ndarray, gold: np.ndarray) -> dict:
    """Counts for the error figures. `predictions` are predicted labels (classify, binary)
    or predicted scores (regress), as `Task.predictions` returns them, not raw logits.

    Rows whose gold is NaN (unlabelled) are left out.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'")
    spec = TASKS[task]
    predictions = np.asarray(predictions, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if predictions.shape != gold.shape or predictions.ndim != 1:
        raise ValueError(
            f"{task}: predictions {predictions.shape} and gold {gold.shape} must be equal 1-D "
            "arrays (pass Task.predictions(outputs), not logits)"
        )
    labelled = ~np.isnan(gold)
    predictions, gold = predictions[labelled], gold[labelled]
    if spec.kind == "regress":
        return _regress(spec, predictions, gold)
    return _labels(spec, predictions.astype(np.int64), gold.astype(np.int64))


def _labels(spec, predicted: np.ndarray, gold: np.ndarray) -> dict:
    classes = spec.num_classes
    for name, values in (("predicted", predicted), ("gold", gold)):
        if len(values) and (values.min() < 0 or values.max() >= classes):
            raise ValueError(f"{spec.name}: {name} labels must lie in 0..{classes - 1}")
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (gold, predicted), 1)
    # the paper's figure 2: how far off the errors are, on the ordinal label scale
    steps = [d for d in range(-(classes - 1), classes) if d != 0]
    diff = predicted - gold
    errors = int((diff != 0).sum())
    return {
        "task": spec.name,
        "kind": spec.kind,
        "n": int(len(gold)),
        "summary": {
            "errors": errors,
            "accuracy": float(1 - errors / len(gold)) if len(gold) else None,
            "mean_error": float(diff[diff != 0].mean()) if errors else None,  # sign = bias
        },
        "difference": {
            "title": "predicted - gold, errors only",
            "labels": [f"{d:+d}" for d in steps],
            "counts": [int((diff == d).sum()) for d in steps],
        },
        "confusion": _confusion_dict([str(c) for c in range(classes)], confusion),
    }


def _regress(spec, predicted: np.ndarray, gold: np.ndarray) -> dict:
    lo, hi = spec.label_min, spec.label_max
    span = hi - lo
    edges = np.arange(-span, span + REGRESS_BIN_WIDTH / 2, REGRESS_BIN_WIDTH)
    diff = np.clip(predicted, lo, hi) - gold
    counts, _ = np.histogram(np.clip(diff, -span, span), bins=edges)
    # np.rint rounds halves to even (2.5 -> 2); a 2.5 similarity belongs with 3 as often as 2,
    # so round halves up, the way people read the scale
    buckets = np.arange(int(np.floor(lo)), int(np.floor(hi)) + 1)

    def bucket(x: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(x + 0.5), buckets[0], buckets[-1]).astype(np.int64) - buckets[0]

    confusion = np.zeros((len(buckets), len(buckets)), dtype=np.int64)
    np.add.at(confusion, (bucket(gold), bucket(np.clip(predicted, lo, hi))), 1)
    n = len(gold)
    return {
        "task": spec.name,
        "kind": spec.kind,
        "n": int(n),
        "summary": {
            "mean_abs_error": float(np.abs(diff).mean()) if n else None,
            "mean_error": float(diff.mean()) if n else None,  # sign = bias
            "same_bucket": float(np.trace(confusion) / n) if n else None,
        },
        "difference": {
            "title": f"predicted - gold, bins of {REGRESS_BIN_WIDTH:g}",
            "labels": [f"{a:+.1f}..{b:+.1f}" for a, b in zip(edges[:-1], edges[1:])],
            "counts": [int(c) for c in counts],
        },
        "confusion": _confusion_dict([str(b) for b in buckets], confusion),
    }


def _confusion_dict(labels: list[str], counts: np.ndarray) -> dict:
    return {
        "rows": "gold",
        "columns": "predicted",
        "labels": labels,
        "counts": [[int(c) for c in row] for row in counts],
    }
