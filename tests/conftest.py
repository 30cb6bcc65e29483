"""Shared fixtures: a tiny random BERT with a WordPiece tokenizer, and tiny task files.

Nothing here downloads anything or reads ../shared: every test builds what it needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The test models are tiny: one thread beats two (no fork-join per op), and on a busy machine
# two threads per test process made small ops a thousand times slower.
torch.set_num_threads(1)
# ... and the same for the supervisors and workers the tests start (they inherit it).
os.environ.setdefault("POWERBERT_THREADS", "1")

from tests.fixtures import write_tiny_model, write_toy_dataset  # noqa: E402 - after the environment is set


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) and its WordPiece tokenizer, as a folder."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory) -> Path:
    """Separable toy versions of every task in the CS224N file format."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy-data"))


@pytest.fixture
def db_path(tmp_path) -> Path:
    """A runs.db prepared for the dashboard tests (tests/tui_harness.py: prepare_db)."""
    from tests.tui_harness import prepare_db

    path = tmp_path / "runs.db"
    prepare_db(path, tmp_path / "runs")
    return path


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory, tiny_model_dir, toy_data_dir):
    """A finished seven-run experiment on the tiny model (tests/test_predict.py builds it once)."""
    from tests.test_predict import build_tiny_experiment

    return build_tiny_experiment(tmp_path_factory.getbasetemp() / "tiny-experiment", tiny_model_dir, toy_data_dir)


@pytest.fixture
def db(tiny_experiment, tmp_path) -> Path:
    """A private copy of the finished experiment's runs.db (commands may write to it)."""
    from tests.test_predict import copy_db

    return copy_db(tiny_experiment.db, tmp_path / "runs.db")


@pytest.fixture(autouse=True)
def task_registry():
    """Tasks a test declares (a task file, an experiment's stored declarations) are registered
    process-wide, as in a real process; put the registry back after each test so that they do
    not leak into the next."""
    from powerbert import tasks

    before = dict(tasks.TASKS)
    yield
    tasks.TASKS.clear()
    tasks.TASKS.update(before)


@pytest.fixture
def janitor():
    """Kills, when the test ends, what it started: processes handed to it and the supervisors
    and workers of the databases it watches (tests/faults/helpers.py: Janitor)."""
    from tests.faults.helpers import Janitor

    j = Janitor()
    yield j
    j.cleanup()
