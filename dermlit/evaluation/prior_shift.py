"""Prior-shift correction: re-estimate the TARGET class prior from unlabelled test predictions.

A model's posteriors carry the class mix it was trained on. At another clinic the mix differs
(HAM10000's ``vidir_molemax`` is 94 % nv, ``rosendahl`` holds 90 % of the akiec), and a decision
tuned to the source's mix (the validation-fitted class bias) is then tuned to the wrong one.
Saerens, Latinne & Decaestecker (2002, Neural Computation) estimate the target prior by EM on the
unlabelled target posteriors: E-step ``q_i(y) ∝ p_s(y|x_i) pi_t(y) / pi_s(y)``, M-step
``pi_t = mean_i q_i``, and the corrected posterior is ``p_s(y|x) pi_t(y) / pi_s(y)``, i.e. the
logits plus ``log(pi_t / pi_s)``.

EM needs posteriors calibrated to a KNOWN source prior. A model trained with a re-weighted loss
or a class-balanced sampler is not calibrated to the train frequencies, so by default
(``calibrate=True``) a per-class logit bias is first fitted on VALIDATION by maximum likelihood
(bias-corrected calibration, Alexandari et al. 2020, ICML, without the temperature): at its
optimum the mean validation posterior equals validation's class frequencies exactly, which is
then ``pi_s``. ``calibrate=False`` is Saerens' original: the raw posteriors and the TRAIN
frequencies.

The rule is TRANSDUCTIVE (``transductive = True``): ``fit`` uses the labelled validation split
(source side), ``fit_target(test_logits)`` the unlabelled test logits; it never receives test
labels. Validation is adjusted with the source-side part only (it is source data), the test
split with the target prior as well. ``decision``: another rule (e.g. the class bias) fitted
on validation on top of the calibrated logits, then applied on top of the prior-corrected ones.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from dermlit.constants import CLASSES
from dermlit.evaluation.posthoc import DecisionAdjustment

#: a class prior below this is clipped before its log (EM can drive an absent class to 0)
PRIOR_FLOOR = 1e-8


def em_prior(
    probs: np.ndarray, source_prior: np.ndarray, tol: float = 1e-8, max_iter: int = 1000
) -> tuple[np.ndarray, int]:
    """Saerens et al.'s EM: the target prior of the unlabelled ``probs`` (N, K) whose model was
    calibrated to ``source_prior``; returns (prior, iterations run)."""
    p = np.asarray(probs, dtype=np.float64)
    pi_s = np.asarray(source_prior, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(pi_s) or not len(p):
        raise ValueError(f"probs must be (N, {len(pi_s)}) with N > 0, got {p.shape}")
    if (pi_s <= 0).any():
        raise ValueError(f"the source prior must be positive for every class: {pi_s}")
    pi_t = pi_s.copy()
    for it in range(1, max_iter + 1):
        q = p * (pi_t / pi_s)
        q /= q.sum(1, keepdims=True)
        new = q.mean(0)
        if np.abs(new - pi_t).max() < tol:
            return new, it
        pi_t = new
    return pi_t, max_iter


def calibration_bias(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The per-class bias minimising the mean NLL of ``softmax(logits + b)`` (convex; b[0] = 0
    fixes the free shift)."""
    k = logits.shape[1]
    onehot = np.eye(k)[targets]

    def nll(free: np.ndarray) -> tuple[float, np.ndarray]:
        b = np.concatenate([[0.0], free])
        logp = log_softmax(logits + b, axis=1)
        grad = np.exp(logp).mean(0) - onehot.mean(0)
        return -float((onehot * logp).sum(1).mean()), grad[1:]

    result = minimize(nll, np.zeros(k - 1), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    return np.concatenate([[0.0], result.x])


class PriorEM(DecisionAdjustment):
    """Target-prior re-estimation by EM (Saerens et al. 2002), optionally with a validation-fitted
    ``decision`` rule on top. ``params()``: ``source_prior_<c>``, ``target_prior_<c>`` (the
    estimate), ``em_iterations``, ``calibration_bias_<c>``, the decision's as ``decision_*``, and
    ``bias_<c>``: the total logit bias applied to the test split (what ``dermlit predict``
    applies; the prior is the run's TEST set's: re-estimate at a new site with
    ``dermlit-eval ... posthoc=prior_em``)."""

    fitted_on_validation = True
    transductive = True

    def __init__(
        self,
        calibrate: bool = True,
        decision: DecisionAdjustment | None = None,
        tol: float = 1e-8,
        max_iter: int = 1000,
        objective: str = "macro_f1",
    ) -> None:
        super().__init__(objective)
        if max_iter < 1 or not tol > 0:
            raise ValueError(f"posthoc.max_iter must be >= 1 and tol > 0: {max_iter}, {tol}")
        if decision is not None and getattr(decision, "transductive", False):
            raise ValueError("posthoc.decision must be a validation-fitted rule, not another EM")
        self.calibrate, self.decision = bool(calibrate), decision
        self.tol, self.max_iter = float(tol), int(max_iter)
        k = len(CLASSES)
        self.source_bias = np.zeros(k)  # calibration + decision: what validation gets
        self.calib = np.zeros(k)
        self.source_prior = np.full(k, 1.0 / k)
        self.target_prior: np.ndarray | None = None
        self.iterations = 0

    def _fit(self, logits, targets, class_counts) -> None:
        k = logits.shape[1]
        if self.calibrate:
            self.calib = calibration_bias(logits, targets)
            self.source_prior = np.bincount(targets, minlength=k) / len(targets)
        else:
            if class_counts is None:
                raise ValueError("posthoc=prior_em with calibrate=false needs the TRAIN counts")
            counts = np.asarray(class_counts, dtype=np.float64)
            self.calib = np.zeros(k)
            self.source_prior = counts / counts.sum()
        if (self.source_prior <= 0).any():
            empty = [c for c, p in zip(CLASSES, self.source_prior, strict=False) if p <= 0]
            raise ValueError(f"posthoc=prior_em: no source images of class(es) {empty}")
        decision = np.zeros(k)
        if self.decision is not None:
            self.decision.fit(logits + self.calib, targets, class_counts)
            decision = self.decision.bias
        self.source_bias = self.calib + decision
        self.bias = self.source_bias.copy()  # until fit_target: the source-side rule

    def fit_target(self, logits: np.ndarray) -> PriorEM:
        """Estimate the target prior from UNLABELLED logits (no targets are taken)."""
        z = np.asarray(logits, dtype=np.float64) + self.calib
        self.target_prior, self.iterations = em_prior(
            softmax(z, axis=1), self.source_prior, self.tol, self.max_iter
        )
        shift = np.log(np.maximum(self.target_prior, PRIOR_FLOOR) / self.source_prior)
        self.bias = self.source_bias + shift
        return self

    def source(self, logits: np.ndarray) -> np.ndarray:
        """The source-side rule (validation: calibration + decision, no prior shift)."""
        return np.asarray(logits, dtype=np.float64) + self.source_bias

    def params(self) -> dict[str, float]:
        out: dict[str, float] = {"em_iterations": float(self.iterations)}
        for name, values in (
            ("source_prior", self.source_prior),
            ("target_prior", self.target_prior),
            ("calibration_bias", self.calib),
            ("bias", self.bias),
        ):
            if values is not None:
                out.update({f"{name}_{c}": float(v) for c, v in zip(CLASSES, values, strict=False)})
        if self.decision is not None:
            out.update({f"decision_{k}": v for k, v in self.decision.params().items()})
        return out


def prior_shift_note(rule: PriorEM, n_images: int) -> str:
    """One report line: what was estimated from which images."""
    assert rule.target_prior is not None, "fit_target first"
    prior = ", ".join(f"{c} {p:.3f}" for c, p in zip(CLASSES, rule.target_prior, strict=False))
    return (
        f"Prior-shift correction (EM, Saerens et al. 2002): the target class prior was "
        f"re-estimated from the {n_images} UNLABELLED test predictions in {rule.iterations} "
        f"iterations ({prior}; source prior from "
        f"{'validation after calibration' if rule.calibrate else 'the train split'}); test "
        f"logits += log(target prior / source prior). Validation keeps the source-side rule."
    )
