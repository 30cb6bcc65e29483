"""Length bucketing (`bucket_window`): wide windows give batches of near-equal lengths, a window
of one batch gives batches of random rows; either way a pass serves every row once. And padding:
a batch is as wide as its longest row, rounded up to a multiple where the device wants one, and
the extra columns change nothing the model computes."""

from __future__ import annotations

import numpy as np
import pytest

from powerbert.config import TrainConfig, apply_overrides
from powerbert.data.batching import EncodedTask, bucketed_batches
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


def test_batches_are_padded_to_their_multiple_never_past_max_length():
    """A batch's width is its longest row rounded up to its pad_multiple, capped at max_length; the
    mask marks each row's own tokens, the ids and token types beyond them are padding."""
    first = [[2, 7, 3], [2, 7, 8, 9, 3], [2, 3]]
    encoded = EncodedTask("x", ["a", "b", "c"], None, first, [[0] * len(r) for r in first], None, pad_id=0, max_length=128, pad_multiple=8)
    batch = encoded.collate([0, 1, 2])
    assert batch.a["input_ids"].shape == (3, 8)
    assert batch.a["attention_mask"].sum(1).tolist() == [3, 5, 2]
    assert batch.a["input_ids"][1].tolist() == [2, 7, 8, 9, 3, 0, 0, 0]
    assert batch.a["token_type_ids"].shape == (3, 8) and batch.a["token_type_ids"].sum() == 0
    long_rows = [[5] * 11, [5] * 9]
    by_eight = lambda rows, second, max_length: EncodedTask("x", ["a"] * len(rows), None, rows, None, second, 0, max_length, 8)  # noqa: E731
    assert by_eight(long_rows, long_rows, 12).collate([0, 1]).a["input_ids"].shape == (2, 12)
    assert by_eight(long_rows, long_rows, 12).collate([0, 1]).b["input_ids"].shape == (2, 12)
    assert by_eight(long_rows, None, 11).collate([0, 1]).a["input_ids"].shape == (2, 11)
    assert by_eight([[5] * 16], None, 128).collate([0]).a["input_ids"].shape == (1, 16)
    # Without a multiple (a CPU in fp32), a batch is exactly as wide as its longest row.
    plain = EncodedTask("x", ["a", "b", "c"], None, first, [[0] * len(r) for r in first], None, pad_id=0, max_length=128)
    assert plain.collate([0, 1, 2]).a["input_ids"].shape == (3, 5)
    assert plain.collate([0, 1, 2]).a["token_type_ids"].shape == (3, 5)


def test_the_padding_columns_change_no_embedding(tiny_model_dir):
    """The columns added to reach the multiple are masked: each row's pooled embedding is the one
    it gets alone, padded to nothing (mean and CLS pooling, fp32)."""
    import torch

    from powerbert.config import HeadConfig
    from powerbert.model.multitask import MultitaskBert, load_encoder

    rows = [[2, 9, 10, 11, 3], [2, 12, 3], [2, 13, 14, 15, 16, 17, 18, 19, 20, 3]]
    for pooling in ("mean", "cls"):
        torch.manual_seed(0)
        model = MultitaskBert(load_encoder(str(tiny_model_dir), weights=False), ("sst",), HeadConfig(pooling=pooling)).eval()
        batch = EncodedTask("x", ["a", "b", "c"], None, rows, None, None, 0, max_length=128, pad_multiple=8).collate([0, 1, 2])
        assert batch.a["input_ids"].shape[1] == 16
        with torch.no_grad():
            together = model.embed(batch.a)
            alone = torch.cat([model.embed({"input_ids": torch.tensor([r]), "attention_mask": torch.ones(1, len(r), dtype=torch.long)}) for r in rows])
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
