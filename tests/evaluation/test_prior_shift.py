"""EM prior-shift correction (Saerens et al. 2002) on a model whose posteriors are exact: a known
mixture of class-conditional Gaussians sampled under a shifted class prior."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra.utils import instantiate
from scipy.special import logsumexp, softmax

from dermlit.config import compose_config
from dermlit.constants import CLASSES
from dermlit.evaluation.posthoc import ClassBias
from dermlit.evaluation.prior_shift import PriorEM, calibration_bias, em_prior
from dermlit.evaluation.settings import EvalSettings
from dermlit.rundir import SplitOutputs, write_evaluation

K = len(CLASSES)
SOURCE = np.asarray([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])  # HAM10000-like
TARGET = np.asarray([0.13, 0.10, 0.15, 0.02, 0.20, 0.38, 0.02])  # a rosendahl-like shift
MEANS = np.random.default_rng(0).normal(0, 3.0, size=(K, 2))


def sample(prior: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(log p(x | y) for every class, true labels): unit-variance 2-D Gaussians."""
    rng = np.random.default_rng(seed)
    y = rng.choice(K, size=n, p=prior)
    x = MEANS[y] + rng.normal(size=(n, 2))
    log_lik = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(-1)
    return log_lik, y


def posterior_logits(log_lik: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The Bayes posterior's log under ``prior``: a perfectly calibrated model."""
    z = log_lik + np.log(prior)
    return z - logsumexp(z, axis=1, keepdims=True)


def test_em_recovers_a_known_shifted_prior() -> None:
    log_lik, _ = sample(TARGET, 40_000, seed=1)
    prior, iters = em_prior(softmax(posterior_logits(log_lik, SOURCE), axis=1), SOURCE)
    np.testing.assert_allclose(prior, TARGET, atol=0.01)
    assert 1 < iters < 1000
    naive = softmax(posterior_logits(log_lik, SOURCE), axis=1).mean(0)
    assert np.abs(naive - TARGET).max() > 0.05  # the uncorrected mean posterior is off


def test_no_shift_stays_at_the_source_prior() -> None:
    log_lik, _ = sample(SOURCE, 40_000, seed=2)
    prior, _ = em_prior(softmax(posterior_logits(log_lik, SOURCE), axis=1), SOURCE)
    np.testing.assert_allclose(prior, SOURCE, atol=0.01)


def fitted_rule(model_prior: np.ndarray, calibrate: bool = True, decision=None) -> PriorEM:
    val_lik, val_y = sample(SOURCE, 20_000, seed=3)
    rule = PriorEM(calibrate=calibrate, decision=decision)
    counts = np.round(SOURCE * 10_000)
    return rule.fit(posterior_logits(val_lik, model_prior), val_y, counts)


def test_prior_em_rule_uses_no_test_labels_and_corrects_the_decision() -> None:
    rule = fitted_rule(SOURCE)
    np.testing.assert_allclose(rule.calib - rule.calib.mean(), 0, atol=0.2)  # ~calibrated
    test_lik, test_y = sample(TARGET, 40_000, seed=4)
    logits = posterior_logits(test_lik, SOURCE)
    rule.fit_target(logits)  # the signature takes no labels
    np.testing.assert_allclose(rule.target_prior, TARGET, atol=0.015)
    # the corrected posterior is the Bayes posterior under the TARGET prior
    gap = np.abs(softmax(rule(logits), axis=1) - softmax(posterior_logits(test_lik, TARGET), 1))
    uncorrected = np.abs(softmax(logits, 1) - softmax(posterior_logits(test_lik, TARGET), 1))
    assert gap.mean() < 0.005 < 0.02 < uncorrected.mean()
    acc_before = (logits.argmax(1) == test_y).mean()
    acc_after = (rule(logits).argmax(1) == test_y).mean()
    assert acc_after > acc_before + 0.005
    # validation (source data) gets the source-side rule only
    np.testing.assert_allclose(rule.source(logits), logits + rule.calib)


def test_calibration_makes_em_work_for_a_balanced_model() -> None:
    """A model trained class-balanced (posteriors under a UNIFORM prior): the validation-fitted
    calibration bias restores the source prior; Saerens' raw version with the train counts
    would mis-estimate."""
    uniform = np.full(K, 1 / K)
    test_lik, _ = sample(TARGET, 40_000, seed=5)
    logits = posterior_logits(test_lik, uniform)
    calibrated = fitted_rule(uniform).fit_target(logits)
    np.testing.assert_allclose(calibrated.target_prior, TARGET, atol=0.02)
    raw = fitted_rule(uniform, calibrate=False).fit_target(logits)
    assert np.abs(raw.target_prior - TARGET).max() > 0.05


def test_calibration_bias_matches_class_frequencies() -> None:
    lik, y = sample(SOURCE, 5000, seed=6)
    logits = posterior_logits(lik, np.full(K, 1 / K))
    bias = calibration_bias(logits, y)
    np.testing.assert_allclose(
        softmax(logits + bias, axis=1).mean(0), np.bincount(y) / len(y), atol=1e-5
    )


def test_write_evaluation_records_the_prior_and_never_reads_test_labels(tmp_path) -> None:
    val_lik, val_y = sample(SOURCE, 3000, seed=7)
    test_lik, test_y = sample(TARGET, 3000, seed=8)
    val = SplitOutputs([f"v{i}" for i in range(3000)], posterior_logits(val_lik, SOURCE), val_y)
    logits = posterior_logits(test_lik, SOURCE)
    settings = EvalSettings.defaults(n_resamples=20)
    results = []
    for name, targets in (("a", test_y), ("b", np.random.default_rng(0).permutation(test_y))):
        test = SplitOutputs([f"t{i}" for i in range(3000)], logits, targets)
        rule = instantiate(compose_config("train", ["posthoc=class_bias_prior_em"]).posthoc)
        assert isinstance(rule.decision, ClassBias) and rule.transductive
        write_evaluation(tmp_path / name, test, val=val, settings=settings, posthoc=rule)
        results.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    posthoc = [{k: v for k, v in m.items() if k.startswith("posthoc/")} for m in results]
    assert posthoc[0] == posthoc[1]  # shuffled test labels: the same fitted rule
    prior = np.asarray([posthoc[0][f"posthoc/target_prior_{c}"] for c in CLASSES])
    np.testing.assert_allclose(prior, TARGET, atol=0.04)
    assert "posthoc/decision_bias_mel" in posthoc[0] and "posthoc/bias_mel" in posthoc[0]
    report = (tmp_path / "a" / "report" / "report.md").read_text()
    assert "re-estimated from the 3000 UNLABELLED test predictions" in report


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_iter"):
        PriorEM(max_iter=0)
    with pytest.raises(ValueError, match="not another EM"):
        PriorEM(decision=PriorEM())
    with pytest.raises(ValueError, match="source prior must be positive"):
        em_prior(np.full((3, 2), 0.5), np.asarray([1.0, 0.0]))
