"""A plain folder of images without labels: prediction only (targets -1, no metrics)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dermlit.data.validation import ValidationReport, check_index, describe_ids
from dermlit.errors import DataNotFound

log = logging.getLogger(__name__)
UNLABELLED = ""
#: files of a folder that are read as images (case-insensitive); ``.jfif`` is a JPEG as
#: Windows often names it
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class FolderListing:
    """The image files of a folder, and every other entry with why it is not read: a folder of
    a user's images is never trimmed without a word (a ``.gif``, a sub-folder or a ``.heic``
    vanished from the output before)."""

    images: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name below root, why)


def skipped_message(root: str | os.PathLike, skipped: list[tuple[str, str]]) -> str:
    """``ROOT: entries not read as images: 3 (d.gif (why), ...)``: predict prints it, eval logs it."""
    shown = [f"{name} ({why})" for name, why in skipped]
    return f"{root}: entries not read as images: {describe_ids(shown)}"


def list_image_files(root: Path, recursive: bool = False) -> FolderListing:
    """The files in ``root`` whose suffix is an image's (sorted; ``recursive``: in its
    sub-folders too), and the entries skipped. A broken link with an image suffix is listed as an
    image, so that reading it fails by name instead of the file going missing."""
    listing = FolderListing([])
    for p in sorted(root.glob("**/*" if recursive else "*")):
        name = p.relative_to(root).as_posix()
        if p.is_dir():
            if not recursive:
                listing.skipped.append((name + "/", "sub-folder, not searched"))
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            listing.images.append(p)
        elif p.is_file() or p.is_symlink():
            why = f"suffix {p.suffix or '(none)'} is not an image's"
            listing.skipped.append((name, why if p.exists() else "broken link"))
    return listing


class FolderSource:
    """Every image in ``root`` (:data:`IMAGE_SUFFIXES`; ``recursive`` for sub-folders; the
    other entries are logged by name), id = its
    path below ``root`` without suffix (the file stem when flat), label empty, all in one split (``test``) so that ``dermlit-eval`` predicts them all."""

    name = "folder"

    def __init__(
        self, root: str | os.PathLike, recursive: bool = False, split: str = "test"
    ) -> None:
        self.root = Path(root).expanduser()
        self.recursive, self.split = recursive, split

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        if not self.root.is_dir():
            raise DataNotFound(f"image folder not found: {self.root}")
        listing = list_image_files(self.root, self.recursive)
        paths = listing.images
        if not paths:
            raise DataNotFound(f"no {'/'.join(IMAGE_SUFFIXES)} image in {self.root}")
        if listing.skipped:
            log.warning("%s", skipped_message(self.root, listing.skipped))
        # the path below root without suffix: unique in sub-folders, the plain stem otherwise
        ids = [p.relative_to(self.root).with_suffix("").as_posix() for p in paths]
        df = pd.DataFrame(
            {
                "image_id": ids,
                "path": [str(p) for p in paths],
                "label": UNLABELLED,
                "lesion_id": ids,
                "split": self.split,
            }
        )
        return df, check_index(df, f"{self.name} {self.root}", allow_unlabelled=True)
