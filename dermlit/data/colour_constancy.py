"""Colour constancy: remove the illuminant's cast from each image before anything learns from it.

Dermatoscopes of different clinics light and white-balance differently (HAM10000's four
sources differ visibly in colour). Shades of Gray (Finlayson & Trezzi 2004; for dermoscopy
Barata et al. 2015, IEEE JBHI, p = 6, used by ISIC 2018-2019 top entries) estimates the
illuminant per channel as the Minkowski p-norm mean ``e_c = (mean x_c^p)^(1/p)`` (p = 1 is Gray
World, p = inf max-RGB) and rescales each channel by ``|e| / (sqrt(3) e_c)`` (von Kries), so a
neutral image is unchanged and a corrected one has equal p-norm means in R, G and B.

ONE implementation for every route: a torch module on uint8 ``(N, H, W, 3)`` batches, rounded
back to uint8. The image cache applies it once while decoding (``data/cache.py``: no per-step
cost, and its key names the setting), and :class:`~dermlit.export.deployable.DeployableClassifier`
runs the same module in front of the backbone, so ``dermlit predict`` and the ONNX export of
``dermlit export`` see what training and evaluation saw.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn


def _check(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"colour constancy takes uint8 RGB images (N, H, W, 3), got {images.dtype} "
            f"{tuple(images.shape)}"
        )


class NoColourConstancy(nn.Module):
    """The images as decoded (``colour_constancy=none``); its cache key part is empty, so
    caches written before colour constancy existed stay valid."""

    cache_key = ""

    def forward(self, images: Tensor) -> Tensor:
        _check(images)
        return images

    def apply_array(self, array: np.ndarray, batch: int = 256) -> None:
        """Correct a uint8 ``(N, H, W, 3)`` array (the cache's memory map) in place, in chunks."""
        if not self.cache_key:
            return
        for i in range(0, len(array), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(array[i : i + batch]))
            array[i : i + batch] = self(chunk).numpy()


class ShadesOfGray(NoColourConstancy):
    """Shades of Gray with Minkowski norm ``p`` (``p=inf``: max-RGB), vectorised over the batch.

    An all-black channel (estimate 0) keeps gain 1. Values above 255 after the gain are clipped.
    """

    def __init__(self, p: float = 6.0) -> None:
        super().__init__()
        p = float(p)
        if not p >= 1:
            raise ValueError(
                f"colour_constancy.p must be >= 1 (1: Gray World, inf: max-RGB), got {p}"
            )
        self.p = p

    @property
    def cache_key(self) -> str:  # type: ignore[override]
        return f"sog{self.p:g}"

    def illuminant(self, x: Tensor) -> Tensor:
        """Per image and channel ``(N, 3)``: the p-norm mean of ``x`` in [0, 1]."""
        if math.isinf(self.p):
            return x.amax(dim=(1, 2))
        return x.pow(self.p).mean(dim=(1, 2)).pow(1.0 / self.p)

    def forward(self, images: Tensor) -> Tensor:
        _check(images)
        x = images.float() / 255.0
        e = self.illuminant(x)
        norm = e.norm(dim=1, keepdim=True)
        gain = torch.where(
            e > 1e-6, norm / (math.sqrt(3.0) * e.clamp_min(1e-6)), torch.ones_like(e)
        )
        out = x * gain[:, None, None, :] * 255.0
        return out.clamp(0.0, 255.0).round().to(torch.uint8)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"
