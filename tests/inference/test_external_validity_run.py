"""The external-validity levers on a tiny trained run: a run trained with Shades-of-Gray colour
constancy (and the EM prior-shift rule) gives the same probabilities through its evaluation,
``dermlit predict`` (eager) and its ONNX export; AdaBN in dermlit-eval and at the end of
dermlit-train is recorded and never touches the checkpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_run import TINY_RUN

from dermlit.cli import main
from dermlit.constants import CLASSES, ISIC_COLUMNS
from dermlit.evaluation.predictions import ISIC_ORDER, read_predictions

TINY = [*TINY_RUN, "bootstrap_resamples=50", "colour_constancy=shades_of_gray"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_run) -> Iterator[tuple[Path, Path]]:
    run_dir = tmp_path_factory.mktemp("cc-run") / "run"
    with trained_run(run_dir, *TINY, "posthoc=class_bias_prior_em") as (cfg, _):
        assert cfg.data.colour_constancy._target_.endswith("ShadesOfGray")
        yield run_dir, Path(cfg.data.source.root) / "images"


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    z = np.log(np.maximum(probs, 1e-12)) / temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def predicted(run, tmp_path: Path, *extra: str) -> pd.DataFrame:
    run_dir, images = run
    splits = pd.read_csv(run_dir / "splits.csv")
    cases = tmp_path / "cases.csv"
    pd.DataFrame({"image": splits.loc[splits["split"] == "test", "image_id"]}).to_csv(
        cases, index=False
    )
    out = tmp_path / f"out{len(extra)}.csv"
    args = ["predict", str(run_dir), str(cases), "--images", str(images), "--out", str(out)]
    assert main([*args, "--no-progress", *extra]) == 0
    return pd.read_csv(out, keep_default_na=False)


def probs_of(table: pd.DataFrame) -> np.ndarray:
    got = np.empty((len(table), len(CLASSES)))
    got[:, ISIC_ORDER] = table[list(ISIC_COLUMNS)].to_numpy(float)
    return got


def test_predict_and_export_match_evaluation(run, tmp_path: Path, train_cache_dir) -> None:
    run_dir, _ = run
    assert list((train_cache_dir / "images").glob("*-sog6.npy"))  # the cache holds it, keyed
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "posthoc/target_prior_nv" in metrics and "posthoc/bias_nv" in metrics
    ids, run_probs, _ = read_predictions(run_dir / "predictions.csv")
    eager = predicted(run, tmp_path)
    expected = scaled(
        run_probs[[ids.index(i) for i in eager["image"]]], metrics["test/temperature"]
    )
    np.testing.assert_allclose(probs_of(eager), expected, atol=2e-5)

    # without the colour constancy in front, the same weights give other probabilities
    from dermlit.inference.predictor import EagerRunner, predict_images
    from dermlit.inference.run import load_decisions
    from dermlit.inference.weights import deployable_model

    model = deployable_model(load_decisions(run_dir))
    assert type(model.colour_constancy).__name__ == "ShadesOfGray"
    from dermlit.inference.inputs import InputImage

    items = [InputImage(i, run[1] / f"{i}.jpg") for i in eager["image"]]
    model.colour_constancy = type(model.colour_constancy).__mro__[1]()  # NoColourConstancy
    plain = predict_images(items, EagerRunner(model), 32, progress=False).probs
    assert np.abs(plain - probs_of(eager)).max() > 1e-3

    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(onnx_file)]) == 0
    exported = predicted(run, tmp_path, "--onnx", str(onnx_file))
    np.testing.assert_allclose(probs_of(exported), probs_of(eager), atol=1e-4)
    assert (exported["diagnosis"] == eager["diagnosis"]).all()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adabn_in_dermlit_eval(run, eval_in_process) -> None:
    run_dir, _ = run
    checkpoints = {p: sha(p) for p in (run_dir / "checkpoints").glob("*.ckpt")}
    out = run_dir / "eval" / "adabn"
    evaluation = eval_in_process(
        f"run_dir={run_dir}",
        "evaluation.adabn=true",
        "posthoc=class_bias_prior_em",  # the run's rule: validation must come out the same
        "bootstrap_resamples=50",
        f"output_dir={out}",
    )
    n_test = int((pd.read_csv(run_dir / "splits.csv")["split"] == "test").sum())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/adabn"] is True and metrics["test/adabn_images"] == n_test
    assert evaluation.metrics["test/adabn_images"] == n_test
    assert "AdaBN applied" in (out / "report" / "report.md").read_text()
    assert {p: sha(p) for p in checkpoints} == checkpoints  # the checkpoints are untouched
    ids, adapted, _ = read_predictions(out / "predictions.csv")
    ids0, plain, _ = read_predictions(run_dir / "predictions.csv")
    assert ids == ids0 and np.abs(adapted - plain).max() > 1e-3
    # the validation predictions (temperature, post-hoc rule) keep the trained statistics
    _, val_adapted, _ = read_predictions(out / "val_predictions.csv")
    _, val_plain, _ = read_predictions(run_dir / "val_predictions.csv")
    np.testing.assert_allclose(val_adapted, val_plain, atol=2e-6)


@pytest.mark.slow  # a training of its own (~25 s on the shared 2 cores)
def test_adabn_at_the_end_of_training(tmp_path: Path, train_in_process) -> None:
    run_dir = tmp_path / "run"
    _, metrics = train_in_process(
        run_dir, *TINY_RUN, "bootstrap_resamples=50", "evaluation.adabn=true"
    )
    n_test = int((pd.read_csv(run_dir / "splits.csv")["split"] == "test").sum())
    assert metrics["test/adabn"] is True and metrics["test/adabn_images"] == n_test
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test/adabn_images"] == n_test
