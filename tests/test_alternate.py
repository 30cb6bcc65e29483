"""Multitask steps with `surgery = "alternate"`: each task's batch is an optimizer step of its
own (MT-DNN's multitask step), in an order drawn from (seed, step), so a resumed run takes the
same steps."""

import copy
from dataclasses import replace

import torch

from powerbert.data.batching import encode_task
from powerbert.model.multitask import build_model, load_tokenizer
from powerbert.model.surgery import make_combiner, step_rng
from powerbert.training.step import TrainStep, make_optimizer
from powerbert.training.streams import load_training_data
from tests.test_train import tiny_config


def _batches(config) -> dict:
    tokenizer = load_tokenizer(config.model)
    data = load_training_data(config, "train", lambda _: None)
    return {n: encode_task(d, tokenizer, pair_mode=config.heads.pair_mode(n), max_length=config.max_length).collate(list(range(8)))
            for n, d in data.items()}


def _train_step(config, model) -> TrainStep:
    return TrainStep(model, make_optimizer(model, config), make_combiner(config.surgery, config.seed, config.balance), config, torch.device("cpu"))


def test_an_alternate_step_is_one_optimizer_step_per_task_in_the_drawn_order(tiny_model_dir, toy_data_dir):
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "para", "sts"), surgery="alternate", seed=3)
    batches = _batches(config)
    model = build_model(config.model, config.tasks, config.heads).eval()  # no dropout: the runs compare exactly
    by_hand = copy.deepcopy(model)

    losses = _train_step(config, model)(batches, step=5)

    order = list(batches)
    step_rng(config.seed, 5).shuffle(order)
    assert order != list(batches)  # the drawn order, not the subset's
    one_task = _train_step(config, by_hand)
    for name in order:  # the same weights stepped on one task's batch at a time, by hand
        one_task({name: batches[name]}, step=5)
    assert set(losses) == set(batches)
    assert {int(s["step"]) for s in one_task.optimizer.state.values()} >= {3}  # the encoder: three updates
    for (name, a), b in zip(model.state_dict().items(), by_hand.state_dict().values(), strict=True):
        assert torch.equal(a, b), (name, (a - b).abs().max())


def test_an_alternate_step_is_not_the_summed_step(tiny_model_dir, toy_data_dir):
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "sts"), surgery="alternate")
    batches = _batches(config)
    alternate = build_model(config.model, config.tasks, config.heads).eval()
    summed = copy.deepcopy(alternate)
    _train_step(config, alternate)(batches, step=0)
    _train_step(replace(config, surgery="sum"), summed)(batches, step=0)
    encoder = [k for k in alternate.state_dict() if k.startswith("encoder.")]
    assert any(not torch.allclose(alternate.state_dict()[k], summed.state_dict()[k]) for k in encoder)
