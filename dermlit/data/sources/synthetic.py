"""The embedded default dataset: procedurally generated, written in the HAM10000 layout."""

from __future__ import annotations

import os

import pandas as pd

from dermlit.data.sources.ham10000 import HAM10000Source
from dermlit.data.synthetic import generate_synthetic_dataset
from dermlit.data.validation import ValidationReport


class SyntheticSource(HAM10000Source):
    """Generates the synthetic set into ``root`` once (per parameters), then reads it as HAM10000.

    This is what makes ``make train`` work anywhere offline, with no dataset download.
    """

    name = "synthetic"

    def __init__(
        self,
        root: str | os.PathLike,
        n_images: int = 1500,
        seed: int = 0,
        width: int = 128,
        height: int = 96,
    ) -> None:
        super().__init__(root)
        self.params = {"n_images": n_images, "seed": seed, "width": width, "height": height}

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        generate_synthetic_dataset(self.root, **self.params)
        return super().load()
