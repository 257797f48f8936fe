"""Snapshot ensembles: a restarting cosine (``optim=adamw_restarts``), a snapshot at each cycle's
end (``callbacks=ema_snapshots``) and ``test_weights=snapshots``. The run's test predictions are
checked against the members' probabilities averaged by hand, dermlit-eval and dermlit predict
against the run, and the pieces against hand-worked values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.special import softmax
from torch import nn

from dermlit.checkpoints import load_model_weights, resolve_checkpoint, resolve_snapshots
from dermlit.config import cycle_epochs
from dermlit.evaluation.predictions import read_predictions
from dermlit.models.ensemble import SnapshotEnsemble
from dermlit.models.from_run import model_for_checkpoint
from dermlit.models.tta import VIEWS
from tests.tiny_run import TINY_RUN

BASE_LR = 1e-3
SNAPSHOT_RUN = [
    *TINY_RUN,
    "bootstrap_resamples=50",
    "tta=flips",
    "optim=adamw_restarts",
    "trainer.max_epochs=4",
    "optim.scheduler.T_0=2",  # two cycles of two epochs
    "callbacks=ema_snapshots",
    "test_weights=snapshots",
]


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory, trained_run):
    run_dir = tmp_path_factory.mktemp("snapshots") / "run"
    with trained_run(run_dir, *SNAPSHOT_RUN) as (cfg, metrics):
        yield run_dir, cfg, metrics


def test_cycles_restart_and_each_one_ends_in_a_snapshot(snapshot_run) -> None:
    run_dir, cfg, _ = snapshot_run
    assert cfg.optim.scheduler.T_0 == 2 and cfg.callbacks.snapshot_checkpoint.every_n_epochs == 2
    assert [p.name for p in resolve_snapshots(run_dir)] == [
        "snapshot-epoch01.ckpt",
        "snapshot-epoch03.ckpt",
    ]
    # by hand: lr(e) = base * (1 + cos(pi * (e mod T_0) / T_0)) / 2
    # (LearningRateMonitor logs once at each epoch's start, by step, without the epoch)
    log = pd.read_csv(run_dir / "csv" / "metrics.csv").dropna(subset=["lr-AdamW"])
    lrs = log.sort_values("step")["lr-AdamW"].tolist()
    expected = [BASE_LR * (1 + math.cos(math.pi * (e % 2) / 2)) / 2 for e in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    assert resolve_checkpoint(run_dir, "best").name.startswith("best-epoch")


def test_a_snapshot_callback_is_never_the_monitored_checkpoint(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    from dermlit.callbacks.checkpoints import SnapshotCheckpoint, monitored_checkpoint

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/macro_f1", mode="max")
    trainer = SimpleNamespace(checkpoint_callbacks=[SnapshotCheckpoint(tmp_path, 2), best])
    assert monitored_checkpoint(trainer) is best
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        SnapshotCheckpoint(tmp_path, 0)


def member_probs(cfg, path: Path, images: torch.Tensor) -> np.ndarray:
    """One snapshot's TTA probabilities, computed without the ensemble code."""
    model = model_for_checkpoint(cfg.model).eval()
    load_model_weights(model, path)
    with torch.no_grad():
        x = model.prepare(images)
        views = [model.backbone(VIEWS[v](x)).double().softmax(1) for v in cfg.model.tta.views]
    return torch.stack(views).mean(0).numpy()


def test_the_run_tests_the_mean_of_its_snapshots_probabilities(snapshot_run) -> None:
    run_dir, cfg, metrics = snapshot_run
    data = instantiate(cfg.data)
    data.setup("test")
    dataset = data.dataset("test")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    members = [member_probs(cfg, p, images) for p in resolve_snapshots(run_dir)]
    assert np.abs(members[0] - members[1]).max() > 1e-3  # two different models
    ids, probs, _ = read_predictions(run_dir / "predictions.csv")
    assert ids == data.frame("test")["image_id"].astype(str).tolist()
    np.testing.assert_allclose(probs, np.mean(members, axis=0), atol=2e-6)  # 6-decimal CSV
    assert metrics["test/macro_f1"] == pytest.approx(
        json.loads((run_dir / "metrics.json").read_text())["test/macro_f1"]
    )


def test_dermlit_eval_reproduces_the_ensembles_test(snapshot_run, eval_in_process, tmp_path):
    run_dir, _, metrics = snapshot_run
    out = tmp_path / "eval"
    evaluation = eval_in_process(
        f"run_dir={run_dir}", "checkpoint=snapshots", "bootstrap_resamples=50", f"output_dir={out}"
    )
    assert evaluation.metrics["test/macro_f1"] == pytest.approx(metrics["test/macro_f1"])
    _, run_probs, _ = read_predictions(run_dir / "predictions.csv")
    _, eval_probs, _ = read_predictions(out / "predictions.csv")
    np.testing.assert_allclose(eval_probs, run_probs, atol=2e-6)
    # one member alone is another model
    eval_in_process(
        f"run_dir={run_dir}",
        f"checkpoint={resolve_snapshots(run_dir)[0]}",
        "bootstrap_resamples=50",
        f"output_dir={tmp_path / 'single'}",
    )
    _, single_probs, _ = read_predictions(tmp_path / "single" / "predictions.csv")
    assert np.abs(single_probs - run_probs).max() > 1e-3
    assert "snapshot" in (out / "report" / "report.md").read_text()
    # AdaBN adapts every member's BatchNorm statistics to the test images
    adapted = eval_in_process(
        f"run_dir={run_dir}",
        "checkpoint=snapshots",
        "evaluation.adabn=true",
        "bootstrap_resamples=50",
        f"output_dir={tmp_path / 'adabn'}",
    )
    assert adapted.metrics["test/adabn_images"] == len(run_probs)
    _, adapted_probs, _ = read_predictions(tmp_path / "adabn" / "predictions.csv")
    assert np.abs(adapted_probs - run_probs).max() > 1e-4


