"""Task streams: each task's training batches as a pure function of (seed, task, pass, step).

Because a stream's position is the global step, resuming from step k sees exactly the batches
an uninterrupted run would have seen, whatever the epoch size rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from powerbert.config import TrainConfig
from powerbert.data.batching import EncodedTask, bucketed_batches
from powerbert.data.files import TaskData, load_split, skipped_summary
from powerbert.tasks import TASKS


class TaskStream:
    """An endless, reproducible sequence of bucketed batches over one task's rows."""

    def __init__(self, encoded: EncodedTask, batch_size: int, seed: int, max_rows: int | None,
                 window_batches: int = TrainConfig.bucket_window):
        self.encoded = encoded
        self.batch_size = batch_size
        self.seed = seed
        self.window_batches = window_batches
        self.task_index = list(TASKS).index(encoded.task)
        self.lengths = encoded.lengths()
        self.rows_per_pass = min(len(encoded), max_rows) if max_rows else len(encoded)
        self.batches_per_pass = math.ceil(self.rows_per_pass / batch_size)
        self._pass_index: int | None = None
        self._pass_batches: list[np.ndarray] = []

    def batch_rows(self, k: int) -> np.ndarray:
        """The rows of the k-th batch of the stream (0-based): what `batch(k)` collates."""
        pass_index, within = divmod(k, self.batches_per_pass)
        if pass_index != self._pass_index:
            rng = np.random.default_rng([self.seed, self.task_index, pass_index])
            rows = None
            if self.rows_per_pass < len(self.encoded):
                rows = rng.choice(len(self.encoded), self.rows_per_pass, replace=False)
            self._pass_batches = bucketed_batches(self.lengths, self.batch_size, rng, rows, window_batches=self.window_batches)
            self._pass_index = pass_index
        return self._pass_batches[within]

    def batch(self, k: int):
        """The k-th batch of the stream (0-based), collated."""
        return self.encoded.collate(self.batch_rows(k))

    def padded_tokens(self, k: int) -> int:
        """The k-th batch's size in padded tokens (rows times its longest): what a step costs by."""
        rows = self.batch_rows(k)
        return len(rows) * int(self.lengths[rows].max())


def load_training_data(config: TrainConfig, split: str, on_message: Callable[[str], None]) -> dict[str, TaskData]:
    loaded = {}
    for name in config.tasks:
        data = load_split(name, config.data_dir, split, skip_bad_rows=config.skip_bad_rows)
        note = skipped_summary(data)
        if note:
            on_message(note)
        loaded[name] = data
    return loaded
