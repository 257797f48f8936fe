"""Faults in a predictions file given to ``dermlit-eval predictions=`` and ``dermlit compare``:
rows that are not probability vectors are refused with their image ids, never renormalised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from dermlit.constants import CLASSES, ISIC_COLUMNS
from dermlit.evaluate import main
from dermlit.evaluation.predictions import predictions_frame, read_predictions, write_predictions
from dermlit.rundir import SplitOutputs
from faults.fault_helpers import assert_refused, run_in_process

K = len(CLASSES)


def logits_and_targets(n: int = 70, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % K
    z = rng.normal(0, 2, size=(n, K))
    z[np.arange(n), targets] += 2
    return z, targets


def write(path: Path, values: np.ndarray, targets: np.ndarray) -> list[str]:
    ids = [f"ISIC_{i:07d}" for i in range(len(values))]
    write_predictions(path, predictions_frame(ids, values, targets))
    return ids


def test_bad_rows_are_refused_with_their_ids_lines_and_count(tmp_path: Path) -> None:
    z, t = logits_and_targets(20)
    path = tmp_path / "p.csv"
    ids = write(path, softmax(z, 1), t)
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    frame.loc[3, list(ISIC_COLUMNS)] = "0"  # a row of zeros (today: 1/7 each)
    frame.loc[5, "MEL"] = str(float(frame.loc[5, "MEL"]) + 0.2)  # sums to 1.2
    frame.loc[8, "NV"] = "-0.1"  # outside [0, 1]
    frame.loc[11, "BCC"] = ""  # empty cell
    frame.loc[12, "DF"] = "nan"
    frame.loc[13, "VASC"] = "high"  # not a number
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        read_predictions(path)
    message = str(err.value)
    assert message.startswith(f"{path}: 6 of 20 row(s)")
    assert "within 0.001" in message and "does not renormalise" in message
    # each problem with its image id and its line in the file (the header is line 1)
    assert (
        f"row not summing to 1 (+-0.001): 2 ({ids[3]} (line 5: sum 0), {ids[5]} (line 7: sum 1.2)"
        in message
    )
    assert f"value outside [0, 1]: 1 ({ids[8]} (line 10: NV=-0.1))" in message
    cells = "empty, NaN, infinite or non-numeric cell: 3"
    assert f"{cells} ({ids[11]} (line 13: BCC=''), {ids[12]} (line 14: DF='nan'), " in message
    assert f"{ids[13]} (line 15: VASC='high')" in message
    assert "predictions_are=logits" in message


def test_the_tolerance_is_what_the_message_states(tmp_path: Path) -> None:
    """6-decimal rounding (what write_predictions does) passes; 1e-3 off does not."""
    probs = np.full((2, K), 1 / K)  # 0.142857 x 7 = 0.999999 once written
    path = tmp_path / "p.csv"
    write(path, probs, np.array([0, 1]))
    _, back, _ = read_predictions(path)
    np.testing.assert_allclose(back, probs, atol=1e-6)
    frame = pd.read_csv(path)
    frame.loc[0, "MEL"] += 0.0009  # sum 1.0009: inside
    frame.loc[1, "MEL"] += 0.0011  # sum 1.0011: outside
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"(?s)1 of 2 row\(s\).*ISIC_0000001 \(line 3: sum 1\.001"):
        read_predictions(path)


def test_a_file_of_logits_needs_predictions_are_logits(tmp_path: Path) -> None:
    z, t = logits_and_targets()
    path = tmp_path / "logits.csv"
    write(path, z, t)
    with pytest.raises(ValueError, match=r"give predictions_are=logits"):
        read_predictions(path)
    _, probs, targets = read_predictions(path, predictions_are="logits")
    np.testing.assert_allclose(probs, softmax(z, axis=1), atol=1e-12)  # the file is exact
    np.testing.assert_array_equal(targets, t)
    # dermlit-eval keeps them as logits (temperature scaling works on the real ones)
    outputs = SplitOutputs.from_predictions(path, "logits")
    np.testing.assert_allclose(outputs.logits, z, atol=1e-12)
    # probabilities declared as logits would be softmaxed twice: refused
    write(tmp_path / "probs.csv", softmax(z, 1), t)
    with pytest.raises(ValueError, match="every row is a probability vector"):
        read_predictions(tmp_path / "probs.csv", predictions_are="logits")
    with pytest.raises(ValueError, match="predictions_are must be one of"):
        read_predictions(path, predictions_are="scores")


def test_dermlit_eval_refuses_then_evaluates_logits(tmp_path: Path, capsys) -> None:
    z, t = logits_and_targets()
    path = tmp_path / "logits.csv"
    ids = write(path, z, t)
    args = [f"predictions={path}", "bootstrap_resamples=20", f"output_dir={tmp_path}/out"]
    status = run_in_process(main, "dermlit-eval", *args)
    err = capsys.readouterr().err
    assert_refused(status, err, f"dermlit-eval: {path}: 70 of 70 row(s)", ids[0])
    assert "predictions_are=logits" in err
    assert run_in_process(main, "dermlit-eval", *args, "predictions_are=logits") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    pred = z.argmax(1)
    assert metrics["test/accuracy"] == pytest.approx(accuracy_score(t, pred))
    assert metrics["test/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, pred))
    _, written, _ = read_predictions(tmp_path / "out" / "predictions.csv")  # as probabilities
    np.testing.assert_allclose(written, softmax(z, axis=1), atol=1e-12)
    # a missing file is named too (today: pandas' FileNotFoundError traceback)
    missing = [f"predictions={tmp_path}/nope.csv", *args[1:2], f"output_dir={tmp_path}/out2"]
    status = run_in_process(main, "dermlit-eval", *missing)
    assert_refused(status, capsys.readouterr().err, f"{tmp_path}/nope.csv: no such file")


def test_dermlit_compare_reads_through_the_same_validation(tmp_path: Path, capsys) -> None:
    from dermlit.cli import main as cli

    z, t = logits_and_targets(140)
    write(tmp_path / "a.csv", z, t)
    write(tmp_path / "b.csv", z + np.random.default_rng(1).normal(0, 1, z.shape), t)
    args = ["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--resamples", "50"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a.csv'}: 140 of 140 row(s)" in err and "--predictions-are logits" in err
    assert cli([*args, "--predictions-are", "logits"]) == 0
