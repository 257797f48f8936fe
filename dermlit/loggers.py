"""Logger helpers: a flat config for dashboards, and closing W&B between multirun jobs."""

from __future__ import annotations

import sys
from pathlib import Path

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


def close_loggers(loggers: list, status: str = "success") -> None:
    """Finish the W&B run, or the next multirun job would log into this one (DESIGN.md).

    ``status`` is ``success`` or ``failed``; W&B marks a failed job by a non-zero exit code.
    """
    for logger in loggers:
        logger.finalize(status)
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=0 if status == "success" else 1)


def wandb_group(mode: object, sweep_dir: str) -> str | None:
    """A multirun's jobs share one W&B group, the sweep directory's name, so that the dashboard
    compares them side by side. A single run is ungrouped (None): Hydra still defines
    ``hydra.sweep.dir`` then, but it names no directory that exists."""
    multirun = getattr(mode, "name", str(mode)).endswith("MULTIRUN")
    return Path(str(sweep_dir)).name if multirun else None


def wandb_name(override_dirname: str, seed: int) -> str:
    """The job's overrides plus its seed: ``hydra.job.override_dirname`` leaves the seed out
    (conf/hydra/default.yaml) so that it names a configuration, but two seeds are two runs."""
    return ",".join(part for part in (str(override_dirname), f"seed={seed}") if part)
