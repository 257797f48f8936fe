"""Grad-CAM through pytorch-grad-cam: the CAM identity on a GAP network, timm layer choice,
overlays and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dermlit.explain.saliency import grad_cam, normalise, overlay, target_layer

K = 7
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def gap_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1),  # the target: full resolution, then global pooling
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, K),
    )


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_grad_cam_is_the_class_activation_map_of_a_gap_network():
    """For conv -> global average pool -> linear, Grad-CAM's channel weights are W[c] / HW, so
    the map is ReLU(sum_k W[c, k] A_k) up to scale (Selvaraju et al. 2017, sec. 3.1): computed
    here from the activations directly, then min-max scaled as pytorch-grad-cam shows maps."""
    net = gap_net()
    x = images(3, 12)
    classes = [0, 4, 6]
    with torch.no_grad():
        acts = net[:3](normalise(x, MEAN, STD)).numpy()  # (N, 5, H, W)
        default = net(normalise(x, MEAN, STD)).argmax(1).tolist()
    w = net[5].weight.detach().numpy()

    def cam_of(cls: list[int]) -> np.ndarray:
        cam = np.maximum(np.einsum("nk,nkhw->nhw", w[cls], acts), 0)
        cam -= cam.min((1, 2), keepdims=True)
        return cam / (1e-7 + cam.max((1, 2), keepdims=True))

    assert target_layer(net) is net[2]
    np.testing.assert_allclose(grad_cam(net, x, MEAN, STD, classes), cam_of(classes), atol=1e-5)
    np.testing.assert_allclose(grad_cam(net, x, MEAN, STD), cam_of(default), atol=1e-5)
    # batching does not change the maps
    np.testing.assert_allclose(
        grad_cam(net, x, MEAN, STD, classes, batch_size=2), cam_of(classes), atol=1e-5
    )


def test_timm_target_layer_and_maps_at_input_resolution():
    model = timm.create_model("resnet18", pretrained=False, num_classes=K)
    assert target_layer(model) is model.layer4  # the stage output, not layer4.1.conv2
    maps = grad_cam(model, images(2, 64), MEAN, STD, classes=[1, 5])
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind
    with pytest.raises(ValueError, match="no Conv2d and no timm feature_info"):
        target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, K)))


def test_overlay_colours_hot_regions_red():
    img = np.full((8, 8, 3), 128, dtype=np.uint8)
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:, 4:] = 1.0
    out = overlay(img, heat)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[0, 6, 0] > out[0, 1, 0] + 50  # red where hot (jet colour map, RGB order)
    assert out[0, 1, 2] > out[0, 6, 2] + 50  # blue where cold


def test_bad_input_is_named():
    net = gap_net()
    with pytest.raises(ValueError, match=r"uint8 RGB \(N, H, W, 3\)"):
        grad_cam(net, images(1, 8).astype(np.float32), MEAN, STD)
    with pytest.raises(ValueError, match="2 classes for 1 images"):
        grad_cam(net, images(1, 8), MEAN, STD, classes=[0, 1])
    with pytest.raises(ValueError, match="of the heat map's size"):
        overlay(images(1, 8)[0], np.zeros((4, 4)))
