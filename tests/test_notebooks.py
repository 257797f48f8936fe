"""The analysis notebooks (jupytext percent scripts) run headless and compute the right numbers.

Percent scripts are plain Python, so each notebook runs in-process with ``runpy`` (no Jupyter
kernel needed, imports shared with the test session) under the Agg backend: notebook 1 in smoke
mode on a tiny generated synthetic set, notebook 2 on a multirun directory built here by hand
(no training). Their globals are checked against independent computations.
"""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy import stats

from dermlit.constants import CLASSES, ISIC_COLUMNS
from dermlit.evaluation.predictions import predictions_frame, write_predictions

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, monkeypatch: pytest.MonkeyPatch, out: Path, **env: str) -> dict:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("DERMLIT_NOTEBOOK_OUT", str(out))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    matplotlib.use("Agg")
    return runpy.run_path(str(NOTEBOOKS / name), run_name="__main__")


def assert_pngs(out: Path, names: list[str]) -> None:
    for name in names:
        with Image.open(out / f"{name}.png") as img:
            assert img.format == "PNG" and min(img.size) > 100, name


def test_explore_notebook_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    g = run_notebook(
        "01_explore_ham10000.py",
        monkeypatch,
        out,
        DERMLIT_NOTEBOOK_SMOKE="1",
        DERMLIT_CACHE=str(tmp_path / "cache"),
    )
    assert g["SYNTHETIC"] and g["DATA_ROOT"] == tmp_path / "cache" / "notebook-synthetic"
    assert_pngs(
        out,
        [
            "class_counts",
            "images_per_lesion",
            "age_sex_by_class",
            "localization_by_class",
            "augmentation_gallery",
        ],
    )
    meta = pd.read_csv(g["DATA_ROOT"] / "HAM10000_metadata.csv")
    assert len(meta) == 200
    expected = meta["dx"].value_counts().reindex(list(CLASSES), fill_value=0)
    saved = pd.read_csv(out / "class_counts.csv", index_col="class")
    assert saved.index.tolist() == list(CLASSES)
    assert saved["images"].tolist() == expected.tolist()
    assert saved["share"].sum() == pytest.approx(1.0)
    assert saved.loc["df", "largest / this"] == pytest.approx(expected.max() / expected["df"])
    lesions = pd.read_csv(out / "lesions_by_class.csv", index_col=0)
    by_lesion = meta.groupby("lesion_id")["dx"].first().value_counts()
    assert lesions["lesions"].tolist() == by_lesion.reindex(list(CLASSES)).tolist()
    # gallery: PER_CLASS images of each class; `none` returns them unchanged, the others do not
    columns, shown = g["columns"], g["shown"]
    assert shown["label"].tolist() == [c for c in CLASSES for _ in range(g["PER_CLASS"])]
    assert (columns["none"] == columns["original"]).all()
    assert not (columns["standard #1"] == columns["original"]).all()
    assert columns["dermoscopy #1"].shape == columns["original"].shape


# --- notebook 2 ----------------------------------------------------------------------------
N_TEST = 70


