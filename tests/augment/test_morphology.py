"""Lesion features against hand-computed values on synthetic shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dermlit.augment import morphology as M

SIZE = 128


def grid() -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(SIZE, dtype=torch.float32)
    return torch.meshgrid(ys, ys, indexing="ij")


def disc(r: float, cy: float = 63.3, cx: float = 64.7) -> torch.Tensor:
    yy, xx = grid()
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float()[None, None]


def rotated(u_half: float, v_half: float, degrees: float, kind: str) -> torch.Tensor:
    yy, xx = grid()
    t = math.radians(degrees)
    u = (xx - 64) * math.cos(t) + (yy - 64) * math.sin(t)
    v = -(xx - 64) * math.sin(t) + (yy - 64) * math.cos(t)
    if kind == "ellipse":
        inside = (u / u_half) ** 2 + (v / v_half) ** 2 <= 1
    else:
        inside = (u.abs() <= u_half) & (v.abs() <= v_half)
    return inside.float()[None, None]


@pytest.mark.parametrize("r", [15, 25, 40])
def test_disc_is_compact_and_symmetric(r: float) -> None:
    m = disc(r)
    assert M.compactness(m).item() == pytest.approx(1.0, abs=0.02)
    assert M.asymmetry(m).item() < 0.015
    assert M.area(m).item() == pytest.approx(math.pi * r * r, rel=0.01)


@pytest.mark.parametrize("degrees", [0.0, 30.0])
def test_ellipse_area_and_compactness(degrees: float) -> None:
    a, b = 40.0, 20.0
    m = rotated(a, b, degrees, "ellipse")
    assert M.area(m).item() == pytest.approx(math.pi * a * b, rel=0.01)
    # Ramanujan's perimeter of an ellipse, an independent closed form.
    perim = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    expected = perim**2 / (4 * math.pi * math.pi * a * b)
    assert M.compactness(m).item() == pytest.approx(expected, rel=0.02)
    assert M.asymmetry(m).item() < 0.02  # symmetric about both principal axes


def test_square_compactness_is_4_over_pi_and_rotation_invariant() -> None:
    values = [M.compactness(rotated(20, 20, d, "square")).item() for d in (0, 10, 30, 45)]
    # Corners are rounded by the perimeter's smoothing: documented tolerance 6%.
    for v in values:
        assert v == pytest.approx(4 / math.pi, rel=0.06)
    assert max(values) / min(values) < 1.015


@pytest.mark.parametrize("side", [20, 40, 80])
def test_square_perimeter_loses_one_sigma_per_side(side: int) -> None:
    """The docstring's accuracy statement: a square of side s measures about 4 (s - sigma)."""
    m = torch.zeros(1, 1, 160, 160)
    m[..., 40 : 40 + side, 40 : 40 + side] = 1
    sigma = M.PERIMETER_SIGMA
    assert M.perimeter(m).item() == pytest.approx(4 * (side - sigma), rel=0.01)
    assert M.compactness(m).item() == pytest.approx(
        16 * (side - sigma) ** 2 / (4 * math.pi * side**2), rel=0.02
    )


def test_semicircle_asymmetry_matches_independent_integration() -> None:
    r, y0 = 40.0, 84.0  # flat edge at row y0, the disc part above it
    yy, xx = grid()
    m = (((yy - y0) ** 2 + (xx - 64) ** 2 <= r * r) & (yy <= y0)).float()[None, None]
    # Independent value on a fine grid: the symmetry axis gives 0; the other principal axis is
    # parallel to the flat edge through the centroid, at 4r/(3 pi) from it.
    c = 4 * r / (3 * math.pi)
    s = np.linspace(-r, r, 2001)
    x, h = np.meshgrid(s, np.linspace(0, r, 1001))
    inside = x**2 + h**2 <= r * r
    mirrored_h = 2 * c - h
    mirrored_in = (x**2 + mirrored_h**2 <= r * r) & (mirrored_h >= 0)
    expected = (0 + (1 - (inside & mirrored_in).sum() / inside.sum())) / 2
    assert M.asymmetry(m).item() == pytest.approx(expected, abs=0.01)
    assert expected > 0.05  # the check is not trivially near zero


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Textbook sRGB (D65) -> CIELAB, independent of Kornia."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    mat = np.array(
        [
            [0.412453, 0.357580, 0.180423],
            [0.212671, 0.715160, 0.072169],
            [0.019334, 0.119193, 0.950227],
        ]
    )
    xyz = lin @ mat.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def two_colour_lesion(c1: tuple, c2: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    m = disc(30)
    left = (torch.arange(SIZE)[None, None, None, :] < 64).expand(1, 1, SIZE, SIZE)
    img = torch.where(
        left, torch.tensor(c1)[None, :, None, None], torch.tensor(c2)[None, :, None, None]
    )
    return img, m


def test_colour_count_and_spread() -> None:
    brown = M.DERMOSCOPIC_COLOURS["dark_brown"]
    blue = M.DERMOSCOPIC_COLOURS["blue_grey"]
    img, m = two_colour_lesion(brown, blue)
    feats = M.colour_features(img, m)
    assert feats["n_colours"].item() == 2
    p = (m[..., :64].sum() / m.sum()).item()  # share of the lesion left of column 64
    names = list(M.DERMOSCOPIC_COLOURS)
    assert feats["colour_shares"][0, names.index("dark_brown")].item() == pytest.approx(p, abs=1e-4)
    # Two colours in shares p and 1-p: RMS distance from the mean is sqrt(p (1-p)) * distance.
    lab = srgb_to_lab(np.array([brown, blue]))
    expected = np.sqrt(p * (1 - p)) * np.linalg.norm(lab[0] - lab[1])
    assert feats["colour_spread"].item() == pytest.approx(expected, rel=0.01)
    assert feats["mean_L"].item() == pytest.approx(p * lab[0, 0] + (1 - p) * lab[1, 0], abs=0.2)


def test_single_colour_and_no_reference_colour() -> None:
    black = M.DERMOSCOPIC_COLOURS["black"]
    img, m = two_colour_lesion(black, black)
    feats = M.colour_features(img, m)
    assert feats["n_colours"].item() == 1
    assert feats["colour_spread"].item() < 0.1
    green, _ = two_colour_lesion((0.0, 1.0, 0.0), (0.0, 1.0, 0.0))
    assert M.colour_features(green, m)["n_colours"].item() == 0  # far from every reference


def test_batch_equals_one_by_one() -> None:
    masks = torch.cat([disc(20), rotated(30, 12, 20, "ellipse"), rotated(15, 25, 5, "square")])
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    batched = M.lesion_features(images, masks)
    for i in range(3):
        single = M.lesion_features(images[i : i + 1], masks[i : i + 1])
        for k in M.FEATURES:
            torch.testing.assert_close(batched[k][i : i + 1], single[k], rtol=1e-4, atol=1e-4)


def test_soft_mask_is_fractional_occupancy() -> None:
    assert M.area(torch.full((2, 1, 10, 10), 0.5)).tolist() == [50.0, 50.0]


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"masks must have shape \(B, 1, H, W\)"):
        M.area(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="differ in size"):
        M.lesion_features(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 9, 9))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        M.colour_features(torch.full((1, 3, 8, 8), 2.0), torch.ones(1, 1, 8, 8))
