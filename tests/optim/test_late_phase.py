"""Late-phase SAM (``optim.start``): plain steps before the switch, each variant's sharpness-aware
update after it, at the epoch the fraction or the integer names, and resumable across it."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from pytorch_optimizer import SAM as ReferenceSAM
from torch import nn

from dermlit.callbacks import EMA
from dermlit.config import CONF_DIR
from dermlit.errors import InputError
from dermlit.optim import SAM, ImbSAM, LookSAM, UpdateRule
from dermlit.optim.sam import sam_start_epoch
from optim.helpers import TinyMLP, classifier, images_and_targets, loader, preprocess, sgd, trainer
from optim.test_resume import assert_same

ADAMW = functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.05)


@pytest.mark.parametrize(
    ("start", "max_epochs", "epoch"),
    [
        (None, 10, 0),
        (0, 10, 0),
        (0.0, 10, 0),
        (0.8, 15, 12),  # SAM in epochs 12, 13, 14: the last 20 %
        (0.9, 15, 13),  # 13.5 floored: SAM holds at least the last 10 % (2 of 15 epochs)
        (0.57, 100, 57),  # 0.57 * 100 is 56.99999999999999 in floating point
        (0.99, 10, 9),  # a fraction below 1 always leaves at least the last epoch to SAM
        (3, 10, 3),
        (9, 10, 9),
    ],
)
def test_start_epoch_of_fractions_and_integers(start, max_epochs, epoch):
    assert sam_start_epoch(start, max_epochs) == epoch


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (1.0, r"\[0, 1\).*got 1.0 \(1.0 would run no SAM step at all"),
        (1.5, r"integer epoch.*got 1.5"),
        (-0.2, r"got -0.2"),
        (-1, r"got -1"),
        (True, r"got True"),
        ("0.8", r"got '0.8'"),
    ],
)
def test_start_outside_the_valid_range_is_refused(start, message):
    with pytest.raises(InputError, match=message):
        SAM(optimizer=sgd(), start=start)


def test_start_sam_would_never_reach_is_refused_when_training_starts():
    """InputError: dermlit-train prints the message and exits 2 (dermlit.hydra_callbacks)."""
    images, targets = images_and_targets(16)
    with pytest.raises(InputError, match=r"optim.start=3 is an epoch.*max_epochs=3.*never run"):
        trainer(max_epochs=3).fit(classifier(SAM(sgd(), start=3)), loader(images, targets))
    with pytest.raises(InputError, match=r"fraction of trainer.max_epochs, which is not set"):
        trainer(max_epochs=-1, max_steps=4).fit(
            classifier(SAM(sgd(), start=0.5)), loader(images, targets)
        )


class ForwardsPerEpoch(Callback):
    """Backbone forwards and optimizer steps in each training epoch."""

    def __init__(self) -> None:
        self.forwards: list[int] = []
        self.steps: list[int] = []
        self._count = 0

    def setup(self, trainer, pl_module, stage) -> None:
        def hook(module, inputs, output):
            if module.training:
                self._count += 1

        pl_module.backbone.register_forward_hook(hook)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._count, self._step0 = 0, trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.forwards.append(self._count)
        self.steps.append(trainer.global_step - self._step0)


VARIANTS = {
    "sam": lambda start: SAM(sgd(), start=start),
    "asam": lambda start: SAM(sgd(), adaptive=True, rho=0.5, start=start),
    # k=2: the phase's first step is full SAM (no g_v yet), then full SAM on even global steps
    "looksam": lambda start: LookSAM(sgd(), k=2, start=start),
    "imbsam": lambda start: ImbSAM(sgd(), tail_classes=["df", "vasc"], start=start),
}
#: backbone forwards per epoch of 5 batches: plain, then the variant's sharpness-aware epochs
SAM_EPOCH_FORWARDS = {
    "sam": [10, 10],
    "asam": [10, 10],
    # epoch 1 = global steps 5-9: 5 (no g_v) full, 6 full, 7 reuse, 8 full, 9 reuse -> 8
    # epoch 2 = steps 10-14: full, reuse, full, reuse, full -> 8
    "looksam": [8, 8],
    "imbsam": [10, 10],
}


@pytest.mark.parametrize("start", [1, 0.5], ids=["epoch-1", "fraction-0.5-of-3"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_plain_steps_before_the_switch_and_sharpness_aware_ones_after(name, start):
    images, targets = images_and_targets(40)  # 5 batches of 8
    counter = ForwardsPerEpoch()
    model = classifier(VARIANTS[name](start))
    t = trainer(max_epochs=3, callbacks=[counter])
    t.fit(model, loader(images, targets))
    assert counter.forwards == [5, *SAM_EPOCH_FORWARDS[name]]  # floor(0.5 * 3) = epoch 1
    assert counter.steps == [5, 5, 5] and t.global_step == 15  # one Lightning step per update
    # BatchNorm running statistics: one update per optimizer step, in both phases
    assert int(model.backbone.bn.num_batches_tracked) == 15


def test_the_phases_are_plain_sgd_then_pytorch_optimizers_sam():
    """Epoch 0 plain SGD with momentum, epochs 1-2 SAM from the same momentum state, against
    pytorch_optimizer's SAM stepping its base optimizer alone in epoch 0."""
    images, targets = images_and_targets(32)
    model = classifier(SAM(sgd(), rho=0.1, start=1), backbone=TinyMLP())
    reference = copy.deepcopy(model.backbone)
    trainer(max_epochs=3).fit(model, loader(images, targets))

    opt = ReferenceSAM(reference.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    batches = [(preprocess(images[i : i + 8]), targets[i : i + 8]) for i in range(0, 32, 8)]
    for epoch in range(3):
        for x, y in batches:
            nn.functional.cross_entropy(reference(x), y).backward()
            if epoch == 0:
                opt.base_optimizer.step()
                opt.zero_grad()
                continue
            opt.first_step(zero_grad=True)
            nn.functional.cross_entropy(reference(x), y).backward()
            opt.second_step(zero_grad=True)
    for ours, ref in zip(model.backbone.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # and the late phase is not a no-op: plain SGD for all three epochs ends elsewhere
    plain = classifier(UpdateRule(sgd()), backbone=TinyMLP())
    trainer(max_epochs=3).fit(plain, loader(images, targets))
    assert not torch.allclose(plain.backbone.net[1].weight, model.backbone.net[1].weight)


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def fit_late(dirpath, stop_after=None, ckpt_path=None):
    """LookSAM(AdamW, k=3) + EMA, SAM from floor(0.5 * 3) = epoch 1, max_epochs=3 throughout
    (an interruption, not a shorter run: the fraction is of the same max_epochs)."""
    images, targets = images_and_targets(40)
    optim = LookSAM(optimizer=ADAMW, k=3, start=0.5)
    callbacks = [EMA(decay=0.9), ModelCheckpoint(dirpath=dirpath, save_last=True)]
    if stop_after is not None:
        callbacks.append(StopAfterEpoch(stop_after))
    t = trainer(max_epochs=3, callbacks=callbacks, enable_checkpointing=True)
    t.fit(classifier(optim), loader(images, targets), ckpt_path=ckpt_path)
    return t


@pytest.mark.parametrize("stop_after", [0, 1], ids=["before-the-switch", "after-the-switch"])
def test_resume_across_the_switch_equals_an_uninterrupted_run(tmp_path, stop_after):
    whole = fit_late(tmp_path / "whole")
    part = fit_late(tmp_path / "part", stop_after=stop_after)
    assert part.global_step == 5 * (stop_after + 1)
    resumed = fit_late(tmp_path / "part", ckpt_path=tmp_path / "part" / "last.ckpt")
    assert whole.global_step == resumed.global_step == 15
    a = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "part" / "last.ckpt", weights_only=False)
    for key in ("state_dict", "current_model_state", "optimizer_states", "dermlit_optim"):
        assert_same(a[key], b[key], key)
    assert a["dermlit_optim"]["g_v"] is not None  # the SAM phase ran (and g_v is state)


@pytest.mark.parametrize("variant", ["sam", "asam", "looksam", "imbsam"])
def test_every_variant_config_takes_a_start(variant):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"optim={variant}", "optim.start=0.8"])
    optim = instantiate(cfg.optim)
    assert isinstance(optim, SAM) and optim.start == 0.8
    assert optim.start_epoch(cfg.trainer.max_epochs) == 8  # conf/trainer/cpu: 10 epochs
