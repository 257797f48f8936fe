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


def test_small_probabilities_survive_the_file(tmp_path: Path) -> None:
    """A confident model's small probabilities were written as 0 (6 decimals): its NLL and
    AUROC from predictions.csv then differed from the run's own (whole class columns of zeros).
    Both are recomputed here from the file with scikit-learn against the in-memory values."""
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    n = 70
    targets = np.arange(n) % 7
    logits = rng.normal(0, 1, (n, 7))
    logits[:, CLASSES.index("nv")] = 25.0 + rng.normal(0, 3, n)  # nv dominates every row
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert probs.min() < 1e-12
    write_predictions(
        tmp_path / "p.csv", predictions_frame([f"i{k}" for k in range(n)], probs, targets)
    )
    _, back, _ = read_predictions(tmp_path / "p.csv")
    np.testing.assert_array_equal(back, probs)  # exactly: the metrics are the run's own
    labels = list(range(7))
    assert log_loss(targets, back, labels=labels) == log_loss(targets, probs, labels=labels)
    auroc = roc_auc_score(targets, probs, multi_class="ovr", labels=labels)
    assert roc_auc_score(targets, back, multi_class="ovr", labels=labels) == auroc
