"""Tasks of your own, declared in a task file: two tasks written by the test (a JSON Lines
classification of tickets and a CSV pair regression of topic overlap) train their power set on
the tiny model, and get the report, every ensemble scheme and `predict`; each mistake a task
file can hold is one line FILE:LINE: key: value: expected ...; `--subsets` picks part of the
power set. Real files, real training, the CLI in-process."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powerbert.cli import app
from powerbert.data.taskfile import load_task_file
from powerbert.errors import ConfigError, DataError
from powerbert.results.ensemble import SCHEMES
from powerbert.store import ExperimentStatus, RunStatus, Store
from tests.fixtures import SENTIMENT, TOPICS, run_worker_here
from tests.test_predict import one_torch_thread

QUEUES = ["billing", "bug", "account"]
KEYWORDS = {"billing": "money", "bug": "trains", "account": "books"}


def write_tickets(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            queue = rng.choice(QUEUES)
            body = f"the {KEYWORDS[queue]} {rng.choice(SENTIMENT)[0]} {rng.choice(TOPICS)}"
            f.write(json.dumps({"ticket_id": f"t{i}", "body": body, "queue": queue}) + "\n")


def write_overlap(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["left", "right", "overlap"])
        for _ in range(n):
            a = rng.sample(TOPICS, 4)
            shared = rng.randrange(5)
            b = a[:shared] + rng.sample([t for t in TOPICS if t not in a], 4 - shared)
            out.writerow([" ".join(a), " ".join(b), shared])


TASK_FILE = """\
# two tasks of our own
[tasks.tickets]
train = "data/tickets-train.jsonl"
dev = "data/tickets-dev.jsonl"
text = ["body"]
label = "queue"
kind = "classify"
labels = ["billing", "bug", "account"]
metric = "accuracy"
id = "ticket_id"

[tasks.overlap]
files = "data/overlap-{split}.csv"
text = ["left", "right"]
label = "overlap"
kind = "regress"
range = [0, 4]
metric = "spearman"
"""


@pytest.fixture
def task_dir(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    write_tickets(data / "tickets-train.jsonl", 96, 1)
    write_tickets(data / "tickets-dev.jsonl", 40, 2)
    write_tickets(data / "tickets-test.jsonl", 10, 3)
    for split, n, seed in (("train", 96, 4), ("dev", 40, 5), ("test", 10, 6)):
        write_overlap(data / f"overlap-{split}.csv", n, seed)
    (tmp_path / "tasks.toml").write_text(TASK_FILE)
    return tmp_path


def invoke(*args):
    with one_torch_thread():
        return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "120"})


def train_experiment_in_process(db: Path) -> None:
    """The experiment's runs through the real worker, in this process (no supervisor)."""
    from powerbert.results.evaluate import ensemble_experiment

    with Store(db) as store, one_torch_thread():
        exp = store.latest_experiment()
        for run in store.runs(exp.id):
            assert run_worker_here(db, run.id) == 0, store.get_run(run.id).error
        ensemble_experiment(store, exp.id)
        store.update_experiment(exp.id, status=ExperimentStatus.FINISHED)


