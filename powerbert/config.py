"""The configuration of one training run: every knob of the recipe, with its default.

Plain dataclasses with no torch, so that commands which neither train nor predict stay light.

Profiles (powerbert.profiles) are named sets of overrides of these defaults; the CLI and the
dashboard override them again; the resolved dict is what runs.db and best.json record.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

from powerbert.errors import ConfigError
from powerbert.tasks import TASKS, parse_tasks

PairMode = Literal["cross", "bi"]  # how a pair is tokenised: one joined input, or two inputs


@dataclass
class HeadConfig:
    pooling: Literal["mean", "cls"] = "mean"  # how token states become one sentence embedding
    para_head: Literal["cross", "bi"] = "cross"  # pair classification (para): cross-encoder or bi-encoder features
    sts_head: Literal["cosine", "regress"] = "cosine"  # pair regression (sts): the paper's cosine or a learned head
    dropout: float = 0.1  # on the embedding before each trained head
    # Each task gets its own copy of the encoder's top `task_layers` layers (initialised from
    # the pretrained ones): in a multitask run the tasks share the layers below and train their
    # own top, so what one task learns there cannot pull another's; 0 shares the whole encoder.
    # A single-task run computes the same either way.
    task_layers: int = 0

    def pair_mode(self, task: str) -> PairMode:
        """How a task's rows are tokenised for its head: a pair classification (para, or any
        classify/binary pair task) follows para_head; a pair regression (sts) is bi-encoded,
        as its cosine head needs; a single sentence is one input either way."""
        spec = TASKS[task]
        return self.para_head if spec.is_pair and spec.kind != "regress" else "bi"


@dataclass
class TrainConfig:
    tasks: tuple[str, ...] = ("sst",)  # the subset this run trains, in registry order
    data_dir: str | None = None  # folder of CS224N task files; None = the built-in demo
    model: str | None = None  # Hugging Face id or folder; None = the offline MiniLM BERT
    epochs: int = 3
    lr: float = 2e-5  # peak learning rate of AdamW
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    l2: float = 0.0  # the paper's explicit L2 term: lambda * sum(w^2) added to the loss
    batch_size: int = 32  # rows per task per step
    max_length: int = 128  # tokens per input after truncation
    # Rows are sorted by length within windows of this many batches (1 = batches of random rows):
    # 50 makes batches of near-equal lengths, 1.03x the real tokens on SST against 1.9x for random
    # rows. Narrower windows did not score measurably better on SST's dev file and cost time
    # (bench/RESULTS.md, "The bucket window").
    bucket_window: int = 50
    warmup: float = 0.1  # fraction of all steps spent warming the learning rate up from 0
    schedule: Literal["linear", "constant"] = "linear"  # after warm-up: linear decay to 0, or flat
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    seed: int = 0
    # In an experiment, each run adds its subset's number to the seed (run_seed): the members of
    # a task's ensemble then differ in data order, head initialisation and dropout, not only in
    # their other tasks, and their errors differ more (bench/RESULTS.md, "Making the power set pay").
    seed_per_run: bool = True
    # How a multitask step trains on its tasks' batches: their gradients combined by PCGrad or a
    # plain sum into one optimizer step, or "alternate": each task's batch an optimizer step of
    # its own, in an order drawn per step (MT-DNN's multitask step; bench/RESULTS.md, "Making
    # the power set pay").
    surgery: Literal["pcgrad", "sum", "alternate"] = "pcgrad"
    # "norm": before they are combined, each task's gradient over the shared encoder is scaled
    # to the mean of the tasks' norms, so that no task's loss drives the step by its scale alone
    # (cosine STS's is 5-8x SST's and para's; bench/RESULTS.md, "Making the power set pay").
    # With surgery "alternate" no gradients are combined, and it has no effect.
    balance: Literal["none", "norm"] = "none"
    epoch_size: Literal["max", "min"] = "max"  # steps per epoch: the largest or the smallest task's batches
    max_train: int | None = None  # training rows per task per epoch (a fresh sample each epoch)
    skip_bad_rows: bool = False  # skip malformed rows (reported with their lines) instead of stopping
    # The forward passes' autocast dtype. "auto": bf16 where the device has fast bf16 matmuls
    # (a CUDA GPU from Ampere on, a CPU with AVX-512), fp32 elsewhere: on an AVX2-only CPU bf16
    # autocast made a MiniLM step 16x slower (powerbert.model.device.fast_bf16). A run records
    # the precision it resolved to, and prediction uses that one.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # The weights a training step's passes run on. "fp32": the model's own, under autocast at
    # `precision` (each matmul casts its weight and input). "bf16": a bf16 copy of the encoder,
    # refreshed from the fp32 weights after each step; AdamW still updates the fp32 weights, and
    # checkpoints, dev scores and prediction stay fp32 (mixed precision's master weights).
    # "auto": bf16 on a CPU under bf16 precision (SST 5-7% faster, the same dev accuracy), fp32
    # elsewhere (bench/RESULTS.md, "bf16 passes").
    train_weights: Literal["auto", "fp32", "bf16"] = "auto"
    # The encoder's attention kernel while training. "auto": plain matmuls and softmax ("eager")
    # on a CPU under bf16, where torch's fused attention (SDPA) spends 4-7x as long in its
    # backward, a third of a MiniLM step (bench/RESULTS.md, "Attention on the CPU"); SDPA
    # everywhere else. "sdpa" or "eager" forces one; both compute the same attention.
    attention: Literal["auto", "sdpa", "eager"] = "auto"
    # How AdamW updates the word-embedding table (half of MiniLM's parameters; a batch touches a
    # few hundred of its rows). "dense": the whole table every step, as a plain loop does.
    # "rows": a sparse gradient, and AdamW's update on the touched rows only, as lazy Adam does
    # (an untouched row skips its momentum step and weight decay until a batch touches it);
    # "auto": rows on a CPU, dense on a GPU. Rows trained MiniLM 4-9% faster on a CPU under
    # bf16, but with packed dropout masks it cost SST 0.8 points of dev accuracy over seven
    # seeds (bench/RESULTS.md, "The word-embedding table on the CPU", "The SST seeds in fp32"):
    # dense is the default, and the speed lever is opt-in.
    embedding_update: Literal["auto", "rows", "dense"] = "dense"
    # How the encoder's dropout masks are drawn while training. "torch": torch's dropout, one
    # draw of its generator per element; "packed": four elements to a 64-bit draw of the same
    # generator (powerbert.model.packed_dropout), the same keep probability and scaling; "auto":
    # packed on a CPU, torch on a GPU. Packed masks saved 15% of a MiniLM step on a CPU under
    # bf16, but with the row-wise table they cost SST 0.8 points over seven seeds (see
    # embedding_update): torch is the default, and the speed lever is opt-in.
    dropout_masks: Literal["auto", "torch", "packed"] = "torch"
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    freeze_encoder: bool = False  # train only the heads (the paper's frozen baseline)
    head_lr: float | None = None  # learning rate of the heads, if different from lr
    checkpoint_every_s: float = 120.0  # also save the resume checkpoint this often within an epoch
    heads: HeadConfig = field(default_factory=HeadConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config setting(s) {', '.join(unknown)}: expected some of {', '.join(sorted(known))}")
        d = dict(d)
        heads = d.pop("heads", None) or {}
        if not isinstance(heads, HeadConfig):
            head_keys = {f.name for f in fields(HeadConfig)}
            unknown = sorted(set(heads) - head_keys)
            if unknown:
                raise ConfigError(f"unknown head setting(s) {', '.join(unknown)}: expected some of {', '.join(sorted(head_keys))}")
            heads = HeadConfig(**heads)
        if isinstance(d.get("tasks"), (list, tuple)):
            d["tasks"] = tuple(d["tasks"])
        config = cls(heads=heads, **d)
        check_config(config)
        return config


# What each numeric setting must satisfy, beyond its type: (test, what is expected).
RANGES: dict[str, tuple] = {
    "epochs": (lambda v: v >= 1, "a whole number of at least 1"),
    "lr": (lambda v: v > 0, "a number above 0"),
    "weight_decay": (lambda v: v >= 0, "a number of at least 0"),
    "l2": (lambda v: v >= 0, "a number of at least 0"),
    "batch_size": (lambda v: v >= 1, "a whole number of at least 1"),
    "max_length": (lambda v: v >= 8, "a whole number of at least 8"),
    "bucket_window": (lambda v: v >= 1, "a whole number of batches, at least 1 (1 turns length bucketing off)"),
    "warmup": (lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1"),
    "grad_clip": (lambda v: v >= 0, "a number of at least 0 (0 turns clipping off)"),
    "max_train": (lambda v: v >= 1, "a whole number of at least 1 (or none)"),
    "head_lr": (lambda v: v > 0, "a number above 0 (or none)"),
    "checkpoint_every_s": (lambda v: v > 0, "a number of seconds above 0"),
    "dropout": (lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1"),
    "task_layers": (lambda v: v >= 0, "a whole number of the encoder's layers, at least 0"),
}


def check_config(config: TrainConfig) -> None:
    """Every setting's type, choice and range; ConfigError names the first bad one.

    Runs whenever a config is built from settings (TrainConfig.from_dict, so also
    apply_overrides and every stored config read back): a bad value stops the command that
    gave it, before any experiment, folder or run exists."""
    for owner in (config, config.heads):
        hints = get_type_hints(type(owner))
        for f in fields(owner):
            if f.name in ("heads", "tasks"):
                continue
            value = getattr(owner, f.name)
            _check_value(f.name, value, hints[f.name])
            rule = RANGES.get(f.name)
            if rule is not None and value is not None and not rule[0](value):
                raise ConfigError(f"{f.name} = {value!r}: expected {rule[1]}")
    tasks = config.tasks
    if isinstance(tasks, str) or not isinstance(tasks, tuple) or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"tasks = {tasks!r}: expected task names such as sst,para")
    parse_tasks(tasks)  # each a known task
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks = {','.join(tasks)}: expected each task once")
    if config.train_weights == "bf16" and config.precision != "bf16":
        raise ConfigError(f"train_weights = bf16 with precision = {config.precision}: expected precision bf16 (or train_weights auto or fp32)")
    if not (config.device in ("auto", "cpu", "cuda") or (config.device.startswith("cuda:") and config.device[5:].isdigit())):
        raise ConfigError(f"device = {config.device!r}: expected auto, cpu, cuda or cuda:N")


def _check_value(name: str, value, hint) -> None:
    """One setting against its annotation: Literal choices, int, float, bool, str, or None."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return
        raise ConfigError(f"{name} = none: expected {_describe(options)}")
    for option in options:
        if get_origin(option) is Literal:
            if value in get_args(option):
                return
        elif option is bool:
            if isinstance(value, bool):
                return
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return
        elif option is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return
        elif option is str:
            if isinstance(value, str):
                return
    raise ConfigError(f"{name} = {value!r}: expected {_describe(options)}")


