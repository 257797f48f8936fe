"""point_metrics against scikit-learn (the oracle) and torchmetrics, on random and adversarial
predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.classification import (
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassRecall,
)

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.evaluation.metrics import MetricEngine, point_metrics

K = len(CLASSES)
MEL = CLASS_TO_INDEX["mel"]


def softmax_probs(rng: np.random.Generator, targets: np.ndarray, signal: float = 1.5) -> np.ndarray:
    logits = rng.normal(size=(len(targets), K)) * 2.0
    logits[np.arange(len(targets)), targets] += signal
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def sklearn_oracle(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Expected values, from scikit-learn, with NaN where metrics.py documents NaN."""
    pred = p.argmax(1)
    labels = list(range(K))
    support = np.bincount(t, minlength=K)
    predicted = np.bincount(pred, minlength=K)
    prec = skm.precision_score(t, pred, labels=labels, average=None, zero_division=0)
    rec = skm.recall_score(t, pred, labels=labels, average=None, zero_division=0)
    f1 = skm.f1_score(t, pred, labels=labels, average=None, zero_division=0)
    out = {
        "macro_f1": skm.f1_score(t, pred, average="macro", zero_division=0),
        "balanced_accuracy": skm.balanced_accuracy_score(t, pred),
        "accuracy": skm.accuracy_score(t, pred),
        "brier": skm.brier_score_loss(t, p, labels=labels, scale_by_half=False),
        "nll": skm.log_loss(t, p, labels=labels),
    }
    aurocs = []
    for c, name in enumerate(CLASSES):
        out[f"precision_{name}"] = prec[c]
        out[f"recall_{name}"] = rec[c] if support[c] else np.nan
        out[f"f1_{name}"] = f1[c] if support[c] + predicted[c] else np.nan
        out[f"support_{name}"] = float(support[c])
        present = 0 < support[c] < len(t)
        aurocs.append(skm.roc_auc_score(t == c, p[:, c]) if present else np.nan)
        out[f"auroc_{name}"] = aurocs[-1]
    out["auroc_macro"] = np.nanmean(aurocs) if not np.isnan(aurocs).all() else np.nan
    if 0 < support[MEL] < len(t):
        fpr, tpr, _ = skm.roc_curve(t == MEL, p[:, MEL], drop_intermediate=False)
        for spec in (80, 90, 95):
            out[f"mel_sensitivity_at_spec{spec}"] = tpr[1 - fpr >= spec / 100 - 1e-12].max()
    return out


