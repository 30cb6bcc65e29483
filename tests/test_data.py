"""Reading and validating task files: every bad input gets a one-line FILE:LINE message.

Over 300 lines on purpose: one case per kind of bad row, the catalogue of what users get wrong in task files.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from powerbert.data.files import BadRow, check_data_dir, demo_dir, load_split, read_task_file, skipped_summary, task_path
from powerbert.data.rows import Example
from powerbert.errors import DataError
from powerbert.tasks import TASKS

SST_HEADER = "\tid\tsentence\tsentiment"
PARA_HEADER = "\tid\tsentence1\tsentence2\tis_duplicate"
STS_HEADER = "\tid\tsentence1\tsentence2\tsimilarity"


def write(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    """Write raw lines exactly as given, so tests control every byte."""
    data = newline.join(lines) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + data.encode("utf-8"))
    return path


def sst(tmp_path: Path, rows: list[str], **kw) -> Path:
    return write(tmp_path / "ids-sst-train.csv", [SST_HEADER, *rows], **kw)


def para(tmp_path: Path, rows: list[str], **kw) -> Path:
    return write(tmp_path / "quora-train.csv", [PARA_HEADER, *rows], **kw)


def sts(tmp_path: Path, rows: list[str], **kw) -> Path:
    return write(tmp_path / "sts-train.csv", [STS_HEADER, *rows], **kw)


def error(task: str, path: Path, **kw) -> str:
    with pytest.raises(DataError) as info:
        read_task_file(task, path, **kw)
    message = str(info.value)
    assert "\n" not in message  # one line for the user
    return message


GOOD_SST = ["0\taaa\tA warm , funny film .\t4", "1\tbbb\tA dull mess .\t1", "2\tccc\tFine .\t2"]


# ---- valid files ---------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_valid_sst_loads_with_bom_and_crlf(tmp_path, newline, bom):
    data = read_task_file("sst", sst(tmp_path, GOOD_SST, newline=newline, bom=bom))
    assert data.labelled and data.split == "train" and data.task is TASKS["sst"]
    assert data.examples == [
        Example("aaa", ("A warm , funny film .",), 4.0, 2),
        Example("bbb", ("A dull mess .",), 1.0, 3),
        Example("ccc", ("Fine .",), 2.0, 4),
    ]
    assert data.skipped == [] and len(data) == 3 and data.ids == ["aaa", "bbb", "ccc"]
    np.testing.assert_array_equal(data.labels, [4.0, 1.0, 2.0])


def test_quoted_fields_load_like_the_csv_module(tmp_path):
    rows = [
        '0\tq1\t"What does ""irony"" mean?"\tWhat is irony?\t1.0',
        "1\tq2\tIt's 5\" tall?\tHow tall?\t0.0",  # a quote inside an unquoted field is literal
    ]
    data = read_task_file("para", para(tmp_path, rows))
    assert data.examples[0].texts == ('What does "irony" mean?', "What is irony?")
    assert data.examples[1].texts == ('It\'s 5" tall?', "How tall?")
    assert [e.label for e in data.examples] == [1.0, 0.0]


def test_sts_floats_and_bounds(tmp_path):
    data = read_task_file("sts", sts(tmp_path, ["0\ta\tx\ty\t0.0", "1\tb\tx\tz\t5", "2\tc\tp\tq\t3.8"]))
    assert [e.label for e in data.examples] == [0.0, 5.0, 3.8]


def test_test_student_file_without_label_loads_unlabelled(tmp_path):
    path = write(tmp_path / "sts-test-student.csv", ["\tid\tsentence1\tsentence2", "0\ta\tx\ty"])
    data = read_task_file("sts", path)
    assert not data.labelled and data.split == "test-student"
    assert data.examples == [Example("a", ("x", "y"), None, 2)]
    assert np.isnan(data.labels).all()


def test_sst_test_student_with_two_row_number_columns(tmp_path):
    # The real SST test-student file was written by pandas twice: two leading index columns.
    path = write(tmp_path / "ids-sst-test-student.csv", ["0\t\tid\tsentence", "1\t0.0\tabc\t Effective ."])
    data = read_task_file("sst", path)
    assert not data.labelled and data.examples == [Example("abc", ("Effective .",), None, 2)]


def test_blank_lines_are_not_rows_and_line_numbers_stay_physical(tmp_path):
    data = read_task_file("sst", sst(tmp_path, [GOOD_SST[0], "", GOOD_SST[1]]))
    assert [e.line for e in data.examples] == [2, 4]


def test_loading_is_fast(tmp_path):
    rows = [f"{i}\tid{i}\tHow do I learn \"{i}\" fast?\tWhat is {i}?\t{i % 2}.0" for i in range(15000)]
    path = para(tmp_path, rows)
    start = time.perf_counter()
    assert len(read_task_file("para", path)) == 15000
    assert time.perf_counter() - start < 2.0  # about 0.2 s here; slack for a busy CI machine


# ---- bad rows: FILE:LINE: column NAME: value 'X': expected ... -----------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_bad_label_line_number_with_crlf_and_bom(tmp_path, newline, bom):
    path = sst(tmp_path, [*GOOD_SST, "3\tddd\tGreat .\t5"], newline=newline, bom=bom)
    assert error("sst", path) == f"{path}:5: column sentiment: value '5': expected a whole number 0..4"


@pytest.mark.parametrize(
    "label, expected",
    [
        ("5", "a whole number 0..4"),
        ("-1", "a whole number 0..4"),
        ("2.5", "a whole number 0..4"),
        ("pos", "a whole number 0..4"),
        ("", "a whole number 0..4"),
        ("nan", "a whole number 0..4"),
    ],
)
def test_bad_sst_labels(tmp_path, label, expected):
    path = sst(tmp_path, [GOOD_SST[0], f"1\tbbb\tA film .\t{label}"])
    assert error("sst", path) == f"{path}:3: column sentiment: value '{label}': expected {expected}"


@pytest.mark.parametrize("label", ["7.2", "-0.1", "inf", "NaN", "high"])
def test_bad_sts_labels(tmp_path, label):
    path = sts(tmp_path, [f"0\ta\tx\ty\t{label}"])
    assert error("sts", path) == f"{path}:2: column similarity: value '{label}': expected a number 0.0..5.0"


@pytest.mark.parametrize("label", ["2", "2.0", "0.5", "yes"])
def test_bad_para_labels(tmp_path, label):
    path = para(tmp_path, [f"0\ta\tx?\ty?\t{label}"])
    assert error("para", path) == f"{path}:2: column is_duplicate: value '{label}': expected 0 or 1"


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_sentence(tmp_path, text):
    path = para(tmp_path, ["0\ta\tx?\ty?\t1.0", f"1\tb\tx?\t{text}\t0.0"])
    assert error("para", path) == f"{path}:3: column sentence2: value '{text}': expected a non-empty sentence"


def test_empty_id(tmp_path):
    path = sst(tmp_path, ["0\t \tA film .\t2"])
    assert error("sst", path) == f"{path}:2: column id: value ' ': expected a non-empty id"


def test_too_few_fields(tmp_path):
    path = sst(tmp_path, [GOOD_SST[0], "1\tbbb\tA film ."])
    assert error("sst", path) == (
        f"{path}:3: row has 3 fields: expected 4 (row number, id, sentence, sentiment); "
        "column sentiment is missing"
    )


def test_too_many_fields(tmp_path):
    path = sst(tmp_path, ["0\taaa\tA film\t. Really .\t2"])
    assert error("sst", path) == (
        f"{path}:2: row has 5 fields: expected 4 (row number, id, sentence, sentiment); "
        "extra value '2' (a tab inside a sentence?)"
    )


def test_duplicate_id(tmp_path):
    path = sst(tmp_path, [GOOD_SST[0], GOOD_SST[1], "2\taaa\tAgain .\t3"])
    assert error("sst", path) == f"{path}:4: column id: value 'aaa': expected a unique id (line 2 has it too)"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_unbalanced_quote_swallowing_rows_reports_where_it_started(tmp_path, newline):
    rows = [GOOD_SST[0], '1\tbbb\t"A stray quote .\t1', "2\tccc\tSwallowed .\t2", '3\tddd\tEnds here" .\t3', "4\teee\tOk .\t3"]
    path = sst(tmp_path, rows, newline=newline)
    message = error("sst", path)
    assert message.startswith(f"{path}:3: column sentence: value 'A stray quote .\\t1")
    assert message.endswith("expected one line of text without tabs: an unbalanced quote in this field swallows lines 3-5")
    # Skipping it resumes after the swallowed lines, and says which lines went.
    data = read_task_file("sst", path, skip_bad_rows=True)
    assert [e.line for e in data.examples] == [2, 6]
    assert [b.line for b in data.skipped] == [3] and "swallows lines 3-5" in data.skipped[0].message


def test_quote_never_closed_swallows_to_the_end(tmp_path):
    path = sst(tmp_path, [GOOD_SST[0], '1\tbbb\t"Open .\t1', "2\tccc\tRest .\t2"])
    assert "swallows lines 3-4" in error("sst", path)


def test_quoted_tab_is_reported(tmp_path):
    path = sst(tmp_path, ['0\taaa\t"A\ttab"\t2'])
    assert error("sst", path) == (
        f"{path}:2: column sentence: value 'A\\ttab': expected one line of text without tabs: "
        "an unbalanced quote in this field swallows a tab"
    )


def test_stray_quote_hint_like_the_real_quora_rows(tmp_path):
    # As in the real quora-train.csv: a leading stray quote, and the label left empty.
    path = para(tmp_path, ['0\ta\tAny idea?\t"""Where can I find it?"\t'])
    assert error("para", path) == (
        f"{path}:2: column is_duplicate: value '': expected 0 or 1 "
        "(column sentence2 has an unmatched quote, which may have swallowed this field)"
    )


