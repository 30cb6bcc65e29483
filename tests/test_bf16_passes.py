"""Training passes on a bf16 copy of the encoder (`train_weights = "bf16"`): AdamW steps the
model's fp32 weights, the copy follows them after every step (the word-embedding rows a step
changed included), and the step moves the weights as the autocast step does."""

import copy
from dataclasses import replace

import pytest
import torch

from powerbert.model.multitask import build_model
from powerbert.training.bf16_passes import Bf16Passes
from tests.test_alternate import _batches, _train_step
from tests.test_train import tiny_config


def _config(tiny_model_dir, toy_data_dir, **kw):
    return tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "sts"), precision="bf16", train_weights="bf16", **kw)


@pytest.mark.parametrize("table_update", ["rows", "dense"])
@pytest.mark.parametrize(("surgery", "balance"), [("alternate", "none"), ("pcgrad", "norm")])
def test_bf16_passes_step_the_fp32_weights_and_keep_their_copy_current(tiny_model_dir, toy_data_dir, surgery, balance, table_update):
    config = _config(tiny_model_dir, toy_data_dir, surgery=surgery, balance=balance, embedding_update=table_update)
    batches = _batches(config)
    model = build_model(config.model, config.tasks, config.heads).train()
    before = copy.deepcopy(model.state_dict())
    step = _train_step(config, model)
    assert step.net.heads is model.heads  # the heads train in place, in fp32
    for n in range(3):
        step(batches, step=n)

    table = model.encoder.get_input_embeddings().weight
    # By rows, the refresh copies the rows a step changed; dense, the whole table.
    assert step.row_table is (table if table_update == "rows" else None)
    for (name, weight), copied in zip(model.encoder.named_parameters(), step.net.encoder.parameters(), strict=True):
        assert weight.dtype == torch.float32 and copied.dtype == torch.bfloat16, name
        assert torch.equal(copied, weight.to(torch.bfloat16)), (name, (copied.float() - weight).abs().max())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("heads.") for k in changed)
    assert not table.equal(before["encoder.embeddings.word_embeddings.weight"])


def test_a_bf16_pass_step_has_the_autocast_steps_gradients(tiny_model_dir, toy_data_dir):
    config = _config(tiny_model_dir, toy_data_dir, surgery="sum", grad_clip=0.0)  # unclipped: their scale too
    batches = _batches(config)
    on_copy = build_model(config.model, config.tasks, config.heads).eval()  # no dropout: the same passes
    autocast = copy.deepcopy(on_copy)
    _train_step(config, on_copy)(batches, step=0)
    _train_step(replace(config, train_weights="fp32"), autocast)(batches, step=0)

    def gradient(model):  # every gradient the optimizer stepped with (the unused pooler has none)
        return torch.cat([p.grad.to_dense().flatten() for p in model.parameters() if p.grad is not None])

    a, b = gradient(on_copy), gradient(autocast)
    assert a.dtype == torch.float32
    # bf16 keeps about 3 significant digits: the two gradients agree to a few percent.
    assert (a - b).norm() / b.norm() < 0.05, ((a - b).norm() / b.norm()).item()


def test_each_hand_over_gives_the_weights_the_passes_latest_gradients(tiny_model_dir, toy_data_dir):
    config = _config(tiny_model_dir, toy_data_dir)
    model = build_model(config.model, config.tasks, config.heads)
    passes = Bf16Passes(model)
    named = list(zip(model.encoder.named_parameters(), passes.net.encoder.parameters(), strict=True))
    for _ in range(2):  # twice: a hand-over gives this pass's gradients, nothing left from the one before
        expected = {}
        for (name, weight), copied in named:
            weight.grad = None  # as the step's zero_grad(set_to_none=True) leaves them
            if not name.startswith("pooler."):  # the pooler is unused: it gets no gradient
                copied.grad = torch.randn_like(copied)
                expected[name] = copied.grad.float()
        passes.grads_to_weights()
        for (name, weight), copied in named:
            assert copied.grad is None, name
            if name in expected:
                assert weight.grad.dtype == torch.float32 and torch.equal(weight.grad, expected[name]), name
            else:
                assert weight.grad is None, name
