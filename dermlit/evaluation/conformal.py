"""Class-conditional (Mondrian) split conformal prediction sets, calibrated on VALIDATION.

Score ``s(x, c) = 1 - p_c(x)`` (LAC; crepes calls it ``hinge``). For each class c, the threshold
``q_c`` is the ``k_c``-th smallest score of the ``n_c`` validation images of class c, with
``k_c = ceil((n_c + 1)(1 - alpha))``; the set of an image is ``{c : s(x, c) <= q_c}``. Then
``P(y in set | y = c) >= 1 - alpha`` for EVERY class c, on average over calibration draws
(label-conditional conformal prediction, Vovk 2012; Sadinle, Lei & Wasserman 2019), and
``< 1 - alpha + 1 / (n_c + 1)`` for continuous scores: a rare class pays with wider sets, not
with lost coverage. A class with ``k_c > n_c`` (``n_c < 1 / alpha - 1``: fewer than 9
validation images at alpha = 0.1) gets ``q_c = inf``: it is in every set, and flagged.

Why our own: MAPIE 1.6's ``SplitConformalClassifier`` guarantees marginal coverage only (no
label-conditional option; its conditional module conditions on features of x and needs cvxpy),
and wants an sklearn estimator around our precomputed probabilities. crepes 0.9's
``ConformalClassifier`` computes the right Mondrian p-values from precomputed scores (fit with
``bins=y``, predict once per candidate class), but keeps no thresholds: it stores every
calibration score and compares each test score against them in Python loops, while
``dermlit predict`` and an exported ONNX file need seven numbers. crepes is the tests' oracle:
our set equals ``{c : crepes' non-smoothed p-value of c > alpha}``.

Coverage CIs resample the TEST images (stratified, as ``bootstrap.py``) with the thresholds
held fixed: the uncertainty of this run's coverage given its calibration, not over calibrations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dermlit.constants import CLASSES
from dermlit.evaluation.bootstrap import stratified_weights
from dermlit.evaluation.checks import check_probs

#: Default miscoverage: sets hold the true class of >= 90% of the images of every class.
DEFAULT_ALPHA = 0.1
#: Separator of the classes in a prediction-set string (``mel|nv``).
SET_SEPARATOR = "|"
#: (n + 1)(1 - alpha) is an exact integer more often than float arithmetic says.
_CEIL_TOL = 1e-9


def calibration_rank(n: int, alpha: float) -> int:
    """``ceil((n + 1)(1 - alpha))``: the rank of the threshold among n sorted scores (1-based);
    larger than n means no finite threshold reaches the guarantee."""
    if not 0 < alpha < 1:
        raise ValueError(f"conformal alpha must be in (0, 1), got {alpha}")
    return math.ceil((n + 1) * (1 - alpha) - _CEIL_TOL)


@dataclass(frozen=True)
class ConformalThresholds:
    """Per-class score thresholds ``q`` (K,) fitted on validation; ``inf``: always in the set."""

    alpha: float
    thresholds: np.ndarray
    n_calibration: np.ndarray
    class_names: tuple[str, ...] = CLASSES

    @property
    def always_included(self) -> np.ndarray:
        """Classes with too few calibration images for ``alpha``: in every set (K,) bool."""
        return np.isinf(self.thresholds)

    def prediction_sets(self, probs: object) -> np.ndarray:
        """Boolean (N, K): class c is in the set of image i iff ``1 - p[i, c] <= q_c``."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.class_names):
            raise ValueError(
                f"probs must be (N, {len(self.class_names)}) in {list(self.class_names)} order, "
                f"got {p.shape}"
            )
        return (1.0 - p) <= self.thresholds[None, :]

    def to_dict(self) -> dict:
        """JSON-safe (an infinite threshold is ``None``): for ONNX metadata and run files."""
        return {
            "alpha": self.alpha,
            "score": "1 - p",
            "classes": list(self.class_names),
            "thresholds": [None if np.isinf(q) else float(q) for q in self.thresholds],
            "n_calibration": [int(n) for n in self.n_calibration],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ConformalThresholds:
        thresholds = [np.inf if q is None else float(q) for q in data["thresholds"]]
        return cls(
            alpha=float(data["alpha"]),
            thresholds=np.asarray(thresholds, dtype=np.float64),
            n_calibration=np.asarray(data["n_calibration"], dtype=np.int64),
            class_names=tuple(data["classes"]),
        )

    def params(self) -> dict[str, float | bool]:
        """The fitted values for ``metrics.json`` (``conformal/...``; an inf threshold is NaN,
        written as null, with ``conformal/always_<class>: true``)."""
        out: dict[str, float | bool] = {"conformal/alpha": self.alpha}
        for c, q, n, always in zip(
            self.class_names, self.thresholds, self.n_calibration, self.always_included, strict=True
        ):
            out[f"conformal/threshold_{c}"] = float("nan") if always else float(q)
            out[f"conformal/n_calibration_{c}"] = int(n)
            out[f"conformal/always_{c}"] = bool(always)
        return out


def fit_conformal(
    val_probs: object,
    val_targets: object,
    alpha: float = DEFAULT_ALPHA,
    class_names: Sequence[str] = CLASSES,
) -> ConformalThresholds:
    """Per-class thresholds from the labelled validation rows (``targets >= 0``).

    ``val_probs`` must be the probabilities the sets will be built from (after the same
    post-hoc rule and temperature as the test probabilities), else the guarantee is void.
    """
    names = tuple(class_names)
    p = np.asarray(val_probs, dtype=np.float64)
    t = np.asarray(val_targets)
    if t.ndim == 1 and len(t) == len(p):
        p, t = p[t >= 0], t[t >= 0]
    if len(t) == 0:
        raise ValueError("conformal calibration needs labelled validation predictions, got none")
    p, t = check_probs(p, t, len(names))
    scores = 1.0 - p[np.arange(len(t)), t]
    thresholds = np.full(len(names), np.inf)
    counts = np.bincount(t, minlength=len(names))
    for c in range(len(names)):
        k = calibration_rank(int(counts[c]), alpha)
        if k <= counts[c]:
            thresholds[c] = np.sort(scores[t == c])[k - 1]
    return ConformalThresholds(float(alpha), thresholds, counts.astype(np.int64), names)


def set_strings(sets: np.ndarray, class_names: Sequence[str] = CLASSES) -> list[str]:
    """``mel|nv``: the classes of each set in ``class_names`` order; ``""`` for an empty set."""
    names = np.asarray(class_names)
    return [SET_SEPARATOR.join(names[row]) for row in np.asarray(sets, dtype=bool)]


def parse_set_string(text: str, class_names: Sequence[str] = CLASSES) -> np.ndarray:
    """The boolean row of a set string (inverse of :func:`set_strings`)."""
    members = [m for m in str(text).split(SET_SEPARATOR) if m]
    unknown = sorted(set(members) - set(class_names))
    if unknown:
        raise ValueError(f"prediction set {text!r}: unknown class(es) {unknown}")
    return np.isin(np.asarray(class_names), members)


def set_size_distribution(sets: np.ndarray) -> np.ndarray:
    """Counts of set sizes 0..K (the report's histogram)."""
    s = np.asarray(sets, dtype=bool)
    return np.bincount(s.sum(1), minlength=s.shape[1] + 1)


def _with_ci(
    out: dict[str, float], key: str, point: float, resampled: np.ndarray | None, ci_alpha: float
) -> None:
    out[key] = point
    if resampled is None:
        out[f"{key}_ci_low"] = out[f"{key}_ci_high"] = float("nan")
    else:
        low, high = np.quantile(resampled, [ci_alpha / 2, 1 - ci_alpha / 2])
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = float(low), float(high)


def conformal_metrics(
    sets: np.ndarray,
    targets: object,
    split: str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
    ci_alpha: float = 0.05,
    class_names: Sequence[str] = CLASSES,
) -> dict[str, float]:
    """``<split>/conformal_coverage[_<class>]``, ``<split>/conformal_set_size[_<class>]`` (per
    TRUE class) and ``<split>/conformal_empty_rate``, each with ``_ci_low``/``_ci_high`` from a
    stratified bootstrap of the labelled test rows. A class absent from the split is NaN."""
    s = np.asarray(sets, dtype=bool)
    t = np.asarray(targets, dtype=np.int64)
    if s.ndim != 2 or s.shape != (len(t), len(class_names)):
        raise ValueError(f"sets must be ({len(t)}, {len(class_names)}), got {s.shape}")
    keep = t >= 0
    s, t = s[keep], t[keep]
    if len(t) == 0:
        raise ValueError("conformal metrics need labelled rows, got none")
    covered = s[np.arange(len(t)), t].astype(np.float64)
    size = s.sum(1).astype(np.float64)
    empty = (size == 0).astype(np.float64)
    members = [np.flatnonzero(t == c) for c in range(len(class_names))]
    # per-sample features: [covered, size, empty], resampled as (b, N) @ (N, 3)
    feats = np.stack([covered, size, empty], 1)
    totals, by_class = [], []
    for w in stratified_weights(t, n_resamples, np.random.default_rng(seed)):
        totals.append(w @ feats / len(t))
        by_class.append(
            np.stack([w[:, idx] @ feats[idx, :2] / max(idx.size, 1) for idx in members], 1)
        )
    tot, cls = np.concatenate(totals), np.concatenate(by_class)  # (B, 3), (B, K, 2)
    out: dict[str, float] = {}
    pre = f"{split}/conformal_"
    for j, name in enumerate(("coverage", "set_size", "empty_rate")):
        _with_ci(out, f"{pre}{name}", float(feats[:, j].mean()), tot[:, j], ci_alpha)
    for c, (name, idx) in enumerate(zip(class_names, members, strict=True)):
        for j, metric in enumerate(("coverage", "set_size")):
            if idx.size == 0:
                _with_ci(out, f"{pre}{metric}_{name}", float("nan"), None, ci_alpha)
            else:
                point = float(feats[idx, j].mean())
                _with_ci(out, f"{pre}{metric}_{name}", point, cls[:, c, j], ci_alpha)
    return out


@dataclass(frozen=True)
class ConformalEvaluation:
    """Thresholds fitted on validation, the split's sets, and its ``metrics.json`` keys."""

    thresholds: ConformalThresholds
    sets: np.ndarray
    metrics: dict[str, float | bool]


def evaluate_conformal(
    val_probs: object,
    val_targets: object,
    probs: object,
    targets: object,
    split: str = "test",
    alpha: float = DEFAULT_ALPHA,
    n_resamples: int = 1000,
    seed: int = 0,
    ci_alpha: float = 0.05,
) -> ConformalEvaluation:
    """Fit on validation, build the split's sets and measure them (labelled rows): what
    ``analysis.analyse`` adds to ``metrics.json``, with the fitted ``conformal/*`` values."""
    fitted = fit_conformal(val_probs, val_targets, alpha)
    sets = fitted.prediction_sets(probs)
    t = np.asarray(targets)
    out: dict[str, float | bool] = dict(fitted.params())
    if (t >= 0).any():
        out.update(conformal_metrics(sets, t, split, n_resamples, seed, ci_alpha))
    return ConformalEvaluation(fitted, sets, out)