def test_rows_cut_short_at_a_stray_quote_are_skipped_and_reported_by_load_split(tmp_path):
    # Both shapes of the real quora-train.csv damage: the label empty after a stray quote in
    # sentence2 (line 3), both sentence2 and the label empty after one in sentence1 (line 4).
    rows = [
        "0\ta\tAny idea?\tHow so?\t1",
        '1\tb\tAny idea?\t"""Where can I find it?"\t',
        '2\tc\t"""Given a set of intervals?"\t\t',
        "3\td\tWhy?\tWhy not?\t0",
    ]
    path = para(tmp_path, rows)
    data = load_split("para", tmp_path, "train")
    assert data.ids == ["a", "d"] and [b.line for b in data.skipped] == [3, 4]
    assert all(b.cut_short for b in data.skipped)
    assert data.skipped[1].message == (
        f"{path}:4: column sentence2: value '': expected a non-empty sentence "
        "(column sentence1 has an unmatched quote, which may have swallowed this field)"
    )
    assert skipped_summary(data) == (
        "skipped 2 bad rows in quora-train.csv (lines 3, 4): cut short by a stray quote, no label to learn from"
    )
    # A file read for prediction must answer every row: there the same row stops the load.
    assert error("para", path).startswith(f"{path}:3: column is_duplicate: value ''")


