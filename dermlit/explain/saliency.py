"""Grad-CAM heat maps of a timm backbone at the model's input resolution, and overlays.

Through pytorch-grad-cam (``pip install grad-cam``) rather than captum: it is CAM-specific
(Grad-CAM, Grad-CAM++, HiResCAM, ... behind one ``(model, target_layers)`` interface, so a
better method is one argument away), it upsamples each map to the input size and it ships the
overlay helper; captum's ``LayerGradCam`` returns layer-resolution maps and leaves upsampling,
scaling and overlays to the caller. Two of its behaviours are handled here: its context
manager swallows an ``IndexError`` with a print (we release the hooks in ``finally``
instead), and each map is min-max scaled per image (so a lesion share is a share of the map a
reviewer sees; an all-zero map stays zero and is reported as such by ``lesion_overlap``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn


def target_layer(model: nn.Module) -> nn.Module:
    """The last feature stage of a timm model (``feature_info[-1]``: e.g. ResNet ``layer4``,
    EfficientNet ``blocks.6``, ConvNeXt ``stages.3``), i.e. the output of the last block with
    its residual sum and activation; the last ``Conv2d`` of any other model. (The last
    ``Conv2d`` of a ResNet is inside its last block, before BatchNorm and the skip connection.)
    """
    info = getattr(model, "feature_info", None)
    if isinstance(info, list | tuple) and info and "module" in info[-1]:
        return model.get_submodule(info[-1]["module"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"{type(model).__name__} has no Conv2d and no timm feature_info: pass target_layer"
        )
    return convs[-1]


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the model's normalised float NCHW input (as DermClassifier)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(list(mean)).view(1, 3, 1, 1)) / torch.tensor(list(std)).view(
        1, 3, 1, 1
    )


def grad_cam(
    backbone: nn.Module,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[int] | None = None,
    layer: nn.Module | Sequence[nn.Module] | None = None,
    method: Callable[..., BaseCAM] = GradCAM,
    reshape_transform: Callable | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1] for uint8 RGB ``images`` (N, H, W, 3).

    ``classes``: the class explained per image (default: the backbone's argmax). ``method``:
    any pytorch-grad-cam CAM class; ``layer``: the target layer, or several (their maps are
    averaged: an ensemble's members); ``reshape_transform``: for token models (ViT), see
    pytorch-grad-cam's docs. The backbone is put in eval mode (BatchNorm statistics unchanged).
    """
    x_all = np.asarray(images)
    if x_all.dtype != np.uint8 or x_all.ndim != 4 or x_all.shape[-1] != 3:
        raise ValueError(f"images must be uint8 RGB (N, H, W, 3), got {x_all.dtype} {x_all.shape}")
    if classes is not None and len(classes) != len(x_all):
        raise ValueError(f"{len(classes)} classes for {len(x_all)} images")
    backbone.eval()
    cam = method(
        model=backbone,
        target_layers=(
            [target_layer(backbone)]
            if layer is None
            else [layer]
            if isinstance(layer, nn.Module)
            else list(layer)
        ),
        reshape_transform=reshape_transform,
    )
    out = []
    try:
        with torch.enable_grad():
            for start in range(0, len(x_all), batch_size):
                x = normalise(x_all[start : start + batch_size], mean, std).requires_grad_(True)
                chunk = None if classes is None else classes[start : start + batch_size]
                targets = None if chunk is None else [ClassifierOutputTarget(int(c)) for c in chunk]
                out.append(cam(input_tensor=x, targets=targets))
    finally:
        cam.activations_and_grads.release()
        backbone.zero_grad(set_to_none=True)  # the CAM's backward filled parameter .grad
    return np.concatenate(out).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """uint8 RGB image with the heat map (jet colours) blended in, for galleries and W&B."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[:2] != np.shape(heatmap):
        raise ValueError(
            f"image must be uint8 (H, W, 3) of the heat map's size {np.shape(heatmap)}, got "
            f"{img.dtype} {img.shape}"
        )
    return show_cam_on_image(
        img.astype(np.float32) / 255.0, heatmap, use_rgb=True, image_weight=image_weight
    )
