"""LookSAM and ImbSAM against hand-written versions of their papers' update rules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dermlit.constants import HAM10000_CLASS_COUNTS
from dermlit.optim import ImbSAM, LookSAM, tail_classes_from_counts
from optim.helpers import TinyMLP, classifier, images_and_targets, loader, preprocess, trainer

LR = 0.5


def plain_sgd(lr=LR):
    return lambda params: torch.optim.SGD(params, lr=lr)


def grad_at(model: nn.Module, loss_fn, shift=None) -> list[torch.Tensor]:
    """Gradient of loss_fn(model) at w (+ shift), leaving w unchanged."""
    params = list(model.parameters())
    with torch.no_grad():
        if shift is not None:
            for p, s in zip(params, shift, strict=True):
                p.add_(s)
    grads = torch.autograd.grad(loss_fn(model), params)
    with torch.no_grad():
        if shift is not None:
            for p, s in zip(params, shift, strict=True):
                p.sub_(s)
    return list(grads)


def norm(ts):
    return torch.sqrt(sum((t * t).sum() for t in ts))


def test_looksam_matches_the_paper_update():
    rho, alpha, k = 0.1, 0.7, 3
    images, targets = images_and_targets(40)
    model = classifier(LookSAM(optimizer=plain_sgd(), rho=rho, alpha=alpha, k=k), TinyMLP())
    ref = copy.deepcopy(model.backbone)
    t = trainer(max_epochs=1)
    t.fit(model, loader(images, targets))
    assert t.global_step == 5
    g_v = None
    for step in range(5):
        x, y = preprocess(images[8 * step : 8 * step + 8]), targets[8 * step : 8 * step + 8]

        def loss(m, x=x, y=y):
            return nn.functional.cross_entropy(m(x), y)

        g = grad_at(ref, loss)
        if step % k == 0:
            e = [rho * gi / norm(g) for gi in g]
            g_s = grad_at(ref, loss, e)
            cos_term = sum((a * b).sum() for a, b in zip(g, g_s, strict=True)) / norm(g) ** 2
            g_v = [b - cos_term * a for a, b in zip(g, g_s, strict=True)]
            update = g_s
        else:
            update = [a + alpha * norm(g) / norm(g_v) * v for a, v in zip(g, g_v, strict=True)]
        with torch.no_grad():
            for p, u in zip(ref.parameters(), update, strict=True):
                p.sub_(LR * u)
    for ours, theirs in zip(model.backbone.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_imbsam_matches_the_paper_update():
    rho, tail_classes = 0.2, [0, 3, 6]  # akiec, df, vasc
    images, targets = images_and_targets(24)
    optim = ImbSAM(optimizer=plain_sgd(), rho=rho, tail_classes=["akiec", "df", "vasc"])
    model = classifier(optim, TinyMLP())
    ref = copy.deepcopy(model.backbone)
    trainer(max_epochs=1).fit(model, loader(images, targets))
    for step in range(3):
        x, y = preprocess(images[8 * step : 8 * step + 8]), targets[8 * step : 8 * step + 8]
        tail = torch.isin(y, torch.tensor(tail_classes))
        assert 0 < tail.sum() < len(y)  # both parts present in this batch

        def part(m, mask, x=x, y=y):
            per_sample = nn.functional.cross_entropy(m(x), y, reduction="none")
            return (per_sample * mask).sum() / len(y)

        g_head = grad_at(ref, lambda m, tail=tail: part(m, ~tail))
        g_tail = grad_at(ref, lambda m, tail=tail: part(m, tail))
        e = [rho * gt / norm(g_tail) for gt in g_tail]
        g_tail_at_e = grad_at(ref, lambda m, tail=tail: part(m, tail), e)
        with torch.no_grad():
            for p, gh, gt in zip(ref.parameters(), g_head, g_tail_at_e, strict=True):
                p.sub_(LR * (gh + gt))
    for ours, theirs in zip(model.backbone.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_tail_classes_from_ham10000_counts():
    counts = [HAM10000_CLASS_COUNTS[c] for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")]
    # median of (327, 514, 1099, 115, 1113, 6705, 142) is 514: strictly below it
    assert tail_classes_from_counts(counts, 0.5) == ["akiec", "df", "vasc"]
    assert tail_classes_from_counts(counts, 1.0) == ["akiec", "bcc", "bkl", "df", "mel", "vasc"]
    with pytest.raises(ValueError, match="tail is empty"):
        tail_classes_from_counts([5] * 7)
    with pytest.raises(ValueError, match="expected 7 class counts"):
        tail_classes_from_counts([1, 2, 3])


def test_imbsam_without_counts_or_classes_is_refused():
    model = classifier(ImbSAM(optimizer=plain_sgd()))
    images, targets = images_and_targets(8)
    with pytest.raises(ValueError, match="tail_classes or a datamodule"):
        trainer().fit(model, loader(images, targets))
