"""Tests for powerbert.cli.live: the runs table that `powerbert run` and `watch` redraw.

Run: python -m pytest tests/test_live.py -q
"""

from __future__ import annotations

from rich.console import Console

from powerbert.cli.live import runs_table
from powerbert.store import Store
from powerbert.tasks import power_set


def render(table) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_overall_is_shown_only_for_runs_that_cover_every_task(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        exp = store.create_experiment("e", ("sst", "sts"), {}, None, power_set(("sst", "sts")))
        runs = {run.tasks: run for run in store.runs(exp.id)}
        store.update_run(runs[("sts",)].id, best_scores={"sts": 0.88}, best_overall=0.94)
        store.update_run(runs[("sst", "sts")].id, best_scores={"sst": 0.5, "sts": 0.86}, best_overall=0.715)
        lines = render(runs_table(exp, store.runs(exp.id))).splitlines()
    row = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in ("sts", "sst+sts")}
    # a single-task sts run's selection score ((r + 1) / 2 = 0.94) is not an overall score
    assert "0.940" not in row["sts"] and "0.880" in row["sts"]
    assert "0.715" in row["sst+sts"]
