"""Losses against hand-worked examples (math.log/exp, not the code's formulas)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.nn import functional as F

from dermlit.config import register_resolvers
from dermlit.losses import (
    BalancedSoftmaxLoss,
    ClassBalancedFocalLoss,
    CrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    WeightedCrossEntropyLoss,
    effective_number_weights,
    inverse_frequency_weights,
    posthoc_logit_adjust,
)

CONF = Path(__file__).resolve().parents[1] / "conf"

# Two samples, three classes; train counts 10/30/60 (priors 0.1/0.3/0.6).
COUNTS = [10, 30, 60]
PRIOR = [0.1, 0.3, 0.6]
Z = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
Y = [0, 2]


def logits() -> torch.Tensor:
    return torch.tensor(Z)


def targets() -> torch.Tensor:
    return torch.tensor(Y)


def lse(z: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in z))


def ce_i(z: list[float], y: int) -> float:
    return lse(z) - z[y]


def close(value: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    assert value.ndim == 0
    assert value.item() == pytest.approx(expected, rel=tol, abs=tol)


def test_ce_hand_computed():
    expected = (ce_i(Z[0], 0) + ce_i(Z[1], 2)) / 2
    close(CrossEntropyLoss(COUNTS)(logits(), targets()), expected)


def test_ce_label_smoothing_hand_computed():
    eps = 0.1
    # target distribution (1-eps) one-hot + eps/C uniform
    per = [
        (1 - eps) * ce_i(z, y) + eps * sum(ce_i(z, c) for c in range(3)) / 3
        for z, y in zip(Z, Y, strict=True)
    ]
    close(CrossEntropyLoss(COUNTS, label_smoothing=eps)(logits(), targets()), sum(per) / 2)


def test_inverse_frequency_weights_sum_to_c():
    # 1/10 : 1/30 : 1/60 = 6 : 2 : 1, scaled to sum 3
    assert inverse_frequency_weights(COUNTS).tolist() == pytest.approx([2.0, 2 / 3, 1 / 3])


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.9999])
def test_effective_number_weights_formula(beta):
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expected = [3 * r / sum(raw) for r in raw]
    assert effective_number_weights(COUNTS, beta).tolist() == pytest.approx(expected, rel=1e-6)


def test_effective_number_beta_zero_is_uniform():
    assert effective_number_weights(COUNTS, 0.0).tolist() == [1.0, 1.0, 1.0]


def test_weighted_ce_hand_computed():
    w = [2.0, 2 / 3, 1 / 3]
    expected = (w[0] * ce_i(Z[0], 0) + w[2] * ce_i(Z[1], 2)) / (w[0] + w[2])
    close(WeightedCrossEntropyLoss(COUNTS)(logits(), targets()), expected)


def test_weighted_ce_effective_number_with_smoothing():
    beta, eps = 0.9, 0.2
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    w = [3 * r / sum(raw) for r in raw]
    per = [
        (1 - eps) * ce_i(z, y) + eps * sum(ce_i(z, c) for c in range(3)) / 3
        for z, y in zip(Z, Y, strict=True)
    ]
    expected = (w[0] * per[0] + w[2] * per[1]) / (w[0] + w[2])
    loss = WeightedCrossEntropyLoss(
        COUNTS, scheme="effective_number", beta=beta, label_smoothing=eps
    )
    close(loss(logits(), targets()), expected)


def focal_i(z: list[float], y: int, gamma: float) -> float:
    p = math.exp(z[y]) / sum(math.exp(v) for v in z)
    return -((1 - p) ** gamma) * math.log(p)


def test_focal_hand_computed():
    expected = (focal_i(Z[0], 0, 2.0) + focal_i(Z[1], 2, 2.0)) / 2
    close(FocalLoss(COUNTS, gamma=2.0)(logits(), targets()), expected)


def test_focal_with_alpha_list_and_inverse_frequency():
    alpha = [0.25, 0.5, 0.75]
    expected = (0.25 * focal_i(Z[0], 0, 1.5) + 0.75 * focal_i(Z[1], 2, 1.5)) / (0.25 + 0.75)
    close(FocalLoss(COUNTS, gamma=1.5, alpha=alpha)(logits(), targets()), expected)
    w = [2.0, 2 / 3, 1 / 3]
    expected = (w[0] * focal_i(Z[0], 0, 2) + w[2] * focal_i(Z[1], 2, 2)) / (w[0] + w[2])
    close(FocalLoss(COUNTS, alpha="inverse_frequency")(logits(), targets()), expected)


def test_class_balanced_focal_hand_computed():
    beta, gamma = 0.99, 1.0
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    w = [3 * r / sum(raw) for r in raw]
    expected = (w[0] * focal_i(Z[0], 0, gamma) + w[2] * focal_i(Z[1], 2, gamma)) / (w[0] + w[2])
    close(ClassBalancedFocalLoss(COUNTS, beta=beta, gamma=gamma)(logits(), targets()), expected)


def test_focal_gamma_zero_equals_ce():
    x, y = torch.randn(16, 7, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 7
    counts = [5, 6, 7, 8, 9, 10, 11]
    torch.testing.assert_close(FocalLoss(counts, gamma=0.0)(x, y), F.cross_entropy(x, y))


def ldam_margins(max_m: float) -> list[float]:
    raw = [n**-0.25 for n in COUNTS]
    return [max_m * r / max(raw) for r in raw]


def test_ldam_hand_computed():
    s, max_m = 2.0, 0.5
    m = ldam_margins(max_m)
    assert m[0] == pytest.approx(0.5) and m[2] == pytest.approx(0.5 * (10 / 60) ** 0.25)
    per = []
    for z, y in zip(Z, Y, strict=True):
        zz = [s * (v - (m[y] if c == y else 0.0)) for c, v in enumerate(z)]
        per.append(ce_i(zz, y))
    loss = LDAMLoss(COUNTS, max_m=max_m, s=s, drw_start_epoch=None)
    close(loss(logits(), targets()), sum(per) / 2)


def test_ldam_zero_margin_unit_scale_equals_ce():
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 3
    loss = LDAMLoss(COUNTS, max_m=0.0, s=1.0, drw_start_epoch=None)
    torch.testing.assert_close(loss(x, y), F.cross_entropy(x, y))


def test_ldam_drw_switches_weights_at_start_epoch():
    s, beta = 1.0, 0.9
    m = ldam_margins(0.5)
    per = []
    for z, y in zip(Z, Y, strict=True):
        per.append(ce_i([s * (v - (m[y] if c == y else 0.0)) for c, v in enumerate(z)], y))
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    w = [3 * r / sum(raw) for r in raw]
    loss = LDAMLoss(COUNTS, s=s, drw_start_epoch=3, drw_beta=beta)
    for epoch in (0, 2):
        loss.set_epoch(epoch)
        assert not loss.reweighting
        close(loss(logits(), targets()), sum(per) / 2)
    for epoch in (3, 10):
        loss.set_epoch(epoch)
        assert loss.reweighting
        close(loss(logits(), targets()), (w[0] * per[0] + w[2] * per[1]) / (w[0] + w[2]))


def test_logit_adjusted_hand_computed():
    tau = 0.5
    per = [
        ce_i([v + tau * math.log(p) for v, p in zip(z, PRIOR, strict=True)], y)
        for z, y in zip(Z, Y, strict=True)
    ]
    close(LogitAdjustedLoss(COUNTS, tau=tau)(logits(), targets()), sum(per) / 2)


def test_balanced_softmax_hand_computed():
    per = [
        ce_i([v + math.log(p) for v, p in zip(z, PRIOR, strict=True)], y)
        for z, y in zip(Z, Y, strict=True)
    ]
    close(BalancedSoftmaxLoss(COUNTS)(logits(), targets()), sum(per) / 2)


def test_logit_adjusted_tau_zero_and_balanced_softmax_uniform_equal_ce():
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(2)), torch.arange(16) % 3
    ce = F.cross_entropy(x, y, label_smoothing=0.1)
    torch.testing.assert_close(LogitAdjustedLoss(COUNTS, tau=0.0, label_smoothing=0.1)(x, y), ce)
    torch.testing.assert_close(BalancedSoftmaxLoss([7, 7, 7], label_smoothing=0.1)(x, y), ce)


def test_posthoc_logit_adjust_hand_computed():
    out = posthoc_logit_adjust(logits(), COUNTS, tau=2.0)
    expected = [[v - 2.0 * math.log(p) for v, p in zip(z, PRIOR, strict=True)] for z in Z]
    torch.testing.assert_close(out, torch.tensor(expected))
    # the rare class 0 gains most: sample 1 flips from class 1 to class 0 at tau=2
    assert out.argmax(1).tolist() == [0, 0]


ALL_LOSSES = [
    lambda c: CrossEntropyLoss(c, label_smoothing=0.1),
    lambda c: WeightedCrossEntropyLoss(c, scheme="effective_number", label_smoothing=0.1),
    lambda c: FocalLoss(c, gamma=0.5, alpha="inverse_frequency"),
    lambda c: FocalLoss(c, gamma=2.0),
    lambda c: ClassBalancedFocalLoss(c),
    lambda c: LDAMLoss(c, drw_start_epoch=0),
    lambda c: LogitAdjustedLoss(c, label_smoothing=0.1),
    lambda c: BalancedSoftmaxLoss(c),
]


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_gradients_finite_on_extreme_logits(make):
    # row 0: the true class dominates (p_y rounds to 1); row 1: a wrong class dominates
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, -1e4]], requires_grad=True)
    loss = make(COUNTS)(x, torch.tensor([0, 2, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0  # the misclassified row still gets a gradient


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_bf16_logits_give_float32_loss_close_to_fp32(make):
    x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(3)), torch.arange(8) % 3
    fn = make(COUNTS)
    out = fn(x.bfloat16(), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fn(x.bfloat16().float(), y))


def test_derived_buffers_move_with_module_and_stay_out_of_state_dict():
    loss = WeightedCrossEntropyLoss(COUNTS).to(torch.float64)
    assert "weights" not in loss.state_dict()  # derived from counts: not in checkpoints
    assert loss.weights.dtype == torch.float64


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: WeightedCrossEntropyLoss([10, 0, 5]), ValueError, "class 1 has 0"),
        (lambda: WeightedCrossEntropyLoss(COUNTS, scheme="sqrt"), ValueError, "effective_number"),
        (lambda: FocalLoss(COUNTS, alpha=[1.0, 2.0]), ValueError, "2 weights but there are 3"),
        (lambda: FocalLoss(COUNTS, alpha="balanced"), ValueError, "inverse_frequency"),
        (lambda: FocalLoss(COUNTS, gamma=-1), ValueError, "gamma"),
        (lambda: CrossEntropyLoss(COUNTS, label_smoothing=1.0), ValueError, "label_smoothing"),
        (lambda: ClassBalancedFocalLoss(COUNTS, beta=1.0), ValueError, r"beta must be in \[0, 1\)"),
        (lambda: LDAMLoss([5]), ValueError, "at least 2 classes"),
        (lambda: LDAMLoss(COUNTS, drw_start_epoch=-1), ValueError, "drw_start_epoch"),
        (lambda: LogitAdjustedLoss([1.0, float("nan")]), ValueError, "finite"),
        (lambda: CrossEntropyLoss({"a": 1, "b": 2}), TypeError, "in CLASSES order"),
    ],
)
def test_bad_construction_raises(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_inputs_raise():
    loss = LogitAdjustedLoss(COUNTS)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        loss(torch.zeros(2, 4), targets())
    with pytest.raises(ValueError, match=r"targets must have shape \(2,\)"):
        loss(logits(), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="torch.long"):
        loss(logits(), targets().int())
    with pytest.raises(ValueError, match="3 classes but class_counts has 4"):
        posthoc_logit_adjust(logits(), [1, 2, 3, 4])


EXPECTED_CONFIGS = {
    "ce": CrossEntropyLoss,
    "weighted_ce": WeightedCrossEntropyLoss,
    "focal": FocalLoss,
    "class_balanced_focal": ClassBalancedFocalLoss,
    "ldam": LDAMLoss,
    "logit_adjusted": LogitAdjustedLoss,
    "balanced_softmax": BalancedSoftmaxLoss,
}


@pytest.mark.parametrize(("name", "cls"), sorted(EXPECTED_CONFIGS.items()))
def test_hydra_config_builds_loss_from_counts(name, cls):
    path = CONF / "loss" / f"{name}.yaml"
    assert path.read_text().startswith("#"), "each config cites its paper in a top comment"
    register_resolvers()
    root = OmegaConf.create({"trainer": {"max_epochs": 20}, "loss": OmegaConf.load(path)})
    partial = instantiate(root.loss)
    loss = partial(class_counts=[327, 514, 1099, 115, 1113, 6705, 142])
    assert type(loss) is cls
    if name == "ldam":  # DRW from 80% of the run's epochs
        assert loss.drw_start_epoch == 16
    x, y = torch.randn(4, 7), torch.tensor([0, 3, 5, 6])
    assert torch.isfinite(loss(x, y))
