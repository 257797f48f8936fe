"""The images ``dermlit predict`` reads: a folder, or a CSV with an ``image`` column; decoding
through the training cache's geometry, with the problems of one image kept as its row's reason.

Colour: the models are trained on RGB dermoscopy. A grayscale image (PIL modes L, I, I;16, F)
is CONVERTED by repeating its channel, after scaling a 16-bit or float one to 8 bits
(``data.cache.to_rgb``; the ``note`` column says so: a colourless image is out of the training
distribution); RGBA/LA/PA images are converted by dropping the alpha channel
(noted); palette and CMYK images are converted to RGB (noted). An image with an EXIF orientation
is turned upright as a viewer shows it, as in training (``data.cache.upright``; noted). Nothing
is refused for its mode;
an image PIL cannot decode is listed with the reason in the ``error`` column.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from dermlit.data.cache import WIDE_MODES, orientation, square_crop, to_rgb, upright
from dermlit.data.sources.folder import IMAGE_SUFFIXES, list_image_files
from dermlit.errors import InputError

GRAYSCALE_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class InputImage:
    """One row of the output: its name (as given) and the file it points at."""

    name: str
    path: Path


def folder_images(folder: Path) -> tuple[list[InputImage], list[tuple[str, str]]]:
    """The image files directly in ``folder`` (not its sub-folders), sorted by name, and the
    entries that are not read, with why (``dermlit predict`` prints them)."""
    listing = list_image_files(folder)
    if not listing.images:
        raise InputError(
            f"{folder}: no images (files ending in {', '.join(IMAGE_SUFFIXES)}; sub-folders "
            "are not searched)"
        )
    return [InputImage(p.name, p) for p in listing.images], listing.skipped


def resolve_image(images_dir: Path, value: str) -> Path:
    """``DIR/value``, or ``DIR/value.jpg`` etc. for ISIC-style ids without a suffix."""
    path = images_dir / value
    if path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:  # ISIC_1.jpg, then ISIC_1.JPG (cameras write upper case)
        for spelled in (suffix, suffix.upper()):
            if path.with_name(path.name + spelled).is_file():
                return path.with_name(path.name + spelled)
    return path


def csv_images(csv: Path, images_dir: Path | None) -> list[InputImage]:
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{csv}: not a readable CSV ({err})") from None
    if "image" not in frame.columns:
        raise InputError(f"{csv}: needs an 'image' column; has {list(frame.columns)}")
    if images_dir is None:
        raise InputError(f"{csv}: give the folder its images are in with --images DIR")
    if not images_dir.is_dir():
        raise InputError(f"--images {images_dir}: not a folder")
    names = [n.strip() for n in frame["image"]]
    if not names:
        raise InputError(f"{csv}: no rows")
    return [InputImage(n, resolve_image(images_dir, n)) for n in names]


def list_inputs(
    source: str | os.PathLike, images_dir: str | os.PathLike | None
) -> tuple[list[InputImage], list[tuple[str, str]]]:
    """INPUT of ``dermlit predict``: a folder of images or a CSV (``image`` column); and the
    folder's entries that are not read, with why (none for a CSV: every row is an output row)."""
    source = Path(source)
    images = None if images_dir is None else Path(images_dir)
    if source.is_dir():
        if images is not None:
            raise InputError(f"--images is for a CSV input; {source} is a folder")
        return folder_images(source)
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise InputError(f"{source}: INPUT must be a folder of images or a .csv file")
        return csv_images(source, images), []
    raise InputError(f"{source}: no such folder or file")


class ImageProblem(ValueError):
    """An image that cannot be used; its message goes into the ``error`` column."""


def colour_note(mode: str) -> str:
    if mode in WIDE_MODES:
        return f"grayscale ({mode}) scaled to 8 bits, converted to RGB by repeating the channel"
    if mode in GRAYSCALE_MODES:
        return f"grayscale ({mode}) converted to RGB by repeating the channel"
    if mode in ALPHA_MODES:
        return f"{mode}: alpha channel dropped"
    if mode != "RGB":
        return f"{mode} converted to RGB"
    return ""


def turn_note(turn: int) -> str:
    return "" if turn == 1 else f"turned upright by its EXIF orientation ({turn})"


def size_note(stored: tuple[int, int], size: int) -> str:
    """Said of an image whose shorter side is below the model's input: it is upscaled, so the
    model sees interpolated detail it was never trained on (a 10x10 thumbnail, a 128x1 strip)."""
    if min(stored) >= size:
        return ""
    return (
        f"{stored[0]}x{stored[1]} px upscaled to the model's {size} px: less detail than trained on"
    )


def decode(path: Path, size: int) -> tuple[np.ndarray, str]:
    """uint8 RGB (size, size, 3) through ``data.cache.load_square``'s steps, and a note on a
    colour conversion (empty for RGB). Raises :class:`ImageProblem` with a one-line reason."""
    if not path.is_file():
        raise ImageProblem(f"file not found: {path}")
    try:
        with Image.open(path) as img:
            turn = orientation(img)
            notes = (colour_note(img.mode), turn_note(turn), size_note(img.size, size))
            note = "; ".join(n for n in notes if n)
            img.draft("RGB", (size, size))  # as load_square: the JPEG decoder downscales
            array = np.asarray(square_crop(to_rgb(upright(img, turn)), size), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageProblem(f"not an image PIL can read: {path.name}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageProblem(f"cannot decode {path.name}: {type(err).__name__}: {err}") from None
    return array, note


@dataclass
class Decoded:
    """A batch: pixels of the readable images, and per input row its error and note."""

    pixels: np.ndarray  # (n_ok, S, S, 3) uint8
    ok: np.ndarray  # (n,) bool
    errors: list[str]
    notes: list[str]


def decode_batch(items: list[InputImage], size: int, pool: ThreadPoolExecutor | None) -> Decoded:
    """Decode ``items`` (in parallel threads with ``pool``: PIL releases the GIL)."""

    def one(item: InputImage) -> tuple[np.ndarray | None, str, str]:
        try:
            array, note = decode(item.path, size)
            return array, "", note
        except ImageProblem as err:
            return None, str(err), ""

    results = list(pool.map(one, items)) if pool is not None else [one(i) for i in items]
    ok = np.asarray([a is not None for a, _, _ in results], dtype=bool)
    arrays = [a for a, _, _ in results if a is not None]
    pixels = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
    return Decoded(pixels, ok, [e for _, e, _ in results], [n for _, _, n in results])
