"""Post-hoc decision adjustment fitted on validation, checked against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

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


MEL, NV = 4, 5  # positions in CLASSES
GRID = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


def mel_vs_nv() -> tuple[np.ndarray, np.ndarray]:
    """10 nv and 4 mel images; only the mel-nv margin m = logit_mel - logit_nv matters (the
    other classes sit at -50). Hand-worked, with d = bias_mel - bias_nv and "mel" iff m + d > 0:
    d = 0 gives mel recall 2/4 and macro-F1 (4/6 + 20/22) / 2 = 0.788, the best there is;
    every d in (0.9, 3) gives recall 4/4 at macro-F1 (8/12 + 12/16) / 2 = 0.708."""
    margins_nv = [-3.0] * 6 + [-0.6, -0.4, -0.2, -0.1]
    margins_mel = [1.0, 1.0, -0.3, -0.9]
    margins = np.asarray(margins_nv + margins_mel)
    logits = np.full((14, 7), -50.0)
    logits[:, NV], logits[:, MEL] = 0.0, margins
    return logits, np.asarray([NV] * 10 + [MEL] * 4)


def sklearn_scores(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    pred = logits.argmax(1)
    f1 = f1_score(targets, pred, labels=[MEL, NV], average="macro")
    return f1, recall_score(targets, pred, labels=[MEL], average="macro")


def test_class_bias_floor_keeps_melanoma_recall_at_the_best_macro_f1_that_allows() -> None:
    logits, targets = mel_vs_nv()
    free = ClassBias(GRID).fit(logits, targets)
    assert sklearn_scores(free(logits), targets) == pytest.approx((0.788, 0.5), abs=1e-3)
    floored = ClassBias(GRID, floors={"recall_mel": 1.0}).fit(logits, targets)
    f1, recall = sklearn_scores(floored(logits), targets)
    assert recall == 1.0
    # brute force over every (mel, nv) bias pair with scikit-learn: the best feasible macro-F1
    feasible = []
    for b_mel in GRID:
        for b_nv in GRID:
            shifted = logits.copy()
            shifted[:, MEL] += b_mel
            shifted[:, NV] += b_nv
            pair_f1, pair_recall = sklearn_scores(shifted, targets)
            if pair_recall >= 1.0:
                feasible.append(pair_f1)
    assert f1 == pytest.approx(max(feasible)) == pytest.approx(0.708, abs=1e-3)
    assert floored.params()["floors_met"] == 1.0 and "floors_met" not in free.params()


def test_class_bias_floors_that_cannot_be_met_are_reported(caplog) -> None:
    logits, targets = mel_vs_nv()
    floors = {"recall_mel": 1.0, "recall_nv": 1.0}  # no bias separates these margins
    with caplog.at_level("WARNING", logger="dermlit.evaluation.posthoc"):
        rule = ClassBias(GRID, floors=floors).fit(logits, targets)
    assert rule.params()["floors_met"] == 0.0
    assert "cannot all be met" in caplog.text and "recall_nv" in caplog.text
    with pytest.raises(ValueError, match=r"unknown score\(s\) \['recall_melanoma'\]"):
        ClassBias(GRID, floors={"recall_melanoma": 0.5})
    with pytest.raises(ValueError, match="recall_df is undefined"):
        ClassBias(GRID, floors={"recall_df": 0.5}).fit(logits, targets)
