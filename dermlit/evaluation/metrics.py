"""Point metrics of a classifier, computed for many weightings of the samples at once.

Why our own engine: torchmetrics computes one metric for one set of samples; a whole-set
bootstrap needs every metric for thousands of resamples. Each resample is a vector of sample
multiplicities ``w`` (B, N), and every metric here is a function of weighted sums, so all
resamples come out of one matrix product (confusion, calibration bins, Brier, NLL) plus one
cumulative sum per class (AUROC, sensitivity at specificity). ``point_metrics`` is the same
engine with ``w = 1`` so that point estimates and CIs share one definition.
scikit-learn is the test oracle; the tests also check torchmetrics agreement.

Conventions (undefined values are NaN):
- ``recall_<c>`` is NaN when class c is absent from the targets; ``balanced_accuracy`` is the
  mean recall over classes present in the targets (= sklearn ``balanced_accuracy_score``).
- ``precision_<c>`` is 0 when c is never predicted (sklearn ``zero_division=0``).
- ``f1_<c>`` = 2TP / (2TP + FP + FN): 0 when c has support or predictions but no hit, NaN when c
  has neither support nor prediction. ``macro_f1`` averages the non-NaN ones, i.e. classes with
  neither support nor prediction are left out. This equals torchmetrics
  ``MulticlassF1Score(num_classes=7, average="macro")`` and sklearn
  ``f1_score(y, p, average="macro", zero_division=0)`` with its default ``labels`` (classes
  seen in y or p); it differs from ``labels=range(7)`` only when a class is absent and never
  predicted (sklearn would count it as F1 = 0).
- ``auroc_<c>`` (one-vs-rest, ties count 1/2) is NaN when c is absent from the targets or is the
  only class; ``auroc_macro`` averages the defined ones.
- ``mel_sensitivity_at_specXX``: the highest melanoma recall over thresholds on P(mel) whose
  specificity is >= XX% (the ROC operating points, as in sklearn ``roc_curve``).
- Calibration (``ece``, ``mce``, ``classwise_ece``, ``brier``, ``nll``): see ``calibration.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dermlit.constants import CLASSES, NUM_CLASSES
from dermlit.evaluation.calibration import N_BINS, NLL_EPS, bin_index
from dermlit.evaluation.checks import check_probs

#: Specificity levels at which melanoma sensitivity is reported.
SPEC_LEVELS: tuple[int, ...] = (80, 90, 95)
_HIGHER_IS_BETTER = frozenset(["macro_f1", "balanced_accuracy", "accuracy", "auroc_macro"])
_HIGHER_IS_BETTER_FAMILIES = ("precision_", "recall_", "f1_", "auroc_", "mel_sensitivity_")
_SPEC_TOL = 1e-9


def higher_is_better(metric: str) -> bool:
    """True for scores (F1, recall, AUROC, ...), False for losses and calibration errors."""
    return metric in _HIGHER_IS_BETTER or metric.startswith(_HIGHER_IS_BETTER_FAMILIES)


def _divide(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den, with ``empty`` where den == 0."""
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (without a warning) where all are NaN."""
    defined = ~np.isnan(x)
    return _divide(np.where(defined, x, 0.0).sum(-1), defined.sum(-1), np.nan)


def scores_from_confusion(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Precision/recall/F1 per class (..., K) and macro F1, balanced and plain accuracy (...,)
    from confusion matrices ``conf[..., true, pred]`` (counts or weights)."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    support, predicted = conf.sum(-1), conf.sum(-2)
    recall = _divide(tp, support, np.nan)
    f1 = _divide(2 * tp, support + predicted, np.nan)
    return {
        "precision": _divide(tp, predicted, 0.0),
        "recall": recall,
        "f1": f1,
        "support": support,
        "macro_f1": nanmean(f1),
        "balanced_accuracy": nanmean(recall),
        "accuracy": _divide(tp.sum(-1), support.sum(-1), np.nan),
    }


class MetricEngine:
    """Every metric of ``point_metrics`` for a batch of sample weightings ``w`` (B, N).

    Per-sample features (confusion cell, calibration bin gaps, Brier, NLL) and per-class score
    orderings are prepared once; ``compute(w)`` costs one (B, N) x (N, D) product plus a few
    cumulative sums, whatever B is.
    """

    def __init__(
        self,
        probs: np.ndarray,
        targets: np.ndarray,
        class_names: Sequence[str] = CLASSES,
        n_bins: int = N_BINS,
    ) -> None:
        n, k = probs.shape
        self.names, self.k, self.n_bins = tuple(class_names), k, n_bins
        if len(self.names) != k:
            raise ValueError(f"{len(self.names)} class names for {k} probability columns")
        pred = probs.argmax(1)
        conf = probs.max(1)
        onehot = np.eye(k)[targets]
        rows = np.arange(n)
        # Feature columns: confusion cells | top-label bin gaps | bin counts | class-wise gaps.
        self._slices = np.cumsum([0, k * k, n_bins, n_bins, k * n_bins, 1, 1])
        feats = np.zeros((n, self._slices[-1]))
        s = self._slices
        feats[rows, targets * k + pred] = 1.0
        top_bin = bin_index(conf, n_bins)
        feats[rows, s[1] + top_bin] = (pred == targets) - conf
        feats[rows, s[2] + top_bin] = 1.0
        cls_cols = s[3] + np.arange(k) * n_bins + bin_index(probs, n_bins)  # (N, K)
        feats[rows[:, None], cls_cols] = onehot - probs
        feats[:, s[4]] = ((probs - onehot) ** 2).sum(1)
        feats[:, s[5]] = -np.log(np.maximum(probs[rows, targets], NLL_EPS))
        self._feats = feats
        self._roc = [self._roc_prep(probs[:, c], targets == c) for c in range(k)]
        self._mel = self.names.index("mel") if "mel" in self.names else None

    @staticmethod
    def _roc_prep(score: np.ndarray, is_pos: np.ndarray) -> dict | None:
        """Sort orders and tie-aware rank positions for one one-vs-rest problem."""
        pos, neg = np.flatnonzero(is_pos), np.flatnonzero(~is_pos)
        if pos.size == 0 or neg.size == 0:
            return None
        neg = neg[np.argsort(score[neg], kind="stable")]
        pos = pos[np.argsort(score[pos], kind="stable")]
        s_neg, s_pos = score[neg], score[pos]
        neg_lt = np.searchsorted(s_neg, s_pos, side="left")  # negatives scored below
        neg_le = np.searchsorted(s_neg, s_pos, side="right")  # ... below or tied
        return {
            "neg": neg,
            "pos": pos,
            "neg_lt": neg_lt,
            "neg_le": neg_le,
            "ties": bool(np.any(neg_lt != neg_le)),
            "pos_lt": np.searchsorted(s_pos, s_pos, side="left"),  # positives scored below
        }

    @staticmethod
    def _roc_batch(
        wt: np.ndarray, prep: dict | None, specs: Sequence[int]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Weighted AUROC (B,) and sensitivity at each specificity (B,) for one class.

        ``wt`` is the TRANSPOSED weight block (N, B): gathering samples then copies whole
        contiguous rows, several times faster than gathering columns of (B, N).
        """
        b = wt.shape[1]
        if prep is None:
            return np.full(b, np.nan), [np.full(b, np.nan) for _ in specs]
        acc = np.int64 if np.issubdtype(wt.dtype, np.integer) else np.float64
        neg_cum = np.empty((prep["neg"].size + 1, b), dtype=wt.dtype)
        neg_cum[0] = 0
        np.take(wt, prep["neg"], axis=0, out=neg_cum[1:])
        np.cumsum(neg_cum[1:], axis=0, out=neg_cum[1:])
        w_pos = wt[prep["pos"]]
        n_neg, n_pos = neg_cum[-1].astype(np.float64), w_pos.sum(0, dtype=acc).astype(np.float64)
        # Mann-Whitney: each positive beats the negatives below it and half of those tied.
        below = neg_cum[prep["neg_lt"]]
        beaten = (w_pos * below).sum(0, dtype=acc).astype(np.float64)
        if prep["ties"]:
            with_ties = (w_pos * neg_cum[prep["neg_le"]]).sum(0, dtype=acc)
            beaten = 0.5 * (beaten + with_ties)
        auroc = _divide(beaten, n_pos * n_neg, np.nan)
        sens = []
        if specs:
            # Thresholds at each positive score (call positive if score >= threshold).
            pos_cum = np.empty((w_pos.shape[0] + 1, b), dtype=wt.dtype)
            pos_cum[0] = 0
            np.cumsum(w_pos, axis=0, out=pos_cum[1:])
            tp = n_pos - pos_cum[prep["pos_lt"]]
            for spec in specs:
                ok = below >= (spec / 100 - _SPEC_TOL) * n_neg  # true negatives >= spec * N-
                sens.append(_divide(np.where(ok, tp, 0.0).max(0), n_pos, np.nan))
        return auroc, sens

    def compute(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """All metrics, each an array (B,), for sample weights ``w`` (B, N), integer or float."""
        w = np.atleast_2d(np.asarray(w))
        if not np.issubdtype(w.dtype, np.integer):
            w = w.astype(np.float64, copy=False)
        k, nb, s = self.k, self.n_bins, self._slices
        sums = w.astype(np.float64, copy=False) @ self._feats
        # Integer resample counts stay integer in the ROC part: exact and faster to move.
        wt = np.ascontiguousarray(w.T)
        total = w.sum(1, dtype=np.float64)
        out = {}
        scores = scores_from_confusion(sums[:, : s[1]].reshape(-1, k, k))
        for fam in ("precision", "recall", "f1", "support"):
            out.update({f"{fam}_{c}": scores[fam][:, i] for i, c in enumerate(self.names)})
        out.update({m: scores[m] for m in ("macro_f1", "balanced_accuracy", "accuracy")})
        aurocs = []
        for i, c in enumerate(self.names):
            specs = SPEC_LEVELS if i == self._mel else ()
            auroc, sens = self._roc_batch(wt, self._roc[i], specs)
            out[f"auroc_{c}"] = auroc
            aurocs.append(auroc)
            out.update(
                {f"mel_sensitivity_at_spec{sp}": v for sp, v in zip(specs, sens, strict=True)}
            )
        out["auroc_macro"] = nanmean(np.stack(aurocs, 1))
        gaps, counts = sums[:, s[1] : s[2]], sums[:, s[2] : s[3]]
        out["ece"] = np.abs(gaps).sum(1) / total
        out["mce"] = _divide(np.abs(gaps), counts, 0.0).max(1)  # empty bins count as 0
        cls_gaps = np.abs(sums[:, s[3] : s[4]].reshape(-1, k, nb)).sum(2)
        out["classwise_ece"] = cls_gaps.mean(1) / total
        out["brier"] = sums[:, s[4]] / total
        out["nll"] = sums[:, s[5]] / total
        return out


def resolve_class_names(num_classes: int, class_names: Sequence[str] | None) -> Sequence[str]:
    """``class_names`` if given, else ``CLASSES`` for 7 classes and "0".."K-1" otherwise."""
    if class_names is not None:
        return class_names
    return CLASSES if num_classes == NUM_CLASSES else [str(i) for i in range(num_classes)]


def point_metrics(
    probs: object,
    targets: object,
    num_classes: int = NUM_CLASSES,
    class_names: Sequence[str] | None = None,
    n_bins: int = N_BINS,
) -> dict[str, float]:
    """All metrics of ``probs`` (N, K) against ``targets`` (N,), flat keys without prefix.

    ``class_names`` defaults to ``CLASSES`` for 7 classes and to "0".."K-1" otherwise; the
    melanoma keys exist only when a class is named "mel".
    """
    p, t = check_probs(probs, targets, num_classes)
    engine = MetricEngine(p, t, resolve_class_names(num_classes, class_names), n_bins)
    return {key: float(v[0]) for key, v in engine.compute(np.ones((1, len(t)))).items()}
