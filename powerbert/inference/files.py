"""Prediction files: the plain TSV (`id<TAB>prediction`) and the CS224N submission format,
written atomically. A declared task with label names is answered in them (`billing`), a
built-in task by its label number (sst 0..4), as the course files are."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from powerbert.errors import InputError
from powerbert.model.checkpoint import atomic_write_bytes
from powerbert.tasks import TASKS

# The CS224N starter code's submission files: `id \t HEADER ` then `ID , PREDICTION ` per row
# (the misspelt "Similiarity" is the course's).
CS224N_HEADERS = {
    "sst": "Predicted_Sentiment",
    "para": "Predicted_Is_Paraphrase",
    "sts": "Predicted_Similiarity",
    "cfimdb": "Predictions",
}
FORMATS = ("tsv", "cs224n")


def format_predictions(task: str, rows: Sequence[tuple[str, int | float]], fmt: str = "tsv") -> str:
    """The text of a predictions file: "tsv" (header `id<TAB>prediction`) or "cs224n" (the
    course's submission format: header `id \\t Predicted_Sentiment ` and rows `ID , VALUE `)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}': expected one of {', '.join(FORMATS)}")
    spec = TASKS[task]
    if fmt == "cs224n" and task not in CS224N_HEADERS:
        raise InputError(f"--format cs224n is the course's format for {', '.join(CS224N_HEADERS)}: expected tsv for task {task}")
    if spec.kind == "regress":
        show = lambda v: f"{v:.4f}"  # noqa: E731
    elif not spec.builtin and spec.label_names:
        show = lambda v: spec.label_name(int(v))  # noqa: E731 - a declared task's own labels, as its files write them
    else:
        show = str
    if fmt == "tsv":
        lines = ["id\tprediction", *(f"{i}\t{show(v)}" for i, v in rows)]
    else:
        lines = [f"id \t {CS224N_HEADERS[task]} ", *(f"{i} , {show(v)} " for i, v in rows)]
    return "\n".join(lines) + "\n"


def write_predictions(path: Path | str, task: str, rows: Sequence[tuple[str, int | float]], fmt: str = "tsv") -> Path:
    """Write a predictions file atomically (a temporary file, then a rename)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{path}: is a directory: expected a file name for the predictions")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    atomic_write_bytes(path, format_predictions(task, rows, fmt).encode("utf-8"))
    return path
