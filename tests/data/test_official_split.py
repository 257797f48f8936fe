"""A source's official split (a ``split`` column in its index table: a CSV's ``split_column``,
an extra column of HAM10000's metadata, MedMNIST's arrays) is checked like a frozen split file
before the DataModule keeps it: split values train/val/test only, no lesion in two splits,
every class of the data in every split that holds images. Sources that put every image in one
split (external test sets for ``dermlit-eval``) are still accepted."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from dermlit.constants import CLASSES
from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import CSVSource, HAM10000Source
from dermlit.data.sources.ham10000 import METADATA_FILE
from dermlit.data.split_file import SplitFileError
from dermlit.errors import InputError

#: lesion k of each class (tiny_ham: 4 lesions a class) -> its split: a valid official split
BY_LESION = {0: "train", 1: "train", 2: "val", 3: "test"}


def official_csv(tiny_ham: Path, change=None) -> Path:
    """tiny_ham as a CSV source with a ``fold`` column (whole lesions per split)."""
    meta = pd.read_csv(tiny_ham / METADATA_FILE, dtype=str)
    table = pd.DataFrame(
        {
            "path": "images/" + meta["image_id"] + ".jpg",
            "diagnosis": meta["dx"],
            "lesion": meta["lesion_id"],
            "fold": meta["lesion_id"].str[-3:].astype(int).map(BY_LESION),
        }
    )
    if change is not None:
        table = change(table)
    table.to_csv(tiny_ham / "labels.csv", index=False)
    return tiny_ham


def csv_module(root: Path, cache: Path) -> DermDataModule:
    source = CSVSource(root, label_column="diagnosis", group_column="lesion", split_column="fold")
    return DermDataModule(source, image_size=16, cache_dir=cache)


def test_a_valid_official_split_is_kept_as_it_is(tiny_ham: Path, tmp_path: Path) -> None:
    root = official_csv(tiny_ham)
    dm = csv_module(root, tmp_path / "c")
    dm.setup("fit")
    table = pd.read_csv(root / "labels.csv", dtype=str)
    assert dm.split_info == {"split": "official"}
    assert dm.index["split"].tolist() == table["fold"].tolist()
    assert dm.index["lesion_id"].tolist() == table["lesion"].tolist()


def test_a_lesion_in_two_official_splits_is_refused(tiny_ham: Path, tmp_path: Path) -> None:
    def leak(table: pd.DataFrame) -> pd.DataFrame:
        # one image of a train lesion moved to test: that lesion is in train and test
        first = table.index[table["fold"] == "train"][0]
        table.loc[first, "fold"] = "test"
        return table

    root = official_csv(tiny_ham, leak)
    table = pd.read_csv(root / "labels.csv", dtype=str)
    spread = table.groupby("lesion")["fold"].nunique()
    crossing = spread[spread > 1].index.tolist()
    assert len(crossing) == 1
    with pytest.raises(SplitFileError) as caught:
        csv_module(root, tmp_path / "c").setup("fit")
    message = str(caught.value)
    assert f"1 ({crossing[0]} in test+train) lesion_id(s) have images in two splits" in message
    assert "official split" in message and "data/split=grouped" in message
    assert isinstance(caught.value, InputError)


def test_a_class_missing_from_an_official_split_is_refused(tiny_ham: Path, tmp_path: Path) -> None:
    def all_mel_in_train(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[table["diagnosis"] == "mel", "fold"] = "train"
        return table

    root = official_csv(tiny_ham, all_mel_in_train)
    table = pd.read_csv(root / "labels.csv", dtype=str)
    present = table.groupby("fold")["diagnosis"].agg(set)
    missing = [
        f"{c} in {s}" for s in ("train", "val", "test") for c in CLASSES if c not in present[s]
    ]
    assert missing == ["mel in val", "mel in test"]
    with pytest.raises(SplitFileError, match="class") as caught:
        csv_module(root, tmp_path / "c").setup("fit")
    assert ", ".join(missing) in str(caught.value)


def test_ham10000_split_column_with_other_names_is_refused(tiny_ham: Path, tmp_path: Path) -> None:
    """A team's metadata with its own split names used to lose every image whose value was not
    train/val/test from all three splits, silently."""
    meta = pd.read_csv(tiny_ham / METADATA_FILE)
    names = {"train": "training", "val": "validation", "test": "test"}
    meta["split"] = meta["lesion_id"].str[-3:].astype(int).map(BY_LESION).map(names)
    meta.to_csv(tiny_ham / METADATA_FILE, index=False)
    counts = meta["split"].value_counts()
    dm = DermDataModule(HAM10000Source(tiny_ham), image_size=16, cache_dir=tmp_path / "c")
    with pytest.raises(SplitFileError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert "split must be one of ('train', 'val', 'test')" in message
    for value in ("training", "validation"):
        assert f"{value!r} ({counts[value]} image(s))" in message
    assert "'test' (" not in message  # a known value is not named as unknown
    assert "official split" in message and "HAM10000Source" in message
    assert "data/split=grouped" in message


def test_a_source_with_every_image_in_one_split_is_accepted(tiny_ham: Path, tmp_path: Path) -> None:
    """External test sets (isic_csv, folder: split=test) need not hold every class, and have
    no train or val images: the class check covers the splits that hold images."""

    def three_classes_all_test(table: pd.DataFrame) -> pd.DataFrame:
        table = table[table["diagnosis"].isin(["mel", "nv", "bcc"])].copy()
        table["fold"] = "test"
        return table

    root = official_csv(tiny_ham, three_classes_all_test)
    dm = csv_module(root, tmp_path / "c")
    dm.setup("test")
    table = pd.read_csv(root / "labels.csv", dtype=str)
    assert len(dm.frame("test")) == len(table) and len(dm.frame("train")) == 0


# ------------------------------------------------------------------ refusals, not tracebacks
def test_data_errors_the_user_can_fix_are_input_errors(tiny_ham: Path, tmp_path: Path) -> None:
    """``dermlit-train`` prints an InputError as one line with exit 2; these used to be plain
    ValueErrors (a traceback, exit 1). They stay ValueErrors for callers that catch one."""
    from dermlit.data.sources.isic2019 import DEFAULT_MAPPING, apply_mapping
    from dermlit.data.splits import SplitError

    assert issubclass(SplitError, InputError) and issubclass(SplitFileError, InputError)
    with pytest.raises(InputError, match=r"SCC: 1 image\(s\)"):
        apply_mapping(pd.Series(["SCC", "NV"]), DEFAULT_MAPPING, "raise", "isic2019")
    root = official_csv(tiny_ham)
    with pytest.raises(InputError, match=r"lacks group_column='patient'"):
        CSVSource(root, label_column="diagnosis", group_column="patient").load()
    values = sorted(set(pd.read_csv(root / "labels.csv")["diagnosis"]))
    with pytest.raises(InputError, match=re.escape(f"column 'diagnosis' has {values}")):
        CSVSource(root, label_column="diagnosis", split_column="diagnosis").load()
    meta = pd.read_csv(tiny_ham / METADATA_FILE).drop(columns="dx")
    meta.to_csv(tiny_ham / METADATA_FILE, index=False)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['dx'\]"):
        HAM10000Source(tiny_ham).load()