def test_a_stray_quote_does_not_excuse_other_faults(tmp_path):
    # The label is there but out of range, or sentence2 is empty while the label is present:
    # not the cut-short damage, so the load stops as for any bad row.
    for bad in ('1\tb\t"""Any idea?"\tWhere?\t7', '1\tb\t"""Any idea?"\t\t1', "1\tb\tAny idea?\t\t"):
        path = para(tmp_path, ["0\ta\tAny idea?\tHow so?\t1", bad])
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}:3: "):
            load_split("para", tmp_path, "train")


def test_summary_counts_cut_short_rows_among_other_skipped_rows(tmp_path):
    rows = ["0\ta\tAny idea?\tHow so?\t1", '1\tb\tAny idea?\t"""Where?"\t', "2\tc\tWhy?\tWhy not?\t5"]
    data = load_split("para", para(tmp_path, rows).parent, "train", skip_bad_rows=True)
    assert skipped_summary(data) == "skipped 2 bad rows in quora-train.csv (lines 3, 4), 1 of them cut short by a stray quote"


def test_undecodable_bytes(tmp_path):
    path = tmp_path / "ids-sst-train.csv"
    path.write_bytes(b"\tid\tsentence\tsentiment\n0\ta\tfine .\t2\r\n1\tb\tcaf\xe9 bad .\t2\n")
    assert error("sst", path) == (
        f"{path}:3: column sentence: value 'caf\\xe9 bad .': expected UTF-8 text: "
        "the file is not valid UTF-8 (bytes \\xe9)"
    )
    data = read_task_file("sst", path, skip_bad_rows=True)
    assert len(data) == 1 and data.skipped[0].line == 3


