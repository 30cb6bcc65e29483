"""`powerbert ensemble / report / predict` through typer's CliRunner, on the tiny finished
experiment of tests/test_predict.py (built once per session)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from powerbert.cli.app import app
from powerbert.data.files import read_task_file
from powerbert.results import DEFAULT_SCHEME
from powerbert.store import Store
from tests.test_predict import EXPERIMENT, fail_run, one_torch_thread

MODELS = ["sst", "para", "sts", "sst+para", "sst+sts", "para+sts", "sst+para+sts"]
SCHEMES = ["voting", "weighted", "single", "learned"]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# ---- ensemble ---------------------------------------------------------------------------------


def test_ensemble_prints_every_scheme(db):
    result = invoke("ensemble", "--db", db)
    assert result.exit_code == 0, result.output
    for header in ("sst acc", "para acc", "sts Pearson", "overall", *SCHEMES):
        assert header in result.stdout
    assert "7 of 7 models in the ensembles" in result.stdout


def test_ensemble_with_a_failed_run_names_what_is_missing(db):
    fail_run(db, "para+sts")
    result = invoke("ensemble", EXPERIMENT, "--db", db)
    assert result.exit_code == 0, result.output
    assert "6 of 7 models in the ensembles; missing: para+sts (failed)" in result.stdout
    assert "Missing from the para ensembles: para+sts" in result.stdout


def test_ensemble_without_finished_runs_is_a_clear_error(tmp_path):
    Store(tmp_path / "empty.db").close()  # a database with no experiment in it
    result = invoke("ensemble", "--db", tmp_path / "empty.db")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no experiments in")


# ---- report -----------------------------------------------------------------------------------


def test_report_table_with_charts(db):
    result = invoke("report", "--db", db)
    assert result.exit_code == 0, result.output
    for name in (*MODELS, *SCHEMES, "sts Pearson", "▲"):
        assert name in result.stdout
    assert f"sst · {DEFAULT_SCHEME} ensemble · n=60" in result.stdout
    assert "gold × predicted" in result.stdout


def test_report_markdown_csv_json(db):
    md = invoke("report", EXPERIMENT, "--format", "markdown", "--db", db)
    assert md.exit_code == 0, md.output
    assert md.stdout.startswith("## PowerBERT · tiny · dev")
    assert "| *learned* |" in md.stdout and f"### Error analysis · {DEFAULT_SCHEME} ensemble" in md.stdout

    table = invoke("report", "--format", "csv", "--db", db)
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["name"] for r in rows] == MODELS + SCHEMES
    assert rows[0]["sst"] and rows[0]["para"] == ""  # no score where the model has no head

    data = json.loads(invoke("report", "--format", "json", "--scheme", "learned", "--db", db).stdout)
    assert data["analysis_scheme"] == "learned"
    assert set(data["analysis"]) == {"sst", "para", "sts"}
    assert data["analysis"]["sst"]["confusion"]["rows"] == "gold"
    assert [r["name"] for r in data["rows"]] == MODELS + SCHEMES


def test_report_rejects_an_unknown_scheme(db):
    result = invoke("report", "--scheme", "best", "--db", db)
    assert result.exit_code == 2
    assert "unknown scheme 'best'" in result.output


def test_report_baselines_are_added_and_launched(db, monkeypatch):
    from powerbert.runner import experiments

    launched = []
    monkeypatch.setattr(experiments, "launch", lambda db_path, store, exp: launched.append(exp.name) or 4242)
    result = invoke("report", "--baselines", "--db", db)
    assert result.exit_code == 0, result.output
    assert launched == [EXPERIMENT]
    # said before it starts, then that it started
    announced = result.stdout.index("adding and training 2 more models in the background")
    assert announced < result.stdout.index("started (supervisor pid 4242)")
    assert "Re-run `powerbert report tiny`" in result.stdout
    assert "frozen: sst+para+sts" in result.stdout and "naive: sst+para+sts" in result.stdout

    # json stays parseable: the message goes to stderr
    again = invoke("report", "--baselines", "--format", "json", "--db", db)
    assert "training 2 more models in the background" in again.stderr
    names = [r["name"] for r in json.loads(again.stdout)["rows"]]
    assert "frozen: sst+para+sts" in names
    with Store(db) as store:
        assert len(store.runs(store.get_experiment(EXPERIMENT).id)) == 9  # added once


# ---- predict ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task, stem", [("sst", "ids-sst"), ("para", "quora"), ("sts", "sts")])
def test_predict_file_tsv_one_row_per_input_row(db, tiny_experiment, tmp_path, task, stem):
    source = tiny_experiment.data_dir / f"{stem}-test-student.csv"
    out = tmp_path / f"{task}.tsv"
    result = invoke("predict", "--task", task, "--input", source, "--output", out, "--device", "cpu", "--db", db)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "id\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == read_task_file(task, source).ids
    assert f"wrote 20 {task} predictions ({DEFAULT_SCHEME} ensemble of 4 models, tsv)" in result.stderr


def test_predict_file_cs224n_format_with_the_experiment_named(db, tiny_experiment, tmp_path):
    source = tiny_experiment.data_dir / "ids-sst-dev.csv"
    out = tmp_path / "sst-dev-output.csv"
    args = ("--task", "sst", "--input", source, "--output", out, "--format", "cs224n", "--scheme", "learned", "--device", "cpu", "--db", db)
    result = invoke("predict", EXPERIMENT, *args)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "id \t Predicted_Sentiment "
    ids = read_task_file("sst", source).ids
    assert [line.split(" , ")[0] for line in lines[1:]] == ids
    assert all(line.split(" , ")[1].strip() in "01234" for line in lines[1:])
    assert invoke("predict", "-e", EXPERIMENT, *args).exit_code == 0


def test_predict_one_sentence_prints_each_model_and_scheme(db):
    result = invoke("predict", "a gorgeous, witty, seductive movie.", "--device", "cpu", "--db", db)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "sst · SST sentiment · tiny" in out and "probability" in out
    for name in ("sst", "sst+para", "sst+sts", "sst+para+sts", *SCHEMES):
        assert f"│ {name} " in out
    assert "│ para " not in out and "P(paraphrase)" not in out


def test_predict_a_pair_prints_para_and_sts(db):
    result = invoke("predict", EXPERIMENT, "what about tea ?", "why do i like tea ?", "--device", "cpu", "--db", db)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "P(paraphrase)" in out and "similarity 0..5" in out
    assert "│ paraphrase" in out or "│ different" in out  # the answer in words, as the playground says it
    for name in ("para", "sts", "para+sts", "sst+para+sts", *SCHEMES):
        assert f"│ {name} " in out
    only = invoke("predict", "-e", EXPERIMENT, "--task", "sts", "a", "b", "--device", "cpu", "--db", db)
    assert "similarity 0..5" in only.stdout and "P(paraphrase)" not in only.stdout


def test_predict_precision_option(db):
    ok = invoke("predict", "a gorgeous, witty, seductive movie.", "--precision", "bf16", "--device", "cpu", "--db", db)
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, ["predict", "a movie.", "--precision", "fp16", "--device", "cpu", "--db", str(db)])
    assert bad.exit_code == 2 and "precision 'fp16': expected bf16 or fp32" in bad.output  # a bad setting: usage error


def test_predict_with_a_failed_run_names_it(db):
    fail_run(db, "sst")
    result = invoke("predict", EXPERIMENT, "a fine film", "--device", "cpu", "--db", db)
    assert result.exit_code == 0, result.output
    assert "missing model sst: run failed: RuntimeError: CUDA out of memory" in result.stderr
    assert "missing from sst: sst" in result.stdout
    assert "the single ensemble cannot run: sst missing" in result.stdout
    # the failed experiment is not the default for predict, and the error says how to use it
    default = invoke("predict", "a fine film", "--db", db)
    assert default.exit_code == 1
    assert "no finished experiment" in default.stderr and "tiny, is failed" in default.stderr


def test_predict_truncates_long_input_with_a_notice(db):
    result = invoke("predict", "good " * 2000, "--device", "cpu", "--db", db)
    assert result.exit_code == 0, result.output
    assert "truncated to 128" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["   "], "error: sentence 1 is empty"),
        ([EXPERIMENT], "'tiny' is an experiment, and nothing else was given to predict"),
        (["a", "b", "c"], "got 3 sentences"),
        (["--input", "x.csv"], "--input needs --task"),
        (["--task", "sst", "--input", "x.csv"], "x.csv: file not found"),
        (["a", "--output", "x.tsv"], "--output writes the predictions of --input"),
        (["nope", "--task", "sst", "--input", "x.csv", "--output", "y.tsv"], "no experiment 'nope'"),
        (["-e", EXPERIMENT, "--task", "para", "one sentence"], "task 'para' does not take one sentence"),
        ([], "nothing to predict"),
    ],
)
def test_predict_usage_errors_are_one_line(db, args, message):
    result = invoke("predict", *args, "--device", "cpu", "--db", db)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert result.stderr.count("error:") == 1


@pytest.mark.parametrize("output", [["--output", "-"], []], ids=["dash", "default"])
def test_predict_file_to_stdout(db, tiny_experiment, output):
    source = tiny_experiment.data_dir / "sts-dev.csv"
    result = invoke("predict", "--task", "sts", "--input", source, *output, "--scheme", "sts", "--device", "cpu", "--db", db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "id\tprediction" and len(lines) == 61
    assert all(0 <= float(line.split("\t")[1]) <= 5 for line in lines[1:])


def test_predict_file_with_a_missing_column_is_refused_before_the_models_load(db, tmp_path):
    source = tmp_path / "sts-no-sentence2.csv"
    source.write_text("\tid\tsentence1\tsimilarity\n0\ta\tA man plays.\t3.0\n")
    result = invoke("predict", "--task", "sts", "--input", source, "--device", "cpu", "--db", db)
    assert result.exit_code == 1, result.output
    assert f"{source}:1: header has columns" in result.stderr
    assert "loading the models" not in result.stderr
