"""An experiment's results from runs.db: its ensembles evaluated from the stored dev outputs
(no model is run again), and the report built from them.
"""

from __future__ import annotations

from powerbert.outputs import TaskOutputs
from powerbert.results import DEFAULT_SCHEME
from powerbert.results.ensemble import SCHEMES, EnsembleOutcome, evaluate_all, outcome_record
from powerbert.results.report import ReportData, build_report
from powerbert.store import EnsembleResult, Experiment, RunStatus, Store, run_label
from powerbert.tasks import power_set, subset_name


def load_dev_outputs(store: Store, experiment: Experiment) -> tuple[dict[str, dict[str, TaskOutputs]], list[str]]:
    """Dev outputs of the finished power-set runs by subset name, and the expected subsets.

    Runs that did not finish, or whose stored outputs are unusable, are left out; the
    ensembles name them as missing.
    """
    dev: dict[str, dict[str, TaskOutputs]] = {}
    runs = store.runs(experiment.id, kind="powerset")
    for run in runs:
        if run.status == RunStatus.FINISHED:
            outputs = store.dev_outputs(run.id)
            if outputs:
                dev[run.subset] = outputs
    return dev, experiment_subsets(experiment, {r.subset: r for r in runs})


def experiment_subsets(experiment: Experiment, runs: dict) -> list[str]:
    """The subsets an experiment trains (its power-set runs; all of the power set, or the part
    --subsets chose), in power-set order: the members its ensembles expect."""
    return [subset_name(s) for s in power_set(experiment.tasks) if subset_name(s) in runs]


def evaluate_experiment(store: Store, experiment: Experiment) -> list[EnsembleOutcome]:
    dev, expected = load_dev_outputs(store, experiment)
    if not dev:
        return []
    return evaluate_all(dev, experiment.tasks, expected_models=expected, schemes=SCHEMES)


def ensemble_experiment(store: Store, experiment_id: int) -> list[EnsembleOutcome]:
    """Evaluate every scheme from the stored dev outputs and store the scores."""
    experiment = store.get_experiment(experiment_id)
    outcomes = evaluate_experiment(store, experiment)
    store.save_ensemble_results(experiment_id, outcome_results(experiment_id, outcomes), replace_all=True)
    return outcomes


def outcome_results(experiment_id: int, outcomes: list[EnsembleOutcome]) -> list[EnsembleResult]:
    """Ensemble outcomes as the rows the store keeps (and hands back)."""
    return [EnsembleResult(experiment_id, o.scheme, o.task, o.score, outcome_record(o)) for o in outcomes]


def experiment_report(store: Store, experiment: Experiment, scheme: str = DEFAULT_SCHEME) -> ReportData:
    """The results table (every run, every scheme) and the error analysis of `scheme`."""
    outcomes = evaluate_experiment(store, experiment)
    scores, status = {}, {}
    for run in store.runs(experiment.id):
        label = run_label(run.subset, run.kind)
        scores[label] = dict(run.best_scores or {})
        status[label] = str(run.status)
    report = build_report(experiment.name, experiment.tasks, scores, status, outcomes, analysis_scheme=scheme)
    report.subsets = experiment_subsets(experiment, {r.subset: r for r in store.runs(experiment.id, kind="powerset")})
    return report


