"""``dermlit-eval`` on a tiny trained run: checkpoint weights, predictions.csv, other datasets."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from sklearn.metrics import balanced_accuracy_score, f1_score
from tiny_run import TINY_RUN

from dermlit.constants import CLASSES, ISIC_COLUMNS
from dermlit.data.sources import HAM10000Source
from dermlit.errors import InputError
from dermlit.evaluate import evaluate
from dermlit.evaluation.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]
TINY = [*TINY_RUN, "bootstrap_resamples=100"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_run) -> Iterator[tuple[Path, dict]]:
    """A tiny run trained in-process (``train(cfg)`` as ``dermlit-train`` runs it)."""
    run_dir = tmp_path_factory.mktemp("eval-run") / "run"
    with trained_run(run_dir, *TINY, "evaluation.figures=true"):  # the one run with figures
        yield run_dir, json.loads((run_dir / "metrics.json").read_text())


def eval_cfg(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("eval", overrides=["bootstrap_resamples=100", *overrides])


def test_training_writes_the_full_evaluation(run) -> None:
    run_dir, metrics = run
    assert metrics["test/temperature"] > 0
    for name in ("ece", "mce", "classwise_ece", "brier", "nll"):
        assert f"test/{name}" in metrics and f"test/{name}_ts" in metrics
    for rule in ("argmax", "bayes"):
        assert f"test/{rule}_mean_cost" in metrics
    ids, _, _ = read_predictions(run_dir / "val_predictions.csv")
    splits = pd.read_csv(run_dir / "splits.csv")
    assert sorted(ids) == sorted(splits.loc[splits["split"] == "val", "image_id"])
    html = (run_dir / "report" / "report.html").read_text()
    # six figures and the Grad-CAM gallery of the errors (the weights are at hand)
    assert html.count("data:image/png;base64,") == 7
    assert "Explanations of errors (Grad-CAM)" in html


def test_eval_with_raw_weights_and_missing_ema(run) -> None:
    """(tests/test_train.py runs dermlit-eval through its entry point; here in-process.)"""
    run_dir, metrics = run
    cfg = eval_cfg(f"run_dir={run_dir}", "weights=raw")
    out = run_dir / "eval" / "test-best-raw"
    assert Path(cfg.output_dir) == out
    evaluate(cfg)
    # a run without EMA: raw weights are the checkpoint's state_dict, i.e. what was tested
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "report" / "report.html").is_file()
    with pytest.raises(ValueError, match="holds no EMA weights"):
        evaluate(eval_cfg(f"run_dir={run_dir}", "weights=ema", f"output_dir={run_dir}/x"))


def test_an_unusable_checkpoint_is_an_input_error_naming_it(run, tmp_path: Path) -> None:
    """Refused in one line by the CLIs (InputError), not a traceback with exit status 1: it was
    a FileNotFoundError for a missing file and a run without checkpoints (debug=fdr)."""
    run_dir, _ = run
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    no_checkpoints = tmp_path / "fdr_run"  # what a debug=fdr run leaves: no checkpoints/
    shutil.copytree(run_dir / ".hydra", no_checkpoints / ".hydra")
    cases = [
        (run_dir, str(tmp_path / "nope.ckpt"), "checkpoint not found: .*nope.ckpt"),
        (run_dir, str(not_a_checkpoint), "notes.ckpt is not a readable PyTorch checkpoint"),
        (run_dir, "snapshots", "no snapshot-epochNN.ckpt in"),
        (no_checkpoints, "best", "no best-.*debug=fdr, which keeps no checkpoint"),
    ]
    for k, (where, which, message) in enumerate(cases):
        cfg = eval_cfg(f"run_dir={where}", f"checkpoint={which}", f"output_dir={tmp_path}/{k}")
        with pytest.raises(InputError, match=message):
            evaluate(cfg)


def test_eval_from_predictions_csv(run, tmp_path: Path) -> None:
    run_dir, metrics = run
    cfg = eval_cfg(
        f"predictions={run_dir}/predictions.csv",
        f"val_predictions={run_dir}/val_predictions.csv",
        "evaluation/cost=uniform",
    )
    assert cfg.output_dir == str(run_dir / "eval" / "predictions-test")
    m = evaluate(cfg).metrics
    for key in ("test/macro_f1", "test/balanced_accuracy", "test/recall_mel_ci_low"):
        assert m[key] == pytest.approx(metrics[key], abs=1e-6)  # argmax is the same
    # the CSV holds the probabilities exactly: calibration is fitted to the same numbers
    assert m["test/temperature"] == pytest.approx(metrics["test/temperature"], rel=1e-6)
    assert m["test/ece_ts"] == pytest.approx(metrics["test/ece_ts"], abs=1e-6)
    # uniform costs: Bayes = argmax, the mean cost = the error rate
    assert m["test/bayes_mean_cost"] == pytest.approx(1 - m["test/accuracy"])
    assert (run_dir / "eval" / "predictions-test" / "report" / "report.md").is_file()


def test_eval_from_predictions_with_a_metadata_table_reports_per_source(
    run, tmp_path: Path
) -> None:
    """The predictions format has no source column: metadata.csv joins it back, so a decision
    rule re-evaluated from archived predictions keeps the per-source metrics of the run."""
    run_dir, metrics = run
    resolved = yaml.safe_load((run_dir / ".hydra" / "resolved.yaml").read_text())
    index, _ = HAM10000Source(resolved["data"]["source"]["root"]).load()
    table = tmp_path / "metadata.csv"
    index.sample(frac=1.0, random_state=0).to_csv(table, index=False)  # any row order
    m = evaluate(
        eval_cfg(
            f"predictions={run_dir}/predictions.csv",
            f"val_predictions={run_dir}/val_predictions.csv",
            f"metadata.csv={table}",
            "metadata.source_column=dataset",
            f"output_dir={tmp_path}/eval",
        )
    ).metrics
    per_source = {k: v for k, v in metrics.items() if k.startswith("test/source/")}
    assert per_source and {k: m[k] for k in per_source} == pytest.approx(per_source, abs=1e-6)
    # and against scikit-learn on one source's rows
    ids, probs, targets = read_predictions(run_dir / "predictions.csv")
    source = index.set_index("image_id").loc[ids, "dataset"].to_numpy()
    name = source[0]
    rows = source == name
    assert m[f"test/source/{name}/balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(targets[rows], probs[rows].argmax(1))
    )
    missing = tmp_path / "missing.csv"
    index[~index["image_id"].isin(ids[:3])].to_csv(missing, index=False)
    with pytest.raises(InputError, match=r"no row for 3 of \d+ predicted image"):
        evaluate(eval_cfg(f"predictions={run_dir}/predictions.csv", f"metadata.csv={missing}"))
    with pytest.raises(InputError, match=r"lacks column\(s\) \['site'\]"):
        evaluate(
            eval_cfg(
                f"predictions={run_dir}/predictions.csv",
                f"metadata.csv={table}",
                "metadata.source_column=site",
            )
        )


def test_eval_with_tta_and_posthoc_adjustment_fitted_on_val(run) -> None:
    """TTA changes the predictions; the logit adjustment is fitted on val and applied to both;
    val/* are the final decisions on validation (what recipes are selected on)."""
    run_dir, metrics = run
    out = run_dir / "eval" / "tta-la"
    m = evaluate(
        eval_cfg(f"run_dir={run_dir}", "tta=dihedral", "posthoc=logit_adjust", f"output_dir={out}")
    ).metrics
    assert m["posthoc/tau"] in [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]
    _, plain, _ = read_predictions(run_dir / "predictions.csv")
    _, probs, targets = read_predictions(out / "predictions.csv")
    assert not np.allclose(plain, probs, atol=1e-4)  # 8 views averaged (and shifted)
    _, val_probs, val_targets = read_predictions(out / "val_predictions.csv")
    pred = val_probs.argmax(1)
    assert m["val/macro_f1"] == pytest.approx(
        f1_score(val_targets, pred, average="macro"), abs=1e-9
    )
    assert m["val/balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(val_targets, pred), abs=1e-9
    )
    assert m["test/macro_f1"] == pytest.approx(
        f1_score(targets, probs.argmax(1), average="macro"), abs=1e-9
    )
    with pytest.raises(ValueError, match="fitted on validation"):
        evaluate(eval_cfg(f"predictions={run_dir}/predictions.csv", "posthoc=logit_adjust"))


def test_an_archived_run_keeps_the_train_counts_for_logit_adjustment(run, tmp_path: Path) -> None:
    """dermlit-train writes class_counts.json (the TRAIN images per class, from splits.csv);
    dermlit archive keeps it instead of splits.csv, and dermlit-eval predictions= of the
    archive fits posthoc=logit_adjust as from the run; without it, one line naming both files."""
    from dermlit.cli import main

    run_dir, _ = run
    splits = pd.read_csv(run_dir / "splits.csv")
    train = splits.loc[splits["split"] == "train", "label"].value_counts()
    counts = json.loads((run_dir / "class_counts.json").read_text())
    assert counts == {c: int(train.get(c, 0)) for c in CLASSES} and sum(counts.values()) > 0
    kept = tmp_path / "kept"
    assert main(["archive", str(run_dir), str(kept)]) == 0
    assert (kept / "class_counts.json").is_file() and not (kept / "splits.csv").exists()

    def logit_adjusted(folder: Path, out: str) -> dict:
        return evaluate(
            eval_cfg(
                f"predictions={folder}/predictions.csv",
                f"val_predictions={folder}/val_predictions.csv",
                "posthoc=logit_adjust",
                f"output_dir={tmp_path / out}",
            )
        ).metrics

    from_run, from_archive = logit_adjusted(run_dir, "run"), logit_adjusted(kept, "kept")
    for key in ("posthoc/tau", "test/macro_f1", "val/macro_f1"):
        assert from_archive[key] == from_run[key], key
    # an evaluation's output keeps the counts it used too, so it can be re-decided in turn
    assert json.loads((tmp_path / "run" / "class_counts.json").read_text()) == counts
    assert json.loads((tmp_path / "kept" / "class_counts.json").read_text()) == counts
    again = logit_adjusted(tmp_path / "kept", "again")
    assert "posthoc/tau" in again
    (kept / "class_counts.json").unlink()
    with pytest.raises(InputError) as refusal:
        logit_adjusted(kept, "none")
    message = str(refusal.value)
    assert "\n" not in message and "needs the TRAIN class counts" in message
    assert str(kept / "splits.csv") in message and str(kept / "class_counts.json") in message
    assert not (tmp_path / "none").exists()  # refused before anything was written
    # a rule without a prior does not need them
    m = evaluate(
        eval_cfg(
            f"predictions={kept}/predictions.csv",
            f"val_predictions={kept}/val_predictions.csv",
            "posthoc=class_bias",
            f"output_dir={tmp_path / 'bias'}",
        )
    ).metrics
    assert any(k.startswith("posthoc/bias_") for k in m)


def test_eval_on_an_isic_csv_and_an_unlabelled_folder(run, tmp_path: Path) -> None:
    run_dir, _ = run
    resolved = yaml.safe_load((run_dir / ".hydra" / "resolved.yaml").read_text())
    index, _ = HAM10000Source(resolved["data"]["source"]["root"]).load()
    ids, probs, targets = read_predictions(run_dir / "predictions.csv")
    chosen = index.set_index("image_id").loc[ids[:40]]
    images = tmp_path / "images"
    images.mkdir()
    for image_id, path in chosen["path"].items():
        shutil.copy(path, images / f"{image_id}.jpg")
    onehot = np.zeros((40, 7))
    onehot[np.arange(40), [ISIC_COLUMNS.index(c.upper()) for c in chosen["label"]]] = 1
    gt = pd.DataFrame(onehot, columns=list(ISIC_COLUMNS))
    gt.insert(0, "image", ids[:40])
    gt.to_csv(tmp_path / "GroundTruth.csv", index=False)

    cfg = eval_cfg(
        f"run_dir={run_dir}",
        "data=isic_csv",
        f"data.source.csv={tmp_path}/GroundTruth.csv",
        f"data.source.images={images}",
    )
    out = Path(cfg.output_dir)
    assert out == run_dir / "eval" / "GroundTruth-best"
    m = evaluate(cfg).metrics
    assert m["test/n_images"] == 40 and "test/temperature" in m
    # the same model and preprocessing as on the run's own test split: the same probabilities
    got_ids, got_probs, got_targets = read_predictions(out / "predictions.csv")
    order = [ids.index(i) for i in got_ids]
    np.testing.assert_allclose(got_probs, probs[order], atol=2e-6)
    np.testing.assert_array_equal(got_targets, targets[order])

    cfg = eval_cfg(f"run_dir={run_dir}", "data=folder", f"data.source.root={images}")
    m = evaluate(cfg).metrics
    assert m == {"test/n_images": 40}
    out = Path(cfg.output_dir)
    assert out == run_dir / "eval" / "images-best"
    _, unl_probs, unl_targets = read_predictions(out / "predictions.csv")
    assert (unl_targets == -1).all() and np.allclose(unl_probs.sum(1), 1, atol=1e-4)
    assert "No labels" in (out / "report" / "report.md").read_text()


def test_eval_on_a_faulty_isic_csv_skips_and_lists_or_refuses(run, tmp_path: Path, capsys) -> None:
    """data.on_error=skip drops the faulty rows and lists them in OUTPUT_DIR/skipped.csv; the
    default refuses with every fault named (one message, exit status 2)."""
    run_dir, _ = run
    resolved = yaml.safe_load((run_dir / ".hydra" / "resolved.yaml").read_text())
    index, _ = HAM10000Source(resolved["data"]["source"]["root"]).load()
    chosen = index.iloc[:20]
    images = tmp_path / "images"
    images.mkdir()
    for image_id, path in chosen.set_index("image_id")["path"].items():
        shutil.copy(path, images / f"{image_id}.jpg")
    gt = pd.DataFrame(0.0, index=range(22), columns=list(ISIC_COLUMNS))
    for k, label in enumerate(chosen["label"]):
        gt.loc[k, label.upper()] = 1.0
    gt.loc[20, "NV"], gt.loc[21, "MEL"] = np.nan, 1.0  # an empty cell; an image not in images/
    gt.insert(0, "image", [*chosen["image_id"], "ISIC_NAN", "ISIC_GONE"])
    gt.to_csv(tmp_path / "gt.csv", index=False)
    args = [
        f"run_dir={run_dir}",
        "data=isic_csv",
        f"data.source.csv={tmp_path}/gt.csv",
        f"data.source.images={images}",
        "bootstrap_resamples=20",
    ]
    out = tmp_path / "skip"
    m = evaluate(eval_cfg(*args, "data.on_error=skip", f"output_dir={out}")).metrics
    assert m["test/n_images"] == 20
    skipped = pd.read_csv(out / "skipped.csv")
    assert dict(zip(skipped["image_id"], skipped["problem"], strict=True)) == {
        "ISIC_NAN": "empty or NaN cell",
        "ISIC_GONE": "missing image file",
    }
    from dermlit.evaluate import main

    sys.argv, saved = ["dermlit-eval", *args, f"output_dir={tmp_path}/raise"], sys.argv
    handlers = logging.getLogger().handlers[:]
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:  # the in-process Hydra run configured logging into capsys's stream: undo it
        sys.argv = saved
        logging.getLogger().handlers[:] = handlers
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert "2 image(s) failed validation" in err and "ISIC_NAN: line 22: NV=''" in err
    assert "ISIC_GONE" in err and "data.on_error=skip" in err
