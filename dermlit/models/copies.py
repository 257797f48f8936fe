"""Deep copies of a classifier that is attached to a Trainer (AdaBN's adapted model, a snapshot
ensemble's members).

``copy.deepcopy`` of a LightningModule would copy its Trainer with it (loaders, callbacks, the
fitted state): the reference is taken off for the copy and put back."""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import nn

Module = TypeVar("Module", bound=nn.Module)


def detached_copy(model: Module, backbone: nn.Module | None = None) -> Module:
    """A deep copy of ``model`` without its Trainer; with ``backbone``, that module in place of
    a copy of its own (which is then never copied)."""
    saved_trainer = getattr(model, "_trainer", None)
    saved_backbone = model.backbone if backbone is not None else None
    if hasattr(model, "_trainer"):
        model._trainer = None
    if backbone is not None:
        model.backbone = nn.Identity()
    try:
        twin = copy.deepcopy(model)
    finally:
        if hasattr(model, "_trainer"):
            model._trainer = saved_trainer
        if saved_backbone is not None:
            model.backbone = saved_backbone
    if backbone is not None:
        twin.backbone = backbone
    return twin
