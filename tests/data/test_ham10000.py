from pathlib import Path

import pytest

from dermlit.constants import CLASSES, HAM10000_CLASS_COUNTS
from dermlit.data.sources import HAM10000Source


def test_reads_the_real_ham10000(ham_dir: Path) -> None:
    df, report = HAM10000Source(ham_dir).load()
    assert report.ok, report.message()
    assert len(df) == 10_015
    assert df["lesion_id"].nunique() == 7_470
    assert df["label"].value_counts().to_dict() == HAM10000_CLASS_COUNTS
    assert set(df["label"]) == set(CLASSES)
    assert df["image_id"].is_unique
    assert all(Path(p).name == f"{i}.jpg" for i, p in zip(df["image_id"], df["path"], strict=True))


def test_finds_images_in_the_dataverse_part_folders(tiny_ham: Path) -> None:
    images = sorted((tiny_ham / "images").iterdir())
    (tiny_ham / "HAM10000_images_part_1").mkdir()
    (tiny_ham / "HAM10000_images_part_2").mkdir()
    for i, path in enumerate(images):
        path.rename(tiny_ham / f"HAM10000_images_part_{1 + i % 2}" / path.name)
    (tiny_ham / "images").rmdir()
    df, report = HAM10000Source(tiny_ham).load()
    assert report.ok, report.message()
    assert {Path(p).parent.name for p in df["path"]} == {
        "HAM10000_images_part_1",
        "HAM10000_images_part_2",
    }


def test_missing_metadata_names_the_expected_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="HAM10000_metadata.csv"):
        HAM10000Source(tmp_path).load()
