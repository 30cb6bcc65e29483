"""Files under faults: a full or read-only disk (case 10), a crash between writing a checkpoint
and renaming it (11), truncated, corrupt and pickled checkpoints (12, 13), and a task file that
went bad after the experiment was checked (14). Real tmpfs mounts, real kills, real workers.

Over 300 lines on purpose: each fault needs its own real set-up (mounts, kills, crafted files).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from powerbert.inference.loading import load_experiment_models
from powerbert.inference.predict import predict_texts
from powerbert.model import checkpoint as ckpt
from powerbert.runner import experiments
from powerbert.store import RunStatus, Store
from powerbert.training.callbacks import TrainCallbacks
from powerbert.training.loop import train_subset
from tests.faults.helpers import ROOT, cli, cli_env, clone_experiment, remount, tiny_config, wait_until


def tmp_leftovers(folder: Path) -> list[Path]:
    return sorted(Path(folder).rglob(ckpt.TMP_PREFIX + "*"))


# ---- case 10: a full disk, a read-only folder ------------------------------------------------


@pytest.mark.timeout(300)
def test_10_a_full_disk_fails_the_run_naming_the_file_and_resume_finishes_it(tmp_path, tmpfs, janitor, tiny_model_dir, toy_data_dir):
    # 300 KB: room for the logs and best.safetensors (110 KB), not for last.safetensors (325 KB).
    out = tmpfs(tmp_path / "small-disk", "300k")
    db = tmp_path / "runs.db"  # on the big disk: the run's story must still be told
    janitor.watch_db(db)
    store = Store(db)
    exp = experiments.create_experiment(store, tiny_config(tiny_model_dir, toy_data_dir, ("sst",), epochs=2), name="full", out_root=out)
    experiments.launch(db, store, exp)
    wait_until(lambda: store.get_experiment(exp.id).status.is_terminal, 180, "the experiment to end")
    run = store.runs(exp.id)[0]
    folder = Path(run.out_dir)
    last = folder / "last.safetensors"
    assert run.status == RunStatus.FAILED
    assert run.error == f"CheckpointError: {last}: cannot write: Error while serializing: I/O error: No space left on device (os error 28)"
    assert run.exit_code == 1  # the worker itself recorded why, though its log was on the full disk
    # Nothing half-written where a reader looks: no temporary, no partial file.
    assert tmp_leftovers(out) == []
    assert not last.exists()
    # The resume checkpoint after step 1 was the first write to hit the full disk: nothing else
    # was written, and no partial file is left (above).
    assert not (folder / "best.safetensors").exists()
    assert "experiment full failed" in (Path(exp.out_dir) / "supervisor.log").read_text()  # it outlived its log

    remount(out, "size=4m")  # space freed: resume starts over (there was no resume checkpoint)
    experiments.resume(db, store, "full")
    wait_until(lambda: store.get_experiment(exp.id).status.is_terminal, 180, "the resumed run to end")
    run = store.get_run(run.id)
    assert run.status == RunStatus.FINISHED, run.error
    steps = [m.step for m in store.metrics(run.id, names=["loss"])]
    assert steps == list(range(1, run.total_steps + 1))  # the failed attempt's rows are gone, not doubled
    store.close()


@pytest.mark.timeout(120)
def test_10_a_full_disk_injected_where_mounting_is_not_allowed(tmp_path, monkeypatch, tiny_model_dir, toy_data_dir):
    """The same fault without a tmpfs (CI without root): the checkpoint write gets ENOSPC after
    writing part of the file, in a worker run in this process."""
    import errno
    import signal

    from powerbert.runner import worker

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)  # a partial file, as a disk filling up mid-write leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)  # checkpoint.py imports it where it writes
    db = tmp_path / "runs.db"
    store = Store(db)
    exp = experiments.create_experiment(store, tiny_config(tiny_model_dir, toy_data_dir, ("sst",)), name="full", out_root=tmp_path / "runs")
    run = store.claim_next_queued(exp.id)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    threads = torch.get_num_threads()
    try:
        assert worker.run_worker(str(db), run.id, "cpu") == 1
    finally:  # run_worker sets up the process as a worker's: undo that for the tests after
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)
    run = store.get_run(run.id)
    folder = Path(run.out_dir)
    assert run.status == RunStatus.FAILED
    # The first checkpoint written is the resume checkpoint after step 1: that write fails.
    assert run.error == f"CheckpointError: {folder / 'last.safetensors'}: cannot write: No space left on device"
    assert tmp_leftovers(folder) == [] and not (folder / "last.safetensors").exists()
    assert not (folder / "best.safetensors").exists()
    store.close()


@pytest.mark.timeout(120)
def test_10_a_read_only_output_folder_is_refused_before_anything_starts(tmp_path, tmpfs, tiny_model_dir, toy_data_dir):
    ro = tmpfs(tmp_path / "ro", "1m", readonly=True)
    db = tmp_path / "runs.db"
    out = cli("run", "--tasks", "sst", "--data-dir", toy_data_dir, "--model", tiny_model_dir, "--name", "nowhere",
              "--out", ro, "--detach", env=cli_env(db))
    assert out.returncode == 1, out.stdout
    message = " ".join(out.stderr.split())
    assert f"{ro / 'nowhere'}: cannot create the folder: Read-only file system" in message
    assert "Traceback" not in out.stderr
    with Store(db) as store:
        assert store.list_experiments() == []  # nothing left queued with nowhere to write


# ---- case 11: a crash between writing and renaming -------------------------------------------

CRASH_BEFORE_RENAME = """
import os, signal, sys
from powerbert.model import checkpoint
from powerbert.config import TrainConfig
from powerbert.training.loop import train_subset
real_replace, saves = os.replace, []
def replace(src, dst):
    if str(dst).endswith("last.safetensors"):
        saves.append(dst)
        if len(saves) == 3:  # the third resume checkpoint (after step 1, epoch 1, epoch 2) is written and synced, not renamed
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
checkpoint.os.replace = replace
config = TrainConfig(tasks=("sst",), data_dir=sys.argv[1], model=sys.argv[2], epochs=3, max_train=32,
                     batch_size=16, lr=1e-3, precision="fp32", checkpoint_every_s=1e9)
