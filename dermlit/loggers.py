"""Logger helpers: a flat config for dashboards, and closing W&B between multirun jobs."""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf


def flatten(cfg: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_flat_config(loggers: list, cfg: DictConfig) -> None:
    """Dotted keys (``optim.optimizer.lr``) filter and group well in W&B and TensorBoard."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("paths", None)
    flat = flatten(container)
    for logger in loggers:
        logger.log_hyperparams(flat)


def close_loggers(loggers: list) -> None:
    """Finish the W&B run, or the next multirun job would log into this one (DESIGN.md)."""
    for logger in loggers:
        logger.finalize("success")
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
