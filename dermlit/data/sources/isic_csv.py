"""The ISIC ground-truth CSV layout: ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` one-hot rows plus a
folder of images, as ISIC 2018 Task 3 and ISIC 2019 publish their labels.

ISIC 2019 names actinic keratosis ``AK`` (mapped to ``akiec``) and adds ``SCC`` and ``UNK``,
which are not among dermlit's seven classes: rows labelled there are refused (default), dropped
(``other_columns=drop``), or mapped by the user (``column_map={SCC: akiec}``; ISIC 2018's AKIEC
includes intraepithelial carcinoma, so that mapping is defensible, but it is a choice).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dermlit.constants import CLASSES, ISIC_TO_CLASS
from dermlit.data.sources.ham10000 import IMAGE_SUFFIXES
from dermlit.data.validation import ValidationReport, check_index, describe_ids

#: ISIC column -> dermlit class: ISIC 2018 names plus ISIC 2019's ``AK``.
DEFAULT_COLUMN_MAP: dict[str, str] = {**ISIC_TO_CLASS, "AK": "akiec"}
#: Columns of published ground-truth files that are not labels.
DEFAULT_IGNORE: tuple[str, ...] = ("score_weight",)

log = logging.getLogger(__name__)

OtherColumns = Literal["refuse", "drop"]


def image_paths(folder: Path, recursive: bool = False) -> dict[str, Path]:
    """Image stem -> path for every image file in ``folder`` (first one wins on clashes)."""
    found: dict[str, Path] = {}
    pattern = "**/*" if recursive else "*"
    for path in sorted(folder.glob(pattern)):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, path)
    return found


class IsicCsvSource:
    """Reads a one-hot ground-truth CSV and finds each ``image`` in ``images``.

    column_map: extra or overriding ISIC column -> class mappings (a class name, or null to
        treat the column as outside the seven classes).
    other_columns: what to do with rows whose label is in a column outside the seven classes:
        ``refuse`` (error naming the columns and images) or ``drop`` (logged via the report).
    lesion_csv: optional CSV with ``image,lesion_id`` (e.g. ISIC 2018's lesion groupings).
    split: the split every row belongs to (``test``: evaluate on all of it); null lets the
        DataModule make its lesion-grouped split (training on this set).
    """

    name = "isic_csv"

    def __init__(
        self,
        csv: str | os.PathLike,
        images: str | os.PathLike,
        column_map: Mapping[str, str | None] | None = None,
        other_columns: OtherColumns = "refuse",
        ignore_columns: Sequence[str] = DEFAULT_IGNORE,
        lesion_csv: str | os.PathLike | None = None,
        split: str | None = "test",
    ) -> None:
        if other_columns not in ("refuse", "drop"):
            raise ValueError(f"other_columns must be 'refuse' or 'drop', got {other_columns!r}")
        self.csv, self.images = Path(csv).expanduser(), Path(images).expanduser()
        self.column_map = {**DEFAULT_COLUMN_MAP, **dict(column_map or {})}
        unknown = {c for c in self.column_map.values() if c is not None} - set(CLASSES)
        if unknown:
            raise ValueError(f"column_map maps to unknown class(es) {sorted(unknown)}")
        self.other_columns = other_columns
        self.ignore_columns = tuple(ignore_columns)
        self.lesion_csv = Path(lesion_csv).expanduser() if lesion_csv else None
        self.split = split

    def __repr__(self) -> str:
        return f"{type(self).__name__}(csv={str(self.csv)!r}, images={str(self.images)!r})"

    def labels(self) -> tuple[pd.DataFrame, list[str]]:
        """``(image, label)`` for every row (label None when outside the seven classes), and
        the ids of the rows labelled in a column outside them."""
        if not self.csv.is_file():
            raise FileNotFoundError(f"ISIC ground-truth CSV not found: {self.csv}")
        gt = pd.read_csv(self.csv, dtype={"image": str})
        if "image" not in gt.columns:
            raise ValueError(f"{self.csv}: no 'image' column; has {list(gt.columns)}")
        cols = [c for c in gt.columns if c != "image" and c not in self.ignore_columns]
        if not any(self.column_map.get(c) for c in cols):
            raise ValueError(
                f"{self.csv}: none of its columns {cols} is a known ISIC class column "
                f"({sorted(k for k, v in self.column_map.items() if v)})"
            )
        values = gt[cols].to_numpy(dtype=np.float64)
        bad_value = ~np.isin(values, (0.0, 1.0))
        if bad_value.any():
            rows = np.flatnonzero(bad_value.any(1))
            raise ValueError(
                f"{self.csv}: labels must be one-hot 0/1; other values in "
                f"{describe_ids(gt['image'].iloc[rows])}"
            )
        ones = values.sum(1)
        for count, what in ((ones == 0, "no 1 (no label)"), (ones > 1, "more than one 1")):
            if count.any():
                shown = [
                    f"{img} ({', '.join(c for c, v in zip(cols, row, strict=True) if v)})"
                    for img, row in zip(gt["image"][count], values[count], strict=True)
                ]
                raise ValueError(
                    f"{self.csv}: each row must have exactly one 1 among {cols}; "
                    f"{describe_ids(shown)} have {what}"
                )
        column = np.asarray(cols)[values.argmax(1)]
        label = pd.Series([self.column_map.get(c) for c in column], index=gt.index)
        outside = label.isna()
        if outside.any() and self.other_columns == "refuse":
            where = sorted({str(c) for c in column[outside.to_numpy()]})
            raise ValueError(
                f"{self.csv}: {describe_ids(gt['image'][outside])} image(s) are labelled in "
                f"column(s) {where}, outside dermlit's classes {list(CLASSES)}. Map them "
                f"(data.source.column_map={{{where[0]}: <class>}}) or drop those rows "
                "(data.source.other_columns=drop)."
            )
        return pd.DataFrame({"image": gt["image"], "label": label}), list(gt["image"][outside])

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        """The index table (``image_id, path, label, lesion_id[, split]``) and its report."""
        labels, outside = self.labels()
        if not self.images.is_dir():
            raise FileNotFoundError(f"ISIC image folder not found: {self.images}")
        paths = image_paths(self.images)
        df = labels.loc[labels["label"].notna()].rename(columns={"image": "image_id"})
        df["path"] = [str(paths.get(i, self.images / f"{i}.jpg")) for i in df["image_id"]]
        df["lesion_id"] = df["image_id"]
        if self.lesion_csv is not None:
            lesions = pd.read_csv(self.lesion_csv, dtype=str).set_index("image")["lesion_id"]
            df["lesion_id"] = df["image_id"].map(lesions).fillna(df["image_id"])
        if self.split is not None:
            df["split"] = self.split
        df = df[["image_id", "path", "label", "lesion_id", *(["split"] if self.split else [])]]
        if outside:
            log.warning(
                "%s: dropped %s image(s) labelled outside the seven classes",
                self.csv,
                describe_ids(outside),
            )
        df = df.reset_index(drop=True)
        return df, check_index(df, f"{self.name} {self.csv}")
