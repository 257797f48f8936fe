"""The LightningDataModule: index -> validation -> decoded cache -> lesion-grouped split -> loaders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Sampler

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.data.cache import ImageCache
from dermlit.data.dataset import CachedImageDataset
from dermlit.data.splits import SPLITS, SplitError, grouped_stratified_split, split_table
from dermlit.data.validation import OnError, apply_policy
from dermlit.distributed import evaluation_sampler

log = logging.getLogger(__name__)

SamplerFactory = Callable[..., Sampler[int]]


class DermDataModule(L.LightningDataModule):
    """Serves uint8 HWC batches; the model converts, augments (train only) and normalises them.

    ``mean``/``std`` are the normalisation statistics the model applies on the device.
    ``sampler`` is a partial from the ``sampler/`` config group, called with the train labels,
    the seed and the distributed world (rank, replicas); ``None`` means plain shuffling.
    """

    def __init__(
        self,
        source,
        image_size: int = 64,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        cache_dir: str | Path = ".cache/dermlit",
        on_error: OnError = "raise",
        sampler: SamplerFactory | None = None,
        sampler_seed: int = 0,
        pin_memory: bool = False,
        decode_workers: int = 4,
    ) -> None:
        super().__init__()
        self.source = source
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_fraction, self.test_fraction, self.split_seed = (
            val_fraction,
            test_fraction,
            split_seed,
        )
        self.mean, self.std = list(mean), list(std)
        self.cache_dir = Path(cache_dir)
        self.on_error = on_error
        self.sampler_factory = sampler
        self.sampler_seed = sampler_seed
        self.pin_memory = pin_memory
        self.decode_workers = decode_workers
        self.index: pd.DataFrame | None = None
        self.skipped = pd.DataFrame(columns=["image_id", "problem", "detail"])
        self.cache: ImageCache | None = None

    # ------------------------------------------------------------------ preparation
    def _load(self) -> None:
        if self.index is not None:
            return
        df, report = self.source.load()
        df = apply_policy(df, report, self.on_error)
        cache = ImageCache.build_or_load(
            df, self.image_size, self.cache_dir / "images", workers=self.decode_workers
        )
        for image_id, detail in cache.bad.items():
            report.add("unreadable/corrupt image", image_id, detail)
        df = apply_policy(df, report, self.on_error)
        self.skipped = report.skipped
        if len(df) == 0:
            raise SplitError(f"{self.source!r}: no valid image left")
        # an empty label (prediction-only sources) is target -1; other labels were validated
        df["target"] = df["label"].map(CLASS_TO_INDEX).fillna(-1).astype(np.int64)
        if "split" not in df.columns:  # official splits, when a source ships them, are kept
            df["split"] = grouped_stratified_split(
                df, self.val_fraction, self.test_fraction, self.split_seed
            )
        self.index, self.cache = df, cache

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        self._load()

    # ------------------------------------------------------------------ views
    def frame(self, split: str) -> pd.DataFrame:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        assert self.index is not None, "call setup() first"
        return self.index[self.index["split"] == split].reset_index(drop=True)

    @property
    def splits(self) -> pd.DataFrame:
        assert self.index is not None, "call setup() first"
        return split_table(self.index)

    @property
    def class_counts(self) -> list[int]:
        """Images per class in the TRAIN split (what losses and samplers are built from)."""
        counts = self.frame("train")["label"].value_counts()
        return [int(counts.get(c, 0)) for c in CLASSES]

    def dataset(self, split: str) -> CachedImageDataset:
        df = self.frame(split)
        assert self.cache is not None
        return CachedImageDataset(self.cache.path, self.cache.rows(df["image_id"]), df["target"])

    # ------------------------------------------------------------------ loaders
    def loader(self, split: str) -> DataLoader:
        """An evaluation loader (no shuffling, no sampler) over any split."""
        return self._loader(split, train=False)

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.dataset(split)
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if not train:
            sampler = evaluation_sampler(ds, replicas, rank)
        elif self.sampler_factory is not None:
            sampler = self.sampler_factory(
                labels=ds.targets, seed=self.sampler_seed, num_replicas=replicas, rank=rank
            )
        else:
            sampler = None
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
