"""The configuration of one training run: every knob of the recipe, with its default.

Profiles (powerbert.profiles) are named sets of overrides of these defaults; the CLI and the
dashboard override them again; the resolved dict is what runs.db and best.json record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from powerbert.model import HeadConfig


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
    warmup: float = 0.1  # fraction of all steps spent warming the learning rate up from 0
    schedule: Literal["linear", "constant"] = "linear"  # after warm-up: linear decay to 0, or flat
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    seed: int = 0
    surgery: Literal["pcgrad", "sum"] = "pcgrad"  # how multitask gradients are combined
    epoch_size: Literal["max", "min"] = "max"  # steps per epoch: the largest or the smallest task's batches
    max_train: int | None = None  # training rows per task per epoch (a fresh sample each epoch)
    skip_bad_rows: bool = False  # skip malformed rows (reported with their lines) instead of stopping
    precision: Literal["bf16", "fp32"] = "bf16"  # autocast dtype for forward passes
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
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config setting(s) {', '.join(unknown)}: expected some of {', '.join(sorted(known))}")
        d = dict(d)
        heads = d.pop("heads", None) or {}
        heads = heads if isinstance(heads, HeadConfig) else HeadConfig(**heads)
        if "tasks" in d:
            d["tasks"] = tuple(d["tasks"])
        return cls(heads=heads, **d)


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
            raise ValueError(f"--set '{item}': expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a bare word such as bi, cls, linear
        if raw.lower() in ("none", "null"):
            value = None
        result[key] = value
    return result
