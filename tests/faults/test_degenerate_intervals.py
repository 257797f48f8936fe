"""Fault: a zero-width interval presented as certainty (issue 13, item 13). A class with one or
two test images, or a metric every resample agrees on, gives ``[v, v]``: it must be flagged in
``metrics.json`` (``_ci_degenerate``, ``_ci_support``), the report and the printed table, with
the number of images it rests on."""

from __future__ import annotations

import json

import numpy as np

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.evaluation import compare
from dermlit.evaluation.bootstrap import metrics_with_ci, paired_bootstrap
from dermlit.evaluation.settings import EvalSettings
from dermlit.rundir import SplitOutputs, print_summary, write_evaluation

K = len(CLASSES)
DF, VASC, AKIEC = (CLASS_TO_INDEX[c] for c in ("df", "vasc", "akiec"))


def split_with_tiny_classes(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a decent model on a test split where df has ONE image (predicted right),
    vasc two (both right) and akiec two (one right, one called nv)."""
    rng = np.random.default_rng(0)
    common = [c for c in range(K) if c not in (DF, VASC, AKIEC)]
    t = np.concatenate([rng.choice(common, n - 5), [DF, VASC, VASC, AKIEC, AKIEC]])
    pred = np.where(rng.uniform(size=n) < 0.8, t, rng.choice(common, n))
    pred[-5:] = [DF, VASC, VASC, AKIEC, CLASS_TO_INDEX["nv"]]
    z = rng.normal(size=(n, K))
    z[np.arange(n), pred] += 3.0
    return z, t


def test_one_image_class_is_flagged_with_its_support(tmp_path, capsys):
    z, t = split_with_tiny_classes()
    ids = [f"ISIC_{i:07d}" for i in range(len(t))]
    write_evaluation(
        tmp_path, SplitOutputs(ids, z, t), settings=EvalSettings.defaults(n_resamples=300)
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test/support_df"] == 1
    assert m["test/recall_df"] == 1.0
    assert m["test/recall_df_ci_low"] == m["test/recall_df_ci_high"] == 1.0  # kept, and flagged
    assert m["test/recall_df_ci_degenerate"] is True and m["test/recall_df_ci_support"] == 1
    assert m["test/recall_vasc_ci_degenerate"] is True and m["test/recall_vasc_ci_support"] == 2
    # two images, one right: resamples see 0, 1/2 and 1, so the interval is wide, not flagged
    assert m["test/recall_akiec"] == 0.5 and "test/recall_akiec_ci_degenerate" not in m
    assert m["test/recall_akiec_ci_low"] == 0.0 and m["test/recall_akiec_ci_high"] == 1.0
    assert "test/accuracy_ci_degenerate" not in m and "test/accuracy_ci_support" not in m

    report = (tmp_path / "report" / "report.md").read_text()
    df_row = next(line for line in report.splitlines() if line.startswith("| df |"))
    assert "1.000 [1.000, 1.000] zero width, 1 image" in df_row, df_row
    vasc_row = next(line for line in report.splitlines() if line.startswith("| vasc |"))
    assert "zero width, 2 images" in vasc_row, vasc_row

    print_summary(m, "test", tmp_path)
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if "test/recall_df" in line)
    assert "zero width, 1 image" in row, printed


def test_a_metric_every_resample_agrees_on_is_flagged_with_all_images():
    """A perfect classifier: accuracy is 1 in every resample; the support is the whole split."""
    rng = np.random.default_rng(1)
    t = np.concatenate([np.arange(K), rng.integers(0, K, 93)])
    p = np.full((len(t), K), 0.02)
    p[np.arange(len(t)), t] = 1 - 0.02 * (K - 1)
    out = metrics_with_ci(p, t, prefix="test/", n_resamples=200)
    assert out["test/accuracy"] == 1.0 and out["test/accuracy_ci_degenerate"] is True
    assert out["test/accuracy_ci_support"] == len(t)
    assert out["test/recall_df_ci_support"] == np.sum(t == DF)  # its class's images


def test_compare_of_identical_decisions_shows_zero_width():
    z, t = split_with_tiny_classes()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    paired = paired_bootstrap(p, p, t, n_resamples=100, metrics=("accuracy", "macro_f1"))
    assert {r["ci_status"] for r in paired.values()} == {"degenerate"}
    result = {
        "metrics": {
            m: {"a": 0.5, "b": 0.5, "higher_is_better": True} | r for m, r in paired.items()
        }
    }
    shown = {row[0]: row[4] for row in compare.rows(result)}
    assert shown["accuracy"] == "[0.000, 0.000] zero width", shown
