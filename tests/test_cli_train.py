"""`powerbert train` and the CLI's error handling, through typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from powerbert.cli.app import app
from tests.fixtures import write_task_file

runner = CliRunner()


def _train(*args):
    return runner.invoke(app, ["train", *args])


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("train", "run", "status", "watch", "list", "stop", "resume"):
        assert name in result.output


def test_train_prints_dev_scores_per_epoch(tiny_model_dir, toy_data_dir, tmp_path):
    result = _train(
        "--tasks", "sst,sts", "--data-dir", str(toy_data_dir), "--model", str(tiny_model_dir),
        "--epochs", "2", "--max-train", "32", "--lr", "1e-3", "--precision", "fp32", "--out", str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    assert "epoch 1 dev: sst" in result.output and "epoch 2 dev: sst" in result.output
    assert "sts" in result.output and "overall" in result.output
    # one optimizer step per task's batch, the best profile's (the default with --data-dir);
    # its balancing has nothing to balance: no gradients are combined
    text = " ".join(result.output.split())  # unwrapped
    assert "multitask gradients: alternate" in text and "norms balanced" not in text
    assert (tmp_path / "out" / "best.safetensors").exists()


def test_train_with_pcgrad_keeps_the_best_profiles_balancing(tiny_model_dir, toy_data_dir, tmp_path):
    result = _train(
        "--tasks", "sst,sts", "--data-dir", str(toy_data_dir), "--model", str(tiny_model_dir), "--surgery", "pcgrad",
        "--epochs", "1", "--max-train", "32", "--precision", "fp32", "--out", str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    assert "multitask gradients: pcgrad, norms balanced" in " ".join(result.output.split())


def test_malformed_file_exits_nonzero_with_file_and_line(tiny_model_dir, toy_data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"ids-sst-{split}.csv").write_bytes((toy_data_dir / f"ids-sst-{split}.csv").read_bytes())
    write_task_file(data / "ids-sst-train.csv", ["id", "sentence", "sentiment"], [["a1", "fine film", 3], ["a2", "bad film", 7]])
    result = _train("--tasks", "sst", "--data-dir", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert f"{data / 'ids-sst-train.csv'}:3: column sentiment: value '7'" in result.output
    assert "Traceback" not in result.output


def test_rows_cut_short_by_a_stray_quote_are_skipped_with_a_report(tiny_model_dir, toy_data_dir, tmp_path):
    # The public Quora file has two such rows: training goes on and says which it left out.
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"quora-{split}.csv").write_bytes((toy_data_dir / f"quora-{split}.csv").read_bytes())
    with open(data / "quora-train.csv", "a", encoding="utf-8") as f:
        f.write('999\tcut\twhat about tea ?\t"""why do i like tea ?"\t\n')
    lines = (data / "quora-train.csv").read_text(encoding="utf-8").count("\n")
    result = _train(
        "--tasks", "para", "--data-dir", str(data), "--model", str(tiny_model_dir), "--epochs", "1",
        "--max-train", "16", "--precision", "fp32", "--out", str(tmp_path / "o"),
    )
    assert result.exit_code == 0, result.output
    assert f"skipped 1 bad row in quora-train.csv (line {lines}): cut short by a stray quote" in result.output
    assert "epoch 1 dev: para" in result.output


def test_unknown_task_and_missing_model_are_one_line_errors(tmp_path, toy_data_dir):
    result = _train("--tasks", "sst,nope", "--data-dir", str(toy_data_dir))
    assert result.exit_code == 2 and "unknown task 'nope'" in result.output  # a bad setting: usage error
    result = _train("--tasks", "sst", "--data-dir", str(toy_data_dir), "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "no-such-model" in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 3


def test_missing_data_dir_files_named(tmp_path):
    result = _train("--tasks", "sst,sts", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "ids-sst-train.csv" in result.output and "sts-train.csv" in result.output


def test_hub_model_without_network_is_one_clear_line(monkeypatch, toy_data_dir, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the same answer as a machine with no network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    result = _train("--tasks", "sst", "--data-dir", str(toy_data_dir), "--model", "someorg/some-model", "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "someorg/some-model" in result.output and "no network" in result.output
