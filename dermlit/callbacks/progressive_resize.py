"""Progressive resizing: the training images grow in equal stages of the epochs, ending at the
size validation and test see.

Why: an epoch at 48 px costs about 0.75x one at 64 px and half one at 80 px on a 2-core CPU
(docs/recipes.md section 10, validation at 80 px included), so
early epochs, which learn coarse colour and shape, can run small and the budget saved buys the
last stage a higher resolution (FFCV's ResNet recipes and MosaicML Composer's
``ProgressiveResizing`` do this for their own trainers; Lightning and timm have no callback for
it). The cache holds ``data.image_size``; a stage below scale 1 downsamples each training batch
on the device (antialiased bilinear, ``DermClassifier.prepare``) before the augmentation. The
stages are scales of the cache's size, so a recipe keeps its shape under another
``data.image_size``.

The stage is a function of ``trainer.current_epoch`` and ``trainer.max_epochs`` only, so a resumed
run trains at the size it would have had (extending ``max_epochs`` re-plans the stages, as it
re-plans the LR schedule). With as many stages as ``optim=adamw_restarts`` has cycles, each LR
cycle trains at one size.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback

from dermlit.errors import InputError


def stage_scale(scales: Sequence[float], epoch: int, max_epochs: int) -> float:
    """The scale at ``epoch``: ``scales[k]`` for epochs ``[k, k + 1) * max_epochs / len``."""
    stage = min(epoch * len(scales) // max(max_epochs, 1), len(scales) - 1)
    return float(scales[stage])


class ProgressiveResize(Callback):
    """Sets ``pl_module.train_image_scale`` at each training epoch's start (``scales`` of
    ``data.image_size`` in equal stages of ``trainer.max_epochs``) and logs it as
    ``train/image_scale``; after fit the model sees the cache's size again."""

    def __init__(self, scales: Sequence[float]) -> None:
        scales = [float(s) for s in scales]
        if not scales or any(not 0.0 < s <= 1.0 for s in scales):
            raise ValueError(
                f"ProgressiveResize scales must be in (0, 1] (fractions of data.image_size), "
                f"got {scales}"
            )
        if scales != sorted(scales) or scales[-1] != 1.0:
            raise ValueError(
                f"ProgressiveResize scales {scales} must grow and end at 1.0: the last stage "
                "trains at data.image_size, the size validation and test see"
            )
        self.scales = scales

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            # the stages are fractions of the epochs: without a count every epoch after the
            # first trained at the last stage (max_epochs=-1 was read as a 1-epoch run)
            raise InputError(
                f"resize=progressive splits trainer.max_epochs into {len(self.scales)} stages, "
                f"but trainer.max_epochs is {trainer.max_epochs}: give a number of epochs"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scale = stage_scale(self.scales, trainer.current_epoch, int(trainer.max_epochs))
        pl_module.train_image_scale = scale
        pl_module.log("train/image_scale", scale, on_step=False, on_epoch=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.train_image_scale = None
