"""The report in every format, its charts, and the error-analysis counts on hand-made examples."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from powerbert.outputs import TaskOutputs
from powerbert.results import DEFAULT_SCHEME
from powerbert.results.analysis import error_analysis
from powerbert.results.ensemble import SCHEMES, evaluate_all
from powerbert.results.report import build_report, render_charts, render_table, to_csv, to_json, to_markdown
from powerbert.tasks import power_set, subset_name
from tests.fixtures import noisy_outputs

TASKS = ("sst", "para", "sts")
FAILED = "para+sts"


@pytest.fixture(scope="module")
def report():
    """Seven subsets on random-but-informative dev outputs, one of them a failed run."""
    rng = np.random.default_rng(0)
    n = 60
    gold = {"sst": rng.integers(0, 5, n), "para": rng.integers(0, 2, n), "sts": rng.uniform(0, 5, n)}
    expected = [subset_name(s) for s in power_set(TASKS)]
    dev = {}
    for name in expected:
        if name == FAILED:
            continue
        dev[name] = {}
        for t in name.split("+"):
            dev[name][t] = TaskOutputs(t, [f"{t}{i}" for i in range(n)], gold[t], noisy_outputs(t, gold[t], rng))
    outcomes = evaluate_all(dev, TASKS, expected_models=expected)
    scores = {m: {t: o.score() for t, o in by_task.items()} for m, by_task in dev.items()}
    scores["sst"]["sst"] = 0.99  # a known best value for the sst column
    status = {m: "finished" for m in dev} | {FAILED: "failed"}
    return build_report("demo", TASKS, scores, status, outcomes)


def text_of(renderable) -> str:
    console = Console(record=True, width=120)
    console.print(renderable)
    return console.export_text()


def test_table_renders_models_schemes_best_marks_and_missing_runs(report):
    text = text_of(render_table(report))
    for header in ("sst acc", "para acc", "sts Pearson", "overall"):
        assert header in text
    for name in [subset_name(s) for s in power_set(TASKS)] + list(SCHEMES):
        assert name in text
    assert "0.990 ▲" in text
    assert "Runs not done: para+sts (failed)" in text
    assert "Missing from the para ensembles: para+sts" in text
    assert "Missing from the sst ensembles" not in text
    assert "learned weights, sst: " in text and "CV" in text


def test_rows_and_overall(report):
    names = [r.name for r in report.rows]
    assert names[:7] == [subset_name(s) for s in power_set(TASKS)]
    assert names[7:] == list(SCHEMES)
    rows = {r.name: r for r in report.rows}
    assert rows["sst"].overall is None  # one task is not an overall
    assert rows["sst+para+sts"].overall is not None
    assert rows["learned"].status == "5-fold CV" and rows["voting"].status == "dev"
    assert rows["learned"].weights["para"].keys() == {"para", "sst+para", "sst+para+sts"}


def test_markdown_has_a_header_row_and_marks_the_best_value(report):
    md = to_markdown(report)
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model / ensemble"))
    assert lines[header] == "| model / ensemble | status | sst acc | para acc | sts Pearson | overall |"
    assert lines[header + 1].startswith("| --- | --- | ---:")
    assert "| sst | finished | **0.990** ▲ | — | — | — |" in md
    assert md.count("▲") >= 4  # at least one per column, plus the legend


def test_csv_parses_back_to_the_table(report):
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [r["name"] for r in rows] == [r.name for r in report.rows]
    assert rows[0].keys() == {"name", "kind", "status", "sst", "para", "sts", "overall"}
    for parsed, row in zip(rows, report.rows):
        for task in TASKS:
            want = row.scores[task]
            assert (parsed[task] == "") if want is None else float(parsed[task]) == want
    assert next(r for r in rows if r["name"] == FAILED)["status"] == "failed"


def test_json_loads_with_analysis_weights_and_nulls(report):
    data = json.loads(to_json(report))
    assert data["tasks"] == list(TASKS) and data["analysis_scheme"] == DEFAULT_SCHEME
    assert data["best"]["sst"] == ["sst"]
    sst = data["analysis"]["sst"]
    assert sum(map(sum, sst["confusion"]["counts"])) == sst["n"] == 60
    assert sum(sst["difference"]["counts"]) == sst["summary"]["errors"]
    assert set(data["analysis"]) == {"sst", "para", "sts"}
    learned = next(r for r in data["rows"] if r["name"] == "learned")
    assert sum(learned["weights"]["sst"].values()) == pytest.approx(1)
    single = next(r for r in data["rows"] if r["name"] == FAILED)
    assert single["scores"]["para"] is None  # NaN / absent -> null, never NaN


def test_nan_scores_become_null_not_nan():
    nan_report = build_report("x", ("sst",), {"sst": {"sst": float("nan")}}, {"sst": "finished"}, [])
    text = to_json(nan_report)
    assert "NaN" not in text and json.loads(text)["rows"][0]["scores"]["sst"] is None


def test_charts_render_error_distributions_and_counts(report):
    text = text_of(render_charts(report))
    assert f"sst · {DEFAULT_SCHEME} ensemble · n=60" in text
    assert f"sts · {DEFAULT_SCHEME} ensemble" in text
    assert "predicted - gold" in text and "gold × predicted" in text
    assert "█" in text and "gold 4" in text and "-4" in text


def test_charts_say_so_when_the_scheme_has_no_outputs():
    empty = build_report("x", ("sts",), {}, {}, [], analysis_scheme="single")
    assert "No error analysis" in text_of(render_charts(empty))


def test_error_analysis_sst_counts():
    gold = np.array([0, 1, 2, 3, 4, 2])
    pred = np.array([0, 2, 2, 1, 0, 2])
    result = error_analysis("sst", pred, gold)
    diff = dict(zip(result["difference"]["labels"], result["difference"]["counts"]))
    assert diff == {"-4": 1, "-3": 0, "-2": 1, "-1": 0, "+1": 1, "+2": 0, "+3": 0, "+4": 0}
    conf = np.array(result["confusion"]["counts"])
    expected = np.zeros((5, 5), int)
    for g, p in zip(gold, pred):
        expected[g, p] += 1
    np.testing.assert_array_equal(conf, expected)
    assert result["summary"]["errors"] == 3 and result["summary"]["accuracy"] == pytest.approx(0.5)
    json.dumps(result, allow_nan=False)


def test_error_analysis_sts_bins_and_half_up_buckets():
    gold = np.array([0.0, 2.5, 4.9, 1.2, np.nan])
    pred = np.array([0.4, 3.0, 2.0, 1.2, 3.3])  # the NaN-gold row is left out
    result = error_analysis("sts", pred, gold)
    assert result["n"] == 4
    diff = dict(zip(result["difference"]["labels"], result["difference"]["counts"]))
    assert len(diff) == 20 and sum(diff.values()) == 4
    assert diff["+0.0..+0.5"] == 2 and diff["+0.5..+1.0"] == 1 and diff["-3.0..-2.5"] == 1
    conf = np.array(result["confusion"]["counts"])
    assert conf.shape == (6, 6) and conf.sum() == 4
    assert conf[0, 0] == conf[3, 3] == conf[5, 2] == conf[1, 1] == 1  # 2.5 rounds up to 3


def test_error_analysis_para_confusion_and_shape_check():
    result = error_analysis("para", np.array([1, 0, 1, 1]), np.array([1, 1, 0, 1]))
    assert result["confusion"]["counts"] == [[0, 1], [1, 2]]
    assert result["difference"]["labels"] == ["-1", "+1"] and result["difference"]["counts"] == [1, 1]
    with pytest.raises(ValueError, match="not logits"):
        error_analysis("sst", np.zeros((4, 5)), np.zeros(4))
