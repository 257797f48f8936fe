"""EMA of the weights on top of Lightning's ``WeightAveraging`` (swap/checkpoint logic reused).

What Lightning's ``EMAWeightAveraging`` (2.6) lacks, and this adds:
- timm-style decay warmup (ModelEmaV3): decay_n = 1 - (1 + n / gamma) ** -power, capped at
  ``decay``, so a short run is not dominated by its random initial weights;
- a foreach update (``torch._foreach_lerp_``) instead of a Python loop over tensors;
- validation of BOTH weight sets each epoch: the raw weights are validated by the normal loop
  (``val/*``), the average in the same epoch on the same batches (``val_ema/*``), no swapping;
- before its first update the average IS the current weights (Lightning #21724 would validate,
  checkpoint or export a never-updated copy of the initial weights);
- ``export``: which weights the checkpoint's ``state_dict`` holds and which ones
  ``trainer.test(ckpt_path=...)`` and the end of ``fit`` leave in the model. Lightning's
  callback restores the RAW weights when testing from a checkpoint after fit;
- the average follows the module's dtype and device: Lightning's ``setup`` copies the module
  BEFORE the precision plugin converts it (``64-true`` -> double, ``16-true``/``bf16-true`` ->
  half), and the float32 copy then breaks the foreach update (float vs double).
Resume restores both weight sets and the update count (hence the warmup position).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from dermlit.checkpoints import LIGHTNING_LAYOUT, to_lightning_layout, to_raw_export_layout


def ema_decay(
    n_updates: int,
    decay: float,
    warmup: bool,
    gamma: float = 1.0,
    power: float = 2 / 3,
    min_decay: float = 0.0,
) -> float:
    """The decay for update number ``n_updates`` (timm ``ModelEmaV3.get_decay``)."""
    if not warmup:
        return decay
    warm = 1.0 - (1.0 + n_updates / gamma) ** -power
    return max(min(warm, decay), min_decay)


def paired_tensors(average: torch.nn.Module, current: torch.nn.Module):
    """``(averaged, current)`` tensor pairs matched by NAME. The average is copied in the
    callback's ``setup``, before ``DermClassifier.setup`` builds the loss from the class counts,
    so the module can hold tensors the copy lacks (a weighted loss's ``criterion.weight``):
    pairing by position would misalign or fail."""
    named = dict(itertools.chain(current.named_parameters(), current.named_buffers()))
    for name, tensor in itertools.chain(average.named_parameters(), average.named_buffers()):
        if name in named:
            yield tensor, named[name]


class EMA(WeightAveraging):
    """``callbacks=ema``: exponential moving average with warmup, validated beside the raw model.

    decay: the final decay (0.999 suits runs of a few thousand steps; timm uses 0.9998+).
    warmup, warmup_gamma, warmup_power, min_decay: timm's decay warmup.
    update_every_n_steps, update_starting_at_step: when to update (optimizer steps).
    validate_ema: log ``val_ema/*`` each validation epoch (costs one more forward per batch).
    export: "ema" or "raw": the weights in the checkpoint's ``state_dict``, tested, and kept at
        the end of fit; the other set is kept in the checkpoint for resuming.
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        warmup_gamma: float = 1.0,
        warmup_power: float = 2 / 3,
        min_decay: float = 0.0,
        update_every_n_steps: int = 1,
        update_starting_at_step: int = 0,
        validate_ema: bool = True,
        export: Literal["ema", "raw"] = "ema",
        device: str | None = None,
        use_buffers: bool = True,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if export not in ("ema", "raw"):
            raise ValueError(f"EMA export must be 'ema' or 'raw', got {export!r}")
        if update_every_n_steps < 1 or update_starting_at_step < 0:
            raise ValueError("EMA update_every_n_steps must be >= 1, update_starting_at_step >= 0")
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=self._update)
        self.decay, self.warmup = decay, warmup
        self.warmup_gamma, self.warmup_power, self.min_decay = warmup_gamma, warmup_power, min_decay
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.validate_ema, self.export = validate_ema, export
        self._metrics = None
        self._loss_sum: Tensor | None = None
        self._loss_count = 0

    # ------------------------------------------------------------------ averaging
    @torch.no_grad()
    def _update(self, ema: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        """``AveragedModel`` calls this per device/dtype group, from the 2nd update on."""
        d = ema_decay(
            int(n_averaged),
            self.decay,
            self.warmup,
            self.warmup_gamma,
            self.warmup_power,
            self.min_decay,
        )
        if torch.is_floating_point(ema[0]):
            torch._foreach_lerp_(ema, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): an average means nothing
            torch._foreach_copy_(ema, current)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:
            return False
        offset = step_idx - self.update_starting_at_step
        return offset >= 0 and offset % self.update_every_n_steps == 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the strategy has moved and converted the module (and a checkpoint has been
        restored into the average), give every averaged tensor the module's dtype and device
        (the device given as ``EMA(device=...)`` is kept)."""
        if self._average_model is not None:
            self._follow_module(pl_module)

    @torch.no_grad()
    def _follow_module(self, pl_module: L.LightningModule) -> None:
        assert self._average_model is not None
        kept = None if self._device is None else torch.device(self._device)  # EMA(device=...)
        for a, c in paired_tensors(self._average_model.module, pl_module):
            device = kept or c.device
            if a.dtype != c.dtype or a.device != device:
                a.data = a.data.to(device=device, dtype=c.dtype)

    @property
    def n_updates(self) -> int:
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    @torch.no_grad()
    def _copy_current_to_average(self, pl_module: L.LightningModule) -> None:
        assert self._average_model is not None
        for a, c in paired_tensors(self._average_model.module, pl_module):
            a.copy_(c)

    def _average_or_current(self, pl_module: L.LightningModule):
        """Before the first update the average is, by definition, the current weights."""
        if self._average_model is None or self.n_updates == 0:
            return pl_module
        return self._average_model.module

    # ------------------------------------------------------------------ validation of both
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # no swap: the loop validates the raw weights; the average runs beside them
        self._metrics = None
        if not self.validate_ema or trainer.sanity_checking:
            return
        metrics = getattr(pl_module, "val_metrics", None)
        if metrics is None:
            rank_zero_warn("EMA: the module has no `val_metrics`; val_ema/* is not logged")
            return
        self._metrics = metrics.clone(prefix="val_ema/").to(pl_module.device)
        self._metrics.reset()
        self._loss_sum, self._loss_count = None, 0

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._metrics is None:
            return
        images, targets = batch
        model = self._average_or_current(pl_module)
        was_training = model.training
        model.eval()
        with trainer.precision_plugin.forward_context():
            logits = model(images)
        model.train(was_training)
        self._metrics.update(logits, targets)
        loss = pl_module.criterion(logits, targets).detach() * len(targets)
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_count += len(targets)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._metrics is None or self._loss_count == 0:
            return
        values = {k: v for k, v in self._metrics.compute().items()}
        values["val_ema/loss"] = self._loss_sum / self._loss_count
        pl_module.log_dict(values, on_epoch=True, sync_dist=True)
        self._metrics.reset()

    # ------------------------------------------------------------------ end of fit, checkpoints
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.export == "ema" and self.n_updates > 0:
            self._copy_average_to_current(pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is not None and self.n_updates == 0:
            self._copy_current_to_average(pl_module)  # never save a never-updated average
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self.export == "raw":
            to_raw_export_layout(checkpoint)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        to_lightning_layout(checkpoint)
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
            return
        # test/validate/predict from a checkpoint: the exported weights, not Lightning's choice
        key = LIGHTNING_LAYOUT[self.export]
        if key in checkpoint:
            pl_module.load_state_dict(checkpoint[key])
