"""Fault 4: extending a finished run (``resume=RUN trainer.max_epochs=N``) re-plans the cosine
for the new horizon (dermlit/optim/replan.py): every added epoch has LR > 0 on
eta_min + (base - eta_min) * (1 + cos(pi * e / N)) / 2. And (fault 5) the resumed run's
csv/metrics.csv still holds the epochs before the resume."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from dermlit.optim.replan import replan

from .conftest import TINY, dermlit, output

BASE_LR = 1e-3  # conf/optim/adamw.yaml


def cosine(e: int, horizon: int, base: float = BASE_LR, eta_min: float = 0.0) -> float:
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / horizon)) / 2


def restored_cosine(t_max: int, done: int, **kwargs) -> CosineAnnealingLR:
    """A scheduler as Lightning restores it: its old T_max, ``done`` epochs stepped."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=BASE_LR)
    sched = CosineAnnealingLR(opt, T_max=t_max, **kwargs)
    for _ in range(done):
        opt.step()
        sched.step()
    return sched


def test_torch_alone_keeps_the_old_horizon_at_lr_zero() -> None:
    """Why replan exists: a new T_max on the restored (recursive) cosine stays at 0."""
    sched = restored_cosine(2, 2)
    assert sched.get_last_lr() == [0.0]
    sched.T_max = 4
    sched.optimizer.step()
    sched.step()
    assert sched.get_last_lr() == [0.0]


@pytest.mark.parametrize("eta_min", [0.0, 1e-5])
def test_replan_follows_the_closed_form_of_the_new_horizon(eta_min: float) -> None:
    sched = restored_cosine(2, 2, eta_min=eta_min)
    assert replan(sched, functools.partial(CosineAnnealingLR, T_max=4, eta_min=eta_min))
    lrs = [sched.optimizer.param_groups[0]["lr"]]
    for _ in range(2):
        sched.optimizer.step()
        sched.step()
        lrs.append(sched.optimizer.param_groups[0]["lr"])
    for e, lr in zip((2, 3, 4), lrs, strict=True):
        assert lr == pytest.approx(cosine(e, 4, eta_min=eta_min), abs=1e-12)
    # the same plan again: nothing to change
    assert not replan(sched, functools.partial(CosineAnnealingLR, T_max=4, eta_min=eta_min))


def test_a_changed_plan_without_closed_form_is_refused() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=BASE_LR)
    sched = OneCycleLR(opt, max_lr=BASE_LR, total_steps=10)
    assert not replan(sched, functools.partial(OneCycleLR, max_lr=BASE_LR, total_steps=10))
    with pytest.raises(ValueError, match=r"OneCycleLR: \[.*'total_steps'.*closed form"):
        replan(sched, functools.partial(OneCycleLR, max_lr=BASE_LR, total_steps=20))


def test_extending_a_finished_run_keeps_training_at_a_positive_lr(
    copy_of_finished_run: Path, cache_dir: Path
) -> None:
    run = copy_of_finished_run  # 3 epochs done, T_max=3: the restored LR is 0
    before = pd.read_csv(run / "csv" / "metrics.csv")
    # a spelling that used to train from scratch into the directory (fault 3)
    proc = dermlit(
        "train", f"+resume={run}/", f"hydra.run.dir={run}", "trainer.max_epochs=5", cache=cache_dir
    )
    assert proc.returncode == 0, output(proc)
    logged = pd.read_csv(run / "csv" / "metrics.csv")
    lr = logged.dropna(subset=["lr-AdamW"])["lr-AdamW"].tolist()
    # one LR per epoch (LearningRateMonitor, epoch start): 3 on the old curve, 2 added
    assert len(lr) == 5, logged
    for e in (0, 1, 2):
        assert lr[e] == pytest.approx(cosine(e, 3), abs=1e-9)
    for e in (3, 4):
        assert lr[e] > 0
        assert lr[e] == pytest.approx(cosine(e, 5), abs=1e-9)
    # the epochs before the resume are still there (Lightning's CSVLogger deleted them)
    val = logged.dropna(subset=["val/macro_f1"])
    assert val["epoch"].astype(int).tolist() == [0, 1, 2, 3, 4]
    old_val = before.dropna(subset=["val/macro_f1"])
    pd.testing.assert_series_equal(
        val["val/macro_f1"].iloc[:3].reset_index(drop=True),
        old_val["val/macro_f1"].reset_index(drop=True),
    )
    # the first run's test row was superseded by the resumed run's (one test row)
    assert logged["test/macro_f1"].notna().sum() == 1
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (4, 15)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["epoch"] == 5
    assert status["resumed_from"].endswith("checkpoints/last.ckpt")
    assert TINY[0] in (run / ".hydra" / "overrides.yaml").read_text()  # stored overrides kept
