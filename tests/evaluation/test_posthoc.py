"""Post-hoc decision adjustment fitted on validation, checked against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from dermlit.evaluation.posthoc import (
    ClassBias,
    DecisionAdjustment,
    LogitAdjustment,
    decision_score,
)

COUNTS = [100, 600, 50, 30, 120, 10, 15]


def imbalanced_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A classifier that over-predicts the frequent classes: logits = signal + log prior."""
    rng = np.random.default_rng(seed)
    prior = np.asarray(COUNTS, dtype=float) / sum(COUNTS)
    targets = rng.choice(7, size=n, p=prior)
    logits = rng.normal(size=(n, 7)) + 1.5 * np.eye(7)[targets] + 1.5 * np.log(prior)
    return logits, targets


def test_decision_score_matches_scikit_learn() -> None:
    logits, targets = imbalanced_logits(500, 0)
    pred = logits.argmax(1)
    assert decision_score(logits, targets) == pytest.approx(
        f1_score(targets, pred, average="macro", labels=np.unique(np.r_[targets, pred]))
    )
    assert decision_score(logits, targets, "balanced_accuracy") == pytest.approx(
        balanced_accuracy_score(targets, pred)
    )
    with pytest.raises(ValueError, match="objective must be one of"):
        decision_score(logits, targets, "accuracy")


def test_logit_adjustment_picks_the_best_tau_on_validation() -> None:
    logits, targets = imbalanced_logits(2000, 1)
    taus = [0.0, 0.5, 1.0, 1.5, 2.0]
    adj = LogitAdjustment(taus).fit(logits, targets, COUNTS)
    log_prior = np.log(np.asarray(COUNTS) / sum(COUNTS))
    brute = [f1_score(targets, (logits - t * log_prior).argmax(1), average="macro") for t in taus]
    assert adj.tau == taus[int(np.argmax(brute))]
    assert adj.tau > 0  # the logits carry 1.5 x log prior: adjustment must remove some of it
    assert np.allclose(adj(logits), logits - adj.tau * log_prior)
    assert adj.params() == {"tau": adj.tau}
    # and it generalises: fitted on one sample, better macro-F1 on another
    test_logits, test_targets = imbalanced_logits(2000, 2)
    assert (
        decision_score(adj(test_logits), test_targets)
        > decision_score(test_logits, test_targets) + 0.05
    )


def test_logit_adjustment_ties_keep_the_smallest_tau() -> None:
    logits = np.eye(7) * 10  # perfectly separated: every small tau is equally good
    adj = LogitAdjustment([0.5, -0.25, 0.25]).fit(logits, np.arange(7), COUNTS)
    assert adj.tau == -0.25  # sorted by |tau|, stable: -0.25 comes before 0.25


def test_class_bias_improves_validation_and_ignores_unlabelled_rows() -> None:
    logits, targets = imbalanced_logits(1500, 3)
    before = decision_score(logits, targets)
    targets_with_unlabelled = np.r_[targets, [-1, -1]]
    adj = ClassBias(np.linspace(-3, 3, 13), rounds=2).fit(
        np.r_[logits, np.zeros((2, 7))], targets_with_unlabelled
    )
    assert decision_score(adj(logits), targets) > before + 0.05
    assert set(adj.params()) == {
        f"bias_{c}" for c in ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
    }
    # every bias is a grid value
    assert all(np.isclose(b, np.linspace(-3, 3, 13)).any() for b in adj.bias)


def test_no_adjustment_and_bad_input() -> None:
    logits, targets = imbalanced_logits(50, 4)
    assert np.array_equal(DecisionAdjustment().fit(logits, targets)(logits), logits)
    with pytest.raises(ValueError, match="needs the TRAIN class counts"):
        LogitAdjustment([1.0]).fit(logits, targets)
    with pytest.raises(ValueError, match="7 positive counts"):
        LogitAdjustment([1.0]).fit(logits, targets, [1, 2, 3])
    with pytest.raises(ValueError, match="labelled validation"):
        LogitAdjustment([1.0]).fit(logits, np.full(50, -1), COUNTS)
    with pytest.raises(ValueError, match="at least one value"):
        LogitAdjustment([])
