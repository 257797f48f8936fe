"""Saliency mass inside the lesion mask: hand-worked shares, the matched blob, the mask's
geometry, and the whole measurement on real HAM10000 images and masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
from PIL import Image

from dermlit.data.cache import load_square
from dermlit.explain.lesion_overlap import (
    centred_blob_like,
    lesion_overlap,
    load_lesion_mask,
    mask_path,
    mass_inside,
)
from dermlit.explain.saliency import grad_cam


def gaussian(h: int, w: int, cy: float, cx: float, sy: float, sx: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.exp(-0.5 * (((ys - cy) / sy) ** 2 + ((xs - cx) / sx) ** 2))


def test_mass_inside_hand_worked():
    heat = np.array([[1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0], [0, 0, 0, 0], [0, 0, 0, 10.0]])
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True
    assert mass_inside(heat, mask)[0] == pytest.approx(10 / 20)
    assert np.isnan(mass_inside(np.zeros((4, 4)), mask)[0])
    with pytest.raises(ValueError, match="non-negative"):
        mass_inside(-heat, mask)


def test_blob_has_the_maps_spread_but_sits_in_the_centre():
    centred = gaussian(61, 101, 30, 50, 5, 7)
    np.testing.assert_allclose(centred_blob_like(centred), centred, atol=1e-6)
    off = gaussian(61, 101, 20, 30, 5, 7)  # >= 4 sigma from the border: its spread is kept
    np.testing.assert_allclose(centred_blob_like(off), centred, atol=1e-3)
    assert mass_inside(off, off > 0.5)[0] > mass_inside(centred_blob_like(off), off > 0.5)[0]
    assert not centred_blob_like(np.zeros((5, 5))).any()


def test_lesion_overlap_of_extreme_maps():
    masks = np.zeros((3, 20, 20), dtype=bool)
    masks[:, 5:15, 2:12] = True  # an off-centre lesion of area 0.25
    maps = np.stack([masks[0].astype(float), np.ones((20, 20)), np.zeros((20, 20))])
    res = lesion_overlap(maps, masks)
    assert res.saliency[0] == pytest.approx(1.0)  # all mass on the lesion
    assert res.saliency[1] == pytest.approx(0.25)  # a uniform map: the area
    np.testing.assert_allclose(res.area, 0.25)
    assert np.isnan(res.saliency[2])
    summary = res.summary(n_resamples=200)
    assert summary["n_images"] == 2 and summary["n_zero_maps"] == 1
    assert summary["saliency"] == pytest.approx((1.0 + 0.25) / 2)
    assert summary["lift"] == pytest.approx(np.mean(res.saliency[:2] - res.blob[:2]))
    assert summary["lift_ci_low"] <= summary["lift"] <= summary["lift_ci_high"]
    with pytest.raises(ValueError, match=r"both be \(N, H, W\)"):
        lesion_overlap(maps, masks[:2])


def test_mask_gets_the_images_crop(tmp_path):
    """A 200x150 mask with the lesion in its 30 leftmost columns: at 50 px the image is
    resized to 67x50 and its 8 leftmost columns (24 source px) are cropped away, so about
    30/3 - 8 = 2 lesion columns remain, over the full height."""
    grey = np.zeros((150, 200), dtype=np.uint8)
    grey[:, :30] = 255
    Image.fromarray(grey).save(tmp_path / "ISIC_0000000_segmentation.png")
    mask = load_lesion_mask(mask_path(tmp_path, "ISIC_0000000"), 50)
    assert mask.shape == (50, 50)
    assert mask[:, :2].all() and not mask[:, 3:].any()
    with pytest.raises(FileNotFoundError, match="lesion mask not found"):
        load_lesion_mask(mask_path(tmp_path, "ISIC_9999999"), 50)


def test_real_images_masks_and_saliency(ham_dir):
    ids = sorted(p.stem for p in (ham_dir / "images").glob("*.jpg"))[:8]
    size = 64
    imgs = np.stack([load_square(ham_dir / "images" / f"{i}.jpg", size) for i in ids])
    masks = np.stack([load_lesion_mask(mask_path(ham_dir / "masks", i), size) for i in ids])
    # the crop is aligned: the lesion is darker than the skin around it in (nearly) every image
    grey = imgs.mean(-1)
    darker = [grey[k][masks[k]].mean() < grey[k][~masks[k]].mean() for k in range(len(ids))]
    assert sum(darker) >= 7, darker
    model = timm.create_model("resnet18", pretrained=False, num_classes=7)
    maps = grad_cam(model, imgs, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    res = lesion_overlap(maps, masks)
    np.testing.assert_allclose(res.area, masks.mean((1, 2)))
    defined = ~np.isnan(res.saliency)
    assert ((res.saliency[defined] >= 0) & (res.saliency[defined] <= 1)).all()
    assert ((res.blob[defined] >= 0) & (res.blob[defined] <= 1)).all()
    assert res.summary(n_resamples=100)["n_images"] == defined.sum()


def test_the_mask_shares_the_jpeg_decoders_geometry(tmp_path: Path) -> None:
    """load_square lets the JPEG decoder shrink a 200x150 image to 50x38 at 32 px (draft); the
    mask (a PNG) went straight to the crop, so it sat 0.4 px off and 2 % of its pixels
    disagreed with the image's geometry. The reference: the mask itself, saved as the JPEG
    image and sent through load_square."""
    yy, xx = np.mgrid[0:150, 0:200]
    mask = (((yy - 80.3) / 45) ** 2 + ((xx - 93.7) / 60) ** 2 <= 1).astype(np.uint8) * 255
    Image.fromarray(mask).save(tmp_path / "ISIC_0000001_segmentation.png")
    image = tmp_path / "ISIC_0000001.jpg"
    Image.fromarray(mask).convert("RGB").save(image, quality=100)
    for size in (32, 64):
        reference = load_square(image, size)[..., 0] >= 128
        aligned = load_lesion_mask(mask_path(tmp_path, "ISIC_0000001"), size, image)
        assert (aligned != reference).mean() <= 0.002, size
    unaligned = load_lesion_mask(mask_path(tmp_path, "ISIC_0000001"), 32)
    assert (unaligned != (load_square(image, 32)[..., 0] >= 128)).mean() > 0.01  # the old path
