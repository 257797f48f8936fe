"""Clinical evaluation: metrics with whole-set bootstrap CIs, calibration, cost-based decisions.

Pure numpy/scipy functions on predicted probabilities (N, 7) and integer targets (N,) in the
fixed class order of ``dermlit.constants.CLASSES``; no Lightning here.
"""

from dermlit.evaluation.bootstrap import (
    COMPARED_METRICS,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_intervals,
    mcnemar,
    metrics_with_ci,
    paired_bootstrap,
)
from dermlit.evaluation.calibration import (
    apply_temperature,
    fit_temperature,
    reliability_curve,
)
from dermlit.evaluation.decisions import (
    bayes_decisions,
    coverage_at_target,
    decision_summary,
    expected_cost,
    malignancy_cost_matrix,
    risk_coverage,
)
from dermlit.evaluation.metrics import higher_is_better, point_metrics

__all__ = [
    "COMPARED_METRICS",
    "apply_temperature",
    "bayes_decisions",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_intervals",
    "coverage_at_target",
    "decision_summary",
    "expected_cost",
    "fit_temperature",
    "higher_is_better",
    "malignancy_cost_matrix",
    "mcnemar",
    "metrics_with_ci",
    "paired_bootstrap",
    "point_metrics",
    "reliability_curve",
    "risk_coverage",
]
