"""One split's full clinical evaluation: metrics with CIs, confusion, calibration before/after
temperature scaling, cost-based decisions and referral, as numbers and curves for the report.

The numeric pieces live in ``metrics``/``bootstrap``/``calibration``/``decisions``; this module
only decides which probabilities feed which piece and names the ``metrics.json`` keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from dermlit.constants import CLASS_TO_INDEX, CLASSES, MALIGNANT
from dermlit.evaluation.bootstrap import metrics_with_ci
from dermlit.evaluation.calibration import (
    NLL_EPS,
    ReliabilityCurve,
    apply_temperature,
    fit_temperature,
    reliability_curve,
)
from dermlit.evaluation.conformal import ConformalEvaluation, evaluate_conformal
from dermlit.evaluation.decisions import (
    SCORES,
    RiskCoverage,
    bayes_decisions,
    coverage_at_target,
    decision_summary,
    risk_coverage,
)
from dermlit.evaluation.settings import EvalSettings
from dermlit.evaluation.sources import SourceResult, source_metrics
from dermlit.evaluation.subgroups import SubgroupResult, subgroup_metrics

if TYPE_CHECKING:
    from dermlit.explain.review import ErrorExplanations

CALIBRATION = ("ece", "mce", "classwise_ece", "brier", "nll")
#: suffix of the calibration metrics after temperature scaling (``test/ece_ts``)
TS = "_ts"
DECISION_KEYS = (
    "mean_cost",
    "malignant_recall",
    "malignant_exact_recall",
    "benign_referral_rate",
    "referral_rate",
)


@dataclass
class Analysis:
    """Everything the report shows; ``metrics`` holds the flat ``metrics.json`` keys."""

    split: str
    n_images: int
    settings: EvalSettings
    metrics: dict[str, float | str | bool]  # numbers, plus the _ci_method / _ci_* flags
    n_labelled: int = 0
    confusion: np.ndarray | None = None  # counts [true, predicted]
    highlight: np.ndarray | None = None  # rare class called common
    temperature: float | None = None
    reliability: dict[str, ReliabilityCurve] = field(default_factory=dict)
    class_reliability: dict[str, list[ReliabilityCurve]] = field(default_factory=dict)
    risk_coverage: dict[str, RiskCoverage] = field(default_factory=dict)
    roc_mel: tuple[np.ndarray, np.ndarray] | None = None
    conformal: ConformalEvaluation | None = None
    subgroups: SubgroupResult | None = None
    sources: SourceResult | None = None  # per source (clinic, device) of source_column
    explanations: ErrorExplanations | None = None  # Grad-CAM of errors (weights needed)
    notes: list[str] = field(default_factory=list)

    def key(self, name: str) -> str:
        return f"{self.split}/{name}"

    def get(self, name: str) -> float | None:
        """A finite number, else None (undefined, absent, or a text key like ``_ci_method``)."""
        value = self.metrics.get(self.key(name))
        if isinstance(value, str) or value is None or not np.isfinite(value):
            return None
        return float(value)


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Logits equivalent to ``probs`` (softmax(log p) = p): temperature scaling from a CSV."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), NLL_EPS))


def rare_called_common(common: Sequence[str]) -> np.ndarray:
    """Boolean (K, K) mask ``[true, predicted]``: a class outside ``common`` called common."""
    is_common = np.isin(CLASSES, list(common))
    return ~is_common[:, None] & is_common[None, :]


def analyse(
    probs: np.ndarray,
    targets: np.ndarray,
    split: str = "test",
    settings: EvalSettings | None = None,
    logits: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    metadata: pd.DataFrame | None = None,
    source_column: str | None = None,
) -> Analysis:
    """Evaluate the labelled rows (``targets >= 0``) of one split.

    ``logits``: the model's logits for the rows (default: ``log(probs)``); ``val``: validation
    ``(logits, targets)`` on which the temperature and the conformal thresholds are fitted (no
    temperature scaling and no sets without); ``metadata``: one row per row of ``probs`` with
    the subgroup columns (age, sex, localization) that the source has, and its
    ``source_column`` (the site/clinic column the data source declares) for per-source metrics.
    """
    s = settings or EvalSettings.defaults()
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    labelled = targets >= 0
    out = Analysis(split, len(targets), s, {f"{split}/n_images": len(targets)})
    out.n_labelled = int(labelled.sum())
    if not labelled.any():
        out.notes.append("No labels: predictions only, every metric is skipped.")
        return out
    if not labelled.all():
        out.notes.append(f"Metrics on the {out.n_labelled} labelled of {len(targets)} images.")
    p, t = probs[labelled], targets[labelled]
    z = log_probs(p) if logits is None else np.asarray(logits, dtype=np.float64)[labelled]
    boot = {"n_resamples": s.n_resamples, "seed": s.seed, "alpha": s.alpha, "n_bins": s.n_bins}
    out.metrics.update(metrics_with_ci(p, t, prefix=f"{split}/", **boot))
    out.metrics[f"{split}/n_labelled"] = out.n_labelled
    add_confusion(out, p, t)
    decide = add_calibration(out, p, t, z, val, boot)
    add_decisions(out, p, t, decide)
    add_referral(out, t, decide)
    if metadata is not None and s.subgroup_columns:
        add_subgroups(out, probs, targets, metadata)
    add_sources(out, probs, targets, metadata, source_column)
    add_roc_mel(out, p, t)
    return out


def add_confusion(out: Analysis, p: np.ndarray, t: np.ndarray) -> None:
    """The confusion matrix, and the errors that hurt most in an imbalanced set: a rare class
    called common (``<split>/rare_called_common_rate``)."""
    common = out.settings.common_classes
    k = len(CLASSES)
    out.confusion = np.bincount(t * k + p.argmax(1), minlength=k * k).reshape(k, k)
    out.highlight = rare_called_common(common)
    rare_rows = ~np.isin(CLASSES, list(common))
    n_rare = out.confusion[rare_rows].sum()
    out.metrics[out.key("rare_called_common_rate")] = (
        float((out.confusion * out.highlight).sum() / n_rare) if n_rare else float("nan")
    )


def add_calibration(
    out: Analysis,
    p: np.ndarray,
    t: np.ndarray,
    z: np.ndarray,
    val: tuple[np.ndarray, np.ndarray] | None,
    boot: dict,
) -> np.ndarray:
    """Calibration before and after temperature scaling fitted on validation, and the conformal
    sets; returns the probabilities that decisions and referral use (temperature-scaled when
    possible)."""
    s, m, pred = out.settings, out.metrics, p.argmax(1)
    out.reliability["before"] = reliability_curve(p.max(1), pred == t, s.n_bins)
    out.class_reliability["before"] = _class_curves(p, t, s.n_bins)
    if val is None:
        out.notes.append(
            "No validation predictions: temperature scaling skipped; decisions and referral "
            "use the uncalibrated probabilities."
        )
        return p
    val_logits, val_targets = (np.asarray(a) for a in val)
    keep = val_targets >= 0
    if not keep.any():
        out.notes.append(
            "The validation predictions have no labels: temperature scaling and the conformal "
            "sets skipped; decisions and referral use the uncalibrated probabilities."
        )
        return p
    out.temperature = fit_temperature(val_logits[keep], val_targets[keep])
    decide = apply_temperature(z, out.temperature)
    m[out.key("temperature")] = out.temperature
    after = metrics_with_ci(decide, t, prefix="", **boot)
    for name in CALIBRATION:  # the value and all its interval keys (bootstrap.py)
        for key, value in after.items():
            if key == name or key.startswith(f"{name}_ci_"):
                m[out.key(f"{name}{TS}{key[len(name) :]}")] = value
    out.reliability["after"] = reliability_curve(decide.max(1), pred == t, s.n_bins)
    out.class_reliability["after"] = _class_curves(decide, t, s.n_bins)
    # conformal sets from the probabilities dermlit predict outputs (temperature-scaled),
    # calibrated on the validation split's, scaled alike
    val_probs = apply_temperature(val_logits[keep], out.temperature)
    out.conformal = evaluate_conformal(
        val_probs,
        val_targets[keep],
        decide,
        t,
        out.split,
        s.conformal_alpha,
        s.n_resamples,
        s.seed,
        s.alpha,
    )
    m.update(out.conformal.metrics)
    return decide


def add_decisions(out: Analysis, p: np.ndarray, t: np.ndarray, decide: np.ndarray) -> None:
    """Argmax vs minimum expected cost (Bayes) decisions from the calibrated probabilities."""
    cost = out.settings.cost.matrix
    for rule, decided in (("argmax", p.argmax(1)), ("bayes", bayes_decisions(decide, cost))):
        summary = decision_summary(decided, t, cost, CLASSES, MALIGNANT)
        out.metrics.update({out.key(f"{rule}_{key}"): summary[key] for key in DECISION_KEYS})


def add_referral(out: Analysis, t: np.ndarray, decide: np.ndarray) -> None:
    """Referral: defer the least confident / costliest cases; the coverage at each target."""
    s, m, cost = out.settings, out.metrics, out.settings.cost.matrix
    for score in SCORES:
        rc = risk_coverage(decide, t, score, cost)
        out.risk_coverage[score] = rc
        widths = np.diff(np.concatenate([[0.0], rc.coverage]))
        m[out.key(f"aurc_{score}")] = float((rc.risk * widths).sum())
        for metric, target in s.referral_targets.items():
            if metric == "mel_recall" and not (t == CLASS_TO_INDEX["mel"]).any():
                continue
            res = coverage_at_target(decide, t, float(target), metric, score, cost, CLASSES)
            m[out.key(f"referral_{score}_coverage_for_{metric}")] = res["coverage"]
            m[out.key(f"referral_{score}_threshold_for_{metric}")] = res["threshold"]


def add_subgroups(
    out: Analysis, probs: np.ndarray, targets: np.ndarray, metadata: pd.DataFrame
) -> None:
    """Metrics per subgroup of the metadata columns (all rows: the unlabelled ones are left
    out inside)."""
    s = out.settings
    out.subgroups = subgroup_metrics(
        probs,
        targets,
        metadata.reset_index(drop=True),
        out.split,
        s.subgroup_columns,
        min_size=s.subgroup_min_size,
        n_resamples=s.n_resamples,
        seed=s.seed,
        ci_alpha=s.alpha,
    )
    out.metrics.update(out.subgroups.metrics)


def add_sources(
    out: Analysis,
    probs: np.ndarray,
    targets: np.ndarray,
    metadata: pd.DataFrame | None,
    column: str | None,
) -> None:
    """Metrics per source of the data source's ``source_column``; without one, a note (once)."""
    if column is None or metadata is None or column not in metadata.columns:
        why = (
            "the data source declares no source column (source_column)"
            if column is None
            else f"no per-image {column!r} column came with these predictions"
        )
        out.notes.append(f"No per-source metrics: {why}.")
        return
    s = out.settings
    out.sources = source_metrics(
        probs,
        targets,
        metadata[column].reset_index(drop=True),
        column,
        out.split,
        min_size=s.subgroup_min_size,
        n_resamples=s.n_resamples,
        seed=s.seed,
        ci_alpha=s.alpha,
    )
    out.metrics.update(out.sources.metrics)


def add_roc_mel(out: Analysis, p: np.ndarray, t: np.ndarray) -> None:
    """Melanoma-vs-rest ROC curve, where both sides are present."""
    mel = t == CLASS_TO_INDEX["mel"]
    if mel.any() and not mel.all():
        fpr, tpr, _ = roc_curve(mel, p[:, CLASS_TO_INDEX["mel"]])
        out.roc_mel = (fpr, tpr)


def _class_curves(p: np.ndarray, t: np.ndarray, n_bins: int) -> list[ReliabilityCurve]:
    """Per class: P(class) binned against how often the class is the truth (class-wise ECE)."""
    return [reliability_curve(p[:, c], t == c, n_bins) for c in range(p.shape[1])]