def test_long_values_are_truncated(tmp_path):
    long = "x" * 200
    path = sst(tmp_path, [f"0\ta\tfine .\t{long}"])
    assert error("sst", path) == f"{path}:2: column sentiment: value '{'x' * 60}…': expected a whole number 0..4"


# ---- skipping ------------------------------------------------------------------------------


def test_skip_bad_rows_keeps_count_lines_and_messages(tmp_path):
    rows = [GOOD_SST[0], "1\tb\tA film .\t9", GOOD_SST[1], "3\td\t \t2", "4\taaa\tDup .\t1", GOOD_SST[2]]
    path = sst(tmp_path, rows, newline="\r\n", bom=True)
    data = read_task_file("sst", path, skip_bad_rows=True)
    assert [e.id for e in data.examples] == ["aaa", "bbb", "ccc"]
    assert [b.line for b in data.skipped] == [3, 5, 6]
    assert all(isinstance(b, BadRow) and b.path == path for b in data.skipped)
    assert data.skipped[0].message == f"{path}:3: column sentiment: value '9': expected a whole number 0..4"
    assert skipped_summary(data) == "skipped 3 bad rows in ids-sst-train.csv (lines 3, 5, 6)"


def test_skipped_summary_is_none_or_short(tmp_path):
    assert skipped_summary(read_task_file("sst", sst(tmp_path, GOOD_SST))) is None
    rows = [GOOD_SST[0], *[f"{i}\tid{i}\tx .\t7" for i in range(1, 13)]]
    data = read_task_file("sst", sst(tmp_path, rows), skip_bad_rows=True)
    assert skipped_summary(data) == "skipped 12 bad rows in ids-sst-train.csv (lines 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, …)"
    one = read_task_file("sst", sst(tmp_path, [GOOD_SST[0], "1\tb\tx .\t7"]), skip_bad_rows=True)
    assert skipped_summary(one) == "skipped 1 bad row in ids-sst-train.csv (line 3)"


# ---- file-level errors (never skipped) -----------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "quora-dev.csv"
    assert error("para", path, skip_bad_rows=True) == f"{path}: file not found (expected the Quora paraphrase dev file)"


def test_directory_instead_of_file(tmp_path):
    path = tmp_path / "sts-dev.csv"
    path.mkdir()
    assert error("sts", path) == f"{path}: is a directory, not a file (expected the STS similarity dev file)"


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\r\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "ids-sst-dev.csv"
    path.write_bytes(content)
    assert error("sst", path, skip_bad_rows=True) == (
        f"{path}: file is empty: expected a header line ('', id, sentence, sentiment)"
    )


def test_header_only(tmp_path):
    path = sst(tmp_path, [])
    assert error("sst", path) == f"{path}: file has a header but no rows: expected at least one example"


@pytest.mark.parametrize("bom", [False, True])
def test_wrong_header(tmp_path, bom):
    path = write(tmp_path / "ids-sst-train.csv", ["\tid\ttext\tlabel", "0\ta\tx\t1"], bom=bom)
    assert error("sst", path, skip_bad_rows=True) == (
        f"{path}:1: header has columns ('', id, text, label): expected ('', id, sentence, sentiment)"
        " (without sentiment in an unlabelled file)"
    )


