"""ONNX export: onnxruntime equals the PyTorch module (ResNet-18, rendered and real images), the
preprocessing equals the training pipeline's, TTA exports, metadata round-trips, the referral
rule rebuilds from the file alone, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from omegaconf import OmegaConf
from torch import nn

from dermlit.constants import CLASSES
from dermlit.data.cache import load_square
from dermlit.data.synthetic_render import render_lesion, sample_lesion
from dermlit.evaluation.conformal import fit_conformal
from dermlit.evaluation.decisions import malignancy_cost_matrix
from dermlit.evaluation.settings import CostMatrix, EvalSettings
from dermlit.export.deployable import DeployableClassifier
from dermlit.export.onnx import (
    OnnxClassifier,
    build_metadata,
    config_hash,
    export_onnx,
    read_metadata,
)
from dermlit.inference.run import ReferralRule, RunDecisions, referral_rule
from dermlit.models.classifier import DermClassifier
from dermlit.models.tta import TestTimeAugmentation

SIZE = 64
K = len(CLASSES)
MEAN, STD = (0.70, 0.55, 0.50), (0.15, 0.16, 0.17)


def rendered(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    """Synthetic dermoscopy-like lesions (the synthetic source's renderer), uint8 (n, S, S, 3)."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [render_lesion(sample_lesion(CLASSES[i % K], rng), rng, size, size) for i in range(n)]
    )


def settle_batchnorm(backbone: nn.Module, images: np.ndarray) -> None:
    """Running statistics of real activations (a random init's 0/1 would saturate softmax)."""
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    backbone.train()
    with torch.no_grad():
        for chunk in x.split(8):
            backbone(chunk)
    backbone.eval()


def tiny_cnn(size: int, seed: int = 2) -> nn.Module:
    """A small CNN with BatchNorm whose output changes under flips and rotations."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        nn.Flatten(),
        nn.Linear(8 * (size // 2) ** 2, K),
    )
    settle_batchnorm(backbone, rendered(16, seed=seed + 10, size=size))
    return backbone


def informative_validation(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validation probabilities that lean to the true class (the referral targets are reached
    at part coverage: finite thresholds)."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(K), 30)
    probs = np.stack([rng.dirichlet(np.ones(K) + 3 * np.eye(K)[c]) for c in targets])
    return probs, targets


@pytest.fixture(scope="module")
def referral() -> ReferralRule:
    """The rule ``load_decisions`` fits (``referral_rule``): expected cost under the fixture's
    malignancy cost matrix, the default targets (macro-F1 >= 0.8, MEL recall >= 0.9)."""
    cost = CostMatrix("malignancy", malignancy_cost_matrix())
    settings = dataclasses.replace(EvalSettings.defaults(), cost=cost)
    rule = referral_rule(*informative_validation(), settings, "expected_cost")
    assert len(rule.thresholds) == 2 and all(map(math.isfinite, rule.thresholds.values()))
    return rule


@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory, referral) -> tuple[DeployableClassifier, Path]:
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", pretrained=False, num_classes=K)
    settle_batchnorm(backbone, rendered(32, seed=1))
    bias = np.linspace(-0.3, 0.3, K)
    model = DeployableClassifier(backbone, SIZE, MEAN, STD, temperature=1.7, logit_bias=bias)
    rng = np.random.default_rng(0)
    val_t = np.repeat(np.arange(K), 20)
    val_p = rng.dirichlet(np.ones(K), len(val_t))
    meta = build_metadata(
        model,
        malignancy_cost_matrix(),
        config_hash({"model": "resnet18", "seed": 0}),
        fit_conformal(val_p, val_t, 0.1),
        cost_name="malignancy",
        referral=referral.to_dict(),
    )
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", meta)
    return model, path


def torch_outputs(model: DeployableClassifier, images: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        probs, logits = model(torch.from_numpy(images))
    return probs.numpy(), logits.numpy()


@pytest.mark.parametrize("n", [1, 5])
def test_onnxruntime_equals_pytorch_on_rendered_images(resnet_export, n):
    model, path = resnet_export
    images = rendered(n, seed=2 + n)
    ours_p, ours_z = torch_outputs(model, images)
    ort_p, ort_z = OnnxClassifier(path).run(images)
    np.testing.assert_allclose(ort_z, ours_z, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ort_p, ours_p, atol=1e-4, rtol=0)
    assert ours_p.max() < 0.999 and ours_z.std() > 0.05  # not a saturated, constant output


def test_onnxruntime_equals_pytorch_on_real_images(resnet_export, ham_dir):
    model, path = resnet_export
    files = sorted((ham_dir / "images").glob("*.jpg"))[:6]
    images = np.stack([load_square(f, SIZE) for f in files])
    ort_p, ort_z = OnnxClassifier(path).run(images)
    ours_p, ours_z = torch_outputs(model, images)
    np.testing.assert_allclose(ort_z, ours_z, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ort_p, ours_p, atol=1e-4, rtol=0)


def test_metadata_round_trips(resnet_export):
    model, path = resnet_export
    meta = read_metadata(path)
    assert meta == OnnxClassifier(path).metadata  # onnx and onnxruntime read the same
    assert meta.classes == list(CLASSES)
    assert meta.image_size == SIZE
    np.testing.assert_allclose(meta.mean, MEAN, rtol=1e-6)
    np.testing.assert_allclose(meta.std, STD, rtol=1e-6)
    assert meta.temperature == pytest.approx(1.7)
    np.testing.assert_allclose(meta.logit_bias, np.linspace(-0.3, 0.3, K), rtol=1e-6)
    assert meta.tta_views == ["identity"]
    np.testing.assert_array_equal(meta.cost_matrix, malignancy_cost_matrix())
    assert meta.cost_name == "malignancy"
    assert meta.config_hash == config_hash({"seed": 0, "model": "resnet18"})  # key order free
    assert meta.thresholds is not None and meta.thresholds.alpha == 0.1
    assert meta.thresholds.thresholds.shape == (K,)
    assert meta.referral["score"] == "expected_cost" and meta.referral["refer_if"] == ">"
    graph = onnx.load(str(path))
    (image,) = graph.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", SIZE, SIZE, 3]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert not list(path.parent.glob("*.data"))  # weights inside the one file


def refer_from_props(props, probs: np.ndarray) -> np.ndarray:
    """``refer`` by hand from the ``dermlit.*`` metadata alone (no dermlit code): the score of
    each row against each target's threshold; a null threshold refers every row."""
    classes = json.loads(props["dermlit.classes"])
    cost = np.asarray(json.loads(props["dermlit.cost_matrix"]), dtype=np.float64)
    rule = json.loads(props["dermlit.referral"])
    p = np.asarray(probs, dtype=np.float64)
    assert classes == list(CLASSES) and p.shape[1] == len(classes)
    score = {"confidence": lambda: p.max(1), "expected_cost": lambda: (p @ cost).min(1)}
    value = score[rule["score"]]()
    refer = np.zeros(len(p), dtype=bool)
    for target in rule["targets"]:
        t = target["threshold"]
        if t is None:
            refer[:] = True
        elif rule["refer_if"] == "<":
            refer |= value < t
        else:
            assert rule["refer_if"] == ">"
            refer |= value > t
    return refer


