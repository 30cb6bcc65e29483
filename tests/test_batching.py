"""Length bucketing (`bucket_window`): wide windows give batches of near-equal lengths, a window
of one batch gives batches of random rows; either way a pass serves every row once."""

from __future__ import annotations

import numpy as np
import pytest

from powerbert.config import TrainConfig, apply_overrides
from powerbert.data.batching import bucketed_batches
from powerbert.errors import ConfigError


def spread(batches, lengths) -> float:
    """Mean over batches of (longest - shortest row): the padding a batch carries."""
    return float(np.mean([lengths[b].max() - lengths[b].min() for b in batches]))


@pytest.mark.parametrize("window", [1, 4, 50])
def test_a_pass_serves_every_row_once_whatever_the_window(window):
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    batches = bucketed_batches(lengths, 16, np.random.default_rng(1), window_batches=window)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)


def test_wide_windows_bucket_by_length_and_a_window_of_one_batch_does_not():
    lengths = np.random.default_rng(0).integers(3, 60, size=1600)
    bucketed = bucketed_batches(lengths, 16, np.random.default_rng(1), window_batches=50)
    random_rows = bucketed_batches(lengths, 16, np.random.default_rng(1), window_batches=1)
    assert spread(bucketed, lengths) < 2
    assert spread(random_rows, lengths) > 30


def test_a_window_below_one_batch_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match=r"bucket_window = 0: expected a whole number of batches, at least 1"):
        apply_overrides(TrainConfig(), {"bucket_window": 0})
