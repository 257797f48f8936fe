"""Source-shift benchmarks: whole sources (clinics, devices, collections) held out as the test
split, train and validation from the others (``data/split=by_source``).

A model is used on images from clinics it never saw; a split that mixes every source into every
side cannot tell how it does there (docs/design.md, "Data"). The source's ``source_column``
(HAM10000: ``dataset``) names each image's source. Train and validation are split from the
kept sources by the ordinary grouped, class-stratified assignment (``splits.assign_groups``)
over the SAME groups as the in-domain split (lesions joined by near-duplicates). A group with an
image in a held-out source goes to the test side whole, its kept-source images too: counted,
logged and recorded in ``split.json`` (HAM10000: 9 lesions span two sources).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dermlit.data.splits import SplitError, assign_groups

log = logging.getLogger(__name__)

#: the source of an image whose source column is empty
UNKNOWN_SOURCE = "unknown"


def source_values(df: pd.DataFrame, column: str | None, dataset: str) -> pd.Series:
    """Each row's source name (stripped text; empty -> ``unknown``); refused when the source
    declares no column or its table lacks it."""
    if column is None:
        raise SplitError(
            f"{dataset} declares no source column (source_column), so no source can be held "
            "out: use a source that records one (HAM10000: dataset; data=csv: "
            "data.source.source_column=COLUMN) or the grouped split (drop data/split=by_source)"
        )
    if column not in df.columns:
        raise SplitError(
            f"{dataset}: its source column {column!r} is not in the index table "
            f"(columns: {list(df.columns)}); fix the metadata or data.source.source_column"
        )
    text = df[column].astype("string").str.strip()
    return text.where(text.notna() & (text != ""), UNKNOWN_SOURCE).astype(str)


class SourceHoldout:
    """The images of ``test_sources`` are the test split; the other sources' images are split
    into train and validation (``val_fraction`` of their images, seeded by ``seed``).

    Refused, naming the offender: an unknown source name, every source held out, a class with
    no image outside the held-out sources (nothing to learn it from). A class absent from the
    held-out sources is allowed (the test side has the class mix it has) and logged.
    """

    def __init__(self, test_sources: Sequence[str], val_fraction: float = 0.15, seed: int = 0):
        if isinstance(test_sources, str):
            test_sources = [test_sources]
        self.test_sources = [str(s).strip() for s in test_sources]
        if not self.test_sources:
            raise SplitError("data.split.test_sources is empty: name the source(s) to hold out")
        if not 0 < val_fraction < 1:
            raise SplitError(f"data.split.val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction, self.seed = float(val_fraction), int(seed)

    def __repr__(self) -> str:
        return f"SourceHoldout(test_sources={self.test_sources}, val_fraction={self.val_fraction})"

    def __call__(
        self, df: pd.DataFrame, groups: pd.Series, source_column: str | None, dataset: str
    ) -> tuple[pd.Series, dict]:
        """``(split per row, what split.json records)``."""
        sources = source_values(df, source_column, dataset).to_numpy()
        counts = pd.Series(sources).value_counts()
        unknown = [s for s in self.test_sources if s not in counts.index]
        if unknown:
            known = ", ".join(f"{k} ({n} images)" for k, n in counts.items())
            raise SplitError(
                f"data.split.test_sources: no source named {unknown} in column "
                f"{source_column!r} of {dataset}; its sources: {known}"
            )
        held = np.isin(sources, self.test_sources)
        group_key = pd.Series(np.asarray(groups, dtype=str), index=df.index)
        to_test = pd.Series(held, index=df.index).groupby(group_key).transform("any").to_numpy()
        if to_test.all():
            raise SplitError(
                f"data.split.test_sources={self.test_sources} holds out every image of "
                f"{dataset}: keep at least one source for training"
            )
        moved = to_test & ~held
        spanning = sorted(set(group_key[moved]))
        if spanning:
            log.warning(
                "by_source split: %d group(s) span a held-out and a kept source; their %d "
                "kept-source image(s) go to the test side with them (e.g. %s)",
                len(spanning),
                int(moved.sum()),
                ", ".join(spanning[:3]),
            )
        labels = df["label"].astype(str)
        kept = ~to_test
        orphans = sorted(set(labels[~kept]) - set(labels[kept]))
        if orphans:
            raise SplitError(
                f"class(es) {orphans} have no image outside the held-out sources "
                f"{self.test_sources} of {dataset}: nothing to train them on; hold out fewer "
                "sources"
            )
        absent = sorted(set(labels[kept]) - set(labels[~kept]))
        if absent:
            log.info("by_source split: class(es) %s have no test image", absent)
        split = pd.Series("test", index=df.index, name="split", dtype=object)
        bounds = np.array([1 - self.val_fraction])
        split[kept] = assign_groups(
            df[kept], bounds, ("train", "val"), self.seed, groups[kept]
        ).to_numpy()
        per_split = pd.crosstab(pd.Series(sources, name="source"), split.to_numpy())
        info = {
            "split": "by_source",
            "source_column": source_column,
            "test_sources": self.test_sources,
            "train_val_sources": sorted(set(sources[kept])),
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "groups_spanning_sources": len(spanning),
            "images_moved_to_test": int(moved.sum()),
            "images_per_source_and_split": {
                str(s): {str(k): int(v) for k, v in row.items() if v}
                for s, row in per_split.iterrows()
            },
        }
        return split, info
