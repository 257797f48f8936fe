"""DermaMNIST (MedMNIST) ``.npz`` files: arrays with official train/val/test splits.

The images are written once as PNG files into a cache folder, so that everything downstream
(the path-based decoded-image cache, ``dermlit data check``'s byte-identity check, the
notebooks) works unchanged; PNG is lossless, so the pixels are exactly the arrays'.

Label order (MedMNIST ``INFO["dermamnist"]["label"]``): 0 actinic keratoses and intraepithelial
carcinoma, 1 basal cell carcinoma, 2 benign keratosis-like lesions, 3 dermatofibroma,
4 melanoma, 5 melanocytic nevi, 6 vascular lesions: the same as :data:`dermlit.constants.CLASSES`.

MedMNIST's splits are not grouped by lesion and ship no lesion ids: each image is its own
lesion here, and the official splits are kept as they are (``split`` column).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermlit.constants import CLASSES
from dermlit.data.validation import ValidationReport, check_index
from dermlit.errors import DataNotFound

#: npz split prefix -> dermlit split name
SPLITS = {"train": "train", "val": "val", "test": "test"}


def npz_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[
        :12
    ]


class MedMNISTSource:
    """Reads ``root/filename`` (e.g. ``dermamnist.npz``, ``dermamnist_64.npz``).

    ``classes`` names the npz's integer labels in order (DermaMNIST's by default). PNGs go to
    ``cache_dir/<stem>-<fingerprint>/`` (default: next to the npz), written once.
    """

    name = "medmnist"

    def __init__(
        self,
        root: str | os.PathLike,
        filename: str = "dermamnist.npz",
        cache_dir: str | os.PathLike | None = None,
        classes: Sequence[str] = CLASSES,
    ) -> None:
        self.root = Path(root).expanduser()
        self.filename = filename
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else self.root
        self.classes = tuple(classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, filename={self.filename!r})"

    @property
    def npz_path(self) -> Path:
        return self.root / self.filename

    def _image_dir(self) -> Path:
        stem = Path(self.filename).stem
        return self.cache_dir / f"{stem}-{npz_fingerprint(self.npz_path)}"

    def _export(self, data: np.lib.npyio.NpzFile, folder: Path) -> list[tuple[str, str, int]]:
        """Write every image as PNG once; returns ``(image_id, split, integer label)``."""
        done = folder / "index.json"
        if done.is_file():
            return [tuple(r) for r in json.loads(done.read_text())]
        folder.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[str, str, int]] = []
        for prefix, split in SPLITS.items():
            if f"{prefix}_images" not in data:
                continue
            images, labels = data[f"{prefix}_images"], np.asarray(data[f"{prefix}_labels"])
            if len(images) != len(labels):
                raise ValueError(
                    f"{self.npz_path}: {len(images)} {prefix}_images but {len(labels)} labels"
                )
            labels = labels.reshape(len(labels), -1)
            if labels.shape[1] != 1:
                raise ValueError(
                    f"{self.npz_path}: {prefix}_labels has shape {labels.shape}: a multi-label "
                    f"MedMNIST set, not a single-label one"
                )
            for i, (image, label) in enumerate(zip(images, labels[:, 0], strict=True)):
                image_id = f"{split}_{i:05d}"
                Image.fromarray(np.asarray(image, dtype=np.uint8)).save(folder / f"{image_id}.png")
                rows.append((image_id, split, int(label)))
        if not rows:
            raise ValueError(
                f"{self.npz_path} has no train_/val_/test_images arrays; keys: {list(data)}"
            )
        tmp = done.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, done)  # written last: a crash mid-export re-exports next time
        return rows

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        if not self.npz_path.is_file():
            raise DataNotFound(
                f"MedMNIST file not found: {self.npz_path}; set data.source.root and "
                f"data.source.filename (e.g. dermamnist_64.npz)"
            )
        folder = self._image_dir()
        with np.load(self.npz_path) as data:
            rows = self._export(data, folder)
        ids, splits, targets = zip(*rows, strict=True)
        n = len(self.classes)
        df = pd.DataFrame(
            {
                "image_id": ids,
                "path": [str(folder / f"{i}.png") for i in ids],
                "label": [self.classes[t] if 0 <= t < n else f"label {t}" for t in targets],
                "lesion_id": ids,
                "split": splits,
            }
        )
        return df, check_index(df, f"{self.name} at {self.npz_path}")
