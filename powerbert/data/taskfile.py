"""Task files: tasks declared in TOML, checked before anything starts.

    [tasks.tickets]
    train = "data/tickets-train.jsonl"        # or one pattern: files = "data/tickets-{split}.jsonl"
    dev = "data/tickets-dev.jsonl"
    format = "jsonl"                          # csv | tsv | jsonl; from the suffix if absent
    text = ["body"]                           # one column, or two for a pair task
    label = "queue"
    kind = "classify"                         # classify | binary | regress
    labels = ["billing", "bug", "account"]    # classify: names in class order; or num_classes = N
                                              # binary: optional names for 0 and 1
                                              # regress: range = [0, 5], the labels' scale
    metric = "accuracy"                       # accuracy | f1 | pearson | spearman
    id = "ticket_id"                          # optional; row numbers otherwise

Paths are relative to the task file's folder. `load_task_file` reads and checks one such file:
every mistake is one line `FILE:LINE: key: value: expected ...` (an unknown key or kind, a
missing data file, a column the data file lacks, labels outside the declared set, a regression
label that is not a number, two tasks with one name), and the tasks come back as `Task`s ready
to register. `powerbert.toml` in the working folder is read by the commands when present.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from powerbert.errors import ConfigError, DataError
from powerbert.tasks import KINDS, METRICS, TASKS, Task, declaration_to_task

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_TASK_FILE = "powerbert.toml"
FORMATS = ("csv", "tsv", "jsonl")
KEYS = ("title", "train", "dev", "test", "files", "format", "text", "label", "kind", "labels", "num_classes", "range", "metric", "id", "optional")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def load_task_file(path: str | Path, *, check_data: bool = True) -> list[Task]:
    """The tasks a task file declares, checked (and their data files' headers and rows too,
    unless `check_data` is False); ConfigError or DataError naming FILE:LINE otherwise."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: task file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the task file ({e})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None) or _line_from_message(str(e))
        raise ConfigError(f"{path}:{line or 1}: not valid TOML: {str(e).split(' (at')[0]}") from None
    where = _Locator(path, text)
    unknown_top = [k for k in document if k != "tasks"]
    if unknown_top:
        raise ConfigError(f"{where.key(None, unknown_top[0])}: {unknown_top[0]}: expected only [tasks.NAME] tables")
    tables = document.get("tasks", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}:1: tasks: expected at least one [tasks.NAME] table")
    tasks = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where.table(name)}: tasks.{name}: expected a table of settings")
        tasks.append(_task(name, table, path.parent, where))
    if check_data:
        for task in tasks:
            check_task_data(task, where)
    return tasks


def _task(name: str, table: dict, base: Path, where: _Locator) -> Task:
    at = lambda key: where.key(name, key)  # noqa: E731
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"{where.table(name)}: tasks.{name}: expected a name of lower-case letters, digits and _ (it is used on the command line and in file names)")
    if name in TASKS and TASKS[name].builtin:
        raise ConfigError(f"{where.table(name)}: tasks.{name}: a built-in task has this name: expected another name")
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"{at(key)}: {key}: unknown setting: expected some of {', '.join(KEYS)}")
    for key in ("text", "label", "kind"):
        if key not in table:
            raise ConfigError(f"{where.table(name)}: tasks.{name}: {key} is missing: expected text, label and kind")
    kind = table["kind"]
    if kind not in KINDS:
        raise ConfigError(f"{at('kind')}: kind: {kind!r}: expected one of {', '.join(KINDS)}")
    texts = table["text"]
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or len(texts) not in (1, 2) or not all(isinstance(t, str) and t for t in texts):
        raise ConfigError(f"{at('text')}: text: {table['text']!r}: expected one column name, or a list of two for a pair task")
    if not isinstance(table["label"], str) or not table["label"]:
        raise ConfigError(f"{at('label')}: label: {table['label']!r}: expected a column name")
    labels = table.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
        raise ConfigError(f"{at('labels')}: labels: {labels!r}: expected a list of at least two different label names")
    num_classes = table.get("num_classes")
    if kind == "classify":
        if labels is None and num_classes is None:
            raise ConfigError(f"{where.table(name)}: tasks.{name}: a classify task needs labels = [...] (names in class order) or num_classes = N")
        if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2):
            raise ConfigError(f"{at('num_classes')}: num_classes: {num_classes!r}: expected a whole number of at least 2")
        if labels is not None and num_classes is not None and num_classes != len(labels):
            raise ConfigError(f"{at('num_classes')}: num_classes: {num_classes}: expected {len(labels)}, the number of labels")
    elif kind == "binary":
        if labels is not None and len(labels) != 2:
            raise ConfigError(f"{at('labels')}: labels: {labels!r}: expected two names (for 0 and 1)")
    elif labels is not None or num_classes is not None:
        key = "labels" if labels is not None else "num_classes"
        raise ConfigError(f"{at(key)}: {key}: a regress task has no classes: expected no {key}")
    span = table.get("range")
    if kind == "regress":
        numbers = isinstance(span, list) and len(span) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in span)
        if not numbers or not span[0] < span[1]:
            where_range = at("range") if span is not None else where.table(name)
            raise ConfigError(f"{where_range}: range: {span!r}: expected [lowest, highest], the scale of the labels (e.g. range = [0, 5])")
    elif span is not None:
        raise ConfigError(f"{at('range')}: range: only a regress task has a range of labels")
    metric = table.get("metric", "pearson" if kind == "regress" else "accuracy")
    allowed = ("pearson", "spearman") if kind == "regress" else ("accuracy", "f1")
    if metric not in METRICS or metric not in allowed:
        raise ConfigError(f"{at('metric')}: metric: {metric!r}: expected {' or '.join(allowed)} for a {kind} task")
    files = _files(name, table, base, where)
    fmt = table.get("format")
    if fmt is None:
        suffix = Path(next(iter(files.values()))).suffix.lower()
        fmt = SUFFIXES.get(suffix)
        if fmt is None:
            raise ConfigError(f"{where.table(name)}: tasks.{name}: format: cannot tell from the suffix '{suffix}': expected format = csv, tsv or jsonl")
    elif fmt not in FORMATS:
        raise ConfigError(f"{at('format')}: format: {fmt!r}: expected one of {', '.join(FORMATS)}")
    id_column = table.get("id")
    if id_column is not None and (not isinstance(id_column, str) or not id_column):
        raise ConfigError(f"{at('id')}: id: {id_column!r}: expected a column name")
    declaration = {
        "name": name, "title": table.get("title", name), "format": fmt, "files": files, "text": list(texts),
        "label": table["label"], "kind": kind, "labels": labels, "num_classes": num_classes, "range": span, "metric": metric,
        "id": id_column, "optional": bool(table.get("optional", False)), "source": str(where.path),
    }
    return declaration_to_task(declaration)


