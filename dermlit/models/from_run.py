"""A trained run's model rebuilt from its config, for the weights of one of its checkpoints.

``dermlit-eval`` and ``dermlit predict`` both need it: the run's ``model`` node, with
``backbone.pretrained`` switched off, because the checkpoint replaces those weights and an
offline machine could not download them anyway."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def model_for_checkpoint(model_cfg: DictConfig):
    """Instantiate ``model_cfg`` (resolved) without downloading pretrained backbone weights."""
    node = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    if "backbone" in node and "pretrained" in node.backbone:
        node.backbone.pretrained = False
    return instantiate(node)
