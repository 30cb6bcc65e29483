"""`powerbert predict`: sentences typed on the command line, or a whole input file, through every
model and every ensemble of a finished experiment."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from powerbert.cli.app import DbOpt, command, console, err_console, open_store
from powerbert.errors import ExperimentError, InputError
from powerbert.results import DEFAULT_SCHEME


class PredictFormat(str, Enum):
    tsv = "tsv"
    cs224n = "cs224n"


@command
def predict(
    args: Annotated[Optional[list[str]], typer.Argument(metavar="[EXPERIMENT] [SENTENCE] [SENTENCE2]", help="The experiment (optional; see above), then one sentence, or two for a pair.", show_default=False)] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e", help="Experiment name or id; default: the latest finished one.", show_default=False)] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="The task of --input: sst, para, sts (or cfimdb). With sentences: only this task.", show_default=False)] = None,
    input_path: Annotated[Optional[Path], typer.Option("--input", help="A CS224N task file to predict (labelled or test-student).", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Where to write the predictions of --input; default '-', stdout. A file is written atomically.", show_default=False)] = None,
    scheme: Annotated[Optional[str], typer.Option("--scheme", help=f"Ensemble that predicts a file: voting, weighted, single, learned, or one model such as sst+para. Default: {DEFAULT_SCHEME}; with sentences, every scheme.", show_default=False)] = None,
    fmt: Annotated[PredictFormat, typer.Option("--format", help="tsv (id, prediction) or cs224n (the course's submission format; see above).")] = PredictFormat.tsv,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Optional[str], typer.Option("--precision", help="bf16 (autocast) or fp32. Default: the runs' training precision, the one their dev scores and ensemble weights were measured at.", show_default=False)] = None,
    db: DbOpt = Path("runs.db"),
) -> None:
    """Predict with a finished experiment: every model and every ensemble.

    [bold]A file[/bold] (labelled or test-student, CS224N format) gets one prediction per row, in input order:

      powerbert predict --task sst --input ids-sst-test-student.csv --output sst.tsv

    The output is a TSV with a header and the columns id and prediction (sst: class 0..4, para: 0 or 1, sts: score 0..5). [bold]--format cs224n[/bold] writes the course's submission format instead, as the CS224N starter code does: the header `id \\t Predicted_Sentiment ` (para: Predicted_Is_Paraphrase; sts: Predicted_Similiarity, spelt as the starter code spells it; cfimdb: Predictions), then one `ID , PREDICTION ` line per row.

    [bold]Sentences[/bold] get a table of each model's and each ensemble's output: one sentence for sst (and cfimdb), two for para and sts:

      powerbert predict "a gorgeous, witty, seductive movie."

      powerbert predict exp1 "How do I learn Python?" "How can I learn Python?"

    The experiment defaults to the latest finished one. The first argument is taken as the experiment when it names one (by name or id) and more follows; everything else is text to predict. Use -e EXPERIMENT to say it explicitly, and -- before a sentence that starts with '-'.
    """
    from powerbert.inference.inputs import clean_text
    from powerbert.inference.loading import load_experiment_models

    args = list(args or [])
    with open_store(db, reader=True) as store:
        key, texts = _split_arguments(store, args, experiment, input_path is not None)
        if input_path is not None:
            if texts:
                raise InputError(f"--input predicts a file: give no sentences with it (got {len(texts)})")
            if task is None:
                raise InputError("--input needs --task (sst, para, sts or cfimdb), the task of its rows")
            output = output or Path("-")
        elif not texts:
            raise InputError("nothing to predict: give a sentence (or two), or --input FILE --task TASK [--output FILE]")
        elif len(texts) > 2:
            raise InputError(f"got {len(texts)} sentences: give one (sst) or two (para, sts); quote each sentence")
        elif output is not None:
            raise InputError("--output writes the predictions of --input FILE; sentences are printed")
        for i, text in enumerate(texts, 1):
            if not clean_text(text):
                raise InputError(f"sentence {i} is empty: expected some text")
        exp = _pick_finished(store, key)
        tasks = _tasks_needed(exp, task, input_path, texts)
        if input_path is not None:  # a wrong file is said now, not after the models load
            from powerbert.data.files import check_file_header

            check_file_header(task, input_path)
        err_console.print(f"loading the models of {exp.name} for {', '.join(tasks)} …", style="dim", highlight=False, soft_wrap=True)
        loaded = load_experiment_models(store, exp, device, precision=precision, tasks=tasks)
    for subset, why in loaded.missing.items():
        err_console.print(f"missing model {subset}: {why}", style="yellow", highlight=False, soft_wrap=True)
    if input_path is not None:
        _predict_file(loaded, task, input_path, output, scheme or DEFAULT_SCHEME, fmt.value)
    else:
        _predict_sentences(loaded, texts, scheme, tasks)


def _split_arguments(store, args: list[str], explicit: str | None, has_input: bool) -> tuple[str | None, list[str]]:
    """(experiment key or None, texts): the first argument is the experiment when it names one
    and something else is left to predict."""
    if explicit is not None:
        return explicit, args
    if args and _names_experiment(store, args[0]):
        if len(args) > 1 or has_input:
            return args[0], args[1:]
        raise InputError(
            f"'{args[0]}' is an experiment, and nothing else was given to predict: add a sentence or "
            f"--input FILE (to predict the text '{args[0]}' itself, name the experiment with -e)"
        )
    if has_input and args:
        store.get_experiment(args[0])  # not an experiment: its error lists the ones there are
    return None, args


def _tasks_needed(exp, task: str | None, input_path: Path | None, texts: list[str]) -> list[str]:
    """The tasks to load models for: the file's task, or the tasks the sentences fit."""
    from powerbert.tasks import TASKS, tasks_for_input

    if task is not None and task not in TASKS:
        raise InputError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    if input_path is not None:
        return [task]
    pair = len(texts) == 2
    fits = tasks_for_input(exp.tasks, pair)
    if task is not None and task not in fits:
        shown = ", ".join(fits) or f"no task of {exp.name}"
        raise InputError(f"task '{task}' does not take {'a pair' if pair else 'one sentence'}: this input fits {shown}")
    if not fits:
        want = "sentence pairs (para, sts)" if pair else "single sentences (sst, cfimdb)"
        raise InputError(f"experiment '{exp.name}' has no task for {want}: its tasks are {', '.join(exp.tasks)}")
    return [task] if task else fits


