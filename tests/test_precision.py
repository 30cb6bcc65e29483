"""precision = "auto": bf16 autocast where the device multiplies bf16 matrices with a kernel of
its own, fp32 where torch would fall back to plain loops (16x slower on an AVX2-only CPU); a
run records the precision it resolved to, which prediction then uses. And what follows from it:
batches padded to a multiple of 8 under bf16, to their longest row in fp32 on a CPU."""

import json

import pytest
import torch

from powerbert.model import device as device_module
from powerbert.model.device import autocast_for, batch_width_multiple, resolve_precision
from powerbert.model.multitask import build_model
from powerbert.model.surgery import make_combiner
from powerbert.training.loop import train_subset
from powerbert.training.step import TrainStep, make_optimizer
from tests.test_train import tiny_config

CPU = torch.device("cpu")


def _cpu_with(monkeypatch, fast: bool) -> None:
    """Make this CPU one with (or without) bf16 matmul kernels: the one thing a test cannot pick."""
    monkeypatch.setattr(device_module, "fast_bf16", lambda device: fast)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_trains_at_bf16_only_where_the_device_has_bf16_kernels(monkeypatch, tiny_model_dir, toy_data_dir, fast):
    _cpu_with(monkeypatch, fast)
    assert resolve_precision("auto", CPU) == ("bf16" if fast else "fp32")
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"  # as set, always

    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst",), precision="auto", dropout_masks="torch")
    model = build_model(config.model, config.tasks, config.heads)
    step = TrainStep(model, make_optimizer(model, config), make_combiner("sum", 0), config, CPU)
    # bf16: the passes on a bf16 copy, with eager attention; fp32: the model itself, with SDPA.
    assert (step.passes is not None) == fast
    assert step.net.encoder.config._attn_implementation == ("eager" if fast else "sdpa")


@pytest.mark.parametrize("fast", [True, False])
def test_a_run_records_the_precision_it_trained_at(monkeypatch, tiny_model_dir, toy_data_dir, tmp_path, fast):
    _cpu_with(monkeypatch, fast)
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst",), precision="auto", epochs=1, max_train=16)
    assert train_subset(config, tmp_path).status == "finished"
    recorded = json.loads((tmp_path / "best.json").read_text())["config"]["precision"]
    assert recorded == ("bf16" if fast else "fp32")  # what prediction will evaluate at


def test_autocast_needs_a_resolved_precision():
    with pytest.raises(ValueError, match="expected bf16 or fp32"):
        autocast_for(CPU, "auto")


def test_batches_are_padded_to_a_multiple_of_8_on_a_gpu_and_under_bf16_and_not_in_fp32_on_a_cpu():
    assert batch_width_multiple(CPU, "bf16") == 8  # oneDNN builds its bf16 kernels per shape
    assert batch_width_multiple(CPU, "fp32") == 1  # the columns added would only be more work
    assert batch_width_multiple(torch.device("cuda"), "fp32") == batch_width_multiple(torch.device("cuda"), "bf16") == 8


def _sst_of_many_lengths(folder):
    """The toy SST files (every sentence the same length) with sentences of 2 to 14 words."""
    import random

    from tests.fixtures import FILLER, SENTIMENT, write_task_file

    rng = random.Random(0)
    for split, n in (("train", 64), ("dev", 32)):
        rows = []
        for i in range(n):
            label = rng.randrange(5)
            words = rng.choices(FILLER, k=rng.randrange(1, 14)) + [rng.choice(SENTIMENT[label]), "."]
            rows.append([f"s{i}", " ".join(words), label])
        write_task_file(folder / f"ids-sst-{split}.csv", ["id", "sentence", "sentiment"], rows)
    return folder


@pytest.mark.parametrize("fast", [True, False])
def test_a_run_pads_its_training_and_dev_batches_for_the_precision_it_resolved(monkeypatch, tiny_model_dir, tmp_path, fast):
    """Every batch a run trains and scores on: a multiple of 8 wide under bf16 (or max_length),
    exactly its longest row in fp32."""
    from powerbert.data import batching

    _cpu_with(monkeypatch, fast)
    batches = []
    collate = batching.EncodedTask.collate

    def recorded(self, indices):  # the real collate, its batches kept
        batches.append(collate(self, indices))
        return batches[-1]

    monkeypatch.setattr(batching.EncodedTask, "collate", recorded)
    (tmp_path / "data").mkdir()
    data = _sst_of_many_lengths(tmp_path / "data")
    config = tiny_config(tiny_model_dir, data, tasks=("sst",), precision="auto", epochs=1)
    assert train_subset(config, tmp_path / "run").status == "finished"
    widths = [(batch.a["input_ids"].shape[1], int(batch.a["attention_mask"].sum(1).max())) for batch in batches]
    assert len({longest for _, longest in widths}) > 3  # batches of several lengths, training and dev
    if fast:
        assert all(width % 8 == 0 and width >= longest for width, longest in widths), widths
    else:
        assert all(width == longest for width, longest in widths), widths
