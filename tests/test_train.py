"""Training: once through the real entry point (``python -m dermlit.train`` = ``dermlit-train``:
Hydra's own run directory files, the printed summary), otherwise in-process (``train(cfg)``, the
``train_in_process`` fixture), and ``dermlit-eval``'s entry point reproducing the run's test
metrics from its best checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score, f1_score

from dermlit.constants import CLASSES
from dermlit.evaluation.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.source.n_images=700", "data.image_size=32", "data.batch_size=32"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dermlit-cache")


def run_train(run_dir: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DERMLIT_CACHE": str(cache_dir), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "dermlit.train", *TINY, f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_fast_dev_run_through_the_entry_point(tmp_path: Path, cache_dir: Path) -> None:
    """The one subprocess test of ``dermlit-train``: Hydra's run directory and the summary."""
    run = tmp_path / "run"
    proc = run_train(run, cache_dir, "debug=fdr")
    assert "test/macro_f1" in proc.stdout
    assert f"Run directory: {run.resolve()}" in proc.stdout.replace("\n", "")
    assert json.loads((run / "metrics.json").read_text())["test/n_images"] > 0
    # .hydra: Hydra's composed config and overrides, dermlit's resolved config
    assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) == [*TINY, "debug=fdr"]
    resolved = yaml.safe_load((run / ".hydra" / "resolved.yaml").read_text())
    assert (
        resolved["trainer"]["fast_dev_run"] is True and (run / ".hydra" / "config.yaml").is_file()
    )


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, train_in_process, train_cache_dir) -> Path:
    run = tmp_path_factory.mktemp("one-epoch") / "run"
    train_in_process(run, *TINY, "trainer.max_epochs=1")
    return run


def test_one_epoch_writes_the_whole_run_directory(one_epoch_run) -> None:
    run = one_epoch_run

    # .hydra: the resolved config
    resolved = yaml.safe_load((run / ".hydra" / "resolved.yaml").read_text())
    assert resolved["trainer"]["max_epochs"] == 1

    # checkpoints: last and best by val/macro_f1
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(c.startswith("best-epoch00") for c in ckpts)

    # splits.csv: every image once, no lesion in two splits
    splits = pd.read_csv(run / "splits.csv")
    assert len(splits) == 700 and splits["image_id"].is_unique
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1
    # split.json: how the split was grouped, in the run directory (not the working directory)
    assert json.loads((run / "split.json").read_text())["split"] == "grouped"

    # predictions.csv: ISIC columns, exactly the test split, probabilities
    ids, probs, targets = read_predictions(run / "predictions.csv")
    test = splits[splits["split"] == "test"]
    assert sorted(ids) == sorted(test["image_id"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    truth = dict(zip(test["image_id"], test["label"], strict=True))
    assert [CLASSES[t] for t in targets] == [truth[i] for i in ids]

    # metrics.json agrees with scikit-learn on predictions.csv, with CIs around the estimate
    metrics = json.loads((run / "metrics.json").read_text())
    preds = probs.argmax(axis=1)
    labels = sorted(set(targets) | set(preds))
    assert metrics["test/macro_f1"] == pytest.approx(
        f1_score(targets, preds, average="macro", labels=labels), abs=1e-6
    )
    assert metrics["test/balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(targets, preds), abs=1e-6
    )
    for key in ("macro_f1", "balanced_accuracy", "recall_mel", "ece"):
        low, high = metrics[f"test/{key}_ci_low"], metrics[f"test/{key}_ci_high"]
        if metrics.get(f"test/{key}_ci_biased"):  # no valid interval (intervals.py): omitted
            assert low is None and high is None, key
            continue
        assert low <= metrics[f"test/{key}"] <= high

    # logged epoch metrics and the report
    logged = pd.read_csv(run / "csv" / "metrics.csv")
    assert logged["val/macro_f1"].notna().sum() == 1
    assert "test/macro_f1" in (run / "report" / "report.md").read_text()


def test_eval_reproduces_the_test_metrics_from_the_best_checkpoint(
    one_epoch_run, train_cache_dir
) -> None:
    """The one subprocess test of ``dermlit-eval``: the run's own metrics, exactly."""
    run = one_epoch_run
    env = {**os.environ, "DERMLIT_CACHE": str(train_cache_dir)}
    cmd = [sys.executable, "-m", "dermlit.evaluate", f"run_dir={run}", "checkpoint=best"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run / "eval" / "test-best"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(
        (run / "metrics.json").read_text()
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "predictions.csv"), pd.read_csv(run / "predictions.csv")
    )
