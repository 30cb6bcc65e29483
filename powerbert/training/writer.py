"""Resume checkpoints written beside training, not in its way.

A resume checkpoint holds the model, AdamW's two moments and the RNG state: three times the
weights (270 MB for MiniLM, 1.3 GB for bert-base), serialised and fsynced. Written in line it
stops training for that long after the first step, every `checkpoint_every_s` and at every
epoch's end. Instead the loop takes a snapshot (a copy on the host, between two steps, the only
part that waits) and one background thread writes it while the next steps run.

The promises stay those of a write in line: a checkpoint file is whole or absent (the write is
still `atomic_save_tensors`); at most one snapshot is pending (a new one first waits for the
last); `on_done` runs on the loop's thread, from `poll` or `wait`, once the file is durable, so
callbacks need no locks; an error of the write (a full disk) is raised from the next `poll` or
`wait`, a few steps later, as it would have been from the write itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from powerbert.model import checkpoint as ckpt


class CheckpointWriter:
    """Writes snapshots of tensors to checkpoint files, one at a time, on a background thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="powerbert-checkpoint")
        self._pending: tuple[Future, Callable[[], None]] | None = None

    def submit(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict, on_done: Callable[[], None]) -> None:
        """Snapshot `tensors` and `metadata` now (training may change them as soon as this
        returns) and write them to `path` in the background; `on_done()` once it is durable."""
        self.wait()
        snapshot = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
        frozen = json.loads(json.dumps(metadata))
        self._pending = (self._pool.submit(ckpt.atomic_save_tensors, path, snapshot, frozen), on_done)

    def poll(self) -> None:
        """Report the pending write if it has finished (raising its error, if it failed)."""
        if self._pending is not None and self._pending[0].done():
            self._finish()

    def wait(self) -> None:
        """Block until the pending write is durable, and report it."""
        if self._pending is not None:
            self._finish()

    def close(self) -> None:
        """Stop the writer. After `wait` nothing is pending; a loop ending on an error of its own
        comes here with a write perhaps in flight, which finishes (its file stays whole) but is
        not reported."""
        self._pending = None
        self._pool.shutdown(wait=True)

    def _finish(self) -> None:
        future, on_done = self._pending
        self._pending = None
        future.result()
        on_done()
