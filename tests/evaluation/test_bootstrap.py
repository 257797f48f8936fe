"""Whole-set stratified bootstrap, paired comparison and McNemar."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn import metrics as skm

from dermlit.constants import CLASSES
from dermlit.evaluation.bootstrap import (
    bootstrap_ci,
    bootstrap_distribution,
    mcnemar,
    metrics_with_ci,
    paired_bootstrap,
    stratified_weights,
)
from dermlit.evaluation.metrics import point_metrics

K = len(CLASSES)
PRIOR = np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015


def make_problem(n: int, seed: int, signal: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.choice(K, n, p=PRIOR)
    t[:K] = np.arange(K)  # every class present
    logits = rng.normal(size=(n, K)) * 2.0
    logits[np.arange(n), t] += signal
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), t


def test_resamples_keep_class_counts():
    t = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    blocks = list(stratified_weights(t, 50, np.random.default_rng(0)))
    w = np.concatenate(blocks)
    assert w.shape == (50, 10) and np.all(w == np.round(w)) and w.min() >= 0
    for c in range(3):
        np.testing.assert_array_equal(w[:, t == c].sum(1), (t == c).sum())
    assert not np.all(w == 1)  # resampled, not the identity
    with pytest.raises(ValueError, match="n_resamples must be >= 1"):
        next(stratified_weights(t, 0, np.random.default_rng(0)))


def test_distribution_matches_sklearn_on_explicit_resamples():
    """Rebuild the first resamples as explicit index sets and score them with sklearn."""
    p, t = make_problem(400, seed=0)
    dist = bootstrap_distribution([p], t, n_resamples=5, seed=3)[0]
    w = next(stratified_weights(t, 5, np.random.default_rng(3))).astype(int)
    for b in range(5):
        idx = np.repeat(np.arange(len(t)), w[b])
        pb, tb = p[idx], t[idx]
        pred = pb.argmax(1)
        assert dist["macro_f1"][b] == pytest.approx(skm.f1_score(tb, pred, average="macro"))
        assert dist["balanced_accuracy"][b] == pytest.approx(skm.balanced_accuracy_score(tb, pred))
        assert dist["auroc_mel"][b] == pytest.approx(skm.roc_auc_score(tb == 4, pb[:, 4]))
        assert dist["nll"][b] == pytest.approx(skm.log_loss(tb, pb, labels=range(K)))


def test_ci_contains_point_estimate():
    p, t = make_problem(2000, seed=1)
    point = point_metrics(p, t)
    ci = bootstrap_ci(p, t, n_resamples=300, seed=0)
    assert set(ci) == {k for k in point if not k.startswith("support_")}
    omitted = []
    for key in sorted(ci):
        low, high = ci[key]
        if math.isnan(low) and math.isnan(high):
            omitted.append(key)  # no valid interval (intervals.py): never a contradicting one
            continue
        assert low <= point[key] <= high, (key, low, point[key], high)
        assert low < high, key
    assert "mce" in omitted and "accuracy" not in omitted and "macro_f1" not in omitted


def test_ci_shrinks_with_four_times_the_data():
    p, t = make_problem(1000, seed=2)
    p4, t4 = make_problem(4000, seed=2)
    ci, ci4 = bootstrap_ci(p, t, 400, seed=0), bootstrap_ci(p4, t4, 400, seed=0)
    for key in ("macro_f1", "accuracy", "balanced_accuracy", "auroc_macro", "ece", "brier"):
        width, width4 = ci[key][1] - ci[key][0], ci4[key][1] - ci4[key][0]
        assert 0.3 < width4 / width < 0.7, (key, width, width4)  # ~1/2 expected


def test_seeding():
    p, t = make_problem(500, seed=3)
    a = bootstrap_ci(p, t, 100, seed=7)
    assert a == bootstrap_ci(p, t, 100, seed=7)
    b = bootstrap_ci(p, t, 100, seed=8)
    assert a["macro_f1"] != b["macro_f1"] and a["auroc_macro"] != b["auroc_macro"]


def test_accuracy_ci_coverage():
    """Every class is predicted right with probability 0.8: the 95% CI should cover 0.8 in
    about 95% of simulated test sets."""
    true_acc, n, reps = 0.8, 300, 200
    rng = np.random.default_rng(11)
    covered = 0
    for rep in range(reps):
        t = rng.choice(K, n, p=PRIOR)
        right = rng.uniform(size=n) < true_acc
        pred = np.where(right, t, (t + rng.integers(1, K, n)) % K)
        p = np.full((n, K), 0.3 / (K - 1))
        p[np.arange(n), pred] = 0.7
        low, high = bootstrap_ci(p, t, n_resamples=400, seed=rep)["accuracy"]
        covered += low <= true_acc <= high
    assert 0.90 <= covered / reps <= 0.99, covered / reps


def test_metrics_with_ci_contract_keys():
    p, t = make_problem(300, seed=4)
    out = metrics_with_ci(p, t, prefix="test/", n_resamples=50, seed=0)
    assert out["test/macro_f1_ci_low"] <= out["test/macro_f1"] <= out["test/macro_f1_ci_high"]
    assert "test/support_mel" in out and "test/support_mel_ci_low" not in out
    assert {"test/ece_ci_high", "test/recall_mel_ci_low", "test/balanced_accuracy"} <= set(out)
    assert all(k.startswith("test/") for k in out)


def degrade(p: np.ndarray, t: np.ndarray, n_flip: int, seed: int) -> np.ndarray:
    """Model B: model A with ``n_flip`` of A's right answers turned into confident errors."""
    rng = np.random.default_rng(seed)
    right = np.flatnonzero(p.argmax(1) == t)
    flip = rng.choice(right, n_flip, replace=False)
    q = p.copy()
    q[flip] = 0.01 / (K - 1)
    q[flip, (t[flip] + 1) % K] = 0.99
    return q


