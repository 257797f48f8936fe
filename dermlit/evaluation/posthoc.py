"""Post-hoc decision adjustment: a per-class additive bias on the logits, fitted on VALIDATION.

A model trained on imbalanced data (or with a re-weighted loss) puts its argmax boundaries where
its training objective wanted them, not where macro-F1 does. Shifting the logits by a per-class
bias moves the boundaries without retraining: Menon et al. (ICLR 2021) subtract
``tau * log(prior)`` (one parameter, the post-hoc logit adjustment); a free bias per class is
the threshold tuning of the ISIC challenge entries (7 parameters, so it overfits small
validation classes more easily). Fitted on the validation split only, then applied unchanged to
the test split; torchmetrics/scikit-learn have no such fitting, so it lives here.

``conf/posthoc/`` selects one; the fitted values go into ``metrics.json`` as ``posthoc/*``.
``prior_shift.PriorEM`` is the one TRANSDUCTIVE rule: it also re-estimates the class prior from
the unlabelled test logits (``fit_target``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from dermlit.constants import CLASSES
from dermlit.evaluation.metrics import scores_from_confusion

OBJECTIVES = ("macro_f1", "balanced_accuracy")
log = logging.getLogger(__name__)


def decision_score(logits: np.ndarray, targets: np.ndarray, objective: str = "macro_f1") -> float:
    """``objective`` of the argmax decisions of ``logits`` against ``targets`` (labelled rows)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"posthoc objective must be one of {OBJECTIVES}, got {objective!r}")
    return floor_scores(logits, targets)[objective]


#: the validation scores a ``ClassBias`` floor can name
FLOOR_KEYS = (*OBJECTIVES, "accuracy", *(f"recall_{c}" for c in CLASSES))


