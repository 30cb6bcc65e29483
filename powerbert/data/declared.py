"""Reading the data files of a task declared in a task file: CSV, TSV or JSON Lines, with the
task's own column names.

CSV and TSV files have a header row that names the columns (any order, extra columns ignored);
a JSON Lines file holds one object per line. The rows get the same checks as the CS224N reader's
(powerbert.data.files), each problem one line `FILE:LINE: column NAME: value 'X': expected ...`:
a missing column, an empty text, a label outside the declared set (classify), not 0/1 (binary)
or not a number (regress), a repeated id. With `skip_bad_rows` bad rows are left out and
reported; file-level problems (missing file, no header, a column the file lacks) never are.
A file without the label column is unlabelled (a test file to predict).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from powerbert.data.rows import Example, RowError, bad_bytes, column_list, show_value
from powerbert.errors import DataError
from powerbert.tasks import Task


def read_declared_rows(task: Task, path: Path, text: str) -> tuple[list[tuple[int, dict]], bool]:
    """Every row of the file as (line, column -> value), and whether it is labelled."""
    if task.format == "jsonl":
        return _jsonl_rows(task, path, text)
    delimiter = "\t" if task.format == "tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
        while not any(c.strip() for c in header):
            header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: file has no header row: expected one naming the columns {column_list(task.columns)}") from None
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: cannot parse the header ({e})") from None
    header_line = reader.line_num
    names = [c.strip() for c in header]
    labelled = _check_columns(task, path, header_line, set(names))
    rows = []
    end = header_line
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}:{start}: cannot parse the row ({e}); is a quote here never closed?") from None
        end = reader.line_num
        if not any(v.strip() for v in row):
            continue  # a blank line is not a row
        if len(row) != len(names):
            rows.append((start, RowError(f"row has {len(row)} fields: expected {len(names)} ({', '.join(names)})")))
            continue
        rows.append((start, dict(zip(names, row))))
    return rows, labelled


def _jsonl_rows(task: Task, path: Path, text: str) -> tuple[list[tuple[int, dict]], bool]:
    rows, keys = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            rows.append((number, RowError(f"not a JSON object ({e.args[0].split(':')[0]})")))
            continue
        if not isinstance(value, dict):
            rows.append((number, RowError(f"a JSON {type(value).__name__}: expected an object with the columns {column_list(task.columns)}")))
            continue
        keys |= set(value)
        rows.append((number, value))
    if not rows:
        raise DataError(f"{path}: file has no rows: expected one JSON object per line")
    first_line = next(n for n, r in rows if isinstance(r, dict)) if any(isinstance(r, dict) for _, r in rows) else 1
    labelled = _check_columns(task, path, first_line, keys)
    return rows, labelled


def _check_columns(task: Task, path: Path, line: int, present: set[str]) -> bool:
    """Every text column (and the id column, if declared) must be there; the label makes the
    file labelled."""
    needed = list(task.text_columns) + ([task.id_column] if task.id_column else [])
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataError(
            f"{path}:{line}: column {missing[0]} is missing: expected the columns {column_list(task.columns)} "
            f"(the file has {column_list(sorted(present))})"
        )
    return task.label_column in present


def parse_declared_row(task: Task, line: int, row: dict, labelled: bool) -> Example:
    """One row of a declared task's file as an Example; RowError naming the column otherwise."""
    row_id = str(line) if task.id_column is None else _text(row.get(task.id_column))
    if not row_id.strip():
        raise RowError(f"column {task.id_column}: value '{show_value(row_id)}': expected a non-empty id")
    texts = []
    for column in task.text_columns:
        value = _text(row.get(column))
        if bad_bytes(value):
            raise RowError(f"column {column}: value '{show_value(value)}': expected UTF-8 text (bytes {bad_bytes(value)})")
        if not value.strip():
            raise RowError(f"column {column}: value '{show_value(value)}': expected a non-empty text")
        texts.append(value.strip())
    label = None
    if labelled:
        raw = row.get(task.label_column)
        label = declared_label(task, raw)
        if label is None:
            raise RowError(f"column {task.label_column}: value '{show_value(_text(raw))}': expected {expected_label(task)}")
    return Example(row_id.strip(), tuple(texts), label, line)


def declared_label(task: Task, raw) -> float | None:
    """A label as the task's number (class index, 0/1, or score), or None when it does not fit."""
    if isinstance(raw, bool):
        raw = int(raw)
    if task.kind in ("classify", "binary") and task.label_names and isinstance(raw, str) and raw.strip() in task.label_names:
        return float(task.label_names.index(raw.strip()))
    if task.kind == "binary" and isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return float(raw.strip().lower() == "true")
    try:
        x = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    if task.kind == "regress":
        return x if task.label_min <= x <= task.label_max else None
    if not x.is_integer() or not 0 <= x < max(task.num_classes, 2):
        return None
    return x


def expected_label(task: Task) -> str:
    if task.kind == "regress":
        return f"a number {task.label_min:g}..{task.label_max:g}"
    if task.label_names:
        return f"one of {', '.join(task.label_names)} (or its index 0..{len(task.label_names) - 1})"
    if task.kind == "binary":
        return "0 or 1 (or true/false)"
    return f"a whole number 0..{task.num_classes - 1}"


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