def test_the_deployable_model_and_its_onnx_file_are_the_ensemble(snapshot_run, tmp_path) -> None:
    from dermlit.export.onnx import OnnxClassifier
    from dermlit.export_cli import export_run
    from dermlit.inference.predictor import EagerRunner
    from dermlit.inference.run import load_decisions
    from dermlit.inference.weights import deployable_model

    run_dir, cfg, _ = snapshot_run
    decisions = load_decisions(run_dir)
    model = deployable_model(decisions)
    assert isinstance(model.backbone, SnapshotEnsemble) and len(model.backbone.members) == 2
    data = instantiate(cfg.data)
    data.setup("test")
    dataset = data.dataset("test")
    images = torch.stack([dataset[i][0] for i in range(8)])
    with torch.no_grad():
        probs, _ = model(images)
    ids, run_probs, _ = read_predictions(run_dir / "predictions.csv")
    # the run's probabilities with the temperature of metrics.json (as dermlit predict shows)
    z = np.log(np.maximum(run_probs[:8], 1e-12)) / decisions.temperature
    np.testing.assert_allclose(probs.numpy(), softmax(z, axis=1), atol=2e-5)
    pixels = images.numpy()
    onnx_file = export_run(run_dir, tmp_path / "ensemble.onnx")
    np.testing.assert_allclose(
        OnnxClassifier(onnx_file)(pixels), EagerRunner(model)(pixels), atol=1e-4
    )


def test_ensemble_is_the_log_of_the_mean_probability() -> None:
    torch.manual_seed(0)
    members = [nn.Linear(4, 3), nn.Linear(4, 3)]
    x = torch.randn(5, 4)
    with torch.no_grad():
        got = SnapshotEnsemble(members)(x).exp().numpy()
        by_hand = np.mean([softmax(m(x).numpy().astype(np.float64), axis=1) for m in members], 0)
    np.testing.assert_allclose(got, by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="at least one member"):
        SnapshotEnsemble([])


def test_cycle_length_must_divide_the_epochs() -> None:
    assert cycle_epochs(54, 3) == 18
    with pytest.raises(ValueError, match=r"trainer.max_epochs=54 is not 4 whole LR cycles"):
        cycle_epochs(54, 4)


def test_snapshots_are_found_in_epoch_order_or_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="callbacks=ema_snapshots"):
        resolve_snapshots(tmp_path)
    for epoch in ("99", "100", "07"):
        (tmp_path / "checkpoints" / f"snapshot-epoch{epoch}.ckpt").touch()
    (tmp_path / "checkpoints" / "snapshot-epochxx.ckpt").touch()  # not a snapshot name
    names = [p.name for p in resolve_snapshots(tmp_path)]
    assert names == ["snapshot-epoch07.ckpt", "snapshot-epoch99.ckpt", "snapshot-epoch100.ckpt"]


def test_grad_cam_of_an_ensemble_uses_every_member() -> None:
    import timm

    from dermlit.explain.review import cam_layers
    from dermlit.explain.saliency import grad_cam

    members = [timm.create_model("resnet18", num_classes=7) for _ in range(2)]
    ensemble = SnapshotEnsemble(members)
    names = cam_layers(ensemble, 64)
    assert names == ["members.0.layer3", "members.1.layer3"]
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    layers = [ensemble.get_submodule(n) for n in names]
    maps = grad_cam(ensemble, images, [0.5] * 3, [0.25] * 3, [0, 1], layers)
    assert maps.shape == (2, 64, 64) and 0 <= maps.min() and maps.max() <= 1


def test_unknown_test_weights_are_refused_by_name() -> None:
    from dermlit.fit import test_checkpoint

    cfg = OmegaConf.create({"test_weights": "average"})
    with pytest.raises(ValueError, match=r"test_weights must be one of .*snapshots.*'average'"):
        test_checkpoint(cfg, trainer=None)


def test_snapshots_without_the_callback_are_refused_before_training(
    tmp_path: Path, train_in_process
) -> None:
    from dermlit.errors import InputError

    run_dir = tmp_path / "run"
    with pytest.raises(InputError, match="add callbacks=ema_snapshots"):
        train_in_process(run_dir, *TINY_RUN, "test_weights=snapshots")
    assert not (run_dir / "checkpoints").exists()  # nothing was trained
