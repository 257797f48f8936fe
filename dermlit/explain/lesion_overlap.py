"""Does the saliency point at the lesion? Its mass inside the lesion mask, against a baseline.

Dermoscopy images are centred on the lesion, so any map concentrated in the centre lands on
it: the baseline is a centred Gaussian blob with the SAME spread as each heat map (its
weighted standard deviation along each axis). A heat map beats the blob only where it follows
the lesion rather than the centre. The mask share of a uniform map is the lesion's area.

HAM10000 masks (``masks/<image_id>_segmentation.png``, 8-bit grey, lesion >= 128) go through
the images' own resize + centre crop (``data.cache.square_crop``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dermlit.data.cache import decoded_size, orientation, square_crop, upright

#: A mask pixel at or above this grey value is lesion.
MASK_THRESHOLD = 128


def mask_path(masks_dir: str | os.PathLike, image_id: str) -> Path:
    return Path(masks_dir) / f"{image_id}_segmentation.png"


def load_lesion_mask(
    path: str | os.PathLike, size: int, image: str | os.PathLike | None = None
) -> np.ndarray:
    """Boolean (size, size) lesion mask in the model input's geometry. ``image``: the mask's
    image, whose JPEG decoder may downscale it before the crop (:func:`decoded_size`); the mask
    is reduced by the same power of two first. Without it the mask sat up to 0.4 px off the lesion the
    model sees at 32 px (2 % of the pixels differed), and nothing at >= 96 px. The mask is taken
    to be drawn on the image's stored pixels and is turned upright with it (EXIF orientation)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lesion mask not found: {path}")
    with Image.open(path) as img:
        grey = img.convert("L")
        if image is not None:  # drawn on the image's stored pixels: turned with the image
            with Image.open(image) as photo:
                grey = upright(grey, orientation(photo))
        if image is not None and (shrunk := decoded_size(image, size)) != grey.size:
            # the decoder's 1/2^k scaling: whole blocks of 2^k pixels, the last one partial
            factor = round(grey.size[0] / shrunk[0])
            reduced = grey.reduce(factor)
            grey = reduced if reduced.size == shrunk else grey.resize(shrunk, Image.Resampling.BOX)
        grey = np.asarray(square_crop(grey, size))
    return grey >= MASK_THRESHOLD


def mass_inside(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, the share of the map's mass inside the mask (N,); NaN for an all-zero map."""
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    k = np.broadcast_to(np.asarray(masks, dtype=bool), m.shape)
    if (m < 0).any():
        raise ValueError("saliency maps must be non-negative")
    total = m.sum((1, 2))
    inside = np.where(k, m, 0.0).sum((1, 2))
    return np.divide(inside, total, out=np.full(len(m), np.nan), where=total > 0)


def centred_blob_like(maps: np.ndarray) -> np.ndarray:
    """Per map, a Gaussian centred in the image with the map's own spread along each axis
    (weighted std about its centroid); all-zero maps give all-zero blobs."""
    m = np.asarray(maps, dtype=np.float64)
    squeeze = m.ndim == 2
    m = m[None] if squeeze else m
    n, h, w = m.shape
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    total = m.sum((1, 2))
    safe = np.where(total > 0, total, 1.0)
    py, px = m.sum(2) / safe[:, None], m.sum(1) / safe[:, None]  # marginals (N, H), (N, W)
    sy = np.sqrt((py * (ys - (py * ys).sum(1, keepdims=True)) ** 2).sum(1))
    sx = np.sqrt((px * (xs - (px * xs).sum(1, keepdims=True)) ** 2).sum(1))
    sy, sx = np.maximum(sy, 0.5), np.maximum(sx, 0.5)  # a one-pixel map: a one-pixel blob
    gy = np.exp(-0.5 * ((ys - (h - 1) / 2)[None] / sy[:, None]) ** 2)
    gx = np.exp(-0.5 * ((xs - (w - 1) / 2)[None] / sx[:, None]) ** 2)
    blob = gy[:, :, None] * gx[:, None, :] * (total > 0)[:, None, None]
    return blob[0] if squeeze else blob


@dataclass(frozen=True)
class LesionOverlap:
    """Per image (N,): the map's mass share inside the lesion, the matched blob's, the area."""

    saliency: np.ndarray
    blob: np.ndarray
    area: np.ndarray

    def summary(self, n_resamples: int = 1000, seed: int = 0, ci_alpha: float = 0.05) -> dict:
        """Means over images with defined maps, and the paired difference saliency - blob with
        a percentile bootstrap CI over images; ``n_zero_maps`` counts the maps left out."""
        ok = ~np.isnan(self.saliency)
        s, b, a = self.saliency[ok], self.blob[ok], self.area[ok]
        out = {"n_images": int(ok.sum()), "n_zero_maps": int((~ok).sum())}
        if not ok.any():
            return out | {k: float("nan") for k in ("saliency", "blob", "area", "lift")}
        diff = s - b
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(diff), size=(n_resamples, len(diff)))
        low, high = np.quantile(diff[idx].mean(1), [ci_alpha / 2, 1 - ci_alpha / 2])
        return out | {
            "saliency": float(s.mean()),
            "blob": float(b.mean()),
            "area": float(a.mean()),
            "lift": float(diff.mean()),
            "lift_ci_low": float(low),
            "lift_ci_high": float(high),
            "share_saliency_beats_blob": float((diff > 0).mean()),
        }


def lesion_overlap(maps: np.ndarray, masks: np.ndarray) -> LesionOverlap:
    """Saliency and matched-blob mass inside each lesion mask, (N, H, W) maps and masks."""
    m, k = np.asarray(maps), np.asarray(masks, dtype=bool)
    if m.shape != k.shape or m.ndim != 3:
        raise ValueError(f"maps and masks must both be (N, H, W), got {m.shape} and {k.shape}")
    return LesionOverlap(
        saliency=mass_inside(m, k),
        blob=mass_inside(centred_blob_like(m), k),
        area=k.mean((1, 2)),
    )
