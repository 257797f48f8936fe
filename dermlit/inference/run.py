"""What a trained run decides with, read back from its run directory (docs/design.md contract).

``dermlit predict`` and ``dermlit export`` apply a run exactly as its evaluation did: the
post-hoc logit bias (``metrics.json`` ``posthoc/*``), the temperature (``test/temperature``,
fitted on the validation split), the cost matrix and referral targets of its ``evaluation``
config, and conformal thresholds fitted on its ``val_predictions.csv`` (the validation
probabilities after the post-hoc rule; the temperature is applied here, as the sets of
``analysis.analyse`` are built from the temperature-scaled probabilities).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dermlit.constants import CLASSES
from dermlit.errors import InputError
from dermlit.evaluation.analysis import log_probs
from dermlit.evaluation.calibration import apply_temperature
from dermlit.evaluation.conformal import ConformalThresholds, fit_conformal
from dermlit.evaluation.predictions import read_predictions
from dermlit.evaluation.settings import EvalSettings
from dermlit.export.onnx import config_hash


def read_run_config(run_dir: Path) -> DictConfig:
    path = run_dir / ".hydra" / "resolved.yaml"
    if not path.is_file():
        raise InputError(f"{run_dir} is not a dermlit run directory: {path} is missing")
    return OmegaConf.load(path)


def run_config_hash(cfg: DictConfig) -> str:
    """The hash ``dermlit export`` writes into the ONNX metadata and ``--onnx`` checks."""
    return config_hash(OmegaConf.to_container(cfg, resolve=True))


def train_counts(run_dir: Path) -> np.ndarray | None:
    from dermlit.evaluation.class_counts import train_class_counts  # the post-hoc prior

    counts = train_class_counts(run_dir / "splits.csv")
    return None if counts is None else np.asarray(counts, dtype=np.float64)


def posthoc_bias(metrics: Mapping, run_dir: Path) -> np.ndarray:
    """The fitted logit bias of ``evaluation/posthoc.py``: ``posthoc/bias_<class>``
    (ClassBias), ``-tau * log(train prior)`` from ``posthoc/tau`` (LogitAdjustment), else 0."""
    bias_keys = [f"posthoc/bias_{c}" for c in CLASSES]
    if all(k in metrics for k in bias_keys):
        return np.asarray([float(metrics[k]) for k in bias_keys])
    if "posthoc/tau" in metrics:
        counts = train_counts(run_dir)
        if counts is None or (counts <= 0).any():
            raise InputError(
                f"{run_dir}: posthoc/tau needs the TRAIN class counts from splits.csv or "
                f"class_counts.json (missing or a class without images: {counts})"
            )
        return -float(metrics["posthoc/tau"]) * np.log(counts / counts.sum())
    unknown = [k for k in metrics if k.startswith("posthoc/")]
    if unknown:
        raise InputError(f"{run_dir}/metrics.json: unknown post-hoc rule keys {unknown}")
    return np.zeros(len(CLASSES))


@dataclass(frozen=True)
class ReferralRule:
    """Refer a case whose ``score`` is past the validation threshold of any target.

    ``thresholds``: target name (``mel_recall >= 0.9``) -> threshold in the score's units;
    NaN where validation reached the target at no coverage (every case is then referred).
    """

    score: str
    thresholds: dict[str, float]

    #: per score, how a case is past a threshold (``refer_if`` of :meth:`to_dict`)
    REFER_IF = {"confidence": "<", "expected_cost": ">"}

    def to_dict(self) -> dict:
        """The rule as JSON (``dermlit.referral`` of an ONNX export; NaN thresholds as null)."""
        if self.score not in self.REFER_IF:
            raise ValueError(
                f"referral score must be one of {sorted(self.REFER_IF)}: {self.score!r}"
            )
        targets = []
        for target, threshold in self.thresholds.items():
            value = float(threshold)
            if math.isinf(value):
                raise ValueError(f"referral threshold for {target!r} is infinite")
            targets.append(
                {"target": str(target), "threshold": None if math.isnan(value) else value}
            )
        return {"score": self.score, "refer_if": self.REFER_IF[self.score], "targets": targets}

    @classmethod
    def from_dict(cls, data: Mapping) -> ReferralRule:
        """:meth:`to_dict`'s inverse (null thresholds -> NaN)."""
        thresholds = {
            t["target"]: math.nan if t["threshold"] is None else float(t["threshold"])
            for t in data["targets"]
        }
        return cls(str(data["score"]), thresholds)

    def refer(self, probs: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, list[str]]:
        p = np.asarray(probs, dtype=np.float64)
        if self.score == "confidence":
            value, worse, unit = p.max(1), np.less, "confidence {v:.3f} < {t:.3f}"
        else:
            value, worse, unit = (p @ cost).min(1), np.greater, "expected cost {v:.3f} > {t:.3f}"
        reasons: list[list[str]] = [[] for _ in range(len(p))]
        for target, threshold in self.thresholds.items():
            if not math.isfinite(threshold):
                for r in reasons:
                    r.append(f"{target} is not reached on validation at any coverage")
                continue
            for i in np.flatnonzero(worse(value, threshold)):
                reasons[i].append(
                    unit.format(v=value[i], t=threshold) + f" (threshold for {target})"
                )
        return np.asarray([bool(r) for r in reasons]), ["; ".join(r) for r in reasons]