def make_job(sweep: Path, num: int, overrides: list[str], f1: float | None, seed: int) -> Path:
    """A job directory with the files the notebook reads; f1=None: a job that never finished."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    if f1 is None:
        return job
    rng = np.random.default_rng(num)
    recalls = {f"test/recall_{c}": round(float(rng.uniform()), 4) for c in CLASSES}
    metrics = {"test/macro_f1": f1, "test/macro_f1_ci_low": f1 - 0.07}
    metrics |= {"test/macro_f1_ci_high": f1 + 0.05, "test/ece": 0.1, **recalls}
    (job / "metrics.json").write_text(json.dumps(metrics))
    probs = rng.dirichlet(np.full(len(CLASSES), 0.5), size=N_TEST)
    targets = rng.integers(0, len(CLASSES), size=N_TEST)
    targets[:3] = -1  # unlabelled rows are left out of the reliability diagram
    write_predictions(job / "predictions.csv", predictions_frame(
        [f"ISIC_{num:03d}{i:04d}" for i in range(N_TEST)], probs, targets
    ))  # fmt: skip
    return job


#: (loss, sampler) -> macro-F1 per seed; the job numbers follow this order
SWEEP = {
    ("ce", "shuffle"): [0.40, 0.46],
    ("ce", "class_balanced"): [0.52, 0.50],
    ("focal", "shuffle"): [0.30],
    ("focal", "class_balanced"): [0.61, 0.65, 0.60],
}


def build_sweep(root: Path, sweep: dict) -> Path:
    num = 0
    for (loss, sampler), f1s in sweep.items():
        for seed, f1 in enumerate(f1s):
            make_job(
                root, num, ["data.image_size=32", f"loss={loss}", f"sampler={sampler}"], f1, seed
            )
            num += 1
    make_job(root, num, ["data.image_size=32", "loss=focal", "sampler=shuffle"], None, 1)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def correct_from_csvs(jobs: list[Path]) -> tuple[int, int]:
    """(labelled predictions, correct top-1) read straight from the CSVs with pandas."""
    n = correct = 0
    for job in jobs:
        frame = pd.read_csv(job / "predictions.csv", keep_default_na=False)
        frame = frame[frame["label"] != ""]
        top = frame[list(ISIC_COLUMNS)].idxmax(axis=1).str.lower()
        n, correct = n + len(frame), correct + int((top == frame["label"]).sum())
    return n, correct


def test_sweep_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep, out = build_sweep(tmp_path / "multirun", SWEEP), tmp_path / "out"
    g = run_notebook("02_sweep_analysis.py", monkeypatch, out, DERMLIT_SWEEP_DIR=str(sweep))
    assert_pngs(out, ["summary", "macro_f1_loss_sampler", "recall_heatmap", "reliability"])

    grid = g["grid"].set_index(["loss", "variant"])
    for (loss, sampler), f1s in SWEEP.items():
        cell = grid.loc[(loss, sampler)]
        assert cell["n_seeds"] == len(f1s)
        assert cell["mean"] == pytest.approx(np.mean(f1s))
        if len(f1s) > 1:
            half = stats.t.ppf(0.975, len(f1s) - 1) * np.std(f1s, ddof=1) / math.sqrt(len(f1s))
            assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(
                (np.mean(f1s) - half, np.mean(f1s) + half)
            )
            assert cell["interval"] == "seeds (t)"
        else:  # one seed: the bootstrap CI written in its metrics.json
            assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(
                (f1s[0] - 0.07, f1s[0] + 0.05)
            )
            assert cell["interval"] == "bootstrap (1 seed)"
    saved = pd.read_csv(out / "macro_f1_loss_sampler.csv")
    assert len(saved) == len(SWEEP)

    # recall heat map: mean over seeds of each job's metrics.json, rows best first
    recall = g["recall_matrix"]
    assert recall.index[0] == "loss=focal,sampler=class_balanced"
    assert recall.index[-1] == "loss=focal,sampler=shuffle"
    jobs = sorted(
        (d for d in sweep.iterdir() if (d / "metrics.json").is_file()), key=lambda d: int(d.name)
    )
    ce_cb = [json.loads((d / "metrics.json").read_text()) for d in jobs[2:4]]
    for c in CLASSES:
        want = np.mean([m[f"test/recall_{c}"] for m in ce_cb])
        assert recall.loc["loss=ce,sampler=class_balanced", c] == pytest.approx(want)

    # best and baseline; their reliability curves count every labelled prediction once
    assert g["BEST"] == "loss=focal,sampler=class_balanced"
    assert g["BASELINE"] == "loss=ce,sampler=shuffle"
    for role, job_dirs in (("best", jobs[5:8]), ("baseline", jobs[0:2])):
        _, curve, _ = g["reliability"][role]
        n, correct = correct_from_csvs(job_dirs)
        assert curve.counts.sum() == n == len(job_dirs) * (N_TEST - 3)
        assert np.nansum(curve.accuracy * curve.counts) == pytest.approx(correct)


def test_sweep_notebook_baseline_falls_back_to_worst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_ce = {k: v for k, v in SWEEP.items() if k != ("ce", "shuffle")}
    sweep, out = build_sweep(tmp_path / "multirun", no_ce), tmp_path / "out"
    g = run_notebook("02_sweep_analysis.py", monkeypatch, out, DERMLIT_SWEEP_DIR=str(sweep))
    assert g["BASELINE"] == "loss=focal,sampler=shuffle"
    assert g["BASELINE_REASON"].startswith("lowest macro-F1")


def test_sweep_notebook_without_sweep_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DERMLIT_SWEEP_DIR", raising=False)
    monkeypatch.setenv("DERMLIT_OUTPUT", str(tmp_path / "outputs"))
    with pytest.raises(FileNotFoundError, match="No multirun directory.*DERMLIT_SWEEP_DIR"):
        run_notebook("02_sweep_analysis.py", monkeypatch, tmp_path / "out")
