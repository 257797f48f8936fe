"""``dermlit predict`` and ``dermlit export`` on a tiny trained run (TTA + post-hoc bias +
temperature): the CSV reproduces the run's own test predictions, decisions and conformal sets
computed independently; ONNX gives the same CSV; bad input is listed or refused in one line."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from tiny_run import TINY_RUN

from dermlit.cli import main
from dermlit.constants import CLASSES, ISIC_COLUMNS
from dermlit.evaluation.predictions import read_predictions
from dermlit.evaluation.settings import load_cost

REPO = Path(__file__).resolve().parents[2]
TINY = [
    *TINY_RUN,
    "bootstrap_resamples=50",
    "tta=flips",
    "posthoc=class_bias",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_run) -> Iterator[tuple[Path, Path]]:
    """(run directory, folder of the synthetic source's JPEGs), trained in-process."""
    run_dir = tmp_path_factory.mktemp("predict-run") / "run"
    with trained_run(run_dir, *TINY) as (cfg, _):
        yield run_dir, Path(cfg.data.source.root) / "images"


def case_csv(run, tmp_path: Path, n: int | None = None) -> tuple[Path, pd.DataFrame]:
    """A CSV naming the run's test images by id (ISIC style, no suffix)."""
    splits = pd.read_csv(run[0] / "splits.csv")
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    test = test if n is None else test.head(n)
    path = tmp_path / "cases.csv"
    pd.DataFrame({"image": test["image_id"]}).to_csv(path, index=False)
    return path, test


def predict(*args: str) -> None:
    assert main(["predict", *map(str, args), "--no-progress"]) == 0


def conformal_sets(val_p: np.ndarray, val_t: np.ndarray, p: np.ndarray, alpha: float):
    """Label-conditional split conformal by hand: q_c = the ceil((n_c+1)(1-alpha))-th smallest
    of 1 - p_c over validation images of class c; c in the set iff 1 - p_c <= q_c."""
    q = np.full(len(CLASSES), np.inf)
    for c in range(len(CLASSES)):
        scores = np.sort(1 - val_p[val_t == c, c])
        k = math.ceil((len(scores) + 1) * (1 - alpha) - 1e-9)
        if k <= len(scores):
            q[c] = scores[k - 1]
    return (1 - p) <= q


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    z = np.log(np.maximum(probs, 1e-12)) / temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_predict_reproduces_the_runs_test_predictions(run, tmp_path: Path) -> None:
    run_dir, images = run
    cases, test = case_csv(run, tmp_path)
    out = tmp_path / "out.csv"
    predict(run_dir, cases, "--images", images, "--out", out, "--batch-size", "16")
    table = pd.read_csv(out, keep_default_na=False)
    expected_cols = ["image", *ISIC_COLUMNS, "diagnosis", "decision", "refer", "refer_reason"]
    assert list(table.columns[:12]) == expected_cols
    assert list(table.columns[12:14]) == ["prediction_set", "set_size"]
    assert table["image"].tolist() == test["image_id"].tolist()

    # the run's predictions.csv: post-hoc adjusted, before the temperature of metrics.json
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert any(k.startswith("posthoc/bias_") for k in metrics)
    temperature = metrics["test/temperature"]
    ids, run_probs, _ = read_predictions(run_dir / "predictions.csv")
    order = [ids.index(i) for i in table["image"]]
    expected = scaled(run_probs[order], temperature)
    from dermlit.evaluation.predictions import ISIC_ORDER

    got = np.empty_like(expected)
    got[:, ISIC_ORDER] = table[list(ISIC_COLUMNS)].to_numpy(float)
    np.testing.assert_allclose(got, expected, atol=2e-5)  # 6-decimal CSVs on both sides
    assert (table["diagnosis"] == np.asarray(CLASSES)[expected.argmax(1)]).all()

    cfg = yaml.safe_load((run_dir / ".hydra" / "resolved.yaml").read_text())
    cost = load_cost(cfg["evaluation"]["cost"]["name"]).matrix
    assert (table["decision"] == np.asarray(CLASSES)[(got @ cost).argmin(1)]).all()

    _, val_p, val_t = read_predictions(run_dir / "val_predictions.csv")
    sets = conformal_sets(scaled(val_p, temperature), val_t, got, alpha=0.1)
    assert table["set_size"].tolist() == sets.sum(1).tolist()
    assert table["prediction_set"].tolist() == ["|".join(np.asarray(CLASSES)[row]) for row in sets]
    assert (table["error"] == "").all()
    # refer: every referred case gives its reason, the others none
    refer = table["refer"].astype(str) == "True"
    assert ((table["refer_reason"] != "") == refer).all()


def write_odd_images(folder: Path, source: Path) -> None:
    folder.mkdir()
    first = sorted(source.iterdir())[0]
    shutil.copy(first, folder / "ok.jpg")
    with Image.open(first) as img:
        img.convert("L").save(folder / "gray.png")
        img.convert("RGBA").save(folder / "rgba.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "readme.txt").write_text("not an image, ignored")


def test_bad_images_are_listed_converted_and_shown(run, tmp_path: Path, capsys) -> None:
    run_dir, images = run
    folder = tmp_path / "odd"
    write_odd_images(folder, images)
    out, gallery = tmp_path / "out.csv", tmp_path / "gallery.html"
    predict(run_dir, folder, "--out", out, "--html", gallery)
    table = pd.read_csv(out, keep_default_na=False).set_index("image")
    assert sorted(table.index) == ["broken.jpg", "gray.png", "ok.jpg", "rgba.png"]
    assert "not an image PIL can read" in table.loc["broken.jpg", "error"]
    assert table.loc["broken.jpg", "MEL"] == "" and str(table.loc["broken.jpg", "refer"]) == "True"
    assert "grayscale (L) converted" in table.loc["gray.png", "note"]
    assert "alpha channel dropped" in table.loc["rgba.png", "note"]
    # RGBA of an RGB image: dropping alpha gives the RGB image back
    for col in ISIC_COLUMNS:
        assert float(table.loc["rgba.png", col]) == pytest.approx(
            float(table.loc["ok.jpg", col]), abs=0.05
        )
    printed = capsys.readouterr().out
    assert "1 image(s) could not be read (broken.jpg)" in printed
    # the folder's text files are not predicted: named, not dropped without a word
    assert (
        f"{folder}: entries not read as images: 1 (readme.txt (suffix .txt is not an image"
        in printed
    )
    page = gallery.read_text()
    assert page.count('class="card') == 4 and page.count("data:image/jpeg;base64,") == 3
    assert page.count('class="top3"') == 3 and "not an image PIL can read" in page


def refused(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *map(str, args), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_bad_input_is_one_clear_line(run, tmp_path: Path, capsys) -> None:
    run_dir, images = run
    out = tmp_path / "out.csv"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert "no images" in refused(capsys, run_dir, tmp_path / "empty", "--out", out)
    assert "--batch-size and --workers must be >= 1" in refused(
        capsys, run_dir, images, "--out", out, "--batch-size", "0"
    )
    pd.DataFrame({"file": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    err = refused(capsys, run_dir, tmp_path / "bad.csv", "--images", images, "--out", out)
    assert "needs an 'image' column" in err
    err = refused(capsys, run_dir, tmp_path / "bad.csv", "--out", out)
    assert "needs an 'image' column" in err
    # a run directory without its checkpoint
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.ckpt"))
    err = refused(capsys, copy, images, "--out", out)
    assert "has no usable checkpoint" in err and str(copy) in err
    assert "not a dermlit run directory" in refused(capsys, tmp_path, images, "--out", out)


def test_export_and_onnx_predict_give_the_same_csv(run, tmp_path: Path, capsys) -> None:
    run_dir, images = run
    cases, _ = case_csv(run, tmp_path, n=40)
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(onnx_file)]) == 0
    eager, exported = tmp_path / "eager.csv", tmp_path / "onnx.csv"
    predict(run_dir, cases, "--images", images, "--out", eager)
    predict(run_dir, cases, "--images", images, "--out", exported, "--onnx", onnx_file)
    a = pd.read_csv(eager, keep_default_na=False)
    b = pd.read_csv(exported, keep_default_na=False)
    np.testing.assert_allclose(
        a[list(ISIC_COLUMNS)].to_numpy(float), b[list(ISIC_COLUMNS)].to_numpy(float), atol=1e-4
    )
    for col in ("image", "diagnosis", "decision", "prediction_set", "set_size", "refer"):
        assert a[col].tolist() == b[col].tolist(), col

    # the file's metadata: the run's decision data
    from dermlit.export.onnx import read_metadata
    from dermlit.inference.run import load_decisions

    meta, decisions = read_metadata(onnx_file), load_decisions(run_dir)
    assert meta.config_hash == decisions.config_hash and meta.image_size == 32
    assert meta.tta_views == ["identity", "hflip", "vflip", "rot180"]
    assert meta.temperature == pytest.approx(decisions.temperature)
    np.testing.assert_allclose(meta.logit_bias, decisions.logit_bias, atol=1e-6)
    np.testing.assert_allclose(meta.thresholds.thresholds, decisions.conformal.thresholds)

    # ONNX of another run (here: the same run with another seed in its config) is refused
    other = tmp_path / "other"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("*.ckpt"))
    resolved = other / ".hydra" / "resolved.yaml"
    resolved.write_text(resolved.read_text().replace("seed: 0", "seed: 1", 1))
    err = refused(capsys, other, cases, "--images", images, "--out", eager, "--onnx", onnx_file)
    assert "was exported from a run with config hash" in err


def test_export_to_an_existing_directory_is_one_clear_line(run, tmp_path: Path, capsys) -> None:
    """--out names the file to write: an existing directory is refused by name, before the
    export (not an IsADirectoryError traceback at its end)."""
    run_dir, _ = run
    folder = tmp_path / "exports"
    folder.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_dir), "--format", "onnx", "--out", str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("dermlit export: ")
    assert f"--out {folder} is a directory" in err and str(folder / "model.onnx") in err
    assert list(folder.iterdir()) == []


def test_onnx_equals_eager_on_real_images(run, ham_dir: Path) -> None:
    """The exported run against its PyTorch module on real HAM10000 JPEGs (skipped without)."""
    from dermlit.export.onnx import OnnxClassifier
    from dermlit.export_cli import export_run
    from dermlit.inference.inputs import decode
    from dermlit.inference.predictor import EagerRunner
    from dermlit.inference.run import load_decisions
    from dermlit.inference.weights import deployable_model

    run_dir, _ = run
    path = export_run(run_dir, run_dir / "export" / "real.onnx")
    decisions = load_decisions(run_dir)
    files = sorted((ham_dir / "images").glob("*.jpg"))[:24]
    pixels = np.stack([decode(f, decisions.image_size)[0] for f in files])
    eager = EagerRunner(deployable_model(decisions))(pixels)
    np.testing.assert_allclose(OnnxClassifier(path)(pixels), eager, atol=1e-4)
