"""A runs.db on a read-only mount (a results folder shared read-only, say) can be listed,
reported and predicted from: readers open the database read-only and write nothing, and the
commands that must write say so in one line. A real read-only bind mount; skipped where this
machine does not allow mounting (needs root or CAP_SYS_ADMIN)."""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from powerbert.cli import app
from tests.faults.helpers import clone_experiment, unmount
from tests.test_predict import EXPERIMENT, build_tiny_experiment, one_torch_thread


@pytest.fixture
def readonly_experiment(tmp_path_factory, tiny_model_dir, toy_data_dir, tmp_path):
    built = build_tiny_experiment(tmp_path_factory.getbasetemp() / "tiny-experiment", tiny_model_dir, toy_data_dir)
    folder = tmp_path / "shared"
    db, store = clone_experiment(built.db, EXPERIMENT, folder)
    store.close()
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip("cannot bind-mount here (needs root or CAP_SYS_ADMIN)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")  # it really is read-only
        yield db
    finally:
        unmount(folder)


def invoke(*args):
    with one_torch_thread():
        return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "120"})


def test_a_database_on_a_read_only_mount_can_be_listed_reported_and_predicted_from(readonly_experiment):
    db = readonly_experiment
    listed = invoke("list", "--db", db)
    assert listed.exit_code == 0, listed.output
    assert EXPERIMENT in listed.stdout
    status = invoke("status", EXPERIMENT, "--db", db)
    assert status.exit_code == 0 and "finished" in status.stdout, status.output
    report = invoke("report", EXPERIMENT, "--format", "json", "--db", db)
    assert report.exit_code == 0, report.output
    assert '"weighted"' in report.stdout
    predicted = invoke("predict", EXPERIMENT, "what a good film", "--device", "cpu", "--db", db)
    assert predicted.exit_code == 0, predicted.output
    assert "sst · SST sentiment" in predicted.stdout


def test_a_command_that_must_write_there_says_so_in_one_line(readonly_experiment):
    result = invoke("ensemble", EXPERIMENT, "--db", readonly_experiment)
    assert result.exit_code == 1, result.output
    assert "error:" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
