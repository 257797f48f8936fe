"""Extending a run (``dermlit-train resume=RUN trainer.max_epochs=N``) re-plans its LR schedule.

What torch and Lightning do alone: the restored scheduler keeps its own state, and its horizon
(``T_max`` of the cosine) is part of that state, so a run planned for 2 epochs and extended to 4
stays planned for 2: its LR reaches ``eta_min`` (0) at epoch 2 and then, torch's
``CosineAnnealingLR.step()`` being recursive (it scales the CURRENT LR) and periodic, stays at
0 or climbs back up. Setting ``T_max`` alone does not help either: from an LR of 0 the
recursion stays at 0.

What extending means here: the schedule is re-planned as if the run had been planned for the
new horizon from the start. The restored scheduler keeps its progress (``last_epoch``: epochs
done with ``optim.interval=epoch``, optimizer steps with ``interval=step``) and takes every
other setting (``T_max``, ``eta_min``, ...) of the scheduler the current config builds; each
parameter group's LR jumps to the new curve's closed-form value at that point. For the cosine
(``conf/optim/adamw.yaml``, ``T_max: ${trainer.max_epochs}``) epoch ``e`` then trains at

    lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / N)) / 2,   N = new max_epochs,

so every added epoch (e < N) has lr > eta_min, and the recursion continues on that curve. The
epochs already trained are not redone (they ran on the old curve). Everything else the config
derives from ``trainer.max_epochs`` (a progressive sampler's ``total_epochs``, LDAM's deferred
re-weighting start) follows the new value too, for the same reason.

A plain resume (same schedule config, e.g. after a preemption) leaves the restored scheduler
untouched. A scheduler without a closed form in torch (OneCycleLR, LambdaLR, SequentialLR,
ReduceLROnPlateau...) cannot be re-planned so: a resume that changes its settings is refused.

The optimizer's own settings (``optim.optimizer.*``: ``lr``, ``weight_decay``, ``betas``,
``momentum``..., and its class) are not re-planned: Lightning restores the optimizer's param
groups, settings included, from the checkpoint, and the schedule's base LR is the restored
group's ``initial_lr``; a new ``optim.optimizer.lr`` would be silently ignored while the run's
``.hydra/`` recorded it. :func:`optimizer_changes` names such changes, and ``resume=`` refuses
them before anything is written (:mod:`dermlit.resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

log = logging.getLogger(__name__)

#: scheduler state that is progress, not plan
PROGRESS_KEYS = frozenset(
    {
        "last_epoch",
        "_step_count",
        "_last_lr",
        "_get_lr_called_within_step",
        "_is_initial",
        "verbose",
        # CosineAnnealingWarmRestarts: the epoch within the cycle and the cycle's length, both
        # moved by stepping (a plain resume mid-cycle was refused as "changes the schedule")
        "T_cur",
        "T_i",
    }
)


#: param-group entries that are not settings: the parameters, the LR the schedule moves (the
#: configured ``lr`` is the scheduler's ``initial_lr``, or ``lr`` without a scheduler)
GROUP_STATE_KEYS = frozenset({"params", "param_names", "lr", "initial_lr"})


def _comparable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return tuple(_comparable(v) for v in value)
    return value


def optimizer_changes(
    saved_groups: list[dict[str, Any]], make_optimizer: Callable[..., Optimizer]
) -> dict[str, tuple[Any, Any]]:
    """``{setting: (checkpoint's, configured)}`` for each setting of the optimizer that
    ``make_optimizer`` builds (the config's ``optim.optimizer``) that differs from the
    checkpoint's param groups (``optimizer_states[0]["param_groups"]``), which Lightning restores
    in its place. A setting the checkpoint has and the configured optimizer lacks (another
    optimizer class) is reported with ``None`` as the configured value; one the checkpoint lacks
    (a default a later torch added) is not compared: torch fills it in on load."""
    fresh = make_optimizer([torch.zeros(1, requires_grad=True)]).param_groups[0]
    configured = {k: v for k, v in fresh.items() if k not in GROUP_STATE_KEYS}
    configured["lr"] = fresh["lr"]
    changes: dict[str, tuple[Any, Any]] = {}
    for group in saved_groups:
        saved = {k: v for k, v in group.items() if k not in GROUP_STATE_KEYS}
        saved["lr"] = group.get("initial_lr", group.get("lr"))
        for key, old in saved.items():
            new = configured.get(key)
            if key not in changes and _comparable(old) != _comparable(new):
                changes[key] = (old, new)
    return changes


def planned(scheduler: Any) -> dict[str, Any]:
    """A scheduler's settings: its state without the progress."""
    return {k: v for k, v in scheduler.state_dict().items() if k not in PROGRESS_KEYS}


def configured_plan(make_scheduler: Callable[..., Any], optimizer: Optimizer) -> Any:
    """The scheduler the current config builds, on a stand-in optimizer of the same class and
    groups (their starting LRs), with one dummy parameter each: building it on the real one
    would reset the LRs being restored."""
    groups = [
        {
            **{k: v for k, v in g.items() if k != "params"},
            "params": [torch.zeros(1, requires_grad=True)],
            "lr": g.get("initial_lr", g["lr"]),
        }
        for g in optimizer.param_groups
    ]
    try:
        stand_in = type(optimizer)(groups)
    except TypeError:  # an optimizer class with required arguments of its own
        stand_in = torch.optim.SGD(groups)
    return make_scheduler(stand_in)


def replan(scheduler: Any, make_scheduler: Callable[..., Any]) -> bool:
    """Give the restored ``scheduler`` the settings of ``make_scheduler``'s (see the module
    docstring); returns whether anything changed."""
    fresh = configured_plan(make_scheduler, scheduler.optimizer)
    if type(fresh) is not type(scheduler):
        raise ValueError(
            f"the checkpoint's LR scheduler is {type(scheduler).__name__} but optim.scheduler now "
            f"builds {type(fresh).__name__}: resume with the run's own optim settings"
        )
    new, old = planned(fresh), planned(scheduler)
    if new == old:
        return False
    if not hasattr(scheduler, "_get_closed_form_lr"):
        changed = sorted(k for k in new if new.get(k) != old.get(k))
        raise ValueError(
            f"resuming changes the LR schedule ({type(scheduler).__name__}: {changed}), which "
            "can be re-planned only for schedulers with a closed form (CosineAnnealingLR, "
            "StepLR, MultiStepLR, ExponentialLR, LinearLR, ConstantLR, PolynomialLR): keep "
            "trainer.max_epochs and the optim settings of the run"
        )
    scheduler.__dict__.update(new)
    lrs = scheduler._get_closed_form_lr()
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
    changes = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in new.items() if old.get(k) != v)
    log.info(
        "Re-planned the LR schedule for the new horizon (%s): at step %d of the schedule the LR "
        "is now %s",
        changes,
        scheduler.last_epoch,
        ", ".join(f"{lr:.6g}" for lr in lrs),
    )
    return True