train_subset(config, sys.argv[3])
"""


class Steps(TrainCallbacks):
    def __init__(self):
        self.starts, self.steps = [], []

    def on_start(self, info):
        self.starts.append(info.start_step)

    def on_step(self, step, epoch, losses, lr):
        self.steps.append(step)


@pytest.mark.timeout(180)
def test_11_a_crash_between_write_and_rename_keeps_the_previous_checkpoint(tmp_path, tiny_model_dir, toy_data_dir):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", CRASH_BEFORE_RENAME, str(toy_data_dir), str(tiny_model_dir), str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == -9, proc.stderr
    stale = tmp_leftovers(out)
    assert [p.name.startswith(ckpt.TMP_PREFIX + "last.safetensors") for p in stale] == [True]
    _, meta = ckpt.load_tensors(out / "last.safetensors")
    assert meta["step"] == 2  # the previous one (end of epoch 1), whole

    rec = Steps()
    result = train_subset(tiny_config(tiny_model_dir, toy_data_dir, ("sst",), epochs=3), out, rec, resume=True)
    assert result.status == "finished"
    assert rec.starts == [2] and rec.steps == [3, 4, 5, 6]
    assert tmp_leftovers(out) == []  # the next start removed the stale temporary


# ---- cases 12 and 13: damaged and malicious checkpoints ---------------------------------------


class Payload:
    """Unpickling this creates a file: what a crafted checkpoint would do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_pickle_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": Payload(marker), "step": 3}, path)  # a torch checkpoint is a pickle


