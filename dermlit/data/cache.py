"""Decoded, resized uint8 images in one memory-mapped array, built once per (source, size).

Epochs after the first and later runs decode no JPEG: a ``(N, S, S, 3)`` uint8 ``.npy`` file is
opened with ``mmap_mode='r'``. Its name carries a fingerprint of the images' ids and bytes
(:mod:`dermlit.data.fingerprint`: a copy of the same files elsewhere finds it) and of the
preprocessing (size, version, colour constancy), so any change to the images or to the
preprocessing builds a new cache.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from dermlit.atomic import write_text_atomic
from dermlit.data.colour_constancy import NoColourConstancy
from dermlit.data.fingerprint import content_fingerprint

log = logging.getLogger(__name__)
#: 2: images are turned upright by their EXIF orientation (:func:`upright`)
PREPROCESS_VERSION = 2
#: the EXIF tag that says how the camera was held: 1 is upright, 5-8 swap width and height
EXIF_ORIENTATION = 0x0112
SWAPS_AXES = (5, 6, 7, 8)


def square_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear) and centre-crop to a square (docs/design.md,
    "Contract"); lesion masks go through the same geometry as their images."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


#: PIL modes of more than 8 bits per pixel, whose ``convert("RGB")`` clips to 0-255
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def eight_bit_scale(img: Image.Image) -> float:
    """The factor that brings a 16-bit or 32-bit grayscale image to 0-255. PIL's
    ``convert("RGB")`` clips these modes instead of scaling them: a 16-bit image came out solid
    white and a float one in [0, 1] solid black. ``I;16*`` is scaled by its bit depth; ``I`` and
    ``F`` carry no range, so theirs is read from the values (8-bit, 16-bit or [0, 1] floats)."""
    if img.mode.startswith("I;16"):
        return 255 / 65535
    values = np.asarray(img, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(values).all() or low < 0:
        raise ValueError(
            f"{img.mode} image with values in [{low:g}, {high:g}]: not an 8-bit, 16-bit or "
            "[0, 1] grayscale image; convert it to 8-bit RGB"
        )
    if img.mode == "F" and high <= 1.0:
        return 255.0
    if high <= 255:
        return 1.0
    if high <= 65535:
        return 255 / 65535
    raise ValueError(
        f"{img.mode} image with values up to {high:g}: not an 8-bit, 16-bit or [0, 1] "
        "grayscale image; convert it to 8-bit RGB"
    )


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB; a grayscale image of more than 8 bits is scaled to 0-255 first
    (:func:`eight_bit_scale`), then its channel repeated like any grayscale image."""
    if img.mode not in WIDE_MODES:
        return img.convert("RGB")
    scaled = np.asarray(img, dtype=np.float64) * eight_bit_scale(img)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")


