"""Test-time BatchNorm re-estimation on the target images (AdaBN, Li et al. 2016, "Revisiting
batch normalization for practical domain adaptation").

A network's BatchNorm layers normalise with the TRAINING images' feature statistics; another
clinic's camera shifts them, and every later layer sees inputs off its training range. AdaBN
replaces each BN layer's running mean/variance by the target images' own, keeping every learned
weight. Here: reset the running statistics, then forward the target (test) images in train mode
WITHOUT gradient and WITHOUT labels (``momentum=None``: the cumulative average over the
batches), then back to eval mode. It works on a COPY of the model: the run's checkpoint and the
in-memory model that predicts validation (source data, whose statistics stay the training ones)
are untouched. Opt-in: ``evaluation.adabn=true`` (dermlit-eval, end of dermlit-train).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from dermlit.errors import InputError
from dermlit.models.copies import detached_copy

BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[nn.Module, int]:
    """A copy of ``model`` (a ``DermClassifier``: uint8 HWC batches are converted and normalised
    by its ``prepare``, never augmented) whose BN statistics are those of the
    images of ``loader``; returns (copy, images seen). Refuses a model without BatchNorm."""
    layers = batchnorm_layers(model)
    if not layers:
        raise InputError(
            f"evaluation.adabn=true re-estimates BatchNorm statistics, but the model "
            f"({type(getattr(model, 'backbone', model)).__name__}) has no BatchNorm layer: "
            "switch it off (evaluation.adabn=false)"
        )
    adapted = detached_copy(model).to(device)
    for bn in batchnorm_layers(adapted):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the target batches
    adapted.train()
    seen = 0
    for images, _targets in loader:  # the labels are never read
        adapted(adapted.prepare(images.to(device), augment=False))
        seen += len(images)
    for bn, original in zip(batchnorm_layers(adapted), layers, strict=True):
        bn.momentum = original.momentum
    adapted.eval()
    if seen == 0:
        raise InputError("evaluation.adabn=true: the target split has no images")
    return adapted, seen


def adabn_note(n_images: int) -> str:
    return (
        f"AdaBN applied (evaluation.adabn=true): every BatchNorm layer's running mean and "
        f"variance were re-estimated on the {n_images} unlabelled test images (train-mode "
        "forward passes without gradient, no augmentation) before these predictions; the "
        "checkpoint is unchanged, and validation (temperature, post-hoc rule) used the "
        "training statistics."
    )
