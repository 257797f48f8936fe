"""LookSAM and ImbSAM against hand-written versions of their papers' update rules (and
pytorch_optimizer's layer-wise LookSAM)."""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_optimizer import LookSAM as ReferenceLookSAM
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


def test_looksam_paper_rule_matches_the_paper_update():
    """``scale=gradient layerwise=false``: Liu et al.'s Algorithm 1, the rule shipped first."""
    rho, alpha, k = 0.1, 0.7, 3
    images, targets = images_and_targets(40)
    optim = LookSAM(
        optimizer=plain_sgd(), rho=rho, alpha=alpha, k=k, layerwise=False, scale="gradient"
    )
    model = classifier(optim, TinyMLP())
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


def hand_adamw(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05):
    """AdamW (Loshchilov & Hutter) written out: decoupled decay, bias-corrected moments."""
    state = {"t": 0, "m": None, "v": None}

    def step(params, updates):
        state["t"] += 1
        t = state["t"]
        if state["m"] is None:
            state["m"] = [torch.zeros_like(p) for p in params]
            state["v"] = [torch.zeros_like(p) for p in params]
        with torch.no_grad():
            for p, u, m, v in zip(params, updates, state["m"], state["v"], strict=True):
                p.mul_(1 - lr * weight_decay)
                m.mul_(betas[0]).add_((1 - betas[0]) * u)
                v.mul_(betas[1]).add_((1 - betas[1]) * u * u)
                m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))

    return step


def test_looksam_default_rule_with_adamw_matches_a_hand_computation():
    """The default (fixed) rule: on reuse steps g + alpha * (||g|| / ||g_k||) * g_v, where g_k
    is the plain gradient of the SAM step that measured g_v, so the reused component keeps
    the size relative to the gradient that SAM measured; stepped by AdamW."""
    rho, alpha, k = 0.1, 0.7, 2
    images, targets = images_and_targets(40)
    adamw = lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05)  # noqa: E731
    optim = LookSAM(optimizer=adamw, rho=rho, alpha=alpha, k=k)
    assert (optim.scale, optim.layerwise) == ("measured", False)  # the default
    model = classifier(optim, TinyMLP())
    ref = copy.deepcopy(model.backbone)
    t = trainer(max_epochs=2)
    t.fit(model, loader(images, targets))
    assert t.global_step == 10
    step = hand_adamw()
    g_v = g_k_norm = None
    n_reuse = 0
    for i in range(10):
        b = i % 5
        x, y = preprocess(images[8 * b : 8 * b + 8]), targets[8 * b : 8 * b + 8]

        def loss(m, x=x, y=y):
            return nn.functional.cross_entropy(m(x), y)

        g = grad_at(ref, loss)
        if i % k == 0:
            g_s = grad_at(ref, loss, [rho * gi / norm(g) for gi in g])
            proj = sum((a * b).sum() for a, b in zip(g, g_s, strict=True)) / norm(g) ** 2
            g_v, g_k_norm = [b - proj * a for a, b in zip(g, g_s, strict=True)], norm(g)
            update = g_s
        else:
            update = [a + alpha * norm(g) / g_k_norm * v for a, v in zip(g, g_v, strict=True)]
            n_reuse += 1
        step(list(ref.parameters()), update)
    assert n_reuse == 5
    for ours, theirs in zip(model.backbone.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_layerwise_paper_rule_matches_pytorch_optimizers_looksam():
    """``layerwise=true scale=gradient``: g_v and alpha ||g_i|| / ||g_v,i|| per tensor, as in
    the paper's layer-wise variant and pytorch_optimizer.LookSAM (here around AdamW)."""
    rho, alpha, k = 0.1, 0.7, 3
    images, targets = images_and_targets(40)
    adamw = lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05)  # noqa: E731
    optim = LookSAM(adamw, rho=rho, alpha=alpha, k=k, layerwise=True, scale="gradient")
    model = classifier(optim, TinyMLP())
    ref = copy.deepcopy(model.backbone)
    trainer(max_epochs=2).fit(model, loader(images, targets))
    opt = ReferenceLookSAM(
        ref.parameters(), torch.optim.AdamW, rho=rho, k=k, alpha=alpha, lr=1e-2, weight_decay=0.05
    )
    for i in range(10):
        b = i % 5
        x, y = preprocess(images[8 * b : 8 * b + 8]), targets[8 * b : 8 * b + 8]

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ref(x), y)
            loss.backward()
            return loss

        closure()
        opt.step(closure)
    for ours, theirs in zip(model.backbone.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_first_looksam_checkpoint_restarts_the_reuse_cycle():
    """Checkpoints of the first LookSAM hold g_v but not g_norm: resuming them must not crash
    on the first reuse step; the next step is a full SAM step instead."""
    optim = LookSAM(optimizer=plain_sgd())
    optim.load_state_dict({"g_v": [torch.ones(3)]})
    assert optim._g_v is None and optim.state_dict() == {"g_v": None, "g_norm": None}


def test_layerwise_measured_scale_is_refused():
    with pytest.raises(ValueError, match=r"layerwise=true with scale=measured.*gradient"):
        LookSAM(optimizer=plain_sgd(), layerwise=True, scale="measured")


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
