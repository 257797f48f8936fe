"""Refuse a non-finite update BEFORE it reaches the weights, and say which batch caused it.

What the libraries lack: under manual optimization Lightning checks nothing (``detect_anomaly``
is torch's autograd anomaly mode: several times slower and it names an autograd node, not a
batch); torch's ``clip_grad_norm_(error_if_nonfinite=True)`` checks only when clipping, after
the loss is gone. A check after ``opt.step()`` (dermlit before this module) is too late: the
non-finite update is already in the weights and ``global_step`` already counts it.

What is checked, once per optimizer update (one host sync, where the old check had one per
batch): the loss of every forward pass of the update (each micro-batch of an accumulation
window; SAM's first pass at w and second pass at w + e) and the norm of the gradient about to be
stepped. Under fp16 with a GradScaler the gradient is left to the scaler (an overflow there is
expected: it skips the step and lowers the scale); the losses are still checked. Under DDP the
decision is all-reduced, so every rank raises together instead of the others hanging.

What is reported (:class:`NonFiniteUpdateError`, also as attributes): the epoch; the batch
index within the epoch (the first batch whose loss is non-finite; only the window when the
losses are finite and the gradient is not); the pass; the optimizer step of the refused update,
numbered like ``trainer.global_step`` after it (``global_step`` stays one lower); and
``applied=False``: the module is exactly as after the previous step. Parameters and optimizer
state were never touched; the buffers (BatchNorm running statistics, which a bad batch's forward
pass already updated) are restored from a copy taken at the start of the update (one foreach
copy per update, a few microseconds); gradients are cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dermlit.errors import RunFailure
from dermlit.optim.module import TrainedModule

FIRST_PASS = "forward pass"
SECOND_PASS = "SAM second pass (at the perturbed weights w + e)"


@dataclass(frozen=True)
class LossRecord:
    """One forward pass of the update being built: its batch (index within the epoch), which
    pass it was and its loss (a detached scalar; read only when the update is checked)."""

    batch_idx: int
    stage: str
    loss: Tensor


class NonFiniteUpdateError(FloatingPointError, RunFailure):
    """A non-finite loss or gradient; the update was refused (``applied`` is False)."""

    def __init__(
        self,
        message: str,
        *,
        epoch: int,
        batch_idx: int | None,
        window: tuple[int, int],
        stage: str,
        step: int,
        applied: bool = False,
    ) -> None:
        super().__init__(message)
        self.epoch, self.batch_idx, self.window = epoch, batch_idx, window
        self.stage, self.step, self.applied = stage, step, applied


class BufferSnapshot:
    """The module's buffers at the start of an update, to undo what the forward passes of a
    refused update did to them. The copy is preallocated and refreshed in place."""

    def __init__(self) -> None:
        self._saved: list[Tensor] = []

    def take(self, module: nn.Module) -> None:
        live = list(module.buffers())
        same = len(live) == len(self._saved) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
            for a, b in zip(live, self._saved, strict=True)
        )
        if not same:
            self._saved = [b.detach().clone() for b in live]
        elif live:
            torch._foreach_copy_(self._saved, [b.detach() for b in live])

    @torch.no_grad()
    def restore(self, module: nn.Module) -> None:
        live = list(module.buffers())
        if live and len(live) == len(self._saved):
            torch._foreach_copy_(live, self._saved)


def uses_grad_scaler(module: TrainedModule) -> bool:
    plugin = getattr(module.trainer, "precision_plugin", None)
    return getattr(plugin, "scaler", None) is not None


def check_update(
    module: TrainedModule, params: Sequence[Tensor], records: Sequence[LossRecord]
) -> None:
    """Raise :class:`NonFiniteUpdateError` unless every recorded loss and the gradient of
    ``params`` are finite (on every rank). Call it right before ``opt.step()``."""
    flags = [torch.isfinite(r.loss).all() for r in records]
    grads = [p.grad for p in params if p.grad is not None]
    check_grad = bool(grads) and not uses_grad_scaler(module)
    if check_grad:
        norms = torch._foreach_norm(grads)
        flags.append(torch.isfinite(torch.stack([n.float() for n in norms])).all())
    if not flags:
        return
    finite = torch.stack([f.to(flags[0].device) for f in flags]).cpu()  # the one host sync
    local_ok = bool(finite.all())
    if module.trainer.strategy.reduce_boolean_decision(local_ok, all=True):
        return
    raise build_error(module, records, finite, check_grad, local_ok)


def build_error(
    module: TrainedModule,
    records: Sequence[LossRecord],
    finite: Tensor,
    check_grad: bool,
    local_ok: bool,
) -> NonFiniteUpdateError:
    epoch, done = module.current_epoch, module.global_step
    batches = [r.batch_idx for r in records]
    window = (min(batches), max(batches)) if batches else (-1, -1)
    span = f"batch {window[0]}" if window[0] == window[1] else f"batches {window[0]}-{window[1]}"
    bad = [r for r, ok in zip(records, finite[: len(records)].tolist(), strict=True) if not ok]
    if bad:
        first = bad[0]
        batch_idx, stage = first.batch_idx, first.stage
        where = f"non-finite training loss ({first.loss.item()}) at epoch {epoch}, batch "
        where += f"{batch_idx} of the epoch, in the {stage}"
        if window[0] != window[1]:
            where += f" (accumulation window: {span})"
    elif not local_ok and check_grad:
        batch_idx, stage = None, "gradient"
        where = (
            f"non-finite gradient at epoch {epoch}, {span} of the epoch (every loss of the "
            "update is finite: an overflow in the backward pass)"
        )
    else:
        batch_idx, stage = None, "another rank"
        where = (
            f"non-finite loss or gradient on another rank at epoch {epoch}, {span} of the "
            f"epoch (this is rank {module.trainer.global_rank}; that rank names the batch)"
        )
    state = (
        f"optimizer step {done + 1} was NOT applied: parameters, buffers and optimizer state "
        f"are those after step {done} (trainer.global_step stays {done})"
    )
    advice = "Lower the learning rate, enable optim.grad_clip_norm, or check that batch's input."
    return NonFiniteUpdateError(
        f"{where}. {state}. {advice}",
        epoch=epoch,
        batch_idx=batch_idx,
        window=window,
        stage=stage,
        step=done + 1,
    )
