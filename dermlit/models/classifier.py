"""DermClassifier: a timm backbone trained with manual optimization and epoch-level metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassRecall,
)

from dermlit.checkpoints import OPTIM_STATE, train_raw_weights
from dermlit.constants import NUM_CLASSES
from dermlit.models.tta import TestTimeAugmentation
from dermlit.optim.base import UpdateRule, step_schedulers


def classification_metrics(prefix: str) -> MetricCollection:
    """Epoch-accumulated macro-F1, balanced accuracy (macro recall) and accuracy."""
    return MetricCollection(
        {
            "macro_f1": MulticlassF1Score(NUM_CLASSES, average="macro"),
            "balanced_accuracy": MulticlassRecall(NUM_CLASSES, average="macro"),
            "accuracy": MulticlassAccuracy(NUM_CLASSES, average="micro"),
        },
        prefix=prefix,
    )


def downsampled(x: Tensor, scale: float | None) -> Tensor:
    """``x`` (N, C, H, W) scaled by ``scale`` (its longer side to ``round(scale * side)`` px,
    the aspect kept; antialiased bilinear); unchanged when ``scale`` is None or 1. Above 1 is
    refused: it would train on detail the cache does not hold."""
    if scale is None or scale == 1.0:
        return x
    if not 0.0 < scale < 1.0:
        raise ValueError(
            f"training image scale {scale} is outside (0, 1]: a batch can only be downsampled "
            "from the cache; raise data.image_size instead"
        )
    height, width = x.shape[-2:]
    factor = max(1, round(scale * max(height, width))) / max(height, width)
    target = (max(1, round(height * factor)), max(1, round(width * factor)))
    return F.interpolate(x, size=target, mode="bilinear", antialias=True, align_corners=False)


class DermClassifier(L.LightningModule):
    """Images arrive as uint8 HWC; ``on_after_batch_transfer`` converts them on the device,
    augments (training only, in [0, 1]) and normalises, so both SAM passes see one batch.

    The loss is built in ``setup`` from the datamodule's TRAIN class counts. ``tta`` averages
    the test and predict outputs over flips/rotations (``conf/tta/``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        optim: UpdateRule,
        loss: Callable[..., nn.Module] | None = None,
        augment: nn.Module | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        channels_last: bool = False,
        tta: TestTimeAugmentation | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.backbone = backbone
        self.optim = optim
        self.loss_factory = loss
        self.augment = augment if augment is not None else nn.Identity()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.channels_last = channels_last
        # the training batches' scale of the cache's size (set per epoch by
        # dermlit.callbacks.progressive_resize.ProgressiveResize); None: the cache's size
        self.train_image_scale: float | None = None
        # test and predict only: the per-epoch validation that picks checkpoints stays one pass
        self.tta = tta if tta is not None else TestTimeAugmentation()
        self.criterion: nn.Module = nn.CrossEntropyLoss()
        self.val_metrics = classification_metrics("val/")
        self.test_metrics = classification_metrics("test/")
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.loss_factory is not None and datamodule is not None:
            self.criterion = self.loss_factory(class_counts=datamodule.class_counts)

    def configure_optimizers(self):
        return self.optim.configure(self)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[OPTIM_STATE] = self.optim.state_dict()  # e.g. LookSAM's g_v

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.optim.load_state_dict(checkpoint.get(OPTIM_STATE, {}))
        # A checkpoint written with EMA holds the average in its state_dict beside the trained
        # weights (dermlit/checkpoints.py); resuming fit WITHOUT the EMA callback trains the latter.
        trainer = self._trainer
        averaging = any(isinstance(c, WeightAveraging) for c in getattr(trainer, "callbacks", []))
        fitting = trainer is not None and trainer.state.fn == "fit"
        if not averaging and fitting:
            train_raw_weights(checkpoint)

    # ------------------------------------------------------------------ data on device
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, targets = batch
        training = self._trainer is not None and self.trainer.training
        return self.prepare(images, augment=training), targets

    def prepare(self, images: Tensor, augment: bool = False) -> Tensor:
        """uint8 (N, H, W, 3) -> the normalised float batch the backbone takes (augmented only
        when ``augment``: training); AdaBN (``models/adabn.py``) goes through it too."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        if augment:
            x = self.augment(downsampled(x, self.train_image_scale))
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        # after Lightning restored the checkpoint's scheduler: extending a run re-plans it
        if self.trainer.ckpt_path is not None:
            self.optim.replan_schedule(self)

    def on_train_epoch_start(self) -> None:
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, targets = batch
        # a non-finite loss or gradient raises inside, BEFORE the update (dermlit/optim/guard.py)
        self.optim.begin_batch(self)
        loss = self.optim.step(self, images, targets, batch_idx)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.optim.interval == "epoch":
            step_schedulers(self)

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        self.log("val/loss", self.criterion(logits, targets), on_epoch=True, prog_bar=False)
        self.val_metrics.update(logits, targets)
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True)

    def predict_logits(self, images: Tensor) -> Tensor:
        """Logits for test/predict: test-time augmented when ``tta`` has several views."""
        return self.tta(self, images)

    def test_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self.predict_logits(images)
        self.test_metrics.update(logits, targets)
        self.log_dict(self.test_metrics, on_epoch=True)

    def predict_step(self, batch, batch_idx: int) -> tuple[Tensor, Tensor]:
        images, targets = batch
        return self.predict_logits(images).float(), targets
