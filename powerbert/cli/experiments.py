"""`powerbert run / status / watch / list / stop / resume`: experiments and their runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from powerbert.cli.app import (
    BatchOpt,
    DataDirOpt,
    DbOpt,
    EpochsOpt,
    ExperimentArg,
    LrOpt,
    MaxTrainOpt,
    ModelOpt,
    PrecisionOpt,
    ProfileOpt,
    SeedOpt,
    SetOpt,
    SkipBadOpt,
    SubsetsOpt,
    SurgeryOpt,
    TasksFileOpt,
    TasksOpt,
    command,
    console,
    open_store,
    pick_experiment,
    training_overrides,
)


@command
def run(
    tasks: TasksOpt = None,
    tasks_file: TasksFileOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    epochs: EpochsOpt = None,
    max_train: MaxTrainOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    seed: SeedOpt = None,
    surgery: SurgeryOpt = None,
    skip_bad_rows: SkipBadOpt = False,
    precision: PrecisionOpt = None,
    settings: SetOpt = None,
    subsets: SubsetsOpt = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU indices to use, e.g. 0,1 ('cpu' for none); default: every GPU found.")] = None,
    runs_per_gpu: Annotated[int, typer.Option("--runs-per-gpu", min=1, help="Runs sharing one GPU at a time.")] = 1,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1, help="Runs at once on a machine without a GPU (CPU threads are shared).")] = 1,
    backend: Annotated[str, typer.Option("--backend", help="Where runs train: local (worker processes on this machine) or ray (actors on any node of a Ray cluster; runs.db stays here).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="The Ray cluster to join; default: $RAY_ADDRESS, then auto (the cluster this machine is part of).", show_default=False)] = None,
    ray_gpus_per_run: Annotated[Optional[float], typer.Option("--ray-gpus-per-run", help="GPUs each run asks Ray for (default 1; 0 on a CPU-only cluster).", show_default=False)] = None,
    ray_cpus_per_run: Annotated[Optional[float], typer.Option("--ray-cpus-per-run", help="CPUs each run asks Ray for, and its torch threads (default 1).", show_default=False)] = None,
    keep_resume_state: Annotated[bool, typer.Option("--keep-resume-state", help="Keep each finished run's resume checkpoint (last.safetensors: weights and optimizer state, about 3x best). By default it is removed when the run finishes; `powerbert prune` removes it later.")] = False,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also train the paper's frozen-encoder and naive multitask baselines.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="Experiment name; default: tasks and time.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for checkpoints and logs (one subfolder per experiment).", envvar="POWERBERT_OUT")] = Path("runs"),
    db: DbOpt = Path("runs.db"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking, however long the plan says it takes.")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Start and return at once; follow later with `powerbert watch`.")] = False,
) -> None:
    """Train every subset of the tasks (the power set) in the background, then ensemble them.

    Follows the runs live; Ctrl-C detaches and the runs go on. With no arguments: the demo
    experiment on the built-in data, a few minutes on a CPU.
    """
    from powerbert.cli.live import follow, snapshot
    from powerbert.runner import experiments

    config, profile, launch, chosen = experiment_settings(
        tasks=tasks, tasks_file=tasks_file, data_dir=data_dir, model=model, profile=profile, epochs=epochs,
        max_train=max_train, lr=lr, batch_size=batch_size, seed=seed, surgery=surgery, skip_bad_rows=skip_bad_rows,
        precision=precision, settings=settings, subsets=subsets, gpus=gpus, runs_per_gpu=runs_per_gpu,
        max_parallel=max_parallel, backend=backend, ray_address=ray_address, ray_gpus_per_run=ray_gpus_per_run,
        ray_cpus_per_run=ray_cpus_per_run,
    )
    if launch["backend"] == "ray":
        _ray_preflight(launch, out)
    _confirm_cost(config, chosen, launch, keep_resume_state, yes)
    with open_store(db, create=True) as store:
        exp = experiments.create_experiment(
            store, config, name=name, profile=profile, out_root=out, baselines=baselines,
            keep_resume_state=keep_resume_state, subsets=chosen, **launch,
        )
        pid = experiments.launch(db, store, exp)
        console.print(f"experiment [bold]{exp.name}[/bold]: {len(store.runs(exp.id))} runs, supervisor pid {pid}, logs in {exp.out_dir}")
        if detach:
            console.print(f"detached. Follow with: powerbert watch {exp.name} --db {db}")
            return
        try:
            exp = follow(store, exp.id, console)
        except KeyboardInterrupt:
            console.print(f"\ndetached; the runs go on. Come back with: powerbert watch {exp.name} --db {db}")
            return
        finish_summary(store, exp)
        _, runs, _ = snapshot(store, exp.id)
        if any(r.status in ("failed", "lost") for r in runs):
            raise typer.Exit(code=1)


def experiment_settings(*, tasks, tasks_file, data_dir, model, profile, epochs, max_train, lr, batch_size, seed, surgery,
                        skip_bad_rows, precision, settings, subsets, gpus, runs_per_gpu, max_parallel, backend="local",
                        ray_address=None, ray_gpus_per_run=None, ray_cpus_per_run=None):
    """The options of `run` (and `plan`) as what an experiment is made of: the resolved config,
    the profile, the launch settings and the subsets; every setting checked."""
    from powerbert.config import parse_gpus
    from powerbert.profiles import default_profile, resolve_config
    from powerbert.runner.checks import check_launch, check_settings
    from powerbert.subsets import select_subsets
    from powerbert.tasks import DEFAULT_TASKS

    overrides = training_overrides(
        tasks=tasks, tasks_file=tasks_file, data_dir=data_dir, model=model, epochs=epochs, max_train=max_train, lr=lr,
        batch_size=batch_size, seed=seed, surgery=surgery, skip_bad_rows=skip_bad_rows, precision=precision,
        settings=settings,
    )
    profile = profile or default_profile(overrides.get("data_dir"))
    config = resolve_config(profile, overrides)
    if "tasks" not in overrides:
        config.tasks = DEFAULT_TASKS
    launch = {"gpus": parse_gpus(gpus), "runs_per_gpu": runs_per_gpu, "max_parallel": max_parallel, "backend": backend}
    check_launch({**launch, "ray_address": ray_address, "ray_gpus_per_run": ray_gpus_per_run, "ray_cpus_per_run": ray_cpus_per_run})
    if backend == "ray":
        launch.update(ray_address=ray_address, ray_gpus_per_run=1.0 if ray_gpus_per_run is None else ray_gpus_per_run,
                      ray_cpus_per_run=1.0 if ray_cpus_per_run is None else ray_cpus_per_run)
    chosen = select_subsets(config.tasks, subsets)
    for note in check_settings(config, gpus=launch["gpus"]):  # what --skip-bad-rows will skip
        console.print(note, highlight=False)
    return config, profile, launch, chosen


def _ray_preflight(launch: dict, out: Path) -> None:
    """Before anything is created: the Ray cluster's preflight (the dashboard's form runs the
    same one); one line naming the node at fault otherwise."""
    from powerbert.runner.cluster.nodes import preflight_folder

    room = preflight_folder(launch, out)
    console.print(f"Ray cluster: every node passed the preflight; room for {room} run{'s' if room != 1 else ''} at once", style="dim", highlight=False)


CONFIRM_ABOVE_S = 3600.0  # `run` asks before starting an experiment planned to take longer


def _confirm_cost(config, subsets, launch, keep_resume_state: bool, yes: bool) -> None:
    """Say what the experiment will cost before anything is created; ask when it is long."""
    import sys

    from powerbert.runner.cleanup import fmt_bytes
    from powerbert.runner.plan import plan_experiment
    from powerbert.views import fmt_duration

    plan = plan_experiment(config, subsets, launch, keep_resume_state=keep_resume_state,
                           on_message=lambda text: console.print(text, style="dim", highlight=False))
    console.print(f"plan: {len(plan.runs)} runs on {len(plan.slots)} slot{'s' if len(plan.slots) != 1 else ''}, "
                  f"about {fmt_duration(plan.wall_seconds)}, {fmt_bytes(plan.disk_bytes)} of disk when done "
                  f"(`powerbert plan` shows each run)", highlight=False)
    if yes or plan.wall_seconds <= CONFIRM_ABOVE_S:
        return
    if not sys.stdin.isatty():
        console.print("over an hour; starting (nobody at the terminal to ask: pass --yes to say it is meant)", style="yellow")
        return
    if not typer.confirm("That is over an hour. Start it?", default=True):
        console.print("nothing started")
        raise typer.Exit(code=1)


def finish_summary(store, exp) -> None:
    from powerbert.results.evaluate import experiment_report
    from powerbert.results.report import render_table

    if any(r.status == "finished" for r in store.runs(exp.id)):
        console.print(render_table(experiment_report(store, exp)))
        console.print(f"full report: powerbert report {exp.name}")


@command
def status(
    experiment: ExperimentArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the experiment and every run (status, pid, device, step, checkpoints, disk use) as JSON, for scripts.")] = False,
    db: DbOpt = Path("runs.db"),
) -> None:
    """Print the runs table of an experiment once."""
    from powerbert.cli.live import snapshot, status_json

    with open_store(db, reader=True) as store:
        exp = pick_experiment(store, experiment)
        exp, runs, view = snapshot(store, exp.id, console.width)
        if as_json:
            import json

            typer.echo(json.dumps(status_json(exp, runs), indent=2))
            return
        console.print(view)


@command
def watch(experiment: ExperimentArg = None, db: DbOpt = Path("runs.db")) -> None:
    """Follow an experiment's runs live until it ends (Ctrl-C stops watching, not the runs)."""
    from powerbert.cli.live import follow

    with open_store(db, reader=True) as store:
        exp = pick_experiment(store, experiment)
        try:
            exp = follow(store, exp.id, console)
        except KeyboardInterrupt:
            console.print("\nstopped watching; the runs go on.")
            return
        finish_summary(store, exp)


