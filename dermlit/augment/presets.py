"""Batched, on-device augmentation presets built from Kornia (selected by ``conf/augment/``).

A preset is an ``nn.Module``: ``images = preset(images)`` on a float batch (B, 3, H, W) in
[0, 1] (Kornia's colour ops clamp to [0, 1], so normalise afterwards), or
``images, masks = preset(images, masks)`` to move a lesion mask with exactly the same geometry
(colour ops touch the image only). Random parameters are drawn on the module's device, so
``preset.to(device)`` (which Lightning does for a submodule) keeps sampling off the host, and
``torch.manual_seed`` makes a batch reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from kornia.constants import DataKey, Resample
from torch import nn

from dermlit.augment.effects import RandomVignette

#: Masks are resampled bilinearly (fractional occupancy at the boundary) rather than Kornia's
#: default nearest neighbour, which would add up to a pixel of jitter to every rotated border.
#: Every geometric op here samples with align_corners=False, so the mask uses the same grid.
_MASK_ARGS = {DataKey.MASK: {"resample": Resample.BILINEAR, "align_corners": False}}


def _jitter(value: Sequence[float] | float, name: str) -> float | tuple[float, float]:
    """A colour-jitter setting: a strength ``x`` (factor in [1 - x, 1 + x]; hue: shift in
    [-x, x] turns) or an explicit (low, high) range, e.g. a measured, one-sided spread."""
    if isinstance(value, int | float):
        if not 0 <= value <= (0.5 if name == "hue" else 1.0):
            raise ValueError(
                f"{name} strength must be in [0, {0.5 if name == 'hue' else 1}]: {value}"
            )
        return float(value)
    low, high = _pair(value, name)
    lowest = -0.5 if name == "hue" else 0.0
    highest = 0.5 if name == "hue" else float("inf")
    if low < lowest or high > highest:
        raise ValueError(f"{name} range must lie in [{lowest}, {highest}], got {list(value)}")
    return low, high


def _pair(value: Sequence[float] | float, name: str) -> tuple[float, float]:
    if isinstance(value, int | float):
        return float(value), float(value)
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value}")
    return float(value[0]), float(value[1])


class NoAugment(nn.Module):
    """The ``none`` preset: returns its inputs (with the same call signature as the others)."""

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return images if masks is None else (images, masks)


class KorniaPreset(nn.Module):
    """Runs a Kornia pipeline over a whole batch; subclasses list the ops in ``build``.

    The pipeline is built per input size (cached), because size-dependent ops such as
    ``RandomResizedCrop`` need the output size and the preset should work at any
    ``data.image_size`` without repeating it in its config. The cache is a plain dict keyed by
    size and device, NOT submodules: Kornia's parameter generators hold buffers, which would put
    lazily created keys into the model's state_dict, and a fresh model (resume, dermlit-eval)
    would then refuse its own checkpoint.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pipelines: dict[str, K.AugmentationSequential] = {}

    def build(self, height: int, width: int) -> list[nn.Module]:
        raise NotImplementedError

    def _pipeline(self, images: torch.Tensor) -> K.AugmentationSequential:
        h, w = images.shape[-2:]
        key = f"{h}x{w}@{images.device}"
        if key not in self.pipelines:
            seq = K.AugmentationSequential(
                *self.build(h, w), data_keys=["input", "mask"], extra_args=_MASK_ARGS
            )
            self.pipelines[key] = seq.to(images.device)
        return self.pipelines[key]

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"expected a float batch (B, 3, H, W) in [0, 1], got {tuple(images.shape)} "
                f"{images.dtype}"
            )
        seq = self._pipeline(images)
        if masks is None:
            return seq(images, data_keys=["input"]).clamp_(0, 1)
        if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"masks {tuple(masks.shape)} must match images {tuple(images.shape)} in batch and size"
            )
        out, out_masks = seq(images, masks.to(images.dtype))
        return out.clamp_(0, 1), out_masks.clamp_(0, 1)


