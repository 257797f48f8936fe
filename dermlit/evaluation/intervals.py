"""Bootstrap intervals that cannot contradict their own estimate: percentile or BCa per metric,
and a verdict (``ok``, ``degenerate``, ``biased``, ``undefined``) for every interval.

Why our own: ``scipy.stats.bootstrap`` resamples the data itself (no class-stratified weights,
no way to reuse one block of resamples for 50 metrics), and its BCa returns NaN with a warning
when the resamples lie on one side of the estimate instead of saying why. The BCa formulas
follow scipy's ``_bca_interval`` (Efron & Tibshirani 1993, 14.3 and 14.15): the bias correction
``z0 = ndtri(share of resamples below the estimate, ties counting one half)``, the acceleration
``a = sum(d^3) / (6 sum(d^2)^1.5)`` from jackknife deviations ``d``. The jackknife here is
GROUPED (delete-one-group, :func:`jackknife_weights`): ``G`` rows of weights through the same
vectorised metric engine instead of N, and the groups keep the class mix, like the stratified
resamples. The acceleration estimate is the same to first order, a little noisier.

Which method for which metric, and why (:func:`rule_for`). Coverage figures: simulated test
sets with a known population value (n = 300-4000 images, 60-200 sets per case, 500-1000
resamples, a model whose accuracy is its confidence minus a gap of 0-0.1 in every bin);
tests/faults/test_interval_validity.py keeps a small version of it.

- percentile: ``accuracy``, ``balanced_accuracy``, ``recall_*``, ``auroc_*``, ``brier``, ``nll``.
  Under class-stratified resampling these are means (AUROC: a two-sample U-statistic) whose
  bootstrap expectation EQUALS the estimate: no bias to correct, and the percentile interval
  keeps the metric's range. Coverage of a 95% interval: accuracy 0.93-0.975, recall of a class
  of ~11 images 0.93.
- BCa: ``precision_*``, ``f1_*``, ``macro_f1``, ``mel_sensitivity_at_spec*``: ratios, harmonic
  means and a maximum over thresholds, biased and skewed a little. BCa corrects both, costs only
  the jackknife, and matches the percentile interval when there is nothing to correct
  (macro-F1 0.89-0.93 both).
- BCa while ``|z0| <= 0.5``: ``ece``. A calibration error sums |noise| over bins, so its
  resamples lie above the estimate, the more so the better calibrated the model, and there the
  percentile interval misses the population value (coverage 0.2-0.6 at ``|z0|`` 0.5-1.0). BCa
  covers 0.89-0.97 where ``|z0| <= 0.5`` (gaps of 0.06-0.1) and 0.3-0.7 beyond; a borderline
  case (600 images, gap 0.04) is reported for 6% of test sets, at coverage 0.33. Beyond the
  limit the estimate is mostly noise: no interval.
- none: ``mce`` and ``classwise_ece``. The largest gap over bins is ruled by the sparsest bin:
  no interval covered its population value (percentile 0-4%, BCa 0-39% at every ``|z0|``). The
  class-wise ECE sums the |noise| of K x bins mostly-empty bins: BCa covered 0.64-0.87 at any
  limit on ``|z0|``, short of 95% even for a clearly miscalibrated model.

Verdicts, for every method. The basic interval would not rescue the biased cases: it contains
the estimate exactly when the percentile interval does. BCa's levels run off to the extreme
order statistics when nearly all resamples lie on one side (and with ``a = 0`` it excludes the
estimate as soon as ``|z0| > z_{1-alpha/2}``), hence the limits:

- ``biased``: ``|z0|`` above the metric's limit (by default ``z_{1-alpha/2}``: the estimate lies
  outside the central ``1 - alpha`` of its resamples), the metric has no valid method, or the
  interval would exclude its estimate. No interval is reported (NaN) and the key is flagged.
- ``degenerate``: zero width (all resamples equal, e.g. a class with one test image). The
  interval is kept (it is what the bootstrap says) and flagged with the support it rests on.
- ``undefined``: no finite resample (e.g. the recall of an absent class).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

PERCENTILE, BCA, NONE = "percentile", "bca", "none"
OK, BIASED, DEGENERATE, UNDEFINED = "ok", "biased", "degenerate", "undefined"
#: Jackknife groups for the BCa acceleration (delete-one when there are fewer samples).
N_JACKKNIFE_GROUPS = 100


@dataclass(frozen=True)
class Rule:
    """How a metric gets its interval: ``method`` and the largest bias ``|z0|`` at which it is
    still reported (None: the estimate must lie in the central 1 - alpha of its resamples)."""

    method: str
    max_z0: float | None = None


_PERCENTILE_METRICS = frozenset(["accuracy", "balanced_accuracy", "brier", "nll"])
_PERCENTILE_FAMILIES = ("recall_", "auroc_")
_RULES = {"ece": Rule(BCA, 0.5), "classwise_ece": Rule(NONE), "mce": Rule(NONE)}


def rule_for(metric: str) -> Rule:
    """The interval rule of a metric (module docstring: why)."""
    if metric in _RULES:
        return _RULES[metric]
    if metric in _PERCENTILE_METRICS or metric.startswith(_PERCENTILE_FAMILIES):
        return Rule(PERCENTILE)
    return Rule(BCA)


@dataclass(frozen=True)
class Interval:
    """``low``/``high`` are NaN unless ``status`` is ``ok`` or ``degenerate``; ``z0`` is the
    bias of the resamples in standard-normal units (0: centred on the estimate)."""

    low: float
    high: float
    method: str
    status: str
    z0: float = float("nan")

    @property
    def reported(self) -> bool:
        return self.status in (OK, DEGENERATE)


def jackknife_weights(
    targets: np.ndarray, n_groups: int = N_JACKKNIFE_GROUPS, seed: int = 0
) -> np.ndarray:
    """(G, N) weights: row g is 1 everywhere but 0 on group g. Groups deal each class's
    samples round-robin after a seeded shuffle, so every group has the class mix."""
    n = len(targets)
    g = min(n_groups, n)
    rng = np.random.default_rng(seed)
    group = np.empty(n, dtype=np.int64)
    offset = 0
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        group[idx] = (offset + np.arange(idx.size)) % g
        offset += idx.size
    return (group[None, :] != np.arange(g)[:, None]).astype(np.int32)  # the exact integer path


def acceleration(jack: np.ndarray) -> float:
    """BCa acceleration from jackknife values (NaN ones, e.g. a deleted rare class, dropped)."""
    x = jack[np.isfinite(jack)]
    if x.size < 3:
        return 0.0
    d = x.mean() - x
    den = (d**2).sum()
    if not den > 0:
        return 0.0
    return float((d**3).sum() / (6.0 * den**1.5))


def _tol(estimate: float) -> float:
    """Resamples are sums in another order than the estimate: equal within rounding."""
    return 1e-9 * max(1.0, abs(estimate))


def bias_z0(values: np.ndarray, estimate: float) -> float:
    """``ndtri`` of the share of resamples below the estimate (ties count 1/2), as scipy."""
    tol = _tol(estimate)
    below = np.count_nonzero(values < estimate - tol) + np.count_nonzero(values <= estimate + tol)
    return float(ndtri(below / (2 * values.size)))


def interval(
    values: np.ndarray,
    estimate: float,
    alpha: float = 0.05,
    method: str = PERCENTILE,
    accel: float = 0.0,
    max_z0: float | None = None,
) -> Interval:
    """The (1 - alpha) interval of ``estimate`` from its resamples ``values`` (NaN ignored),
    with its verdict; ``accel`` is BCa's acceleration, ``max_z0`` the metric's bias limit."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if method not in (PERCENTILE, BCA, NONE):
        raise ValueError(f"unknown interval method {method!r}")
    nan = float("nan")
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.isfinite(estimate):
        return Interval(nan, nan, method, UNDEFINED)
    z0 = bias_z0(finite, estimate)
    if method == NONE:
        return _biased(method, z0)
    lo, hi, tol = float(finite.min()), float(finite.max()), _tol(estimate)
    if hi - lo <= tol:
        if abs(lo - estimate) <= tol:
            return Interval(lo, hi, method, DEGENERATE, z0)
        return _biased(method, z0)
    z = float(ndtri(1 - alpha / 2))
    if abs(z0) > (z if max_z0 is None else min(max_z0, z)):
        return _biased(method, z0)
    levels = np.array([alpha / 2, 1 - alpha / 2])
    if method == BCA:
        zs = z0 + np.array([-z, z])
        levels = ndtr(z0 + zs / (1 - accel * zs))
    low, high = (float(v) for v in np.quantile(finite, levels))
    if not low - tol <= estimate <= high + tol:
        return _biased(method, z0)
    low, high = min(low, estimate), max(high, estimate)  # rounding only
    return Interval(low, high, method, DEGENERATE if high - low <= tol else OK, z0)


def _biased(method: str, z0: float) -> Interval:
    return Interval(float("nan"), float("nan"), method, BIASED, z0)
