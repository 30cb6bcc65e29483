"""How good `powerbert plan` is: plan an experiment, run it, and compare, per run and in total,
the estimated time with the time it took.

    python bench/plan_accuracy.py                 # the demo experiment and a real-data one
    python bench/plan_accuracy.py --only demo

The real-data experiment is `--data-dir ../shared/data/cs224n --max-train 500 --epochs 1`
(profile best: the default model, batch 16). Each experiment is planned exactly as `powerbert
plan` plans it (the same options, the same calibration and its cache), then run by the real
supervisor and workers; a run's actual time is its elapsed time in runs.db (its worker's start
to its end), the total is the experiment's start to its end. Targets: every run within 25% of
its estimate and the total within 15%, on the machine that ran the calibration.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_DIR, ROOT, cpu_model

EXPERIMENTS = {
    "demo": {},
    "real": {"data_dir": str(DATA_DIR), "max_train": 500, "epochs": 1, "skip_bad_rows": True},
}
RUN_TOLERANCE = 0.25
TOTAL_TOLERANCE = 0.15


def measure(name: str, overrides: dict, folder: Path) -> tuple[list[tuple[str, float, float]], float, float]:
    from powerbert.profiles import default_profile, resolve_config
    from powerbert.runner import experiments
    from powerbert.runner.checks import check_settings
    from powerbert.runner.plan import plan_experiment
    from powerbert.store import Store
    from powerbert.subsets import select_subsets
    from powerbert.tasks import DEFAULT_TASKS

    profile = default_profile(overrides.get("data_dir"))
    config = resolve_config(profile, {"tasks": DEFAULT_TASKS, **overrides})
    check_settings(config)
    launch = {"gpus": None, "runs_per_gpu": 1, "max_parallel": 1}
    subsets = select_subsets(config.tasks, None)
    plan = plan_experiment(config, subsets, launch, on_message=lambda text: print(f"   {text}", flush=True))
    db = folder / "runs.db"
    with Store(db) as store:
        exp = experiments.create_experiment(store, config, name=name, profile=profile, out_root=folder / "runs", **launch)
        experiments.launch(db, store, exp)
        while not store.get_experiment(exp.id).status.is_terminal:
            time.sleep(1.0)
        exp = store.get_experiment(exp.id)
        runs = {r.subset: r for r in store.runs(exp.id)}
        failed = [r.subset for r in runs.values() if r.status != "finished"]
        if failed:
            raise SystemExit(f"{name}: runs did not finish: {', '.join(failed)}")
        rows = [(r.subset, r.seconds, runs[r.subset].elapsed) for r in plan.runs]
        return rows, plan.wall_seconds, exp.ended_at - exp.started_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(EXPERIMENTS), help="one experiment instead of both")
    args = parser.parse_args()
    import os

    print(f"== plan accuracy: {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}", flush=True)
    missed = 0
    for name, overrides in EXPERIMENTS.items():
        if args.only and name != args.only:
            continue
        if name == "real" and not DATA_DIR.is_dir():
            print(f"   {name}: skipped, no {DATA_DIR}")
            continue
        folder = Path(tempfile.mkdtemp(prefix=f"plan-{name}-"))
        try:
            rows, planned, actual = measure(name, overrides, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"-- {name}: run, estimated s, actual s, actual/estimated")
        for subset, estimate, took in rows:
            ratio = took / estimate
            ok = abs(ratio - 1) <= RUN_TOLERANCE
            missed += not ok
            print(f"   {subset:22s} {estimate:8.1f} {took:8.1f}   {ratio:5.2f}x {'ok' if ok else 'OUT'}")
        ratio = actual / planned
        ok = abs(ratio - 1) <= TOTAL_TOLERANCE
        missed += not ok
        print(f"   {'total':22s} {planned:8.1f} {actual:8.1f}   {ratio:5.2f}x {'ok' if ok else 'OUT'}", flush=True)
    print(f"RESULT every run within {RUN_TOLERANCE:.0%}, totals within {TOTAL_TOLERANCE:.0%}: {'MET' if not missed else f'MISSED ({missed})'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
