"""The built-in demo dataset: loads with the real reader, right sizes, no train/dev overlap."""

from __future__ import annotations

import csv
import filecmp

import pytest

from powerbert.data.demo import generate
from powerbert.data.files import check_data_dir, demo_dir, load_split
from powerbert.tasks import TASKS

SPLITS = ("train", "dev", "test-student")
SIZE_RANGES = {"train": (300, 500), "dev": (80, 150), "test-student": (30, 80)}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("split", SPLITS)
def test_demo_files_load(task, split):
    data = load_split(task, None, split)
    assert data.path.parent == demo_dir() and data.skipped == []
    assert data.labelled == (split != "test-student")
    low, high = SIZE_RANGES[split]
    if task == "cfimdb":  # the optional task's demo is smaller
        low, high = low // 2, high
    assert low <= len(data) <= high
    assert all(len(e.texts) == len(TASKS[task].text_columns) for e in data.examples)


def test_every_demo_file_is_present():
    check_data_dir(None, list(TASKS), splits=SPLITS)


@pytest.mark.parametrize("task", list(TASKS))
def test_no_row_repeats_across_splits(task):
    seen: dict[tuple[str, ...], str] = {}
    ids: set[str] = set()
    for split in SPLITS:
        for e in load_split(task, None, split).examples:
            assert e.texts not in seen, f"{task} {split} line {e.line} repeats a {seen[e.texts]} row"
            seen[e.texts] = split
            assert e.id not in ids
            ids.add(e.id)


@pytest.mark.parametrize("task", list(TASKS))
def test_labels_cover_the_range(task):
    spec = TASKS[task]
    for split in ("train", "dev"):
        labels = [e.label for e in load_split(task, None, split).examples]
        if spec.kind == "regress":
            assert min(labels) <= spec.label_min + 0.5 and max(labels) >= spec.label_max - 0.5
            assert len(set(labels)) >= 10  # graded, not a handful of values
        else:
            counts = {c: labels.count(float(c)) for c in range(spec.num_classes)}
            # every class present, none rarer than a third of an even share
            assert min(counts.values()) >= len(labels) / spec.num_classes / 3, counts


def test_files_are_in_the_cs224n_format():
    with open(demo_dir() / "quora-train.csv", encoding="utf-8", newline="") as f:
        text = f.read()
    assert "\r" not in text and not text.startswith("\ufeff")
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    assert rows[0] == ["", "id", "sentence1", "sentence2", "is_duplicate"]
    assert [r[0] for r in rows[1:4]] == ["0", "1", "2"]
    assert {r[-1] for r in rows[1:]} == {"0.0", "1.0"}
    assert all(len(r[1]) == 25 and int(r[1], 16) >= 0 for r in rows[1:])
    assert '"""' in text or '""' in text  # some questions quote a word, so csv quoting is exercised
    with open(demo_dir() / "ids-sst-train.csv", encoding="utf-8", newline="") as f:
        sst_labels = {r[-1] for r in csv.reader(f, delimiter="\t")}
    assert sst_labels == {"sentiment", "0", "1", "2", "3", "4"}


def test_generator_is_deterministic_and_matches_the_shipped_files(tmp_path):
    generate.main([str(tmp_path)])
    shipped = sorted(p.name for p in demo_dir().glob("*.csv"))
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == shipped
    _, mismatch, errors = filecmp.cmpfiles(demo_dir(), tmp_path, shipped, shallow=False)
    assert mismatch == [] and errors == [], "rerun: python -m powerbert.data.demo.generate"


def test_demo_is_marked_synthetic():
    readme = (demo_dir() / "README.md").read_text(encoding="utf-8").lower()
    assert "synthetic" in readme and "python -m powerbert.data.demo.generate" in readme
