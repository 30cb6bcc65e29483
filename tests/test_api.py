"""The Python API (`powerbert.load`): the README's example runs as written, answers agree with
`predict_texts`, and every mistake raises powerbert.UserError with one line."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import powerbert
from powerbert.inference import predict
from powerbert.results import DEFAULT_SCHEME
from powerbert.store import Store
from tests.test_predict import EXPERIMENT, one_torch_thread

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_api_example() -> str:
    section = README.read_text().split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(db, capsys):
    code = readme_api_example()
    assert 'powerbert.load("runs.db")' in code
    before = os.getcwd()
    os.chdir(db.parent)  # the example opens runs.db in the current folder
    try:
        with one_torch_thread():
            exec(compile(code, str(README), "exec"), {})  # noqa: S102 - the README's own example
    finally:
        os.chdir(before)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "('sst', 'para', 'sts')"
    assert re.fullmatch(r"\[Prediction\(label=\d, name='[a-z ]+', probabilities=\[.*\]\)\]", printed[1])
    assert re.fullmatch(r"\[Prediction\(score=[0-9.]+\)\]", printed[2])
    assert re.fullmatch(r"\[Prediction\(label=[01], name='(paraphrase|different)', probabilities=\[.*\]\)\]", printed[3])
    assert set(eval(printed[4])) == {"sst", "para", "sts"}  # noqa: S307 - a dict repr we printed


def test_answers_agree_with_predict_texts(db):
    with one_torch_thread():
        ens = powerbert.load(db, EXPERIMENT, device="cpu")
        sentences = ["what a good film", "a dull and tired mess"]
        answers = ens.predict("sst", sentences)
        with Store(db) as store:
            loaded = predict.load_experiment_models(store, EXPERIMENT, "cpu")
        direct = predict.predict_texts(loaded, "sst", sentences, DEFAULT_SCHEME)
    assert [a.label for a in answers] == [int(x) for x in direct.labels(DEFAULT_SCHEME)]
    np.testing.assert_allclose([a.probabilities for a in answers], direct.probabilities(DEFAULT_SCHEME), atol=1e-9)
    assert all(a.name == powerbert.tasks.TASKS["sst"].label_name(a.label) for a in answers)
    pair = ens.predict("sts", [("a b c", "a b d")], scheme="sts")  # one model by its name
    assert 0 <= pair[0].score <= 5 and pair[0].label is None
    assert ens.scores["sst"]["sst"] is not None and "weighted" in ens.scores


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda e: e.predict("cfimdb", ["x"]), "has no task cfimdb"),
        (lambda e: e.predict("nope", ["x"]), "unknown task 'nope'"),
        (lambda e: e.predict("sst", [("a", "b")]), "the task takes one sentence per input"),
        (lambda e: e.predict("sts", ["only one"]), "the task takes a pair of sentences per input"),
        (lambda e: e.predict("sst", []), "no input"),
        (lambda e: e.predict("sst", "a bare string"), "inputs must be a list of sentences"),
        (lambda e: e.predict("sst", ["x"], scheme="best"), "best"),
    ],
)
def test_mistakes_raise_one_line_user_errors(db, call, message):
    with one_torch_thread():
        ens = powerbert.load(db, device="cpu")
        with pytest.raises(powerbert.UserError) as info:
            call(ens)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_experiment_with_nothing_finished_is_a_user_error(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        store.create_experiment("empty", ("sst",), {"train": {}}, str(tmp_path), [("sst",)])
    with pytest.raises(powerbert.UserError, match="no finished experiment"):
        powerbert.load(tmp_path / "runs.db")
    with pytest.raises(powerbert.UserError, match="empty"):
        powerbert.load(tmp_path / "runs.db", "empty")
