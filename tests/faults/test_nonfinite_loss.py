"""Fault: a non-finite loss or gradient in training (issue 13, item 10).

A real Lightning fit on tiny data, with the fault injected at a known (epoch, batch, pass): the
error must name exactly that batch and the optimizer step of the refused update, and the update
must not have reached the weights (parameters and optimizer state equal those after the last
applied step, bit for bit). The expected numbers are worked out by hand from the loader size:
40 samples in batches of 8 = 5 batches per epoch.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from optim.helpers import TinyConvBN, TinyMLP, classifier, images_and_targets, loader, sgd, trainer
from torch import nn

from dermlit.optim import SAM, ImbSAM, LookSAM, UpdateRule

BATCHES_PER_EPOCH = 5


class Where(Callback):
    """Knows the (epoch, batch) being trained and keeps the state after each finished batch:
    the parameters, buffers and optimizer state that an applied-then-reported update would
    have changed."""

    def __init__(self) -> None:
        self.here = (-1, -1)
        self.calls = 0  # criterion calls within the current batch (SAM: 0 = first pass)
        self.state: dict | None = None
        self.opt_state: dict | None = None
        self.rule_state: dict | None = None
        self.steps_done = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.here, self.calls = (trainer.current_epoch, batch_idx), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.state = copy.deepcopy(pl_module.state_dict())
        self.opt_state = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.rule_state = copy.deepcopy(pl_module.optim.state_dict())  # e.g. LookSAM's g_v
        self.steps_done = trainer.global_step


class PoisonedLoss(nn.Module):
    """Cross-entropy, made non-finite at one (epoch, batch) and criterion call of that batch.

    ``mode="add"`` adds NaN (the loss is NaN, its gradient stays finite: only a loss check can
    see it); ``mode="mul"`` multiplies by NaN (loss and gradient NaN)."""

    def __init__(self, where: Where, at: tuple[int, int], call: int = 0, mode: str = "mul"):
        super().__init__()
        self.where, self.at, self.call, self.mode = where, at, call, mode

    def forward(self, logits, targets):
        loss = nn.functional.cross_entropy(logits, targets)
        hit = self.where.here == self.at and self.where.calls == self.call
        self.where.calls += 1
        if not hit:
            return loss
        return loss + math.nan if self.mode == "add" else loss * math.nan


def fit_until_error(model, where: Where, images=None, targets=None, **trainer_kw):
    if images is None:
        images, targets = images_and_targets(8 * BATCHES_PER_EPOCH)
    t = trainer(**({"max_epochs": 3, "callbacks": [where]} | trainer_kw))
    with pytest.raises(FloatingPointError) as info:
        t.fit(model, loader(images, targets))
    return t, info.value


def assert_not_applied(model, where: Where, t) -> None:
    """The refused update changed nothing: the state is the one after the last finished batch."""
    assert t.global_step == where.steps_done
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name
        torch.testing.assert_close(value, where.state[name], rtol=0, atol=0, equal_nan=True)
    opt = t.optimizers[0].state_dict()["state"]
    for k, buffers in where.opt_state["state"].items():
        for key, tensor in buffers.items():
            torch.testing.assert_close(opt[k][key], tensor, rtol=0, atol=0)
    torch.testing.assert_close(model.optim.state_dict(), where.rule_state, rtol=0, atol=0)


CASES = {
    # name: (optim, updates per epoch, batches per update window)
    "plain": (lambda: UpdateRule(optimizer=sgd()), 5),
    "plain-accumulate2": (lambda: UpdateRule(optimizer=sgd(), accumulate_grad_batches=2), 3),
    "sam": (lambda: SAM(optimizer=sgd()), 5),
    "sam-accumulate2": (lambda: SAM(optimizer=sgd(), accumulate_grad_batches=2), 3),
    "looksam": (lambda: LookSAM(optimizer=sgd(), k=2), 5),
    "imbsam": (lambda: ImbSAM(optimizer=sgd(), tail_classes=["df", "vasc"]), 5),
}


def steps_before(batch: int, epoch: int, accumulate: int, per_epoch: int) -> int:
    """Updates applied before the window holding ``batch``: windows of ``accumulate`` batches."""
    return epoch * per_epoch + batch // accumulate


@pytest.mark.parametrize("mode", ["add", "mul"])
@pytest.mark.parametrize("name", list(CASES))
def test_error_names_the_batch_and_the_refused_step(name, mode):
    make, per_epoch = CASES[name]
    optim = make()
    model = classifier(optim, backbone=TinyMLP())
    where = Where()
    epoch, batch = 1, 2
    model.criterion = PoisonedLoss(where, (epoch, batch), mode=mode)
    t, err = fit_until_error(model, where)
    assert_not_applied(model, where, t)  # first: the update never happened
    k = optim.accumulate_grad_batches
    done = steps_before(batch, epoch, k, per_epoch)
    msg = str(err)
    assert f"at epoch {epoch}, batch {batch} of the epoch" in msg, msg
    assert f"optimizer step {done + 1} was NOT applied" in msg, msg
    assert f"trainer.global_step stays {done}" in msg, msg
    if k > 1:
        assert f"accumulation window: batches {batch}-{batch + 1}" in msg, msg
    assert t.global_step == done
    assert (err.epoch, err.batch_idx, err.step, err.applied) == (epoch, batch, done + 1, False)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["sam", "looksam", "imbsam"])
def test_a_nan_in_the_sam_second_pass_is_caught_at_its_own_batch(name):
    """The first pass (the loss SAM returns) is finite; only the pass at w + e is NaN."""
    make, per_epoch = CASES[name]
    model = classifier(make(), backbone=TinyMLP())
    where = Where()
    epoch, batch = 0, 2  # LookSAM (k=2) runs its second pass on even steps
    model.criterion = PoisonedLoss(where, (epoch, batch), call=1 if name != "imbsam" else 2)
    t, err = fit_until_error(model, where)
    assert_not_applied(model, where, t)  # first: the update never happened
    msg = str(err)
    assert f"at epoch 0, batch {batch} of the epoch, in the SAM second pass" in msg, msg
    assert f"optimizer step {batch + 1} was NOT applied" in msg, msg


def test_inf_pixels_name_the_batch_and_leave_batchnorm_statistics_finite():
    images, targets = images_and_targets(8 * BATCHES_PER_EPOCH)
    images = images.float()
    images[8 * 3 + 5, 1, 2, 0] = math.inf  # batch 3, image 5
    model = classifier(SAM(optimizer=sgd()), backbone=TinyConvBN())
    where = Where()
    t, err = fit_until_error(model, where, images, targets, max_epochs=1)
    assert_not_applied(model, where, t)  # first: the update never happened
    msg = str(err)
    assert "at epoch 0, batch 3 of the epoch, in the forward pass" in msg, msg
    assert "optimizer step 4 was NOT applied" in msg, msg
    # the forward pass in train mode did update the BatchNorm statistics: they are restored
    assert torch.isfinite(model.backbone.bn.running_var).all()


class GradPoison(nn.Module):
    """Identity forward; its backward returns NaN on one (epoch, batch): a finite loss with a
    non-finite gradient (what an overflow in the backward pass looks like)."""

    def __init__(self, where: Where, at: tuple[int, int]) -> None:
        super().__init__()
        self.where, self.at = where, at

    def forward(self, x):
        return _NanGrad.apply(x) if self.where.here == self.at else x


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def test_a_nonfinite_gradient_with_a_finite_loss_is_refused():
    where = Where()
    backbone = TinyMLP()
    backbone.net.insert(2, GradPoison(where, (0, 1)))  # after the first Linear: its grad is NaN
    model = classifier(UpdateRule(optimizer=sgd()), backbone=backbone)
    t, err = fit_until_error(model, where)
    assert_not_applied(model, where, t)  # first: the update never happened
    msg = str(err)
    assert "non-finite gradient at epoch 0, batch 1 of the epoch" in msg, msg
    assert "optimizer step 2 was NOT applied" in msg, msg


def test_bf16_mixed_is_checked_like_full_precision():
    model = classifier(SAM(optimizer=sgd()), backbone=TinyMLP())
    where = Where()
    model.criterion = PoisonedLoss(where, (0, 4))
    t, err = fit_until_error(model, where, precision="bf16-mixed")
    assert_not_applied(model, where, t)  # first: the update never happened
    assert "at epoch 0, batch 4 of the epoch" in str(err)
    assert "optimizer step 5 was NOT applied" in str(err)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 AMP needs CUDA (CPU runs bf16)")
def test_fp16_gradient_overflow_is_left_to_the_grad_scaler():
    """With a GradScaler an inf gradient is routine: the scaler skips that step and lowers its
    scale. The guard must not turn it into an error (losses are still checked)."""
    where = Where()
    backbone = TinyMLP()
    backbone.net.insert(2, GradPoison(where, (0, 1)))
    model = classifier(UpdateRule(optimizer=sgd()), backbone=backbone)
    weights = []

    class Keep(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            weights.append(pl_module.backbone.net[1].weight.detach().clone())

    t = trainer(max_epochs=1, callbacks=[where, Keep()], precision="16-mixed", accelerator="gpu")
    t.fit(model, loader(*images_and_targets(8 * BATCHES_PER_EPOCH)))
    assert t.precision_plugin.scaler.get_scale() < 2.0**16  # the overflow was seen and skipped
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=0)  # step 2 skipped
    assert not torch.equal(weights[2], weights[1])  # and training went on
    assert all(torch.isfinite(w).all() for w in weights)


def test_dermlit_train_ends_with_one_line_naming_the_batch(tmp_path, capsys):
    """Through the entry point: a learning rate of 1e30 makes the second batch's loss NaN. The
    run ends with exit status 1 (failed, not refused), one line on stderr naming the batch and
    the refused step, the traceback in error.log and ``failed`` in status.json."""
    from dermlit.train import main
    from faults.fault_helpers import run_in_process

    run_dir = tmp_path / "run"
    status = run_in_process(
        main,
        "dermlit-train",
        "optim.optimizer.lr=1e30",
        "debug=limit",
        "trainer.max_epochs=1",
        "callbacks=none",
        f"hydra.run.dir={run_dir}",
    )
    err = capsys.readouterr().err
    assert status == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("dermlit-train: non-finite training loss"), last
    assert "at epoch 0, batch 1 of the epoch" in last and "was NOT applied" in last, last
    assert f"traceback: {run_dir / 'error.log'}" in last, last
    assert "Traceback" in (run_dir / "error.log").read_text()
    assert '"state": "failed"' in (run_dir / "status.json").read_text()
