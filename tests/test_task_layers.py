"""Each task's own top layers (`task_layers = K`): the copies start as the encoder's top K layers,
a task's step trains its own copy and no other task's, bf16 passes copy them too, the setting is
checked against the model before anything starts, and prediction reproduces what a run with
them stored for dev (its cached embeddings kept apart per task)."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from powerbert.config import HeadConfig, apply_overrides
from powerbert.data.files import read_task_file
from powerbert.errors import ConfigError
from powerbert.inference import predict
from powerbert.model.multitask import build_model
from powerbert.results import evaluate as results
from powerbert.runner import experiments
from powerbert.runner.checks import check_model
from powerbert.runner.plan import plan_experiment
from powerbert.store import Store
from powerbert.subsets import select_subsets
from powerbert.tasks import TASKS
from tests.fixtures import run_worker_here
from tests.test_alternate import _batches, _train_step
from tests.test_predict import one_torch_thread, task_texts
from tests.test_train import tiny_config

TASKS3 = ("sst", "para", "sts")


def _config(tiny_model_dir, toy_data_dir, layers=1, **kw):
    return tiny_config(tiny_model_dir, toy_data_dir, **{"tasks": TASKS3, "heads": HeadConfig(task_layers=layers), **kw})


def test_each_task_starts_with_a_copy_of_the_encoders_top_layers(tiny_model_dir, toy_data_dir):
    config = _config(tiny_model_dir, toy_data_dir)
    torch.manual_seed(0)
    whole = build_model(config.model, config.tasks, HeadConfig()).eval()
    torch.manual_seed(0)
    split = build_model(config.model, config.tasks, config.heads).eval()
    assert len(split.encoder.encoder.layer) == len(whole.encoder.encoder.layer) - 1
    assert set(split.task_layers) == set(TASKS3) and all(len(t) == 1 for t in split.task_layers.values())
    owned = {id(p) for p in split.task_layers.parameters()}
    assert not owned & {id(p) for p in split.shared_parameters()}  # PCGrad's shared set leaves them out
    assert owned <= {id(p) for p in split.encoder_parameters()}
    batches = _batches(config)
    with torch.no_grad():
        for batch in batches.values():  # before training, each task sees the whole encoder
            torch.testing.assert_close(split.task_outputs(batch), whole.task_outputs(batch), rtol=0, atol=1e-6)
    assert split.encoder.config is split.task_layers["sst"][0].attention.self.config  # one attention kernel setting


@pytest.mark.parametrize("surgery", ["alternate", "pcgrad"])
def test_a_tasks_step_trains_its_own_top_and_not_the_others(tiny_model_dir, toy_data_dir, surgery):
    config = _config(tiny_model_dir, toy_data_dir, surgery=surgery, dropout_masks="packed")
    batches = _batches(config)
    model = build_model(config.model, config.tasks, config.heads).train()
    before = copy.deepcopy(model.state_dict())
    step = _train_step(config, model)
    kinds = {type(m).__name__ for m in step.net.task_layers.modules()}
    assert "PackedDropout" in kinds and "Dropout" not in kinds  # the copies draw their masks as the encoder does

    step({"sst": batches["sst"], "sts": batches["sts"]}, step=0)

    changed = {k.split(".")[1] for k, v in model.state_dict().items() if k.startswith("task_layers.") and not torch.equal(v, before[k])}
    assert changed == {"sst", "sts"}  # para had no batch: its copy did not move
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if k.startswith("encoder."))
    optimized = {id(p) for g in step.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in model.parameters()} == optimized  # the copies train at the encoder's lr


def test_bf16_passes_copy_the_task_layers_and_keep_them_current(tiny_model_dir, toy_data_dir):
    config = _config(tiny_model_dir, toy_data_dir, precision="bf16", train_weights="bf16", surgery="alternate")
    batches = _batches(config)
    model = build_model(config.model, config.tasks, config.heads).train()
    before = copy.deepcopy(model.state_dict())
    step = _train_step(config, model)
    for n in range(2):
        step(batches, step=n)
    pairs = list(zip(model.task_layers.named_parameters(), step.net.task_layers.parameters(), strict=True))
    assert pairs
    for (name, weight), copied in pairs:
        assert weight.dtype == torch.float32 and copied.dtype == torch.bfloat16, name
        assert torch.equal(copied, weight.to(torch.bfloat16)), name
        assert not torch.equal(weight, before[f"task_layers.{name}"]), name  # the fp32 weights were stepped


def test_task_layers_are_checked_against_the_models_depth(tiny_model_dir, toy_data_dir):
    config = _config(tiny_model_dir, toy_data_dir, layers=2)  # the tiny model has 2 layers: none left to share
    with pytest.raises(ConfigError, match=r"^task_layers = 2: expected fewer than the 2 layers of .*at least one is shared$"):
        check_model(config)
    check_model(replace(config, heads=HeadConfig(task_layers=1)))
    with pytest.raises(ConfigError, match=r"^task_layers = -1: expected a whole number"):
        apply_overrides(config, {"task_layers": -1})


def test_prediction_reproduces_a_run_with_task_layers(tmp_path, tiny_model_dir, toy_data_dir):
    """A para+sts run with its own top layers per task: prediction gives the stored dev outputs
    of each task (each through its own top), and one sentence pair predicted for both tasks
    (one cache, as the playground does) gives what each task's prediction alone gives."""
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("para", "sts"), epochs=1, max_train=32,
                         heads=HeadConfig(task_layers=1, para_head="bi"))
    db = tmp_path / "runs.db"
    with Store(db) as store:
        exp = experiments.create_experiment(store, config, name="tops", out_root=tmp_path / "runs", subsets=[("para", "sts")])
        run = store.runs(exp.id)[0]
        assert run_worker_here(db, run.id) == 0, store.get_run(run.id).error
        results.ensemble_experiment(store, exp.id)
        stored = store.dev_outputs(run.id)
        loaded = predict.load_experiment_models(store, "tops")
    assert loaded.models["para+sts"].model.task_layers
    for task in ("para", "sts"):
        dev = read_task_file(task, toy_data_dir / TASKS[task].file_name("dev"))
        np.testing.assert_allclose(predict.predict_texts(loaded, task, task_texts(task, dev)).members["para+sts"],
                                   stored[task].outputs, atol=1e-5)
    pair = ("what about cats ?", "why do i like cats ?")
    together = predict.predict_sentences(loaded, *pair)
    for task in ("para", "sts"):
        alone = predict.predict_texts(loaded, task, [pair]).members["para+sts"]
        np.testing.assert_allclose(together[task].members["para+sts"], alone, atol=1e-6)


def test_the_plan_counts_each_runs_own_top_layers_on_disk(tmp_path, tiny_model_dir, toy_data_dir, monkeypatch):
    """A run on fewer tasks holds fewer tasks' own layers: the plan's disk is the sum of what
    each subset's model really holds, not the whole-task-set model's size seven times."""
    monkeypatch.setenv("POWERBERT_CACHE", str(tmp_path / "cache"))
    config = _config(tiny_model_dir, toy_data_dir, tasks=("sst", "sts"))
    subsets = select_subsets(config.tasks, "all")
    with one_torch_thread():
        plan = plan_experiment(config, subsets, {"gpus": [], "max_parallel": 1})
    held = [sum(p.numel() * 4 for p in build_model(config.model, s, config.heads).parameters()) for s in subsets]
    assert held[2] > max(held[:2]) + 10_000  # the pair holds two tasks' own top layers
    assert plan.disk_bytes == sum(held)
    assert plan.peak_disk_bytes == sum(held) + 3 * max(held)  # one slot: one resume checkpoint at a time, the largest
