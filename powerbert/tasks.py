"""The task registry: what each task's files look like, what its labels mean, how it is scored.

Adding a task is one `Task(...)` entry in `TASKS`. Everything else (readers, heads, metrics,
ensembles, the report) reads these fields instead of naming tasks.

Model outputs per task, as stored for the dev set and combined by the ensembles:
  - kind "classify": logits, float array [N, num_classes]; prediction = argmax.
  - kind "binary":   one logit per example, float array [N]; prediction = logit > 0.
  - kind "regress":  the predicted score itself, float array [N]; prediction = the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from powerbert.errors import ConfigError

TaskKind = Literal["classify", "binary", "regress"]


@dataclass(frozen=True)
class Task:
    name: str  # short name used on the command line and in runs.db
    title: str  # human name for tables
    file_stem: str  # files are f"{file_stem}-{split}.csv"
    text_columns: tuple[str, ...]  # one column (single sentence) or two (a pair)
    label_column: str
    kind: TaskKind
    num_classes: int  # classify: number of classes; binary: 2; regress: 0
    label_min: float  # inclusive range a label must lie in
    label_max: float
    metric: Literal["accuracy", "pearson"]
    optional: bool = False  # not part of the default task set
    label_names: tuple[str, ...] = ()  # classify and binary: what each label means, in label order

    def label_name(self, label: int) -> str:
        """What a predicted class (or binary answer) means: 'very positive', 'paraphrase'."""
        return self.label_names[label] if 0 <= label < len(self.label_names) else str(label)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def columns(self) -> tuple[str, ...]:
        """Named columns of a labelled file, after the unnamed row-number column."""
        return ("id", *self.text_columns, self.label_column)

    def file_name(self, split: str) -> str:
        return f"{self.file_stem}-{split}.csv"

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Turn stored model outputs (see the module docstring) into predicted labels."""
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
    predicted = np.asarray(predicted, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if len(gold) == 0:
        return float("nan")
    if metric == "accuracy":
        return float((predicted == gold).mean())
    if np.std(predicted) == 0 or np.std(gold) == 0:
        return 0.0  # Pearson is undefined for a constant; call it no correlation
    # np.corrcoef rather than scipy's pearsonr: same value, and scipy.stats costs ~1.5 s to import.
    return float(np.corrcoef(predicted, gold)[0, 1])


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            name="sst",
            title="SST sentiment",
            file_stem="ids-sst",
            text_columns=("sentence",),
            label_column="sentiment",
            kind="classify",
            num_classes=5,
            label_min=0,
            label_max=4,
            metric="accuracy",
            label_names=("very negative", "negative", "neutral", "positive", "very positive"),
        ),
        Task(
            name="para",
            title="Quora paraphrase",
            file_stem="quora",
            text_columns=("sentence1", "sentence2"),
            label_column="is_duplicate",
            kind="binary",
            num_classes=2,
            label_min=0,
            label_max=1,
            metric="accuracy",
            label_names=("different", "paraphrase"),
        ),
        Task(
            name="sts",
            title="STS similarity",
            file_stem="sts",
            text_columns=("sentence1", "sentence2"),
            label_column="similarity",
            kind="regress",
            num_classes=0,
            label_min=0.0,
            label_max=5.0,
            metric="pearson",
        ),
        Task(
            name="cfimdb",
            title="CFIMDB sentiment",
            file_stem="ids-cfimdb",
            text_columns=("sentence",),
            label_column="sentiment",
            kind="classify",
            num_classes=2,
            label_min=0,
            label_max=1,
            metric="accuracy",
            optional=True,
            label_names=("negative", "positive"),
        ),
    ]
}

DEFAULT_TASKS: tuple[str, ...] = tuple(name for name, t in TASKS.items() if not t.optional)


def parse_tasks(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse "sst,para" (or a list) into registry order; raise ConfigError naming a bad name."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"no tasks given: expected a comma-separated list of {', '.join(TASKS)}")
    for n in names:
        if n not in TASKS:
            raise ConfigError(f"unknown task '{n}': expected one of {', '.join(TASKS)}")
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


def overall_score(scores: dict[str, float]) -> float | None:
    """The course's overall score over the tasks present: Pearson r is mapped to (r + 1) / 2.

    With sst, para and sts this is (sst_acc + para_acc + (sts_r + 1) / 2) / 3.
    """
    parts = []
    for name, value in scores.items():
        if value is None or name not in TASKS or np.isnan(value):
            continue
        parts.append((value + 1) / 2 if TASKS[name].metric == "pearson" else value)
    return float(np.mean(parts)) if parts else None
