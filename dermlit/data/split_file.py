"""Frozen splits: a ``splits.csv`` written once (``dermlit data split``, or a run's own
``splits.csv``) and trained on later with ``data.split_file=FILE``.

The file has one row per image: ``image_id, lesion_id, label, split, group``; only ``image_id``
and ``split`` are required (``group``: the unit the split keeps on one side). Before a run
trusts it, :func:`apply_split_file` checks it against the loaded data and refuses, naming the
offenders: an image of the data missing from the file or a file row unknown to the data, a
label that differs from the data's, a split outside train/val/test, a lesion or group in two
splits, a class missing from a split. Its SHA-256 goes into the run directory. A row with an
empty ``group`` cell is grouped by its lesion.

A source's official split (a ``split`` column of its index table) gets the same split rules
before the DataModule keeps it: :func:`check_split`, the one place they are written.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from dermlit.constants import CLASSES
from dermlit.data.splits import SPLITS
from dermlit.data.validation import describe_ids
from dermlit.errors import InputError

REQUIRED = ("image_id", "split")


class SplitFileError(InputError):
    """A split file (or a source's official split) that does not fit the data or breaks a split
    rule: refused in one line (exit 2); still a ValueError for the callers that catch one."""


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
    check_split_values(table, str(path))
    return table


def check_split_values(table: pd.DataFrame, where: str, hint: str = "") -> None:
    """Refuse ``split`` values outside train/val/test, naming each value, its image count and
    the first images (``hint``: what to do, at the end)."""
    split = table["split"].map(lambda s: "" if pd.isna(s) else str(s))
    wrong = ~split.isin(SPLITS)
    if wrong.any():
        counts = split[wrong].value_counts(sort=False)
        found = ", ".join(f"{v!r} ({n} image(s))" for v, n in counts.items())
        shown = [f"{i}={s!r}" for i, s in zip(table["image_id"][wrong], split[wrong], strict=True)]
        raise SplitFileError(
            f"{where}: split must be one of {SPLITS}; found {found}: {describe_ids(shown)}"
            + (f". {hint}" if hint else "")
        )


def _crossing(table: pd.DataFrame, column: str) -> list[str]:
    """Values of ``column`` whose images sit in more than one split, with their splits."""
    spread = table.groupby(column)["split"].agg(lambda s: sorted(set(s)))
    spread = spread[spread.map(len) > 1]
    return [f"{k} in {'+'.join(v)}" for k, v in spread.items()]


def check_split(
    table: pd.DataFrame, where: str, splits: tuple[str, ...] = SPLITS, hint: str = ""
) -> None:
    """The split rules, for a frozen split file and a source's official split alike: ``split``
    values among train/val/test; no ``lesion_id`` (nor ``group``, where the table has one) with
    images in two splits; every class of the labelled images in each of ``splits``. ``where``
    starts each message; ``hint`` (what to do) ends it."""
    check_split_values(table, where, hint)
    end = f". {hint}" if hint else ""
    for column in ("lesion_id", "group"):
        if column not in table.columns:
            continue
        crossing = _crossing(table, column)
        if crossing:
            raise SplitFileError(
                f"{where}: {describe_ids(crossing)} {column}(s) have images in two splits "
                f"(a leak between train, val and test){end}"
            )
    labelled = table[table["label"].isin(CLASSES)]
    present = labelled.groupby("split")["label"].agg(set)
    empty = [
        f"{c} in {s}"
        for s in splits
        for c in sorted(set(labelled["label"]))
        if c not in present.get(s, set())
    ]
    if empty:
        raise SplitFileError(
            f"{where}: class(es) with no image in a split: {', '.join(empty)}{end}"
        )


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
    lesions = out["lesion_id"].astype(str)
    if "group" in row.columns:  # an empty cell: that row's group is its lesion
        given = pd.Series(row["group"].to_numpy(), index=out.index).str.strip()
        out["group"] = given.where(given != "", lesions)
    else:
        out["group"] = lesions
    check_split(out, str(path))
    return out
