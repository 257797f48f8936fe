"""Class-conditional split conformal sets: hand-worked thresholds, crepes as oracle, and the
per-class guarantee on average over random calibration/test draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
from crepes import ConformalClassifier

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.evaluation.conformal import (
    ConformalThresholds,
    calibration_rank,
    conformal_metrics,
    evaluate_conformal,
    fit_conformal,
    parse_set_string,
    set_size_distribution,
    set_strings,
)

K = len(CLASSES)


def one_hot_probs(targets: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """Rows with ``p_true`` on the target and the rest spread evenly over the other classes."""
    p = np.repeat(((1 - p_true) / (K - 1))[:, None], K, axis=1)
    p[np.arange(len(targets)), targets] = p_true
    return p


def draw(rng: np.random.Generator, counts, signal=(2.0, 2.5, 1.5, 1.0, 1.5, 3.0, 1.0)):
    """Softmax of Gaussian logits with a class-dependent signal on the true class."""
    t = np.repeat(np.arange(K), counts)
    logits = rng.normal(size=(len(t), K)) * 1.5
    logits[np.arange(len(t)), t] += np.asarray(signal)[t]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), t


def test_calibration_rank_hand_worked():
    assert calibration_rank(9, 0.2) == 8  # ceil(10 * 0.8) = 8
    assert calibration_rank(9, 0.1) == 9  # 10 * 0.9 = 9 exactly (not 10 by float error)
    assert calibration_rank(19, 0.05) == 19  # 20 * 0.95 = 19 exactly
    assert calibration_rank(17, 0.1) == 17  # ceil(16.2): df's ~17 validation images
    assert calibration_rank(8, 0.1) == 9  # ceil(8.1) > 8: no finite threshold
    assert calibration_rank(0, 0.1) == 1
    with pytest.raises(ValueError, match="alpha must be in"):
        calibration_rank(10, 1.5)


def test_thresholds_hand_worked():
    # class akiec: 9 images with p_true 0.95, 0.9, ..., 0.55 -> scores 0.05, 0.10, ..., 0.45;
    # alpha 0.2: rank ceil(10 * 0.8) = 8 -> the 8th smallest score, 0.40.
    # class bcc: 8 images -> rank ceil(9 * 0.8) = 8 -> the largest score.
    # class bkl: 3 images -> rank ceil(4 * 0.8) = 4 > 3 -> inf (always in the set).
    # df, mel, nv, vasc: no image -> inf.
    p_akiec = 0.95 - 0.05 * np.arange(9)
    p_bcc = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.3, 0.2])
    p_bkl = np.array([0.9, 0.8, 0.7])
    t = np.repeat([0, 1, 2], [9, 8, 3])
    probs = one_hot_probs(t, np.concatenate([p_akiec, p_bcc, p_bkl]))
    fitted = fit_conformal(probs, t, alpha=0.2)
    assert fitted.thresholds[0] == pytest.approx(0.40)
    assert fitted.thresholds[1] == pytest.approx(0.80)
    assert np.isinf(fitted.thresholds[2:]).all()
    assert fitted.always_included.tolist() == [False, False] + [True] * 5
    assert fitted.n_calibration.tolist() == [9, 8, 3, 0, 0, 0, 0]
    # membership: akiec iff p_akiec >= 0.6 (score <= 0.4, the boundary included), bcc iff >= 0.2
    test = np.full((3, K), 0.0)
    test[0, :2] = [0.6, 0.2]  # both exactly on their boundary
    test[1, :2] = [0.59, 0.19]
    test[2, :2] = [0.0, 0.0]
    test[:, 2:] = (1 - test[:, :2].sum(1, keepdims=True)) / (K - 2)
    sets = fitted.prediction_sets(test)
    assert sets[:, 0].tolist() == [True, False, False]
    assert sets[:, 1].tolist() == [True, False, False]
    assert sets[:, 2:].all()  # always included, whatever the probability


def test_unlabelled_rows_are_ignored():
    rng = np.random.default_rng(0)
    p, t = draw(rng, [20] * K)
    with_unlabelled = np.concatenate([p, p[:5]]), np.concatenate([t, -np.ones(5, dtype=int)])
    a, b = fit_conformal(p, t), fit_conformal(*with_unlabelled)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.33])
def test_sets_equal_crepes_mondrian_p_values(alpha):
    """crepes' class-conditional sets ({c : p-value of c > alpha}, non-smoothed), computed the
    way its WrapClassifier(class_cond=True) does, equal ours."""
    rng = np.random.default_rng(1)
    cal_p, cal_t = draw(rng, [30, 40, 80, 10, 80, 300, 5])  # vasc: 5 < 1/alpha - 1 for small alpha
    test_p, _ = draw(rng, [20] * K)
    cc = ConformalClassifier().fit(1 - cal_p[np.arange(len(cal_t)), cal_t], bins=cal_t)
    p_values = np.stack(
        [
            cc.predict_p(1 - test_p, bins=np.full(len(test_p), c), smoothing=False)[:, c]
            for c in range(K)
        ],
        1,
    )
    ours = fit_conformal(cal_p, cal_t, alpha).prediction_sets(test_p)
    np.testing.assert_array_equal(ours, p_values > alpha)


def _coverage_over_draws(fit, counts, alpha, n_draws=600, n_test=200, seed=0):
    """Per class: coverage on fresh test images, one row per calibration draw (n_draws, K)."""
    rng = np.random.default_rng(seed)
    cov = np.empty((n_draws, K))
    for r in range(n_draws):
        cal_p, cal_t = draw(rng, counts)
        test_p, test_t = draw(rng, [n_test] * K)
        sets = fit(cal_p, cal_t, alpha).prediction_sets(test_p)
        covered = sets[np.arange(len(test_t)), test_t]
        cov[r] = np.bincount(test_t, weights=covered, minlength=K) / n_test
    return cov


def _naive(cal_p, cal_t, alpha):
    """The textbook mistake: the plain (1 - alpha) empirical quantile (rank ceil(n(1 - alpha))),
    without the (n + 1) correction."""
    scores = 1 - cal_p[np.arange(len(cal_t)), cal_t]
    q = np.array(
        [np.quantile(scores[cal_t == c], 1 - alpha, method="inverted_cdf") for c in range(K)]
    )
    return ConformalThresholds(alpha, q, np.bincount(cal_t, minlength=K))


def test_every_class_covered_on_average_over_calibration_draws():
    """For continuous scores, E[coverage of class c] = k_c / (n_c + 1) exactly, which lies in
    [1 - alpha, 1 - alpha + 1 / (n_c + 1)): checked within Monte-Carlo error per class,
    including classes with 10 and 12 calibration images. The same harness catches the naive
    quantile, which under-covers the small classes."""
    counts, alpha = [30, 40, 80, 10, 80, 500, 12], 0.1
    cov = _coverage_over_draws(
        lambda p, t, a: fit_conformal(p, t, a), counts, alpha, n_draws=600, seed=0
    )
    mean, se = cov.mean(0), cov.std(0, ddof=1) / np.sqrt(len(cov))
    expected = np.array([calibration_rank(n, alpha) / (n + 1) for n in counts])
    assert np.all(np.abs(mean - expected) < 4 * se + 1e-3), (mean, expected, se)
    assert np.all(mean >= 1 - alpha - 3 * se), mean
    naive = _coverage_over_draws(_naive, counts, alpha, n_draws=200, seed=1).mean(0)
    small = [CLASS_TO_INDEX["df"], CLASS_TO_INDEX["vasc"]]  # 10 and 12 images
    assert np.all(naive[small] < 1 - alpha - 0.03), naive


def test_too_few_calibration_images_are_always_in_the_set():
    rng = np.random.default_rng(2)
    cal_p, cal_t = draw(rng, [30, 30, 30, 5, 30, 30, 30])  # df: 5 < 1/0.1 - 1
    fitted = fit_conformal(cal_p, cal_t, 0.1)
    assert fitted.always_included.tolist() == [c == "df" for c in CLASSES]
    params = fitted.params()
    assert params["conformal/always_df"] is True and np.isnan(params["conformal/threshold_df"])
    assert params["conformal/n_calibration_df"] == 5
    test_p, _ = draw(rng, [10] * K)
    assert fitted.prediction_sets(test_p)[:, CLASS_TO_INDEX["df"]].all()


def test_thresholds_round_trip_through_json():
    rng = np.random.default_rng(3)
    cal_p, cal_t = draw(rng, [30, 30, 30, 5, 30, 30, 30])
    fitted = fit_conformal(cal_p, cal_t, 0.1)
    text = json.dumps(fitted.to_dict(), allow_nan=False)  # strict JSON: inf becomes null
    back = ConformalThresholds.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.thresholds, fitted.thresholds)
    np.testing.assert_array_equal(back.n_calibration, fitted.n_calibration)
    assert (back.alpha, back.class_names) == (fitted.alpha, fitted.class_names)


def test_set_strings_follow_class_order():
    sets = np.zeros((3, K), dtype=bool)
    sets[0, [CLASS_TO_INDEX["nv"], CLASS_TO_INDEX["mel"]]] = True
    sets[1, CLASS_TO_INDEX["bcc"]] = True
    assert set_strings(sets) == ["mel|nv", "bcc", ""]
    for row, text in zip(sets, set_strings(sets), strict=True):
        np.testing.assert_array_equal(parse_set_string(text), row)
    with pytest.raises(ValueError, match="unknown class"):
        parse_set_string("mel|melanoma")
    assert set_size_distribution(sets).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_conformal_metrics_against_direct_computation():
    rng = np.random.default_rng(4)
    cal_p, cal_t = draw(rng, [30, 40, 80, 15, 80, 500, 20])
    test_p, test_t = draw(rng, [30, 40, 80, 15, 80, 500, 0])  # vasc absent from test
    test_t = np.concatenate([test_t, [-1]])  # one unlabelled row
    test_p = np.concatenate([test_p, test_p[:1]])
    sets = fit_conformal(cal_p, cal_t, 0.1).prediction_sets(test_p)
    m = conformal_metrics(sets, test_t, split="test", n_resamples=300, seed=0)
    lab = test_t >= 0
    s, t = sets[lab], test_t[lab]
    covered = s[np.arange(len(t)), t]
    assert m["test/conformal_coverage"] == pytest.approx(covered.mean())
    assert m["test/conformal_set_size"] == pytest.approx(s.sum(1).mean())
    assert m["test/conformal_empty_rate"] == pytest.approx((s.sum(1) == 0).mean())
    for c, name in enumerate(CLASSES):
        if name == "vasc":
            assert np.isnan(m["test/conformal_coverage_vasc"])
            assert np.isnan(m["test/conformal_coverage_vasc_ci_low"])
            continue
        assert m[f"test/conformal_coverage_{name}"] == pytest.approx(covered[t == c].mean())
        assert m[f"test/conformal_set_size_{name}"] == pytest.approx(s[t == c].sum(1).mean())
        for metric in ("coverage", "set_size"):
            key = f"test/conformal_{metric}_{name}"
            assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]
        # a class covered every time has the interval [1, 1]; any other a proper one
        low, high = (
            m[f"test/conformal_coverage_{name}_ci_low"],
            m[f"test/conformal_coverage_{name}_ci_high"],
        )
        if covered[t == c].all():
            assert low == high == 1.0
        else:
            assert high - low > 0.01
    assert 0 < m["test/conformal_coverage_ci_low"] < m["test/conformal_coverage_ci_high"] < 1
    again = conformal_metrics(sets, test_t, split="test", n_resamples=300, seed=0)
    assert json.dumps(m, sort_keys=True) == json.dumps(again, sort_keys=True)  # seeded


def test_bad_input_is_named():
    rng = np.random.default_rng(5)
    p, t = draw(rng, [20] * K)
    with pytest.raises(ValueError, match="got logits"):
        fit_conformal(np.log(p), t)
    with pytest.raises(ValueError, match="no"):
        fit_conformal(p, -np.ones_like(t))
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        fit_conformal(p, t).prediction_sets(p[:, :6])
    with pytest.raises(ValueError, match="sets must be"):
        conformal_metrics(np.ones((3, K), dtype=bool), t)


def test_evaluate_conformal_is_fit_then_measure():
    rng = np.random.default_rng(6)
    val_p, val_t = draw(rng, [30, 40, 80, 15, 80, 500, 20])
    test_p, test_t = draw(rng, [30, 40, 80, 15, 80, 500, 20])
    ev = evaluate_conformal(val_p, val_t, test_p, test_t, split="test", n_resamples=100)
    fitted = fit_conformal(val_p, val_t)
    np.testing.assert_array_equal(ev.sets, fitted.prediction_sets(test_p))
    expected = fitted.params() | conformal_metrics(ev.sets, test_t, "test", n_resamples=100)
    assert json.dumps(ev.metrics, sort_keys=True) == json.dumps(expected, sort_keys=True)
    unlabelled = evaluate_conformal(val_p, val_t, test_p, -np.ones_like(test_t))
    assert not any(k.startswith("test/") for k in unlabelled.metrics)  # sets, but no metrics
    assert unlabelled.sets.shape == test_p.shape
