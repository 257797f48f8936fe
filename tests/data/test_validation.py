"""Bad input: each problem is named with its image ids, or skipped and recorded."""

from pathlib import Path

import pandas as pd
import pytest

from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import HAM10000Source
from dermlit.data.validation import DataValidationError, apply_policy, check_index


def corrupt(tiny_ham: Path) -> dict[str, str]:
    """Break three images in three ways; returns {image_id: problem kind}."""
    meta = pd.read_csv(tiny_ham / "HAM10000_metadata.csv")
    missing, broken, unknown = meta["image_id"].iloc[[0, 9, 20]]
    (tiny_ham / "images" / f"{missing}.jpg").unlink()
    data = (tiny_ham / "images" / f"{broken}.jpg").read_bytes()
    (tiny_ham / "images" / f"{broken}.jpg").write_bytes(data[: len(data) // 3])  # truncated
    meta.loc[meta["image_id"] == unknown, "dx"] = "scc"
    meta.to_csv(tiny_ham / "HAM10000_metadata.csv", index=False)
    return {
        missing: "missing image file",
        broken: "unreadable/corrupt image",
        unknown: "unknown label",
    }


def module(root: Path, tmp_path: Path, on_error: str) -> DermDataModule:
    return DermDataModule(
        HAM10000Source(root),
        image_size=16,
        cache_dir=tmp_path / "cache",
        on_error=on_error,
        val_fraction=0.25,
        test_fraction=0.25,
    )


def test_every_problem_is_reported_with_its_id(tiny_ham: Path, tmp_path: Path) -> None:
    bad = corrupt(tiny_ham)
    dm = module(tiny_ham, tmp_path, "raise")
    with pytest.raises(DataValidationError) as err:
        dm.setup("fit")
    message = str(err.value)
    # metadata problems are found before decoding: missing file and unknown label first
    missing = next(i for i, k in bad.items() if k == "missing image file")
    unknown = next(i for i, k in bad.items() if k == "unknown label")
    assert f"missing image file: 1 ({missing}" in message
    assert f"unknown label: 1 ({unknown}: 'scc')" in message
    assert "data.on_error=skip" in message


def test_corrupt_jpeg_is_named(tiny_ham: Path, tmp_path: Path) -> None:
    broken = "IMG_20011"
    path = tiny_ham / "images" / f"{broken}.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated inside the JPEG header/scan
    with pytest.raises(DataValidationError, match=rf"unreadable/corrupt image: 1 \({broken}: "):
        module(tiny_ham, tmp_path, "raise").setup("fit")


def test_skip_mode_drops_and_records_each_bad_image(tiny_ham: Path, tmp_path: Path) -> None:
    bad = corrupt(tiny_ham)
    dm = module(tiny_ham, tmp_path, "skip")
    dm.setup("fit")
    assert dict(zip(dm.skipped["image_id"], dm.skipped["problem"], strict=True)) == bad
    assert not set(bad) & set(dm.index["image_id"])
    assert len(dm.index) == 7 * 4 * 2 - 3


def test_duplicate_image_ids_are_named(tiny_ham: Path) -> None:
    meta = pd.read_csv(tiny_ham / "HAM10000_metadata.csv")
    meta = pd.concat([meta, meta.iloc[[3]]])
    meta.to_csv(tiny_ham / "HAM10000_metadata.csv", index=False)
    _, report = HAM10000Source(tiny_ham).load()
    assert [i for i, _ in report.problems["duplicate image_id"]] == [meta["image_id"].iloc[3]]


def test_unknown_policy_is_refused(tiny_ham: Path, tmp_path: Path) -> None:
    corrupt(tiny_ham)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        module(tiny_ham, tmp_path, "ignore").setup("fit")


# ---- one image id listed twice ----------------------------------------------------------------
KEPT = "a repeated row (same label) dropped; the first row kept"


def list_twice(tiny_ham: Path, image_id: str, dx: str) -> None:
    """Put a second row for ``image_id`` labelled ``dx`` first in the metadata."""
    meta = pd.read_csv(tiny_ham / "HAM10000_metadata.csv")
    extra = meta[meta["image_id"] == image_id].assign(dx=dx)
    pd.concat([extra, meta]).to_csv(tiny_ham / "HAM10000_metadata.csv", index=False)


def test_one_id_with_two_labels_is_refused_even_under_skip(tiny_ham: Path, tmp_path: Path) -> None:
    list_twice(tiny_ham, "IMG_30011", "mel")  # IMG_30011 is df (class 3); the mel row comes first
    _, report = HAM10000Source(tiny_ham).load()
    assert report.problems == {
        "one image id with different labels": [("IMG_30011", "labels 'mel', 'df'")]
    }
    assert "one image id with different labels" in report.unskippable
    for on_error in ("raise", "skip"):
        with pytest.raises(DataValidationError) as err:
            module(tiny_ham, tmp_path, on_error).setup("fit")
        message = str(err.value)
        assert "one image id with different labels: 1 (IMG_30011: labels 'mel', 'df')" in message
        assert "cannot be skipped (data.on_error=skip): the ground truth is ambiguous" in message
        assert "duplicate image_id" not in message


def test_same_id_same_label_is_skipped_keeping_one_row(tiny_ham: Path, tmp_path: Path) -> None:
    list_twice(tiny_ham, "IMG_20000", "bkl")  # the same label: a plain duplicate
    dm = module(tiny_ham, tmp_path, "skip")
    dm.setup("fit")
    assert dm.index["image_id"].tolist().count("IMG_20000") == 1
    assert dm.index.set_index("image_id").loc["IMG_20000", "label"] == "bkl"
    assert len(dm.index) == 7 * 4 * 2
    assert dm.skipped.values.tolist() == [["IMG_20000", "duplicate image_id", KEPT]]


def test_apply_policy_on_repeated_ids() -> None:
    """a: three rows, one label; b: two rows, one label, and a missing file; c: two labels."""
    df = pd.DataFrame(
        {
            "image_id": ["a", "b", "a", "c", "b", "a", "c"],
            "label": ["nv", "mel", "nv", "nv", "mel", "nv", "bcc"],
        }
    )
    df["path"] = __file__
    df.loc[4, "path"] = "/nonexistent/b.jpg"
    report = check_index(df.iloc[:6], "mem")  # without c's second row: no conflict
    kept = apply_policy(df.iloc[:6], report, "skip")
    assert kept[["image_id", "label"]].values.tolist() == [["a", "nv"], ["c", "nv"]]
    assert report.skipped.values.tolist() == [
        ["a", "duplicate image_id", KEPT],
        [
            "b",
            "duplicate image_id",
            "a repeated row (same label) dropped; the first row dropped too (its other problem)",
        ],
        ["a", "duplicate image_id", KEPT],
        ["b", "missing image file", "/nonexistent/b.jpg"],
    ]
    report = check_index(df, "mem")
    assert report.problems["one image id with different labels"] == [("c", "labels 'nv', 'bcc'")]
    assert [i for i, _ in report.problems["duplicate image_id"]] == ["a", "b", "a"]
    with pytest.raises(DataValidationError, match=r"different labels: 1 \(c: labels 'nv', 'bcc'\)"):
        apply_policy(df, report, "skip")
