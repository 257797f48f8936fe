"""``dermlit compare`` on prediction files with a known difference, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from dermlit.cli import main as cli
from dermlit.constants import CLASSES
from dermlit.evaluation.bootstrap import mcnemar, paired_bootstrap
from dermlit.evaluation.predictions import predictions_frame, write_predictions

K = len(CLASSES)


def files(tmp_path: Path, n: int = 400):
    """B is A with 60 images pushed to a wrong class (a known difference)."""
    rng = np.random.default_rng(0)
    t = rng.choice(K, n, p=[0.05, 0.1, 0.15, 0.05, 0.15, 0.45, 0.05])
    z = rng.normal(size=(n, K))
    z[np.arange(n), t] += 4
    zb = z.copy()
    wrong = rng.choice(n, 60, replace=False)
    zb[wrong, (t[wrong] + 1) % K] += 10
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    pa, pb = softmax(z, 1), softmax(zb, 1)
    write_predictions(tmp_path / "a.csv", predictions_frame(ids, pa, t))
    perm = rng.permutation(n)  # B's rows in another order: compare pairs by image id
    write_predictions(
        tmp_path / "b.csv", predictions_frame([ids[i] for i in perm], pb[perm], t[perm])
    )
    return pa, pb, t, ids


def test_compare_two_prediction_files(tmp_path: Path, capsys) -> None:
    pa, pb, t, _ = files(tmp_path)
    code = cli(
        [
            "compare",
            str(tmp_path / "a.csv"),
            str(tmp_path / "b.csv"),
            "--resamples",
            "300",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "macro_f1" in printed and "McNemar" in printed
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    acc = result["metrics"]["accuracy"]
    # the known difference: B is wrong on the 60 images (A on a few of them too)
    right_a, right_b = pa.argmax(1) == t, pb.argmax(1) == t
    assert acc["a"] == pytest.approx(right_a.mean()) and acc["b"] == pytest.approx(right_b.mean())
    assert acc["delta"] == pytest.approx(right_a.mean() - right_b.mean())
    assert 50 / len(t) < acc["delta"] <= 60 / len(t)
    assert acc["ci_low"] > 0 and acc["share_a_better"] == 1.0
    mc = result["mcnemar"]
    b_only = int(np.sum((pa.argmax(1) == t) & (pb.argmax(1) != t)))
    assert mc["only_a_correct"] == b_only and mc["only_b_correct"] == 0
    assert mc["p_value"] == pytest.approx(mcnemar(pa.argmax(1) == t, pb.argmax(1) == t)[1])
    assert mc["p_value"] < 1e-6
    # the same numbers as the core's paired bootstrap on the aligned arrays
    ref = paired_bootstrap(pa, pb, t, 300, 0)
    for m in ("macro_f1", "ece"):
        assert result["metrics"][m]["ci_low"] == pytest.approx(ref[m]["ci_low"])
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| accuracy |" in md and "McNemar" in md


def test_compare_refuses_different_test_sets(tmp_path: Path, capsys) -> None:
    pa, pb, t, ids = files(tmp_path, 100)
    other = ids[:98] + ["ISIC_X1", "ISIC_X2"]
    write_predictions(tmp_path / "c.csv", predictions_frame(other, pb, t))
    assert cli(["compare", str(tmp_path / "a.csv"), str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert "test sets differ" in err
    assert "only in A" in err and "ISIC_0000098" in err and "ISIC_0000099" in err
    assert "only in B" in err and "ISIC_X1" in err

    relabelled = t.copy()
    relabelled[5] = (t[5] + 1) % K
    write_predictions(tmp_path / "d.csv", predictions_frame(ids, pb, relabelled))
    assert cli(["compare", str(tmp_path / "a.csv"), str(tmp_path / "d.csv")]) == 2
    err = capsys.readouterr().err
    assert f"ISIC_0000005 (A {CLASSES[t[5]]}, B {CLASSES[relabelled[5]]})" in err

    assert cli(["compare", str(tmp_path / "a.csv"), str(tmp_path / "missing")]) == 2
    assert "no predictions.csv" in capsys.readouterr().err


def test_compare_accepts_run_directories(tmp_path: Path) -> None:
    files(tmp_path, 80)
    for name in ("a", "b"):
        (tmp_path / f"run_{name}").mkdir()
        (tmp_path / f"{name}.csv").rename(tmp_path / f"run_{name}" / "predictions.csv")
    out = tmp_path / "cmp.md"
    args = ["compare", str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--resamples", "50"]
    assert cli([*args, "--out", str(out)]) == 0
    assert "run_a" in out.read_text()
