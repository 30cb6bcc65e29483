"""`powerbert plan`: what an experiment would cost, before anything is created.

It takes the options of `powerbert run` (the same signature: `functools.wraps(run)`), checks
them as `run` does, and prints one row per run (its subset, training rows and steps per epoch,
epochs and estimated time), the total wall time on the slots it would use, and the disk it
takes. The estimates come from a short calibration of real training steps on this device and
model (powerbert.training.calibrate), cached so the second plan is instant.
"""

from __future__ import annotations

import functools

from rich import box
from rich.table import Table

from powerbert.cli.app import command, console
from powerbert.cli.experiments import experiment_settings, run


@command(name="plan")
@functools.wraps(run)
def plan(**options) -> None:
    from powerbert.runner.cleanup import fmt_bytes
    from powerbert.runner.plan import plan_experiment
    from powerbert.views import fmt_duration

    settings = {k: options[k] for k in (
        "tasks", "tasks_file", "data_dir", "model", "profile", "epochs", "max_train", "lr", "batch_size", "seed",
        "surgery", "skip_bad_rows", "precision", "settings", "subsets", "gpus", "runs_per_gpu", "max_parallel",
        "backend", "ray_address", "ray_gpus_per_run", "ray_cpus_per_run")}
    config, profile, launch, chosen = experiment_settings(**settings)
    estimate = plan_experiment(config, chosen, launch, keep_resume_state=options["keep_resume_state"],
                               on_message=lambda text: console.print(text, style="dim", highlight=False))
    table = Table(title=f"plan · {','.join(config.tasks)} · profile {profile}", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for header in ("run", "rows/epoch", "steps/epoch", "epochs", "time", "slot", "starts"):
        table.add_column(header, justify="left" if header in ("run", "slot") else "right", no_wrap=header != "run")
    for r in estimate.runs:
        rows = sum(r.rows_per_epoch.values())
        table.add_row(r.subset, f"{rows:,}", str(r.steps_per_epoch), str(r.epochs), fmt_duration(r.seconds), r.slot, fmt_duration(r.starts_at))
    console.print(table)
    cached = " (calibration from the cache)" if estimate.calibration.cached else ""
    console.print(f"{len(estimate.runs)} runs on {len(estimate.slots)} slot{'s' if len(estimate.slots) != 1 else ''} "
                  f"({', '.join(sorted(set(estimate.slots)))}): about {fmt_duration(estimate.wall_seconds)} in all{cached}", highlight=False)
    console.print(f"disk: {fmt_bytes(estimate.disk_bytes)} when done, up to {fmt_bytes(estimate.peak_disk_bytes)} while training "
                  f"(resume checkpoints)", highlight=False)


plan.__doc__ = """Estimate an experiment before it starts: each run's time, the total, and the disk.

Takes the same options as `powerbert run` and creates nothing. The first plan on a device and
model runs a short calibration (real training steps per task); later ones use its cache.
"""
