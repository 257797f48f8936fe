"""Bayes decisions, clinical summary and selective prediction."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.evaluation.decisions import (
    bayes_decisions,
    coverage_at_target,
    decision_summary,
    expected_cost,
    malignancy_cost_matrix,
    risk_coverage,
)

# Three classes: 0 benign, 1 malignant, 2 benign. cost[true, decided]:
COST3 = np.array(
    [
        [0.0, 1.0, 1.0],
        [10.0, 0.0, 2.0],  # missing the malignant class as class 0 costs 10
        [1.0, 1.0, 0.0],
    ]
)
PROBS3 = np.array([[0.6, 0.3, 0.1], [0.9, 0.05, 0.05], [0.2, 0.1, 0.7]])
# Expected cost of deciding d = sum_t P(t) * cost[t, d]:
#   case 0: d0 = .3*10 + .1*1 = 3.1   d1 = .6*1 + .1*1 = 0.7   d2 = .6*1 + .3*2 = 1.2  -> 1
#   case 1: d0 = .05*10 + .05*1 = .55 d1 = .9 + .05 = .95      d2 = .9 + .1 = 1.0       -> 0
#   case 2: d0 = .1*10 + .7*1 = 1.7   d1 = .2 + .7 = .9        d2 = .2 + .1*2 = .4      -> 2
HAND_DECISIONS = [1, 0, 2]


def test_bayes_decisions_hand_example():
    np.testing.assert_array_equal(bayes_decisions(PROBS3, COST3), HAND_DECISIONS)
    # Case 0 differs from argmax: the cost of missing class 1 outweighs its lower probability.
    assert PROBS3.argmax(1)[0] == 0
    # 0/1 costs reduce to argmax.
    zero_one = 1 - np.eye(3)
    np.testing.assert_array_equal(bayes_decisions(PROBS3, zero_one), PROBS3.argmax(1))


def test_expected_cost_hand_example():
    # Targets 0, 1, 2 decided 1, 0, 2: costs 1 + 10 + 0.
    assert expected_cost(HAND_DECISIONS, [0, 1, 2], COST3) == pytest.approx(11 / 3)
    with pytest.raises(ValueError, match="equal length"):
        expected_cost([0, 1], [0, 1, 2], COST3)
    with pytest.raises(ValueError, match="shape"):
        bayes_decisions(PROBS3, np.ones((2, 2)))


def test_malignancy_cost_matrix():
    cost = malignancy_cost_matrix(miss_cost=20.0, error_cost=2.0)
    mel, nv, bcc = CLASS_TO_INDEX["mel"], CLASS_TO_INDEX["nv"], CLASS_TO_INDEX["bcc"]
    assert cost[mel, nv] == 20.0 and cost[nv, mel] == 2.0 and cost[mel, bcc] == 2.0
    assert np.all(np.diag(cost) == 0) and cost.shape == (7, 7)


def test_decision_summary():
    idx = CLASS_TO_INDEX
    targets = [
        idx["mel"],
        idx["mel"],
        idx["bcc"],
        idx["akiec"],
        idx["nv"],
        idx["nv"],
        idx["bkl"],
        idx["df"],
    ]
    decided = [
        idx["mel"],
        idx["bcc"],
        idx["nv"],
        idx["akiec"],
        idx["mel"],
        idx["nv"],
        idx["bkl"],
        idx["df"],
    ]
    cost = malignancy_cost_matrix(miss_cost=10.0)
    out = decision_summary(decided, targets, cost)
    # 4 malignant cases: 3 decided malignant (mel->bcc counts), 2 decided as their own class.
    assert out["malignant_recall"] == pytest.approx(3 / 4)
    assert out["malignant_exact_recall"] == pytest.approx(2 / 4)
    # 4 benign cases, one (nv) decided mel.
    assert out["benign_referral_rate"] == pytest.approx(1 / 4)
    assert out["referral_rate"] == pytest.approx(4 / 8)
    # Costs: mel->bcc 1, bcc->nv 10, nv->mel 1.
    assert out["mean_cost"] == pytest.approx(12 / 8)


def test_risk_coverage_hand_example():
    # Confidences .9, .8, .8, .6; correct, wrong, right, wrong (classes 0/1 of 2).
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.4, 0.6]])
    targets = np.array([0, 0, 0, 0])
    rc = risk_coverage(probs, targets)
    np.testing.assert_allclose(rc.coverage, [0.25, 0.75, 1.0])  # the tie at .8 enters together
    np.testing.assert_allclose(rc.risk, [0.0, 1 / 3, 0.5])
    np.testing.assert_allclose(rc.threshold, [0.9, 0.8, 0.6])


def test_risk_coverage_expected_cost_uses_bayes_decisions():
    probs, cost = PROBS3, COST3
    rc = risk_coverage(probs, [1, 0, 2], score="expected_cost", cost_matrix=cost)
    # Minimum expected costs .7, .55, .4 -> accept case 2, then 1, then 0; all decided right.
    np.testing.assert_allclose(rc.threshold, [0.4, 0.55, 0.7])
    np.testing.assert_allclose(rc.risk, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="needs a cost_matrix"):
        risk_coverage(probs, [1, 0, 2], score="expected_cost")
    with pytest.raises(ValueError, match="score must be one of"):
        risk_coverage(probs, [1, 0, 2], score="entropy")


def random_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(size=(n, len(CLASSES))) * 2
    logits[np.arange(n), t] += 2.0
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), t


@pytest.mark.parametrize("metric", ["macro_f1", "mel_recall"])
def test_coverage_at_target_brute_force(metric):
    probs, t = random_problem(250, seed=0)
    conf, pred = probs.max(1), probs.argmax(1)
    mel = CLASS_TO_INDEX["mel"]
    # Brute force with sklearn: every threshold, from the lowest (largest coverage) up.
    best = None
    for thr in np.sort(np.unique(conf)):
        keep = conf >= thr
        if metric == "macro_f1":
            value = f1_score(t[keep], pred[keep], average="macro", zero_division=0)
        elif (t[keep] == mel).any():
            value = recall_score(t[keep] == mel, pred[keep] == mel)
        else:
            continue
        if value >= 0.75:
            best = (keep.mean(), thr, value)
            break
    got = coverage_at_target(probs, t, 0.75, metric=metric)
    assert best is not None and 0 < got["coverage"] < 1
    assert got["coverage"] == pytest.approx(best[0])
    assert got["threshold"] == pytest.approx(best[1])
    assert got["value"] == pytest.approx(best[2])


def test_coverage_at_target_unreachable_and_bad_input():
    probs, t = random_problem(100, seed=1)
    out = coverage_at_target(probs, t, 1.01)
    assert out["coverage"] == 0.0 and np.isnan(out["threshold"])
    with pytest.raises(ValueError, match="metric must be one of"):
        coverage_at_target(probs, t, 0.5, metric="auroc")
    with pytest.raises(ValueError, match="for 3 class names"):
        coverage_at_target(probs, t, 0.5, class_names=("a", "b", "c"))
