"""Sharpness-aware minimization (SAM, ASAM) as an :class:`UpdateRule` for manual optimization.

SAM (Foret et al., ICLR 2021, arXiv:2010.01412) minimises the loss at the worst point of a
rho-ball: it takes the gradient g at w, ascends to w + e with e = rho * g / ||g||, takes the
gradient there and applies THAT gradient to w with the base optimizer. ASAM (Kwon et al.,
ICML 2021, arXiv:2102.11600) makes the ball scale-invariant: e = rho * w^2 g / || |w| g ||.
The update matches davda54/sam and ``pytorch_optimizer.SAM`` (tested against the latter).

Late-phase SAM (``optim.start``): Zhou et al., "Sharpness-Aware Minimization Efficiently Selects
Flatter Minima Late in Training" (ICLR 2025, arXiv:2410.10373) find that switching from the base
optimizer to SAM for the last few epochs gives nearly the generalisation and flatness of SAM
throughout, at a fraction of its cost. Before ``start`` every variant takes plain steps (one
forward-backward); the phase is a pure function of the epoch and ``trainer.max_epochs``, so a
resumed run switches exactly where an uninterrupted one does.

Why not a SAM ``torch.optim.Optimizer`` wrapper: calling its ``first_step/second_step``
through Lightning's optimizer wrapper never reaches ``step()``, so ``global_step`` stalls
(Lightning #16143, #17167), and the wrapper's ``state_dict`` would hide the base optimizer's
state. Here the base optimizer is a plain torch optimizer that Lightning checkpoints, and each
SAM update ends in exactly one ``opt.step()`` through the wrapper.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from dermlit.errors import InputError
from dermlit.optim.base import UpdateRule
from dermlit.optim.guard import SECOND_PASS
from dermlit.optim.module import TrainedModule

log = logging.getLogger(__name__)

FP16_PRECISIONS = ("16-mixed", "16", "16-mixed-amp")
#: tolerance of the fraction -> epoch conversion (0.57 * 100 is 56.99999999999999)
_FRACTION_EPS = 1e-9


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but leave running stats (and
    ``num_batches_tracked``) untouched: the second SAM pass must not count the batch twice.

    Setting ``track_running_stats=False`` in train mode does exactly that in torch's
    ``_BatchNorm``/``SyncBatchNorm`` (and timm's subclasses); momentum 0 would still bump
    ``num_batches_tracked`` and breaks ``momentum=None`` (cumulative averaging).
    """
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def trainable_params(opt) -> list[Tensor]:
    return [p for group in opt.param_groups for p in group["params"] if p.requires_grad]


