"""AdaBN: the re-estimated BatchNorm statistics are the target images' own, computed by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dermlit.errors import InputError
from dermlit.models.adabn import adapt_batchnorm, batchnorm_layers
from dermlit.models.backbones import create_backbone
from dermlit.models.classifier import DermClassifier


def tiny(norm: nn.Module) -> DermClassifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3), norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7)
    )
    return DermClassifier(backbone, optim=None).eval()


def target_loader(n: int = 32, batch: int = 16, size: int = 12) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(60, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)
    labels = torch.full((n,), -1)  # unlabelled: nothing reads them
    return DataLoader(TensorDataset(images, labels), batch_size=batch)


def normalised(model: DermClassifier, images: torch.Tensor) -> torch.Tensor:
    return (images.permute(0, 3, 1, 2).float() / 255 - model.mean) / model.std


def channel_stats(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """numpy: the mean and unbiased variance per channel (axis 1) over all the values."""
    f = np.concatenate([np.moveaxis(x, 1, 0).reshape(x.shape[1], -1) for x in features], axis=1)
    f = f.astype(np.float64)
    return f.mean(1), f.var(1, ddof=1)


@pytest.mark.parametrize("norm", [nn.BatchNorm2d, nn.SyncBatchNorm])
def test_running_stats_are_the_target_features_by_hand(norm: type[nn.Module]) -> None:
    model = tiny(norm(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = target_loader()
    adapted, seen = adapt_batchnorm(model, loader)
    assert seen == 32 and not adapted.training
    # by hand: the conv features of every image (what BN sees), mean and unbiased variance per
    # channel over ALL of them (not an average of per-batch variances)
    conv = model.backbone[0]
    with torch.no_grad():
        features = [conv(normalised(model, images)).numpy() for images, _ in loader]
    mean, var = channel_stats(features)
    bn = adapted.backbone[1]
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1  # untouched
    # the original model (and so anything saved from it) is untouched
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not torch.allclose(bn.running_mean, model.backbone[1].running_mean)


def test_a_last_batch_of_one_image_with_1x1_maps_counts_as_one_image() -> None:
    # 17 images in batches of 16: the last batch is one image, and the second BN sees a 1x1 map
    # (one value per channel, which train mode cannot normalise)
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4, 7),
    )
    for bn in (backbone[1], backbone[4]):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    model = DermClassifier(backbone, optim=None).eval()
    loader = target_loader(n=17, batch=16)
    adapted, seen = adapt_batchnorm(model, loader)
    assert seen == 17
    # by hand: BN1 sees the conv features; BN2 sees them normalised by BN1 with each batch's
    # own statistics (train mode within the pass: biased variance), ReLU, pooled
    conv, bn1 = model.backbone[0], model.backbone[1]
    first, second = [], []
    with torch.no_grad():
        for images, _ in loader:
            f = conv(normalised(model, images)).numpy().astype(np.float64)
            first.append(f)
            mu = f.mean(axis=(0, 2, 3), keepdims=True)
            sd = np.sqrt(f.var(axis=(0, 2, 3), keepdims=True) + bn1.eps)
            w = bn1.weight.numpy().reshape(1, 4, 1, 1)
            b = bn1.bias.numpy().reshape(1, 4, 1, 1)
            second.append(np.maximum((f - mu) / sd * w + b, 0).mean(axis=(2, 3), keepdims=True))
    for layer, features in ((adapted.backbone[1], first), (adapted.backbone[4], second)):
        mean, var = channel_stats(features)
        np.testing.assert_allclose(layer.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.running_var.numpy(), var, rtol=1e-4, atol=1e-6)


def test_resnet18_with_a_last_batch_of_one_image_at_32px() -> None:
    torch.manual_seed(0)
    model = DermClassifier(create_backbone("resnet18"), optim=None).eval()
    adapted, seen = adapt_batchnorm(model, target_loader(n=17, batch=16, size=32))
    assert seen == 17 and not adapted.training
    for bn in batchnorm_layers(adapted):
        assert torch.isfinite(bn.running_mean).all() and (bn.running_var > 0).all()


def reference_statistics(model: DermClassifier, loader: DataLoader) -> list[tuple]:
    """Independently: the model in eval mode, its BN layers alone in train mode; every BN
    layer's inputs captured and their mean / unbiased variance taken over all of them."""
    layers = batchnorm_layers(model)
    captured: dict[nn.Module, list[np.ndarray]] = {bn: [] for bn in layers}
    hooks = [
        bn.register_forward_pre_hook(lambda m, a: captured[m].append(a[0].numpy())) for bn in layers
    ]
    model.eval()
    for bn in layers:
        bn.training = True
    with torch.no_grad():
        for images, _ in loader:
            model(normalised(model, images))
    for h in hooks:
        h.remove()
    model.eval()
    return [channel_stats(captured[bn]) for bn in layers]


def test_dropout_and_drop_path_are_off_while_the_statistics_are_estimated() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", drop_path_rate=0.5, drop_rate=0.5)
    model = DermClassifier(backbone, optim=None).eval()
    for bn in batchnorm_layers(model):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
    loader = target_loader(n=32, batch=16, size=32)
    first, _ = adapt_batchnorm(model, loader)
    second, _ = adapt_batchnorm(model, loader)
    reference = reference_statistics(copy.deepcopy(model), loader)
    # the same images twice: the same statistics (no random branch dropped)
    for a, b in zip(batchnorm_layers(first), batchnorm_layers(second), strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=0, atol=0)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=0, atol=0)
    for a, (mean, var) in zip(batchnorm_layers(first), reference, strict=True):
        np.testing.assert_allclose(a.running_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.running_var.numpy(), var, rtol=1e-4, atol=1e-5)
    x = normalised(model, next(iter(loader))[0])
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x), rtol=0, atol=0)
    assert not any(m.training for m in first.modules())


def test_a_model_without_batchnorm_is_refused() -> None:
    with pytest.raises(InputError, match="no BatchNorm layer.*evaluation.adabn=false"):
        adapt_batchnorm(tiny(nn.GroupNorm(2, 4)), target_loader())
