"""Cross-entropy and class-weighted cross-entropy."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dermlit.losses._priors import (
    Counts,
    as_counts,
    check_inputs,
    check_smoothing,
    class_weights,
    cross_entropy_smoothed,
    smoothed_nll,
    weighted_mean,
)


class CrossEntropyLoss(nn.Module):
    """Plain CE; takes ``class_counts`` only to share the constructor of the other losses."""

    def __init__(self, class_counts: Counts, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.num_classes = int(as_counts(class_counts, allow_zero=True).numel())
        self.label_smoothing = check_smoothing(label_smoothing)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_inputs(logits, targets, self.num_classes)
        return cross_entropy_smoothed(logits, targets, self.label_smoothing)


class WeightedCrossEntropyLoss(nn.Module):
    """CE with one weight per class, ``inverse_frequency`` or ``effective_number`` (Cui 2019).

    Weights sum to C; the batch loss is sum(w_y l) / sum(w_y). With label smoothing each
    sample keeps the weight of its true class (see ``smoothed_nll``).
    """

    weights: Tensor

    def __init__(
        self,
        class_counts: Counts,
        scheme: str = "inverse_frequency",
        beta: float = 0.9999,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.scheme = scheme
        self.label_smoothing = check_smoothing(label_smoothing)
        self.register_buffer("weights", class_weights(class_counts, scheme, beta), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_inputs(logits, targets, self.weights.numel())
        log_probs = torch.log_softmax(logits.float(), dim=1)
        per_sample = smoothed_nll(log_probs, targets, self.label_smoothing)
        return weighted_mean(per_sample, self.weights[targets])
