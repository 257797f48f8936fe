"""Fault: a bootstrap interval that excludes its own estimate (issue 13, item 12), e.g. a
``make train`` report showing ``mce 0.206 [0.209, 0.688]``.

Every interval written to a real ``metrics.json`` (end-to-end ``write_evaluation`` on synthetic
predictions built to be miscalibrated, and a well calibrated model whose calibration errors are
mostly noise) must contain its estimate, or be omitted and flagged ``_ci_biased``; the same for
paired differences. The chosen methods must cover a known population value at about the nominal
rate where they report an interval (the simulation of ``dermlit/evaluation/intervals.py``, small).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dermlit.constants import CLASSES
from dermlit.evaluation.bootstrap import bootstrap_distribution, metrics_with_ci, paired_bootstrap
from dermlit.evaluation.metrics import MetricEngine, point_metrics
from dermlit.evaluation.settings import EvalSettings
from dermlit.rundir import SplitOutputs, print_summary, write_evaluation

K = len(CLASSES)
PRIOR = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])


def top_label_probs(conf: np.ndarray, pred: np.ndarray) -> np.ndarray:
    p = np.tile(((1 - conf) / (K - 1))[:, None], (1, K))
    p[np.arange(len(pred)), pred] = conf
    return p


def gap_model(n: int, gap: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose top-label accuracy is its confidence minus ``gap`` in every bin, so
    the population ECE is ``gap`` exactly (0: perfectly calibrated)."""
    t = rng.choice(K, n, p=PRIOR)
    conf = rng.uniform(0.35 + gap, 0.95, n)
    right = rng.uniform(size=n) < conf - gap
    pred = np.where(right, t, (t + rng.integers(1, K, n)) % K)
    return top_label_probs(conf, pred), t


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.choice(K, n, p=PRIOR)
    z = rng.normal(size=(n, K))
    z[np.arange(n), t] += 1.5
    return z * 4.0, t


def outputs(logits: np.ndarray, targets: np.ndarray, tag: str) -> SplitOutputs:
    return SplitOutputs([f"{tag}_{i:05d}" for i in range(len(targets))], logits, targets)


def intervals(metrics: dict) -> dict[str, tuple]:
    """Every metric with interval keys: (estimate, low, high, biased flag)."""
    out = {}
    for key in metrics:
        if key.endswith("_ci_low"):
            base = key.removesuffix("_ci_low")
            flag = metrics.get(f"{base}_ci_biased", False)
            out[base] = (metrics[base], metrics[key], metrics[f"{base}_ci_high"], flag)
    return out


def assert_no_contradiction(metrics: dict) -> list[str]:
    """Reported intervals contain their estimate; omitted ones are flagged. Returns the
    flagged keys."""
    flagged = []
    for key, (value, low, high, biased) in intervals(metrics).items():
        if low is None or high is None:
            assert value is None or biased, f"{key}: interval missing without a reason"
            flagged += [key] if biased else []
            continue
        assert not biased, f"{key}: flagged biased but an interval is reported"
        tol = 1e-12 * max(1.0, abs(value))
        assert low - tol <= value <= high + tol, f"{key} = {value} outside [{low}, {high}]"
    return flagged


def calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    p, t = gap_model(n, 0.0, np.random.default_rng(seed))
    return np.log(p), t  # logits whose softmax is p


