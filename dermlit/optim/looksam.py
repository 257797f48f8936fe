"""LookSAM: SAM's second pass only every k steps (Liu et al., "Towards Efficient and Scalable
Sharpness-Aware Minimization", CVPR 2022, arXiv:2203.02714).

On every k-th step LookSAM runs full SAM and keeps g_v, the component of the SAM gradient g_s
orthogonal to the plain gradient g_k of that step: g_v = g_s - (<g_k, g_s> / ||g_k||^2) g_k. On
the k-1 steps in between it runs ONE forward-backward and steps with g + c * g_v, so the cost is
about (k + 1) / k plain steps instead of 2. g_v is part of the checkpoint (via ``state_dict``).

The factor c (``scale``):
- ``measured`` (default): c = alpha * ||g|| / ||g_k||. g_v keeps the size, relative to the
  gradient, that the SAM step measured for it (with alpha = 1 a reuse step adds what SAM added).
- ``gradient``: c = alpha * ||g|| / ||g_v||, the paper's Algorithm 1 (dermlit's first rule):
  the reused term is always alpha = 0.7 times the gradient's norm.

Why ``measured`` (numbers: ``benchmarks/looksam_curves.py``, docs/looksam_curves*.png): g_v is
not the slowly changing direction the paper reports at ViT scale. With ResNet-18 at batch 32-64
the cosine between consecutive g_v (k = 5 steps apart) is ~0.0-0.05, and ||g_v|| is 0.15-0.45 of
||g_s|| after the first steps. The paper's rule therefore adds, on four steps in five, a
direction unrelated to the current batch, blown up 2-5x to 70 % of the gradient's norm (in some
tensors 1.4-2.5x that tensor's own gradient). Training stalls with AdamW (HAM10000, 15 epochs:
loss 1.14 vs 0.12) and, on a 12-epoch synthetic run, with SGD too (1.34 vs 0.61; full SAM 0.73).
Per-tensor scaling (``layerwise``: the paper's layer-wise variant, = ``pytorch_optimizer.
LookSAM``) caps each tensor at alpha x its gradient but keeps the blow-up, and does not help
(AdamW 0.98, SGD 1.55). The measured scale brings LookSAM to full SAM's training loss (SGD 0.72 vs
0.73; AdamW 0.59 vs 0.43, AdamW alone 0.22). The layer-wise measured scale is refused: a tensor
whose gradient was ~0 at the SAM step gets an unbounded factor (4e8 seen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from dermlit.optim.guard import SECOND_PASS
from dermlit.optim.module import TrainedModule
from dermlit.optim.sam import SAM, frozen_bn_stats, grads_or_zeros, trainable_params


@dataclass
class LookSAM(SAM):
    """``optim=looksam``: k (full SAM every k optimizer steps), alpha (weight of the reused
    g_v), scale (``measured`` | ``gradient``: see the module docstring), layerwise (g_v and the
    scale per parameter tensor; with ``scale=gradient`` only). Refuses gradient accumulation:
    the reuse rule is defined per optimizer step."""

    k: int = 5
    alpha: float = 0.7
    layerwise: bool = False
    scale: Literal["gradient", "measured"] = "measured"
    _g_v: list[Tensor] | None = field(default=None, init=False, repr=False)
    #: per-tensor norms of the plain gradient of the SAM step that measured g_v
    _g_norm: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale not in ("gradient", "measured"):
            raise ValueError(f"optim.scale must be 'gradient' or 'measured', got {self.scale!r}")
        if self.layerwise and self.scale == "measured":
            raise ValueError(
                "LookSAM: optim.layerwise=true with scale=measured is refused: a tensor whose "
                "gradient was ~0 at the SAM step would get an unbounded factor ||g_i|| / "
                "||g_k,i|| (seen: 4e8); use layerwise=false, or scale=gradient (the paper's "
                "layer-wise rule)"
            )
        if self.k < 1:
            raise ValueError(f"optim.k must be >= 1, got {self.k}")
        if self.accumulate_grad_batches != 1:
            raise ValueError(
                "LookSAM does not support optim.accumulate_grad_batches > 1 (its reuse schedule "
                "is per optimizer step); use optim=sam for accumulation, or a larger batch"
            )

    def state_dict(self) -> dict[str, Any]:
        if self._g_v is None:
            return {"g_v": None, "g_norm": None}
        return {"g_v": [t.detach().cpu() for t in self._g_v], "g_norm": self._g_norm.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint of the first LookSAM (g_v without g_norm) restarts the reuse cycle: the
        next step is a full SAM step that measures both."""
        self._g_v, self._g_norm = state.get("g_v"), state.get("g_norm")
        if self._g_norm is None:
            self._g_v = None

    def sharpness_step(
        self, module: TrainedModule, images: Tensor, targets: Tensor, batch_idx: int
    ) -> Tensor:
        opt = module.optimizers()
        params = trainable_params(opt)
        if self._g_v is None or module.global_step % self.k == 0:
            loss, measured = self._sam_step(module, opt, params, images, targets, batch_idx)
        else:
            loss = module.criterion(module(images), targets)
            self.record(batch_idx, loss)
            module.manual_backward(loss)  # synced under DDP: it is the step's gradient
            measured = self._reuse(params)
        self.finish_update(module, opt)  # raises on a non-finite update: g_v is not kept either
        self._g_v, self._g_norm = measured
        return loss.detach()

    def _sam_step(
        self, module, opt, params: list[Tensor], images: Tensor, targets: Tensor, batch_idx: int
    ) -> tuple[Tensor, tuple[list[Tensor], Tensor]]:
        """A full SAM step; returns its loss and the measured (g_v, per-tensor ||g_k||)."""
        with opt.toggle_model(sync_grad=self.sync_perturbation):
            loss = module.criterion(module(images), targets)
            self.record(batch_idx, loss)
            module.manual_backward(loss)
        g = [t.detach().clone() for t in grads_or_zeros(params)]
        saved = self.perturb(params, g)
        opt.zero_grad(set_to_none=True)
        with frozen_bn_stats(module):
            loss_at_e = module.criterion(module(images), targets)
            self.record(batch_idx, loss_at_e, SECOND_PASS)
            module.manual_backward(loss_at_e)
        self.restore(params, saved)
        with torch.no_grad():
            g_s = grads_or_zeros(params)
            g_v = orthogonal_component(g_s, g, self.layerwise, self.eps)
            g_norm = torch.stack(torch._foreach_norm(g))
            if not self.sync_perturbation and dist.is_available() and dist.is_initialized():
                # g is per-device, so g_v is too; average it or the reuse steps diverge ranks.
                # The mean of the devices' ||g_k|| is >= the norm of their mean gradient: the
                # measured scale is then, if anything, smaller than on one device.
                for t in [*g_v, g_norm]:
                    dist.all_reduce(t)
                torch._foreach_div_([*g_v, g_norm], dist.get_world_size())
        return loss, (g_v, g_norm)

    @torch.no_grad()
    def _reuse(self, params: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Add the reused g_v to the plain gradient; returns (g_v on the parameters' device,
        the stored ||g_k||), kept only once the step is applied."""
        g = grads_or_zeros(params)
        g_v = [t.to(p.device, p.dtype) for t, p in zip(self._g_v, params, strict=True)]
        reference = None if self.scale == "gradient" else self._g_norm.to(g[0].device)
        scale = reuse_scale(g, g_v, self.alpha, self.layerwise, self.eps, reference)
        for p, grad in zip(params, g, strict=True):
            if p.grad is None:
                p.grad = grad
        torch._foreach_add_([p.grad for p in params], torch._foreach_mul(g_v, scale))
        return g_v, self._g_norm


def per_tensor_dots(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)])


def orthogonal_component(
    g_s: Sequence[Tensor], g: Sequence[Tensor], layerwise: bool, eps: float
) -> list[Tensor]:
    """g_v = g_s - (<g, g_s> / ||g||^2) g, over all parameters, or per tensor (layerwise)."""
    dots = per_tensor_dots(g, g_s)
    sq = torch.stack(torch._foreach_norm(list(g))) ** 2
    if layerwise:
        coef = list((dots / (sq + eps)).unbind())
    else:
        coef = dots.sum() / (sq.sum() + eps)
    return torch._foreach_sub(list(g_s), torch._foreach_mul(list(g), coef))


def reuse_scale(
    g: Sequence[Tensor],
    g_v: Sequence[Tensor],
    alpha: float,
    layerwise: bool,
    eps: float,
    measured_g_norm: Tensor | None = None,
) -> Tensor | list[Tensor]:
    """The factor on g_v: alpha ||g|| / ||g_v|| (the paper: the reuse term is alpha times the
    gradient's norm), or with ``measured_g_norm`` (per-tensor norms of the plain gradient g_k
    of the SAM step) alpha ||g|| / ||g_k||: g_v keeps the size relative to the gradient that
    the SAM step measured. One number, or one per tensor (layerwise)."""
    g_norm = torch.stack(torch._foreach_norm(list(g)))
    ref = (
        torch.stack(torch._foreach_norm(list(g_v))) if measured_g_norm is None else measured_g_norm
    )
    if layerwise:
        return list((alpha * g_norm / (ref + eps)).unbind())
    return alpha * torch.linalg.vector_norm(g_norm) / (torch.linalg.vector_norm(ref) + eps)
