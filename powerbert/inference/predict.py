"""Prediction on new text with a finished experiment: every model, and every ensemble over them.

    with Store("runs.db") as store:
        loaded = load_experiment_models(store, "exp1")           # each best checkpoint, once
        result = predict_texts(loaded, "sst", ["a gorgeous, witty, seductive movie."])
        result.members["sst+para"], result.ensembles["weighted"]  # outputs as in tasks.py
        rows = predict_file(loaded, "sts", "sts-test-student.csv", "weighted")

The ensembles combine the models' outputs with `ensemble.combine` and the weights stored with
the experiment's ensemble results, so a prediction here and a dev score in the report come from
the same function and the same weights. A model that cannot be used (its run did not finish,
its checkpoint is missing or corrupt) is left out and named in `missing`; each ensemble then
uses the models it has, its weights renormalised over them.

Work is shared within a call (and across calls that pass the same `PredictionCache`): texts are
tokenised once per pair mode, each model embeds every distinct sentence once (so an STS pair
and a bi-encoder paraphrase pair through a model trained on both, or a sentence repeated in the
input, cost one encoder pass each), and models run over length-sorted batches. In the playground
(`predict_sentences`) each model reads everything it needs for every task in one pass: the pair
for a cross-encoded task and both sentences of a bi-encoded one together.

Models run at their training precision by default (bf16 autocast unless the run chose fp32),
the precision their dev outputs were evaluated at: predictions then match the report exactly.

Nothing here prints: the CLI and the dashboard's playground render the dataclasses returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import expit, softmax

from powerbert.data.files import read_task_file
from powerbert.errors import InputError
from powerbert.inference.encoding import PredictionCache, embed_keys, embedding_keys, model_outputs
from powerbert.inference.files import CS224N_HEADERS, FORMATS, format_predictions, write_predictions  # noqa: F401 - re-exported
from powerbert.inference.inputs import check_inputs
from powerbert.inference.loading import LoadedExperiment, LoadedModel, load_experiment_models, stored_weights  # noqa: F401 - re-exported
from powerbert.results import DEFAULT_SCHEME
from powerbert.results.ensemble import SCHEMES, combine
from powerbert.tasks import TASKS, tasks_for_input

FILE_CHUNK_ROWS = 2048  # rows of a file predicted per call, so the embedding cache stays small


# ---- what prediction gives -----------------------------------------------------------------


@dataclass
class TaskPrediction:
    """One task's outputs for a list of inputs, per model and per ensemble.

    Outputs follow powerbert.tasks: logits [N, C] (classify), one logit [N] (binary), the
    score [N] (regress). `labels()` and `probabilities()` read them.
    """

    task: str
    inputs: list[tuple[str, ...]]  # the texts as predicted (control characters removed)
    members: dict[str, np.ndarray]  # model -> outputs
    ensembles: dict[str, np.ndarray]  # scheme -> combined outputs
    weights: dict[str, dict[str, float]]  # scheme -> member -> weight used (renormalised)
    missing: list[str]  # models of this task that could not be used
    truncated: list[int]  # positions of inputs cut to the model's max_length
    max_length: int  # tokens per input the models read
    messages: list[str] = field(default_factory=list)  # ensembles that could not run or run short

    @property
    def notices(self) -> list[str]:
        """Everything the user should be told, one line each: truncation first."""
        lines = list(self.messages)
        if self.truncated:
            shown = ", ".join(str(i + 1) for i in self.truncated[:10]) + (", …" if len(self.truncated) > 10 else "")
            lines.insert(0, f"{self.task}: {len(self.truncated)} input(s) longer than {self.max_length} tokens "
                            f"were truncated to {self.max_length} (input {shown})")
        return lines

    def outputs(self, source: str) -> np.ndarray:
        """Outputs of a scheme or of a model."""
        if source in self.ensembles:
            return self.ensembles[source]
        if source in self.members:
            return self.members[source]
        known = ", ".join([*self.ensembles, *self.members]) or "none"
        raise InputError(f"no {self.task} outputs for '{source}': predicted are {known}")

    def labels(self, source: str) -> np.ndarray:
        """Predicted labels: class (classify), 0/1 (binary) or the score clipped to 0..5."""
        return TASKS[self.task].predictions(self.outputs(source))

    def probabilities(self, source: str) -> np.ndarray | None:
        return probabilities(self.task, self.outputs(source))


@dataclass
class FilePredictions(Sequence):
    """A task file's predictions in file order; a sequence of (id, prediction) pairs."""

    task: str
    source: str  # the scheme (or model) that predicted
    path: Path
    rows: list[tuple[str, int | float]]
    missing: list[str]  # models of the task that could not be used
    notices: list[str]

    def __getitem__(self, index):
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)