def grads_or_zeros(params: Sequence[Tensor]) -> list[Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


def refuse_fp16(module: TrainedModule, name: str) -> None:
    """fp16 AMP is refused rather than half-supported: Lightning's precision plugin calls
    ``scaler.step(optimizer)`` once per step and a GradScaler cannot unscale twice, so the
    perturbation norm would be computed on scaled (possibly inf) gradients."""
    precision = str(getattr(module.trainer, "precision", "32-true"))
    if precision in FP16_PRECISIONS:
        raise ValueError(
            f"{name} does not support trainer.precision={precision!r} (fp16 with a GradScaler): "
            "the perturbation needs unscaled gradients and the scaler unscales only once per "
            "step. Use trainer.precision=bf16-mixed (GPU/CPU) or 32-true."
        )


@dataclass
class SAM(UpdateRule):
    """SAM/ASAM update (``optim=sam``, ``optim=asam``) around any torch optimizer.

    rho: radius of the neighbourhood (ASAM typically needs ~10x larger, e.g. 0.5-2.0).
    adaptive: ASAM's elementwise |w| scaling of the perturbation.
    sync_perturbation: under DDP, all-reduce the first gradient too (one perturbation for all
        devices). Default False: each device perturbs with its own gradient, as in the paper
        (m-sharpness), which also saves one all-reduce per step.
    start: late-phase SAM. ``None`` (or 0): the sharpness-aware update from the first step. A
        float in (0, 1): the fraction of ``trainer.max_epochs`` after which SAM starts, at epoch
        ``floor(start * max_epochs)`` (so at least the last ``1 - start`` of the epochs are
        SAM); an int: the (0-based) epoch at which SAM starts. Epochs before it take plain base
        optimizer steps. 1.0 (no SAM step at all) and an epoch >= max_epochs are refused.

    Gradient accumulation (``accumulate_grad_batches=k``): SAM over the effective batch of k
    micro-batches. The first-pass gradients of the k batches are summed, ONE perturbation is
    computed from the sum, then the k stored (already augmented) batches are re-run at w + e
    and their gradients summed for the single base-optimizer step. This equals SAM on the
    concatenated batch (up to BatchNorm batch statistics), at the cost of keeping k batches
    on the device. Clipping (``grad_clip_norm``) applies to the gradient that is stepped.
    """

    rho: float = 0.05
    adaptive: bool = False
    sync_perturbation: bool = False
    start: float | int | None = None
    eps: float = 1e-12
    _window: list[tuple[int, Tensor, Tensor]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rho <= 0:
            raise ValueError(f"optim.rho must be > 0, got {self.rho}")
        check_start(self.start)

    def configure(self, module: TrainedModule) -> dict:
        refuse_fp16(module, type(self).__name__)
        self.start_epoch(module.trainer.max_epochs)  # refuses a start SAM would never reach
        return super().configure(module)

    # ------------------------------------------------------------------ late phase
    def start_epoch(self, max_epochs: int | None) -> int:
        """The first epoch of the sharpness-aware phase, for a run of ``max_epochs``."""
        return sam_start_epoch(self.start, max_epochs)

    def sam_active(self, module: TrainedModule) -> bool:
        """A pure function of the (restored) epoch and ``trainer.max_epochs``."""
        if not self.start:
            return True
        return module.current_epoch >= self.start_epoch(module.trainer.max_epochs)

    # ------------------------------------------------------------------ maths
    @torch.no_grad()
    def perturb(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> list[Tensor]:
        """Move ``params`` to w + e(w) in place; returns copies of w for :meth:`restore`."""
        params, grads = list(params), list(grads)
        if self.adaptive:
            abs_w = torch._foreach_abs(params)
            norm = global_norm(torch._foreach_mul(grads, abs_w))
        else:
            norm = global_norm(grads)
        scale = self.rho / (norm + self.eps)
        e = torch._foreach_mul(grads, scale)
        if self.adaptive:
            torch._foreach_mul_(e, torch._foreach_mul(abs_w, abs_w))
        saved = [p.detach().clone() for p in params]
        torch._foreach_add_(params, e)
        return saved

    @staticmethod
    @torch.no_grad()
    def restore(params: Sequence[Tensor], saved: Sequence[Tensor]) -> None:
        """Copy w back (exact, unlike subtracting e again)."""
        torch._foreach_copy_(list(params), list(saved))

    # ------------------------------------------------------------------ the update
    def step(
        self, module: TrainedModule, images: Tensor, targets: Tensor, batch_idx: int
    ) -> Tensor:
        """A plain base-optimizer step before ``start``, the sharpness-aware update after."""
        active = self.sam_active(module)
        if self.start:
            if (
                active
                and batch_idx == 0
                and module.current_epoch == self.start_epoch(module.trainer.max_epochs)
            ):
                log.info(
                    "epoch %d: %s starts (optim.start=%s)",
                    module.current_epoch,
                    type(self).__name__,
                    self.start,
                )
            module.log("train/sam_phase", float(active), on_step=False, on_epoch=True)
        if not active:
            return UpdateRule.step(self, module, images, targets, batch_idx)
        return self.sharpness_step(module, images, targets, batch_idx)

    def sharpness_step(
        self, module: TrainedModule, images: Tensor, targets: Tensor, batch_idx: int
    ) -> Tensor:
        """SAM/ASAM, with gradient accumulation over ``accumulate_grad_batches`` batches."""
        opt = module.optimizers()
        k = self.accumulate_grad_batches
        last = self.is_update_batch(module, batch_idx)
        self._window.append((batch_idx, images, targets))
        with opt.toggle_model(sync_grad=self.sync_perturbation and last):
            loss = module.criterion(module(images), targets)
            self.record(batch_idx, loss)
            module.manual_backward(loss / k)
        if not last:
            return loss.detach()
        params = [p for p in trainable_params(opt) if p.grad is not None]
        saved = self.perturb(params, [p.grad for p in params])
        opt.zero_grad(set_to_none=True)
        with frozen_bn_stats(module):
            for i, (idx, x, y) in enumerate(self._window):
                # DDP: sum the k local gradients, all-reduce once with the last backward
                with opt.toggle_model(sync_grad=i == len(self._window) - 1):
                    loss_at_e = module.criterion(module(x), y)
                    self.record(idx, loss_at_e, SECOND_PASS)
                    module.manual_backward(loss_at_e / k)
        self._window.clear()
        self.restore(params, saved)
        self.finish_update(module, opt)
        return loss.detach()


def check_start(start: object) -> None:
    """Refuse a late-phase ``optim.start`` that is neither None, an epoch nor a fraction
    (``InputError``: dermlit-train prints the message, no traceback)."""
    if start is None:
        return
    hint = (
        "optim.start is a fraction of training in [0, 1) (e.g. 0.8: SAM for the last 20 % of "
        "the epochs), an integer epoch (e.g. 12), or null (SAM throughout)"
    )
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise InputError(f"{hint}; got {start!r}")
    if isinstance(start, float) and not 0.0 <= start < 1.0:
        extra = " (1.0 would run no SAM step at all: use the base optimizer)" if start == 1 else ""
        raise InputError(f"{hint}; got {start!r}{extra}")
    if isinstance(start, int) and start < 0:
        raise InputError(f"{hint}; got {start!r}")


def sam_start_epoch(start: float | int | None, max_epochs: int | None) -> int:
    """``start`` as an epoch of a run of ``max_epochs``: a fraction is floored, so the SAM
    phase holds at least ``1 - start`` of the epochs; refuses an epoch SAM would never reach."""
    check_start(start)
    if not start:
        return 0
    if isinstance(start, float):
        if max_epochs is None or max_epochs < 1:
            raise InputError(
                f"optim.start={start} is a fraction of trainer.max_epochs, which is not set "
                f"({max_epochs}): give the epoch at which SAM starts (an integer) instead"
            )
        return math.floor(start * max_epochs + _FRACTION_EPS)
    if max_epochs is not None and max_epochs >= 1 and start >= max_epochs:
        raise InputError(
            f"optim.start={start} is an epoch, but training stops after trainer.max_epochs="
            f"{max_epochs} (epochs 0-{max_epochs - 1}): SAM would never run; use a smaller "
            "epoch or a fraction such as 0.8"
        )
    return start
