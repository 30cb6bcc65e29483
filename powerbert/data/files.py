"""Reading and validating task files: turn a CS224N-format file into checked `Example`s.

A task file is tab-separated with a header row. The first column is an unnamed row number
(the SST test-student file has two such columns), then the task's `Task.columns`: the id, one or
two sentences, and the label, which unlabelled (test-student) files leave out. Quoting follows
Python's csv module; the file is UTF-8, with or without a BOM, with LF or CRLF line ends.

Every problem becomes a `DataError` whose message is one line the user can act on, in the form
`FILE:LINE: column NAME: value 'X': expected ...`. With `skip_bad_rows=True` bad rows are left
out but kept, with their messages, in `TaskData.skipped`: nothing is ever dropped silently.
File-level problems (missing file, empty file, wrong header) are never skipped.

One kind of bad row is skipped by `load_split` (training and dev data) even without
`skip_bad_rows`: a row cut short at a stray quote, the damage the public CS224N Quora files carry
(a field holding an unmatched literal `"`, every field after it empty, so the row has no label to
learn from). It is reported like any skipped row; `read_task_file`, which `powerbert predict`
uses on the user's input, still stops on it, since a prediction file must answer every row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from powerbert.data.rows import Example, RowError, bad_bytes, column_list, cut_short_at_stray_quote, parse_row, show_value
from powerbert.errors import DataError
from powerbert.tasks import TASKS, Task

_SUMMARY_LINES = 10  # most line numbers listed by skipped_summary
ROW_NUMBER = "row number"  # how messages name the unnamed leading column(s)


@dataclass(frozen=True)
class BadRow:
    path: Path
    line: int
    message: str  # the full 'FILE:LINE: column ...' text
    cut_short: bool = False  # cut short at a stray quote (see the module docstring)


@dataclass
class TaskData:
    task: Task
    split: str
    path: Path
    examples: list[Example]
    skipped: list[BadRow]
    labelled: bool

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def labels(self) -> np.ndarray:
        """Gold labels as float64 [N]; NaN where the file has none."""
        return np.array([np.nan if e.label is None else e.label for e in self.examples])


def demo_dir() -> Path:
    """The built-in synthetic demo files that ship inside the package."""
    return Path(__file__).resolve().parent / "demo"


def get_task(task: Task | str) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise DataError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    return TASKS[task]


def task_path(task: Task | str, data_dir: Path | str | None, split: str) -> Path:
    """Where a split of a task is: a built-in task's file in `data_dir` (None: the demo), or the
    file a task file declared (`data_dir` does not apply; test-student is its test split)."""
    task = get_task(task)
    if not task.builtin:
        declared = task.path("test" if split == "test-student" else split)
        if declared is None:
            raise DataError(f"task {task.name} declares no {split} file ({task.source or 'its task file'})")
        return Path(declared)
    root = demo_dir() if data_dir is None else Path(data_dir).expanduser()
    return root / task.file_name(split)


def read_task_file(
    task: Task | str, path: Path | str, *, skip_bad_rows: bool = False, skip_cut_short: bool = False
) -> TaskData:
    """Read and check one file; whether it is labelled is decided by its header.
    `skip_cut_short` skips (and reports) rows cut short at a stray quote even when
    `skip_bad_rows` is off."""
    task, path = get_task(task), Path(path)
    split = _split_of(task, path)
    text = _read_text(path, task, split)
    if task.format != "cs224n":
        return _read_declared(task, path, split, text, skip_bad_rows)
    # newline="" leaves line ends to csv, so quoted fields and CRLF are handled the csv way and
    # reader.line_num counts physical lines (for the FILE:LINE in messages).
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    n_lead, labelled, header_end = _read_header(reader, path, task)
    names = (ROW_NUMBER,) * n_lead + (task.columns if labelled else task.columns[:-1])

    examples: list[Example] = []
    skipped: list[BadRow] = []
    first_line_of: dict[str, int] = {}
    end = header_end
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # cannot resync after this, so it is never skipped
            raise DataError(f"{path}:{start}: cannot parse the row ({e}); is a quote here never closed?") from None
        end = reader.line_num
        if not row:  # a blank line is not a row
            continue
        try:
            example = parse_row(row, start, end, names, task, labelled, n_lead)
            if example.id in first_line_of:
                raise RowError(
                    f"column id: value '{show_value(example.id)}': expected a unique id "
                    f"(line {first_line_of[example.id]} has it too)"
                )
        except RowError as e:
            message = f"{path}:{start}: {e}"
            cut_short = len(row) == len(names) and cut_short_at_stray_quote(row)
            if not (skip_bad_rows or (skip_cut_short and cut_short)):
                raise DataError(message) from None
            skipped.append(BadRow(path, start, message, cut_short))
            continue
        first_line_of[example.id] = start
        examples.append(example)

    if not examples and not skipped:
        raise DataError(f"{path}: file has a header but no rows: expected at least one example")
    return TaskData(task, split or path.stem, path, examples, skipped, labelled)


def check_file_header(task: Task | str, path: Path | str) -> None:
    """Check only that `path` exists and has `task`'s header (labelled or not): a quick look
    before minutes of work (loading models to predict it), which still parse every row after."""
    task, path = get_task(task), Path(path)
    text = _read_text(path, task, None, limit=64 * 1024)
    if task.format != "cs224n":
        from powerbert.data.declared import read_declared_rows

        read_declared_rows(task, path, "\n".join(text.splitlines()[:2]))  # the header (or first object) only
        return
    _read_header(csv.reader(io.StringIO(text, newline=""), delimiter="\t"), path, task)


def load_split(
    task: Task | str,
    data_dir: Path | str | None,
    split: str,
    *,
    skip_bad_rows: bool = False,
    max_rows: int | None = None,
) -> TaskData:
    """Read `split` of `task` from `data_dir` (None: the demo); keep the first `max_rows`.
    Rows cut short at a stray quote are skipped and reported whatever `skip_bad_rows` says."""
    if max_rows is not None and max_rows < 1:
        raise DataError(f"max rows is {max_rows}: expected a whole number of at least 1")
    data = read_task_file(task, task_path(task, data_dir, split), skip_bad_rows=skip_bad_rows, skip_cut_short=True)
    if max_rows is not None:
        # The whole file is still checked first, so a limit never hides an error in the data.
        data.examples = data.examples[:max_rows]
    return data


def check_data_dir(
    data_dir: Path | str | None, tasks: Iterable[str], splits: Iterable[str] = ("train", "dev")
) -> None:
    """Raise one DataError naming every file the tasks need that the folder (or, for a declared
    task, its task file) lacks."""
    tasks = list(tasks)
    for name in tasks:
        task = get_task(name)
        if not task.builtin:
            for split in splits:
                path = task_path(task, None, split)
                if not path.is_file():
                    raise DataError(f"{path}: file not found (the {split} file of task {task.name}, declared in {task.source or 'its task file'})")
    tasks = [n for n in tasks if get_task(n).builtin]
    if not tasks:
        return
    root = demo_dir() if data_dir is None else Path(data_dir).expanduser()
    if not root.exists():
        raise DataError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data directory {root} is not a directory")
    splits = tuple(splits)
    missing: list[str] = []
    needy: list[str] = []
    for name in tasks:
        task = get_task(name)
        gone = [task.file_name(s) for s in splits if not (root / task.file_name(s)).is_file()]
        if gone:
            missing += gone
            needy.append(task.name)
    if missing:
        raise DataError(
            f"data directory {root} is missing {', '.join(missing)} "
            f"(needed for task{'s' if len(needy) > 1 else ''} {', '.join(needy)})"
        )


def skipped_summary(data: TaskData) -> str | None:
    """One line saying which rows were skipped, or None if none were."""
    if not data.skipped:
        return None
    lines = [str(b.line) for b in data.skipped[:_SUMMARY_LINES]]
    more = ", …" if len(data.skipped) > _SUMMARY_LINES else ""
    n = len(data.skipped)
    cut = sum(b.cut_short for b in data.skipped)
    why = ""
    if cut == n:
        why = ": cut short by a stray quote, no label to learn from"
    elif cut:
        why = f", {cut} of them cut short by a stray quote"
    return (
        f"skipped {n} bad row{'s' if n != 1 else ''} in {data.path.name}"
        f" (line{'s' if n != 1 else ''} {', '.join(lines)}{more}){why}"
    )


# ---- reading the file -----------------------------------------------------------------------


def _split_of(task: Task, path: Path) -> str | None:
    if not task.builtin:
        return next((split for split, p in task.files if Path(p) == path.resolve()), None)
    prefix, _, suffix = task.file_name("{split}").partition("{split}")
    if path.name.startswith(prefix) and path.name.endswith(suffix) and len(path.name) > len(prefix) + len(suffix):
        return path.name[len(prefix) : len(path.name) - len(suffix)]
    return None


def _read_text(path: Path, task: Task, split: str | None, *, limit: int = -1) -> str:
    """The file's text (its first `limit` bytes when given), with one-line errors naming it."""
    what = f"the {task.title} {split} file" if split else f"a {task.title} file"
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a file (expected {what})")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {what})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror})") from None
    # surrogateescape keeps undecodable bytes as lone surrogates, so the row that holds them
    # can be reported (or skipped) by line instead of failing the whole file.
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    if not text.strip():
        raise DataError(f"{path}: file is empty: expected a header line {column_list(('', *task.columns))}")
    return text