@command(name="list")
def list_experiments(db: DbOpt = Path("runs.db")) -> None:
    """List the experiments in the database, newest first."""
    from powerbert.cli.live import experiments_table

    with open_store(db, reader=True) as store:
        console.print(experiments_table(store, console.width))


RunOrExperimentArg = Annotated[str, typer.Argument(help="An experiment (name or id), or one run as EXPERIMENT/SUBSET (e.g. exp1/sst+sts) or its id.")]


@command
def stop(
    target: RunOrExperimentArg,
    db: DbOpt = Path("runs.db"),
    grace: Annotated[float, typer.Option("--grace", min=0.0, help="Seconds a worker gets to checkpoint before it is killed.")] = 30.0,
) -> None:
    """Stop a run or a whole experiment; stopped runs keep a checkpoint to resume from."""
    from powerbert.runner import experiments
    from powerbert.store import run_label

    with open_store(db) as store:
        runs = experiments.stop(store, target, grace_s=grace)
        for run in runs:
            console.print(f"{run_label(run.subset, run.kind)}: {run.status}")


@command
def resume(target: RunOrExperimentArg, db: DbOpt = Path("runs.db")) -> None:
    """Continue stopped, failed or lost runs from their last checkpoint, in the background."""
    from powerbert.runner import experiments
    from powerbert.store import run_label

    with open_store(db) as store:
        exp, runs = experiments.resume(db, store, target)
        for run in runs:
            console.print(f"{run_label(run.subset, run.kind)}: {run.status}")
        console.print(f"follow with: powerbert watch {exp.name} --db {db}")


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]


