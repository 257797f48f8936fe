"""A map-style dataset over rows of the decoded-image cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class CachedImageDataset(Dataset):
    """Yields ``(uint8 HWC image tensor, target)``; conversion to float happens on the device.

    The memory map is opened lazily in each worker process: pickling an open ``np.memmap``
    would copy the whole array into every worker.
    """

    def __init__(self, array_path: str | Path, rows: np.ndarray, targets: np.ndarray) -> None:
        self.array_path = str(array_path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.array[self.rows[index]]))
        return image, int(self.targets[index])
