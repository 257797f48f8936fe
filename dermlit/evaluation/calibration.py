"""Calibration: confidence bins, reliability curves and temperature scaling. (The calibration
METRICS of metrics.json are computed by ``metrics.MetricEngine``; the standalone reference
implementations they are checked against live in tests/evaluation/oracles.py.)

Why our own: torchmetrics' ``MulticlassCalibrationError`` bins with
``bucketize(right=True) - 1``, so a confidence of exactly 1.0 (common after softmax in float32)
lands in an extra bin past the last one (torchmetrics #3510); it has no class-wise ECE either.
Bins here are equal-width and left-closed, ``[k/M, (k+1)/M)``, as in torchmetrics, except that
the last bin is closed, ``[(M-1)/M, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from dermlit.evaluation.checks import as_numpy, check_probs_targets

#: Default number of equal-width confidence bins (Guo et al., 2017).
N_BINS = 15
#: Probabilities are floored here before the log so that a confident miss costs a finite NLL
#: (float64 machine epsilon, as sklearn ``log_loss`` does for float64 input).
NLL_EPS = float(np.finfo(np.float64).eps)


def bin_index(conf: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence in ``[0, 1]``: left-closed bins, 1.0 goes to the LAST bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner, np.asarray(conf), side="right")


@dataclass(frozen=True)
class ReliabilityCurve:
    """Data for a reliability diagram; ``accuracy``/``confidence`` are NaN in empty bins."""

    edges: np.ndarray  # (n_bins + 1,)
    centers: np.ndarray  # (n_bins,)
    counts: np.ndarray  # (n_bins,) samples per bin
    confidence: np.ndarray  # (n_bins,) mean confidence per bin
    accuracy: np.ndarray  # (n_bins,) share correct per bin


def reliability_curve(conf: object, correct: object, n_bins: int = N_BINS) -> ReliabilityCurve:
    """Bin top-label confidences ``conf`` (N,) against boolean ``correct`` (N,)."""
    c = as_numpy(conf)
    hit = as_numpy(correct)
    if c.ndim != 1 or c.shape != hit.shape:
        raise ValueError(
            f"conf and correct must be 1-D of equal length, got {c.shape}, {hit.shape}"
        )
    if c.size and (c.min() < 0 or c.max() > 1):
        raise ValueError("conf must lie in [0, 1]")
    idx = bin_index(c, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=c, minlength=n_bins) / counts
        acc = np.bincount(idx, weights=hit, minlength=n_bins) / counts
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return ReliabilityCurve(edges, (edges[:-1] + edges[1:]) / 2, counts, mean_conf, acc)


def apply_temperature(logits: object, temperature: float) -> np.ndarray:
    """Calibrated PROBABILITIES ``softmax(logits / T)`` (argmax unchanged for any T > 0)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(as_numpy(logits) / temperature, axis=1)


def fit_temperature(
    logits: object, targets: object, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Temperature T minimising the validation NLL of ``softmax(logits / T)``.

    A bounded 1-D search on log T (Brent): deterministic, no learning rate to tune, unlike the
    LBFGS loop usually copied from Guo et al.'s reference code.
    """
    z, t = check_probs_targets(logits, targets)
    rows = np.arange(len(t))

    def loss(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, t].mean())

    res = minimize_scalar(
        loss,
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))
