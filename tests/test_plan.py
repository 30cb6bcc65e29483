"""`powerbert plan` and the power set of four tasks: the planner lists the runs `--subsets`
chooses, with estimates from a real (cached) calibration, and creates nothing; `run` on four
tasks makes 15 runs whose ensembles take each task's 8 members. Tiny model, toy data."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from powerbert.cli import app
from powerbert.config import TrainConfig
from powerbert.results.evaluate import ensemble_experiment
from powerbert.runner import experiments
from powerbert.store import RunStatus, Store
from powerbert.subsets import select_subsets
from tests.fixtures import run_worker_here
from tests.test_predict import one_torch_thread

FOUR = ("sst", "para", "sts", "cfimdb")


def invoke(*args):
    with one_torch_thread():
        return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "120"})


def plan_rows(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines() if re.match(r"^ ?(sst|para|sts|cfimdb)\S* +\d", line)]


def test_plan_lists_the_chosen_subsets_and_creates_nothing(tmp_path, tiny_model_dir, toy_data_dir, monkeypatch):
    monkeypatch.setenv("POWERBERT_CACHE", str(tmp_path / "cache"))
    common = ["plan", "--tasks", ",".join(FOUR), "--data-dir", toy_data_dir, "--model", tiny_model_dir, "--db", tmp_path / "runs.db"]
    first = invoke(*common, "--subsets", "singles,full")
    assert first.exit_code == 0, first.output
    assert plan_rows(first.stdout) == ["sst", "para", "sts", "cfimdb", "sst+para+sts+cfimdb"]
    assert "calibrating on cpu" in first.stdout and "5 runs on 1 slot" in first.stdout and "disk:" in first.stdout
    second = invoke(*common, "--subsets", "upto:2")
    assert second.exit_code == 0, second.output
    assert len(plan_rows(second.stdout)) == 10
    assert "calibration from the cache" in second.stdout and "calibrating" not in second.stdout
    assert not (tmp_path / "runs.db").exists() and not (tmp_path / "runs").exists()
    cache = json.loads((tmp_path / "cache" / "calibration.json").read_text())
    assert all(v["step_s"] > 0 for v in cache.values() if "step_s" in v)


def test_a_bad_subsets_part_is_one_line(tmp_path, tiny_model_dir, toy_data_dir):
    result = invoke("plan", "--tasks", "sst,sts", "--data-dir", toy_data_dir, "--model", tiny_model_dir, "--subsets", "sst+para")
    assert result.exit_code == 2
    assert "--subsets 'sst+para': para is not among the tasks (sst, sts)" in result.stderr


def test_subset_grammar():
    assert len(select_subsets(FOUR, None)) == 15
    assert [len(s) for s in select_subsets(FOUR, "singles,full")] == [1, 1, 1, 1, 4]
    assert len(select_subsets(FOUR, "upto:2")) == 10
    assert select_subsets(FOUR, "sts+sst,sst") == [("sst",), ("sst", "sts")]
    assert select_subsets(FOUR, "pairs,all") == select_subsets(FOUR, "all")


def test_four_tasks_make_15_runs_and_every_task_ensembles_its_8_members(tmp_path, tiny_model_dir, toy_data_dir):
    config = TrainConfig(tasks=FOUR, data_dir=str(toy_data_dir), model=str(tiny_model_dir), epochs=1, max_train=16,
                         batch_size=16, lr=1e-3, precision="fp32", checkpoint_every_s=1e9)
    with Store(tmp_path / "runs.db") as store, one_torch_thread():
        exp = experiments.create_experiment(store, config, name="four", out_root=tmp_path / "runs")
        runs = store.runs(exp.id)
        assert len(runs) == 15
        for run in runs:
            assert run_worker_here(tmp_path / "runs.db", run.id) == 0, store.get_run(run.id).error
        assert all(r.status == RunStatus.FINISHED for r in store.runs(exp.id))
        outcomes = ensemble_experiment(store, exp.id)
    for task in FOUR:
        weighted = next(o for o in outcomes if o.task == task and o.scheme == "weighted")
        assert len(weighted.members) == 8 and not weighted.missing, (task, weighted.members)


def test_status_and_list_of_four_tasks_stay_readable_at_80_columns(tmp_path):
    import time

    from powerbert.tasks import power_set, subset_name

    db = tmp_path / "runs.db"
    now = time.time()
    with Store(db) as store:
        exp = store.create_experiment("four-tasks-at-80", FOUR, {"train": {}}, str(tmp_path), power_set(FOUR))
        for run in store.runs(exp.id):
            store.update_run(run.id, status=RunStatus.FINISHED, device="cuda:0", step=400, total_steps=400, loss=0.512,
                             best_scores={t: 0.5123 for t in run.tasks}, best_overall=0.6543, started_at=now - 100, ended_at=now)
        full = next(r for r in store.runs(exp.id) if r.subset == subset_name(FOUR))
        store.update_run(full.id, status=RunStatus.RUNNING, ended_at=None)
    result = CliRunner().invoke(app, ["status", "four-tasks-at-80", "--db", str(db)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    assert "…" not in result.stdout
    assert "finished" in result.stdout and "cuda:0" in result.stdout and "overall" in result.stdout
    assert "scores of" in result.stdout or all(t in lines[1] for t in FOUR)
    listed = CliRunner().invoke(app, ["list", "--db", str(db)], env={"COLUMNS": "80"})
    assert listed.exit_code == 0 and "…" not in listed.stdout, listed.stdout
    header = listed.stdout.splitlines()[1].split()
    assert {"name", "status", "runs", "best", "disk"} <= set(header) and all(len(line) <= 80 for line in listed.stdout.splitlines())
