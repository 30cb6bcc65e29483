"""precision = "auto": bf16 autocast where the device multiplies bf16 matrices with a kernel of
its own, fp32 where torch would fall back to plain loops (16x slower on an AVX2-only CPU); a
run records the precision it resolved to, which prediction then uses."""

import json

import pytest
import torch

from powerbert.model import device as device_module
from powerbert.model.device import autocast_for, resolve_precision
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