def _describe(options) -> str:
    words = []
    for option in options:
        if get_origin(option) is Literal:
            words.append(" or ".join(str(v) for v in get_args(option)))
        elif option is type(None):
            words.append("none")
        else:
            words.append({bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(option, str(option)))
    return " or ".join(words)


def run_seed(config: TrainConfig, experiment_tasks: tuple[str, ...]) -> TrainConfig:
    """The config of one run of an experiment on `experiment_tasks`: with seed_per_run, its seed
    plus the subset's number, the bit mask of its tasks' positions minus one (the first task
    alone keeps the seed as given; the whole set gets seed + 2^T - 2). The number depends only
    on the experiment's stored task order, so a resumed run gets the seed it started with."""
    if not config.seed_per_run:
        return config
    mask = sum(1 << experiment_tasks.index(t) for t in config.tasks if t in experiment_tasks)
    return replace(config, seed=config.seed + max(mask - 1, 0))


def apply_overrides(config: TrainConfig, overrides: dict) -> TrainConfig:
    """A copy of config with overrides; keys of the head config may be given at the top level.

    A None value means "not given"; `max_train=0` means "no cap".
    """
    d = config.to_dict()
    head_keys = {f.name for f in fields(HeadConfig)}
    for key, value in overrides.items():
        if value is None:  # not given: keep the profile's value
            continue
        if key == "max_train" and value == 0:  # 0 on the command line lifts the cap
            value = None
        if key in head_keys:
            d["heads"][key] = value
        else:
            d[key] = value
    return TrainConfig.from_dict(d)


def parse_settings(items: list[str]) -> dict:
    """`KEY=VALUE` strings (from --set) as typed overrides; the type follows the field's default."""
    import json

    known = {f.name: f for f in fields(TrainConfig)} | {f.name: f for f in fields(HeadConfig)}
    result = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ConfigError(f"--set '{item}': expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word such as bi, cls, linear
        if raw.lower() in ("none", "null"):
            value = None
        result[key] = value
    return result


def absolute_path(path: str | Path) -> str:
    """A path as the absolute one it names from this folder (with ~ expanded)."""
    return str(Path(path).expanduser().resolve())


def absolute_model(model: str | None) -> str | None:
    """A model given as something on disk, made absolute; a Hugging Face id (or None) as given.

    Anything that exists by that name counts as local (a file too), so a mistyped folder is
    reported as a bad folder rather than looked up on the hub."""
    if not model or os.path.isabs(model) or not Path(model).expanduser().exists():
        return model
    return absolute_path(model)


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """The config with a relative data folder and a local model folder made absolute.

    Stored paths must not depend on the folder a command runs in: the supervisor that a later
    `powerbert resume` starts, the dashboard and `powerbert predict` may all start elsewhere."""
    data_dir = absolute_path(config.data_dir) if config.data_dir else config.data_dir
    model = absolute_model(config.model)
    if (data_dir, model) == (config.data_dir, config.model):
        return config
    return replace(config, data_dir=data_dir, model=model)


def parse_gpus(text: str | None) -> list[int] | None:
    """GPU indices as typed (`--gpus`, the form): None or '' = every GPU found; 'cpu' or
    'none' = no GPU; '0,1' = those."""
    if text is None or not text.strip():
        return None
    text = text.strip().lower()
    if text in ("cpu", "none"):
        return []
    try:
        return [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise ConfigError(f"GPUs '{text}': expected GPU indices like 0,1 (or 'cpu')") from None