def _files(name: str, table: dict, base: Path, where: _Locator) -> dict[str, str]:
    """split -> absolute path, from train/dev/test or one `files` pattern with {split}."""
    files = {}
    if "files" in table:
        pattern = table["files"]
        if not isinstance(pattern, str) or "{split}" not in pattern:
            raise ConfigError(f"{where.key(name, 'files')}: files: {pattern!r}: expected a path pattern with {{split}}, e.g. data/{name}-{{split}}.csv")
        for split in ("train", "dev", "test"):
            files[split] = str((base / pattern.replace("{split}", split)).resolve())
    for split in ("train", "dev", "test"):
        if split in table:
            value = table[split]
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where.key(name, split)}: {split}: {value!r}: expected a file path")
            files[split] = str((base / value.replace("{split}", split)).resolve())
    for split in ("train", "dev"):
        if split not in files:
            raise ConfigError(f"{where.table(name)}: tasks.{name}: {split} is missing: expected train and dev files (or files = \"...{{split}}...\")")
    return files


def check_task_data(task: Task, where: _Locator | None = None) -> None:
    """The task's train and dev files exist and read cleanly (columns, labels, ids)."""
    from powerbert.data.files import read_task_file

    for split in ("train", "dev"):
        path = Path(task.path(split))
        if not path.is_file():
            key = f"{where.key(task.name, split if split in where.keys(task.name) else 'files')}: " if where else ""
            raise DataError(f"{key}{split}: {path}: file not found: expected the task's {split} file")
        read_task_file(task, path, skip_cut_short=True)


def _line_from_message(message: str) -> int | None:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else None


class _Locator:
    """FILE:LINE for a task's table and keys: tomllib keeps no positions, so the lines are found
    in the text (the table's header, then the first `key =` inside it)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def _start(self, name: str | None) -> int | None:
        if name is None:
            return 0
        pattern = re.compile(rf"^\s*\[\s*tasks\.{re.escape(name)}\s*\]")
        return next((i for i, line in enumerate(self.lines) if pattern.match(line)), None)

    def table(self, name: str) -> str:
        start = self._start(name)
        return f"{self.path}:{(start or 0) + 1}"

    def keys(self, name: str) -> set[str]:
        start = self._start(name)
        found = set()
        for line in self.lines[(start or 0) + 1:]:
            if line.lstrip().startswith("["):
                break
            key = line.split("=", 1)[0].strip()
            if "=" in line and key:
                found.add(key)
        return found

    def key(self, name: str | None, key: str) -> str:
        start = self._start(name)
        begin = 0 if start is None else start + 1
        for i in range(begin, len(self.lines)):
            line = self.lines[i]
            if name is not None and line.lstrip().startswith("["):
                break
            if re.match(rf"^\s*{re.escape(key)}\s*=", line) or (name is None and re.match(rf"^\s*\[\s*{re.escape(key)}\b", line)):
                return f"{self.path}:{i + 1}"
        return self.table(name) if name else f"{self.path}:1"


def load_declared_tasks(tasks_file: str | Path | None, *, cwd: Path | None = None) -> list[Task]:
    """Register the tasks of `tasks_file`, or of ./powerbert.toml when none is given and one is
    there; the tasks registered (none without a task file)."""
    from powerbert.tasks import register

    if tasks_file is None:
        default = (cwd or Path.cwd()) / DEFAULT_TASK_FILE
        if not default.is_file():
            return []
        tasks_file = default
    return [register(task, replace=True) for task in load_task_file(tasks_file)]
