"""A PNG contact sheet of image pairs, to look at what the near-duplicate detector found."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

THUMB = (112, 84)
CAPTION = 24


def _thumb(path: str) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail(THUMB, Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", THUMB, (255, 255, 255))
        canvas.paste(img, ((THUMB[0] - img.width) // 2, (THUMB[1] - img.height) // 2))
        return canvas


def pair_gallery(
    pairs: pd.DataFrame, paths: dict[str, str], out: str | os.PathLike, columns: int = 4
) -> Path:
    """Pairs side by side (``columns`` pairs a row), captioned with the similarity, the lesion
    ids and the labels; palette PNG so that 20 pairs stay well under 500 KB."""
    pairs = pairs.reset_index(drop=True)
    cell_w, cell_h = 2 * THUMB[0] + 8, THUMB[1] + CAPTION
    rows = max(1, -(-len(pairs) // columns))
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, p in pairs.iterrows():
        x, y = (k % columns) * cell_w, (k // columns) * cell_h
        sheet.paste(_thumb(paths[p["image_a"]]), (x, y))
        sheet.paste(_thumb(paths[p["image_b"]]), (x + THUMB[0], y))
        text = f"{p['similarity']:.2f} {p['label_a']}/{p['label_b']}"
        draw.text((x + 2, y + THUMB[1] + 1), text, fill=(0, 0, 0))
        draw.text(
            (x + 2, y + THUMB[1] + 12),
            f"{p['image_a'][-7:]}~{p['image_b'][-7:]}",
            fill=(90, 90, 90),
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def top_cross_lesion(pairs: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` most similar pairs of images filed under different lesion ids."""
    cross = pairs[pairs["lesion_a"] != pairs["lesion_b"]]
    return cross.sort_values("similarity", ascending=False).head(n)
