"""A first run without surprises: bad settings refused before anything exists, reading commands
that never create a database, devices recorded as used, disk that cleans up (finished runs
drop their resume state; `delete` and `prune`), `status --json`, and `run` followed through a
pipe. Real store, real worker (in-process), tiny model."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from powerbert.cli import app
from powerbert.cli.live import follow
from powerbert.config import TrainConfig
from powerbert.runner import experiments
from powerbert.store import ExperimentStatus, RunStatus, Store
from tests.fixtures import run_worker_here

RUNNER = CliRunner()


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env={"COLUMNS": "120"})


def train_in_process(db: Path, run_id: int, device_label: str = "cpu") -> None:
    """The real worker, in this process."""
    assert run_worker_here(db, run_id, device_label) == 0


@pytest.fixture
def finished(tmp_path, tiny_model_dir, toy_data_dir):
    """A finished one-run (sst) experiment, trained by the real worker; and a function to make more."""

    def make(name: str, **kw):
        config = TrainConfig(tasks=("sst",), data_dir=str(toy_data_dir), model=str(tiny_model_dir), epochs=1,
                             max_train=32, batch_size=16, lr=1e-3, precision="fp32", checkpoint_every_s=1e9)
        with Store(tmp_path / "runs.db") as store:
            exp = experiments.create_experiment(store, config, name=name, out_root=tmp_path / "runs", **kw)
            run = store.runs(exp.id)[0]
            train_in_process(tmp_path / "runs.db", run.id)
            store.update_experiment(exp.id, status=ExperimentStatus.FINISHED)
            return store.get_experiment(exp.id), store.get_run(run.id)

    torch.set_num_threads(1)
    return make


# ---- bad settings: exit 2, one line, nothing written ---------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "lr=abc"], "lr = 'abc': expected a number"),
        (["--set", "epochs=abc"], "epochs = 'abc': expected a whole number"),
        (["--set", "pooling=max"], "pooling = 'max': expected mean or cls"),
        (["--precision", "fp16"], "precision = 'fp16': expected auto or bf16 or fp32"),
        (["--precision", "fp32", "--set", "train_weights=bf16"], "train_weights = bf16 with precision = fp32: expected precision bf16"),
        (["--set", "dropout_masks=fast"], "dropout_masks = 'fast': expected auto or torch or packed"),
        (["--set", "warmup=1.5"], "warmup = 1.5: expected a fraction"),
        (["--set", "max_length=100000"], "max_length = 100000: expected at most"),
        (["--gpus", "0"], "--gpus 0: "),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_and_leaves_nothing(tmp_path, tiny_model_dir, toy_data_dir, args, message):
    if args[0] == "--gpus" and torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU 0")
    result = invoke("run", "--tasks", "sst", "--data-dir", toy_data_dir, "--model", tiny_model_dir, *args,
                    "--db", tmp_path / "runs.db", "--out", tmp_path / "runs", "--detach")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs.db").exists() and not (tmp_path / "runs").exists()


def test_train_checks_the_same_settings(tmp_path, tiny_model_dir, toy_data_dir):
    result = invoke("train", "--tasks", "sst", "--data-dir", toy_data_dir, "--model", tiny_model_dir, "--set", "lr=abc", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "lr = 'abc'" in result.stderr
    assert not (tmp_path / "out").exists()


# ---- reading commands never create a database ------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["list"], ["watch"], ["report"], ["predict", "some text"], ["stop", "x"], ["resume", "x"], ["ensemble"]])
def test_commands_on_a_missing_database_create_nothing_and_say_where_they_looked(tmp_path, command):
    db = tmp_path / "runz.db"
    result = invoke(*command, "--db", db)
    assert result.exit_code == 1, result.output
    assert f"no runs.db at {db}" in result.stderr and "--db" in result.stderr and "POWERBERT_DB" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---- devices as used, disk, status --json ----------------------------------------------------


def test_the_device_recorded_is_the_one_the_run_trained_on(finished, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("with a GPU the cuda slot would really train on it")
    exp, _ = finished("asked-cuda")
    with Store(tmp_path / "runs.db") as store:
        exp2 = experiments.create_experiment(store, TrainConfig.from_dict({**exp.config["train"]}), name="slot-cuda", out_root=tmp_path / "runs")
        run = store.runs(exp2.id)[0]
    train_in_process(tmp_path / "runs.db", run.id, device_label="cuda:0")  # the slot said cuda:0
    with Store(tmp_path / "runs.db") as store:
        assert store.get_run(run.id).device == "cpu"  # what it trained on


def test_a_finished_run_keeps_what_prediction_needs_and_drops_its_resume_state(finished, tmp_path):
    _, run = finished("lean")
    folder = Path(run.out_dir)
    assert (folder / "best.safetensors").exists() and (folder / "best.json").exists()
    assert not (folder / "last.safetensors").exists()
    _, kept = finished("kept", keep_resume_state=True)
    assert (Path(kept.out_dir) / "last.safetensors").exists()


def test_status_json_has_every_run_with_device_checkpoints_and_disk(finished, tmp_path):
    exp, run = finished("js")
    result = invoke("status", "js", "--json", "--db", tmp_path / "runs.db")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["experiment"]["name"] == "js" and data["disk_bytes"] > 0
    (record,) = data["runs"]
    assert record["status"] == "finished" and record["device"] == "cpu" and record["pid"] == run.pid
    assert record["step"] == record["total_steps"] == run.total_steps
    assert record["checkpoints"]["best"].endswith("best.safetensors") and record["checkpoints"]["last"] is None
    assert record["disk_bytes"] == sum(p.stat().st_size for p in Path(run.out_dir).iterdir())


def test_prune_removes_the_resume_state_finished_runs_kept(finished, tmp_path):
    _, run = finished("kept", keep_resume_state=True)
    last = Path(run.out_dir) / "last.safetensors"
    size = last.stat().st_size
    result = invoke("prune", "--yes", "--db", tmp_path / "runs.db")
    assert result.exit_code == 0, result.output
    assert not last.exists() and (Path(run.out_dir) / "best.safetensors").exists()
    assert "removed the resume state of 1 finished runs" in result.stdout
    assert invoke("prune", "--yes", "--db", tmp_path / "runs.db").stdout.startswith("nothing to prune")
    assert size > 0


def test_prune_and_delete_without_a_terminal_need_yes(finished, tmp_path):
    finished("kept", keep_resume_state=True)
    result = invoke("prune", "--db", tmp_path / "runs.db")
    assert result.exit_code == 2 and "needs --yes" in result.stderr


def test_delete_a_run_then_the_experiment_removes_rows_and_files(finished, tmp_path):
    exp, run = finished("gone")
    db = tmp_path / "runs.db"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("not powerbert's")
    result = invoke("delete", "gone/sst", "--yes", "--db", db)
    assert result.exit_code == 0, result.output
    assert not Path(run.out_dir).exists() and "freed" in result.stdout
    with Store(db) as store:
        assert store.runs(exp.id) == []
    result = invoke("delete", "gone", "--yes", "--db", db)
    assert result.exit_code == 0, result.output
    assert not Path(exp.out_dir).exists()
    with Store(db) as store:
        assert [e.name for e in store.list_experiments()] == []
    assert (outside / "keep.txt").exists()


def test_delete_refuses_a_running_run_and_never_touches_a_folder_outside(finished, tmp_path):
    exp, run = finished("busy")
    db = tmp_path / "runs.db"
    with Store(db) as store:  # the run claims this live process as its worker
        store.update_run(run.id, status=RunStatus.RUNNING)
        store.mark_run_started(run.id, os.getpid(), __import__("powerbert.store", fromlist=["x"]).process_start_time(os.getpid()), os.uname().nodename, "cpu")
    result = invoke("delete", "busy", "--yes", "--db", db)
    assert result.exit_code == 1 and "running" in result.stderr
    assert Path(run.out_dir).exists()
    outside = tmp_path / "outside-run"
    outside.mkdir()
    (outside / "best.safetensors").write_text("someone else's")
    with Store(db) as store:
        store.finish_run(run.id, RunStatus.FINISHED)
        store.update_run(run.id, out_dir=str(outside))
    result = invoke("delete", "busy", "--yes", "--db", db)
    assert result.exit_code == 0, result.output
    assert (outside / "best.safetensors").exists() and f"kept {outside}" in result.stdout


# ---- following a run through a pipe -----------------------------------------------------------


def test_following_through_a_pipe_prints_a_line_per_change_then_the_table(finished, tmp_path):
    exp, run = finished("piped")
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with Store(tmp_path / "runs.db") as store:
        follow(store, exp.id, console, refresh_s=0.01)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("sst: finished, step 2/2, epoch 1, best sst " + f"{run.best_scores['sst']:.3f}")
    assert any(line.startswith("piped — finished") for line in lines[1:])  # the table, on its own line


def test_version_and_short_help():
    from powerbert import __version__

    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"powerbert {__version__}"
    for args in (["-h"], ["status", "-h"], ["run", "-h"]):
        short = invoke(*args)
        assert short.exit_code == 0 and "Usage:" in short.stdout, args
