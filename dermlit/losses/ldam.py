"""LDAM loss with deferred re-weighting (Cao et al. 2019, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss")."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from dermlit.losses._priors import Counts, as_counts, check_inputs, effective_number_weights


class LDAMLoss(nn.Module):
    """CE on ``s * (z - m_y e_y)`` with margins ``m_j`` proportional to ``n_j^(-1/4)``.

    Margins are scaled so the rarest class gets ``max_m``. The paper (and its code) feeds
    *cosine* logits in [-1, 1] from a normalised linear head, hence s=30; with a plain linear
    head use s=1 or the logits explode.

    DRW: from ``drw_start_epoch`` on (call ``set_epoch`` every epoch) samples are weighted by
    effective-number weights with ``drw_beta``; before it, or with ``drw_start_epoch=None``,
    unweighted. The reduction is sum(w_y l) / sum(w_y), as in the reference code.
    """

    margins: Tensor
    drw_weights: Tensor

    def __init__(
        self,
        class_counts: Counts,
        max_m: float = 0.5,
        s: float = 30.0,
        drw_start_epoch: int | None = 160,
        drw_beta: float = 0.9999,
    ) -> None:
        super().__init__()
        if max_m < 0 or s <= 0:
            raise ValueError(f"need max_m >= 0 and s > 0, got max_m={max_m}, s={s}")
        if drw_start_epoch is not None and drw_start_epoch < 0:
            raise ValueError(f"drw_start_epoch must be >= 0 or None, got {drw_start_epoch}")
        counts = as_counts(class_counts)
        raw = counts.pow(-0.25)
        self.register_buffer("margins", (raw * (max_m / raw.max())).float(), persistent=False)
        self.register_buffer(
            "drw_weights", effective_number_weights(counts, drw_beta), persistent=False
        )
        self.s = float(s)
        self.drw_start_epoch = drw_start_epoch
        self.epoch = 0

    @property
    def reweighting(self) -> bool:
        """Whether DRW weights apply in the current epoch."""
        return self.drw_start_epoch is not None and self.epoch >= self.drw_start_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_inputs(logits, targets, self.margins.numel())
        logits = logits.float()
        one_hot = F.one_hot(targets, self.margins.numel()).to(logits.dtype)
        adjusted = self.s * (logits - one_hot * self.margins[targets][:, None])
        weight = self.drw_weights if self.reweighting else None
        return F.cross_entropy(adjusted, targets, weight=weight)

    def extra_repr(self) -> str:
        return f"s={self.s}, drw_start_epoch={self.drw_start_epoch}, epoch={self.epoch}"
