"""Each run of an experiment trains with its own seed (config.seed_per_run), so the members of a
task's ensemble differ in data order, head initialisation and dropout; an experiment stored
before the setting existed keeps one seed for every run, so its runs resume as they started."""

from __future__ import annotations

from powerbert.config import TrainConfig, run_seed
from powerbert.data.batching import EncodedTask
from powerbert.runner import experiments, worker
from powerbert.store import Store
from powerbert.tasks import subset_name
from powerbert.training.streams import TaskStream
from tests.faults.helpers import tiny_config


def test_every_subset_of_three_tasks_gets_its_own_seed_and_the_first_task_alone_keeps_the_given_one():
    tasks = ("sst", "para", "sts")
    seeds = {}
    for subset in [("sst",), ("para",), ("sst", "para"), ("sts",), ("sst", "sts"), ("para", "sts"), tasks]:
        seeds[subset_name(subset)] = run_seed(TrainConfig(tasks=subset, seed=10), tasks).seed
    assert seeds == {"sst": 10, "para": 11, "sst+para": 12, "sts": 13, "sst+sts": 14, "para+sts": 15, "sst+para+sts": 16}
    assert run_seed(TrainConfig(tasks=tasks, seed=10, seed_per_run=False), tasks).seed == 10


def test_the_runs_of_an_experiment_get_their_seeds_and_see_different_batches(tiny_model_dir, toy_data_dir, tmp_path):
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "para"), seed=3)
    with Store(tmp_path / "runs.db") as store:
        exp = experiments.create_experiment(store, config, name="seeds", out_root=tmp_path / "runs")
        configs = {run.subset: worker.run_config(store, run) for run in store.runs(exp.id)}
    assert {s: c.seed for s, c in configs.items()} == {"sst": 3, "para": 4, "sst+para": 5}
    # The pair run reads its sst rows in another order than the sst run does.
    rows = EncodedTask("sst", [str(i) for i in range(64)], None, [[1] * (2 + i % 7) for i in range(64)], None, None, 0, 128)
    orders = [TaskStream(rows, 16, configs[s].seed, None).batch_rows(0).tolist() for s in ("sst", "sst+para")]
    assert orders[0] != orders[1]


def test_an_experiment_stored_before_seed_per_run_keeps_one_seed_for_every_run(tiny_model_dir, toy_data_dir, tmp_path):
    config = tiny_config(tiny_model_dir, toy_data_dir, tasks=("sst", "para"), seed=3)
    with Store(tmp_path / "runs.db") as store:
        exp = experiments.create_experiment(store, config, name="older", out_root=tmp_path / "runs")
        stored = store.get_experiment(exp.id).config
        del stored["train"]["seed_per_run"]
        store.update_experiment(exp.id, config=stored)
        seeds = {run.subset: worker.run_config(store, run).seed for run in store.runs(exp.id)}
    assert seeds == {"sst": 3, "para": 3, "sst+para": 3}

