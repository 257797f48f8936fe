"""The LightningDataModule: index -> validation -> decoded cache -> grouped split -> loaders.

The split keeps a group on one side: a lesion, joined with the lesions its images are
near-duplicates of when ``near_duplicates`` is a detector (detected once per image set and
cached next to the decoded images), or whatever ``split_file`` says, after validation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Sampler

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.data.cache import ImageCache
from dermlit.data.colour_constancy import NoColourConstancy
from dermlit.data.dataset import CachedImageDataset
from dermlit.data.near_duplicates import NearDuplicateDetector
from dermlit.data.split_file import apply_split_file, check_split, file_sha256
from dermlit.data.splits import (
    SPLITS,
    GroupedSplit,
    SplitError,
    crossing_pairs,
    link_groups,
    split_table,
)
from dermlit.data.validation import OnError, apply_policy
from dermlit.distributed import evaluation_sampler
from dermlit.errors import InputError

log = logging.getLogger(__name__)

SamplerFactory = Callable[..., Sampler[int]]
#: (index table, group per row, source column, source description) -> (split per row, record)
SplitStrategy = Callable[[pd.DataFrame, pd.Series, "str | None", str], tuple[pd.Series, dict]]


class DermDataModule(L.LightningDataModule):
    """Serves uint8 HWC batches; the model converts, augments (train only) and normalises them.

    ``mean``/``std`` are the normalisation statistics the model applies on the device.
    ``sampler`` is a partial from the ``sampler/`` config group, called with the train labels,
    the seed and the distributed world (rank, replicas); ``None`` means plain shuffling.
    ``near_duplicates``: a detector whose pairs join lesions into split groups (``None``: lesions
    only). ``split_file``: train on this frozen split instead (validated; its hash is recorded
    in ``RUN_DIR/split.json``). ``split``: how groups are assigned to train/val/test
    (``conf/data/split/``, e.g. ``SourceHoldout``: whole sources as the test split); ``None``:
    the grouped in-domain split by ``val_fraction``/``test_fraction``/``split_seed``.
    ``colour_constancy``: applied once while the cache is decoded (``conf/colour_constancy/``;
    ``None``: none). ``record_dir``: where ``split.json`` is written when fitting starts
    (``dermlit-train`` passes its run directory; ``None``: nowhere, so a datamodule used outside
    a run never writes into the working directory).
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
        near_duplicates: NearDuplicateDetector | None = None,
        split_file: str | Path | None = None,
        split: SplitStrategy | None = None,
        record_dir: str | Path | None = None,
        colour_constancy: NoColourConstancy | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("image_size", image_size), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"data.{key} must be a positive integer, got {value!r}")
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
        self.near_duplicates = near_duplicates
        self.split_file = Path(split_file) if split_file else None
        self.split = split
        self.record_dir = Path(record_dir) if record_dir else None
        self.colour_constancy = colour_constancy or NoColourConstancy()
        self.near_duplicate_pairs: pd.DataFrame | None = None
        self.split_info: dict = {}
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
            df,
            self.image_size,
            self.cache_dir / "images",
            workers=self.decode_workers,
            colour_constancy=self.colour_constancy,
        )
        for image_id, detail in cache.bad.items():
            report.add("unreadable/corrupt image", image_id, detail)
        df = apply_policy(df, report, self.on_error)
        self.skipped = report.skipped
        if len(df) == 0:
            raise SplitError(f"{self.source!r}: no valid image left")
        # an empty label (prediction-only sources) is target -1; other labels were validated
        df["target"] = df["label"].map(CLASS_TO_INDEX).fillna(-1).astype(np.int64)
        df = self._split(df)
        self.index, self.cache = df, cache

    def _split(self, df: pd.DataFrame) -> pd.DataFrame:
        """A frozen split file, else the configured split option (``data/split``), else the
        source's official split (after the frozen file's split rules), else the grouped
        in-domain split."""
        if self.split_file is not None:
            df = apply_split_file(df, self.split_file)  # validated before it is trusted
            sha = file_sha256(self.split_file)
            self.split_info = {
                "split": "split_file",
                "split_file": str(self.split_file.resolve()),
                "split_file_sha256": sha,
            }
            log.info("Split from %s (sha256 %s)", self.split_file, sha)
            if self.near_duplicates is not None:
                self.split_info["near_duplicate_pairs_across_splits"] = self._crossing(df)
            return df
        if "split" in df.columns and self.split is None:  # official splits are kept, checked
            used = tuple(s for s in SPLITS if (df["split"] == s).any())
            check_split(
                df,
                f"{self.source!r}'s official split (its 'split' column)",
                # every class in every split that holds images: an external test set
                # (split=test for all) need not have every class, nor train/val images
                splits=used,
                hint="Fix the column, or make dermlit's lesion-grouped split instead "
                "(data/split=grouped)",
            )
            self.split_info = {"split": "official"}
            return df
        pairs = None
        if self.near_duplicates is not None:
            pairs = self.near_duplicates.pairs(df, self.cache_dir / "near_duplicates")
            self.near_duplicate_pairs = pairs
        df["group"] = link_groups(df, pairs)
        strategy = self.split or GroupedSplit(
            self.val_fraction, self.test_fraction, self.split_seed
        )
        df["split"], info = strategy(df, df["group"], self.source_column, repr(self.source))
        self.split_info = {
            **info,
            "groups": "lesion_id" if pairs is None else "lesion_id + near-duplicates",
            "near_duplicates": repr(self.near_duplicates),
            "near_duplicate_pairs": 0 if pairs is None else len(pairs),
        }
        return df

    def _crossing(self, df: pd.DataFrame) -> int:
        """Near-duplicate pairs a frozen split puts on two sides: warned with the first pairs,
        not refused (a published benchmark split may be wanted as it is), and counted in
        split.json. The file's checks know lesions and groups, not the images' pixels."""
        pairs = self.near_duplicates.pairs(df, self.cache_dir / "near_duplicates")
        self.near_duplicate_pairs = pairs
        crossing = crossing_pairs(df, df["split"], pairs)
        if len(crossing):
            where = dict(zip(df["image_id"].astype(str), df["split"], strict=True))
            shown = [
                f"{a} ({where[a]}) ~ {b} ({where[b]})"
                for a, b in zip(crossing["image_a"], crossing["image_b"], strict=True)
            ]
            log.warning(
                "%s puts %d near-duplicate pair(s) on two sides (a leak between splits): %s%s. "
                "`dermlit data split` writes a split that keeps them together",
                self.split_file,
                len(crossing),
                ", ".join(shown[:5]),
                ", ..." if len(shown) > 5 else "",
            )
        return int(len(crossing))

    @property
    def source_column(self) -> str | None:
        """The index table's column naming each image's source (clinic, device), as the source
        declares it (``source_column``; HAM10000: ``dataset``); None: it has none."""
        return getattr(self.source, "source_column", None)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        self._load()
        trainer = self.trainer
        rank_zero = trainer is None or trainer.is_global_zero
        if stage == "fit" and self.record_dir is not None and rank_zero:
            # the run records where its split came from (the file's hash for a frozen split)
            self.record_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.split_info, indent=2) + "\n"
            (self.record_dir / "split.json").write_text(text)

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
