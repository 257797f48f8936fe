"""Tiny models, batches and trainers for the SAM/EMA tests (seconds on a CPU)."""

from __future__ import annotations

import functools

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dermlit.models.classifier import DermClassifier
from dermlit.optim import UpdateRule

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class TinyConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 7)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class TinyMLP(nn.Module):
    """No BatchNorm: batch-size independent, so accumulation is exactly a bigger batch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, 7))

    def forward(self, x):
        return self.net(x)


def images_and_targets(n: int = 32, size: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    targets = torch.randint(0, 7, (n,), generator=g)
    return images, targets


def loader(images, targets, batch_size: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size, shuffle=False)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """What ``DermClassifier.on_after_batch_transfer`` does without augmentation."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def sgd(lr: float = 0.1, momentum: float = 0.9):
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum)


def classifier(optim: UpdateRule, backbone: nn.Module | None = None, augment=None, seed=0):
    torch.manual_seed(seed)
    return DermClassifier(
        backbone=backbone if backbone is not None else TinyConvBN(),
        optim=optim,
        augment=augment,
        mean=MEAN,
        std=STD,
    )


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**(defaults | kwargs))
