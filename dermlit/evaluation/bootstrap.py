"""Whole-set, stratified, seeded bootstrap CIs; paired comparison of two models; McNemar.

Why our own: torchmetrics' ``BootStrapper`` resamples inside each ``update()`` (per batch), so
its intervals are not whole-set intervals, and looping sklearn over resamples is ~100x slower.
A resample is a vector of multiplicities drawn WITHIN each true class (class counts are kept, so
no resample loses a rare class); ``MetricEngine`` turns a block of them into all metrics at once.
Which interval each metric gets (percentile or BCa) and when none is reported (a biased
bootstrap distribution) or it is flagged (zero width): ``intervals.py``; the same rules apply to
the paired differences of :func:`paired_bootstrap`.

``metrics.json`` keys per metric with an interval: ``_ci_low``/``_ci_high`` (NaN = null where no
valid interval exists), ``_ci_method`` (``percentile``, ``bca`` or ``none``), and only where they
hold: ``_ci_biased: true`` (interval omitted), ``_ci_degenerate: true`` with ``_ci_support`` (the
images the interval rests on: the class's test images for per-class metrics, else all).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy.stats import binomtest, chi2

from dermlit.constants import NUM_CLASSES
from dermlit.evaluation.calibration import N_BINS
from dermlit.evaluation.checks import as_numpy, check_probs
from dermlit.evaluation.intervals import (
    BCA,
    BIASED,
    DEGENERATE,
    Interval,
    acceleration,
    interval,
    jackknife_weights,
    rule_for,
)
from dermlit.evaluation.metrics import MetricEngine, higher_is_better, resolve_class_names

#: Metrics compared by ``paired_bootstrap`` unless told otherwise.
COMPARED_METRICS: tuple[str, ...] = (
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
#: Per-class metric families: a degenerate interval's support is its class's test images.
_PER_CLASS = ("precision_", "recall_", "f1_", "auroc_")
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
    return _distributions(engines, t, n_resamples, seed)


def _distributions(
    engines: Sequence[MetricEngine],
    t: np.ndarray,
    n_resamples: int,
    seed: int,
    extra: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """Every metric per resample; with ``extra`` weight rows (the jackknife), those come first.

    The extra rows ride along with the first block: a separate product of ~100 rows takes a
    slow path in multithreaded OpenBLAS on a busy machine (measured 0.3 s vs 0.03 s)."""
    rng = np.random.default_rng(seed)
    blocks: list[list[dict[str, np.ndarray]]] = [[] for _ in engines]
    for i, w in enumerate(stratified_weights(t, n_resamples, rng)):
        if i == 0 and extra is not None:
            w = np.concatenate([extra.astype(w.dtype, copy=False), w])
        for out, engine in zip(blocks, engines, strict=True):
            out.append(engine.compute(w))
    return [{k: np.concatenate([b[k] for b in out]) for k in out[0]} for out in blocks]


def _split(dist: dict[str, np.ndarray], n_extra: int) -> tuple[dict, dict]:
    """(resamples, extra rows) of a :func:`_distributions` result."""
    return {k: v[n_extra:] for k, v in dist.items()}, {k: v[:n_extra] for k, v in dist.items()}


def _point(engine: MetricEngine, n: int) -> dict[str, float]:
    return {k: float(v[0]) for k, v in engine.compute(np.ones((1, n))).items()}


def _intervals(
    dist: dict[str, np.ndarray],
    point: dict[str, float],
    jack: dict[str, np.ndarray],
    alpha: float,
    metrics: Sequence[str] | None = None,
) -> dict[str, Interval]:
    """Each metric's interval by its rule (``intervals.rule_for``); BCa takes the acceleration
    from the grouped jackknife values ``jack``."""
    out = {}
    for key in metrics if metrics is not None else dist:
        if key.startswith(_NO_CI_PREFIX):
            continue
        rule = rule_for(key)
        accel = acceleration(jack[key]) if rule.method == BCA else 0.0
        out[key] = interval(dist[key], point[key], alpha, rule.method, accel, rule.max_z0)
    return out


def bootstrap_intervals(
    probs: object,
    targets: object,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    num_classes: int = NUM_CLASSES,
    class_names: Sequence[str] | None = None,
    n_bins: int = N_BINS,
) -> tuple[dict[str, float], dict[str, Interval]]:
    """Point estimates of every metric and the (1 - alpha) interval (with its verdict) of every
    metric but ``support_*``."""
    (engine,), t = _engines([probs], targets, num_classes, class_names, n_bins)
    jw = jackknife_weights(t, seed=seed)
    dist, jack = _split(_distributions([engine], t, n_resamples, seed, jw)[0], len(jw))
    point = _point(engine, len(t))
    return point, _intervals(dist, point, jack, alpha)


def bootstrap_ci(
    probs: object,
    targets: object,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    **engine_kw: object,
) -> dict[str, tuple[float, float]]:
    """(1 - alpha) intervals of every metric but ``support_*``: (NaN, NaN) where none is valid."""
    _, ivs = bootstrap_intervals(probs, targets, n_resamples, seed, alpha, **engine_kw)
    return {k: (iv.low, iv.high) if iv.reported else (np.nan, np.nan) for k, iv in ivs.items()}


def support_of(key: str, point: dict[str, float]) -> float:
    """The test images an interval rests on: its class's for per-class metrics, else all."""
    if key.startswith("mel_sensitivity_"):
        return point.get("support_mel", np.nan)
    for family in _PER_CLASS:
        if key.startswith(family) and f"support_{key[len(family) :]}" in point:
            return point[f"support_{key[len(family) :]}"]
    return float(sum(v for k, v in point.items() if k.startswith(_NO_CI_PREFIX)))