def floor_scores(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Every :data:`FLOOR_KEYS` score of the argmax decisions of ``logits``."""
    k = logits.shape[1]
    conf = np.bincount(targets * k + logits.argmax(1), minlength=k * k).reshape(k, k)
    scores = scores_from_confusion(conf)
    named = {key: float(scores[key]) for key in (*OBJECTIVES, "accuracy")}
    named |= {f"recall_{c}": float(r) for c, r in zip(CLASSES, scores["recall"], strict=False)}
    return named


class DecisionAdjustment:
    """No adjustment (the base): ``logits + bias`` with ``bias = 0``.

    ``fitted_on_validation``: whether ``fit`` needs the validation predictions (the run
    writer fits only such rules, and ``dermlit-eval`` refuses them without validation).
    ``transductive``: whether the rule also needs the UNLABELLED test logits
    (``fit_target(test_logits)``, after ``fit``; ``prior_shift.PriorEM``); validation is then
    adjusted by ``source(logits)``, the test split by ``__call__``.
    """

    fitted_on_validation = False
    transductive = False

    def __init__(self, objective: str = "macro_f1") -> None:
        decision_score(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), objective)  # validates
        self.objective = objective
        self.bias = np.zeros(len(CLASSES))

    def fit(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        class_counts: Sequence[float] | None = None,
    ) -> DecisionAdjustment:
        """Choose the bias on the labelled rows of a validation split; returns self."""
        logits, targets = _labelled(logits, targets)
        self.bias = np.zeros(logits.shape[1])
        self._fit(logits, targets, class_counts)
        return self

    def _fit(self, logits: np.ndarray, targets: np.ndarray, class_counts) -> None:
        return None

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float64) + self.bias

    def source(self, logits: np.ndarray) -> np.ndarray:
        """The rule on source-domain logits (validation): the same as ``__call__`` unless
        transductive."""
        return self(logits)

    def fit_target(self, logits: np.ndarray) -> DecisionAdjustment:
        """A transductive rule's step on the unlabelled test logits; nothing for the others."""
        return self

    def params(self) -> dict[str, float]:
        """The fitted values for ``metrics.json`` (``posthoc/...``)."""
        return {}


class LogitAdjustment(DecisionAdjustment):
    """``logits - tau * log(prior)`` with the TRAIN prior; ``tau`` from ``taus`` maximises the
    validation objective (ties: the smallest |tau|). tau = 1 is Menon et al.'s balanced-error
    optimum for a model trained with plain cross-entropy; a model trained with a re-weighted
    or logit-adjusted loss already shifted its boundaries, so negative tau is allowed."""

    fitted_on_validation = True

    def __init__(self, taus: Sequence[float], objective: str = "macro_f1") -> None:
        super().__init__(objective)
        if not len(taus):
            raise ValueError("posthoc.taus must list at least one value")
        self.taus = sorted((float(t) for t in taus), key=abs)
        self.tau = 0.0

    def _fit(self, logits, targets, class_counts) -> None:
        if class_counts is None:
            raise ValueError("logit adjustment needs the TRAIN class counts (the prior)")
        counts = np.asarray(class_counts, dtype=np.float64)
        if counts.shape != (logits.shape[1],) or (counts <= 0).any():
            raise ValueError(f"class_counts must be {logits.shape[1]} positive counts: {counts}")
        log_prior = np.log(counts / counts.sum())
        scores = [
            decision_score(logits - t * log_prior, targets, self.objective) for t in self.taus
        ]
        self.tau = self.taus[int(np.argmax(scores))]  # argmax: first of equals, smallest |tau|
        self.bias = -self.tau * log_prior

    def params(self) -> dict[str, float]:
        return {"tau": self.tau}


class ClassBias(DecisionAdjustment):
    """A free bias per class by coordinate ascent over ``grid``, ``rounds`` sweeps over the
    classes (each class's bias set to the grid value that maximises the objective given the
    others; ties keep the current value).

    ``floors`` (e.g. ``{"recall_mel": 0.6}``): validation scores the decision must keep, a
    clinical operating point such as a melanoma-sensitivity floor. The ascent then ranks a bias
    first by how far it falls short of the floors (summed) and only then by the objective, so
    it maximises the objective among the biases that meet them; ``floors_met`` (in
    ``posthoc/*``) says whether any did, and a warning names the floors that were not met.
    Keys: ``macro_f1``, ``balanced_accuracy``, ``accuracy`` or ``recall_<class>``."""

    fitted_on_validation = True

    def __init__(
        self,
        grid: Sequence[float],
        rounds: int = 2,
        objective: str = "macro_f1",
        floors: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(objective)
        if not len(grid) or rounds < 1:
            raise ValueError("posthoc.grid must be non-empty and posthoc.rounds >= 1")
        self.grid = [float(g) for g in grid]
        self.rounds = rounds
        self.floors = {str(k): float(v) for k, v in (floors or {}).items()}
        unknown = sorted(set(self.floors) - set(FLOOR_KEYS))
        if unknown:
            raise ValueError(
                f"posthoc.floors: unknown score(s) {unknown}; use any of {list(FLOOR_KEYS)}"
            )
        self.floors_met = True

    def _rank(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
        """(minus the summed shortfall below the floors, the objective): larger is better."""
        scores = floor_scores(logits, targets)
        shortfall = sum(max(0.0, floor - scores[key]) for key, floor in self.floors.items())
        return -shortfall, scores[self.objective]

    def _fit(self, logits, targets, class_counts) -> None:
        start = floor_scores(logits, targets)
        for key in self.floors:
            if np.isnan(start[key]):
                raise ValueError(f"posthoc.floors: {key} is undefined on this validation split")
        bias = np.zeros(logits.shape[1])
        best = self._rank(logits + bias, targets)
        for _ in range(self.rounds):
            for c in range(logits.shape[1]):
                for value in self.grid:
                    trial = bias.copy()
                    trial[c] = value
                    rank = self._rank(logits + trial, targets)
                    if rank[0] > best[0] + 1e-12 or (
                        rank[0] >= best[0] - 1e-12 and rank[1] > best[1] + 1e-12
                    ):
                        best, bias = rank, trial
        self.bias = bias
        self.floors_met = best[0] >= -1e-12
        if not self.floors_met:
            scores = floor_scores(logits + bias, targets)
            missed = {k: round(scores[k], 3) for k, v in self.floors.items() if scores[k] < v}
            log.warning(
                "posthoc.floors %s cannot all be met on validation with this grid: the bias "
                "comes closest (reached %s); lower the floors or widen posthoc.grid",
                self.floors,
                missed,
            )

    def params(self) -> dict[str, float]:
        params = {f"bias_{c}": float(b) for c, b in zip(CLASSES, self.bias, strict=False)}
        if self.floors:
            params["floors_met"] = float(self.floors_met)
        return params


def _labelled(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    keep = targets >= 0
    if logits.ndim != 2 or len(logits) != len(targets):
        raise ValueError(f"logits must be (N, K) for N={len(targets)} targets: {logits.shape}")
    if not keep.any():
        raise ValueError("post-hoc adjustment needs labelled validation predictions")
    return logits[keep], targets[keep]