def probability_batch(path: Path, val_probs: np.ndarray, seed: int) -> np.ndarray:
    """The file's own outputs, validation rows (each threshold is one of their scores: the
    boundary) and Dirichlet rows from flat to peaked."""
    rng = np.random.default_rng(seed)
    classifier = OnnxClassifier(path)
    outputs = classifier(rendered(4, seed, classifier.metadata.image_size))
    fresh = [rng.dirichlet(np.full(K, a), 40) for a in (0.2, 1.0, 5.0)]
    return np.concatenate([outputs, val_probs, *fresh])


def test_refer_rebuilds_from_the_onnx_metadata_alone(resnet_export, referral):
    """The ``refer`` column of ``dermlit predict`` from the file's metadata (onnxruntime's
    map, parsed by hand) equals the run's ReferralRule; the package's own reader gives the same
    rule, so ``refer_reason`` matches too."""
    _, path = resnet_export
    props = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    probs = probability_batch(path, informative_validation()[0], seed=7)
    expected, reasons = referral.refer(probs, malignancy_cost_matrix())
    np.testing.assert_array_equal(refer_from_props(props, probs), expected)
    assert 0 < expected.sum() < len(expected)  # both outcomes occur
    rebuilt = ReferralRule.from_dict(read_metadata(path).referral)
    assert rebuilt == referral
    got, got_reasons = rebuilt.refer(probs, np.asarray(read_metadata(path).cost_matrix))
    np.testing.assert_array_equal(got, expected)
    assert got_reasons == reasons


