"""The paper's two baselines, as extra runs of an experiment (`powerbert report --baselines`).

  frozen  the pretrained encoder with frozen weights; only the task heads train
  naive   the plain multitask model: no cosine STS (a regression head), no gradient surgery
Both train on all of the experiment's tasks at once. A run's `kind` names which recipe it uses;
power-set runs have kind "powerset" and use the experiment's config as it is.
"""

from __future__ import annotations

from powerbert.config import TrainConfig, apply_overrides

BASELINE_KINDS: dict[str, dict] = {
    # Heads alone on a frozen encoder learn slowly at a fine-tuning rate: give them their own.
    "frozen": {"freeze_encoder": True, "head_lr": 1e-3, "surgery": "sum"},
    "naive": {"surgery": "sum", "sts_head": "regress"},
}


def config_for_kind(config: TrainConfig, kind: str) -> TrainConfig:
    if kind == "powerset":
        return config
    if kind not in BASELINE_KINDS:
        raise ValueError(f"unknown run kind '{kind}': expected powerset, {', '.join(BASELINE_KINDS)}")
    return apply_overrides(config, BASELINE_KINDS[kind])
