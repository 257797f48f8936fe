"""The ISIC 2019 training set: a one-hot ground-truth CSV, a metadata CSV, a folder of JPEGs.

ISIC 2019 has eight or nine diagnoses (MEL NV BCC AK BKL DF VASC SCC, and UNK in some
releases); dermlit's label space is HAM10000's seven. The mapping is configuration: AK is
HAM10000's akiec (actinic keratoses and intraepithelial carcinoma); SCC is not, strictly
(invasive SCC is outside akiec), so by default it has no mapping and is refused. A class
without a mapping is refused with the count and the fix, or dropped when ``on_unmapped=drop``
(counted in :attr:`ISIC2019Source.dropped` and logged), never silently lost.

The one-hot cells are checked as :mod:`dermlit.data.sources.isic_csv` checks them (the same
code): an empty or NaN cell, a value that is not 0 or 1 (a soft label such as 0.6 is refused,
not rounded), no 1 or several 1s, one image id with different cells; each faulty row is in the
source's report with its image id and line, and ``data.on_error`` decides (skip drops it,
except an ambiguous ground truth).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dermlit.data.sources.ham10000 import scan_images
from dermlit.data.sources.isic_csv import onehot_columns
from dermlit.data.validation import ValidationReport, check_index
from dermlit.errors import DataNotFound, InputError

log = logging.getLogger(__name__)

ISIC2019_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
#: ISIC 2019 column -> dermlit class; ``None`` = no mapping (refused or dropped)
DEFAULT_MAPPING: dict[str, str | None] = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AK": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
    "SCC": None,
    "UNK": None,
}


class UnmappedClassError(InputError):
    """Images of a dataset class that has no dermlit class and ``on_unmapped`` is ``raise``."""


def apply_mapping(
    labels: pd.Series,
    mapping: Mapping[str, str | None],
    on_unmapped: Literal["raise", "drop"],
    dataset: str,
) -> tuple[pd.Series, dict[str, int]]:
    """Map dataset labels to dermlit classes; returns the mapped labels (NaN = dropped) and
    ``{dataset class: images dropped}``. Labels outside ``mapping`` pass through unchanged,
    so the index validation names them as unknown."""
    if on_unmapped not in ("raise", "drop"):
        raise ValueError(f"on_unmapped must be 'raise' or 'drop', got {on_unmapped!r}")
    unmapped = {k for k, v in mapping.items() if v is None}
    counts = labels[labels.isin(unmapped)].value_counts()
    dropped = {str(k): int(v) for k, v in counts.items()}
    if dropped and on_unmapped == "raise":
        listing = ", ".join(f"{k}: {n} image(s)" for k, n in dropped.items())
        first = next(iter(dropped))
        raise UnmappedClassError(
            f"{dataset}: classes without a mapping to dermlit's classes ({listing}). Map them "
            f"(e.g. data.source.mapping.{first}=akiec) or drop them "
            f"(data.source.on_unmapped=drop)."
        )
    if dropped:
        log.warning("%s: dropped unmapped classes: %s", dataset, dropped)
    mapped = labels.map(lambda v: mapping.get(v, v))
    return mapped, dropped


class ISIC2019Source:
    """Reads ``ISIC_2019_Training_GroundTruth.csv`` (+ ``..._Metadata.csv``) under ``root``.

    ``lesion_id`` comes from the metadata; rows without one (and every row when the metadata
    file is absent, with a warning) count as their own lesion.
    """

    name = "isic2019"

    def __init__(
        self,
        root: str | os.PathLike,
        ground_truth: str = "ISIC_2019_Training_GroundTruth.csv",
        metadata: str | None = "ISIC_2019_Training_Metadata.csv",
        image_dir: str = "ISIC_2019_Training_Input",
        mapping: Mapping[str, str | None] | None = None,
        on_unmapped: Literal["raise", "drop"] = "raise",
        source_column: str | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.ground_truth, self.metadata, self.image_dir = ground_truth, metadata, image_dir
        self.mapping = {**DEFAULT_MAPPING, **(mapping or {})}
        self.on_unmapped = on_unmapped
        self.dropped: dict[str, int] = {}
        # the official metadata (image, age_approx, anatom_site_general, lesion_id, sex) names
        # no source: per-source metrics need a column added to the metadata file and named here
        self.source_column = source_column

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"

    def _labels(self, gt: pd.DataFrame, gt_path: Path, report: ValidationReport) -> pd.Series:
        """The one-hot columns as one label per row (``None``: a faulty row). The cells are
        checked as :class:`~dermlit.data.sources.isic_csv.IsicCsvSource` checks them: each
        faulty row goes to ``report`` with its image id and line (empty or NaN cell, not 0 or
        1, no 1 or several 1s, empty id, one id with different cells)."""
        columns = [c for c in gt.columns if c in ISIC2019_COLUMNS]
        if "image" not in gt.columns or len(columns) < 8:
            raise ValueError(
                f"{gt_path} is not an ISIC 2019 ground truth: expected 'image' and the one-hot "
                f"columns {', '.join(ISIC2019_COLUMNS)}; has {list(gt.columns)}"
            )
        column, valid = onehot_columns(gt, columns, report)
        return pd.Series(np.where(valid, column, None), index=gt.index, dtype=object)

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        gt_path = self.root / self.ground_truth
        if not gt_path.is_file():
            raise DataNotFound(
                f"ISIC 2019 ground truth not found: {gt_path}; set data.source.root "
                f"(and data.source.ground_truth if renamed)"
            )
        gt = pd.read_csv(gt_path, dtype=str, keep_default_na=False)
        gt = gt.apply(lambda col: col.str.strip())
        dataset = f"{self.name} at {self.root}"
        report = ValidationReport(dataset)
        isic_label = self._labels(gt, gt_path, report)
        usable = isic_label.notna()
        df = pd.DataFrame({"image_id": gt.loc[usable, "image"], "isic_label": isic_label[usable]})
        df = df.reset_index(drop=True)
        mapped, self.dropped = apply_mapping(
            df["isic_label"], self.mapping, self.on_unmapped, dataset
        )
        df["label"] = mapped.to_numpy()
        df = df[df["label"].notna()].reset_index(drop=True)
        df = self._with_metadata(df)
        folder = self.root / self.image_dir
        paths = scan_images([folder, self.root])
        df["path"] = [str(paths.get(i, folder / f"{i}.jpg")) for i in df["image_id"]]
        front = ["image_id", "path", "label", "lesion_id"]
        df = df[front + [c for c in df.columns if c not in front]]
        return df, check_index(df, dataset, report=report)

    def _with_metadata(self, df: pd.DataFrame) -> pd.DataFrame:
        meta_path = self.root / self.metadata if self.metadata else None
        if meta_path is None or not meta_path.is_file():
            log.warning(
                "%s: no metadata file (%s): every image is its own lesion, so a lesion-grouped "
                "split cannot keep repeated images of one lesion together",
                self.name,
                meta_path,
            )
            df["lesion_id"] = df["image_id"]
            return df
        meta = pd.read_csv(meta_path, dtype={"image": str, "lesion_id": str})
        meta = meta.rename(columns={"image": "image_id"}).drop_duplicates("image_id")
        df = df.merge(meta, on="image_id", how="left")
        if "lesion_id" not in df.columns:
            df["lesion_id"] = pd.NA
        df["lesion_id"] = df["lesion_id"].fillna(df["image_id"])
        return df
