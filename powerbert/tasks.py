"""The task registry: what each task's files look like, what its labels mean, how it is scored.

The registry is data. The built-in CS224N tasks (sst, para, sts and the optional cfimdb) are
declared in tasks.toml beside this file, the way a user's task file declares theirs
(powerbert.data.taskfile); `register` adds declared tasks, and an experiment stores the
declarations of the tasks it trains, so every process that reads the experiment from runs.db
knows them (`register_declarations`). Everything else (readers, heads, metrics, ensembles, the
report) reads these fields instead of naming tasks.

numpy is imported inside the functions that score, not at the top: this module is imported by
every command, and `powerbert stop` should not pay numpy's import for scores it never computes.

Model outputs per task, as stored for the dev set and combined by the ensembles:
  - kind "classify": logits, float array [N, num_classes]; prediction = argmax.
  - kind "binary":   one logit per example, float array [N]; prediction = logit > 0.
  - kind "regress":  the predicted score itself, float array [N]; prediction = the score.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from powerbert.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TaskKind = Literal["classify", "binary", "regress"]
KINDS = ("classify", "binary", "regress")
METRICS = ("accuracy", "f1", "pearson", "spearman")
CORRELATIONS = ("pearson", "spearman")  # scores in -1..1, mapped to (r + 1) / 2 in the overall


@dataclass(frozen=True)
class Task:
    name: str  # short name used on the command line and in runs.db
    title: str  # human name for tables
    text_columns: tuple[str, ...]  # one column (single sentence) or two (a pair)
    label_column: str
    kind: TaskKind
    num_classes: int  # classify: number of classes; binary: 2; regress: 0
    label_min: float  # inclusive range a label must lie in (regress: the scale predictions clip to)
    label_max: float
    metric: Literal["accuracy", "f1", "pearson", "spearman"]
    optional: bool = False  # not part of the default task set
    label_names: tuple[str, ...] = ()  # classify and binary: what each label means, in label order
    format: str = "cs224n"  # cs224n | csv | tsv | jsonl
    files: tuple[tuple[str, str], ...] = ()  # split -> path: built-ins relative to --data-dir (with {split}), declared absolute
    id_column: str | None = "id"  # None: rows are numbered
    builtin: bool = False
    source: str | None = None  # the task file that declared it
    declaration: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def columns(self) -> tuple[str, ...]:
        """Named columns of a labelled file (CS224N files: after the unnamed row-number column)."""
        return (*((self.id_column,) if self.id_column else ()), *self.text_columns, self.label_column)

    def file_name(self, split: str) -> str:
        """A built-in task's file name for a split (train, dev, test-student) in --data-dir."""
        pattern = dict(self.files).get("pattern", "")
        return pattern.replace("{split}", split)

    def path(self, split: str) -> str | None:
        """A declared task's file for a split (train, dev, test), or None."""
        return dict(self.files).get(split)

    def label_name(self, label: int) -> str:
        """What a predicted class (or binary answer) means: 'very positive', 'paraphrase'."""
        return self.label_names[label] if 0 <= label < len(self.label_names) else str(label)

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Turn stored model outputs (see the module docstring) into predicted labels."""
        import numpy as np

        outputs = np.asarray(outputs, dtype=np.float64)
        if self.kind == "classify":
            return outputs.argmax(axis=-1)
        if self.kind == "binary":
            return (outputs > 0).astype(np.int64)
        return np.clip(outputs, self.label_min, self.label_max)

    def score(self, outputs: np.ndarray, gold: np.ndarray) -> float:
        """The task's metric for these outputs against gold labels."""
        return score_predictions(self.metric, self.predictions(outputs), gold)