def assert_matches_oracle(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    got = point_metrics(p, t)
    expected = sklearn_oracle(p, t)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    return got


def test_expected_keys():
    rng = np.random.default_rng(0)
    t = rng.integers(0, K, 300)
    got = point_metrics(softmax_probs(rng, t), t)
    per_class = {
        f"{f}_{c}" for f in ("precision", "recall", "f1", "support", "auroc") for c in CLASSES
    }
    headline = {"macro_f1", "balanced_accuracy", "accuracy", "auroc_macro"}
    calib = {"ece", "mce", "classwise_ece", "brier", "nll"}
    sens = {f"mel_sensitivity_at_spec{s}" for s in (80, 90, 95)}
    assert set(got) == per_class | headline | calib | sens


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_predictions_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.choice(K, 1500, p=[0.05, 0.05, 0.1, 0.02, 0.11, 0.65, 0.02])
    p = softmax_probs(rng, t)
    got = assert_matches_oracle(p, t)
    assert got["auroc_macro"] == pytest.approx(skm.roc_auc_score(t, p, multi_class="ovr"))


def test_tied_scores_match_sklearn():
    """Probabilities rounded to 2 decimals: many ties in AUROC and the mel ROC."""
    rng = np.random.default_rng(3)
    t = rng.integers(0, K, 800)
    p = np.round(softmax_probs(rng, t, signal=1.0), 2)
    p /= p.sum(1, keepdims=True)
    assert_matches_oracle(p, t)


def test_class_never_predicted():
    rng = np.random.default_rng(4)
    t = rng.integers(0, K, 500)
    p = softmax_probs(rng, t)
    p[:, 3] = 1e-6  # df never wins
    p /= p.sum(1, keepdims=True)
    got = assert_matches_oracle(p, t)
    assert got["precision_df"] == 0.0 and got["recall_df"] == 0.0 and got["f1_df"] == 0.0


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_absent_from_labels():
    rng = np.random.default_rng(5)
    t = rng.integers(0, K - 1, 500)  # no vasc
    p = softmax_probs(rng, t)
    got = assert_matches_oracle(p, t)
    assert np.isnan(got["auroc_vasc"]) and np.isnan(got["recall_vasc"])
    assert got["support_vasc"] == 0.0
    # vasc is predicted sometimes, so it enters macro-F1 with F1 = 0.
    assert (p.argmax(1) == K - 1).any() and got["f1_vasc"] == 0.0


def test_all_predictions_one_class():
    rng = np.random.default_rng(6)
    t = rng.integers(0, K, 400)
    p = np.full((400, K), 0.05)
    p[:, CLASS_TO_INDEX["nv"]] = 0.7
    p += rng.uniform(0, 1e-3, p.shape)
    p /= p.sum(1, keepdims=True)
    got = assert_matches_oracle(p, t)
    assert got["recall_nv"] == 1.0 and got["balanced_accuracy"] == pytest.approx(1 / K)


def test_absent_and_never_predicted_convention():
    """Macro-F1 leaves out a class with neither support nor prediction, like torchmetrics'
    MulticlassF1Score(average="macro") and sklearn's default labels; labels=range(7) differs."""
    rng = np.random.default_rng(7)
    t = rng.integers(0, K - 1, 600)
    p = softmax_probs(rng, t)
    p[:, K - 1] = 0.0  # vasc neither present nor predicted
    p /= p.sum(1, keepdims=True)
    got = assert_matches_oracle(p, t)
    assert np.isnan(got["f1_vasc"])
    tm = MulticlassF1Score(num_classes=K, average="macro")(torch.tensor(p), torch.tensor(t))
    assert got["macro_f1"] == pytest.approx(tm.item(), abs=1e-6)
    all_labels = skm.f1_score(t, p.argmax(1), labels=range(K), average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(all_labels * K / (K - 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_torchmetrics_epoch_metrics_agree(seed):
    """The training epoch metrics reproduce ours when every class occurs in the targets."""
    rng = np.random.default_rng(seed)
    t = np.concatenate([np.arange(K), rng.integers(0, K, 700)])
    p = softmax_probs(rng, t)
    got = point_metrics(p, t)
    pt, tt = torch.tensor(p, dtype=torch.float32), torch.tensor(t)
    f1 = MulticlassF1Score(num_classes=K, average="macro")(pt, tt).item()
    recall = MulticlassRecall(num_classes=K, average="macro")(pt, tt).item()
    assert got["macro_f1"] == pytest.approx(f1, abs=1e-6)
    assert got["balanced_accuracy"] == pytest.approx(recall, abs=1e-6)
    for norm, key in (("l1", "ece"), ("max", "mce")):
        ce = MulticlassCalibrationError(num_classes=K, n_bins=15, norm=norm)(pt, tt).item()
        assert got[key] == pytest.approx(ce, abs=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_engine_weights_equal_repeated_rows(dtype):
    """A weight vector means duplicated samples: the basis of the vectorised bootstrap."""
    rng = np.random.default_rng(8)
    t = rng.integers(0, K, 120)
    p = np.round(softmax_probs(rng, t), 2)
    p /= p.sum(1, keepdims=True)
    w = rng.integers(0, 4, 120)
    w[np.unique(t, return_index=True)[1]] = 1  # every class kept
    weighted = MetricEngine(p, t).compute(w[None].astype(dtype))
    repeated = point_metrics(np.repeat(p, w, 0), np.repeat(t, w))
    for key, value in repeated.items():
        np.testing.assert_allclose(weighted[key][0], value, rtol=1e-9, atol=1e-12, err_msg=key)


def test_bad_input_messages():
    p = np.full((4, K), 1 / K)
    with pytest.raises(ValueError, match="rows sum to 1"):
        point_metrics(p * 3, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="targets must have shape"):
        point_metrics(p, [0, 1, 2])
    with pytest.raises(ValueError, match="integers in"):
        point_metrics(p, [0, 1, 2, 7])
    with pytest.raises(ValueError, match="expected num_classes=5"):
        point_metrics(p, [0, 1, 2, 3], num_classes=5)
    with pytest.raises(ValueError, match="NaN"):
        point_metrics(np.full((4, K), np.nan), [0, 1, 2, 3])


def test_accepts_torch_tensors():
    rng = np.random.default_rng(9)
    t = rng.integers(0, K, 200)
    p = softmax_probs(rng, t)
    from_numpy = point_metrics(p, t)
    from_torch = point_metrics(torch.tensor(p), torch.tensor(t))
    assert from_torch == pytest.approx(from_numpy, nan_ok=True)
