"""The official HAM10000 layout: ``HAM10000_metadata.csv`` plus one or more image folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dermlit.data.validation import ValidationReport, check_index
from dermlit.errors import DataNotFound, InputError

METADATA_FILE = "HAM10000_metadata.csv"
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")


def scan_images(folders: Iterable[Path]) -> dict[str, Path]:
    """``{file stem: path}`` of the images in these folders (the first folder wins)."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() in IMAGE_SUFFIXES:
                    found.setdefault(stem, Path(entry.path))
    return found


class HAM10000Source:
    """Reads ``root/HAM10000_metadata.csv`` and finds each ``image_id`` in the image folders.

    Images may lie in ``HAM10000_images_part_1/``, ``HAM10000_images_part_2/`` (as downloaded
    from the Harvard Dataverse) or ``images/``.
    """

    name = "ham10000"
    #: the metadata column naming each image's source (clinic, device, collection): per-source
    #: metrics and the ``by_source`` split read it (vidir_molemax, vidir_modern, rosendahl,
    #: vienna_dias)
    source_column: str | None = "dataset"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"

    def _image_paths(self) -> dict[str, Path]:
        return scan_images(self.root / sub for sub in IMAGE_DIRS)

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        """The index table and its metadata validation report (nothing decoded yet)."""
        meta_path = self.root / METADATA_FILE
        if not meta_path.is_file():
            raise DataNotFound(
                f"HAM10000 metadata not found: {meta_path}. Expected the official layout "
                f"({METADATA_FILE} plus {' or '.join(IMAGE_DIRS)}/); set data.source.root."
            )
        meta = pd.read_csv(meta_path, dtype={"lesion_id": str, "image_id": str, "dx": str})
        missing_cols = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
        if missing_cols:
            raise InputError(
                f"{meta_path} lacks column(s) {missing_cols}; has {list(meta.columns)}"
            )
        paths = self._image_paths()
        default_dir = self.root / IMAGE_DIRS[-1]
        df = meta.rename(columns={"dx": "label"})
        df["label"] = df["label"].str.strip().str.lower()
        df["path"] = [str(paths.get(i, default_dir / f"{i}.jpg")) for i in df["image_id"]]
        df["lesion_id"] = df["lesion_id"].fillna(df["image_id"])
        front = ["image_id", "path", "label", "lesion_id"]
        df = df[front + [c for c in df.columns if c not in front]]
        return df, check_index(df, f"{self.name} at {self.root}")