def test_paired_bootstrap_known_difference():
    p_a, t = make_problem(1500, seed=5)
    p_b = degrade(p_a, t, n_flip=90, seed=0)
    out = paired_bootstrap(p_a, p_b, t, n_resamples=300, seed=0)
    acc = out["accuracy"]
    assert acc["delta"] == pytest.approx(90 / 1500)
    assert 0 < acc["ci_low"] < acc["delta"] < acc["ci_high"]
    assert acc["share_a_better"] == 1.0
    # NLL is lower-is-better: A beats B when its NLL is lower.
    assert out["nll"]["delta"] < 0 and out["nll"]["share_a_better"] > 0.99
    reverse = paired_bootstrap(p_b, p_a, t, n_resamples=300, seed=0, metrics=("accuracy",))
    assert reverse["accuracy"]["delta"] == pytest.approx(-90 / 1500)
    assert reverse["accuracy"]["share_a_better"] == 0.0
    same = paired_bootstrap(p_a, p_a, t, n_resamples=50, seed=0, metrics=("macro_f1",))
    assert same["macro_f1"] == {
        "delta": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        "ci_method": "bca",
        "ci_status": "degenerate",  # every resampled difference is 0: flagged (issue 13)
        "share_a_better": 0.0,
    }
    with pytest.raises(KeyError, match="unknown metric"):
        paired_bootstrap(p_a, p_b, t, n_resamples=5, metrics=("f2",))


def test_mcnemar_exact_matches_binomial():
    # 7 cases only A gets right, 2 only B: n = 9 discordant, exact test.
    a = np.array([1] * 7 + [0] * 2 + [1] * 30 + [0] * 10, dtype=bool)
    b = np.array([0] * 7 + [1] * 2 + [1] * 30 + [0] * 10, dtype=bool)
    stat, pval = mcnemar(a, b)
    # Hand: P = 2 * P(X <= 2 | Binomial(9, 1/2)) = 2 * (1 + 9 + 36) / 512.
    assert stat == 2.0
    assert pval == pytest.approx(2 * (1 + 9 + 36) / 512)
    assert pval == pytest.approx(binomtest(2, 9, 0.5).pvalue)


def test_mcnemar_chi_square_with_continuity_correction():
    a = np.array([1] * 40 + [0] * 20 + [1] * 100, dtype=bool)
    b = np.array([0] * 40 + [1] * 20 + [1] * 100, dtype=bool)
    stat, pval = mcnemar(a, b)
    # Hand: (|40 - 20| - 1)^2 / 60; a chi-square(1) tail is erfc(sqrt(x / 2)).
    assert stat == pytest.approx(19**2 / 60)
    assert pval == pytest.approx(math.erfc(math.sqrt(stat / 2)))
    assert mcnemar(a, a) == (0.0, 1.0)
    with pytest.raises(ValueError, match="equal length"):
        mcnemar(a, a[:-1])


def test_paired_predictions_mcnemar_detects_known_difference():
    p_a, t = make_problem(1500, seed=6)
    p_b = degrade(p_a, t, n_flip=60, seed=1)
    stat, pval = mcnemar(p_a.argmax(1) == t, p_b.argmax(1) == t)
    assert stat == pytest.approx(59**2 / 60) and pval < 1e-10
