"""Whole-set, stratified, seeded bootstrap CIs; paired comparison of two models; McNemar.

Why our own: torchmetrics' ``BootStrapper`` resamples inside each ``update()`` (per batch), so
its intervals are not whole-set intervals, and looping sklearn over resamples is ~100x slower.
A resample is a vector of multiplicities drawn WITHIN each true class (class counts are kept, so
no resample loses a rare class); ``MetricEngine`` turns a block of them into all metrics at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy.stats import binomtest, chi2

from dermlit.constants import NUM_CLASSES
from dermlit.evaluation.calibration import N_BINS, as_numpy
from dermlit.evaluation.metrics import (
    MetricEngine,
    check_probs,
    higher_is_better,
    point_metrics,
    resolve_class_names,
)

#: Metrics compared by ``paired_bootstrap`` unless told otherwise.
HEADLINE: tuple[str, ...] = (
    "macro_f1",
    "balanced_accuracy",
    "accuracy",
    "auroc_macro",
    "recall_mel",
    "mel_sensitivity_at_spec90",
    "ece",
    "brier",
    "nll",
)
#: Fixed by the stratified design (class counts never change), so they get no interval.
_NO_CI_PREFIX = "support_"
#: Upper bound on the elements of one block of resample weights (~20 bytes each in flight).
_BLOCK_ELEMENTS = 2_500_000


def stratified_weights(
    targets: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield blocks (b, N) of resample multiplicities, drawn with replacement within each class.

    Row sums per class equal the class counts. Blocks keep memory bounded for large N; the
    stream is a pure function of (targets, n_resamples, seed).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = len(targets)
    members = [np.flatnonzero(targets == c) for c in np.unique(targets)]
    block = max(1, min(n_resamples, _BLOCK_ELEMENTS // n))
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        w = np.zeros((b, n), dtype=np.int32)
        for idx in members:
            m = idx.size
            draws = rng.integers(0, m, size=(b, m), dtype=np.int64)
            draws += (np.arange(b) * m)[:, None]
            w[:, idx] = np.bincount(draws.ravel(), minlength=b * m).reshape(b, m)
        yield w


def _engines(
    probs_list: Sequence[object],
    targets: object,
    num_classes: int,
    class_names: Sequence[str] | None,
    n_bins: int,
) -> tuple[list[MetricEngine], np.ndarray]:
    """One engine per model, all checked against the same targets."""
    names = resolve_class_names(num_classes, class_names)
    engines, t = [], np.empty(0, dtype=np.int64)
    for probs in probs_list:
        p, t = check_probs(probs, targets, num_classes)
        engines.append(MetricEngine(p, t, names, n_bins))
    return engines, t


def bootstrap_distribution(
    probs_list: Sequence[object],
    targets: object,
    n_resamples: int = 1000,
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
    class_names: Sequence[str] | None = None,
    n_bins: int = N_BINS,
) -> list[dict[str, np.ndarray]]:
    """Per model in ``probs_list``: every metric over the SAME resamples, arrays (n_resamples,)."""
    engines, t = _engines(probs_list, targets, num_classes, class_names, n_bins)
    rng = np.random.default_rng(seed)
    blocks: list[list[dict[str, np.ndarray]]] = [[] for _ in engines]
    for w in stratified_weights(t, n_resamples, rng):
        for out, engine in zip(blocks, engines, strict=True):
            out.append(engine.compute(w))
    return [{k: np.concatenate([b[k] for b in out]) for k in out[0]} for out in blocks]


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval ignoring NaN resamples; (NaN, NaN) when all are NaN."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    probs: object,
    targets: object,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    **engine_kw: object,
) -> dict[str, tuple[float, float]]:
    """Percentile (1 - alpha) intervals of every metric of ``point_metrics`` but ``support_*``."""
    dist = bootstrap_distribution([probs], targets, n_resamples, seed, **engine_kw)[0]
    return {k: _interval(v, alpha) for k, v in dist.items() if not k.startswith(_NO_CI_PREFIX)}


def metrics_with_ci(
    probs: object,
    targets: object,
    prefix: str = "test/",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    **engine_kw: object,
) -> dict[str, float]:
    """Flat ``metrics.json`` keys: ``<prefix><metric>`` plus ``_ci_low``/``_ci_high`` where a CI
    exists. Undefined values are NaN (write JSON with ``allow_nan`` or map them to null)."""
    out: dict[str, float] = {}
    cis = bootstrap_ci(probs, targets, n_resamples, seed, alpha, **engine_kw)
    for key, value in point_metrics(probs, targets, **engine_kw).items():
        out[f"{prefix}{key}"] = value
        if key in cis:
            out[f"{prefix}{key}_ci_low"], out[f"{prefix}{key}_ci_high"] = cis[key]
    return out


def paired_bootstrap(
    probs_a: object,
    probs_b: object,
    targets: object,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metrics: Sequence[str] = HEADLINE,
    **engine_kw: object,
) -> dict[str, dict[str, float]]:
    """Compare models A and B on the same cases, resampled together.

    Per metric: ``delta`` = A - B on the full set, its percentile CI (``ci_low``, ``ci_high``),
    and ``share_a_better``: the share of resamples where A is strictly better (higher for
    ``higher_is_better`` metrics, lower for losses and calibration errors).
    """
    dist_a, dist_b = bootstrap_distribution(
        [probs_a, probs_b], targets, n_resamples, seed, **engine_kw
    )
    point_a = point_metrics(probs_a, targets, **engine_kw)
    point_b = point_metrics(probs_b, targets, **engine_kw)
    out = {}
    for m in metrics:
        if m not in point_a:
            raise KeyError(f"unknown metric {m!r}; known: {sorted(point_a)}")
        diff = dist_a[m] - dist_b[m]
        sign = 1.0 if higher_is_better(m) else -1.0
        low, high = _interval(diff, alpha)
        defined = ~np.isnan(diff)
        share = float(np.mean(sign * diff[defined] > 0)) if defined.any() else float("nan")
        out[m] = {
            "delta": point_a[m] - point_b[m],
            "ci_low": low,
            "ci_high": high,
            "share_a_better": share,
        }
    return out


def mcnemar(correct_a: object, correct_b: object, exact_below: int = 25) -> tuple[float, float]:
    """McNemar's test of paired correctness; returns (statistic, two-sided p-value).

    With n = b + c discordant pairs (b: only A right, c: only B right): if n < ``exact_below``,
    the exact binomial test (statistic = min(b, c), p from Binomial(n, 1/2)); otherwise the
    chi-square statistic with continuity correction, (|b - c| - 1)^2 / n, on 1 degree of freedom.
    """
    a = as_numpy(correct_a).astype(bool)
    b_ = as_numpy(correct_b).astype(bool)
    if a.ndim != 1 or a.shape != b_.shape:
        raise ValueError(
            f"correct_a and correct_b must be 1-D of equal length: {a.shape}, {b_.shape}"
        )
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    n = b + c
    if n == 0:
        return 0.0, 1.0
    if n < exact_below:
        return float(min(b, c)), float(binomtest(min(b, c), n, 0.5).pvalue)
    stat = (abs(b - c) - 1) ** 2 / n
    return float(stat), float(chi2.sf(stat, df=1))
