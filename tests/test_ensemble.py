"""Ensemble schemes on hand-made dev outputs with known answers, and the honesty of CV scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import check_grad

from powerbert.outputs import TaskOutputs
from powerbert.results import ensemble, fitting
from powerbert.results.ensemble import (
    SCHEMES,
    combine,
    cv_folds,
    evaluate_all,
    evaluate_scheme,
    outcome_record,
    scheme_overall,
    scheme_weights,
)
from powerbert.tasks import power_set, subset_name


def outs(task, outputs, gold, ids=None) -> TaskOutputs:
    gold = np.asarray(gold, dtype=float)
    return TaskOutputs(task, ids or [f"{task}-{i}" for i in range(len(gold))], gold, outputs)


def test_voting_mean_of_logits_fixes_an_example_both_members_get_wrong_alone():
    gold = [2, 0]
    # example 0: a says 1 (barely), b says 3 (barely); both give 2 a strong second place
    a = [[0, 2.0, 1.8, 0, 0], [3, 0, 0, 0, 0]]
    b = [[0, 0, 1.8, 2.0, 0], [3, 0, 0, 0, 0]]
    members = {"sst": outs("sst", a, gold), "sst+para": outs("sst", b, gold)}
    assert members["sst"].score() == members["sst+para"].score() == 0.5
    result = evaluate_scheme("voting", "sst", members)
    np.testing.assert_allclose(result.outputs, (np.array(a) + np.array(b)) / 2)
    assert result.score == 1.0
    assert result.weights == {"sst": 0.5, "sst+para": 0.5}
    assert result.missing == []


def test_weighted_weights_are_exactly_proportional_to_dev_scores():
    gold = [1, 1, 0, 0]
    good = outs("para", [1.0, 1.0, -1.0, 1.0], gold)  # accuracy 3/4
    poor = outs("para", [-1.0, -1.0, -1.0, 1.0], gold)  # accuracy 1/4
    result = evaluate_scheme("weighted", "para", {"para": good, "para+sts": poor})
    assert result.weights == pytest.approx({"para": 0.75, "para+sts": 0.25})
    np.testing.assert_allclose(result.outputs, 0.75 * good.outputs + 0.25 * poor.outputs)
    assert result.details["member_scores"] == pytest.approx({"para": 0.75, "para+sts": 0.25})


def test_weighted_gives_a_negative_pearson_member_no_vote_and_falls_back_to_equal():
    gold = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    members = {"sts": outs("sts", gold * 0.5 + 1, gold), "sst+sts": outs("sts", 4 - gold, gold)}
    result = evaluate_scheme("weighted", "sts", members)
    assert result.weights == pytest.approx({"sts": 1.0, "sst+sts": 0.0})
    both_bad = {"sts": outs("sts", 4 - gold, gold), "sst+sts": outs("sts", 5 - gold, gold)}
    fallback = evaluate_scheme("weighted", "sts", both_bad)
    assert fallback.weights == {"sts": 0.5, "sst+sts": 0.5}
    assert "equal" in fallback.details["note"]


def test_single_picks_the_single_task_model_and_says_when_it_is_missing():
    gold = [1, 0, 1]
    members = {
        "para+sts": outs("para", [1.0, 1.0, 1.0], gold),
        "para": outs("para", [1.0, -1.0, -1.0], gold),
    }
    result = evaluate_scheme("single", "para", members)
    assert result.weights == {"para": 1.0}
    assert result.score == pytest.approx(2 / 3)
    del members["para"]
    absent = evaluate_scheme("single", "para", members, expected=["para", "para+sts"])
    assert absent.score is None and absent.outputs is None
    assert absent.missing == ["para"]
    assert "'para' missing" in absent.details["note"]


def test_combine_reproduces_every_schemes_dev_outputs():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 5, 60)
    members = {name: outs("sst", np.eye(5)[gold] + rng.normal(size=(60, 5)), gold)
               for name in ("sst", "sst+para", "sst+sts")}
    raw = {m: o.outputs for m, o in members.items()}
    for scheme in ("voting", "weighted", "single"):
        result = evaluate_scheme(scheme, "sst", members)
        np.testing.assert_allclose(combine("sst", raw, result.weights), result.outputs)
    learned = evaluate_scheme("learned", "sst", members)
    # out-of-fold outputs are each fold combined with that fold's weights
    for held, weights in zip(cv_folds(60, 5, 0), learned.details["fold_weights"]):
        expected = combine("sst", {m: o[held] for m, o in raw.items()}, weights)
        np.testing.assert_allclose(learned.outputs[held], expected)
    assert sum(learned.weights.values()) == pytest.approx(1.0)


def test_combine_renormalises_and_ignores_zero_weights():
    raw = {"a": np.array([1.0, 3.0]), "b": np.array([3.0, 5.0]), "c": np.array([np.nan, np.nan])}
    np.testing.assert_allclose(combine("sts", raw, {"a": 2, "b": 2, "c": 0}), [2.0, 4.0])
    with pytest.raises(ValueError, match="no member"):
        combine("sts", raw, {"a": 0})


def test_learned_cv_fits_never_see_their_held_out_rows(monkeypatch):
    n = 23
    gold = np.arange(n) / n * 5  # unique values: the fitter's gold tells us which rows it saw
    members = {"sts": outs("sts", gold + 1, gold), "sst+sts": outs("sts", -gold, gold)}
    seen: list[set[int]] = []

    def recording_fit(task, member_outputs, fit_gold):
        seen.append({int(round(g * n / 5)) for g in fit_gold})
        k = len(seen)
        return {"sts": k / 7, "sst+sts": 1 - k / 7}  # distinct weights per call

    monkeypatch.setitem(ensemble.FITTERS, "learned", recording_fit)
    result = evaluate_scheme("learned", "sts", members, folds=5, seed=7)
    assert len(seen) == 6  # five folds, then the final fit on all of dev
    held_out = [set(range(n)) - rows for rows in seen[:5]]
    assert sorted(r for h in held_out for r in h) == list(range(n))  # each row held out once
    for rows, held in zip(seen[:5], held_out):
        assert rows.isdisjoint(held) and held
    assert seen[5] == set(range(n))
    # each held-out row was combined with the weights of the fit that did not see it
    for k, held in enumerate(held_out, start=1):
        idx = sorted(held)
        np.testing.assert_allclose(result.outputs[idx], k / 7 * (gold[idx] + 1) + (1 - k / 7) * -gold[idx])
    assert result.weights == {"sts": 6 / 7, "sst+sts": 1 - 6 / 7}  # prediction uses the full fit


def test_learned_score_is_not_the_in_sample_score_of_overfit_noise():
    rng = np.random.default_rng(0)
    n = 40
    gold = rng.uniform(0, 5, n)
    # eight members of pure noise: a fit on all rows finds a lucky blend, held-out rows do not
    members = {f"noise{i}": outs("sts", rng.uniform(0, 5, n), gold) for i in range(8)}
    result = evaluate_scheme("learned", "sts", members)
    assert result.details["in_sample_score"] > result.score + 0.1
    assert len(result.details["fold_weights"]) == 5
    assert result.details["cv"] == {"folds": 5, "seed": 0, "sizes": [8, 8, 8, 8, 8]}


def test_learned_finds_the_good_member_and_beats_voting():
    rng = np.random.default_rng(1)
    n = 400
    gold = rng.integers(0, 5, n)
    signal = np.eye(5)[gold] * 2
    members = {
        "sst": outs("sst", signal + rng.normal(size=(n, 5)), gold),
        "sst+para": outs("sst", signal + rng.normal(size=(n, 5)) * 4, gold),
        "sst+sts": outs("sst", rng.normal(size=(n, 5)) * 3, gold),  # learned nothing
    }
    learned = evaluate_scheme("learned", "sst", members)
    voting = evaluate_scheme("voting", "sst", members)
    assert learned.weights["sst"] > 0.6 and learned.weights["sst+sts"] < 0.1
    assert learned.score > voting.score


@pytest.mark.parametrize("task,shape", [("sst", (3, 30, 5)), ("para", (3, 30)), ("sts", (3, 30))])
def test_learned_loss_gradient_matches_finite_differences(task, shape):
    rng = np.random.default_rng(2)
    stack = rng.normal(size=shape)
    draw = {"sst": lambda: rng.integers(0, 5, 30), "para": lambda: rng.integers(0, 2, 30),
            "sts": lambda: rng.uniform(0, 5, 30)}
    gold = draw[task]().astype(float)

    def loss(theta):
        return fitting.loss_and_grad(task, stack, gold, theta)[0]

    def grad(theta):
        return fitting.loss_and_grad(task, stack, gold, theta)[1]

    assert check_grad(loss, grad, rng.normal(size=3)) < 1e-5


def test_greedy_is_cross_validated_and_picks_the_best_member_first():
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 200).astype(float)
    members = {
        "para": outs("para", (2 * gold - 1) + rng.normal(size=200) * 0.8, gold),
        "para+sts": outs("para", rng.normal(size=200), gold),
    }
    result = evaluate_scheme("greedy", "para", members)
    assert "greedy" not in SCHEMES
    assert result.weights["para"] >= 0.5 and sum(result.weights.values()) == pytest.approx(1)
    assert len(result.details["fold_weights"]) == 5 and "in_sample_score" in result.details


def test_misaligned_members_raise_naming_the_model():
    gold = [1, 0]
    a = outs("para", [1.0, -1.0], gold, ids=["q1", "q2"])
    b = outs("para", [1.0, -1.0], gold, ids=["q2", "q1"])
    with pytest.raises(ValueError, match="'sst\\+para'"):
        evaluate_scheme("voting", "para", {"para": a, "sst+para": b})
    wrong_task = outs("sts", [1.0, 2.0], [1.0, 2.0], ids=["q1", "q2"])
    with pytest.raises(ValueError, match="'para\\+sts'"):
        evaluate_scheme("voting", "para", {"para": a, "para+sts": wrong_task})


def test_missing_and_refused_members_are_named_per_task():
    tasks = ("sst", "para", "sts")
    expected = [subset_name(s) for s in power_set(tasks)]
    rng = np.random.default_rng(5)
    gold = {"sst": rng.integers(0, 5, 20), "para": rng.integers(0, 2, 20), "sts": rng.uniform(0, 5, 20)}
    shapes = {"sst": (20, 5), "para": (20,), "sts": (20,)}
    dev = {
        name: {t: outs(t, rng.normal(size=shapes[t]), gold[t]) for t in name.split("+")}
        for name in expected
        if name != "sst+para"  # a failed run: no dev outputs at all
    }
    dev["sts"]["sts"].outputs[3] = np.nan  # a broken run: refused, not averaged in
    outcomes = evaluate_all(dev, tasks, expected_models=expected)
    assert [(o.scheme, o.task) for o in outcomes][:4] == [(s, "sst") for s in SCHEMES]
    by = {(o.scheme, o.task): o for o in outcomes}
    assert by["voting", "sst"].missing == ["sst+para"]
    assert by["voting", "para"].missing == ["sst+para"]
    assert by["voting", "sts"].missing == ["sts"]
    assert by["voting", "sts"].details["refused"] == {"sts": "non-finite outputs"}
    assert by["single", "sts"].score is None
    assert sorted(by["voting", "sst"].members) == ["sst", "sst+para+sts", "sst+sts"]
    overall = scheme_overall(outcomes)
    assert overall["single"] is None and overall["voting"] is not None
    weights = scheme_weights(outcomes)
    assert ("single", "sts") not in weights
    assert set(weights["learned", "para"]) == {"para", "para+sts", "sst+para+sts"}
    import json

    json.dumps(outcome_record(by["weighted", "sts"]), allow_nan=False)


def test_no_members_gives_no_score_rather_than_an_error():
    result = evaluate_scheme("learned", "sts", {}, expected=["sts"])
    assert result.score is None and result.missing == ["sts"] and result.weights == {}


def test_folds_are_deterministic_and_partition_the_rows():
    a, b = cv_folds(17, 5, 3), cv_folds(17, 5, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(17))
    assert len(cv_folds(3, 5, 0)) == 3
