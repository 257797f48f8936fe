from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermlit.constants import CLASSES
from dermlit.evaluation.predictions import predictions_frame, read_predictions, write_predictions


def test_isic_columns_hold_the_right_class(tmp_path: Path) -> None:
    probs = np.eye(7)  # row i is certain of CLASSES[i]
    frame = predictions_frame([f"img{i}" for i in range(7)], probs, list(range(7)))
    assert list(frame.columns) == [
        "image",
        "MEL",
        "NV",
        "BCC",
        "AKIEC",
        "BKL",
        "DF",
        "VASC",
        "label",
    ]
    for i, cls in enumerate(CLASSES):
        assert frame.loc[i, cls.upper()] == 1.0
        assert frame.loc[i, "label"] == cls
    write_predictions(tmp_path / "p.csv", frame)
    ids, back, targets = read_predictions(tmp_path / "p.csv")
    assert ids == [f"img{i}" for i in range(7)]
    np.testing.assert_allclose(back, probs)
    np.testing.assert_array_equal(targets, np.arange(7))


def test_unknown_label_in_a_predictions_file_is_named(tmp_path: Path) -> None:
    frame = predictions_frame(["a"], np.full((1, 7), 1 / 7), [0])
    frame.loc[0, "label"] = "scc"
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['scc'\]"):
        read_predictions(tmp_path / "p.csv")


def test_not_a_predictions_file(tmp_path: Path) -> None:
    pd.DataFrame({"image": ["a"], "MEL": [1.0]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        read_predictions(tmp_path / "p.csv")
