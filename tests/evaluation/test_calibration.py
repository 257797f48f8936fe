"""Calibration metrics against hand computations, the 1.0-confidence bin, temperature scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from oracles import brier, classwise_ece, ece, mce, nll  # tests/evaluation/oracles.py
from sklearn.metrics import log_loss

from dermlit.evaluation.calibration import (
    apply_temperature,
    bin_index,
    fit_temperature,
    reliability_curve,
)
from dermlit.evaluation.metrics import point_metrics

# Four cases, three classes. With 5 bins [0,.2) [.2,.4) [.4,.6) [.6,.8) [.8,1]:
#   case  probs              target  top conf  correct  top bin
#   0     [.90, .05, .05]    0       .90       yes      4
#   1     [.65, .25, .10]    1       .65       no       3
#   2     [.15, .75, .10]    1       .75       yes      3
#   3     [.30, .25, .45]    0       .45       no       2
HAND_P = np.array([[0.90, 0.05, 0.05], [0.65, 0.25, 0.10], [0.15, 0.75, 0.10], [0.30, 0.25, 0.45]])
HAND_T = np.array([0, 1, 1, 0])
# Top-label: bin 2 (n=1): |0 - .45| = .45; bin 3 (n=2): |.5 - .70| = .20; bin 4 (n=1): |1 - .9| = .1
HAND_ECE = (1 * 0.45 + 2 * 0.20 + 1 * 0.10) / 4  # = 0.2375
HAND_MCE = 0.45
# Class-wise, per class sum over bins of |sum(y) - sum(p)|, divided by N = 4:
#   class 0: p = .90 .65 .15 .30 (bins 4 3 0 1), y = 1 0 0 1 -> .10 + .65 + .15 + .70 = 1.60
#   class 1: p = .05 .25 .75 .25 (bins 0 1 3 1), y = 0 1 1 0 -> .05 + |1 - .50| + .25 = .80
#   class 2: p = .05 .10 .10 .45 (bins 0 0 0 2), y = 0 0 0 0 -> .25 + .45 = .70
HAND_CLASSWISE = (1.60 + 0.80 + 0.70) / 4 / 3
# Brier per case: .015, .995, .095, .755 (squared error to the one-hot, summed over classes).
HAND_BRIER = (0.015 + 0.995 + 0.095 + 0.755) / 4
HAND_NLL = -(math.log(0.90) + math.log(0.25) + math.log(0.75) + math.log(0.30)) / 4


def test_hand_example():
    assert ece(HAND_P, HAND_T, n_bins=5) == pytest.approx(HAND_ECE)
    assert mce(HAND_P, HAND_T, n_bins=5) == pytest.approx(HAND_MCE)
    assert classwise_ece(HAND_P, HAND_T, n_bins=5) == pytest.approx(HAND_CLASSWISE)
    assert brier(HAND_P, HAND_T) == pytest.approx(HAND_BRIER)
    assert nll(HAND_P, HAND_T) == pytest.approx(HAND_NLL)


def test_engine_agrees_with_hand_example():
    got = point_metrics(HAND_P, HAND_T, num_classes=3, n_bins=5)
    expected = {
        "ece": HAND_ECE,
        "mce": HAND_MCE,
        "classwise_ece": HAND_CLASSWISE,
        "brier": HAND_BRIER,
        "nll": HAND_NLL,
    }
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_confidence_one_lands_in_last_bin():
    assert bin_index(np.array([0.0, 1 / 15 + 1e-9, 0.99, 1.0]), 15).tolist() == [0, 1, 14, 14]
    # A wrong prediction at confidence 1.0 and a right one at .95 share the last bin:
    # |(0 + 1) - (1.0 + .95)| / 2 = .475. An extra bin for 1.0 would give (1 + .05) / 2 = .525.
    p = np.array([[1.0, 0.0, 0.0], [0.95, 0.05, 0.0]])
    t = np.array([1, 0])
    assert ece(p, t) == pytest.approx(0.475)
    curve = reliability_curve(p.max(1), p.argmax(1) == t)
    assert len(curve.counts) == 15 and curve.counts[-1] == 2 and curve.counts.sum() == 2


def test_reliability_curve_hand_example():
    conf = HAND_P.max(1)
    curve = reliability_curve(conf, HAND_P.argmax(1) == HAND_T, n_bins=5)
    np.testing.assert_allclose(curve.edges, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_array_equal(curve.counts, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(curve.accuracy, [np.nan, np.nan, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve.confidence, [np.nan, np.nan, 0.45, 0.70, 0.90])
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        reliability_curve(conf * 3, conf > 0)


def test_perfectly_calibrated_sampling_has_small_ece():
    """Labels drawn from the predicted distribution: ECE shrinks towards 0."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7) * 0.5, size=20_000)
    t = (p.cumsum(1) > rng.uniform(size=(len(p), 1))).argmax(1)
    assert ece(p, t) < 0.02 and classwise_ece(p, t) < 0.01


def overconfident_logits(n: int, true_t: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels sampled from softmax(z); the model reports z * true_t (overconfident if > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 7)) * 1.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    t = (p.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return z * true_t, t


def test_temperature_scaling_recovers_temperature_and_lowers_nll():
    logits, t = overconfident_logits(6000, true_t=3.0, seed=1)
    temp = fit_temperature(logits, t)
    assert temp == pytest.approx(3.0, rel=0.1)
    before = apply_temperature(logits, 1.0)
    after = apply_temperature(logits, temp)
    assert log_loss(t, after, labels=range(7)) < log_loss(t, before, labels=range(7)) - 0.1
    np.testing.assert_array_equal(after.argmax(1), logits.argmax(1))
    # The fitted T is the NLL minimum: nudging it either way does not help.
    for nudge in (0.95, 1.05):
        assert nll(apply_temperature(logits, temp * nudge), t) >= nll(after, t)


def test_temperature_bad_input():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(np.zeros((2, 3)), 0.0)
    with pytest.raises(ValueError, match="targets must have shape"):
        fit_temperature(np.zeros((2, 3)), [0])


def test_calibration_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        ece(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        ece(HAND_P, HAND_T, n_bins=0)