def orientation(img: Image.Image) -> int:
    """``img``'s EXIF orientation (1, upright, when it has none or an unknown value)."""
    value = img.getexif().get(EXIF_ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def upright(img: Image.Image, turn: int | None = None) -> Image.Image:
    """``img`` as an image viewer shows it: turned by its EXIF orientation (``turn``: another
    image's, e.g. a mask drawn on that image's stored pixels). PIL ignores the tag on open; phone
    cameras and dermatoscope apps store the pixels sideways and set it, so without this a model
    was trained on, or predicted, the image sideways or mirrored where the clinician saw it
    upright. Pillow's ``ImageOps.exif_transpose`` does the turn."""
    own = orientation(img)
    turn = own if turn is None else turn
    if turn == 1:
        return img
    if turn != own:  # exif_transpose reads the tag: give the copy the other image's
        img = img.copy()
        img.getexif()[EXIF_ORIENTATION] = turn
    return ImageOps.exif_transpose(img)


def decoded_size(path: str | os.PathLike, size: int) -> tuple[int, int]:
    """The (width, height) :func:`load_square` decodes ``path`` at before :func:`square_crop`:
    a JPEG's decoder downscales by a power of two (``draft``), rounding up (200x150 at 32 px:
    50x38), so a mask of the image must be brought to this size first to share its geometry."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        w, h = img.size
        return (h, w) if orientation(img) in SWAPS_AXES else (w, h)


def load_square(path: str | os.PathLike, size: int) -> np.ndarray:
    """The image at ``path`` as uint8 RGB (size, size, 3): upright (EXIF), 8-bit RGB, through
    :func:`square_crop`."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # lets the JPEG decoder downscale cheaply
        return np.asarray(square_crop(to_rgb(upright(img)), size), dtype=np.uint8)


def decode_into(
    array: np.ndarray, rows_paths, image_ids: list[str], size: int, workers: int = 4
) -> dict[str, str]:
    """Decode each ``(row, path)`` into ``array[row]``; the ids that failed, with the reason."""
    bad: dict[str, str] = {}

    def decode(i_path: tuple[int, str]) -> None:
        i, path = i_path
        try:
            array[i] = load_square(path, size)
        # corrupt/truncated/not an image; over Pillow's pixel limit (not an OSError: one such
        # file crashed the whole cache build, even under on_error=skip)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            bad[image_ids[i]] = f"{type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(decode, rows_paths))
    return bad


def retry_failures(
    df: pd.DataFrame,
    size: int,
    cc: NoColourConstancy,
    array_path: Path,
    meta_path: Path,
    meta: dict,
) -> dict[str, str]:
    """Decode the cached failures again and keep only those that still fail. The key holds the
    files' bytes, not their readability: an I/O error, a full file table or a permission fixed
    since must not drop an image from every later run until someone deletes the cache."""
    row_of = {image_id: i for i, image_id in enumerate(meta["image_ids"])}
    path_of = dict(zip(df["image_id"].astype(str), df["path"].astype(str), strict=True))
    retry = [(row_of[i], path_of[i]) for i in meta["bad"] if i in row_of and i in path_of]
    fresh = np.zeros((len(retry), size, size, 3), dtype=np.uint8)
    local_ids = [meta["image_ids"][row] for row, _ in retry]
    still_bad = decode_into(
        fresh, [(k, path) for k, (_, path) in enumerate(retry)], local_ids, size
    )
    recovered = [k for k, image_id in enumerate(local_ids) if image_id not in still_bad]
    if not recovered:
        return meta["bad"]
    cc.apply_array(fresh)
    array = np.load(array_path, mmap_mode="r+")
    for k in recovered:
        array[retry[k][0]] = fresh[k]
    array.flush()
    del array
    bad = {i: why for i, why in meta["bad"].items() if i not in path_of or i in still_bad}
    write_text_atomic(meta_path, json.dumps({**meta, "bad": bad}))
    log.info("Image cache: %d earlier decode failure(s) now decode", len(recovered))
    return bad


class ImageCache:
    """The decoded images of one index table at one size; ``bad`` holds undecodable ids."""

    def __init__(self, path: Path, image_ids: list[str], bad: dict[str, str]) -> None:
        self.path = path
        self.array = np.load(path, mmap_mode="r")
        self.image_ids = image_ids
        self.bad = bad
        self.row_of = {image_id: i for i, image_id in enumerate(image_ids)}

    @classmethod
    def build_or_load(
        cls,
        df: pd.DataFrame,
        size: int,
        cache_dir: str | os.PathLike,
        workers: int = 4,
        colour_constancy: NoColourConstancy | None = None,
    ) -> ImageCache:
        """``colour_constancy`` corrects the decoded images once (vectorised, in chunks)."""
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        cc = colour_constancy if colour_constancy is not None else NoColourConstancy()
        key = f"{content_fingerprint(df, cache_dir)}-{size}px-v{PREPROCESS_VERSION}"
        key += f"-{cc.cache_key}" if cc.cache_key else ""
        array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
        if array_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            log.info("Image cache hit: %s", array_path)
            if meta["bad"]:
                meta["bad"] = retry_failures(df, size, cc, array_path, meta_path, meta)
            return cls(array_path, meta["image_ids"], meta["bad"])
        log.info("Decoding %d images at %d px into %s", len(df), size, array_path)
        image_ids = df["image_id"].astype(str).tolist()
        tmp = array_path.with_suffix(f".tmp{os.getpid()}.npy")
        array = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(df), size, size, 3)
        )
        bad = decode_into(array, enumerate(df["path"].astype(str)), image_ids, size, workers)
        cc.apply_array(array)
        array.flush()
        os.replace(tmp, array_path)
        meta = {"image_ids": image_ids, "bad": bad, "size": size, "colour_constancy": repr(cc)}
        write_text_atomic(meta_path, json.dumps(meta))
        return cls(array_path, image_ids, bad)

    def rows(self, image_ids: pd.Series) -> np.ndarray:
        return np.fromiter((self.row_of[i] for i in image_ids.astype(str)), dtype=np.int64)
