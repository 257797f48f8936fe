"""Stop at an epoch boundary, resume from the checkpoint, end with the same weights (1e-6) as an
uninterrupted run: base optimizer state, scheduler, EMA (both weight sets), LookSAM's g_v."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from dermlit.callbacks import EMA
from dermlit.optim import SAM, LookSAM, UpdateRule
from dermlit.optim.replan import optimizer_changes
from optim.helpers import TinyMLP, classifier, images_and_targets, loader, sgd, trainer

STEP_LR = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.5)
ADAMW = functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.05)


def optims():
    return {
        # k=3 with 5 batches per epoch: step 5 (epoch 2) reuses the g_v computed at step 3
        "looksam-adamw": LookSAM(optimizer=ADAMW, scheduler=STEP_LR, interval="step", k=3),
        "sam-sgd": SAM(optimizer=sgd(), scheduler=STEP_LR, interval="epoch"),
    }


def fit(name: str, dirpath, max_epochs: int, ckpt_path=None):
    images, targets = images_and_targets(40)
    model = classifier(optims()[name])
    callbacks = [EMA(decay=0.9), ModelCheckpoint(dirpath=dirpath, save_last=True)]
    t = trainer(max_epochs=max_epochs, callbacks=callbacks, enable_checkpointing=True)
    t.fit(model, loader(images, targets), ckpt_path=ckpt_path)
    return t


def assert_same(a, b, path="checkpoint"):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=lambda m: f"{path}: {m}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("name", ["looksam-adamw", pytest.param("sam-sgd", marks=pytest.mark.slow)])
def test_resume_at_epoch_boundary_equals_uninterrupted_run(tmp_path, name):
    whole = fit(name, tmp_path / "whole", max_epochs=2)
    fit(name, tmp_path / "part", max_epochs=1)
    resumed = fit(name, tmp_path / "part", 2, ckpt_path=tmp_path / "part" / "last.ckpt")
    assert whole.global_step == resumed.global_step == 10
    a = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "part" / "last.ckpt", weights_only=False)
    for key in (
        "state_dict",
        "current_model_state",
        "averaging_state",
        "optimizer_states",
        "lr_schedulers",
        "dermlit_optim",
    ):
        assert_same(a[key], b[key], key)
    # the two weight sets are really different, and g_v really is state
    assert not torch.allclose(
        a["state_dict"]["backbone.conv.weight"], a["current_model_state"]["backbone.conv.weight"]
    )
    if name.startswith("looksam"):
        assert a["dermlit_optim"]["g_v"] is not None


def test_lightning_restores_the_checkpoints_lr_which_optimizer_changes_names(tmp_path):
    """Why ``resume=`` refuses a new ``optim.optimizer.lr`` (dermlit/resume.py): Lightning
    restores the optimizer's param groups from the checkpoint, so the new LR is never used and
    the re-planned schedule starts from the checkpoint's ``initial_lr``."""

    def rule(lr):
        return UpdateRule(
            optimizer=functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.05),
            scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4),
        )

    class Groups(Callback):
        def on_train_start(self, trainer, pl_module):
            self.groups = [dict(g) for g in pl_module.optimizers().param_groups]

    images, targets = images_and_targets(16)
    callbacks = [ModelCheckpoint(dirpath=tmp_path, save_last=True)]
    first = trainer(max_epochs=2, callbacks=callbacks, enable_checkpointing=True)
    first.fit(classifier(rule(0.1), backbone=TinyMLP()), loader(images, targets))
    seen = Groups()
    resumed = classifier(rule(1e-3), backbone=TinyMLP())
    trainer(max_epochs=3, callbacks=[seen]).fit(
        resumed, loader(images, targets), ckpt_path=tmp_path / "last.ckpt"
    )
    assert seen.groups[0]["initial_lr"] == 0.1  # the config's 1e-3 is gone
    assert seen.groups[0]["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi * 2 / 4)) / 2)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    groups = saved["optimizer_states"][0]["param_groups"]
    assert optimizer_changes(groups, rule(1e-3).optimizer) == {"lr": (0.1, 1e-3)}
    assert optimizer_changes(groups, rule(0.1).optimizer) == {}
    sgd_changes = optimizer_changes(groups, functools.partial(torch.optim.SGD, lr=0.1))
    assert sgd_changes["betas"] == ((0.9, 0.999), None)


def test_a_restarting_cosine_resumes_mid_cycle_and_a_changed_cycle_is_still_refused() -> None:
    """``T_cur`` and ``T_i`` are progress: a restored CosineAnnealingWarmRestarts mid-cycle
    looked changed, so every plain resume of ``optim=adamw_restarts`` off a cycle boundary
    was refused. A changed ``T_0`` is a changed plan, and it has no closed form: refused."""
    import functools

    import torch
    from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

    from dermlit.optim.replan import replan

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    make = functools.partial(CosineAnnealingWarmRestarts, T_0=3)
    scheduler = make(optimizer)
    for _ in range(4):  # into the second cycle, off its boundary
        optimizer.step()
        scheduler.step()
    lr = optimizer.param_groups[0]["lr"]
    assert replan(scheduler, make) is False
    assert optimizer.param_groups[0]["lr"] == lr and scheduler.T_cur == 1
    with pytest.raises(
        ValueError, match=r"changes the LR schedule \(CosineAnnealingWarmRestarts: \['T_0'"
    ):
        replan(scheduler, functools.partial(CosineAnnealingWarmRestarts, T_0=4))
