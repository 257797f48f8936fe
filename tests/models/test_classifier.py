"""DermClassifier's data path: augmentation in training only, normalisation after it."""

from pathlib import Path

import lightning as L
import torch
from torch import nn

from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import HAM10000Source
from dermlit.models.backbones import create_backbone
from dermlit.models.classifier import DermClassifier
from dermlit.optim import UpdateRule


class RecordingAugment(nn.Module):
    """Records every batch it sees (range and count) and leaves it unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, float, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((float(x.min()), float(x.max()), len(x)))
        return x


def make(
    tmp_path: Path, tiny_ham: Path, augment: nn.Module
) -> tuple[DermClassifier, DermDataModule]:
    dm = DermDataModule(
        HAM10000Source(tiny_ham),
        image_size=16,
        batch_size=8,
        cache_dir=tmp_path,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    optim = UpdateRule(optimizer=lambda params: torch.optim.SGD(params, lr=0.01))
    model = DermClassifier(create_backbone("resnet10t"), optim=optim, augment=augment)
    return model, dm


def test_augmentation_runs_in_training_only_on_unit_range_images(tmp_path, tiny_ham) -> None:
    augment = RecordingAugment()
    model, dm = make(tmp_path, tiny_ham, augment)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert len(augment.calls) == 2, "one call per training batch"
    assert all(0.0 <= lo and hi <= 1.0 for lo, hi, _ in augment.calls), "augment sees [0, 1]"
    augment.calls.clear()
    trainer.validate(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    trainer.predict(model, dataloaders=dm.loader("test"))
    assert augment.calls == [], "val/test/predict must not be augmented"


def test_normalisation_follows_the_configured_statistics(tmp_path, tiny_ham) -> None:
    model, dm = make(tmp_path, tiny_ham, nn.Identity())
    dm.setup("fit")
    images, targets = next(iter(dm.loader("val")))
    model.trainer = L.Trainer(logger=False, enable_progress_bar=False)
    x, y = model.on_after_batch_transfer((images, targets), 0)
    expected = (images.permute(0, 3, 1, 2).float() / 255 - model.mean) / model.std
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, targets)
