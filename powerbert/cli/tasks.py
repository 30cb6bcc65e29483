"""`powerbert tasks`: the tasks PowerBERT knows, built in and declared in a task file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from powerbert.cli.app import DataDirOpt, TasksFileOpt, command, console


@command(name="tasks")
def list_tasks(
    tasks_file: TasksFileOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tasks as JSON.")] = False,
    only: Annotated[Optional[str], typer.Argument(help="Show only these tasks (comma-separated).", show_default=False)] = None,
) -> None:
    """List the known tasks with their files, kinds and metrics.

    Built-in tasks read the CS224N files of --data-dir (default: the demo data); tasks declared
    in a task file (--tasks-file, or ./powerbert.toml) read the files it names, and are checked
    here as `powerbert run` would check them.
    """
    from powerbert.data.files import task_path
    from powerbert.data.taskfile import load_declared_tasks
    from powerbert.tasks import TASKS, parse_tasks

    load_declared_tasks(tasks_file)
    names = parse_tasks(only) if only else tuple(TASKS)
    rows = []
    for name in names:
        task = TASKS[name]
        files = {split: str(task_path(task, data_dir, split)) for split in ("train", "dev")}
        classes = ", ".join(task.label_names) if task.label_names else (f"{task.num_classes} classes" if task.kind == "classify" else "")
        if task.kind == "regress":
            classes = f"{task.label_min:g}..{task.label_max:g}"
        rows.append({
            "name": name, "title": task.title, "kind": task.kind, "pair": task.is_pair, "text": list(task.text_columns),
            "label": task.label_column, "labels": classes, "metric": task.metric, "format": task.format,
            "files": files, "source": task.source or ("built-in" + (" (optional)" if task.optional else "")),
        })
    if as_json:
        import json

        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="tasks", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for column in ("task", "kind", "input", "labels", "metric", "files"):
        table.add_column(column, overflow="fold")
    folders = set()
    for row, name in zip(rows, names):
        paths = [Path(p) for p in row["files"].values()]
        folders.add(str(paths[0].parent))
        files = _pattern(paths[0].name, paths[1].name)
        table.add_row(name, row["kind"], " + ".join(row["text"]), _short(row["labels"]), row["metric"], files)
    console.print(table)
    for row in rows:
        if row["source"] != "built-in" and not row["source"].startswith("built-in"):
            console.print(f"{row['name']}: declared in {row['source']}; files in {Path(next(iter(row['files'].values()))).parent}", highlight=False, soft_wrap=True)
    builtin = [r for r in rows if r["source"].startswith("built-in")]
    if builtin:
        console.print(f"built-in tasks read {Path(next(iter(builtin[0]['files'].values()))).parent} (--data-dir)", highlight=False, soft_wrap=True)


def _short(labels: str) -> str:
    names = labels.split(", ")
    return f"{len(names)}: {names[0]} … {names[-1]}" if len(names) > 3 else labels


def _pattern(train: str, dev: str) -> str:
    """'ids-sst-train.csv', 'ids-sst-dev.csv' -> 'ids-sst-{train,dev}.csv' (else both names)."""
    if "train" in train and train.replace("train", "dev", 1) == dev:
        return train.replace("train", "{train,dev}", 1)
    return f"{train}, {dev}"
