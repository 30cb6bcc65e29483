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


# ---- the node a Ray run trains on --------------------------------------------------------------

NODE = "8e0c0a79dda7f3aa5b6c1d2e3f40516273849a0b1c2d3e4f5a6b7c8d"  # a Ray node id: 56 hex digits
OTHER_NODE = "f00dfeed0123456789abcdef0123456789abcdef0123456789abcdef"


def _experiment_on_nodes(db, name: str, nodes: bool) -> None:
    """Three tasks, seven runs: finished ones with scores and one running (a heartbeat far ahead
    keeps it alive); with `nodes`, placed on two Ray nodes as the supervisor records them."""
    import time

    from powerbert.store import RunStatus

    tasks = ("sst", "para", "sts")
    now = time.time()
    with Store(db) as store:
        exp = store.create_experiment(name, tasks, {"train": {}}, str(db.parent / "runs" / name), power_set(tasks))
        for i, run in enumerate(store.runs(exp.id)):
            store.update_run(run.id, status=RunStatus.FINISHED, device="cuda:0", host=f"gpu-{i % 2}", step=400, total_steps=400,
                             loss=0.512, best_scores={t: 0.5123 for t in run.tasks}, best_overall=0.6543,
                             started_at=now - 100, ended_at=now, node=(NODE, OTHER_NODE)[i % 2] if nodes else None)
        last = store.runs(exp.id)[-1]
        store.update_run(last.id, status=RunStatus.RUNNING, step=120, ended_at=None, heartbeat_at=4_102_444_800.0)


def _status(db, name: str, columns: int, *options: str):
    from typer.testing import CliRunner

    from powerbert.cli import app

    result = CliRunner().invoke(app, ["status", name, *options, "--db", str(db)], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_status_shows_each_runs_node_at_80_and_120_columns(tmp_path):
    """Runs on a Ray cluster show their node's first 8 hex digits; at 80 columns score columns
    make room for it (the caption says which), the core columns stay, and nothing is cut."""
    db = tmp_path / "runs.db"
    _experiment_on_nodes(db, "on-ray", nodes=True)
    for columns in (80, 120):
        out = _status(db, "on-ray", columns)
        lines = out.splitlines()
        assert all(len(line) <= columns for line in lines) and "…" not in out, out
        header = lines[1].split()
        assert header[:4] == ["run", "status", "device", "node"], out
        assert {"step", "loss", "overall", "time", "ETA"} <= set(header), out
        rows = {line.split()[0]: line.split() for line in lines[3:] if line.split()}
        assert rows["sst"][3] == NODE[:8] and rows["para"][3] == OTHER_NODE[:8], out
        assert NODE[:9] not in out  # the short id only
        if columns == 120:
            assert {"sst", "para", "sts"} <= set(header) and "scores of" not in out
    assert "scores of" in _status(db, "on-ray", 80)  # 80 columns: some scores went, the node stayed


def test_a_local_experiments_table_has_no_node_column(tmp_path):
    db = tmp_path / "runs.db"
    _experiment_on_nodes(db, "here", nodes=False)
    for columns in (80, 120):
        out = _status(db, "here", columns)
        assert "node" not in out.splitlines()[1].split(), out


def test_status_json_has_each_runs_node(tmp_path):
    import json

    db = tmp_path / "runs.db"
    _experiment_on_nodes(db, "on-ray", nodes=True)
    _experiment_on_nodes(db, "here", nodes=False)
    records = {r["subset"]: r for r in json.loads(_status(db, "on-ray", 120, "--json"))["runs"]}
    assert records["sst"]["node"] == NODE and records["para"]["node"] == OTHER_NODE  # the full id
    assert list(records["sst"])[list(records["sst"]).index("host"):][:3] == ["host", "device", "node"]
    assert all(r["node"] is None for r in json.loads(_status(db, "here", 120, "--json"))["runs"])
