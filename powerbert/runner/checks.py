"""Everything about a run's settings that can be checked before anything starts.

`check_settings` is the one check that `powerbert run`, `powerbert train`, the dashboard's
new-experiment form and the supervisor (before it starts a worker) all call: each setting's
type, choice and range (powerbert.config.check_config), every task's files and headers, the
model (found, with a tokenizer, long enough for max_length, deeper than task_layers), and the
GPUs asked for against the ones torch can use here. A problem raises a UserError naming the
setting, file or device; what passes returns the notes worth showing (rows --skip-bad-rows will
skip).
"""

from __future__ import annotations

from powerbert.config import TrainConfig, check_config
from powerbert.errors import ConfigError


def check_settings(config: TrainConfig, *, gpus: list[int] | None = None, data: bool = True) -> list[str]:
    """Check `config` (and the `gpus` an experiment asks for) as a whole; notes to show.

    `data=False` leaves the task files out: the supervisor's check at start, where each
    worker then reads (and names the fault in) its own tasks' files, run by run."""
    from powerbert.data.files import check_data_dir, load_split, skipped_summary

    check_config(config)
    notes = []
    if data:
        check_data_dir(config.data_dir, config.tasks)
        for task in config.tasks:
            for split in ("train", "dev"):
                note = skipped_summary(load_split(task, config.data_dir, split, skip_bad_rows=config.skip_bad_rows))
                if note:
                    notes.append(note)
    check_model(config)
    check_devices(config.device, gpus)
    return notes


def check_model(config: TrainConfig) -> None:
    """The model loads its tokenizer and configuration, takes inputs of max_length tokens, and
    has more layers than the tasks' own top layers (task_layers)."""
    from powerbert.model.multitask import load_model_config, load_tokenizer, resolve_model_name

    load_tokenizer(config.model)
    model_config = load_model_config(config.model)
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is not None and config.max_length > limit:
        raise ConfigError(f"max_length = {config.max_length}: expected at most {limit}, the longest input {resolve_model_name(config.model)} takes")
    layers = getattr(model_config, "num_hidden_layers", None)
    if config.heads.task_layers and layers is not None and config.heads.task_layers >= layers:
        raise ConfigError(f"task_layers = {config.heads.task_layers}: expected fewer than the {layers} layers of "
                          f"{resolve_model_name(config.model)}, so that at least one is shared")


def usable_gpus() -> tuple[int, str]:
    """How many CUDA GPUs torch can use here, and why none when it is 0 (in words)."""
    import torch

    if torch.version.cuda is None:
        return 0, f"this torch ({torch.__version__}) is a CPU build"
    if not torch.cuda.is_available():
        return 0, "torch finds no CUDA GPU here"
    return torch.cuda.device_count(), ""


def check_devices(device: str, gpus: list[int] | None) -> None:
    """GPUs asked for (`--gpus`, a cuda device) must be ones torch can use; a CPU build of torch
    on a GPU box is refused rather than run silently on the CPU."""
    wanted = sorted(set(gpus or []))
    if device.startswith("cuda"):
        wanted.append(int(device.partition(":")[2] or 0))
    if not wanted:
        return
    count, why = usable_gpus()
    what = f"--gpus {','.join(map(str, gpus))}" if gpus else f"device = {device}"
    if count == 0:
        raise ConfigError(f"{what}: {why}: use --gpus cpu (or install a CUDA build of torch)")
    beyond = [g for g in wanted if g >= count or g < 0]
    if beyond:
        raise ConfigError(f"{what}: expected GPU indices 0..{count - 1} (torch sees {count} GPU{'s' if count != 1 else ''})")


BACKENDS = ("local", "ray")


def check_launch(launch: dict) -> None:
    """Where the runs will train: the backend and its own options, each refused with what was
    expected (the cluster itself is checked by the Ray backend's preflight)."""
    backend = launch.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: expected {' or '.join(BACKENDS)}")
    if backend == "local":
        given = [f"--ray-{name.replace('_', '-')}" for name in ("address", "cpus_per_run", "gpus_per_run") if launch.get(f"ray_{name}") is not None]
        if given:
            raise ConfigError(f"{given[0]}: only with --backend ray")
        return
    if launch.get("gpus") is not None or (launch.get("runs_per_gpu") or 1) != 1 or (launch.get("max_parallel") or 1) != 1:
        raise ConfigError("--gpus, --runs-per-gpu and --max-parallel are the local backend's: with --backend ray, "
                          "each run asks Ray for --ray-gpus-per-run and --ray-cpus-per-run, and Ray places it")
    cpus, gpus = launch.get("ray_cpus_per_run"), launch.get("ray_gpus_per_run")
    for option, value in (("--ray-cpus-per-run", cpus), ("--ray-gpus-per-run", gpus)):
        if value is not None and value < 0:
            raise ConfigError(f"{option} {value:g}: expected 0 or more")
    if (cpus if cpus is not None else 1.0) == 0 and (gpus if gpus is not None else 1.0) == 0:
        raise ConfigError("--ray-cpus-per-run 0 --ray-gpus-per-run 0: expected a run to ask for some CPU or GPU")
