"""SAM/ASAM under Lightning manual optimization: the maths against pytorch_optimizer, and each
pitfall of docs/design.md ("SAM in Lightning manual optimization": global_step, BatchNorm,
one augmented batch, precision, clip, accumulate)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from pytorch_optimizer import SAM as ReferenceSAM
from torch import nn

from dermlit.optim import SAM, ImbSAM, LookSAM, UpdateRule, frozen_bn_stats
from optim.helpers import (
    TinyMLP,
    classifier,
    images_and_targets,
    loader,
    preprocess,
    sgd,
    trainer,
)


def reference_sam(backbone: nn.Module, batches, rho: float, adaptive: bool, lr=0.1, momentum=0.9):
    """pytorch_optimizer's SAM on the same batches: the independent implementation."""
    opt = ReferenceSAM(
        backbone.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr, momentum=momentum
    )
    for images, targets in batches:
        x = preprocess(images)
        nn.functional.cross_entropy(backbone(x), targets).backward()
        opt.first_step(zero_grad=True)
        nn.functional.cross_entropy(backbone(x), targets).backward()
        opt.second_step(zero_grad=True)
    return backbone


@pytest.mark.parametrize(("adaptive", "rho"), [(False, 0.05), (True, 0.5)])
def test_sam_and_asam_match_pytorch_optimizer(adaptive, rho):
    images, targets = images_and_targets(32)
    model = classifier(SAM(optimizer=sgd(), rho=rho, adaptive=adaptive), backbone=TinyMLP())
    reference = copy.deepcopy(model.backbone)
    trainer(max_epochs=2).fit(model, loader(images, targets))
    batches = [(images[i : i + 8], targets[i : i + 8]) for i in range(0, 32, 8)] * 2
    reference_sam(reference, batches, rho, adaptive)
    for ours, ref in zip(model.backbone.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # and SAM is not plain SGD: the same run with plain steps ends elsewhere
    plain = classifier(SAM(optimizer=sgd(), rho=1e-9), backbone=TinyMLP())
    trainer(max_epochs=2).fit(plain, loader(images, targets))
    assert not torch.allclose(plain.backbone.net[1].weight, model.backbone.net[1].weight)


@pytest.mark.parametrize(
    "optim",
    [
        SAM(optimizer=sgd()),
        SAM(optimizer=sgd(), adaptive=True, rho=0.5),
        LookSAM(optimizer=sgd(), k=2),
        ImbSAM(optimizer=sgd(), tail_classes=["df", "vasc"]),
    ],
    ids=["sam", "asam", "looksam", "imbsam"],
)
def test_global_step_advances_once_per_update(optim):
    images, targets = images_and_targets(40)
    t = trainer(max_epochs=2)
    t.fit(classifier(optim), loader(images, targets))
    assert t.global_step == 2 * 5


def test_global_step_counts_updates_not_batches_with_accumulation():
    images, targets = images_and_targets(40)  # 5 batches: windows of 2, 2 and the last 1
    t = trainer(max_epochs=1)
    t.fit(classifier(SAM(optimizer=sgd(), accumulate_grad_batches=2)), loader(images, targets))
    assert t.global_step == 3


def test_batchnorm_running_stats_updated_by_the_first_pass_only():
    images, targets = images_and_targets(8)
    model = classifier(SAM(optimizer=sgd(), rho=0.5))
    expected = copy.deepcopy(model.backbone).train()
    with torch.no_grad():
        expected(preprocess(images))  # one train-mode forward: one running-stat update
    trainer(max_epochs=1).fit(model, loader(images, targets))
    bn, ref = model.backbone.bn, expected.bn
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)


def test_frozen_bn_stats_uses_batch_stats_and_restores_tracking():
    bn = nn.BatchNorm1d(3, momentum=None)  # cumulative averaging: momentum=0 would not work
    x = torch.randn(16, 3) * 3 + 1
    with frozen_bn_stats(bn):
        y = bn(x)
    assert int(bn.num_batches_tracked) == 0 and torch.all(bn.running_mean == 0)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert bn.track_running_stats


