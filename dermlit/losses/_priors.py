"""Class priors, class weights and the shared reductions of the imbalance-aware losses.

Every loss is built from the TRAIN split's class counts; the helpers here turn those counts
into priors and weights once, at construction, so that ``forward`` only indexes buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

Counts = Sequence[int] | Sequence[float] | Tensor


def as_counts(class_counts: Counts, *, allow_zero: bool = False) -> Tensor:
    """Validate class counts and return them as a float64 CPU tensor.

    Priors and weights need every class present (log 0 and 1/0 are not numbers), so zero is
    refused unless the caller only needs the number of classes.
    """
    if isinstance(class_counts, str | Mapping):
        raise TypeError(
            "class_counts must be a sequence of per-class counts in CLASSES order, "
            f"not a {type(class_counts).__name__}"
        )
    counts = torch.as_tensor(
        [
            float(c)
            for c in (class_counts.tolist() if isinstance(class_counts, Tensor) else class_counts)
        ],
        dtype=torch.float64,
    )
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError(f"class_counts must list at least 2 classes, got {counts.tolist()}")
    if not torch.isfinite(counts).all():
        raise ValueError(f"class_counts must be finite, got {counts.tolist()}")
    bad = (counts < 0) if allow_zero else (counts <= 0)
    if bad.any():
        idx = int(bad.nonzero()[0])
        need = "non-negative" if allow_zero else "positive (this loss needs every class in train)"
        raise ValueError(f"class_counts must be {need}; class {idx} has {counts[idx].item():g}")
    return counts


def log_prior(class_counts: Counts) -> Tensor:
    """log(n_c / N) as float32, the quantity logit adjustment adds or subtracts."""
    counts = as_counts(class_counts)
    return (counts / counts.sum()).log().float()


def _normalise(weights: Tensor) -> Tensor:
    """Scale weights to sum to C, so that uniform weights are all 1 (Cui et al. 2019)."""
    return (weights * weights.numel() / weights.sum()).float()


def inverse_frequency_weights(class_counts: Counts) -> Tensor:
    """w_c proportional to 1/n_c, normalised to sum to C."""
    return _normalise(1.0 / as_counts(class_counts))


def effective_number_weights(class_counts: Counts, beta: float = 0.9999) -> Tensor:
    """Cui et al. 2019: w_c proportional to (1 - beta) / (1 - beta^n_c), normalised to sum to C.

    beta=0 gives uniform weights; beta -> 1 approaches inverse frequency. ``expm1`` keeps
    1 - beta^n accurate for beta close to 1.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = as_counts(class_counts)
    if beta == 0.0:
        return torch.ones(counts.numel())
    effective = -torch.expm1(counts * torch.log(torch.tensor(beta, dtype=torch.float64)))
    return _normalise((1.0 - beta) / effective)


#: Weight schemes selectable by name from config (``scheme: effective_number``).
WEIGHT_SCHEMES: dict[str, Callable[[Counts, float], Tensor]] = {
    "inverse_frequency": lambda counts, beta: inverse_frequency_weights(counts),
    "effective_number": effective_number_weights,
}


def class_weights(class_counts: Counts, scheme: str, beta: float = 0.9999) -> Tensor:
    """Look up a weight scheme by name; the error lists the valid names."""
    try:
        fn = WEIGHT_SCHEMES[scheme]
    except KeyError:
        raise ValueError(
            f"unknown weight scheme {scheme!r}; choose one of {sorted(WEIGHT_SCHEMES)}"
        ) from None
    return fn(class_counts, beta)


def posthoc_logit_adjust(logits: Tensor, class_counts: Counts, tau: float = 1.0) -> Tensor:
    """Menon et al. 2021 post-hoc adjustment: ``logits - tau * log prior``.

    Applied at evaluation to a model trained with plain CE, it targets the balanced error.
    """
    prior = log_prior(class_counts).to(device=logits.device, dtype=logits.dtype)
    if logits.shape[-1] != prior.numel():
        raise ValueError(
            f"logits have {logits.shape[-1]} classes but class_counts has {prior.numel()}"
        )
    return logits - tau * prior


def check_inputs(logits: Tensor, targets: Tensor, num_classes: int) -> None:
    """Shape checks only: value checks would force a device sync every step."""
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits must have shape (N, {num_classes}), got {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}"
        )
    if targets.dtype != torch.long:
        raise TypeError(f"targets must be torch.long class indices, got {targets.dtype}")


def smoothed_nll(log_probs: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """Per-sample ``(1-eps) * -log p_y + eps * mean_c(-log p_c)`` (no reduction).

    Written out because ``F.cross_entropy(weight=..., label_smoothing=...)`` weights the
    smoothing term by the weights of the *other* classes; we want one weight per sample,
    that of its true class.
    """
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    if label_smoothing == 0.0:
        return nll
    return (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=1)


def weighted_mean(per_sample: Tensor, sample_weights: Tensor | None) -> Tensor:
    """sum(w_i l_i) / sum(w_i), the reduction of ``F.cross_entropy(weight=...)``.

    Normalising by the batch's weight keeps the loss on CE's scale, so a learning rate tuned
    with CE carries over (LDAM-DRW's reference code does the same).
    """
    if sample_weights is None:
        return per_sample.mean()
    return (per_sample * sample_weights).sum() / sample_weights.sum()


def check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return float(label_smoothing)


def cross_entropy_smoothed(logits: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """Mean CE in float32 (stable under bf16 autocast)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
