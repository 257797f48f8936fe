"""Presets: image/mask alignment, bounded colour, reproducibility, Hydra configs."""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dermlit.augment import morphology as M
from dermlit.augment.presets import DermoscopyAugment, NoAugment, StandardAugment

CONF = Path(__file__).resolve().parents[2] / "conf" / "augment"
SIZE = 64
#: DermoscopyAugment with every colour op and effect off, to test geometry alone.
NO_COLOUR = dict(brightness=0, contrast=0, saturation=0, hue=0, gamma_p=0, vignette_p=0, blur_p=0)
#: And with geometry off, to test colour alone.
NO_GEOMETRY = dict(degrees=0, flip_p=0, scale=(1, 1), translate=0)


def ellipse_batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Red, off-centre ellipse on textured blue skin; the mask is exactly the red pixels."""
    ys = torch.arange(SIZE, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, ys, indexing="ij")
    mask = (((xx - 28) / 16) ** 2 + ((yy - 36) / 9) ** 2 <= 1).float()[None, None]
    gen = torch.Generator().manual_seed(1)
    skin = torch.tensor([0.25, 0.35, 0.8])[None, :, None, None] + 0.1 * torch.rand(
        1, 3, SIZE, SIZE, generator=gen
    )
    lesion = torch.tensor([0.8, 0.2, 0.15])[None, :, None, None].expand(1, 3, SIZE, SIZE)
    image = torch.where(mask.bool(), lesion, skin).clamp(0, 1)
    return image.repeat(n, 1, 1, 1), mask.repeat(n, 1, 1, 1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU; 1 when both are empty (a crop that missed the lesion agrees on that)."""
    union = (a | b).sum(dim=(1, 2, 3))
    inter = (a & b).sum(dim=(1, 2, 3))
    return torch.where(union == 0, 1.0, inter / union.clamp_min(1))


@pytest.mark.parametrize(
    "preset",
    [
        DermoscopyAugment(),  # colour ops keep red > blue, so the red region stays detectable
        StandardAugment(hue=0.0, erasing_p=0.0, elastic_p=1.0),  # crop + elastic geometry
    ],
    ids=["dermoscopy", "standard-geometry"],
)
def test_mask_follows_the_image(preset: torch.nn.Module) -> None:
    images, masks = ellipse_batch()
    torch.manual_seed(0)
    out, out_masks = preset(images, masks)
    red = out[:, 0:1] > out[:, 2:3]
    moved = out_masks >= 0.5
    assert (iou(red, moved) > 0.9).all(), iou(red, moved)
    assert (iou(moved, masks.bool()) < 0.8).any()  # the geometry really moved the lesion


def test_dermoscopy_geometry_keeps_shape_features_but_standard_does_not() -> None:
    images, masks = ellipse_batch(32)
    before = M.lesion_features(images, masks)
    torch.manual_seed(0)
    _, faithful = DermoscopyAugment(**NO_COLOUR)(images, masks)
    after = M.lesion_features(images, faithful)
    rel = (after["compactness"] - before["compactness"]).abs() / before["compactness"]
    assert rel.max() < 0.03
    assert (after["asymmetry"] - before["asymmetry"]).abs().max() < 0.02
    torch.manual_seed(0)
    _, warped = StandardAugment(hue=0.0, erasing_p=0.0, elastic_p=1.0)(images, masks)
    rel_std = (M.compactness(warped) - before["compactness"]).abs() / before["compactness"]
    assert rel_std.median() > 3 * rel.median()


def test_brightness_and_gamma_stay_within_configured_bounds() -> None:
    x, b, g = 0.5, 0.1, (0.9, 1.1)
    preset = DermoscopyAugment(
        **NO_GEOMETRY, brightness=b, contrast=0.1, saturation=0.1, hue=0.02,
        colour_p=1.0, gamma=g, gamma_p=1.0, vignette_p=0, blur_p=0,
    )  # fmt: skip
    torch.manual_seed(0)
    out = preset(torch.full((256, 3, 8, 8), x))  # grey: contrast, saturation, hue are no-ops
    lo, hi = ((1 - b) * x) ** g[1], ((1 + b) * x) ** g[0]
    assert out.min().item() >= lo - 1e-3 and out.max().item() <= hi + 1e-3
    span = hi - lo
    assert out.min().item() < lo + 0.2 * span and out.max().item() > hi - 0.2 * span


def test_hue_shift_stays_within_configured_bound() -> None:
    hue = 0.02
    preset = DermoscopyAugment(**NO_GEOMETRY, **{**NO_COLOUR, "hue": hue}, colour_p=1.0)
    rgb = (0.7, 0.4, 0.2)
    torch.manual_seed(0)
    out = preset(torch.tensor(rgb)[None, :, None, None].repeat(128, 1, 4, 4))
    h0 = colorsys.rgb_to_hsv(*rgb)[0]
    shifts = []
    for pixel in out[:, :, 0, 0].tolist():
        d = colorsys.rgb_to_hsv(*pixel)[0] - h0
        shifts.append(abs((d + 0.5) % 1 - 0.5))
    assert max(shifts) <= hue + 2e-3
    assert max(shifts) > 0.7 * hue


