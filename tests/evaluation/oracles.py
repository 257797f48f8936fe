"""Standalone reference implementations of the calibration metrics (top-label ECE, MCE,
class-wise ECE, Brier, NLL), one plain function each: the oracles that
``dermlit.evaluation.metrics.MetricEngine`` (what metrics.json holds) is checked against, by
tests/evaluation/test_calibration.py and benchmarks/eval_speed.py (which imports this file via
``sys.path``). They share the package's binning (``calibration.bin_index``) and input checks.
"""

from __future__ import annotations

import numpy as np

from dermlit.evaluation.calibration import N_BINS, NLL_EPS, bin_index
from dermlit.evaluation.checks import check_probs_targets


def _bin_gaps(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bin: sample count and summed (hit - confidence)."""
    idx = bin_index(conf, n_bins)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    gaps = np.bincount(idx, weights=hit - conf, minlength=n_bins)
    return counts, gaps


def ece(probs: object, targets: object, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error: sum over bins of (n_b / N) |acc_b - conf_b|."""
    p, t = check_probs_targets(probs, targets)
    conf, hit = p.max(1), (p.argmax(1) == t).astype(np.float64)
    _, gaps = _bin_gaps(conf, hit, n_bins)
    return float(np.abs(gaps).sum() / len(t))


def mce(probs: object, targets: object, n_bins: int = N_BINS) -> float:
    """Maximum calibration error: the largest |acc_b - conf_b| over non-empty bins."""
    p, t = check_probs_targets(probs, targets)
    conf, hit = p.max(1), (p.argmax(1) == t).astype(np.float64)
    counts, gaps = _bin_gaps(conf, hit, n_bins)
    full = counts > 0
    return float(np.max(np.abs(gaps[full]) / counts[full]))


def classwise_ece(probs: object, targets: object, n_bins: int = N_BINS) -> float:
    """Class-wise ECE (Kull et al., 2019): per class, bin P(class) against the class frequency
    in the bin, and average the K per-class ECEs."""
    p, t = check_probs_targets(probs, targets)
    onehot = np.eye(p.shape[1])[t]
    per_class = [
        np.abs(_bin_gaps(p[:, k], onehot[:, k], n_bins)[1]).sum() for k in range(p.shape[1])
    ]
    return float(np.mean(per_class) / len(t))


def brier(probs: object, targets: object) -> float:
    """Multiclass Brier score: mean over samples of the summed squared error to the one-hot."""
    p, t = check_probs_targets(probs, targets)
    return float(((p - np.eye(p.shape[1])[t]) ** 2).sum(1).mean())


def nll(probs: object, targets: object) -> float:
    """Mean negative log-likelihood of the true class (probabilities floored at ``NLL_EPS``)."""
    p, t = check_probs_targets(probs, targets)
    return float(-np.log(np.maximum(p[np.arange(len(t)), t], NLL_EPS)).mean())
