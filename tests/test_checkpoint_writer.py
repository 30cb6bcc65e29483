"""The background checkpoint writer keeps the promises of a write in line: the file holds the
state at the moment of the snapshot, `on_done` comes after the file is whole and on the caller's
thread, and a failed write is raised (one line naming the file) from the next poll or wait."""

from __future__ import annotations

import threading

import pytest
import torch

from powerbert.errors import CheckpointError
from powerbert.model import checkpoint as ckpt
from powerbert.training.writer import CheckpointWriter


def test_the_file_holds_the_snapshot_not_what_training_did_next(tmp_path):
    weights = torch.zeros(1000)
    done = []
    writer = CheckpointWriter()
    writer.submit(tmp_path / "last.safetensors", {"w": weights}, {"step": 1},
                  lambda: done.append(((tmp_path / "last.safetensors").exists(), threading.current_thread())))
    weights += 1  # the next step changes the weights in place while the write may be running
    writer.wait()
    writer.close()
    tensors, meta = ckpt.load_tensors(tmp_path / "last.safetensors")
    assert tensors["w"].sum() == 0 and meta == {"step": 1}
    assert done == [(True, threading.current_thread())]


def test_a_new_snapshot_first_reports_the_pending_one(tmp_path):
    done = []
    writer = CheckpointWriter()
    for step in (1, 2):
        writer.submit(tmp_path / "last.safetensors", {"w": torch.full((10,), float(step))}, {"step": step}, lambda s=step: done.append(s))
    assert done == [1]
    writer.wait()
    writer.close()
    assert done == [1, 2] and ckpt.load_tensors(tmp_path / "last.safetensors")[1] == {"step": 2}


def test_a_failed_write_is_raised_from_wait_naming_the_file(tmp_path):
    writer = CheckpointWriter()
    missing = tmp_path / "gone" / "last.safetensors"  # its folder does not exist: the write fails
    writer.submit(missing, {"w": torch.zeros(3)}, {}, lambda: pytest.fail("a failed write was reported as done"))
    with pytest.raises(CheckpointError, match=rf"{missing}: cannot write"):
        writer.wait()
    writer.close()
