"""benchmarks/source_shift.py without training: the priors it archives, the table it prints,
and that an evaluation-only arm re-evaluates the trained run into its own directory."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from dermlit.config import compose_config
from dermlit.constants import CLASSES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "source_shift.py"


@pytest.fixture
def driver(tmp_path: Path, monkeypatch):
    spec = importlib.util.spec_from_file_location("source_shift", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "REPO", tmp_path)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "docs" / "results" / "source_shift")
    monkeypatch.setattr(module, "RUNS", tmp_path / "outputs" / "source_shift")
    monkeypatch.setattr(module.study_runs, "commit", lambda repo, paths, message: None)
    return module


def test_every_benchmark_is_an_experiment() -> None:
    spec = importlib.util.spec_from_file_location("source_shift", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for benchmark, experiment in module.BENCHMARKS.items():
        cfg = compose_config("train", [f"experiment={experiment}"])
        held = cfg.data.split.test_sources if cfg.data.split is not None else None
        assert (held is None) == (benchmark == "indomain"), benchmark


def test_priors_and_table(driver, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    labels = {"train": ["nv"] * 6 + ["mel"] * 2, "test": ["nv", "mel", "bcc", "bcc"]}
    rows = [(f"i{s}{k}", s, label) for s, ls in labels.items() for k, label in enumerate(ls)]
    pd.DataFrame(rows, columns=["image_id", "split", "label"]).to_csv(run / "splits.csv")
    dest = driver.RESULTS / "loso_rosendahl" / "baseline"
    dest.mkdir(parents=True)
    driver.write_priors(run, dest)
    priors = json.loads((dest / "priors.json").read_text())
    assert priors["train"]["nv"] == 0.75 and priors["test"]["bcc"] == 0.5
    # TV = 0.5 * (|0.75-0.25| + |0.25-0.25| + |0-0.5|) = 0.5
    assert priors["total_variation"] == pytest.approx(0.5)
    metrics = {"test/macro_f1": 0.41, "test/macro_f1_ci_low": 0.35, "test/macro_f1_ci_high": 0.47}
    metrics |= {f"test/recall_{c}": 0.1 * i for i, c in enumerate(CLASSES)}
    metrics |= {"test/balanced_accuracy": 0.5, "test/recall_mel": 0.6, "test/ece": 0.2}
    metrics |= {"val/macro_f1": 0.55}
    (dest / "metrics.json").write_text(json.dumps(metrics))
    text = driver.table()
    assert "### loso_rosendahl" in text
    assert "| baseline | 0.550 | 0.410 [0.350, 0.470] | 0.500 | 0.600 | 0.200 |" in text
    assert "| 0.200 | 0.000 | 0.100 | 0.200 | 0.300 | 0.600 |" in text  # ece, per-class recall
    assert "| test - train | +0.000 | +0.500 |" in text  # akiec, bcc
    assert "Total-variation distance train vs test: 0.500." in text
    index = pd.read_csv(driver.RESULTS / "runs.csv")
    assert index.loc[0, "benchmark"] == "loso_rosendahl" and index.loc[0, "prior_tv"] == 0.5


def test_eval_arm_writes_into_its_own_directory(driver, monkeypatch) -> None:
    base = driver.RUNS / "indomain" / "baseline"
    assert not driver.eval_one("indomain", "adabn")  # no trained run yet: skipped
    (base / "checkpoints").mkdir(parents=True)
    (driver.RESULTS / "indomain" / "baseline").mkdir(parents=True)
    (driver.RESULTS / "indomain" / "baseline" / "priors.json").write_text("{}")
    seen = []

    def fake_timed(repo, cmd, log_path):
        seen.append(cmd)
        out = Path(next(a for a in cmd if a.startswith("output_dir=")).split("=", 1)[1])
        out.mkdir(parents=True)
        (out / "metrics.json").write_text("{}")
        (out / "predictions.csv").write_text("image\n")
        return 0, {"wall_s": 1.0, "user_s": 1.0, "sys_s": 0.0}

    monkeypatch.setattr(driver.study_runs, "timed", fake_timed)
    assert driver.eval_one("indomain", "adabn")
    cmd = seen[0]
    assert cmd[1:3] == ["-m", "dermlit.evaluate"]
    assert f"run_dir={base}" in cmd and "evaluation.adabn=true" in cmd
    out = Path(next(a for a in cmd if a.startswith("output_dir=")).split("=", 1)[1])
    assert out != base and not (base / "metrics.json").exists()
    archived = driver.RESULTS / "indomain" / "adabn"
    assert (archived / "metrics.json").is_file() and (archived / "priors.json").is_file()
    assert json.loads((archived / "time.json").read_text())["re_evaluates"] == "indomain/baseline"
    seen.clear()
    assert driver.eval_one("indomain", "adabn") and not seen  # archived: resumable, skipped
