"""The shared encoder's learning rate in a k-task run (config.multitask_lr): lr x sqrt(k) with
"sqrt", lr with "same"; the heads, each trained by one task, keep lr (or head_lr) either way."""

from __future__ import annotations

import math

import pytest

from powerbert.config import TrainConfig, apply_overrides, check_config
from powerbert.errors import ConfigError
from powerbert.model.multitask import build_model
from powerbert.training.step import make_optimizer


def _group_lrs(model_dir, tasks, **settings) -> tuple[float, float]:
    config = apply_overrides(TrainConfig(), {"tasks": tasks, "model": str(model_dir), "lr": 1e-4, **settings})
    model = build_model(config.model, config.tasks, config.heads)
    shared, heads = make_optimizer(model, config).param_groups
    assert {id(p) for p in shared["params"]} == {id(p) for p in model.shared_parameters()}
    return shared["lr"], heads["lr"]


def test_sqrt_scales_only_the_shared_encoder_by_the_root_of_the_number_of_tasks(tiny_model_dir):
    shared, heads = _group_lrs(tiny_model_dir, ("sst", "para", "sts"), multitask_lr="sqrt")
    assert shared == pytest.approx(1e-4 * math.sqrt(3))
    assert heads == pytest.approx(1e-4)
    assert _group_lrs(tiny_model_dir, ("sst", "para"), multitask_lr="sqrt", head_lr=1e-3) == pytest.approx((1e-4 * math.sqrt(2), 1e-3))


def test_a_single_task_run_and_the_default_keep_lr(tiny_model_dir):
    assert _group_lrs(tiny_model_dir, ("sst",), multitask_lr="sqrt") == pytest.approx((1e-4, 1e-4))
    assert _group_lrs(tiny_model_dir, ("sst", "para", "sts")) == pytest.approx((1e-4, 1e-4))


def test_an_unknown_rule_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"multitask_lr = 'half': expected same or sqrt"):
        check_config(apply_overrides(TrainConfig(), {"multitask_lr": "half"}))