def test_two_declared_tasks_train_their_power_set_and_get_report_schemes_and_predict(task_dir, tiny_model_dir, tmp_path):
    db = tmp_path / "runs.db"
    listed = invoke("tasks", "--tasks-file", task_dir / "tasks.toml")
    assert listed.exit_code == 0, listed.output
    assert "tickets" in listed.stdout and "overlap" in listed.stdout and "spearman" in listed.stdout
    started = invoke("run", "--tasks-file", task_dir / "tasks.toml", "--tasks", "tickets,overlap", "--model", tiny_model_dir,
                     "--epochs", "2", "--batch-size", "16", "--set", "lr=1e-3", "--precision", "fp32", "--name", "own",
                     "--db", db, "--out", tmp_path / "runs", "--detach", "--yes")
    assert started.exit_code == 0, started.output
    # The supervisor started by --detach trains them too; stop it and train here, deterministically.
    invoke("stop", "own", "--db", db, "--grace", "30")
    with Store(db) as store:
        exp = store.get_experiment("own")
        for run in store.runs(exp.id):
            store.requeue_run(run.id)
    train_experiment_in_process(db)
    with Store(db) as store:
        exp = store.get_experiment("own")
        runs = store.runs(exp.id)
        assert [r.subset for r in runs] == ["tickets", "overlap", "tickets+overlap"]
        assert all(r.status == RunStatus.FINISHED for r in runs)
        assert set(runs[2].best_scores) == {"tickets", "overlap"}

    report = invoke("report", "own", "--format", "json", "--db", db)
    assert report.exit_code == 0, report.output
    data = json.loads(report.stdout)
    names = {row["name"] for row in data["rows"]}
    assert {"tickets", "overlap", "tickets+overlap", *SCHEMES} <= names
    for row in data["rows"]:
        if row["name"] in SCHEMES:
            assert row["scores"]["tickets"] is not None and row["scores"]["overlap"] is not None, row
    table = invoke("report", "own", "--db", db)
    assert table.exit_code == 0 and "tickets" in table.stdout, table.output

    out = tmp_path / "tickets.tsv"
    predicted = invoke("predict", "--task", "tickets", "--input", task_dir / "data" / "tickets-test.jsonl", "--output", out,
                       "-e", "own", "--device", "cpu", "--db", db)
    assert predicted.exit_code == 0, predicted.output
    lines = out.read_text().splitlines()
    assert lines[0] == "id\tprediction" and len(lines) == 11
    assert all(line.split("\t")[1] in QUEUES for line in lines[1:])  # the task's own label names
    pair = invoke("predict", "own", "the money cats", "the money dogs", "--device", "cpu", "--db", db)
    assert pair.exit_code == 0 and "overlap" in pair.stdout, pair.output
    one = invoke("predict", "own", "the bug trains", "--device", "cpu", "--db", db)
    assert one.exit_code == 0 and "tickets" in one.stdout, one.output


def test_subsets_choose_part_of_the_power_set_and_the_ensembles_use_what_exists(task_dir, tiny_model_dir, tmp_path):
    db = tmp_path / "runs.db"
    started = invoke("run", "--tasks-file", task_dir / "tasks.toml", "--tasks", "tickets,overlap", "--subsets", "singles",
                     "--model", tiny_model_dir, "--epochs", "1", "--set", "lr=1e-3", "--precision", "fp32", "--name", "few",
                     "--db", db, "--out", tmp_path / "runs", "--detach", "--yes")
    assert started.exit_code == 0, started.output
    invoke("stop", "few", "--db", db, "--grace", "30")
    with Store(db) as store:
        exp = store.get_experiment("few")
        assert [r.subset for r in store.runs(exp.id)] == ["tickets", "overlap"]
        for run in store.runs(exp.id):
            store.requeue_run(run.id)
    train_experiment_in_process(db)
    report = invoke("report", "few", "--format", "json", "--db", db)
    assert report.exit_code == 0, report.output
    rows = {row["name"]: row for row in json.loads(report.stdout)["rows"]}
    assert not rows["weighted"]["missing"].get("tickets")  # its one member exists: nothing missing
    assert "subsets: tickets, overlap (2 of 3)" in invoke("report", "few", "--db", db).stdout


# ---- mistakes in a task file -------------------------------------------------------------------


def mistake(task_dir: Path, replace: tuple[str, str], append: str = "") -> str:
    text = TASK_FILE.replace(*replace) + append
    assert text != TASK_FILE or append
    path = task_dir / "bad.toml"
    path.write_text(text)
    with pytest.raises((ConfigError, DataError)) as info:
        load_task_file(path)
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), "FILE")


def line_of(needle: str, text: str = TASK_FILE) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_an_unknown_kind(task_dir):
    line = line_of('kind = "classify"')
    assert mistake(task_dir, ('kind = "classify"', 'kind = "multilabel"')) == (
        f"FILE:{line}: kind: 'multilabel': expected one of classify, binary, regress")


def test_a_missing_data_file(task_dir):
    (task_dir / "data" / "tickets-dev.jsonl").unlink()
    message = mistake(task_dir, ("", ""), append="\n")
    assert message.startswith(f"FILE:{line_of('dev = ')}: dev: ") and message.endswith("file not found: expected the task's dev file")


