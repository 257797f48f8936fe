"""ISIC 2019, MedMNIST (.npz) and generic CSV sources on tiny generated files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlit.constants import CLASSES
from dermlit.data.cli import build_source
from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import CSVSource, ISIC2019Source, MedMNISTSource
from dermlit.data.sources.isic2019 import UnmappedClassError
from dermlit.data.validation import DataValidationError, apply_policy

COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
INDEX_COLUMNS = ["image_id", "path", "label", "lesion_id"]


def save_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# ------------------------------------------------------------------ ISIC 2019
def write_isic2019(root: Path, columns: list[str] = COLUMNS) -> list[str]:
    """One image per ISIC column present (+ a second NV image of the first NV lesion)."""
    diagnoses = [c for c in columns if c != "UNK"] + ["NV"]
    ids = [f"ISIC_{i:07d}" for i in range(len(diagnoses))]
    onehot = pd.DataFrame(0.0, index=range(len(ids)), columns=columns)
    for row, dx in enumerate(diagnoses):
        onehot.loc[row, dx] = 1.0
    pd.concat([pd.DataFrame({"image": ids}), onehot], axis=1).to_csv(
        root / "ISIC_2019_Training_GroundTruth.csv", index=False
    )
    lesions = [f"BCN_{i:07d}" for i in range(len(ids))]
    lesions[-1] = lesions[1]  # the extra NV image belongs to the first NV lesion
    lesions[2] = None  # no lesion id (as for many ISIC 2019 images)
    meta = {"image": ids, "age_approx": 50, "sex": "female", "lesion_id": lesions}
    pd.DataFrame(meta).to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)
    for i, image_id in enumerate(ids):
        save_image(root / "ISIC_2019_Training_Input" / f"{image_id}.jpg", i)
    return diagnoses


def test_isic2019_refuses_unmapped_classes_by_default(tmp_path: Path) -> None:
    write_isic2019(tmp_path)
    with pytest.raises(UnmappedClassError, match=r"\(SCC: 1 image\(s\)\).*mapping\.SCC=akiec"):
        ISIC2019Source(tmp_path).load()


def test_isic2019_drop_counts_and_logs(tmp_path: Path, caplog) -> None:
    diagnoses = write_isic2019(tmp_path)
    source = ISIC2019Source(tmp_path, on_unmapped="drop")
    with caplog.at_level(logging.WARNING):
        df, report = source.load()
    assert report.ok, report.message()
    assert source.dropped == {"SCC": 1}
    assert "dropped unmapped classes: {'SCC': 1}" in caplog.text
    assert list(df.columns[:4]) == INDEX_COLUMNS
    expected = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df"}
    expected["VASC"] = "vasc"
    assert df["label"].tolist() == [expected[d] for d in diagnoses if d != "SCC"]
    assert df["isic_label"].tolist() == [d for d in diagnoses if d != "SCC"]
    assert df["lesion_id"].iloc[-1] == df["lesion_id"].iloc[1] == "BCN_0000001"
    assert df["lesion_id"].iloc[2] == df["image_id"].iloc[2]  # missing lesion id -> own lesion
    assert df["age_approx"].eq(50).all()
    assert all(Path(p).is_file() for p in df["path"])


def test_isic2019_mapping_from_config_and_eight_columns(tmp_path: Path) -> None:
    write_isic2019(tmp_path, COLUMNS[:8])
    df, report = ISIC2019Source(tmp_path, mapping={"SCC": "akiec"}).load()
    assert report.ok
    assert df.loc[df["isic_label"].isin(["AK", "SCC"]), "label"].tolist() == ["akiec", "akiec"]


def test_isic2019_bad_onehot_and_missing_image_are_reported(tmp_path: Path) -> None:
    write_isic2019(tmp_path)
    gt = pd.read_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv")
    gt.loc[0, "NV"] = 1.0  # MEL and NV both set
    gt.to_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", index=False)
    (tmp_path / "ISIC_2019_Training_Input/ISIC_0000003.jpg").unlink()
    df, report = ISIC2019Source(tmp_path, on_unmapped="drop").load()
    assert report.problems["more than one 1 in the row"] == [("ISIC_0000000", "line 2: MEL, NV")]
    assert [i for i, _ in report.problems["missing image file"]] == ["ISIC_0000003"]
    assert "ISIC_0000000" not in set(df["image_id"])


def edit_isic2019(root: Path, cells: dict[tuple[int, str], str], extra=()) -> None:
    """Set ground-truth cells verbatim (``{(row, column): text}``) and append ``extra`` rows."""
    path = root / "ISIC_2019_Training_GroundTruth.csv"
    gt = pd.read_csv(path, dtype=str, keep_default_na=False)
    for (row, column), text in cells.items():
        gt.loc[row, column] = text
    gt = pd.concat([gt, pd.DataFrame(list(extra), columns=gt.columns)], ignore_index=True)
    gt.to_csv(path, index=False)


def test_isic2019_cells_that_are_not_0_or_1_are_reported_per_row(tmp_path: Path) -> None:
    write_isic2019(tmp_path)  # rows: MEL NV BCC AK BKL DF VASC SCC NV (lines 2-10)
    empty_but_nv = {(1, c): "" for c in COLUMNS if c != "NV"}  # NV=1, every other cell empty
    edit_isic2019(
        tmp_path, {(0, "MEL"): "0.6", **empty_but_nv, (2, "NV"): "0.51", (2, "BCC"): "0.2"}
    )
    df, report = ISIC2019Source(tmp_path, on_unmapped="drop").load()
    empties = ", ".join(f"{c}=''" for c in COLUMNS if c != "NV")
    assert report.problems == {
        "empty or NaN cell": [("ISIC_0000001", f"line 3: {empties}")],
        "value not 0 or 1": [
            ("ISIC_0000000", "line 2: MEL='0.6'"),
            ("ISIC_0000002", "line 4: NV='0.51', BCC='0.2'"),
        ],
    }
    # the faulty rows are not in the index under any label; the rest keep theirs (SCC dropped)
    assert df[["image_id", "label"]].values.tolist() == [
        ["ISIC_0000003", "akiec"],
        ["ISIC_0000004", "bkl"],
        ["ISIC_0000005", "df"],
        ["ISIC_0000006", "vasc"],
        ["ISIC_0000008", "nv"],
    ]
    with pytest.raises(DataValidationError, match=r"value not 0 or 1: 2 \(ISIC_0000000: line 2"):
        apply_policy(df, report, "raise")
    assert len(apply_policy(df, report, "skip")) == 5
    assert sorted(report.skipped["image_id"]) == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]


def test_isic2019_non_numeric_cell_names_its_row(tmp_path: Path) -> None:
    write_isic2019(tmp_path)
    edit_isic2019(tmp_path, {(1, "MEL"): "x"})
    df, report = ISIC2019Source(tmp_path, on_unmapped="drop").load()
    assert report.problems == {"value not 0 or 1": [("ISIC_0000001", "line 3: MEL='x'")]}
    assert "ISIC_0000001" not in set(df["image_id"])


def test_isic2019_one_id_with_two_labels_is_unskippable(tmp_path: Path) -> None:
    write_isic2019(tmp_path)
    zeros = ["0.0"] * len(COLUMNS)
    nv_again = ["ISIC_0000000", *zeros[:1], "1.0", *zeros[2:]]  # line 11: ISIC_0000000 (MEL) as NV
    bcc_again = ["ISIC_0000002", *zeros[:2], "1.0", *zeros[3:]]  # line 12: the same row again
    edit_isic2019(tmp_path, {}, extra=[nv_again, bcc_again])
    df, report = ISIC2019Source(tmp_path, on_unmapped="drop").load()
    assert report.problems == {
        "one image id with different labels": [("ISIC_0000000", "line 2: MEL; line 11: NV")],
        "duplicate image_id": [("ISIC_0000002", "")],
    }
    assert "ISIC_0000000" not in set(df["image_id"])
    with pytest.raises(DataValidationError, match="cannot be skipped"):
        apply_policy(df, report, "skip")


def test_isic2019_not_a_ground_truth_file(tmp_path: Path) -> None:
    pd.DataFrame({"image": ["a"], "dx": ["mel"]}).to_csv(
        tmp_path / "ISIC_2019_Training_GroundTruth.csv", index=False
    )
    with pytest.raises(ValueError, match="is not an ISIC 2019 ground truth"):
        ISIC2019Source(tmp_path).load()


# ------------------------------------------------------------------ MedMNIST
def write_npz(path: Path, sizes=(14, 7, 7), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 7).reshape(n, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


def test_medmnist_keeps_splits_labels_and_exact_pixels(tmp_path: Path) -> None:
    arrays = write_npz(tmp_path / "dermamnist.npz")
    source = MedMNISTSource(tmp_path, cache_dir=tmp_path / "cache")
    df, report = source.load()
    assert report.ok
    assert list(df.columns[:4]) == INDEX_COLUMNS
    for split in ("train", "val", "test"):
        rows = df[df["split"] == split]
        assert rows["label"].tolist() == [CLASSES[t] for t in arrays[f"{split}_labels"][:, 0]]
        decoded = np.stack([np.asarray(Image.open(p)) for p in rows["path"]])
        np.testing.assert_array_equal(decoded, arrays[f"{split}_images"])
    mtimes = [Path(p).stat().st_mtime_ns for p in df["path"]]
    df2, _ = source.load()  # exported once: the second load writes nothing
    assert [Path(p).stat().st_mtime_ns for p in df2["path"]] == mtimes


def test_medmnist_official_splits_reach_the_datamodule(tmp_path: Path) -> None:
    arrays = write_npz(tmp_path / "dermamnist.npz")
    source = MedMNISTSource(tmp_path, cache_dir=tmp_path / "png")
    dm = DermDataModule(source, image_size=28, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    x, y = next(iter(dm.loader("test")))
    np.testing.assert_array_equal(x.numpy(), arrays["test_images"])
    assert y.tolist() == arrays["test_labels"][:, 0].tolist()
    assert len(dm.frame("train")) == 14 and len(dm.frame("val")) == 7


def test_medmnist_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="MedMNIST file not found"):
        MedMNISTSource(tmp_path).load()
    images = np.zeros((2, 28, 28, 3), np.uint8)
    np.savez(tmp_path / "chest.npz", train_images=images, train_labels=np.zeros((2, 14)))
    with pytest.raises(ValueError, match=r"shape \(2, 14\): a multi-label"):
        MedMNISTSource(tmp_path, filename="chest.npz").load()
    np.savez(tmp_path / "odd.npz", train_images=images, train_labels=np.array([[0], [9]]))
    _, report = MedMNISTSource(tmp_path, filename="odd.npz").load()
    assert report.problems["unknown label"] == [("train_00001", "'label 9'")]


# ------------------------------------------------------------------ generic CSV
def test_csv_source_columns_paths_groups_and_splits(tmp_path: Path) -> None:
    save_image(tmp_path / "imgs/a.png", 0)
    save_image(tmp_path / "imgs/b.png", 1)
    save_image(tmp_path / "elsewhere/c.png", 2)
    table = pd.DataFrame(
        {
            "file": ["imgs/a.png", "imgs/b.png", str(tmp_path / "elsewhere/c.png")],
            "diagnosis": ["Melanoma", " NV ", "bcc"],
            "patient": ["p1", "p1", ""],
            "fold": ["train", "train", "TEST"],
            "label": ["x", "y", "z"],  # an extra column that collides with an index column
        }
    )
    table.to_csv(tmp_path / "own.csv", index=False)
    source = CSVSource(
        tmp_path,
        csv="own.csv",
        path_column="file",
        label_column="diagnosis",
        group_column="patient",
        split_column="fold",
        label_map={"melanoma": "mel"},
    )
    df, report = source.load()
    assert report.ok, report.message()
    assert df["image_id"].tolist() == ["a", "b", "c"]
    assert df["path"].tolist() == [
        str(tmp_path / "imgs/a.png"),
        str(tmp_path / "imgs/b.png"),
        str(tmp_path / "elsewhere/c.png"),
    ]
    assert df["label"].tolist() == ["mel", "nv", "bcc"]
    assert df["lesion_id"].tolist() == ["p1", "p1", "c"]
    assert df["split"].tolist() == ["train", "train", "test"]
    assert df["csv_label"].tolist() == ["x", "y", "z"]


def test_csv_source_errors(tmp_path: Path) -> None:
    pd.DataFrame(
        {"path": ["a.png", "a.png"], "label": ["scc", "nv"], "s": ["train", "dev"]}
    ).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks group_column='lesion'; its columns"):
        CSVSource(tmp_path, group_column="lesion").load()
    with pytest.raises(ValueError, match=r"column 's' has \['dev'\]"):
        CSVSource(tmp_path, split_column="s").load()
    _, report = CSVSource(tmp_path).load()
    assert report.problems["unknown label"] == [("a", "'scc'")]
    # one id, two labels: not a plain duplicate (skip would pick a ground truth)
    assert report.problems["one image id with different labels"] == [("a", "labels 'scc', 'nv'")]
    assert "duplicate image_id" not in report.problems
    assert [i for i, _ in report.problems["missing image file"]] == ["a", "a"]
    with pytest.raises(DataValidationError, match=r"different labels: 1 \(a: labels 'scc', 'nv'\)"):
        apply_policy(*CSVSource(tmp_path).load(), "skip")


@pytest.mark.parametrize(
    ("name", "cls"),
    [("isic2019", ISIC2019Source), ("dermamnist", MedMNISTSource), ("csv", CSVSource)],
)
def test_data_configs_instantiate(name: str, cls: type, tmp_path: Path) -> None:
    source = build_source(name, tmp_path, [])
    assert isinstance(source, cls) and source.root == tmp_path
