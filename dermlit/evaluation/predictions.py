"""predictions.csv in the ISIC 2018 Task 3 submission format, plus the true label.

Columns: ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` (probabilities, each row sums to 1) and
``label`` (our class name, empty when unknown). Our internal order is :data:`CLASSES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermlit.constants import CLASS_TO_INDEX, CLASSES, ISIC_COLUMNS, ISIC_TO_CLASS

#: position in our class order of each ISIC column
ISIC_ORDER = [CLASS_TO_INDEX[ISIC_TO_CLASS[c]] for c in ISIC_COLUMNS]


def predictions_frame(
    image_ids: Sequence[str], probs: np.ndarray, targets: Sequence[int] | None = None
) -> pd.DataFrame:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES) or len(probs) != len(image_ids):
        raise ValueError(f"probs must be ({len(image_ids)}, {len(CLASSES)}), got {probs.shape}")
    frame = pd.DataFrame(probs[:, ISIC_ORDER], columns=list(ISIC_COLUMNS))
    frame.insert(0, "image", [str(i) for i in image_ids])
    if targets is None:
        frame["label"] = ""
    else:
        frame["label"] = [CLASSES[t] if t >= 0 else "" for t in np.asarray(targets)]
    return frame


def write_predictions(path: str | Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False, float_format="%.6f")


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image_ids, probs in CLASSES order, targets)``; targets are -1 where unknown."""
    frame = pd.read_csv(path, keep_default_na=False)
    missing = [c for c in ("image", *ISIC_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a predictions file, missing column(s) {missing}")
    probs = np.empty((len(frame), len(CLASSES)))
    probs[:, ISIC_ORDER] = frame[list(ISIC_COLUMNS)].to_numpy(dtype=np.float64)
    labels = (
        frame["label"].astype(str) if "label" in frame.columns else pd.Series([""] * len(frame))
    )
    unknown = sorted(set(labels) - set(CLASSES) - {""})
    if unknown:
        raise ValueError(f"{path}: unknown label(s) {unknown}")
    targets = np.array([CLASS_TO_INDEX.get(x, -1) for x in labels], dtype=np.int64)
    return frame["image"].astype(str).tolist(), probs, targets
