"""Progressive resizing: the training images grow in equal stages of the epochs, ending at the
size validation and test see.

Why: an epoch at 48 px costs about half one at 64 px and a third of one at 80 px on a CPU, so
early epochs, which learn coarse colour and shape, can run small and the budget saved buys the
last stage a higher resolution (FFCV's ResNet recipes and MosaicML Composer's
``ProgressiveResizing`` do this for their own trainers; Lightning and timm have no callback for
it). The cache holds ``data.image_size``; a smaller stage downsamples each training batch on the
device (antialiased bilinear, ``DermClassifier.prepare``) before the augmentation.

The stage is a function of ``trainer.current_epoch`` and ``trainer.max_epochs`` only, so a resumed
run trains at the size it would have had (extending ``max_epochs`` re-plans the stages, as it
re-plans the LR schedule). With as many stages as ``optim=adamw_restarts`` has cycles, each LR
cycle trains at one size.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback


def stage_size(sizes: Sequence[int], epoch: int, max_epochs: int) -> int:
    """The training size at ``epoch``: ``sizes[k]`` for epochs ``[k, k + 1) * max_epochs / len``."""
    stage = min(epoch * len(sizes) // max(max_epochs, 1), len(sizes) - 1)
    return int(sizes[stage])


class ProgressiveResize(Callback):
    """Sets ``pl_module.train_image_size`` at each training epoch's start (``sizes`` in equal
    stages of ``trainer.max_epochs``) and logs it as ``train/image_size``."""

    def __init__(self, sizes: Sequence[int]) -> None:
        sizes = [int(s) for s in sizes]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"ProgressiveResize sizes must be positive pixel sizes, got {sizes}")
        if sizes != sorted(sizes):
            raise ValueError(
                f"ProgressiveResize sizes {sizes} must not shrink: the last stage trains at the "
                "size validation and test see"
            )
        self.sizes = sizes

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        image_size = getattr(datamodule, "image_size", None)
        if image_size is not None and self.sizes[-1] != int(image_size):
            raise ValueError(
                f"ProgressiveResize sizes {self.sizes} end at {self.sizes[-1]} px, but "
                f"data.image_size is {image_size}: the last stage must train at the size "
                f"validation and test see; set data.image_size={self.sizes[-1]} or end the "
                f"sizes at {image_size}"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        size = stage_size(self.sizes, trainer.current_epoch, int(trainer.max_epochs or 1))
        pl_module.train_image_size = size
        pl_module.log("train/image_size", float(size), on_step=False, on_epoch=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.train_image_size = None
