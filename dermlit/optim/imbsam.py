"""ImbSAM: the sharpness term on the tail classes only (Zhou et al., "ImbSAM: A Closer Look at
Sharpness-Aware Minimization in Class-Imbalanced Recognition", ICCV 2023, arXiv:2308.07815).

Plain SAM flattens the loss landscape mostly for the head classes, which dominate the gradient,
and was reported to hurt the tail. ImbSAM splits the batch loss into head and tail parts,
L = L_h(w) + L_t(w), and steps with grad L_h(w) + grad L_t(w + e_t), where the perturbation
e_t = rho * grad L_t / ||grad L_t|| comes from the tail loss alone. Cost: like SAM (one extra
backward and one extra forward-backward on the batch).

Tail classes come from the TRAIN class counts: those below the ``tail_quantile`` of the counts
(default: the median; on HAM10000 that is akiec, df and vasc), or an explicit list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.optim.guard import SECOND_PASS
from dermlit.optim.module import TrainedModule
from dermlit.optim.sam import SAM, frozen_bn_stats, grads_or_zeros, trainable_params


def tail_classes_from_counts(counts: Sequence[int], quantile: float = 0.5) -> list[str]:
    """Classes whose train count is strictly below the ``quantile`` of all class counts."""
    if len(counts) != len(CLASSES):
        raise ValueError(f"expected {len(CLASSES)} class counts, got {len(counts)}")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"tail_quantile must be in (0, 1], got {quantile}")
    threshold = float(np.quantile(np.asarray(counts, dtype=float), quantile))
    tail = [c for c, n in zip(CLASSES, counts, strict=True) if n < threshold]
    if not tail:
        raise ValueError(f"no class has fewer than {threshold} images: tail is empty ({counts})")
    return tail


def subset_loss(criterion, logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """The mean loss of the masked samples times their share of the batch, so that the head
    and tail parts add up to the batch mean (exact for per-sample-mean losses)."""
    if not bool(mask.any()):
        return logits.sum() * 0.0  # keeps the graph: every DDP rank runs the same backwards
    return criterion(logits[mask], targets[mask]) * (mask.sum() / mask.numel())


@dataclass
class ImbSAM(SAM):
    """``optim=imbsam``: tail_classes (class names) or tail_quantile on the train counts."""

    tail_classes: list[str] | None = None
    tail_quantile: float = 0.5
    _is_tail: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.accumulate_grad_batches != 1:
            raise ValueError("ImbSAM does not support optim.accumulate_grad_batches > 1")
        unknown = set(self.tail_classes or ()) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown tail classes {sorted(unknown)}; known: {CLASSES}")

    def configure(self, module: TrainedModule) -> dict:
        tail = self.tail_classes
        if tail is None:
            datamodule = getattr(module.trainer, "datamodule", None)
            if datamodule is None:
                raise ValueError("ImbSAM needs optim.tail_classes or a datamodule's class_counts")
            tail = tail_classes_from_counts(datamodule.class_counts, self.tail_quantile)
        self._is_tail = torch.zeros(len(CLASSES), dtype=torch.bool)
        self._is_tail[[CLASS_TO_INDEX[c] for c in tail]] = True
        return super().configure(module)

    def sharpness_step(
        self, module: TrainedModule, images: Tensor, targets: Tensor, batch_idx: int
    ) -> Tensor:
        opt = module.optimizers()
        params = trainable_params(opt)
        tail = self._is_tail.to(targets.device)[targets]
        logits = module(images)
        loss_tail = subset_loss(module.criterion, logits, targets, tail)
        loss_head = subset_loss(module.criterion, logits, targets, ~tail)
        self.record(batch_idx, loss_tail + loss_head)
        with opt.toggle_model(sync_grad=self.sync_perturbation):
            module.manual_backward(loss_tail, retain_graph=True)
        g_tail = [t.detach().clone() for t in grads_or_zeros(params)]
        opt.zero_grad(set_to_none=True)
        with opt.toggle_model(sync_grad=False):  # local head gradient, all-reduced below
            module.manual_backward(loss_head)
        saved = self.perturb(params, g_tail)
        with frozen_bn_stats(module):
            tail_at_e = subset_loss(module.criterion, module(images), targets, tail)
            self.record(batch_idx, tail_at_e, SECOND_PASS)
            module.manual_backward(tail_at_e)  # adds onto the head gradient, one all-reduce
        self.restore(params, saved)
        self.finish_update(module, opt)
        return (loss_tail + loss_head).detach()
