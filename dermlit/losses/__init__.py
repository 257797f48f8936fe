"""Imbalance-aware classification losses, each built from the TRAIN split's class counts.

Contract: ``Loss(class_counts, **hyperparams)``; ``forward(logits (N, C), targets (N,) long)``
returns the scalar batch loss. Losses with an epoch schedule (``LDAMLoss``) have
``set_epoch``. Class weights, where a loss has them, sum to C and the batch loss is the
weighted mean sum(w_y l) / sum(w_y), like ``F.cross_entropy(weight=...)``. All losses compute
in float32 whatever the logits' dtype.
"""

from dermlit.losses._priors import (
    WEIGHT_SCHEMES,
    class_weights,
    effective_number_weights,
    inverse_frequency_weights,
    log_prior,
    posthoc_logit_adjust,
)
from dermlit.losses.cross_entropy import CrossEntropyLoss, WeightedCrossEntropyLoss
from dermlit.losses.focal import ClassBalancedFocalLoss, FocalLoss
from dermlit.losses.ldam import LDAMLoss
from dermlit.losses.logit_adjusted import BalancedSoftmaxLoss, LogitAdjustedLoss

__all__ = [
    "WEIGHT_SCHEMES",
    "BalancedSoftmaxLoss",
    "ClassBalancedFocalLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "WeightedCrossEntropyLoss",
    "class_weights",
    "effective_number_weights",
    "inverse_frequency_weights",
    "log_prior",
    "posthoc_logit_adjust",
]