def _names_experiment(store, key: str) -> bool:
    from powerbert.store import StoreError

    try:
        store.get_experiment(key)
    except StoreError:
        return False
    return True


def _pick_finished(store, key: str | None):
    if key is not None:
        return store.get_experiment(key)
    exp = store.latest_experiment("finished")
    if exp is None:
        latest = store.latest_experiment()
        hint = f" (the latest, {latest.name}, is {latest.status}: name it to use the runs it finished)" if latest else ""
        raise ExperimentError(f"no finished experiment in {store.path}{hint}")
    return exp


def _predict_file(loaded, task: str, input_path: Path, output: Path, scheme: str, fmt: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from powerbert.inference.files import format_predictions, write_predictions
    from powerbert.inference.predict import predict_file

    columns = (TextColumn(f"predicting {task}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        bar = progress.add_task("rows", total=None)
        result = predict_file(
            loaded, task, input_path, scheme,
            on_progress=lambda done, total: progress.update(bar, completed=done, total=total),
        )
    for line in result.notices:
        err_console.print(line, style="yellow", highlight=False, soft_wrap=True)
    if str(output) == "-":
        typer.echo(format_predictions(task, result.rows, fmt), nl=False)
        return
    write_predictions(output, task, result.rows, fmt)
    if scheme in loaded.models:
        how = f"model {scheme}"
    else:
        used = [m for m in loaded.weights.get((scheme, task), {}) if m in loaded.models]
        how = f"{scheme} ensemble of {len(used)} model{'s' if len(used) != 1 else ''}"
    err_console.print(f"wrote {len(result)} {task} predictions ({how}, {fmt}) to {output}", highlight=False, soft_wrap=True)


def _predict_sentences(loaded, texts: list[str], scheme: str | None, tasks: list[str]) -> None:
    from powerbert.inference.predict import predict_sentences

    results = predict_sentences(loaded, texts[0], texts[1] if len(texts) > 1 else None, scheme, tasks=tasks)
    console.print(Text("  /  ".join(f"“{t}”" for t in next(iter(results.values())).inputs[0])), highlight=False)
    for name, result in results.items():
        console.print(sentence_table(name, result, loaded.experiment.name))
        if result.missing:
            console.print(f"missing from {name}: {', '.join(result.missing)}", style="yellow", highlight=False, soft_wrap=True)
        for line in result.notices:
            console.print(line, style="yellow", highlight=False, soft_wrap=True)


def sentence_table(task: str, result, experiment: str) -> Table:
    """One row per model and per ensemble: class and probability, P(duplicate), or score."""
    from powerbert.tasks import TASKS

    kind = TASKS[task].kind
    table = Table(title=f"{task} · {TASKS[task].title} · {experiment}", title_justify="left")
    table.add_column("model / ensemble")
    if kind == "classify":
        table.add_column("class")
        table.add_column("probability", justify="right")
    elif kind == "binary":
        table.add_column("answer")
        table.add_column(f"P({TASKS[task].label_name(1)})", justify="right")
    else:
        table.add_column("similarity 0..5", justify="right")

    def cells(source: str) -> list[str]:
        label = result.labels(source)[0]
        probs = result.probabilities(source)
        if kind == "classify":
            return [f"{int(label)} {TASKS[task].label_name(int(label))}", f"{probs[0][int(label)]:.3f}"]
        if kind == "binary":
            return [TASKS[task].label_name(int(label)), f"{probs[0]:.3f}"]
        return [f"{float(label):.2f}"]

    for member in result.members:
        table.add_row(member, *cells(member))
    if result.ensembles:
        table.add_section()
    for scheme in result.ensembles:
        table.add_row(Text(scheme, style="italic"), *cells(scheme))
    return table