def score_predictions(metric: str, predicted: np.ndarray, gold: np.ndarray) -> float:
    import numpy as np

    predicted = np.asarray(predicted, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if len(gold) == 0:
        return float("nan")
    if metric == "accuracy":
        return float((predicted == gold).mean())
    if metric == "f1":
        return macro_f1(predicted, gold)
    if np.std(predicted) == 0 or np.std(gold) == 0:
        return 0.0  # a correlation is undefined for a constant; call it no correlation
    # np.corrcoef rather than scipy.stats' pearsonr and spearmanr: the same values (the tests
    # check against scipy), while scipy.stats costs ~1.5 s to import and this module stays
    # light for every command. Spearman's rho is Pearson's r of the average ranks.
    if metric == "spearman":
        predicted, gold = average_ranks(predicted), average_ranks(gold)
    return float(np.corrcoef(predicted, gold)[0, 1])


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..N-1 of `x`, ties sharing their average rank (what Spearman's rho ranks by)."""
    import numpy as np

    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def macro_f1(predicted: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class for 0/1 labels; the mean F1 over the classes present otherwise."""
    import numpy as np

    classes = np.unique(gold)
    classes = np.array([1.0]) if set(classes) <= {0.0, 1.0} and set(np.unique(predicted)) <= {0.0, 1.0} else np.unique(np.concatenate([gold, predicted]))
    scores = []
    for c in classes:
        tp = float(np.sum((predicted == c) & (gold == c)))
        fp = float(np.sum((predicted == c) & (gold != c)))
        fn = float(np.sum((predicted != c) & (gold == c)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def declaration_to_task(d: dict, *, builtin: bool = False) -> Task:
    """A Task from its declaration (the checked form of a task file's table, as stored with an
    experiment): the one way tasks are built, built-in or declared."""
    kind = d["kind"]
    labels = tuple(d.get("labels") or ())
    if kind == "classify":
        num_classes = int(d.get("num_classes") or len(labels))
        lo, hi = 0.0, float(num_classes - 1)
    elif kind == "binary":
        num_classes, lo, hi = 2, 0.0, 1.0
    else:
        num_classes = 0
        lo, hi = (float(x) for x in d.get("range") or (-math.inf, math.inf))
    files = d.get("files") or {}
    files = (("pattern", files),) if isinstance(files, str) else tuple(sorted(files.items()))
    return Task(
        name=d["name"], title=d.get("title") or d["name"], text_columns=tuple(d["text"]), label_column=d["label"],
        kind=kind, num_classes=num_classes, label_min=lo, label_max=hi, metric=d["metric"],
        optional=bool(d.get("optional", False)), label_names=labels, format=d.get("format", "cs224n"), files=files,
        id_column=d.get("id", "id" if d.get("format", "cs224n") == "cs224n" else None), builtin=builtin,
        source=d.get("source"), declaration=dict(d),
    )


def _builtin_tasks() -> dict[str, Task]:
    with open(Path(__file__).with_name("tasks.toml"), "rb") as f:
        tables = tomllib.load(f)["tasks"]
    return {name: declaration_to_task({"name": name, **table}, builtin=True) for name, table in tables.items()}


TASKS: dict[str, Task] = _builtin_tasks()

DEFAULT_TASKS: tuple[str, ...] = tuple(name for name, t in TASKS.items() if not t.optional)


def register(task: Task, *, replace: bool = False) -> Task:
    """Add a declared task to the registry (after the built-ins, in declaration order). The same
    declaration again is a no-op; a different task under a taken name is refused, unless
    `replace` (a task file read now wins over a declaration read earlier from runs.db) and the
    name is not a built-in's."""
    known = TASKS.get(task.name)
    if known is not None:
        if known.declaration == task.declaration:
            return known
        if replace and not known.builtin:
            TASKS[task.name] = task
            return task
        where = f" ({known.source})" if known.source else " (a built-in task)" if known.builtin else ""
        raise ConfigError(f"task {task.name} is declared twice, differently{where}: expected one task per name")
    TASKS[task.name] = task
    return task


def register_declarations(declarations: dict | None) -> None:
    """Register the declared tasks an experiment stored (its config's `declared_tasks`).

    A stored declaration that clashes with one already registered in this process (two
    experiments in one runs.db declaring the same name differently) keeps the first: the
    experiment's rows still read, and training and prediction re-register from their own."""
    for name, d in (declarations or {}).items():
        try:
            register(declaration_to_task({"name": name, **d}))
        except ConfigError:
            pass


def declarations_of(tasks) -> dict[str, dict]:
    """What an experiment stores so that other processes know its declared tasks."""
    return {n: {k: v for k, v in TASKS[n].declaration.items() if k != "name"} for n in tasks if not TASKS[n].builtin}


def parse_tasks(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse "sst,para" (or a list) into registry order; raise ConfigError naming a bad name."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"no tasks given: expected a comma-separated list of {', '.join(TASKS)}")
    for n in names:
        if n not in TASKS:
            raise ConfigError(f"unknown task '{n}': expected one of {', '.join(TASKS)} (or a task declared in a task file: --tasks-file)")
    return tuple(n for n in TASKS if n in names)


def tasks_for_input(tasks: tuple[str, ...] | list[str], pair: bool) -> list[str]:
    """The tasks among `tasks` that can be asked about one sentence (pair=False) or a pair."""
    return [t for t in tasks if TASKS[t].is_pair == pair]


def subset_name(tasks: tuple[str, ...] | list[str]) -> str:
    """The canonical name of a subset, in registry order: ('sts','sst') -> 'sst+sts'."""
    return "+".join(n for n in TASKS if n in tasks)


def power_set(tasks: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty subset, singles first, then pairs, ..., the full set last."""
    ordered = [n for n in TASKS if n in tasks]
    subsets = [
        tuple(n for i, n in enumerate(ordered) if mask >> i & 1)
        for mask in range(1, 2 ** len(ordered))
    ]
    return sorted(subsets, key=lambda s: (len(s), [ordered.index(n) for n in s]))


def unit_score(task: str, value: float) -> float:
    """A task's score on 0..1: accuracy and F1 as they are, a correlation r as (r + 1) / 2."""
    return (value + 1) / 2 if TASKS[task].metric in CORRELATIONS else value


def overall_score(scores: dict[str, float]) -> float | None:
    """The mean over the tasks present of each task's score on 0..1 (unit_score).

    With sst, para and sts this is the course's (sst_acc + para_acc + (sts_r + 1) / 2) / 3.
    """
    parts = [unit_score(name, value) for name, value in scores.items()
             if value is not None and name in TASKS and not math.isnan(value)]
    return sum(parts) / len(parts) if parts else None
