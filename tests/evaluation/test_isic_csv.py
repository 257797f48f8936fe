"""ISIC ground-truth CSV and plain-folder sources: parsing, errors naming the image, DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlit.constants import CLASS_TO_INDEX, ISIC_COLUMNS
from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import FolderSource, IsicCsvSource
from dermlit.data.validation import DataValidationError, apply_policy

# ISIC 2018 column order: MEL, NV, BCC, AKIEC, BKL, DF, VASC
ROWS = {
    "ISIC_0000001": "MEL",
    "ISIC_0000002": "NV",
    "ISIC_0000003": "BCC",
    "ISIC_0000004": "AKIEC",
    "ISIC_0000005": "BKL",
    "ISIC_0000006": "DF",
    "ISIC_0000007": "VASC",
}


def write_images(folder: Path, ids, size=(24, 20)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, image_id in enumerate(ids):
        pixels = np.full((size[1], size[0], 3), 20 * k, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{image_id}.jpg")


def write_gt(path: Path, rows: dict[str, str | tuple[str, ...]], columns=ISIC_COLUMNS) -> Path:
    data = []
    for image, ones in rows.items():
        ones = (ones,) if isinstance(ones, str) else ones
        data.append([image] + [1.0 if c in ones else 0.0 for c in columns])
    pd.DataFrame(data, columns=["image", *columns]).to_csv(path, index=False)
    return path


def test_one_hot_rows_become_the_index_table(tmp_path: Path) -> None:
    write_images(tmp_path / "img", ROWS)
    source = IsicCsvSource(write_gt(tmp_path / "gt.csv", ROWS), tmp_path / "img")
    df, report = source.load()
    assert report.ok
    assert dict(zip(df["image_id"], df["label"], strict=True)) == {
        i: c.lower() for i, c in ROWS.items()
    }
    assert (df["split"] == "test").all() and (df["lesion_id"] == df["image_id"]).all()
    assert all(Path(p).is_file() for p in df["path"])


@pytest.mark.parametrize(
    ("ones", "kind", "detail"),
    [(("MEL", "NV"), "more than one 1 in the row", "line 9: MEL, NV"), ((), "no 1", "line 9")],
)
def test_a_row_with_two_ones_or_none_is_named(tmp_path: Path, ones, kind, detail) -> None:
    rows = {**ROWS, "ISIC_BAD": ones}
    write_images(tmp_path / "img", rows)
    source = IsicCsvSource(write_gt(tmp_path / "gt.csv", rows), tmp_path / "img")
    df, report = source.load()
    assert "ISIC_BAD" not in set(df["image_id"]) and len(df) == 7
    with pytest.raises(DataValidationError, match=kind) as err:
        apply_policy(df, report, "raise")
    assert f"ISIC_BAD: {detail}" in str(err.value)


def test_non_binary_values_are_refused(tmp_path: Path) -> None:
    path = write_gt(tmp_path / "gt.csv", ROWS)
    frame = pd.read_csv(path)
    frame.loc[0, "MEL"] = 0.7
    frame.to_csv(path, index=False)
    _, report = IsicCsvSource(path, tmp_path).load()
    assert report.problems["value not 0 or 1"] == [("ISIC_0000001", "line 2: MEL='0.7'")]


ISIC2019 = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")


def test_isic2019_columns_refuse_drop_or_map(tmp_path: Path) -> None:
    rows = {"A1": "AK", "A2": "SCC", "A3": "UNK", "A4": "MEL"}
    write_images(tmp_path / "img", rows)
    gt = write_gt(tmp_path / "gt.csv", rows, ISIC2019)
    df, report = IsicCsvSource(gt, tmp_path / "img").load()
    for on_error in ("raise", "skip"):  # other_columns decides, not on_error
        with pytest.raises(
            DataValidationError, match=r"(?s)A2: line 3: SCC, A3: line 4: UNK.*column_map"
        ) as err:
            apply_policy(df, report, on_error)
        assert "A1" not in str(err.value)  # AK is ISIC 2019's name for akiec

    df, _ = IsicCsvSource(gt, tmp_path / "img", other_columns="drop").load()
    assert dict(zip(df["image_id"], df["label"], strict=True)) == {"A1": "akiec", "A4": "mel"}

    mapped = IsicCsvSource(
        gt, tmp_path / "img", column_map={"SCC": "akiec"}, other_columns="drop"
    ).load()[0]
    assert sorted(mapped["image_id"]) == ["A1", "A2", "A4"]
    assert mapped.set_index("image_id").loc["A2", "label"] == "akiec"


def test_missing_image_and_lesion_csv(tmp_path: Path) -> None:
    write_images(tmp_path / "img", list(ROWS)[1:])  # the first image is missing
    pd.DataFrame({"image": list(ROWS), "lesion_id": ["L1"] * 7}).to_csv(
        tmp_path / "lesions.csv", index=False
    )
    gt = write_gt(tmp_path / "gt.csv", ROWS)
    df, report = IsicCsvSource(gt, tmp_path / "img", lesion_csv=tmp_path / "lesions.csv").load()
    assert (df["lesion_id"] == "L1").all()
    assert [i for i, _ in report.problems["missing image file"]] == ["ISIC_0000001"]


def test_isic_csv_through_the_datamodule(tmp_path: Path) -> None:
    write_images(tmp_path / "img", ROWS)
    source = IsicCsvSource(write_gt(tmp_path / "gt.csv", ROWS), tmp_path / "img")
    dm = DermDataModule(source, image_size=16, cache_dir=tmp_path / "cache", decode_workers=1)
    dm.setup("test")
    test = dm.frame("test")
    assert len(test) == 7 and len(dm.frame("train")) == 0
    expected = [CLASS_TO_INDEX[ROWS[i].lower()] for i in test["image_id"]]
    assert dm.dataset("test").targets.tolist() == expected


def test_unlabelled_folder_predicts_with_target_minus_one(tmp_path: Path) -> None:
    write_images(tmp_path / "img", ["b", "a"])
    write_images(tmp_path / "img" / "sub", ["a"])
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    df, report = FolderSource(tmp_path / "img").load()
    assert report.ok and df["image_id"].tolist() == ["a", "b"] and (df["label"] == "").all()
    recursive, report = FolderSource(tmp_path / "img", recursive=True).load()
    assert report.ok and recursive["image_id"].tolist() == ["a", "b", "sub/a"]

    dm = DermDataModule(
        FolderSource(tmp_path / "img"), image_size=16, cache_dir=tmp_path / "c", decode_workers=1
    )
    dm.setup("test")
    assert dm.dataset("test").targets.tolist() == [-1, -1]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        FolderSource(tmp_path / "nope").load()
    with pytest.raises(FileNotFoundError, match="no .jpg"):
        FolderSource(tmp_path).load()


def test_empty_label_is_still_an_error_for_labelled_sources(tmp_path: Path) -> None:
    from conftest import write_tiny_ham

    from dermlit.data.sources import HAM10000Source

    root = write_tiny_ham(tmp_path / "ham", lesions_per_class=1, images_per_lesion=1)
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    meta.loc[0, "dx"] = ""
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    dm = DermDataModule(HAM10000Source(root), image_size=16, cache_dir=tmp_path / "c")
    with pytest.raises(DataValidationError, match="unknown label"):
        dm.setup("fit")