def test_one_sided_colour_ranges_are_kept() -> None:
    """dermoscopy_wide's (low, high) ranges: a hue shift only within [-0.04, 0.01], a
    brightness factor only within [1.0, 1.2] (grey pixels: the others are no-ops there)."""
    preset = DermoscopyAugment(
        **NO_GEOMETRY, **{**NO_COLOUR, "hue": (-0.04, 0.01), "brightness": (1.0, 1.2)},
        colour_p=1.0,
    )  # fmt: skip
    rgb = (0.7, 0.4, 0.2)
    torch.manual_seed(0)
    out = preset(torch.tensor(rgb)[None, :, None, None].repeat(256, 1, 2, 2))[:, :, 0, 0]
    h0 = colorsys.rgb_to_hsv(*rgb)[0]
    shifts = [(colorsys.rgb_to_hsv(*p)[0] - h0 + 0.5) % 1 - 0.5 for p in out.tolist()]
    assert -0.04 - 2e-3 <= min(shifts) < -0.03 and 0.005 < max(shifts) <= 0.01 + 2e-3
    grey = preset(torch.full((256, 3, 2, 2), 0.5))[:, 0, 0, 0] / 0.5
    assert grey.min().item() >= 1.0 - 1e-4 and 1.15 < grey.max().item() <= 1.2 + 1e-4
    with pytest.raises(ValueError, match="saturation range must lie in"):
        DermoscopyAugment(saturation=(-0.1, 1.2))
    with pytest.raises(ValueError, match="hue range must lie in"):
        DermoscopyAugment(hue=(-0.6, 0.1))
    from dermlit.config import compose_config

    wide = instantiate(compose_config("train", ["augment=dermoscopy_wide"]).augment)
    assert wide.colour["saturation"] == (0.72, 1.1) and wide.colour["hue"] == (-0.04, 0.02)


def test_vignette_darkens_corners_within_bound_and_keeps_centre() -> None:
    strength = (0.0, 0.35)
    preset = DermoscopyAugment(
        **NO_GEOMETRY, **{**NO_COLOUR, "vignette_p": 1.0, "vignette_strength": strength}
    )
    torch.manual_seed(0)
    out = preset(torch.full((64, 3, 33, 33), 0.8))
    corner, centre = out[:, :, 0, 0] / 0.8, out[:, :, 16, 16] / 0.8
    assert torch.allclose(centre, torch.ones_like(centre), atol=1e-5)
    assert corner.min().item() >= 1 - strength[1] - 1e-5
    assert corner.min().item() < 1 - 0.8 * strength[1]


@pytest.mark.parametrize("preset", [DermoscopyAugment(), StandardAugment()], ids=["derm", "std"])
def test_same_seed_same_batch(preset: torch.nn.Module) -> None:
    images, masks = ellipse_batch(4)
    torch.manual_seed(3)
    a, am = preset(images, masks)
    torch.manual_seed(3)
    b, bm = preset(images, masks)
    torch.manual_seed(4)
    c = preset(images)
    assert torch.equal(a, b) and torch.equal(am, bm)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # parameters are drawn per sample


@pytest.mark.parametrize("name", ["none", "dermoscopy", "standard"])
def test_hydra_configs_instantiate(name: str) -> None:
    preset = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    images, masks = ellipse_batch(2)
    out, out_masks = preset(images, masks)
    assert out.shape == images.shape and out_masks.shape == masks.shape
    assert 0 <= out.min().item() and out.max().item() <= 1
    if name == "none":
        assert isinstance(preset, NoAugment) and out is images and out_masks is masks


def test_dermoscopy_config_has_no_warp() -> None:
    cfg = OmegaConf.load(CONF / "dermoscopy.yaml")
    assert not {"shear", "perspective", "elastic_p"} & set(cfg)
    assert cfg.hue <= 0.05 and math.isclose(cfg.degrees, 180.0)


def test_bad_inputs_are_rejected() -> None:
    preset = DermoscopyAugment()
    with pytest.raises(ValueError, match=r"float batch \(B, 3, H, W\)"):
        preset(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"float batch"):
        preset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="must match images"):
        preset(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 9, 9))
    with pytest.raises(ValueError, match=r"hue must be in \[0, 0.5\]"):
        DermoscopyAugment(hue=0.7)
    with pytest.raises(ValueError, match="low <= high"):
        DermoscopyAugment(scale=(1.2, 0.9))
    with pytest.raises(ValueError, match="vignette strength"):
        DermoscopyAugment(vignette_strength=(0.0, 1.5)).build(8, 8)


def test_pipelines_stay_out_of_the_state_dict() -> None:
    """A fresh model (resume, dermlit-eval) must accept the checkpoint of a trained one: the
    lazily built Kornia pipelines (whose generators hold buffers) are not weights."""
    preset = DermoscopyAugment()
    holder = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))
    holder.augment = preset
    before = set(holder.state_dict())
    preset(torch.rand(2, 3, 16, 16))
    preset(torch.rand(2, 3, 24, 24))
    assert len(preset.pipelines) == 2
    assert set(holder.state_dict()) == before
    assert not any(k.startswith("augment.") for k in before)