def test_export_run_writes_the_runs_referral_rule(tmp_path, monkeypatch):
    """``dermlit export`` (export_run) writes RunDecisions.referral: here the confidence score
    with one target validation never reaches (NaN -> null: every case is referred, by reason)."""
    from dermlit.export_cli import export_run

    rng = np.random.default_rng(0)
    val_t = np.repeat(np.arange(K), 20)
    val_p = rng.dirichlet(np.ones(K), len(val_t))  # uninformative: mel_recall >= 0.9 unreached
    settings = EvalSettings.defaults()
    rule = referral_rule(val_p, val_t, settings, "confidence")
    assert sorted(map(math.isfinite, rule.thresholds.values())) == [False, True]
    size = 16
    decisions = RunDecisions(
        run_dir=tmp_path,
        config=OmegaConf.create({}),
        config_hash="0123456789abcdef",
        image_size=size,
        mean=list(MEAN),
        std=list(STD),
        temperature=1.0,
        logit_bias=np.zeros(K),
        settings=settings,
        conformal=fit_conformal(val_p, val_t, 0.1),
        referral=rule,
    )
    model = DeployableClassifier(tiny_cnn(size), size, MEAN, STD)
    monkeypatch.setattr("dermlit.inference.run.load_decisions", lambda run_dir: decisions)
    monkeypatch.setattr("dermlit.inference.weights.deployable_model", lambda d, device: model)
    path = export_run(tmp_path, tmp_path / "model.onnx")

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    stored = json.loads(props["dermlit.referral"])
    assert stored["score"] == "confidence" and stored["refer_if"] == "<"
    assert [t["target"] for t in stored["targets"]] == list(rule.thresholds)
    assert [t["threshold"] is None for t in stored["targets"]] == [
        math.isnan(v) for v in rule.thresholds.values()
    ]
    probs = probability_batch(path, val_p, seed=8)
    expected, reasons = rule.refer(probs, settings.cost.matrix)
    np.testing.assert_array_equal(refer_from_props(props, probs), expected)
    assert expected.all()  # the unreached target refers every case ...
    finite = next(t for t, v in rule.thresholds.items() if math.isfinite(v))
    assert 0 < sum(f"threshold for {finite}" in r for r in reasons) < len(reasons)  # ... not only
    got, got_reasons = ReferralRule.from_dict(OnnxClassifier(path).metadata.referral).refer(
        probs, settings.cost.matrix
    )
    np.testing.assert_array_equal(got, expected)
    assert got_reasons == reasons


def test_deployable_equals_the_classifiers_pipeline():
    """Preprocessing, TTA, bias and temperature compose as the evaluation does:
    softmax((tta(normalise(x / 255)) + bias) / T), with DermClassifier's own buffers and TTA."""
    size = 32
    tta = TestTimeAugmentation(["identity", "hflip", "rot90"])
    classifier = DermClassifier(tiny_cnn(size), optim=None, mean=MEAN, std=STD, tta=tta).eval()
    bias = np.array([0.1, -0.2, 0.0, 0.3, 0.0, -0.5, 0.2])
    model = DeployableClassifier.from_classifier(classifier, size, temperature=0.8, logit_bias=bias)
    images = rendered(4, seed=5, size=size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - classifier.mean) / classifier.std
    with torch.no_grad():
        expected = ((classifier.predict_logits(x) + torch.tensor(bias).float()) / 0.8).softmax(1)
    probs, _ = torch_outputs(model, images)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-6)
    assert model.tta_views == ["identity", "hflip", "rot90"]


def test_tta_exports_and_matches(tmp_path):
    """All eight dihedral views through ONNX Slice/Transpose (a tiny CNN keeps it fast)."""
    size = 16
    backbone = tiny_cnn(size)
    views = list(TestTimeAugmentation().views) + [
        "hflip",
        "vflip",
        "rot90",
        "rot180",
        "rot270",
        "transpose",
        "antitranspose",
    ]
    model = DeployableClassifier(backbone, size, tta_views=views)
    path = export_onnx(model, tmp_path / "tta.onnx", build_metadata(model, np.zeros((K, K)), "x"))
    images = rendered(3, seed=6, size=size)
    np.testing.assert_allclose(
        OnnxClassifier(path)(images), torch_outputs(model, images)[0], atol=1e-5
    )
    single = DeployableClassifier(backbone, size)
    assert np.abs(torch_outputs(single, images)[0] - torch_outputs(model, images)[0]).max() > 1e-3
    assert read_metadata(path).tta_views == views


def test_bad_input_is_named(resnet_export, tmp_path):
    model, path = resnet_export
    runner = OnnxClassifier(path)
    with pytest.raises(ValueError, match=r"expects uint8 RGB images \(N, 64, 64, 3\)"):
        runner(np.zeros((2, 64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expects uint8 RGB images \(N, 64, 64, 3\)"):
        runner(np.zeros((2, 64, 64, 4), dtype=np.uint8))  # RGBA
    with pytest.raises(ValueError, match=r"expected uint8 RGB images of shape \(N, 64, 64, 3\)"):
        model(torch.zeros((1, 32, 32, 3), dtype=torch.uint8))
    with pytest.raises(ValueError, match="config hash .* export this run again"):
        runner.metadata.require_run(config_hash({"another": "run"}), str(path))
    runner.metadata.require_run(runner.metadata.config_hash)
    plain = tmp_path / "plain.onnx"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(plain))
    with pytest.raises(ValueError, match="not written by `dermlit export`"):
        OnnxClassifier(plain)
    old = tmp_path / "format1.onnx"  # before dermlit.referral: re-export, not a KeyError
    proto.metadata_props.add(key="dermlit.format_version", value="1")
    onnx.save(proto, str(old))
    with pytest.raises(ValueError, match="has dermlit export format 1; this dermlit reads 2"):
        OnnxClassifier(old)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxClassifier(garbage)
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        OnnxClassifier(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DeployableClassifier(nn.Identity(), SIZE, temperature=0.0)