def probabilities(task: str, outputs: np.ndarray) -> np.ndarray | None:
    """Class probabilities [N, C] (classify), P(positive) [N] (binary), None (regress)."""
    kind = TASKS[task].kind
    outputs = np.asarray(outputs, dtype=np.float64)
    if kind == "classify":
        return softmax(outputs, axis=-1)
    if kind == "binary":
        return expit(outputs)
    return None


# ---- inputs --------------------------------------------------------------------------------


# ---- prediction ----------------------------------------------------------------------------


def predict_texts(
    loaded: LoadedExperiment,
    task: str,
    texts: Sequence[str] | Sequence[tuple[str, str]],
    scheme: str | Sequence[str] | None = None,
    *,
    cache: PredictionCache | None = None,
) -> TaskPrediction:
    """Every model's outputs for `texts` on `task`, and the ensembles of `scheme`.

    `texts` are sentences for sst and cfimdb, (sentence1, sentence2) pairs for para and sts.
    `scheme` None means every scheme the experiment has (one that cannot run for lack of
    models is left out with a message); a named scheme (or list) that cannot run raises
    InputError, and only the models it weights are run; a model's subset name runs that model. Inputs longer than a model's
    max_length are truncated and listed in `truncated`; empty inputs raise ValueError.
    """
    if task not in TASKS:
        raise InputError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    if task not in loaded.tasks:
        if task in loaded.experiment.tasks:
            raise InputError(f"{task}: its models were not loaded (loaded for {', '.join(loaded.tasks)} only)")
        raise InputError(f"experiment '{loaded.experiment.name}' has no task {task}: its tasks are {', '.join(loaded.tasks)}")
    rows = check_inputs(task, texts)
    cache = cache if cache is not None else PredictionCache()
    if isinstance(scheme, str) and scheme in loaded.models:  # one model, by its subset name
        if task not in loaded.models[scheme].config.tasks:
            raise InputError(f"model {scheme} was not trained on {task}: models for {task} are {', '.join(loaded.members(task))}")
        return _predict_one_model(loaded, task, texts, scheme)
    members = loaded.members(task)
    missing = [m for m in loaded.expected(task) if m not in loaded.models]
    messages: list[str] = []
    requested = loaded.schemes() if scheme is None else [scheme] if isinstance(scheme, str) else list(scheme)
    weights: dict[str, dict[str, float]] = {}
    for name in requested:
        if name not in loaded.schemes():
            raise InputError(_unknown_scheme(loaded, name))
        stored = loaded.weights.get((name, task), {})
        usable = {m: w for m, w in stored.items() if m in loaded.models and w > 0}
        if not usable:
            # no stored weights: the scheme could not run when the ensembles were evaluated
            gone = [m for m in stored if m not in loaded.models] or (
                [task] if name == "single" else missing)
            message = f"{task}: the {name} ensemble cannot run: {', '.join(gone) or 'its models'} missing"
            if scheme is not None:
                raise InputError(message)
            messages.append(message)
            continue
        total = sum(usable.values())
        weights[name] = {m: w / total for m, w in usable.items()}
        gone = [m for m, w in stored.items() if w > 0 and m not in loaded.models]
        if gone:
            messages.append(f"{task}: the {name} ensemble runs without {', '.join(gone)}; its weights are renormalised over the rest")
    if not members:
        raise InputError(f"{task}: no model trained on it can be loaded (missing: {', '.join(missing)})")
    if scheme is not None:  # run only what the requested ensembles need
        needed = {m for w in weights.values() for m in w}
        members = [m for m in members if m in needed]

    outputs: dict[str, np.ndarray] = {}
    truncated: set[int] = set()
    for name in members:
        member = loaded.models[name]
        out, cut = model_outputs(loaded, member, task, rows, cache)
        outputs[name] = out
        truncated |= cut
    ensembles = {s: combine(task, outputs, w) for s, w in weights.items()}
    max_length = min(loaded.models[m].config.max_length for m in members)
    return TaskPrediction(task, rows, outputs, ensembles, weights, missing, sorted(truncated), max_length, messages)


