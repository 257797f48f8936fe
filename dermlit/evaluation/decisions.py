"""Cost-sensitive decisions and selective prediction (referral) on predicted probabilities.

Why our own: neither torchmetrics nor scikit-learn has minimum-expected-cost decisions under a
full cost matrix or risk-coverage curves with a clinical target; both are a few lines of numpy.
Cost matrices are indexed ``cost[true, decided]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dermlit.constants import CLASSES, MALIGNANT
from dermlit.evaluation.checks import as_numpy, check_probs_targets
from dermlit.evaluation.metrics import scores_from_confusion

SCORES = ("confidence", "expected_cost")
TARGET_METRICS = ("macro_f1", "mel_recall")


def _check_cost(cost_matrix: object, k: int) -> np.ndarray:
    c = as_numpy(cost_matrix)
    if c.shape != (k, k):
        raise ValueError(f"cost_matrix must have shape ({k}, {k}), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("cost_matrix contains NaN or infinite values")
    return c


def malignancy_cost_matrix(
    miss_cost: float = 10.0,
    error_cost: float = 1.0,
    class_names: Sequence[str] = CLASSES,
    malignant: Sequence[str] = MALIGNANT,
) -> np.ndarray:
    """0 on the diagonal, ``miss_cost`` for a malignant case decided benign, ``error_cost`` for
    every other error. A simple default; pass any (K, K) matrix for other clinical priorities."""
    mal = np.isin(class_names, malignant)
    cost = np.where(mal[:, None] & ~mal[None, :], miss_cost, error_cost)
    np.fill_diagonal(cost, 0.0)
    return cost.astype(np.float64)


def bayes_decisions(probs: object, cost_matrix: object) -> np.ndarray:
    """Minimum expected cost decision per case: argmin_d sum_t P(t) cost[t, d] (ties: lowest d)."""
    p = as_numpy(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, K), got {p.shape}")
    return (p @ _check_cost(cost_matrix, p.shape[1])).argmin(1)


def expected_cost(preds: object, targets: object, cost_matrix: object) -> float:
    """Mean realised cost per case, ``cost[target, decision]`` averaged over cases."""
    d = as_numpy(preds, np.int64)
    t = as_numpy(targets, np.int64)
    if d.shape != t.shape or d.ndim != 1:
        raise ValueError(f"preds and targets must be 1-D of equal length: {d.shape}, {t.shape}")
    c = as_numpy(cost_matrix)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cost_matrix must be square, got {c.shape}")
    return float(_check_cost(c, c.shape[0])[t, d].mean())


def decision_summary(
    preds: object,
    targets: object,
    cost_matrix: object,
    class_names: Sequence[str] = CLASSES,
    malignant: Sequence[str] = MALIGNANT,
) -> dict[str, float]:
    """Clinical view of decisions.

    - ``mean_cost``: mean ``cost[true, decided]`` per case.
    - ``malignant_recall``: share of true malignant cases decided as ANY malignant class (each
      leads to excision/biopsy, so a melanoma called BCC is still caught);
      ``malignant_exact_recall``: decided as their own class.
    - ``benign_referral_rate``: share of benign cases decided as a malignant class (needless
      referrals); ``referral_rate``: share of all cases decided malignant.
    NaN where the denominator is empty.
    """
    d = as_numpy(preds, np.int64)
    t = as_numpy(targets, np.int64)
    mal = np.isin(np.asarray(class_names), list(malignant))
    true_mal, dec_mal = mal[t], mal[d]

    def share(hit: np.ndarray, among: np.ndarray) -> float:
        return float(hit[among].mean()) if among.any() else float("nan")

    return {
        "mean_cost": expected_cost(d, t, cost_matrix),
        "malignant_recall": share(dec_mal, true_mal),
        "malignant_exact_recall": share(d == t, true_mal),
        "benign_referral_rate": share(dec_mal, ~true_mal),
        "referral_rate": float(dec_mal.mean()),
    }


@dataclass(frozen=True)
class RiskCoverage:
    """Selective prediction curve: accept the cases whose score passes ``threshold``.

    ``threshold`` is in the score's own units: accept if confidence >= threshold, or if the
    expected cost of the Bayes decision <= threshold. One point per distinct score value.
    """

    coverage: np.ndarray
    risk: np.ndarray  # 1 - accuracy of the accepted cases
    threshold: np.ndarray


def _ranked(
    probs: object, targets: object, score: str, cost_matrix: object | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decisions, certainty (higher = more certain), threshold units, order, group ends."""
    p, t = check_probs_targets(probs, targets)
    if score == "confidence":
        preds, certainty = p.argmax(1), p.max(1)
        native = certainty
    elif score == "expected_cost":
        if cost_matrix is None:
            raise ValueError("score='expected_cost' needs a cost_matrix")
        risk = p @ _check_cost(cost_matrix, p.shape[1])
        preds = risk.argmin(1)
        native = risk.min(1)
        certainty = -native
    else:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    order = np.argsort(-certainty, kind="stable")
    sorted_c = certainty[order]
    group_end = np.flatnonzero(np.append(sorted_c[1:] != sorted_c[:-1], True))
    return t, preds, native[order][group_end], order, group_end


def risk_coverage(
    probs: object, targets: object, score: str = "confidence", cost_matrix: object | None = None
) -> RiskCoverage:
    """Risk (1 - accuracy) against coverage when deferring the least certain cases.

    ``score="confidence"`` ranks by max probability and decides by argmax;
    ``score="expected_cost"`` ranks by the Bayes decision's expected cost and decides by it.
    """
    t, preds, thr, order, ends = _ranked(probs, targets, score, cost_matrix)
    correct = np.cumsum(preds[order] == t[order])[ends]
    accepted = ends + 1
    return RiskCoverage(accepted / len(t), 1 - correct / accepted, thr)


def coverage_at_target(
    probs: object,
    targets: object,
    target: float,
    metric: str = "macro_f1",
    score: str = "confidence",
    cost_matrix: object | None = None,
    class_names: Sequence[str] = CLASSES,
) -> dict[str, float]:
    """Largest coverage at which ``metric`` on the accepted cases reaches ``target``.

    ``metric``: ``macro_f1`` (convention of ``metrics.py``) or ``mel_recall``. Returns
    ``coverage``, ``threshold`` (see ``RiskCoverage``) and the metric ``value`` there;
    coverage 0 and NaN threshold/value when no operating point reaches the target.
    """
    if metric not in TARGET_METRICS:
        raise ValueError(f"metric must be one of {TARGET_METRICS}, got {metric!r}")
    p = as_numpy(probs)
    k = len(class_names)
    if p.ndim != 2 or p.shape[1] != k:
        raise ValueError(f"probs must have shape (N, {k}) for {k} class names, got {p.shape}")
    t, preds, thr, order, ends = _ranked(p, targets, score, cost_matrix)
    cells = np.zeros((len(t), k * k))
    cells[np.arange(len(t)), t[order] * k + preds[order]] = 1.0
    conf = np.cumsum(cells, axis=0)[ends].reshape(-1, k, k)
    scores = scores_from_confusion(conf)
    if metric == "macro_f1":
        values = scores["macro_f1"]
    else:
        values = scores["recall"][:, list(class_names).index("mel")]
    ok = np.flatnonzero(values >= target)  # NaN (no melanoma accepted) never passes
    if ok.size == 0:
        return {"coverage": 0.0, "threshold": float("nan"), "value": float("nan")}
    best = ok[-1]
    return {
        "coverage": float((ends[best] + 1) / len(t)),
        "threshold": float(thr[best]),
        "value": float(values[best]),
    }