def test_13_the_crafted_pickle_is_live(tmp_path):
    """The payload is real: loading it the unsafe way does run it (so the tests below mean it)."""
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    write_pickle_checkpoint(path, marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"], cwd=ROOT, capture_output=True, timeout=120)
    assert marker.exists()


def test_13_nothing_in_the_product_unpickles_or_runs_a_shell():
    offenders = []
    patterns = [
        (r"torch\.load\((?![^)]*weights_only\s*=\s*True)", "torch.load without weights_only=True"),
        (r"^\s*(import (pickle|dill|cloudpickle|marshal|shelve)\b|from (dill|cloudpickle|marshal|shelve) import)", "a pickle module"),
        (r"^\s*from pickle import (?!UnpicklingError\b)", "a pickle loader"),
        (r"(pickle|Unpickler)\.loads?\(|Unpickler\(", "unpickling"),
        (r"allow_pickle\s*=\s*True", "numpy allow_pickle"),
        (r"shell\s*=\s*True", "a shell"),
        (r"os\.(system|popen)\(", "a shell"),
        (r"(?<![\w.])(eval|exec)\(", "eval/exec"),
    ]
    for folder in ("powerbert", "tui"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for pattern, what in patterns:
                    if re.search(pattern, line):
                        offenders.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    assert offenders == []


def test_13_a_pickled_model_file_is_refused_in_one_line(tmp_path, tiny_model_dir):
    """--model FOLDER whose weights are a crafted pytorch_model.bin (no safetensors): refused by
    torch.load(weights_only=True) inside transformers, reported as a one-line ModelError."""
    from powerbert.errors import ModelError
    from powerbert.model.multitask import load_encoder

    folder, marker = tmp_path / "model", tmp_path / "pwned-by-model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    write_pickle_checkpoint(folder / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match=f"^model folder {folder}: cannot load its model: ") as info:
        load_encoder(str(folder))
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.timeout(300)
def test_12_13_resume_refuses_a_truncated_or_pickled_checkpoint_and_a_bad_file_is_named(hostile_experiment, tmp_path, janitor, toy_data_dir):
    db, store = clone_experiment(hostile_experiment.db, hostile_experiment.name, tmp_path / "clone")
    janitor.watch_db(db)
    exp = store.get_experiment(hostile_experiment.name)
    runs = {r.subset: r for r in store.runs(exp.id)}
    marker = tmp_path / "pwned-by-pickle"
    last = {s: Path(r.out_dir) / "last.safetensors" for s, r in runs.items()}
    data = last["sst"].read_bytes()
    last["sst"].write_bytes(data[: len(data) // 2])  # truncated
    write_pickle_checkpoint(last["sts"], marker)  # a pickle where safetensors belongs
    # sst+sts keeps a sound checkpoint, but its task file went bad after `run` checked it.
    bad_data = tmp_path / "data"
    shutil.copytree(exp.config["train"]["data_dir"], bad_data)
    shutil.copy(toy_data_dir / "ids-sst-train.csv", bad_data)  # without the rows it used to skip
    with open(bad_data / "sts-train.csv", "a", encoding="utf-8") as f:
        f.write("999\tbad\tone sentence\tanother\t7.2\n")
    config = dict(exp.config)
    config["train"] = {**config["train"], "data_dir": str(bad_data), "skip_bad_rows": False}
    config["launch"] = {**config["launch"], "max_parallel": 3}
    store.update_experiment(exp.id, config=config)
    for run in runs.values():
        store.update_run(run.id, status=RunStatus.STOPPED)

    experiments.resume(db, store, exp.name)
    wait_until(lambda: store.get_experiment(exp.id).status.is_terminal, 240, "the resumed runs to end")
    after = {s: store.get_run(r.id) for s, r in runs.items()}
    assert {s: r.status for s, r in after.items()} == {s: RunStatus.FAILED for s in runs}
    assert after["sst"].error.startswith(f"CheckpointError: {last['sst']}: checkpoint is truncated or corrupt")
    assert after["sts"].error.startswith(f"CheckpointError: {last['sts']}: checkpoint is truncated or corrupt")
    lines = (bad_data / "sts-train.csv").read_text().count("\n")
    assert after["sst+sts"].error == (
        f"DataError: {bad_data / 'sts-train.csv'}:{lines}: column similarity: value '7.2': expected a number 0.0..5.0"
    )
    assert not marker.exists()
    store.close()


@pytest.mark.timeout(300)
def test_12_13_ensembles_and_predict_leave_out_a_damaged_or_pickled_model_and_name_it(hostile_experiment, tmp_path):
    db, store = clone_experiment(hostile_experiment.db, hostile_experiment.name, tmp_path / "clone")
    exp = store.get_experiment(hostile_experiment.name)
    runs = {r.subset: r for r in store.runs(exp.id)}
    marker = tmp_path / "pwned-by-pickle"
    best = {s: Path(r.out_dir) / "best.safetensors" for s, r in runs.items()}
    write_pickle_checkpoint(best["sst"], marker)
    blob = bytearray(best["sts"].read_bytes())
    blob[:8] = b"\xff" * 8  # a corrupt header
    best["sts"].write_bytes(bytes(blob))

    loaded = load_experiment_models(store, exp.name)
    assert set(loaded.models) == {"sst+sts"}
    assert loaded.missing["sst"].startswith(f"{best['sst']}: checkpoint is truncated or corrupt")
    assert loaded.missing["sts"].startswith(f"{best['sts']}: checkpoint is truncated or corrupt")
    result = predict_texts(loaded, "sst", ["a good film ."])
    assert result.missing == ["sst"] and "sst+sts" in result.members
    assert any("sst" in n and "missing" in n for n in result.notices), result.notices
    # The command says which model is missing, and still answers with the rest.
    out = cli("predict", "--experiment", exp.name, "a good film .", env={**cli_env(db), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    said = " ".join((out.stdout + out.stderr).split())
    assert "sst+sts" in said and str(best["sst"]) in said, said
    assert not marker.exists()
    store.close()


@pytest.mark.timeout(120)
def test_10_an_output_folder_gone_read_only_fails_its_runs_naming_it(tmp_path, tmpfs, tiny_model_dir, toy_data_dir):
    """The experiment folder turns read-only after the experiment was made: `launch` says so in
    one line (leaving it queued, not 'running' with no supervisor), and a supervisor that finds
    a run folder it cannot write fails that run naming it and goes on."""
    from powerbert.errors import ExperimentError
    from powerbert.runner.local import LocalBackend
    from powerbert.store import ExperimentStatus

    out = tmpfs(tmp_path / "out", "1m")
    db = tmp_path / "runs.db"
    store = Store(db)
    exp = experiments.create_experiment(store, tiny_config(tiny_model_dir, toy_data_dir, ("sst", "sts")), name="ro", out_root=out)
    remount(out, "ro")
    with pytest.raises(ExperimentError, match=f"^{out / 'ro'}: folder is not writable$"):
        experiments.launch(db, store, exp)
    assert store.get_experiment(exp.id).status == ExperimentStatus.QUEUED
    store.update_experiment(exp.id, status="running")
    # The supervisor's local backend, in this process: it starts nothing it cannot log.
    backend = LocalBackend(str(db), store, store.get_experiment(exp.id), log=lambda text: None)
    backend.start_queued()
    assert backend.children == {}
    for run in store.runs(exp.id):
        assert run.status == RunStatus.FAILED
        assert run.error == f"{run.out_dir}: cannot write the run's folder: Read-only file system"
    store.close()
