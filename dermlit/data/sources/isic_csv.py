"""The ISIC ground-truth CSV layout: ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` one-hot rows plus a
folder of images, as ISIC 2018 Task 3 and ISIC 2019 publish their labels.

ISIC 2019 names actinic keratosis ``AK`` (mapped to ``akiec``) and adds ``SCC`` and ``UNK``,
which are not among dermlit's seven classes: rows labelled there are refused (default), dropped
(``other_columns=drop``), or mapped by the user (``column_map={SCC: akiec}``; ISIC 2018's AKIEC
includes intraepithelial carcinoma, so that mapping is defensible, but it is a choice).

Every faulty row is reported at once, with its line in the file, in the source's
:class:`~dermlit.data.validation.ValidationReport` (like HAM10000's): an empty or NaN cell, a value
that is not 0 or 1, no 1 or more than one 1 in a row, an image missing from the folder, a
duplicated id. ``data.on_error=skip`` drops those rows (RUN_DIR/skipped.csv). Two cases cannot
be skipped: one image id with different labels (the ground truth is ambiguous) and, under
``other_columns=refuse``, a label outside the seven classes (that option decides).
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
from dermlit.data.validation import (
    DataValidationError,
    ValidationReport,
    check_index,
    describe_ids,
    report_conflicts,
)

#: ISIC column -> dermlit class: ISIC 2018 names plus ISIC 2019's ``AK``.
DEFAULT_COLUMN_MAP: dict[str, str] = {**ISIC_TO_CLASS, "AK": "akiec"}
#: Columns of published ground-truth files that are not labels.
DEFAULT_IGNORE: tuple[str, ...] = ("score_weight",)

#: cell texts read as "no value" (pandas' own NA spellings, lower-cased, and empty)
MISSING = ("", "nan", "na", "n/a", "null", "none", "<na>")

log = logging.getLogger(__name__)

OtherColumns = Literal["refuse", "drop"]


def _set_cells(row: pd.Series) -> str:
    """``"MEL"`` for a one-hot row, ``"MEL, NV='x'"`` otherwise: the cells that are not 0."""
    shown = []
    for column, text in row.items():
        number = pd.to_numeric(text, errors="coerce")
        if number != 0:
            shown.append(str(column) if number == 1 else f"{column}={text!r}")
    return ", ".join(shown) or "all 0"


def onehot_columns(
    gt: pd.DataFrame, cols: list[str], report: ValidationReport
) -> tuple[np.ndarray, np.ndarray]:
    """The one-hot column of each row of an ISIC ground-truth table (``image`` plus the one-hot
    ``cols``, read as stripped strings), and which rows are valid. Every faulty row goes to
    ``report`` with its image id and its line in the file (header = line 1), all at once: an
    empty or NaN cell, a value that is not 0 or 1, no 1 or more than one 1 in the row, an empty
    image id, and (unskippable) one image id listed with different label cells. A repeated id
    whose cells agree is left valid: :func:`~dermlit.data.validation.check_index` reports it as
    a duplicate."""
    cells = gt[cols]
    values = cells.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    empty = cells.apply(lambda col: col.str.lower().isin(MISSING)).to_numpy()
    not_binary = ~empty & ~np.isin(values, (0.0, 1.0))
    ones = np.where(empty | not_binary, 0.0, values).sum(1)
    valid = ~(empty | not_binary).any(1) & (ones == 1)
    images = gt["image"].to_numpy(dtype=str)
    where = [f"line {row + 2}" for row in range(len(gt))]

    def named(row: int, mask: np.ndarray) -> str:
        return ", ".join(f"{c}={cells.iat[row, k]!r}" for k, c in enumerate(cols) if mask[k])

    for row in np.flatnonzero(empty.any(1)):
        report.add("empty or NaN cell", images[row], f"{where[row]}: {named(row, empty[row])}")
    for row in np.flatnonzero(not_binary.any(1)):
        detail = named(row, not_binary[row])
        report.add("value not 0 or 1", images[row], f"{where[row]}: {detail}")
    clean = ~(empty | not_binary).any(1)
    for row in np.flatnonzero(clean & (ones == 0)):
        report.add("no 1 in the row (no label)", images[row], where[row])
    for row in np.flatnonzero(clean & (ones > 1)):
        hot = ", ".join(c for c, v in zip(cols, values[row], strict=True) if v == 1)
        report.add("more than one 1 in the row", images[row], f"{where[row]}: {hot}")
    for row in np.flatnonzero(images == ""):
        report.add("empty image id", f"({where[row]})", where[row])
    valid &= images != ""
    valid &= ~np.isin(images, _conflicts(gt, cols, report))
    column = np.asarray(cols)[values.argmax(1)]
    return column, valid


def _conflicts(gt: pd.DataFrame, cols: list[str], report: ValidationReport) -> list[str]:
    """Ids listed more than once with different label cells (``"1"`` and ``"1.0"`` agree),
    reported by :func:`~dermlit.data.validation.report_conflicts` with each row's line."""
    named = gt[gt["image"] != ""]
    numbers = named[cols].apply(pd.to_numeric, errors="coerce")
    meaning = numbers.astype(object).where(numbers.notna(), named[cols])

    def shown(positions: list[int]) -> str:
        rows = named[cols].iloc[positions]
        return "; ".join(f"line {i + 2}: {_set_cells(row)}" for i, row in rows.iterrows())

    return report_conflicts(named["image"], meaning, report, shown)


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

    def _read(self) -> tuple[pd.DataFrame, list[str]]:
        """The CSV as stripped strings, and its label columns; refuses a file it cannot read."""
        if not self.csv.is_file():
            raise DataValidationError(
                f"ISIC ground-truth CSV not found: {self.csv}; set data.source.csv"
            )
        gt = pd.read_csv(self.csv, dtype=str, keep_default_na=False)
        gt = gt.apply(lambda col: col.str.strip())
        if "image" not in gt.columns:
            raise DataValidationError(f"{self.csv}: no 'image' column; has {list(gt.columns)}")
        cols = [c for c in gt.columns if c != "image" and c not in self.ignore_columns]
        if not any(self.column_map.get(c) for c in cols):
            raise DataValidationError(
                f"{self.csv}: none of its columns {cols} is a known ISIC class column "
                f"({sorted(k for k, v in self.column_map.items() if v)})"
            )
        return gt, cols

    def labels(self, report: ValidationReport) -> tuple[pd.DataFrame, list[str]]:
        """``(image, label)`` of every usable row, and the ids of the rows labelled in a column
        outside the seven classes under ``other_columns=drop``. Every faulty row goes to
        ``report`` with its line in the file (header = line 1), all of them at once."""
        gt, cols = self._read()
        images = gt["image"].to_numpy(dtype=str)
        column, valid = onehot_columns(gt, cols, report)
        label = pd.Series([self.column_map.get(c) for c in column], index=gt.index)
        outside = valid & label.isna().to_numpy()
        if self.other_columns == "refuse":
            advice = (
                f"map the column (data.source.column_map={{<column>: <class>}}, one of "
                f"{list(CLASSES)}) or drop such rows (data.source.other_columns=drop)"
            )
            for row in np.flatnonzero(outside):
                report.add(
                    "labelled outside dermlit's seven classes",
                    images[row],
                    f"line {row + 2}: {column[row]}",
                    unskippable=advice,
                )
        keep = valid & ~outside
        labels = pd.DataFrame({"image": images[keep], "label": label[keep].to_numpy()})
        return labels, list(images[outside]) if self.other_columns == "drop" else []

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        """The index table (``image_id, path, label, lesion_id[, split]``) and its report of
        every faulty row (label cells, missing images, duplicates) at once."""
        report = ValidationReport(f"{self.name} {self.csv}")
        labels, outside = self.labels(report)
        if not self.images.is_dir():
            raise DataValidationError(
                f"ISIC image folder not found: {self.images}; set data.source.images"
            )
        paths = image_paths(self.images)
        df = labels.rename(columns={"image": "image_id"})
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
        return df, check_index(df, report.dataset, report=report)
