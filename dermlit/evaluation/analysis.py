"""One split's full clinical evaluation: metrics with CIs, confusion, calibration before/after
temperature scaling, cost-based decisions and referral, as numbers and curves for the report.

The numeric pieces live in ``metrics``/``bootstrap``/``calibration``/``decisions``; this module
only decides which probabilities feed which piece and names the ``metrics.json`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from sklearn.metrics import roc_curve

from dermlit.config import CONF_DIR
from dermlit.constants import CLASS_TO_INDEX, CLASSES, MALIGNANT
from dermlit.evaluation.bootstrap import metrics_with_ci
from dermlit.evaluation.calibration import (
    N_BINS,
    NLL_EPS,
    ReliabilityCurve,
    apply_temperature,
    fit_temperature,
    reliability_curve,
)
from dermlit.evaluation.conformal import DEFAULT_ALPHA, ConformalEvaluation, evaluate_conformal
from dermlit.evaluation.decisions import (
    SCORES,
    TARGET_METRICS,
    RiskCoverage,
    bayes_decisions,
    coverage_at_target,
    decision_summary,
    risk_coverage,
)
from dermlit.evaluation.subgroups import DEFAULT_COLUMNS as SUBGROUP_COLUMNS
from dermlit.evaluation.subgroups import MIN_SIZE, SubgroupResult, subgroup_metrics

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


@dataclass(frozen=True)
class CostMatrix:
    """``matrix[true, decided]`` in ``CLASSES`` order."""

    name: str
    matrix: np.ndarray

    @classmethod
    def from_config(cls, node: Mapping) -> CostMatrix:
        """From ``conf/evaluation/cost/*.yaml``: ``name``, ``classes`` and a square ``matrix``
        whose rows/columns follow ``classes`` (reordered here into ``CLASSES`` order)."""
        classes = list(node.get("classes", CLASSES))
        if sorted(classes) != sorted(CLASSES):
            raise ValueError(f"cost classes must be a permutation of {list(CLASSES)}: {classes}")
        m = np.asarray([list(row) for row in node["matrix"]], dtype=np.float64)
        if m.shape != (len(CLASSES), len(CLASSES)):
            raise ValueError(f"cost matrix {node.get('name')!r} must be 7x7, got {m.shape}")
        if np.any(np.diag(m) != 0) or np.any(m < 0):
            raise ValueError(f"cost matrix {node.get('name')!r}: need a zero diagonal, costs >= 0")
        order = [classes.index(c) for c in CLASSES]
        return cls(str(node.get("name", "custom")), m[np.ix_(order, order)])


def load_cost(name: str) -> CostMatrix:
    """A cost matrix of ``conf/evaluation/cost/`` by name (the defaults outside Hydra)."""
    path = CONF_DIR / "evaluation" / "cost" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no cost matrix {name!r} in {path.parent}; known: {known}")
    return CostMatrix.from_config(OmegaConf.load(path))


@dataclass(frozen=True)
class EvalSettings:
    """What ``conf/evaluation/`` configures, with the same defaults."""

    cost: CostMatrix = field(default_factory=lambda: load_cost("clinical"))
    common_classes: tuple[str, ...] = ("nv",)
    referral_targets: Mapping[str, float] = field(
        default_factory=lambda: {"macro_f1": 0.8, "mel_recall": 0.9}
    )
    n_resamples: int = 1000
    seed: int = 0
    alpha: float = 0.05
    n_bins: int = N_BINS
    #: miscoverage of the conformal sets (evaluation.conformal.alpha)
    conformal_alpha: float = DEFAULT_ALPHA
    #: metadata columns measured per subgroup, and the size below which a group is flagged
    subgroup_columns: tuple[str, ...] = SUBGROUP_COLUMNS
    subgroup_min_size: int = MIN_SIZE

    @classmethod
    def from_config(
        cls, node: Mapping | None, n_resamples: int = 1000, seed: int = 0
    ) -> EvalSettings:
        """``node`` is the ``evaluation`` config (None: the defaults, i.e. the clinical cost)."""
        if node is None:
            return cls(n_resamples=n_resamples, seed=seed)
        unknown = set(node.get("common_classes", ())) - set(CLASSES)
        targets = dict(node.get("referral_targets", {}))
        subgroups = node.get("subgroups") or {}
        bad_targets = set(targets) - set(TARGET_METRICS)
        if unknown or bad_targets:
            raise ValueError(
                f"evaluation: unknown common_classes {sorted(unknown)} or referral_targets "
                f"{sorted(bad_targets)} (known: {list(CLASSES)}, {list(TARGET_METRICS)})"
            )
        return cls(
            cost=CostMatrix.from_config(node["cost"]),
            common_classes=tuple(node.get("common_classes", ("nv",))),
            referral_targets=targets,
            n_resamples=n_resamples,
            seed=seed,
            alpha=float(node.get("alpha", 0.05)),
            n_bins=int(node.get("n_bins", N_BINS)),
            conformal_alpha=float((node.get("conformal") or {}).get("alpha", DEFAULT_ALPHA)),
            subgroup_columns=tuple(subgroups.get("columns", SUBGROUP_COLUMNS)),
            subgroup_min_size=int(subgroups.get("min_size", MIN_SIZE)),
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
) -> Analysis:
    """Evaluate the labelled rows (``targets >= 0``) of one split.

    ``logits``: the model's logits for the rows (default: ``log(probs)``); ``val``: validation
    ``(logits, targets)`` on which the temperature and the conformal thresholds are fitted (no
    temperature scaling and no sets without); ``metadata``: one row per row of ``probs`` with
    the subgroup columns (age, sex, localization) that the source has.
    """
    s = settings or EvalSettings()
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
    m = out.metrics
    m.update(metrics_with_ci(p, t, prefix=f"{split}/", **boot))
    m[f"{split}/n_labelled"] = out.n_labelled

    # confusion, and the errors that hurt most in an imbalanced set: rare called common
    pred = p.argmax(1)
    k = len(CLASSES)
    out.confusion = np.bincount(t * k + pred, minlength=k * k).reshape(k, k)
    out.highlight = rare_called_common(s.common_classes)
    rare_rows = ~np.isin(CLASSES, list(s.common_classes))
    n_rare = out.confusion[rare_rows].sum()
    m[f"{split}/rare_called_common_rate"] = (
        float((out.confusion * out.highlight).sum() / n_rare) if n_rare else float("nan")
    )

    # calibration before and after temperature scaling fitted on validation
    out.reliability["before"] = reliability_curve(p.max(1), pred == t, s.n_bins)
    out.class_reliability["before"] = _class_curves(p, t, s.n_bins)
    decide = p
    if val is not None:
        val_logits, val_targets = (np.asarray(a) for a in val)
        keep = val_targets >= 0
        out.temperature = fit_temperature(val_logits[keep], val_targets[keep])
        decide = apply_temperature(z, out.temperature)
        m[f"{split}/temperature"] = out.temperature
        after = metrics_with_ci(decide, t, prefix="", **boot)
        for name in CALIBRATION:  # the value and all its interval keys (bootstrap.py)
            for key, value in after.items():
                if key == name or key.startswith(f"{name}_ci_"):
                    m[f"{split}/{name}{TS}{key[len(name) :]}"] = value
        out.reliability["after"] = reliability_curve(decide.max(1), pred == t, s.n_bins)
        out.class_reliability["after"] = _class_curves(decide, t, s.n_bins)
        # conformal sets from the probabilities dermlit predict outputs (temperature-scaled),
        # calibrated on the validation split's, scaled alike
        if keep.any():
            val_probs = apply_temperature(val_logits[keep], out.temperature)
            out.conformal = evaluate_conformal(
                val_probs,
                val_targets[keep],
                decide,
                t,
                split,
                s.conformal_alpha,
                s.n_resamples,
                s.seed,
                s.alpha,
            )
            m.update(out.conformal.metrics)
    else:
        out.notes.append(
            "No validation predictions: temperature scaling skipped; decisions and referral "
            "use the uncalibrated probabilities."
        )

    # decisions: argmax vs minimum expected cost (Bayes) from the calibrated probabilities
    cost = s.cost.matrix
    for rule, decided in (("argmax", pred), ("bayes", bayes_decisions(decide, cost))):
        summary = decision_summary(decided, t, cost, CLASSES, MALIGNANT)
        m.update({f"{split}/{rule}_{key}": summary[key] for key in DECISION_KEYS})

    # referral: defer the least confident / costliest cases
    for score in SCORES:
        rc = risk_coverage(decide, t, score, cost)
        out.risk_coverage[score] = rc
        widths = np.diff(np.concatenate([[0.0], rc.coverage]))
        m[f"{split}/aurc_{score}"] = float((rc.risk * widths).sum())
        for metric, target in s.referral_targets.items():
            if metric == "mel_recall" and not (t == CLASS_TO_INDEX["mel"]).any():
                continue
            res = coverage_at_target(decide, t, float(target), metric, score, cost, CLASSES)
            m[f"{split}/referral_{score}_coverage_for_{metric}"] = res["coverage"]
            m[f"{split}/referral_{score}_threshold_for_{metric}"] = res["threshold"]

    if metadata is not None and s.subgroup_columns:
        out.subgroups = subgroup_metrics(
            probs,
            targets,
            metadata.reset_index(drop=True),
            split,
            s.subgroup_columns,
            min_size=s.subgroup_min_size,
            n_resamples=s.n_resamples,
            seed=s.seed,
            ci_alpha=s.alpha,
        )
        m.update(out.subgroups.metrics)

    mel = t == CLASS_TO_INDEX["mel"]
    if mel.any() and not mel.all():
        fpr, tpr, _ = roc_curve(mel, p[:, CLASS_TO_INDEX["mel"]])
        out.roc_mel = (fpr, tpr)
    return out


def _class_curves(p: np.ndarray, t: np.ndarray, n_bins: int) -> list[ReliabilityCurve]:
    """Per class: P(class) binned against how often the class is the truth (class-wise ECE)."""
    return [reliability_curve(p[:, c], t == c, n_bins) for c in range(p.shape[1])]
