"""Bad input: each problem is named with its image ids, or skipped and recorded."""

from pathlib import Path

import pandas as pd
import pytest

from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import HAM10000Source
from dermlit.data.validation import DataValidationError


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
