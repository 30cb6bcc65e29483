"""The Typer app every `powerbert` command registers on, and what the commands share.

The options several commands take (one definition each, so help texts agree), the `command`
decorator that turns errors into one line, and opening runs.db. The commands themselves live in
train.py, experiments.py, results.py and predict.py beside this file.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console

from powerbert.errors import USER_ERRORS, ConfigError, first_line

app = typer.Typer(
    help="PowerBERT: train one BERT per subset of tasks (sst, para, sts), watch them, ensemble them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

# Options shared by several commands: one definition each, so help texts stay consistent.
TasksOpt = Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated tasks: sst, para, sts (and cfimdb).")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder of CS224N task files; default: the built-in demo data.", envvar="POWERBERT_DATA_DIR")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Hugging Face model id or local folder; default: the offline MiniLM BERT.", envvar="POWERBERT_MODEL")]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", help="Recipe to start from: demo, quick, paper, best. Default: demo without --data-dir, best with it.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Training epochs (overrides the profile).")]
MaxTrainOpt = Annotated[Optional[int], typer.Option("--max-train", min=0, help="Training rows per task per epoch, a fresh sample each epoch; 0 = all.")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Peak learning rate.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Rows per task per step.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (data order, dropout, heads).")]
SurgeryOpt = Annotated[Optional[str], typer.Option("--surgery", help="Multitask steps: pcgrad (gradient surgery) or sum of the task gradients, or alternate (one optimizer step per task's batch).")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad-rows", help="Skip malformed rows (reported with their lines) instead of stopping.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="auto (default: bf16 autocast where the device has fast bf16 matmuls, else fp32), bf16 or fp32.")]
TasksFileOpt = Annotated[Optional[Path], typer.Option("--tasks-file", help="A TOML file declaring tasks of your own (default: ./powerbert.toml when there is one).", envvar="POWERBERT_TASKS_FILE", show_default=False)]
SubsetsOpt = Annotated[Optional[str], typer.Option("--subsets", help="Which subsets to train: all (default), singles, pairs, full, upto:K, or names like sst,sst+para; comma-separated and combined.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Any other recipe setting as KEY=VALUE, repeatable: e.g. --set para_head=bi --set pooling=cls --set warmup=0.06.")]


def _print_version(value: bool) -> None:
    if value:
        from powerbert import __version__

        console.print(f"powerbert {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.", envvar="POWERBERT_DEBUG")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)] = False,
) -> None:
    _state["debug"] = debug


def training_overrides(**given) -> dict:
    """Command-line values that override the profile (None = not given). The task file (given,
    or ./powerbert.toml) is read first, so that --tasks can name its tasks."""
    from powerbert.data.taskfile import load_declared_tasks

    load_declared_tasks(given.pop("tasks_file", None))
    tasks = given.pop("tasks", None)
    if tasks is not None:
        from powerbert.tasks import parse_tasks

        given["tasks"] = parse_tasks(tasks)
    if given.get("skip_bad_rows") is False:
        given["skip_bad_rows"] = None
    from powerbert.config import absolute_model, absolute_path, parse_settings

    if given.get("data_dir") is not None:
        given["data_dir"] = absolute_path(given["data_dir"])
    given["model"] = absolute_model(given.get("model"))

    given.update(parse_settings(given.pop("settings", None) or []))
    return given


def command(func=None, *, name: str | None = None):
    """Register a command whose errors end in one line (tracebacks with --debug).

    A user error (powerbert.errors.UserError, or the OS refusing a path the user gave) prints
    `error: ...` and exits 2 for a bad setting (ConfigError), 1 otherwise. Anything else is a bug: it prints `internal error: ...` with the
    file that holds the traceback, and exits 1 too.
    """

    if func is None:
        return lambda f: command(f, name=name)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        on_terminal = stdout_is_terminal()  # asked now: a terminal that hung up no longer says it is one
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            # A bad setting is a usage error, as click's own are: exit 2. Anything else: 1.
            raise typer.Exit(code=2 if isinstance(exc, ConfigError) else 1) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _state["debug"]:
                raise
            if on_terminal and isinstance(exc, OSError) and exc.errno == errno.EIO:
                # A write to our terminal after it went away (an SSH connection dropped, a window
                # closed) is not a bug: the hang-up's SIGHUP is on its way, and on a busy machine
                # the failed write can come first.
                end_as_hung_up()
            log = internal_error_log(exc)
            err_console.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {first_line(exc)} "
                f"(a bug in PowerBERT; the traceback is in {log}; `powerbert --debug ...` shows it)",
                highlight=False, soft_wrap=True,
            )
            raise typer.Exit(code=1) from None

    return app.command(name=name)(wrapper)


def stdout_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (OSError, ValueError):  # no stdout, or one without a file descriptor
        return False


def end_as_hung_up() -> None:
    """End this process as the terminal's hang-up ends it (killed by SIGHUP), with no message to
    the terminal that is gone and no internal-error log. Detached runs never depend on it."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGHUP)
    signal.pause()  # pragma: no cover - the signal ends us first


def internal_error_log(exc: BaseException) -> str:
    """Write the traceback of `exc` to a new private file and return its path."""
    fd, path = tempfile.mkstemp(prefix="powerbert-internal-error-", suffix=".log")  # mode 0600
    with os.fdopen(fd, "w") as f:
        f.write(f"powerbert {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exception(exc, file=f)
    return path


DbOpt = Annotated[Path, typer.Option("--db", help="The runs database.", envvar="POWERBERT_DB")]
ExperimentArg = Annotated[Optional[str], typer.Argument(help="Experiment name or id; default: the latest.", show_default=False)]


def open_store(db: Path, *, reader: bool = False, create: bool = False):
    """runs.db for a command. Only `powerbert run` creates one (`create`); every other command
    needs an existing one and says where it looked when there is none.

    A `reader` (status, list, watch, report, predict) opens it read-only where this user may
    not write it (a read-only mount, someone else's folder): it reads all the same. Where it
    may, it opens it for writing, for the one write a reader makes: marking runs whose worker
    vanished as lost, so that the next look (and `resume`) knows."""
    from powerbert.errors import StoreError
    from powerbert.store import Store
    from powerbert.store.db import no_database_message

    path = Path(db).expanduser()
    if not create and not path.exists():
        raise StoreError(no_database_message(path))
    writable = os.access(path, os.W_OK) and os.access(path.absolute().parent, os.W_OK)
    return Store(path, readonly=reader and not writable)


def pick_experiment(store, key: str | None):
    if key is not None:
        return store.get_experiment(key)
    experiment = store.latest_experiment()
    if experiment is None:
        from powerbert.errors import ExperimentError

        raise ExperimentError(f"no experiments in {store.path}: start one with `powerbert run`")
    return experiment
