"""A team's own data: one CSV with an image path and a label per row, columns named in config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from dermlit.data.splits import SPLITS
from dermlit.data.validation import ValidationReport, check_index
from dermlit.errors import DataNotFound, InputError


class CSVSource:
    """Reads ``csv`` (relative to ``root`` unless absolute); image paths resolve against ``root``.

    - ``path_column``/``label_column``: required. Labels are stripped and lower-cased, then
      renamed by ``label_map`` (e.g. ``{melanoma: mel}``); anything not among dermlit's classes
      is reported by the validation as an unknown label.
    - ``group_column``: the unit a split keeps together (lesion, patient); without one, each
      image is its own group.
    - ``id_column``: unique image ids; default: the file name without suffix.
    - ``split_column``: optional fixed ``train/val/test`` assignment, kept by the DataModule.
    - ``source_column``: optional site/clinic/device column: per-source metrics and the
      ``by_source`` split read it (kept under its own name).
    """

    name = "csv"

    def __init__(
        self,
        root: str | os.PathLike,
        csv: str | os.PathLike = "labels.csv",
        path_column: str = "path",
        label_column: str = "label",
        group_column: str | None = None,
        id_column: str | None = None,
        split_column: str | None = None,
        source_column: str | None = None,
        label_map: Mapping[str, str] | None = None,
        sep: str = ",",
    ) -> None:
        self.root = Path(root).expanduser()
        self.csv = Path(csv).expanduser()
        self.columns = {
            "path": path_column,
            "label": label_column,
            "group": group_column,
            "id": id_column,
            "split": split_column,
        }
        self.label_map = {str(k).strip().lower(): v for k, v in (label_map or {}).items()}
        self.sep = sep
        self.source_column = source_column

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, csv={str(self.csv)!r})"

    @property
    def csv_path(self) -> Path:
        return self.csv if self.csv.is_absolute() else self.root / self.csv

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        if not self.csv_path.is_file():
            raise DataNotFound(f"CSV source: {self.csv_path} not found (data.source.csv)")
        table = pd.read_csv(self.csv_path, sep=self.sep, dtype=str, keep_default_na=False)
        named = {k: v for k, v in self.columns.items() if v}
        wanted = {**named, "source": self.source_column} if self.source_column else named
        absent = [f"{k}_column={v!r}" for k, v in wanted.items() if v not in table.columns]
        if absent:
            raise InputError(
                f"{self.csv_path} lacks {', '.join(absent)}; its columns: {list(table.columns)}"
            )
        paths = [Path(p.strip()).expanduser() for p in table[named["path"]]]
        paths = [p if p.is_absolute() else self.root / p for p in paths]
        labels = table[named["label"]].str.strip().str.lower()
        df = pd.DataFrame(
            {
                "image_id": table[named["id"]].str.strip()
                if "id" in named
                else [p.stem for p in paths],
                "path": [str(p) for p in paths],
                "label": labels.map(lambda v: self.label_map.get(v, v)),
            }
        )
        df["lesion_id"] = (
            table[named["group"]].str.strip().replace("", pd.NA).fillna(df["image_id"])
            if "group" in named
            else df["image_id"]
        )
        if "split" in named:
            df["split"] = table[named["split"]].str.strip().str.lower()
            wrong = sorted(set(df["split"]) - set(SPLITS))
            if wrong:
                raise InputError(
                    f"{self.csv_path}: column {named['split']!r} has {wrong}; allowed: {SPLITS}"
                )
        used = set(named.values())
        extra = table[[c for c in table.columns if c not in used]]
        extra = extra.rename(columns={c: f"csv_{c}" for c in extra.columns if c in df.columns})
        df = pd.concat([df, extra.reset_index(drop=True)], axis=1)
        return df, check_index(df, f"{self.name} at {self.csv_path}")