def test_a_column_the_data_file_lacks(task_dir):
    message = mistake(task_dir, ('text = ["body"]', 'text = ["subject"]'))
    assert message.endswith("tickets-train.jsonl:1: column subject is missing: expected the columns (ticket_id, subject, queue) (the file has (body, queue, ticket_id))")


def test_labels_outside_the_declared_set(task_dir):
    message = mistake(task_dir, ('labels = ["billing", "bug", "account"]', 'labels = ["billing", "bug", "refund"]'))
    assert "tickets-train.jsonl:" in message and "column queue: value 'account': expected one of billing, bug, refund (or its index 0..2)" in message


def test_a_regression_label_that_is_not_a_number(task_dir):
    path = task_dir / "data" / "overlap-train.csv"
    path.write_text(path.read_text().replace("\n", "\nx y,z w,lots\n", 1))
    message = mistake(task_dir, ("", ""), append="\n")
    assert message.endswith("overlap-train.csv:2: column overlap: value 'lots': expected a number 0..4")


def test_two_tasks_with_one_name(task_dir):
    message = mistake(task_dir, ("", ""), append='\n[tasks.sst]\ntrain = "a.csv"\ndev = "b.csv"\ntext = ["t"]\nlabel = "l"\nkind = "binary"\n')
    assert message.startswith("FILE:") and "tasks.sst: a built-in task has this name: expected another name" in message
    text = TASK_FILE + "\n[tasks.tickets]\nkind = \"binary\"\n"
    (task_dir / "twice.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"twice.toml:\d+: not valid TOML"):
        load_task_file(task_dir / "twice.toml")


def test_an_unknown_key_and_a_bad_metric(task_dir):
    colour = line_of('metric = "accuracy"') + 1
    assert mistake(task_dir, ('metric = "accuracy"', 'metric = "accuracy"\ncolour = "blue"')).startswith(
        f"FILE:{colour}: colour: unknown setting")
    metric = line_of('metric = "spearman"')
    assert mistake(task_dir, ('metric = "spearman"', 'metric = "accuracy"')) == (
        f"FILE:{metric}: metric: 'accuracy': expected pearson or spearman for a regress task")


BINARY_TASK = """\
[tasks.urgent]
files = "data/urgent-{split}.tsv"
text = "body"
label = "urgent"
kind = "binary"
labels = ["later", "now"]
metric = "f1"
"""


def test_a_binary_task_of_ones_own_through_training_predict_and_the_python_api(tmp_path, tiny_model_dir):
    import powerbert

    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(7)
    for split, n in (("train", 64), ("dev", 24), ("test", 6)):
        with open(data / f"urgent-{split}.tsv", "w", encoding="utf-8") as f:
            f.write("body\turgent\n")
            for _ in range(n):
                now = rng.randrange(2)
                f.write(f"the {'great' if now else 'dull'} {rng.choice(TOPICS)}\t{'true' if now else 'false'}\n")
    (tmp_path / "powerbert.toml").write_text(BINARY_TASK)  # read from the working folder
    db = tmp_path / "runs.db"
    import os

    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        started = invoke("run", "--tasks", "urgent", "--model", tiny_model_dir, "--epochs", "2", "--set", "lr=1e-3",
                         "--precision", "fp32", "--name", "bin", "--db", db, "--out", tmp_path / "runs", "--detach", "--yes")
    finally:
        os.chdir(before)
    assert started.exit_code == 0, started.output
    invoke("stop", "bin", "--db", db, "--grace", "30")
    with Store(db) as store:
        for run in store.runs(store.get_experiment("bin").id):
            store.requeue_run(run.id)
    train_experiment_in_process(db)
    out = tmp_path / "urgent.tsv"
    predicted = invoke("predict", "--task", "urgent", "--input", data / "urgent-test.tsv", "--output", out, "--device", "cpu", "--db", db)
    assert predicted.exit_code == 0, predicted.output
    assert {line.split("\t")[1] for line in out.read_text().splitlines()[1:]} <= {"later", "now"}
    with one_torch_thread():
        ens = powerbert.load(db, "bin", device="cpu")
        (answer,) = ens.predict("urgent", ["the great tea"])
    assert answer.name in ("later", "now") and len(answer.probabilities) == 2
    assert set(ens.scores["urgent"]) == {"urgent"}