def test_header_of_another_task(tmp_path):
    path = write(tmp_path / "quora-train.csv", [STS_HEADER, "0\ta\tx\ty\t1.0"])
    assert error("para", path).startswith(f"{path}:1: header has columns ('', id, sentence1, sentence2, similarity)")


def test_unknown_task(tmp_path):
    with pytest.raises(DataError, match="unknown task 'nli': expected one of sst, para, sts, cfimdb"):
        read_task_file("nli", tmp_path / "x.csv")


# ---- paths, splits and data directories ----------------------------------------------------


def test_task_path_and_demo_dir(tmp_path):
    assert task_path("sst", tmp_path, "dev") == tmp_path / "ids-sst-dev.csv"
    assert task_path(TASKS["para"], str(tmp_path), "test-student") == tmp_path / "quora-test-student.csv"
    assert task_path("sts", None, "train") == demo_dir() / "sts-train.csv"


def test_load_split_max_rows(tmp_path):
    rows = [f"{i}\tid{i}\tx{i} .\t{i % 5}" for i in range(10)]
    sst(tmp_path, rows)
    data = load_split("sst", tmp_path, "train", max_rows=4)
    assert data.ids == ["id0", "id1", "id2", "id3"]
    assert load_split("sst", tmp_path, "train", max_rows=4).ids == data.ids  # deterministic
    assert len(load_split("sst", tmp_path, "train", max_rows=100)) == 10
    with pytest.raises(DataError, match="max rows is 0"):
        load_split("sst", tmp_path, "train", max_rows=0)


def test_load_split_max_rows_still_checks_the_whole_file(tmp_path):
    sst(tmp_path, [*GOOD_SST, "3\tddd\tbad .\t8"])
    with pytest.raises(DataError, match=r":5: column sentiment"):
        load_split("sst", tmp_path, "train", max_rows=1)
    data = load_split("sst", tmp_path, "train", max_rows=1, skip_bad_rows=True)
    assert data.ids == ["aaa"] and [b.line for b in data.skipped] == [5]


def test_check_data_dir_names_every_missing_file(tmp_path):
    sst(tmp_path, GOOD_SST)
    write(tmp_path / "ids-sst-dev.csv", [SST_HEADER, *GOOD_SST])
    para(tmp_path, ["0\ta\tx?\ty?\t1.0"])
    check_data_dir(tmp_path, ["sst"])
    with pytest.raises(DataError) as info:
        check_data_dir(tmp_path, ["sst", "para", "sts"])
    assert str(info.value) == (
        f"data directory {tmp_path} is missing quora-dev.csv, sts-train.csv, sts-dev.csv "
        "(needed for tasks para, sts)"
    )
    with pytest.raises(DataError, match=r"is missing sts-test-student.csv \(needed for task sts\)$"):
        check_data_dir(tmp_path, ["sts"], splits=["test-student"])


def test_check_data_dir_missing_or_not_a_dir(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"data directory {tmp_path / 'nope'} does not exist")):
        check_data_dir(tmp_path / "nope", ["sst"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        check_data_dir(tmp_path / "file", ["sst"])


def test_check_data_dir_none_is_the_demo():
    check_data_dir(None, list(TASKS), splits=("train", "dev", "test-student"))


def test_quote_never_closed_in_a_huge_file_names_its_line(tmp_path):
    # Past the csv module's field size limit the reader gives up; the message still says where.
    rows = [GOOD_SST[0], '1\tbbb\t"Open .\t1', *[f"{i}\tid{i}\t{'word ' * 40}\t2" for i in range(2, 1000)]]
    path = sst(tmp_path, rows)
    message = error("sst", path, skip_bad_rows=True)
    assert message.startswith(f"{path}:3: cannot parse the row (field larger than field limit")
    assert message.endswith("is a quote here never closed?")


def test_undecodable_header(tmp_path):
    path = tmp_path / "ids-sst-train.csv"
    path.write_bytes(b"\tid\tsent\xffence\tsentiment\n0\ta\tfine .\t2\n")
    assert error("sst", path) == f"{path}:1: header is not valid UTF-8 (bytes \\xff)"
