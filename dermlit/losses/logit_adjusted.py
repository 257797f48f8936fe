"""Losses that add the log prior to the logits during training.

Logit-adjusted loss (Menon et al. 2021, "Long-tail learning via logit adjustment") adds
``tau * log pi``; Balanced Softmax (Ren et al. 2020) adds ``log pi``. For single-label
classification they coincide at tau=1; both are kept so configs name the method they cite.
At inference the raw logits are used: the adjustment is what makes them balanced.
"""

from __future__ import annotations

from torch import Tensor, nn

from dermlit.losses._priors import (
    Counts,
    check_inputs,
    check_smoothing,
    cross_entropy_smoothed,
    log_prior,
)


class LogitAdjustedLoss(nn.Module):
    """CE on ``logits + tau * log prior``; tau=0 is plain CE."""

    log_prior: Tensor

    def __init__(self, class_counts: Counts, tau: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.tau = float(tau)
        self.label_smoothing = check_smoothing(label_smoothing)
        self.register_buffer("log_prior", log_prior(class_counts), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_inputs(logits, targets, self.log_prior.numel())
        adjusted = logits.float() + self.tau * self.log_prior
        return cross_entropy_smoothed(adjusted, targets, self.label_smoothing)


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced Softmax (Ren et al. 2020): CE on ``logits + log prior``."""

    def __init__(self, class_counts: Counts, label_smoothing: float = 0.0):
        super().__init__(class_counts, tau=1.0, label_smoothing=label_smoothing)
