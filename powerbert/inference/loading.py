"""Loading a finished experiment for prediction: each best checkpoint once, one shared
tokenizer, and the ensemble weights stored with the experiment.

A run that did not finish, or whose checkpoint is missing, corrupt or does not fit its
best.json, is left out and named in `missing` with the reason; `powerbert.inference.predict` then runs
each ensemble over the models it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from powerbert.config import TrainConfig
from powerbert.errors import CheckpointError, ConfigError, ExperimentError, ModelError, first_line
from powerbert.model.checkpoint import load_tensors, read_json
from powerbert.model.device import resolve_device, resolve_precision
from powerbert.model.multitask import MultitaskBert, load_encoder, load_tokenizer
from powerbert.results.ensemble import SCHEMES
from powerbert.results.evaluate import experiment_subsets
from powerbert.store import Experiment, RunStatus, Store
from powerbert.tasks import subset_name

# ---- what loading gives --------------------------------------------------------------------


@dataclass
class LoadedModel:
    name: str  # the run's subset, e.g. 'sst+para': the member name the ensembles use
    model: MultitaskBert  # in eval mode, on the experiment's device
    config: TrainConfig  # from the checkpoint's best.json
    checkpoint: Path  # the best.safetensors it was loaded from


@dataclass
class LoadedExperiment:
    experiment: Experiment
    models: dict[str, LoadedModel]  # subset -> model, power-set order
    tokenizer: Any  # one tokenizer, shared by every model (they share the base model)
    weights: dict[tuple[str, str], dict[str, float]]  # (scheme, task) -> member -> weight, as stored
    missing: dict[str, str]  # subset -> why it is not loaded (run failed, checkpoint corrupt, ...)
    device: torch.device
    precision: str  # "fp32" or "bf16": the autocast used for forward passes
    only_tasks: tuple[str, ...] | None = None  # models were loaded for these tasks only (None: all)
    subsets: tuple[str, ...] = ()  # the subsets the experiment trains (its runs), power-set order

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this can predict."""
        return tuple(t for t in self.experiment.tasks if self.only_tasks is None or t in self.only_tasks)

    def members(self, task: str) -> list[str]:
        """The loaded models trained on `task`."""
        return [name for name, m in self.models.items() if task in m.config.tasks]

    def expected(self, task: str) -> list[str]:
        """Every subset the experiment trains that includes `task`, loaded or not."""
        return [s for s in self.subsets if task in s.split("+")]

    def schemes(self, task: str | None = None) -> list[str]:
        """Schemes with stored weights (for `task`, if given), in the order tables show them."""
        names = {s for s, t in self.weights if task is None or t == task}
        return [s for s in SCHEMES if s in names] + sorted(names - set(SCHEMES))


# ---- loading -------------------------------------------------------------------------------


def load_experiment_models(
    store: Store,
    experiment: Experiment | str | int,
    device: str | torch.device = "cpu",
    *,
    precision: str | None = None,
    tasks: Sequence[str] | None = None,
) -> LoadedExperiment:
    """Load the best checkpoint of every finished power-set run of `experiment`, once.

    A run that did not finish, or whose checkpoint is missing, corrupt or does not fit the
    architecture in its best.json, is left out and named in `missing` with the reason.
    `precision` None means the runs' training precision (bf16 by default): dev outputs were
    evaluated under it, so predictions then match the dev scores and the ensemble weights fit
    on them exactly (fp32 on bf16-trained weights flipped 0.5% of classes), and bf16 is faster.
    `tasks` limits loading to the models trained on any of them (None: every model).
    Raises ExperimentError when no model at all can be loaded.
    """
    if precision not in (None, "bf16", "fp32"):
        raise ConfigError(f"precision '{precision}': expected bf16 or fp32")
    if not isinstance(experiment, Experiment):
        experiment = store.get_experiment(experiment)
    device = resolve_device(str(device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: no CUDA GPU is available here: use cpu (or auto)")
    for task in tasks or ():
        if task not in experiment.tasks:
            raise ConfigError(f"experiment '{experiment.name}' has no task {task}: its tasks are {', '.join(experiment.tasks)}")
    wanted = set(tasks or experiment.tasks)
    runs = {r.subset: r for r in store.runs(experiment.id, kind="powerset")}
    subsets = experiment_subsets(experiment, runs)
    expected = [s for s in subsets if wanted & set(s.split("+"))]
    models: dict[str, LoadedModel] = {}
    missing: dict[str, str] = {}
    for subset in expected:
        run = runs.get(subset)
        if run is None:
            missing[subset] = "no run"
            continue
        if run.status != RunStatus.FINISHED:
            reason = f"run {run.status}"
            missing[subset] = f"{reason}: {run.error}" if run.error else reason
            continue
        try:
            loaded = _load_model(run, device)
        except (CheckpointError, ModelError) as exc:
            missing[subset] = str(exc)
            continue
        base = next(iter(models.values()), loaded).config.model  # one tokenizer serves them all
        if loaded.config.model != base:
            missing[subset] = f"trained from model {loaded.config.model}, the others from {base}"
            continue
        models[subset] = loaded
    if not models:
        by_reason: dict[str, list[str]] = {}
        for subset, why in missing.items():
            by_reason.setdefault(why, []).append(subset)
        reasons = "; ".join(f"{', '.join(subsets)}: {why}" for why, subsets in by_reason.items())
        raise ExperimentError(f"no model of experiment '{experiment.name}' can be loaded ({reasons})")
    first = next(iter(models.values()))

    if precision is None:  # the precision the runs trained and were scored at, which they record
        precision = resolve_precision(first.config.precision, device)
    return LoadedExperiment(
        experiment=experiment,
        models=models,
        tokenizer=load_tokenizer(first.config.model),
        weights=stored_weights(store, experiment),
        missing=missing,
        device=device,
        precision=precision,
        only_tasks=None if tasks is None else tuple(tasks),
        subsets=tuple(subsets),
    )


def _load_model(run, device: torch.device) -> LoadedModel:
    folder = Path(run.out_dir) if run.out_dir else Path(run.checkpoint or "").parent
    path = folder / "best.safetensors"
    meta = read_json(folder / "best.json")
    try:
        config = TrainConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'best.json'}: not a PowerBERT checkpoint config ({exc})") from None
    if subset_name(config.tasks) != run.subset:
        raise CheckpointError(f"{folder / 'best.json'}: is for tasks {'+'.join(config.tasks)}, not {run.subset}")
    tensors, _ = load_tensors(path)
    model = MultitaskBert(load_encoder(config.model, weights=False), config.tasks, config.heads)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit the model its best.json describes ({first_line(exc)})") from None
    model.to(device).eval()
    return LoadedModel(run.subset, model, config, path)


def stored_weights(store: Store, experiment: Experiment) -> dict[tuple[str, str], dict[str, float]]:
    """(scheme, task) -> member weights from the stored ensemble results; evaluated first if
    the experiment has none stored yet."""
    results = store.ensemble_results(experiment.id)
    if not results:
        from powerbert.results.evaluate import ensemble_experiment, evaluate_experiment, outcome_results

        if getattr(store, "readonly", False):  # evaluate, without storing, on a database we only read
            results = outcome_results(experiment.id, evaluate_experiment(store, experiment))
        else:
            ensemble_experiment(store, experiment.id)
            results = store.ensemble_results(experiment.id)
    weights = {}
    for r in results:
        w = {m: float(v) for m, v in (r.details or {}).get("weights", {}).items() if v is not None}
        if w:
            weights[(r.scheme, r.task)] = w
    return weights
