"""Frozen splits: a ``splits.csv`` written once (``dermlit data split``, or a run's own
``splits.csv``) and trained on later with ``data.split_file=FILE``.

The file has one row per image: ``image_id, lesion_id, label, split, group``; only ``image_id``
and ``split`` are required (``group``: the unit the split keeps on one side). Before a run
trusts it, :func:`apply_split_file` checks it against the loaded data and refuses, naming the
offenders: an image of the data missing from the file or a file row unknown to the data, a
label that differs from the data's, a split outside train/val/test, a lesion or group in two
splits, a class missing from a split. Its SHA-256 goes into the run directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from dermlit.constants import CLASSES
from dermlit.data.splits import SPLITS
from dermlit.data.validation import describe_ids

REQUIRED = ("image_id", "split")


class SplitFileError(ValueError):
    """A split file that does not fit the data or breaks a split rule."""


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_split_file(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise SplitFileError(f"split file not found: {path} (data.split_file)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise SplitFileError(f"{path} lacks column(s) {missing}; has {list(table.columns)}")
    dup = table["image_id"][table["image_id"].duplicated()]
    if len(dup):
        raise SplitFileError(f"{path}: image_id listed twice: {describe_ids(dup.unique())}")
    wrong = table[~table["split"].isin(SPLITS)]
    if len(wrong):
        shown = [f"{i}={s!r}" for i, s in zip(wrong["image_id"], wrong["split"], strict=True)]
        raise SplitFileError(f"{path}: split must be one of {SPLITS}: {describe_ids(shown)}")
    return table


def _crossing(table: pd.DataFrame, column: str) -> list[str]:
    """Values of ``column`` whose images sit in more than one split, with their splits."""
    spread = table.groupby(column)["split"].agg(lambda s: sorted(set(s)))
    spread = spread[spread.map(len) > 1]
    return [f"{k} in {'+'.join(v)}" for k, v in spread.items()]


def apply_split_file(df: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """``df`` with the file's ``split`` and ``group`` columns, after every check above."""
    table = read_split_file(path)
    ids = df["image_id"].astype(str)
    unknown = table.loc[~table["image_id"].isin(ids), "image_id"]
    absent = ids[~ids.isin(table["image_id"])]
    problems = []
    if len(absent):
        problems.append(f"{describe_ids(absent)} image(s) of the data are not in the file")
    if len(unknown):
        problems.append(f"{describe_ids(unknown)} image(s) of the file are not in the data")
    if problems:
        raise SplitFileError(
            f"{path} does not describe this data ({len(df)} images): "
            + "; ".join(problems)
            + ". Write it from this data: dermlit data split ROOT --source NAME --out FILE"
        )
    row = table.set_index("image_id").loc[ids]
    if "label" in row.columns:
        differ = row["label"].to_numpy() != df["label"].astype(str).to_numpy()
        if differ.any():
            shown = [
                f"{i}: file {a!r}, data {b!r}"
                for i, a, b in zip(
                    ids[differ], row["label"][differ], df["label"][differ], strict=True
                )
            ]
            raise SplitFileError(f"{path}: labels differ from the data's: {describe_ids(shown)}")
    out = df.copy()
    out["split"] = row["split"].to_numpy()
    has_group = "group" in row.columns and (row["group"] != "").all()
    out["group"] = row["group"].to_numpy() if has_group else out["lesion_id"].astype(str)
    for column in ("lesion_id", "group"):
        crossing = _crossing(out, column)
        if crossing:
            raise SplitFileError(
                f"{path}: {describe_ids(crossing)} {column}(s) have images in two splits "
                "(a leak between train, val and test)"
            )
    labelled = out[out["label"].isin(CLASSES)]
    present = labelled.groupby("split")["label"].agg(set)
    empty = [
        f"{c} in {s}"
        for s in SPLITS
        for c in sorted(set(labelled["label"]))
        if c not in present.get(s, set())
    ]
    if empty:
        raise SplitFileError(f"{path}: class(es) with no image in a split: {', '.join(empty)}")
    return out
