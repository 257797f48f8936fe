"""LookSAM: SAM's second pass only every k steps (Liu et al., "Towards Efficient and Scalable
Sharpness-Aware Minimization", CVPR 2022, arXiv:2203.02714).

On every k-th step LookSAM runs full SAM and keeps g_v, the component of the SAM gradient g_s
orthogonal to the plain gradient g: g_v = g_s - (<g, g_s> / ||g||^2) g. On the k-1 steps in
between it runs ONE forward-backward and steps with g + alpha * (||g|| / ||g_v||) * g_v, so the
cost is about (k + 1) / k plain steps instead of 2. This is the global (not layer-wise) variant
of the paper's Algorithm 1. g_v is part of the checkpoint (via ``state_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from dermlit.optim.sam import SAM, frozen_bn_stats, global_norm, grads_or_zeros, trainable_params

if TYPE_CHECKING:
    from dermlit.models.classifier import DermClassifier


@dataclass
class LookSAM(SAM):
    """``optim=looksam``: k (full SAM every k optimizer steps), alpha (weight of the reused
    g_v). Refuses gradient accumulation: the reuse rule is defined per optimizer step."""

    k: int = 5
    alpha: float = 0.7
    _g_v: list[Tensor] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError(f"optim.k must be >= 1, got {self.k}")
        if self.accumulate_grad_batches != 1:
            raise ValueError(
                "LookSAM does not support optim.accumulate_grad_batches > 1 (its reuse schedule "
                "is per optimizer step); use optim=sam for accumulation, or a larger batch"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"g_v": None if self._g_v is None else [t.detach().cpu() for t in self._g_v]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._g_v = state.get("g_v")

    def sharpness_step(
        self, module: DermClassifier, images: Tensor, targets: Tensor, batch_idx: int
    ) -> Tensor:
        opt = module.optimizers()
        params = trainable_params(opt)
        if self._g_v is None or module.global_step % self.k == 0:
            loss = self._sam_step(module, opt, params, images, targets)
        else:
            loss = module.criterion(module(images), targets)
            module.manual_backward(loss)  # synced under DDP: it is the step's gradient
            self._reuse(params)
        self.finish_update(module, opt)
        return loss.detach()

    def _sam_step(
        self, module, opt, params: list[Tensor], images: Tensor, targets: Tensor
    ) -> Tensor:
        with opt.toggle_model(sync_grad=self.sync_perturbation):
            loss = module.criterion(module(images), targets)
            module.manual_backward(loss)
        g = [t.detach().clone() for t in grads_or_zeros(params)]
        saved = self.perturb(params, g)
        opt.zero_grad(set_to_none=True)
        with frozen_bn_stats(module):
            module.manual_backward(module.criterion(module(images), targets))
        self.restore(params, saved)
        with torch.no_grad():
            g_s = grads_or_zeros(params)
            dot = torch.stack([(a * b).sum() for a, b in zip(g, g_s, strict=True)]).sum()
            coef = dot / (global_norm(g) ** 2 + self.eps)
            g_v = torch._foreach_sub(g_s, torch._foreach_mul(g, coef))
            if not self.sync_perturbation and dist.is_available() and dist.is_initialized():
                # g is per-device, so g_v is too; average it or the reuse steps diverge ranks
                for t in g_v:
                    dist.all_reduce(t)
                torch._foreach_div_(g_v, dist.get_world_size())
        self._g_v = g_v
        return loss

    @torch.no_grad()
    def _reuse(self, params: list[Tensor]) -> None:
        g = grads_or_zeros(params)
        g_v = [t.to(p.device, p.dtype) for t, p in zip(self._g_v, params, strict=True)]
        self._g_v = g_v
        coef = self.alpha * global_norm(g) / (global_norm(g_v) + self.eps)
        for p, grad in zip(params, g, strict=True):
            if p.grad is None:
                p.grad = grad
        torch._foreach_add_([p.grad for p in params], torch._foreach_mul(g_v, coef))
