"""The report's Grad-CAM gallery of errors: which errors are chosen, the report section and
figure, the W&B table (a fake logger), and metrics unchanged by it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import nn

from dermlit.constants import CLASSES
from dermlit.evaluation.report import log_report_to_loggers
from dermlit.evaluation.settings import EvalSettings
from dermlit.explain.review import ErrorExplainer, select_errors
from dermlit.rundir import SplitOutputs, write_evaluation

K = len(CLASSES)
NV, MEL, DF = CLASSES.index("nv"), CLASSES.index("mel"), CLASSES.index("df")


def one_hot_probs(pred: list[int], conf: list[float]) -> np.ndarray:
    p = np.full((len(pred), K), 0.0)
    for i, (c, q) in enumerate(zip(pred, conf, strict=True)):
        p[i] = (1 - q) / (K - 1)
        p[i, c] = q
    return p


def test_rare_called_common_first_then_the_most_confident_errors() -> None:
    #          0: right  1: mel->nv 2: df->nv 3: nv->mel 4: mel->df 5: unlabelled
    targets = np.array([NV, MEL, DF, NV, MEL, -1])
    pred = [NV, NV, NV, MEL, DF, MEL]
    probs = one_hot_probs(pred, [0.99, 0.5, 0.7, 0.95, 0.6, 0.99])
    assert select_errors(probs, targets, ["nv"]) == [
        (2, "rare called common"),
        (1, "rare called common"),
        (3, "confident error"),
        (4, "confident error"),
    ]
    assert select_errors(probs, targets, ["nv"], max_images=3, max_rare=1) == [
        (2, "rare called common"),
        (3, "confident error"),
        (4, "confident error"),
    ]
    # a rare-called-common error past the cap of max_rare still says what it is
    assert select_errors(probs, targets, ["nv"], max_images=4, max_rare=1) == [
        (2, "rare called common"),
        (3, "confident error"),
        (4, "confident error"),
        (1, "rare called common"),
    ]
    assert select_errors(probs, np.array([NV, NV, NV, MEL, DF, -1]), ["nv"]) == []


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, K),
    )


@pytest.fixture
def evaluated(tmp_path: Path):
    rng = np.random.default_rng(0)
    n = 80
    pixels = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    targets = rng.integers(0, K, n)
    logits = rng.normal(0, 1, (n, K))
    ids = [f"IMG{i}" for i in range(n)]
    outputs = SplitOutputs(ids, logits, targets)
    settings = EvalSettings.defaults(n_resamples=30)
    explainer = ErrorExplainer(tiny_cnn(), (0.5,) * 3, (0.25,) * 3, lambda rows: pixels[rows])
    with_gallery = write_evaluation(tmp_path / "a", outputs, settings=settings, explainer=explainer)
    plain = write_evaluation(tmp_path / "b", outputs, settings=settings)
    return tmp_path, with_gallery, plain


def test_report_gallery_and_unchanged_metrics(evaluated) -> None:
    tmp_path, with_gallery, _ = evaluated
    ex = with_gallery.analysis.explanations
    assert ex is not None and len(ex.image_ids) == 12
    assert ex.overlays.shape == (12, 16, 16, 3) and ex.overlays.dtype == np.uint8
    assert ex.kinds[:6] == ["rare called common"] * 6
    html = (tmp_path / "a" / "report" / "report.html").read_text()
    assert "Explanations of errors (Grad-CAM)" in html and "explained errors" in html
    assert (tmp_path / "a" / "report" / "gradcam_errors.png").is_file()
    assert not (tmp_path / "b" / "report" / "gradcam_errors.png").exists()
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "b" / "metrics.json").read_text()
    )


class FakeRun:
    id = "fake"

    def __init__(self) -> None:
        self.logged: dict = {}
        self.artifacts: list = []

    def log(self, payload: dict) -> None:
        self.logged.update(payload)

    def log_artifact(self, artifact) -> None:
        self.artifacts.append(artifact)


class FakeWandbLogger(WandbLogger):
    """A WandbLogger whose run is a recorder (no wandb.init, no network, no files)."""

    def __init__(self) -> None:  # noqa: D107 - no super().__init__: nothing to start
        self.fake = FakeRun()

    @property
    def experiment(self):
        return self.fake


def test_wandb_table_of_explained_errors(evaluated, monkeypatch) -> None:
    import wandb

    _, with_gallery, _ = evaluated
    monkeypatch.setattr(wandb, "Artifact", lambda *a, **k: type("A", (), {"add_file": print})())
    logger = FakeWandbLogger()
    log_report_to_loggers([logger], with_gallery.report)
    table = logger.fake.logged["test/report/explained_errors"]
    assert table.columns == [
        "image_id",
        "image",
        "overlay",
        "truth",
        "prediction",
        "probabilities",
        "kind",
    ]
    ex = with_gallery.analysis.explanations
    assert [row[0] for row in table.data] == ex.image_ids
    assert [row[3] for row in table.data] == ex.truth
    assert table.data[0][5][ex.predicted[0]] == pytest.approx(
        ex.probs[0, CLASSES.index(ex.predicted[0])], abs=1e-4
    )


def test_cam_layer_keeps_at_least_four_cells() -> None:
    import timm

    from dermlit.explain.review import cam_layer

    net = timm.create_model("resnet18", pretrained=False, num_classes=K)
    assert [cam_layer(net, s) for s in (32, 64, 127, 128, 224)] == [
        "layer2",
        "layer3",
        "layer3",
        "layer4",
        "layer4",
    ]
    assert cam_layer(tiny_cnn(), 32) is None  # no feature_info: saliency.target_layer decides
    # the map at the chosen layer of a 32 px input is not uniform (layer4 would be 1x1)
    from dermlit.explain.saliency import grad_cam

    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    maps = grad_cam(net, x, (0.5,) * 3, (0.25,) * 3, [0, 1], net.get_submodule("layer2"))
    assert (maps.std((1, 2)) > 0).all()


def test_explainer_works_on_a_float64_module_and_leaves_it_alone() -> None:
    """Under trainer.precision=64-true the trained backbone is double: explained on a copy."""
    net = tiny_cnn().double()
    pixels = np.random.default_rng(1).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    targets = np.array([0, 1, 2, 3, 4, 5])
    probs = one_hot_probs([NV] * 6, [0.9] * 6)
    ex = ErrorExplainer(net, (0.5,) * 3, (0.25,) * 3, lambda rows: pixels[rows])(
        probs, targets, [f"I{i}" for i in range(6)], ["nv"]
    )
    assert ex is not None and len(ex.image_ids) == 5  # the nv image is right
    assert next(net.parameters()).dtype == torch.float64
    assert all(p.grad is None for p in net.parameters())
