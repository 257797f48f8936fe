"""One optimisation step under Lightning's manual optimization.

Lightning's automatic loop cannot run two forward-backward passes per step (SAM), so
``DermClassifier`` sets ``automatic_optimization = False`` and delegates each training batch to
an :class:`UpdateRule` from the ``optim/`` config group. Manual optimization makes
``Trainer(gradient_clip_val=, accumulate_grad_batches=)`` raise, so both live here instead.

Every update rule records the loss of each forward pass (:meth:`UpdateRule.record`) and ends
each update in :meth:`UpdateRule.finish_update`, which refuses a non-finite loss or gradient
before ``opt.step()`` (``dermlit/optim/guard.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor
from torch.optim import Optimizer

from dermlit.optim.guard import (
    FIRST_PASS,
    BufferSnapshot,
    LossRecord,
    NonFiniteUpdateError,
    check_update,
)
from dermlit.optim.module import TrainedModule
from dermlit.optim.replan import replan


@dataclass
class UpdateRule:
    """An update rule wrapping a torch optimizer: the base optimizer (any ``torch.optim``
    class, as a partial), its LR schedule, and how one training batch becomes an update
    (forward, backward, accumulate, clip, step). SAM and its variants subclass it.

    ``interval`` says whether the scheduler steps per optimizer step or per epoch.
    ``accumulate_grad_batches`` sums gradients over that many batches before a step.
    """

    optimizer: Callable[..., Optimizer]
    scheduler: Callable[..., Any] | None = None
    interval: Literal["step", "epoch"] = "epoch"
    grad_clip_norm: float | None = None
    accumulate_grad_batches: int = 1
    _records: list[LossRecord] = field(default_factory=list, init=False, repr=False)
    _buffers: BufferSnapshot = field(default_factory=BufferSnapshot, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.interval not in ("step", "epoch"):
            raise ValueError(f"optim.interval must be 'step' or 'epoch', got {self.interval!r}")
        if self.accumulate_grad_batches < 1:
            raise ValueError("optim.accumulate_grad_batches must be >= 1")

    def configure(self, module: TrainedModule) -> dict:
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = self.optimizer(params)
        if self.scheduler is None:
            return {"optimizer": optimizer}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": self.interval},
        }

    def replan_schedule(self, module: TrainedModule) -> None:
        """On resume: the restored scheduler takes the configured plan (a new
        ``trainer.max_epochs``), keeping its progress (:mod:`dermlit.optim.replan`)."""
        schedulers = module.lr_schedulers()
        if self.scheduler is None or schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            replan(scheduler, self.scheduler)

    def state_dict(self) -> dict[str, Any]:
        """Update-rule state beyond the base optimizer (e.g. LookSAM's g_v); checkpointed by
        ``DermClassifier.on_save_checkpoint``. Plain steps have none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def is_update_batch(self, module: TrainedModule, batch_idx: int) -> bool:
        """True on the batch that ends an accumulation window (or the epoch's last batch)."""
        k = self.accumulate_grad_batches
        return (batch_idx + 1) % k == 0 or bool(module.trainer.is_last_batch)

    def step(
        self, module: TrainedModule, images: Tensor, targets: Tensor, batch_idx: int
    ) -> Tensor:
        """Forward, backward, and on the window's last batch clip + step: returns the loss."""
        opt = module.optimizers()
        loss = module.criterion(module(images), targets)
        self.record(batch_idx, loss)
        module.manual_backward(loss / self.accumulate_grad_batches)
        if self.is_update_batch(module, batch_idx):
            self.finish_update(module, opt)
        return loss.detach()

    def begin_batch(self, module: TrainedModule) -> None:
        """Called before each training batch: at the start of an update, copy the buffers."""
        if not self._records:
            self._buffers.take(module)

    def record(self, batch_idx: int, loss: Tensor, stage: str = FIRST_PASS) -> None:
        """Note a forward pass's loss for the finiteness check of the update (no host sync)."""
        self._records.append(LossRecord(batch_idx, stage, loss.detach()))

    def finish_update(self, module: TrainedModule, opt) -> None:
        """Check, clip, step, schedule. A non-finite recorded loss or gradient raises
        :class:`~dermlit.optim.guard.NonFiniteUpdateError` BEFORE ``opt.step()``."""
        records, self._records = self._records, []
        params = [p for group in opt.param_groups for p in group["params"]]
        try:
            check_update(module, params, records)
        except NonFiniteUpdateError:
            opt.zero_grad(set_to_none=True)
            self._buffers.restore(module)
            raise
        if self.grad_clip_norm:
            module.clip_gradients(opt, self.grad_clip_norm, gradient_clip_algorithm="norm")
        opt.step()  # exactly one wrapper step() per update: this advances trainer.global_step
        opt.zero_grad(set_to_none=True)
        if self.interval == "step":
            step_schedulers(module)


def step_schedulers(module: TrainedModule) -> None:
    schedulers = module.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler.step()


#: the name before issue 18: run directories written earlier (``.hydra/resolved.yaml`` of
#: ``dermlit-eval``, docs/results/) target ``dermlit.optim.Optimization``
Optimization = UpdateRule