def predict_sentences(
    loaded: LoadedExperiment,
    first: str,
    second: str | None = None,
    scheme: str | None = None,
    *,
    tasks: Sequence[str] | None = None,
) -> dict[str, TaskPrediction]:
    """Predict every task of the experiment (or of `tasks`) the input fits: one sentence (sst,
    cfimdb) or a pair (para, sts). The tasks share one cache, so shared work is done once."""
    cache = PredictionCache()
    pair = second is not None
    texts = [(first, second)] if pair else [first]
    fits = [t for t in tasks_for_input(loaded.tasks, pair) if loaded.members(t) and (tasks is None or t in tasks)]
    if not fits:
        want = "sentence pairs (para, sts)" if pair else "single sentences (sst, cfimdb)"
        raise InputError(f"experiment '{loaded.experiment.name}' has no loaded model for {want}")
    if scheme is None:
        # Every model of every fitting task runs: encode all that a model reads (a pair for para,
        # its two sentences for sts) in one pass per model, rather than one per task (one per
        # task where the model's tasks have their own top layers: their embeddings differ).
        rows = {t: check_inputs(t, texts) for t in fits}
        for name, member in loaded.models.items():
            wanted = [t for t in fits if name in loaded.members(t)]
            for group in ([t] for t in wanted) if member.model.task_layers else [wanted]:
                keys = [k for t in group for k in embedding_keys(loaded, member, t, rows[t], cache)[0]]
                if keys:
                    embed_keys(loaded, member, group[0], keys, cache)
    return {t: predict_texts(loaded, t, texts, scheme, cache=cache) for t in fits}


def predict_file(
    loaded: LoadedExperiment,
    task: str,
    input_path: Path | str,
    scheme: str = DEFAULT_SCHEME,
    *,
    chunk_rows: int = FILE_CHUNK_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
) -> FilePredictions:
    """Predict every row of a CS224N task file (labelled or test-student), in file order.

    `scheme` is an ensemble scheme, or a model (subset name, e.g. 'sst+para') to predict with
    that model alone. Predictions: sst class 0..4, para 0/1, sts score 0..5.
    `on_progress(rows_done, rows_total)` is called after each chunk of rows.
    """
    if task not in TASKS:
        raise InputError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    single_model = scheme in loaded.models
    if single_model and task not in loaded.models[scheme].config.tasks:
        raise InputError(f"model {scheme} was not trained on {task}: models for {task} are {', '.join(loaded.members(task))}")
    if not single_model and scheme not in loaded.schemes():
        raise InputError(_unknown_scheme(loaded, scheme, task))
    data = read_task_file(task, input_path)
    rows: list[tuple[str, int | float]] = []
    notices: list[str] = []
    truncated: list[str] = []
    missing: list[str] = []
    for start in range(0, len(data.examples), chunk_rows):
        chunk = data.examples[start : start + chunk_rows]
        texts = [ex.texts if TASKS[task].is_pair else ex.texts[0] for ex in chunk]
        result = predict_texts(loaded, task, texts, scheme)
        labels = result.labels(scheme)
        cast = float if TASKS[task].kind == "regress" else int
        rows.extend((ex.id, cast(v)) for ex, v in zip(chunk, labels))
        truncated += [chunk[i].id for i in result.truncated]
        missing = result.missing
        notices += [n for n in result.messages if n not in notices]
        max_length = result.max_length
        if on_progress is not None:
            on_progress(start + len(chunk), len(data.examples))
    if truncated:
        shown = ", ".join(truncated[:10]) + (", …" if len(truncated) > 10 else "")
        notices.insert(0, f"{task}: {len(truncated)} row(s) longer than {max_length} tokens were truncated to {max_length} (ids {shown})")
    return FilePredictions(task, scheme, Path(input_path), rows, missing, notices)


def _unknown_scheme(loaded: LoadedExperiment, scheme: str, task: str | None = None) -> str:
    name = loaded.experiment.name
    if scheme in SCHEMES:
        return f"experiment '{name}' has no stored {scheme} ensemble: run `powerbert ensemble {name}`"
    known = [*(loaded.schemes() or SCHEMES), *(loaded.members(task) if task else [])]
    return f"unknown scheme '{scheme}': expected one of {', '.join(known)}"


def _predict_one_model(loaded: LoadedExperiment, task: str, texts, name: str) -> TaskPrediction:
    rows = check_inputs(task, texts)
    member = loaded.models[name]
    out, cut = model_outputs(loaded, member, task, rows, PredictionCache())
    return TaskPrediction(task, rows, {name: out}, {}, {}, [], sorted(cut), member.config.max_length)


# ---- the forward passes --------------------------------------------------------------------