CASES = {
    # name: (test logits and targets, validation ones or None)
    "overconfident, temperature-scaled": lambda: (overconfident(600, 0), overconfident(400, 1)),
    "well calibrated (errors mostly noise)": lambda: (calibrated(800, 2), None),
    "small test set": lambda: (overconfident(90, 3), overconfident(300, 4)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_no_interval_in_a_real_metrics_json_excludes_its_estimate(name, tmp_path, capsys):
    (z, t), val = CASES[name]()
    settings = EvalSettings.defaults(n_resamples=400)
    val_out = None if val is None else outputs(*val, "val")
    write_evaluation(tmp_path, outputs(z, t, "test"), val=val_out, settings=settings)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    flagged = assert_no_contradiction(metrics)
    assert "test/mce" in flagged  # the maximum over bins never gets an interval
    assert metrics["test/mce_ci_method"] == "none"
    assert metrics["test/accuracy_ci_method"] == "percentile"
    assert metrics["test/macro_f1_ci_method"] == "bca"
    report = (tmp_path / "report" / "report.md").read_text()
    assert "no CI (biased bootstrap)" in report  # the mce row says why it has no interval
    print_summary(metrics, "test", tmp_path)
    printed = capsys.readouterr().out
    for key in ("test/ece", "test/ece_ts"):
        if key in flagged:
            assert "no CI (biased bootstrap)" in printed.split(key, 1)[1].splitlines()[0]


def mce_situation(sparse: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """By hand: 300 images at confidence 0.9 of which 70% are right (the largest gap, 0.2 =
    the MCE), plus five bins holding two images each, one right and one wrong, at confidences
    0.37-0.63 (gaps 0.13 or less). A resample that draws one of a pair more often than the other
    (most do) opens a gap of 0.37 or more there, so nearly every resampled MCE exceeds the
    estimate. ``sparse=False``: the ten images sit in the 0.9 bin instead (B of the paired test)."""
    rng = np.random.default_rng(0)
    nv = CLASSES.index("nv")
    t = rng.choice(K, 300, p=PRIOR)
    right = np.arange(300) < 210
    pred = np.where(right, t, (t + 1) % K)
    conf = np.full(300, 0.9)
    pair_conf = np.repeat([0.37, 0.43, 0.5, 0.57, 0.63], 2)
    pair_right = np.tile([True, False], 5)
    t = np.concatenate([t, np.full(10, nv)])
    pred = np.concatenate([pred, np.where(pair_right, nv, (nv + 1) % K)])
    conf = np.concatenate([conf, pair_conf if sparse else np.full(10, 0.9)])
    return top_label_probs(conf, pred), t


def test_the_mce_situation_is_not_reported_as_an_interval():
    """Reproduce ``mce 0.206 [0.209, 0.688]`` and check that no interval is written for it."""
    p, t = mce_situation()
    estimate = point_metrics(p, t)["mce"]
    assert estimate == pytest.approx(0.2)
    dist = bootstrap_distribution([p], t, n_resamples=1000, seed=0)[0]["mce"]
    low, high = np.quantile(dist, [0.025, 0.975])
    assert estimate < low < high  # the percentile interval excludes its estimate
    out = metrics_with_ci(p, t, prefix="test/", n_resamples=1000, seed=0)
    assert out["test/mce"] == pytest.approx(estimate)
    assert math.isnan(out["test/mce_ci_low"]) and math.isnan(out["test/mce_ci_high"])
    assert out["test/mce_ci_biased"] is True
    assert_no_contradiction({k: None if _nan(v) else v for k, v in out.items()})


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def test_paired_differences_never_exclude_the_observed_delta():
    """A (with the sparse pairs) minus B (without): the resampled MCE differences are inflated
    by A's sparse bins, so their percentile interval excludes the observed difference."""
    (p_a, t), (p_b, t_b) = mce_situation(), mce_situation(sparse=False)
    assert np.array_equal(t, t_b)
    metrics = ("mce", "ece", "macro_f1", "accuracy", "nll")
    out = paired_bootstrap(p_a, p_b, t, n_resamples=1000, seed=0, metrics=metrics)
    dist_a, dist_b = bootstrap_distribution([p_a, p_b], t, n_resamples=1000, seed=0)
    lo, hi = np.quantile(dist_a["mce"] - dist_b["mce"], [0.025, 0.975])
    assert not lo <= out["mce"]["delta"] <= hi  # the situation, in the paired comparison
    assert out["mce"]["ci_status"] == "biased" and math.isnan(out["mce"]["ci_low"])
    for m in metrics:
        r = out[m]
        if r["ci_status"] in ("ok", "degenerate"):
            assert r["ci_low"] <= r["delta"] <= r["ci_high"], (m, r)
        else:
            assert math.isnan(r["ci_low"]) and math.isnan(r["ci_high"]), (m, r)
    assert out["accuracy"]["ci_status"] == "degenerate"  # same decisions: every difference is 0
    assert out["nll"]["ci_status"] == "ok"


def population(gap: float) -> dict[str, float]:
    p, t = gap_model(300_000, gap, np.random.default_rng(123))
    return {k: float(v[0]) for k, v in MetricEngine(p, t).compute(np.ones((1, len(t)))).items()}


def test_reported_intervals_cover_the_population_value_at_about_the_nominal_rate():
    """Simulated test sets of a well calibrated (gap 0.01) and a miscalibrated (gap 0.1)
    model, with known population ECE and accuracy. The percentile interval of the ECE covers
    the population value of the calibrated model almost never; what is reported must cover it
    in about 95% of the test sets (and nothing at all is a fine answer for the noise case)."""
    reps, n = 40, 400
    covered = {"ece": [], "accuracy": [], "macro_f1": []}
    reported_ece = {}
    for gap in (0.01, 0.1):
        truth, rng = population(gap), np.random.default_rng(int(gap * 100))
        reported_ece[gap] = 0
        for rep in range(reps):
            p, t = gap_model(n, gap, rng)
            out = metrics_with_ci(p, t, prefix="", n_resamples=250, seed=rep)
            for m, hits in covered.items():
                low, high = out[f"{m}_ci_low"], out[f"{m}_ci_high"]
                if not math.isnan(low):
                    hits.append(low <= truth[m] <= high)
                    reported_ece[gap] += m == "ece"
    rates = {m: float(np.mean(h)) for m, h in covered.items()}
    assert rates["accuracy"] >= 0.88 and len(covered["accuracy"]) == 2 * reps, rates
    assert rates["macro_f1"] >= 0.85, rates
    assert reported_ece[0.1] >= reps // 2, reported_ece  # a real miscalibration gets its CI
    assert rates["ece"] >= 0.85, (rates, reported_ece)
