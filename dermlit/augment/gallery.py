"""The audit's PNG gallery: original and augmented images with the moved mask's outline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dermlit.constants import CLASSES

OUTLINE_RGB = (0.0, 1.0, 0.3)
HEADER_PX = 14
TILE_MAX_PX = 112


def _outline(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Paint the mask's boundary (mask minus its 3x3 erosion) so alignment is visible."""
    hard = (masks >= 0.5).float()
    eroded = -F.max_pool2d(-hard, 3, stride=1, padding=1)
    edge = (hard - eroded).bool().expand_as(images)
    colour = torch.tensor(OUTLINE_RGB, dtype=images.dtype)[None, :, None, None].expand_as(images)
    return torch.where(edge, colour, images)


def write_gallery(
    path: Path,
    images: torch.Tensor,
    masks: torch.Tensor,
    augmented: dict[str, tuple[torch.Tensor, torch.Tensor]],
    labels: list[str],
    per_class: int = 1,
) -> list[int]:
    """One row per chosen image (``per_class`` of each class present), one column per version.

    Saved with a 256-colour palette to keep the committed PNG small. Returns the row indices.
    """
    rows = [i for c in CLASSES for i in [j for j, lab in enumerate(labels) if lab == c][:per_class]]
    if not rows:
        raise ValueError("no images to show in the gallery")
    columns = [("original", images, masks)] + [(n, im, m) for n, (im, m) in augmented.items()]
    tile = min(images.shape[-1], TILE_MAX_PX)
    sheet = Image.new("RGB", (tile * (len(columns) + 0), HEADER_PX + tile * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (name, _, _) in enumerate(columns):
        draw.text((c * tile + 3, 1), name, fill="black")
    for c, (_, ims, ms) in enumerate(columns):
        idx = torch.tensor(rows)
        shown = _outline(ims[idx], ms[idx])
        shown = F.interpolate(shown, size=(tile, tile), mode="bilinear", antialias=True)
        arr = (shown.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for r, tile_arr in enumerate(arr):
            sheet.paste(
                Image.fromarray(np.ascontiguousarray(tile_arr)), (c * tile, HEADER_PX + r * tile)
            )
    for r, i in enumerate(rows):
        draw.text((3, HEADER_PX + r * tile + 2), labels[i], fill="yellow")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(path, optimize=True)
    return rows