def _read_header(reader, path: Path, task: Task) -> tuple[int, bool, int]:
    """Return (number of leading row-number columns, labelled, last line of the header)."""
    header: list[str] = []
    try:
        while not header:  # skip blank lines before the header
            header = next(reader)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: cannot parse the header ({e})") from None
    line = reader.line_num
    cells = [c.strip() for c in header]
    if any(bad_bytes(c) for c in cells):
        raise DataError(f"{path}:{line}: header is not valid UTF-8 (bytes {bad_bytes(' '.join(cells))})")
    for labelled, names in ((True, task.columns), (False, task.columns[:-1])):
        lead = cells[: len(cells) - len(names)]
        # The leading columns are row numbers pandas wrote: a blank cell, or (in the SST
        # test-student file, written twice) a number too.
        if (
            tuple(cells[len(lead) :]) == names
            and len(lead) <= 2
            and all(c == "" or c.isdigit() for c in lead)
        ):
            return len(lead), labelled, line
    raise DataError(
        f"{path}:{line}: header has columns {column_list(cells)}: expected {column_list(('', *task.columns))}"
        f" (without {task.label_column} in an unlabelled file)"
    )


# ---- checking one row -----------------------------------------------------------------------


# ---- showing values in messages -------------------------------------------------------------


def _read_declared(task: Task, path: Path, split: str | None, text: str, skip_bad_rows: bool) -> TaskData:
    """A declared task's CSV, TSV or JSON Lines file, with the same row checks and reporting."""
    from powerbert.data.declared import parse_declared_row, read_declared_rows

    rows, labelled = read_declared_rows(task, path, text)
    examples: list[Example] = []
    skipped: list[BadRow] = []
    first_line_of: dict[str, int] = {}
    for line, row in rows:
        try:
            if isinstance(row, RowError):
                raise row
            example = parse_declared_row(task, line, row, labelled)
            if example.id in first_line_of:
                raise RowError(f"column {task.id_column}: value '{show_value(example.id)}': expected a unique id (line {first_line_of[example.id]} has it too)")
        except RowError as e:
            message = f"{path}:{line}: {e}"
            if not skip_bad_rows:
                raise DataError(message) from None
            skipped.append(BadRow(path, line, message))
            continue
        first_line_of[example.id] = line
        examples.append(example)
    if not examples and not skipped:
        raise DataError(f"{path}: file has no rows: expected at least one example")
    return TaskData(task, split or path.stem, path, examples, skipped, labelled)
