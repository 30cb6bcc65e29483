"""The Python API: a finished experiment as one object that predicts, `powerbert.load(...)`.

    import powerbert
    ens = powerbert.load("runs.db")                    # the newest finished experiment
    ens.predict("sst", ["a gorgeous, witty, seductive movie."])
    # -> [Prediction(label=4, name='very positive', probabilities=[...])]
    ens.predict("sts", [("A man plays a guitar.", "Someone plays music.")])
    # -> [Prediction(score=3.4)]

Every model is loaded once when the experiment is; `predict` runs the models the scheme weights
(or the one model named) on the inputs, batched, at the runs' training precision, so answers
agree with the report. Every mistake (a task the experiment lacks, a pair where a sentence is
expected, an empty list, an experiment with nothing finished) raises `powerbert.UserError`
with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from powerbert.errors import ExperimentError, InputError, StoreError
from powerbert.inference.loading import LoadedExperiment, load_experiment_models
from powerbert.inference.predict import predict_texts
from powerbert.results import DEFAULT_SCHEME
from powerbert.store import ExperimentStatus, Store
from powerbert.store.db import no_database_message
from powerbert.tasks import TASKS


@dataclass(frozen=True)
class Prediction:
    """One input's answer. Classification: `label`, its `name` and the class `probabilities`;
    binary (paraphrase): the same, with probabilities [P(0), P(1)]; regression: `score`."""

    label: int | None = None
    name: str | None = None
    probabilities: list[float] | None = None
    score: float | None = None

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if v is not None}
        shown = ", ".join(f"{k}={[round(p, 4) for p in v] if k == 'probabilities' else v!r}" for k, v in fields.items())
        return f"Prediction({shown})"


class Ensemble:
    """A finished experiment's models and ensembles, ready to predict."""

    def __init__(self, loaded: LoadedExperiment, scores: dict[str, dict[str, float | None]]):
        self._loaded = loaded
        self.name = loaded.experiment.name
        self.tasks: tuple[str, ...] = tuple(loaded.tasks)
        self.scores = scores  # model or scheme -> task -> dev score, as in the report

    @property
    def models(self) -> tuple[str, ...]:
        """The loaded models by subset name ('sst', 'sst+para', ...)."""
        return tuple(self._loaded.models)

    def predict(self, task: str, inputs: Sequence[str] | Sequence[tuple[str, str]], scheme: str = DEFAULT_SCHEME) -> list[Prediction]:
        """One Prediction per input, in order. `inputs` are sentences for a single-sentence
        task and (sentence1, sentence2) pairs for a pair task; `scheme` is an ensemble scheme
        (voting, the default; weighted, single, learned) or one model's subset name."""
        if isinstance(inputs, (str, tuple)):
            what = "a list of (sentence1, sentence2) pairs" if task in TASKS and TASKS[task].is_pair else "a list of sentences"
            raise InputError(f"{task}: inputs must be {what}, not one {type(inputs).__name__}")
        if task in TASKS and task not in self.tasks:
            raise InputError(f"experiment '{self.name}' has no task {task}: its tasks are {', '.join(self.tasks)}")
        result = predict_texts(self._loaded, task, list(inputs), scheme)
        spec = TASKS[task]
        labels = result.labels(scheme)
        probabilities = result.probabilities(scheme)
        answers = []
        for i, label in enumerate(labels):
            if spec.kind == "regress":
                answers.append(Prediction(score=round(float(label), 4)))
            elif spec.kind == "binary":
                p = float(probabilities[i])
                answers.append(Prediction(label=int(label), name=spec.label_name(int(label)), probabilities=[1.0 - p, p]))
            else:
                answers.append(Prediction(label=int(label), name=spec.label_name(int(label)), probabilities=[float(p) for p in probabilities[i]]))
        return answers

    def __repr__(self) -> str:
        return f"Ensemble({self.name!r}, tasks={self.tasks}, models={len(self.models)})"


def load(db: str | Path = "runs.db", experiment: str | int | None = None, *, device: str = "auto") -> Ensemble:
    """The experiment `experiment` (name or id; default the newest finished one) of `db`."""
    from powerbert.results.evaluate import experiment_report

    path = Path(db).expanduser()
    if not path.exists():
        raise StoreError(no_database_message(path))
    # Read-only: loading an experiment never writes, and a runs.db on a read-only mount loads.
    with Store(path, readonly=True) as store:
        if experiment is None:
            found = store.latest_experiment(ExperimentStatus.FINISHED.value)
            if found is None:
                raise ExperimentError(f"no finished experiment in {store.path}: train one with `powerbert run`")
        else:
            found = store.get_experiment(experiment)
        loaded = load_experiment_models(store, found, device)
        report = experiment_report(store, found)
    scores = {row.name: dict(row.scores) for row in report.rows}
    return Ensemble(loaded, scores)

