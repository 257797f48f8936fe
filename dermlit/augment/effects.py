"""Acquisition effects of a dermatoscope that Kornia has no augmentation for."""

from __future__ import annotations

from typing import Any

import torch
from kornia.augmentation import IntensityAugmentationBase2D
from kornia.augmentation import random_generator as rg


class RandomVignette(IntensityAugmentationBase2D):
    """Radial darkening towards the corners, as a dermatoscope's lens and ring light produce.

    Kornia's illumination augmentations (``RandomLinearIllumination``,
    ``RandomGaussianIllumination``) add light gradients across the frame; none darkens the
    periphery symmetrically the way a contact dermatoscope's optics do. The gain at a pixel is
    ``1 - strength * r ** power`` with ``r`` its distance from the centre divided by the distance
    to a corner, so the centre (where the lesion usually is) keeps its colour.
    Strength is drawn per sample from ``strength`` on the device of the module.
    """

    def __init__(
        self,
        strength: tuple[float, float] = (0.0, 0.4),
        power: float = 2.5,
        same_on_batch: bool = False,
        p: float = 0.5,
        keepdim: bool = False,
    ) -> None:
        super().__init__(p=p, same_on_batch=same_on_batch, keepdim=keepdim)
        lo, hi = float(strength[0]), float(strength[1])
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(
                f"vignette strength must satisfy 0 <= low <= high <= 1, got {strength}"
            )
        if power <= 0:
            raise ValueError(f"vignette power must be positive, got {power}")
        self.flags = {"power": float(power)}
        self._param_generator = rg.PlainUniformGenerator(((lo, hi), "strength", None, None))

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _, _, h, w = input.shape
        ys = torch.linspace(-1.0, 1.0, h, device=input.device, dtype=input.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=input.device, dtype=input.dtype)
        r = ((ys[:, None] ** 2 + xs[None, :] ** 2) / 2).sqrt()  # 1 at the corners
        strength = params["strength"].to(input.device, input.dtype)[:, None, None, None]
        return input * (1 - strength * r.pow(flags["power"]))
