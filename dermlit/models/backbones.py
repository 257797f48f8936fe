"""Any timm backbone with a 7-class head."""

from __future__ import annotations

import timm
from torch import nn

from dermlit.constants import NUM_CLASSES


def create_backbone(
    name: str = "resnet18", pretrained: bool = False, num_classes: int = NUM_CLASSES, **kwargs
) -> nn.Module:
    """``timm.create_model`` with a clear error for unknown names.

    ``pretrained=True`` downloads ImageNet weights from the Hugging Face hub, which needs network
    access; tests and the offline default train from scratch.
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise ValueError(f"unknown timm model {name!r}; similar names: {close}")
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