class DermoscopyAugment(KorniaPreset):
    """The morphology-faithful preset: rigid geometry and bounded, dermatoscope-like colour.

    Rotation (any angle) and flips: dermoscopy has no canonical orientation. Scale and
    translation are mild and isotropic; no shear, perspective or elastic warp, which would
    change asymmetry and border shape. Corners exposed by rotation are black, like the dark
    corners of a dermatoscope's circular field of view; reflection padding would mirror a
    lesion that reaches the border into the corners (the audit measured it). Ranges are
    documented in ``conf/augment/dermoscopy.yaml``.
    """

    def __init__(
        self,
        degrees: float = 180.0,
        flip_p: float = 0.5,
        scale: Sequence[float] = (0.9, 1.1),
        translate: float = 0.05,
        padding_mode: str = "zeros",
        brightness: float | Sequence[float] = 0.1,
        contrast: float | Sequence[float] = 0.1,
        saturation: float | Sequence[float] = 0.1,
        hue: float | Sequence[float] = 0.02,
        colour_p: float = 0.8,
        gamma: Sequence[float] = (0.9, 1.1),
        gamma_p: float = 0.5,
        vignette_strength: Sequence[float] = (0.0, 0.35),
        vignette_p: float = 0.3,
        blur_sigma: Sequence[float] = (0.1, 0.8),
        blur_kernel: int = 5,
        blur_p: float = 0.2,
    ) -> None:
        super().__init__()
        if isinstance(hue, int | float) and not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (fraction of the colour circle), got {hue}")
        self.geometry = {
            "degrees": float(degrees),
            "flip_p": float(flip_p),
            "scale": _pair(scale, "scale"),
            "translate": float(translate),
            "padding_mode": padding_mode,
        }
        self.colour = {
            # a strength, or a (low, high) range (conf/augment/dermoscopy_wide.yaml)
            "brightness": _jitter(brightness, "brightness"),
            "contrast": _jitter(contrast, "contrast"),
            "saturation": _jitter(saturation, "saturation"),
            "hue": _jitter(hue, "hue"),
            "colour_p": float(colour_p),
            "gamma": _pair(gamma, "gamma"),
            "gamma_p": float(gamma_p),
        }
        self.effects = {
            "vignette_strength": _pair(vignette_strength, "vignette_strength"),
            "vignette_p": float(vignette_p),
            "blur_sigma": _pair(blur_sigma, "blur_sigma"),
            "blur_kernel": int(blur_kernel),
            "blur_p": float(blur_p),
        }

    def build(self, height: int, width: int) -> list[nn.Module]:
        g, c, e = self.geometry, self.colour, self.effects
        ops: list[nn.Module] = [
            K.RandomHorizontalFlip(p=g["flip_p"]),
            K.RandomVerticalFlip(p=g["flip_p"]),
            K.RandomAffine(
                degrees=g["degrees"],
                translate=(g["translate"], g["translate"]),
                scale=g["scale"],
                padding_mode=g["padding_mode"],
                p=1.0,
            ),
            K.ColorJitter(
                brightness=c["brightness"],
                contrast=c["contrast"],
                saturation=c["saturation"],
                hue=c["hue"],
                p=c["colour_p"],
            ),
            K.RandomGamma(gamma=c["gamma"], p=c["gamma_p"]),
        ]
        if e["vignette_p"] > 0 and e["vignette_strength"][1] > 0:
            ops.append(RandomVignette(strength=e["vignette_strength"], p=e["vignette_p"]))
        if e["blur_p"] > 0:
            ops.append(K.RandomGaussianBlur(e["blur_kernel"], e["blur_sigma"], p=e["blur_p"]))
        return ops


class StandardAugment(KorniaPreset):
    """A typical natural-image recipe, kept as the baseline to compare the faithful preset with.

    RandomResizedCrop down to 8% of the image, horizontal flips, strong colour jitter (hue up to half
    the colour circle), elastic warps and random erasing: the ImageNet habits that the audit
    shows change lesion shape and colour far more than ``DermoscopyAugment``.
    """

    def __init__(
        self,
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.5,
        jitter_p: float = 0.8,
        elastic_sigma: float = 32.0,
        elastic_alpha: float = 1.0,
        elastic_p: float = 0.5,
        erasing_scale: Sequence[float] = (0.02, 0.33),
        erasing_p: float = 0.5,
    ) -> None:
        super().__init__()
        self.config = {
            "crop_scale": _pair(crop_scale, "crop_scale"),
            "crop_ratio": _pair(crop_ratio, "crop_ratio"),
            "flip_p": float(flip_p),
            "jitter": (float(brightness), float(contrast), float(saturation), float(hue)),
            "jitter_p": float(jitter_p),
            "elastic_sigma": float(elastic_sigma),
            "elastic_alpha": float(elastic_alpha),
            "elastic_p": float(elastic_p),
            "erasing_scale": _pair(erasing_scale, "erasing_scale"),
            "erasing_p": float(erasing_p),
        }

    def build(self, height: int, width: int) -> list[nn.Module]:
        c = self.config
        # Kornia's elastic kernel must be odd and, with reflect padding, smaller than the image.
        k = min(63, (min(height, width) // 2) * 2 - 1)
        b, ct, s, h = c["jitter"]
        return [
            K.RandomResizedCrop(
                (height, width),
                scale=c["crop_scale"],
                ratio=c["crop_ratio"],
                align_corners=False,
            ),
            K.RandomHorizontalFlip(p=c["flip_p"]),
            K.ColorJitter(brightness=b, contrast=ct, saturation=s, hue=h, p=c["jitter_p"]),
            K.RandomElasticTransform(
                kernel_size=(k, k),
                sigma=(c["elastic_sigma"], c["elastic_sigma"]),
                alpha=(c["elastic_alpha"], c["elastic_alpha"]),
                p=c["elastic_p"],
            ),
            K.RandomErasing(scale=c["erasing_scale"], p=c["erasing_p"]),
        ]
