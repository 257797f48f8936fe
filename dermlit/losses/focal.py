"""Softmax focal loss (Lin et al. 2017) and its class-balanced variant (Cui et al. 2019).

torchvision only ships the sigmoid (one-vs-all) focal loss; a single-label 7-way problem
wants the softmax form, ``-alpha_y (1 - p_y)^gamma log p_y``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dermlit.losses._priors import (
    Counts,
    as_counts,
    check_inputs,
    effective_number_weights,
    inverse_frequency_weights,
    weighted_mean,
)

Alpha = str | Sequence[float] | None


def _resolve_alpha(alpha: Alpha, class_counts: Counts) -> Tensor | None:
    """``None`` | ``'inverse_frequency'`` | one non-negative weight per class."""
    num_classes = as_counts(class_counts, allow_zero=True).numel()
    if alpha is None:
        return None
    if isinstance(alpha, str):
        if alpha != "inverse_frequency":
            raise ValueError(
                f"alpha must be None, 'inverse_frequency' or a list of {num_classes} weights; "
                f"got {alpha!r}"
            )
        return inverse_frequency_weights(class_counts)
    weights = torch.tensor([float(a) for a in alpha], dtype=torch.float32)
    if weights.numel() != num_classes:
        raise ValueError(f"alpha has {weights.numel()} weights but there are {num_classes} classes")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"alpha must be non-negative with a positive sum, got {weights.tolist()}")
    return weights


class FocalLoss(nn.Module):
    """``-alpha_y (1 - p_y)^gamma log p_y``, reduced as sum(alpha_y l) / sum(alpha_y).

    ``1 - p_y`` is computed as ``-expm1(log p_y)`` and floored at the smallest positive
    float, so that gradients stay finite when a logit dominates (p_y rounds to 1).
    """

    alpha: Tensor | None

    def __init__(self, class_counts: Counts, gamma: float = 2.0, alpha: Alpha = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.num_classes = int(as_counts(class_counts, allow_zero=True).numel())
        self.register_buffer("alpha", _resolve_alpha(alpha, class_counts), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_inputs(logits, targets, self.num_classes)
        log_p = torch.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        per_sample = -log_p
        if self.gamma != 0.0:
            one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
            per_sample = one_minus_p.pow(self.gamma) * per_sample
        return weighted_mean(per_sample, None if self.alpha is None else self.alpha[targets])


class ClassBalancedFocalLoss(FocalLoss):
    """Focal loss with alpha = effective-number weights (Cui et al. 2019, softmax form)."""

    def __init__(self, class_counts: Counts, beta: float = 0.9999, gamma: float = 2.0) -> None:
        weights = effective_number_weights(class_counts, beta)
        super().__init__(class_counts, gamma=gamma, alpha=weights.tolist())
        self.beta = float(beta)