@dataclass(frozen=True)
class RunDecisions:
    """Everything between a run's calibrated probabilities and the clinical columns."""

    run_dir: Path
    config: DictConfig
    config_hash: str
    image_size: int
    mean: list[float]
    std: list[float]
    temperature: float
    logit_bias: np.ndarray
    settings: EvalSettings
    conformal: ConformalThresholds
    referral: ReferralRule


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise InputError(f"{run_dir} has no metrics.json: the run has not finished its test")
    return json.loads(path.read_text())


def calibrated_validation(run_dir: Path, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """val_predictions.csv's labelled rows, temperature-scaled like the test probabilities."""
    path = run_dir / "val_predictions.csv"
    if not path.is_file():
        raise InputError(
            f"{run_dir} has no val_predictions.csv: the conformal sets and the referral "
            "thresholds are fitted on the validation predictions"
        )
    _, probs, targets = read_predictions(path)
    keep = targets >= 0
    return apply_temperature(log_probs(probs[keep]), temperature), targets[keep]


def referral_rule(
    val_probs: np.ndarray, val_targets: np.ndarray, settings: EvalSettings, score: str
) -> ReferralRule:
    from dermlit.evaluation.decisions import SCORES, coverage_at_target

    if score not in SCORES:
        raise InputError(f"evaluation.referral_score must be one of {SCORES}, got {score!r}")
    thresholds = {}
    for metric, target in settings.referral_targets.items():
        fit = coverage_at_target(
            val_probs, val_targets, float(target), metric, score, settings.cost.matrix, CLASSES
        )
        thresholds[f"{metric} >= {float(target):g}"] = fit["threshold"]
    return ReferralRule(score, thresholds)


def load_decisions(run_dir: str | Path) -> RunDecisions:
    """The run's decision data (no weights: the ONNX path needs none)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    metrics = read_metrics(run_dir)
    temperature = metrics.get("test/temperature")
    temperature = float(temperature) if temperature else 1.0
    evaluation = (
        OmegaConf.to_container(cfg.get("evaluation"), resolve=True)
        if cfg.get("evaluation")
        else None
    )
    settings = EvalSettings.from_config(evaluation, int(cfg.get("bootstrap_resamples", 1000)))
    val_probs, val_targets = calibrated_validation(run_dir, temperature)
    score = settings.referral_score  # a run written before it existed: the default
    return RunDecisions(
        run_dir=run_dir,
        config=cfg,
        config_hash=run_config_hash(cfg),
        image_size=int(cfg.data.image_size),
        mean=[float(m) for m in cfg.data.mean],
        std=[float(s) for s in cfg.data.std],
        temperature=temperature,
        logit_bias=posthoc_bias(metrics, run_dir),
        settings=settings,
        conformal=fit_conformal(val_probs, val_targets, settings.conformal_alpha),
        referral=referral_rule(val_probs, val_targets, settings, score),
    )
