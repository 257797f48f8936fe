"""A run trained with ``model.backbone.pretrained=true`` is rebuilt for its checkpoint without a
download (dermlit-eval used to instantiate the run's model node as is; dermlit predict did not)."""

from __future__ import annotations

import timm
from omegaconf import OmegaConf

from dermlit.models import backbones
from dermlit.models.from_run import model_for_checkpoint


def test_pretrained_is_switched_off_and_the_runs_config_left_alone(monkeypatch) -> None:
    asked, original = [], timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        asked.append(pretrained)
        return original(name, pretrained=False, **kwargs)

    monkeypatch.setattr(backbones.timm, "create_model", create_model)
    backbone = {
        "_target_": "dermlit.models.backbones.create_backbone",
        "name": "resnet18",
        "pretrained": True,
        "num_classes": 7,
    }
    node = OmegaConf.create({"_target_": "builtins.dict", "backbone": backbone})
    built = model_for_checkpoint(node)
    assert asked == [False]
    assert isinstance(built["backbone"], timm.models.ResNet)
    assert node.backbone.pretrained is True  # the run's own config is not modified
