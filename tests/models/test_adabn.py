"""AdaBN: the re-estimated BatchNorm statistics are the target images' own, computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dermlit.errors import InputError
from dermlit.models.adabn import adapt_batchnorm
from dermlit.models.classifier import DermClassifier


def tiny(norm: nn.Module) -> DermClassifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3), norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7)
    )
    return DermClassifier(backbone, optim=None).eval()


def target_loader(n: int = 32, batch: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(60, 256, (n, 12, 12, 3), dtype=torch.uint8, generator=g)
    labels = torch.full((n,), -1)  # unlabelled: nothing reads them
    return DataLoader(TensorDataset(images, labels), batch_size=batch)


def test_running_stats_are_the_target_features_by_hand() -> None:
    model = tiny(nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = target_loader()
    adapted, seen = adapt_batchnorm(model, loader)
    assert seen == 32 and not adapted.training
    # by hand: the conv features of each batch (what BN sees), mean and unbiased variance per
    # channel; momentum=None averages the (equal-size) batches
    conv = model.backbone[0]
    means, variances = [], []
    with torch.no_grad():
        for images, _ in loader:
            x = (images.permute(0, 3, 1, 2).float() / 255 - model.mean) / model.std
            f = conv(x).transpose(0, 1).reshape(4, -1)
            means.append(f.mean(1))
            variances.append(f.var(1, unbiased=True))
    bn = adapted.backbone[1]
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0), atol=1e-5, rtol=1e-4)
    assert bn.momentum == 0.1  # restored
    # the original model (and so anything saved from it) is untouched
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not torch.allclose(bn.running_mean, model.backbone[1].running_mean)


def test_a_model_without_batchnorm_is_refused() -> None:
    with pytest.raises(InputError, match="no BatchNorm layer.*evaluation.adabn=false"):
        adapt_batchnorm(tiny(nn.GroupNorm(2, 4)), target_loader())