class NoisyAugment(nn.Module):
    """Random on every call: two calls on one batch would give two different batches."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return (x + 0.1 * torch.rand_like(x)).clamp(0, 1)


@pytest.mark.parametrize(
    "optim",
    [SAM(optimizer=sgd()), ImbSAM(optimizer=sgd(), tail_classes=["akiec", "df", "vasc"])],
    ids=["sam", "imbsam"],
)
def test_both_passes_see_the_same_augmented_batch(optim):
    images, targets = images_and_targets(16)
    augment = NoisyAugment()
    model = classifier(optim, augment=augment)
    seen = []
    model.backbone.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
    trainer(max_epochs=1).fit(model, loader(images, targets))
    assert augment.calls == 2  # once per batch
    assert len(seen) == 4  # two forwards per batch
    torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)
    torch.testing.assert_close(seen[2], seen[3], rtol=0, atol=0)
    assert not torch.allclose(seen[0], preprocess(images[:8]))  # the augmentation did run


def test_bf16_mixed_runs_and_learns():
    images, targets = images_and_targets(32)
    model = classifier(SAM(optimizer=sgd()))
    before = copy.deepcopy(model.backbone.conv.weight)
    t = trainer(max_epochs=1, precision="bf16-mixed")
    t.fit(model, loader(images, targets))
    assert t.global_step == 4
    assert model.backbone.conv.weight.dtype == torch.float32
    assert torch.isfinite(model.backbone.conv.weight).all()
    assert not torch.allclose(before, model.backbone.conv.weight)


@pytest.mark.parametrize("cls", [SAM, LookSAM, ImbSAM])
def test_fp16_mixed_is_refused_with_a_clear_error(cls):
    module = SimpleNamespace(trainer=SimpleNamespace(precision="16-mixed"))
    kwargs = {"tail_classes": ["df"]} if cls is ImbSAM else {}
    with pytest.raises(ValueError, match=r"precision='16-mixed'.*bf16-mixed"):
        cls(optimizer=sgd(), **kwargs).configure(module)


class GradNormRecorder(Callback):
    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("clip", [None, 0.05])
def test_gradient_clipping_applies_to_the_stepped_gradient(clip):
    images, targets = images_and_targets(32)
    recorder = GradNormRecorder()
    optim = SAM(optimizer=sgd(), grad_clip_norm=clip)
    trainer(max_epochs=1, callbacks=[recorder]).fit(classifier(optim), loader(images, targets))
    assert len(recorder.norms) == 4
    if clip is None:
        assert max(recorder.norms) > 0.05  # so the clipped case below can fail
    else:
        assert max(recorder.norms) <= clip * (1 + 1e-5)


def test_accumulation_equals_sam_on_the_concatenated_batch():
    """k=2 micro-batches of 8 = one SAM step on 16 (TinyMLP: no BatchNorm, CE is a mean)."""
    images, targets = images_and_targets(32)
    model = classifier(SAM(optimizer=sgd(), accumulate_grad_batches=2), backbone=TinyMLP())
    reference = copy.deepcopy(model.backbone)
    t = trainer(max_epochs=1)
    t.fit(model, loader(images, targets, batch_size=8))
    assert t.global_step == 2
    reference_sam(
        reference, [(images[:16], targets[:16]), (images[16:], targets[16:])], 0.05, False
    )
    for ours, ref in zip(model.backbone.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="rho must be > 0"):
        SAM(optimizer=sgd(), rho=0.0)
    with pytest.raises(ValueError, match="LookSAM does not support optim.accumulate_grad_batches"):
        LookSAM(optimizer=sgd(), accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        LookSAM(optimizer=sgd(), k=0)
    with pytest.raises(ValueError, match="unknown tail classes"):
        ImbSAM(optimizer=sgd(), tail_classes=["melanoma"])


def test_perturbation_is_reverted_exactly():
    """With a vanishing rho, SAM steps are plain steps: w is restored, BatchNorm untouched."""
    images, targets = images_and_targets(16)
    sam = classifier(SAM(optimizer=sgd(), rho=1e-12))
    plain = classifier(UpdateRule(sgd()))
    for m in (sam, plain):
        trainer(max_epochs=1).fit(m, loader(images, targets))
    for a, b in zip(
        sam.backbone.state_dict().values(), plain.backbone.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