def interval_keys(key: str, iv: Interval, support: float) -> dict[str, float | str | bool]:
    """The ``metrics.json`` keys of one interval (module docstring)."""
    out: dict[str, float | str | bool] = {
        f"{key}_ci_low": iv.low if iv.reported else np.nan,
        f"{key}_ci_high": iv.high if iv.reported else np.nan,
        f"{key}_ci_method": iv.method,
    }
    if iv.status == BIASED:
        out[f"{key}_ci_biased"] = True
    elif iv.status == DEGENERATE:
        out[f"{key}_ci_degenerate"] = True
        out[f"{key}_ci_support"] = support
    return out


def metrics_with_ci(
    probs: object,
    targets: object,
    prefix: str = "test/",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    **engine_kw: object,
) -> dict[str, float | str | bool]:
    """Flat ``metrics.json`` keys: ``<prefix><metric>`` plus the interval keys of the module
    docstring. Undefined values are NaN (write JSON with ``allow_nan`` or map them to null)."""
    point, ivs = bootstrap_intervals(probs, targets, n_resamples, seed, alpha, **engine_kw)
    out: dict[str, float | str | bool] = {}
    for key, value in point.items():
        out[f"{prefix}{key}"] = value
        if key in ivs:
            out.update(interval_keys(f"{prefix}{key}", ivs[key], support_of(key, point)))
    return out


def paired_bootstrap(
    probs_a: object,
    probs_b: object,
    targets: object,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metrics: Sequence[str] = COMPARED_METRICS,
    num_classes: int = NUM_CLASSES,
    class_names: Sequence[str] | None = None,
    n_bins: int = N_BINS,
) -> dict[str, dict[str, float | str]]:
    """Compare models A and B on the same cases, resampled together.

    Per metric: ``delta`` = A - B on the full set, its CI (``ci_low``, ``ci_high``; NaN unless
    ``ci_status`` is ``ok`` or ``degenerate``) by the metric's rule applied to the resampled
    differences (``ci_method``), and ``share_a_better``: the share of resamples where A is
    strictly better (higher for ``higher_is_better`` metrics, lower for losses and calibration
    errors).
    """
    (eng_a, eng_b), t = _engines([probs_a, probs_b], targets, num_classes, class_names, n_bins)
    point_a, point_b = _point(eng_a, len(t)), _point(eng_b, len(t))
    unknown = [m for m in metrics if m not in point_a]
    if unknown:
        raise KeyError(f"unknown metric {unknown[0]!r}; known: {sorted(point_a)}")
    jw = jackknife_weights(t, seed=seed)
    both = _distributions([eng_a, eng_b], t, n_resamples, seed, jw)
    (dist_a, jack_a), (dist_b, jack_b) = (_split(d, len(jw)) for d in both)
    diff = {m: dist_a[m] - dist_b[m] for m in metrics}
    delta = {m: point_a[m] - point_b[m] for m in metrics}
    ivs = _intervals(diff, delta, {m: jack_a[m] - jack_b[m] for m in metrics}, alpha, metrics)
    out = {}
    for m in metrics:
        sign = 1.0 if higher_is_better(m) else -1.0
        defined = ~np.isnan(diff[m])
        share = float(np.mean(sign * diff[m][defined] > 0)) if defined.any() else float("nan")
        iv = ivs[m]
        out[m] = {
            "delta": delta[m],
            "ci_low": iv.low if iv.reported else float("nan"),
            "ci_high": iv.high if iv.reported else float("nan"),
            "ci_method": iv.method,
            "ci_status": iv.status,
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
