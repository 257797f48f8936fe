"""Input checks shared by the evaluation modules (metrics, bootstrap, calibration, decisions,
conformal): arrays in, numpy out, a clear error naming what is wrong."""

from __future__ import annotations

import numpy as np


def as_numpy(x: object, dtype: type = np.float64) -> np.ndarray:
    """Convert a numpy array, list or (possibly CUDA, bf16, grad-tracking) tensor to numpy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x, dtype=dtype)


def check_probs_targets(probs: object, targets: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``probs`` (N, K) and integer ``targets`` (N,) in ``[0, K)``; return numpy arrays."""
    p = as_numpy(probs)
    t = as_numpy(targets)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, K), got {p.shape}")
    if t.ndim != 1 or t.shape[0] != p.shape[0]:
        raise ValueError(f"targets must have shape ({p.shape[0]},), got {t.shape}")
    if p.shape[0] == 0:
        raise ValueError("probs and targets are empty")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or infinite values")
    if np.any(t != np.round(t)) or t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(f"targets must be integers in [0, {p.shape[1]}), got {np.unique(t)}")
    return p, t.astype(np.int64)


def check_probs(probs: object, targets: object, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate probabilities (not logits) of shape (N, num_classes) and their targets."""
    p, t = check_probs_targets(probs, targets)
    if p.shape[1] != num_classes:
        raise ValueError(f"probs has {p.shape[1]} columns, expected num_classes={num_classes}")
    if p.min() < 0 or p.max() > 1 or np.abs(p.sum(1) - 1).max() > 1e-3:
        raise ValueError("probs must be probabilities whose rows sum to 1 (got logits?)")
    return p, t
