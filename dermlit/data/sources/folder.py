"""A plain folder of images without labels: prediction only (targets -1, no metrics)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dermlit.data.sources.ham10000 import IMAGE_SUFFIXES
from dermlit.data.validation import ValidationReport, check_index
from dermlit.errors import DataNotFound

UNLABELLED = ""


class FolderSource:
    """Every image in ``root`` (``.jpg/.jpeg/.png``; ``recursive`` for sub-folders), id = its
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
        pattern = "**/*" if self.recursive else "*"
        paths = [
            p
            for p in sorted(self.root.glob(pattern))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        ]
        if not paths:
            raise DataNotFound(f"no {'/'.join(IMAGE_SUFFIXES)} image in {self.root}")
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
