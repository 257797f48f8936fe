"""Faults in an ISIC ground-truth CSV: all reported at once (like HAM10000's validator),
dropped and listed under ``data.on_error=skip``, except an ambiguous ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlit.constants import ISIC_COLUMNS
from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import IsicCsvSource
from dermlit.data.validation import DataValidationError, apply_policy
from faults.fault_helpers import assert_refused, run_in_process

GOOD = {f"ISIC_G{k}": c for k, c in enumerate(ISIC_COLUMNS)}  # one image per class


def one_hot(column: str) -> list[str]:
    return ["1.0" if c == column else "0.0" for c in ISIC_COLUMNS]


def write_case(root: Path, extra: list[list[str]], missing: tuple[str, ...] = ()) -> IsicCsvSource:
    """GOOD rows (then ``extra`` rows, verbatim cells) and an image per id but ``missing``."""
    rows = [[image, *one_hot(c)] for image, c in GOOD.items()] + extra
    frame = pd.DataFrame(rows, columns=["image", *ISIC_COLUMNS])
    frame.to_csv(root / "gt.csv", index=False)
    (root / "img").mkdir(exist_ok=True)
    for k, image in enumerate(frame["image"].unique()):
        if image not in missing:
            pixels = np.full((20, 24, 3), 30 * k % 256, dtype=np.uint8)
            Image.fromarray(pixels).save(root / "img" / f"{image}.jpg")
    return IsicCsvSource(root / "gt.csv", root / "img")


#: one row per fault (lines 9.. of the file: header = line 1, GOOD = lines 2-8)
FAULTS = [
    ["ISIC_TWO", "1", "1", "0", "0", "0", "0", "0"],  # line 9: two ones
    ["ISIC_ZERO", "0", "0", "0", "0", "0", "0", "0"],  # line 10: no label
    ["ISIC_EMPTY", "1", "", "0", "0", "0", "0", "0"],  # line 11: an empty cell
    ["ISIC_NAN", "0", "NaN", "1", "0", "0", "0", "0"],  # line 12
    ["ISIC_HALF", "0.5", "0", "0", "0.5", "0", "0", "0"],  # line 13: not 0/1
    ["ISIC_WORD", "yes", "0", "0", "0", "0", "0", "0"],  # line 14
    ["ISIC_NOIMG", *one_hot("NV")],  # line 15: valid row, image missing from the folder
    ["ISIC_G0", *one_hot("MEL")],  # line 16: the same row as line 2: a plain duplicate
]


def test_every_fault_is_reported_at_once(tmp_path: Path) -> None:
    df, report = write_case(tmp_path, FAULTS, missing=("ISIC_NOIMG",)).load()
    with pytest.raises(DataValidationError) as err:
        apply_policy(df, report, "raise")
    message = str(err.value)
    assert message.startswith(f"isic_csv {tmp_path / 'gt.csv'}: 8 image(s) failed validation")
    for expected in (
        "more than one 1 in the row: 1 (ISIC_TWO: line 9: MEL, NV)",
        "no 1 in the row (no label): 1 (ISIC_ZERO: line 10)",
        "empty or NaN cell: 2 (ISIC_EMPTY: line 11: NV='', ISIC_NAN: line 12: NV='NaN')",
        "value not 0 or 1: 2 (ISIC_HALF: line 13: MEL='0.5', AKIEC='0.5', "
        "ISIC_WORD: line 14: MEL='yes')",
        f"missing image file: 1 (ISIC_NOIMG: {tmp_path / 'img' / 'ISIC_NOIMG.jpg'})",
        "duplicate image_id: 1 (ISIC_G0)",
        "data.on_error=skip to drop these images",
    ):
        assert expected in message, f"{expected!r} not in\n{message}"


def test_skip_drops_the_faulty_rows_and_lists_them(tmp_path: Path) -> None:
    source = write_case(tmp_path, FAULTS, missing=("ISIC_NOIMG",))
    dm = DermDataModule(
        source, image_size=16, cache_dir=tmp_path / "cache", on_error="skip", decode_workers=1
    )
    dm.setup("test")
    test = dm.frame("test")
    assert sorted(test["image_id"]) == sorted(GOOD)  # the duplicate's first row kept, once
    assert dict(zip(test["image_id"], test["label"], strict=True)) == {
        i: c.lower() for i, c in GOOD.items()
    }
    skipped = dm.skipped
    assert sorted(skipped["image_id"]) == sorted([row[0] for row in FAULTS])
    assert skipped.set_index("image_id").loc["ISIC_HALF", "problem"] == "value not 0 or 1"


def test_conflicting_labels_for_one_image_are_refused_even_under_skip(tmp_path: Path) -> None:
    conflict = [["ISIC_G0", *one_hot("NV")], ["ISIC_ZERO", *["0"] * 7]]  # line 9: G0 is NV
    df, report = write_case(tmp_path, conflict).load()
    assert "ISIC_G0" not in set(df["image_id"])  # neither row is trusted
    with pytest.raises(DataValidationError) as err:
        apply_policy(df, report, "skip")
    message = str(err.value)
    assert "one image id with different labels: 1 (ISIC_G0: line 2: MEL; line 9: NV)" in message
    assert "cannot be skipped" in message and "ground truth is ambiguous" in message
    assert "ISIC_ZERO: line 10" in message  # the other faults are listed with it


def test_dermlit_train_prints_the_report_not_a_traceback(tmp_path: Path, capsys) -> None:
    from dermlit.train import main

    write_case(tmp_path, FAULTS[:2])
    status = run_in_process(
        main,
        "dermlit-train",
        "data=isic_csv",
        f"data.source.csv={tmp_path / 'gt.csv'}",
        f"data.source.images={tmp_path / 'img'}",
        "data.source.split=null",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    err = capsys.readouterr().err
    assert_refused(status, err, "dermlit-train: isic_csv", "ISIC_TWO: line 9: MEL, NV")
    assert "DataValidationError" in (tmp_path / "run" / "error.log").read_text()
