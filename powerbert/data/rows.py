"""Parsing one row of a task file, and the messages that name what is wrong with it
(FILE:LINE: column, value, expected), with hints for stray quotes and bad bytes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from powerbert.tasks import Task

SHOW_CHARS = 60  # longest value quoted in a message


@dataclass(frozen=True)
class Example:
    id: str
    texts: tuple[str, ...]  # 1 or 2 sentences, outer whitespace stripped
    label: float | None  # None for unlabelled files; class labels are whole numbers
    line: int  # 1-based physical line where the row starts


class RowError(Exception):
    """One bad row; the reader adds the FILE:LINE: prefix."""


def parse_row(
    row: list[str], start: int, end: int, names: tuple[str, ...], task: Task, labelled: bool, n_lead: int
) -> Example:
    def name(i: int) -> str:
        return names[i] if i < len(names) else f"{i + 1} (extra)"

    for i, v in enumerate(row):
        if bad_bytes(v):
            raise RowError(
                f"column {name(i)}: value '{show_value(v)}': expected UTF-8 text: "
                f"the file is not valid UTF-8 (bytes {bad_bytes(v)})"
            )
    for i, v in enumerate(row):
        # Fields never hold line breaks or tabs in these files; one that does comes from a
        # quote that opened and swallowed the following text (often whole rows).
        if "\n" in v or "\r" in v or "\t" in v:
            span = f"swallows lines {start}-{end}" if end > start else "swallows a tab"
            raise RowError(
                f"column {name(i)}: value '{show_value(v)}': expected one line of text without tabs: "
                f"an unbalanced quote in this field {span}"
            )
    if len(row) != len(names):
        where = (
            f"column {names[len(row)]} is missing"
            if len(row) < len(names)
            else f"extra value '{show_value(row[len(names)])}' (a tab inside a sentence?)"
        )
        raise RowError(
            f"row has {len(row)} field{'s' if len(row) != 1 else ''}: expected {len(names)} ({', '.join(names)}); {where}"
        )

    fields = [v.strip() for v in row[n_lead:]]
    if not fields[0]:
        raise RowError(f"column id: value '{show_value(row[n_lead])}': expected a non-empty id")
    texts = tuple(fields[1 : 1 + len(task.text_columns)])
    for i, text in enumerate(texts):
        if not text:
            col = n_lead + 1 + i
            raise RowError(
                f"column {names[col]}: value '{show_value(row[col])}': expected a non-empty sentence"
                + quote_hint(row, col, names)
            )
    label = None
    if labelled:
        label = parse_label(task, row[-1])
        if label is None:
            raise RowError(
                f"column {task.label_column}: value '{show_value(row[-1])}': expected {label_range(task)}"
                + quote_hint(row, len(row) - 1, names)
            )
    return Example(fields[0], texts, label, start)


def parse_label(task: Task, value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    if not math.isfinite(x) or not task.label_min <= x <= task.label_max:
        return None
    if task.kind != "regress" and not x.is_integer():
        return None
    return x


def label_range(task: Task) -> str:
    lo, hi = task.label_min, task.label_max
    if task.kind == "regress":
        return f"a number {lo:.1f}..{hi:.1f}"
    if hi - lo == 1:
        return f"{lo:g} or {hi:g}"
    return f"a whole number {lo:g}..{hi:g}"


def unmatched_quote(row: list[str], before: int) -> int | None:
    """The first column before `before` whose value holds an odd number of quote characters."""
    return next((i for i in range(before) if row[i].count('"') % 2), None)


def cut_short_at_stray_quote(row: list[str]) -> bool:
    """A row whose fields after one holding an unmatched literal quote are all empty: the
    damage in the public CS224N Quora files, where such a row lost its last fields."""
    i = unmatched_quote(row, len(row) - 1)
    return i is not None and not any(v.strip() for v in row[i + 1 :])


def quote_hint(row: list[str], col: int, names: tuple[str, ...]) -> str:
    """Name an earlier field with an unmatched quote, the usual cause of an empty one."""
    i = None if row[col].strip() else unmatched_quote(row, col)
    if i is None:
        return ""
    return f" (column {names[i]} has an unmatched quote, which may have swallowed this field)"


def bad_bytes(value: str) -> str:
    """The undecodable bytes kept by surrogateescape, written as \\xNN ('' if none)."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" for c in value if "\udc80" <= c <= "\udcff")[:40]


def show_value(value: str) -> str:
    """A value as quoted in a message: one line, at most SHOW_CHARS characters."""
    cut = value[:SHOW_CHARS] + ("…" if len(value) > SHOW_CHARS else "")
    cut = cut.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in cut)


def column_list(cells: Iterable[str]) -> str:
    return "(" + ", ".join(c if c else "''" for c in cells) + ")"