def confirmed(question: str, yes: bool) -> bool:
    """--yes, or the person at the terminal says yes; a script without --yes is refused."""
    import sys

    from powerbert.errors import ConfigError

    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} needs --yes when nobody is at the terminal to answer")
    return typer.confirm(question, default=False)


@command
def delete(target: RunOrExperimentArg, yes: YesOpt = False, db: DbOpt = Path("runs.db")) -> None:
    """Delete an experiment, or one run (EXPERIMENT/SUBSET), with its rows and its files.

    Refused while it runs. Only the run folders inside the experiment's own folder are removed
    (and the experiment folder itself when nothing else is left in it)."""
    from powerbert.runner import cleanup

    with open_store(db) as store:
        plan = cleanup.plan_deletion(store, target)
        what = f"experiment {plan.experiment.name} ({len(plan.runs)} runs)" if plan.whole_experiment else f"run {target}"
        if not confirmed(f"delete {what} and {cleanup.fmt_bytes(plan.bytes)} of files?", yes):
            console.print("nothing deleted")
            raise typer.Exit(code=1)
        cleanup.delete(store, plan)
    console.print(f"deleted {what}: freed {cleanup.fmt_bytes(plan.bytes)}", highlight=False)
    for folder in plan.kept:
        console.print(f"kept {folder}: it lies outside the experiment's folder", style="yellow", highlight=False)


@command
def prune(yes: YesOpt = False, db: DbOpt = Path("runs.db")) -> None:
    """Remove the resume checkpoints (last.*) of finished runs in experiments that have ended.

    A finished run never resumes; prediction and the report need only its best.* files."""
    from powerbert.runner import cleanup

    with open_store(db) as store:
        plan = cleanup.plan_prune(store)
        if not plan.runs:
            console.print("nothing to prune: no finished run keeps resume state")
            return
        if not confirmed(f"remove the resume state of {len(plan.runs)} finished runs ({cleanup.fmt_bytes(plan.bytes)})?", yes):
            console.print("nothing removed")
            raise typer.Exit(code=1)
        freed = cleanup.prune(plan)
    console.print(f"removed the resume state of {len(plan.runs)} finished runs: freed {cleanup.fmt_bytes(freed)}", highlight=False)
