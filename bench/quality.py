"""Quality benchmark: one complete power-set experiment on real data, then the paper-style table.

    python bench/quality.py --data-dir ../shared/data/cs224n --profile quick
    python bench/quality.py --data-dir ../shared/data/cs224n --profile paper --set epochs=3 --set max_train=4000

Runs the seven runs and the ensembles through the same supervisor as `powerbert run`, waits,
and prints each model's and each scheme's sst / para / sts / overall dev scores, the wall time,
and whether the weighted ensemble beats the best single model. `--json FILE` also writes the
report as JSON (to compare profiles side by side).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console


def compare_to_single_models(report) -> list[str]:
    """Each scheme against two bars: the best model that has all tasks, and the hardest bar,
    the best model *per task* (an oracle that picks the best run for each task on dev)."""
    from powerbert.tasks import overall_score

    models = [r for r in report.rows if r.kind == "model" and r.status == "finished"]
    full = [r.overall for r in models if r.overall is not None]
    per_task = {}
    for task in report.tasks:
        values = [r.scores.get(task) for r in models if r.scores.get(task) is not None]
        if values:
            per_task[task] = max(values)
    oracle = overall_score(per_task)
    lines = [f"best all-task model overall {max(full):.4f}" if full else "no model trained on every task finished",
             f"best model per task (oracle) overall {oracle:.4f}" if oracle is not None else ""]
    for row in report.rows:
        if row.kind == "ensemble" and row.overall is not None:
            beats = [name for name, bar in (("all-task model", max(full) if full else None), ("per-task oracle", oracle)) if bar is not None and row.overall > bar]
            lines.append(f"{row.name:>9} ensemble overall {row.overall:.4f}: beats {', '.join(beats) if beats else 'neither'}")
    return [line for line in lines if line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default=None)
    parser.add_argument("--set", dest="settings", action="append", default=[], help="KEY=VALUE recipe override")
    parser.add_argument("--db", default="bench-quality.db")
    parser.add_argument("--out", default="bench-runs")
    parser.add_argument("--name", default=None)
    parser.add_argument("--max-parallel", type=int, default=1)
    parser.add_argument("--runs-per-gpu", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    from powerbert.config import parse_settings
    from powerbert.profiles import resolve_config
    from powerbert.results.evaluate import experiment_report
    from powerbert.results.report import render_table, to_json
    from powerbert.runner import experiments
    from powerbert.runner.checks import check_settings
    from powerbert.store import Store
    from powerbert.tasks import DEFAULT_TASKS

    console = Console(width=120)
    overrides = {"data_dir": args.data_dir, "model": args.model, "tasks": DEFAULT_TASKS, "skip_bad_rows": True}
    overrides.update(parse_settings(args.settings))
    config = resolve_config(args.profile, overrides)
    check_settings(config)
    start = time.monotonic()
    with Store(args.db) as store:
        exp = experiments.create_experiment(
            store, config, name=args.name, profile=args.profile, out_root=args.out,
            runs_per_gpu=args.runs_per_gpu, max_parallel=args.max_parallel,
        )
        experiments.launch(args.db, store, exp)
        console.print(f"{exp.name}: profile {args.profile} {' '.join(args.settings)}")
        while not store.get_experiment(exp.id).status.is_terminal:
            time.sleep(5)
        wall = time.monotonic() - start
        exp = store.get_experiment(exp.id)
        report = experiment_report(store, exp, "weighted")
        console.print(render_table(report))
        console.print(f"wall time {wall / 60:.1f} min; experiment {exp.status}")
        for line in compare_to_single_models(report):
            console.print(line)
        if args.json:
            data = json.loads(to_json(report))
            data["wall_s"] = wall
            data["settings"] = {"profile": args.profile, "overrides": args.settings, "config": config.to_dict()}
            Path(args.json).write_text(json.dumps(data, indent=2))
    return 0 if exp.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
